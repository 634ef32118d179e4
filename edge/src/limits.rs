//! Rate limits (GCRA): per client IP on every route, a stricter per-IP budget on the sign-in
//! family of routes, and a per-user generation budget sized by subscription tier. Answers carry
//! `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`; a refusal is 429
//! `RATE_LIMITED` with `Retry-After`.
//!
//! The budgets are kept in the cache (`Cache::take`: one round trip, atomic, on Redis' clock),
//! so every edge replica spends the same budget. When the cache does not answer in
//! `edge.rate.shared_timeout_ms` (or its breaker is open after failures) the edge keeps the
//! budgets itself (governor's GCRA) at `edge.rate.fallback_share` of each: a client spread over
//! N edges may then get up to N × share of a budget — never unlimited.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use crate::config::RateConfig;
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use http::{HeaderMap, HeaderValue, header};
use skillup_kit::{
    breaker::Breaker,
    cache::{SharedCache, Taken},
    config::BreakerConfig,
};

use crate::errors::ApiError;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One budget: its size, and the edge's own copy at the fallback share.
struct Budget {
    /// Names the budget's keys in the cache (`rate:<name>:<who>`).
    name: String,
    limit: u32,
    interval: Duration,
    local: Keyed<String>,
}

impl Budget {
    /// `per` requests every `period`, a burst of `burst` (0: `per`).
    fn new(name: String, per: NonZeroU32, period: Duration, burst: u32, share: f64) -> Self {
        let limit = burst_or(burst, per);
        let scaled = |n: u32| NonZeroU32::new(((f64::from(n) * share).floor() as u32).max(1));
        let local_per = scaled(per.get()).unwrap_or(NonZeroU32::MIN);
        let local_quota = Quota::with_period(period / local_per.get())
            .unwrap_or_else(|| Quota::per_second(local_per))
            .allow_burst(scaled(limit.get()).unwrap_or(NonZeroU32::MIN));
        Self {
            name,
            limit: limit.get(),
            interval: period / per.get(),
            local: RateLimiter::keyed(local_quota).with_middleware(),
        }
    }

    fn verdict(&self, taken: Taken) -> Result<Verdict, ApiError> {
        if taken.allowed {
            return Ok(Verdict {
                limit: self.limit,
                remaining: taken.remaining,
                reset: ceil_secs(taken.wait),
            });
        }
        let secs = ceil_secs(taken.wait).max(1);
        metrics::counter!("edge_rate_limited_total").increment(1);
        Err(ApiError::new(429, "RATE_LIMITED", format!("too many requests; retry in {secs} s"))
            .header(header::RETRY_AFTER, &secs.to_string())
            .header(header::HeaderName::from_static("ratelimit-limit"), &self.limit.to_string())
            .header(header::HeaderName::from_static("ratelimit-remaining"), "0")
            .header(header::HeaderName::from_static("ratelimit-reset"), &secs.to_string()))
    }

    /// The edge's own verdict (the cache did not answer).
    fn check_local(&self, key: &str) -> Result<Verdict, ApiError> {
        let taken = match self.local.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let quota = snapshot.quota();
                let missing = quota.burst_size().get().saturating_sub(remaining);
                Taken { allowed: true, remaining, wait: quota.replenish_interval() * missing }
            }
            Err(not_until) => Taken {
                allowed: false,
                remaining: 0,
                wait: not_until.wait_time_from(self.local.clock().now()),
            },
        };
        self.verdict(taken)
    }
}

fn burst_or(burst: u32, per: NonZeroU32) -> NonZeroU32 {
    NonZeroU32::new(burst).unwrap_or(per)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// One budget's state after a request it let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the budget is full again.
    pub reset: u64,
}

impl Verdict {
    /// The tighter of two verdicts (fewer requests left).
    pub fn tighter(self, other: Option<Verdict>) -> Verdict {
        match other {
            Some(o) if o.remaining < self.remaining => o,
            _ => self,
        }
    }

    pub fn write(&self, headers: &mut HeaderMap) {
        let mut put = |k: &'static str, v: u64| {
            headers.insert(header::HeaderName::from_static(k), HeaderValue::from(v));
        };
        put("ratelimit-limit", u64::from(self.limit));
        put("ratelimit-remaining", u64::from(self.remaining));
        put("ratelimit-reset", self.reset);
    }
}

