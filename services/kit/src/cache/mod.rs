//! The cache port: keys with TTLs, atomic counters, compare-and-set. Two adapters with one
//! behaviour — [`RedisCache`] (fred) for real deployments and [`MemoryCache`] for `skillup up` —
//! proven alike by the conformance suite in `tests/cache_conformance.rs`.

mod memory;
mod redis;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;

pub use self::{memory::MemoryCache, redis::RedisCache};

use crate::Result;

/// What a caller expects a key to hold for [`Cache::compare_and_set`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist.
    Absent,
    /// The key must hold exactly these bytes.
    Value(Bytes),
}

/// A key-value cache. Keys are relative: each adapter adds its deployment prefix.
#[async_trait]
pub trait Cache: Send + Sync + std::fmt::Debug + 'static {
    /// The value, or `None` if absent or expired.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;
    /// Several values in one round trip, in the order of `keys`.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>>;
    /// Stores a value; `ttl = None` keeps it until deleted.
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()>;
    /// Stores only if absent; true if stored.
    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<bool>;
    /// Removes a key; true if it existed.
    async fn delete(&self, key: &str) -> Result<bool>;
    /// Removes every key that starts with `prefix` (what a service keeps for one user, when the
    /// user is deleted); how many there were. Not atomic with writes that race it.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64>;
    /// Adds `delta` atomically (a missing key counts as 0) and returns the new value. `ttl`
    /// is applied when the key has none (so a fixed window starts with its first increment).
    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64>;
    /// Atomically: if the key matches `expect`, replace it with `new` (`None` deletes) and
    /// return true; otherwise change nothing and return false.
    async fn compare_and_set(
        &self,
        key: &str,
        expect: Expect,
        new: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<bool>;
    /// Takes one unit of the rate budget kept at `key` (GCRA: a unit comes back every
    /// `interval`, at most `burst` are kept), if there is one. One atomic step on the backend's
    /// own clock, so every replica spends one budget; the key expires when the budget is full.
    async fn take(&self, key: &str, interval: Duration, burst: u32) -> Result<Taken>;
    /// Remaining life: `None` if absent, `Some(None)` if it never expires.
    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>>;
    /// Checks the backend answers (readiness).
    async fn ping(&self) -> Result<()>;
}

/// What [`Cache::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The unit was there and is spent.
    pub allowed: bool,
    /// Units left.
    pub remaining: u32,
    /// Taken: until the budget is full again. Refused: until the next unit is there.
    pub wait: Duration,
}

/// GCRA, the one rule both adapters follow (the Redis adapter runs it as a script): the key
/// holds the theoretical arrival time `tat` (µs on the backend's clock). Returns the decision
/// and, when a unit was taken, the new `tat` to store.
pub(crate) fn gcra(now: u64, tat: Option<u64>, interval: u64, burst: u32) -> (Taken, Option<u64>) {
    let interval = interval.max(1);
    let capacity = interval * u64::from(burst.max(1));
    let tat = tat.unwrap_or(now).max(now);
    let next = tat + interval;
    if next - now > capacity {
        let wait = Duration::from_micros(next - capacity - now);
        return (Taken { allowed: false, remaining: 0, wait }, None);
    }
    let remaining = ((capacity - (next - now)) / interval) as u32;
    (Taken { allowed: true, remaining, wait: Duration::from_micros(next - now) }, Some(next))
}

/// The shared handle services hold.
pub type SharedCache = Arc<dyn Cache>;

/// A readiness probe for a cache.
pub fn probe(cache: SharedCache) -> crate::Readiness {
    crate::Readiness::new().with("cache", move || {
        let cache = cache.clone();
        async move { cache.ping().await.map_err(|e| e.to_string()) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_lets_a_burst_through_then_one_unit_per_interval() {
        let (i, mut tat, mut now) = (1_000_000, None, 5_000_000);
        let mut left = Vec::new();
        for _ in 0..3 {
            let (t, next) = gcra(now, tat, i, 3);
            assert!(t.allowed);
            left.push(t.remaining);
            tat = next;
        }
        assert_eq!(left, [2, 1, 0]);
        let (t, next) = gcra(now, tat, i, 3);
        assert_eq!((t.allowed, t.wait, next), (false, Duration::from_secs(1), None));
        now += 1_000_000; // one interval later: one unit back, none more
        let (t, next) = gcra(now, tat, i, 3);
        assert_eq!((t.allowed, t.remaining, t.wait), (true, 0, Duration::from_secs(3)));
        assert!(!gcra(now, next, i, 3).0.allowed);
        // Long idle: full again, never more than the burst.
        let (t, _) = gcra(now + 60_000_000, next, i, 3);
        assert_eq!((t.allowed, t.remaining), (true, 2));
    }
}
