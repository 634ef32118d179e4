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
    /// Remaining life: `None` if absent, `Some(None)` if it never expires.
    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>>;
    /// Checks the backend answers (readiness).
    async fn ping(&self) -> Result<()>;
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