/// Every budget of one edge.
#[derive(Clone)]
pub struct Limits(Arc<State>);

struct State {
    cache: SharedCache,
    /// Opens after the cache fails a few times: the edge's own budgets at once, no waiting.
    breaker: Breaker,
    timeout: Duration,
    ip: Option<Budget>,
    auth: Option<Budget>,
    generate: std::collections::HashMap<String, Budget>,
}

impl Limits {
    pub fn new(cfg: &RateConfig, cache: SharedCache) -> Self {
        let share = cfg.fallback_share;
        let minute = Duration::from_secs(60);
        let ip = NonZeroU32::new(cfg.ip_per_sec)
            .map(|r| Budget::new("ip".into(), r, Duration::from_secs(1), cfg.ip_burst, share));
        let auth = NonZeroU32::new(cfg.auth_per_min)
            .map(|r| Budget::new("auth".into(), r, minute, cfg.auth_burst, share));
        let generate = cfg
            .generate_per_min
            .iter()
            .filter_map(|(tier, per_min)| {
                let r = NonZeroU32::new(*per_min)?;
                let b = Budget::new(format!("gen:{tier}"), r, minute, cfg.generate_burst, share);
                Some((tier.clone(), b))
            })
            .collect();
        let breaker = Breaker::new(
            "rate-limits-cache",
            BreakerConfig {
                consecutive_failures: 3,
                failure_rate_percent: 50,
                window: 20,
                open_ms: 2_000,
                half_open_probes: 1,
            },
        );
        Self(Arc::new(State {
            cache,
            breaker,
            timeout: Duration::from_millis(cfg.shared_timeout_ms.max(1)),
            ip,
            auth,
            generate,
        }))
    }

    pub async fn check_ip(&self, ip: IpAddr) -> Result<Option<Verdict>, ApiError> {
        self.check(self.0.ip.as_ref(), &ip.to_string()).await
    }

    pub async fn check_auth(&self, ip: IpAddr) -> Result<Option<Verdict>, ApiError> {
        self.check(self.0.auth.as_ref(), &ip.to_string()).await
    }

    /// The caller's tier budget (unknown tiers spend `free`'s).
    pub async fn check_generate(
        &self,
        tier: &str,
        user_id: &str,
    ) -> Result<Option<Verdict>, ApiError> {
        let s = &self.0;
        self.check(s.generate.get(tier).or_else(|| s.generate.get("free")), user_id).await
    }

    async fn check(&self, budget: Option<&Budget>, who: &str) -> Result<Option<Verdict>, ApiError> {
        let Some(b) = budget else { return Ok(None) };
        let s = &self.0;
        if let Ok(permit) = s.breaker.try_acquire() {
            let key = format!("rate:{}:{who}", b.name);
            let asked = tokio::time::timeout(s.timeout, s.cache.take(&key, b.interval, b.limit));
            match asked.await {
                Ok(Ok(taken)) => {
                    permit.record(true);
                    return b.verdict(taken).map(Some);
                }
                Ok(Err(e)) => {
                    permit.record(false);
                    tracing::warn!(error = %e, "rate limits: the cache failed; this edge's own budgets for now");
                }
                Err(_) => {
                    permit.record(false);
                    tracing::warn!(timeout = ?s.timeout, "rate limits: the cache did not answer; this edge's own budgets for now");
                }
            }
        }
        metrics::counter!("edge_rate_local_total").increment(1);
        b.check_local(who).map(Some)
    }

    /// Drops the edge's own state of keys that are back to a full budget (run now and then).
    pub fn forget_idle(&self) {
        let s = &self.0;
        for b in s.ip.iter().chain(&s.auth).chain(s.generate.values()) {
            b.local.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skillup_kit::cache::MemoryCache;

    fn cfg(ip_per_sec: u32, ip_burst: u32) -> RateConfig {
        RateConfig {
            ip_per_sec,
            ip_burst,
            auth_per_min: 0,
            auth_burst: 0,
            generate_per_min: [("free".to_owned(), 60)].into_iter().collect(),
            generate_burst: 2,
            fallback_share: 0.5,
            shared_timeout_ms: 50,
        }
    }

    fn memory() -> SharedCache {
        Arc::new(MemoryCache::new())
    }

    #[tokio::test]
    async fn the_burst_then_refusal_with_retry_after() {
        let l = Limits::new(&cfg(1, 3), memory());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(l.check_ip(ip).await.unwrap().unwrap().remaining);
        }
        assert_eq!(v, [2, 1, 0]);
        let e = l.check_ip(ip).await.unwrap_err();
        assert_eq!(e.status, 429);
        assert_eq!(e.code, "RATE_LIMITED");
        assert_eq!(e.headers[header::RETRY_AFTER], "1");
        // Other clients have their own budget.
        assert!(l.check_ip([10, 0, 0, 2].into()).await.is_ok());
    }

    #[tokio::test]
    async fn zero_means_no_limit_and_unknown_tiers_spend_free() {
        let l = Limits::new(&cfg(0, 0), memory());
        for _ in 0..1000 {
            assert_eq!(l.check_ip([10, 0, 0, 1].into()).await.unwrap(), None);
        }
        assert!(l.check_generate("platinum", "u").await.unwrap().is_some());
        assert!(l.check_generate("platinum", "u").await.unwrap().is_some());
        assert!(l.check_generate("free", "u").await.is_err(), "the same budget: burst of 2 spent");
    }

    /// A cache that never answers (and counts the budgets asked of it).
    #[derive(Debug, Default)]
    struct Silent(std::sync::atomic::AtomicU32);

    #[async_trait::async_trait]
    impl skillup_kit::cache::Cache for Silent {
        async fn get(&self, _: &str) -> skillup_kit::Result<Option<bytes::Bytes>> {
            std::future::pending().await
        }
        async fn get_many(&self, _: &[&str]) -> skillup_kit::Result<Vec<Option<bytes::Bytes>>> {
            std::future::pending().await
        }
        async fn set(
            &self,
            _: &str,
            _: bytes::Bytes,
            _: Option<Duration>,
        ) -> skillup_kit::Result<()> {
            std::future::pending().await
        }
        async fn set_if_absent(
            &self,
            _: &str,
            _: bytes::Bytes,
            _: Option<Duration>,
        ) -> skillup_kit::Result<bool> {
            std::future::pending().await
        }
        async fn delete(&self, _: &str) -> skillup_kit::Result<bool> {
            std::future::pending().await
        }
        async fn delete_prefix(&self, _: &str) -> skillup_kit::Result<u64> {
            std::future::pending().await
        }
        async fn incr(&self, _: &str, _: i64, _: Option<Duration>) -> skillup_kit::Result<i64> {
            std::future::pending().await
        }
        async fn compare_and_set(
            &self,
            _: &str,
            _: skillup_kit::cache::Expect,
            _: Option<bytes::Bytes>,
            _: Option<Duration>,
        ) -> skillup_kit::Result<bool> {
            std::future::pending().await
        }
        async fn take(&self, _: &str, _: Duration, _: u32) -> skillup_kit::Result<Taken> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending().await
        }
        async fn ttl(&self, _: &str) -> skillup_kit::Result<Option<Option<Duration>>> {
            std::future::pending().await
        }
        async fn ping(&self) -> skillup_kit::Result<()> {
            std::future::pending().await
        }
    }

    /// Without its cache the edge still limits, at the fallback share of each budget — and
    /// after a few timeouts stops waiting for the cache at all.
    #[tokio::test]
    async fn a_silent_cache_leaves_the_edge_its_own_budgets_at_the_share() {
        let silent = Arc::new(Silent::default());
        let l = Limits::new(&cfg(1, 10), silent.clone());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let mut passed = 0;
        for _ in 0..20 {
            if l.check_ip(ip).await.is_ok() {
                passed += 1;
            }
        }
        assert_eq!(passed, 5, "half of the burst of 10");
        // Three timeouts open the breaker: the other 17 checks do not wait for the cache.
        assert_eq!(silent.0.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
