//! Rate limits (governor's GCRA): per client IP on every route, a stricter per-IP budget on
//! the sign-in family of routes, and a per-user generation budget sized by subscription tier.
//! Answers carry `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`; a refusal is
//! 429 `RATE_LIMITED` with `Retry-After`.
//!
//! The budgets live in this edge process: with N edge replicas a client may get up to N times
//! a budget when its requests are spread across them (size the config per replica).

use std::{
    collections::HashMap, hash::Hash, net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration,
};

use crate::config::RateConfig;
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use http::{HeaderMap, HeaderValue, header};

use crate::errors::ApiError;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

struct Budget<K: Hash + Eq + Clone> {
    limiter: Keyed<K>,
    quota: Quota,
}

impl<K: Hash + Eq + Clone> Budget<K> {
    fn new(quota: Quota) -> Self {
        Self { limiter: RateLimiter::keyed(quota).with_middleware(), quota }
    }

    fn check(&self, key: &K) -> Result<Verdict, ApiError> {
        let limit = self.quota.burst_size().get();
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let missing = limit.saturating_sub(remaining);
                let reset = self.quota.replenish_interval() * missing;
                Ok(Verdict { limit, remaining, reset: ceil_secs(reset) })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let secs = ceil_secs(wait).max(1);
                metrics::counter!("edge_rate_limited_total").increment(1);
                let e = ApiError::new(
                    429,
                    "RATE_LIMITED",
                    format!("too many requests; retry in {secs} s"),
                )
                .header(header::RETRY_AFTER, &secs.to_string())
                .header(header::HeaderName::from_static("ratelimit-limit"), &limit.to_string())
                .header(header::HeaderName::from_static("ratelimit-remaining"), "0")
                .header(header::HeaderName::from_static("ratelimit-reset"), &secs.to_string());
                Err(e)
            }
        }
    }
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
pub struct Limits {
    ip: Option<Arc<Budget<IpAddr>>>,
    auth: Option<Arc<Budget<IpAddr>>>,
    generate: Arc<HashMap<String, Budget<String>>>,
}

fn nz(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}

impl Limits {
    pub fn new(cfg: &RateConfig) -> Self {
        let ip = nz(cfg.ip_per_sec).map(|r| {
            Arc::new(Budget::new(Quota::per_second(r).allow_burst(nz(cfg.ip_burst).unwrap_or(r))))
        });
        let auth = nz(cfg.auth_per_min).map(|r| {
            Arc::new(Budget::new(Quota::per_minute(r).allow_burst(nz(cfg.auth_burst).unwrap_or(r))))
        });
        let generate = cfg
            .generate_per_min
            .iter()
            .filter_map(|(tier, per_min)| {
                let r = nz(*per_min)?;
                let burst = nz(cfg.generate_burst).unwrap_or(r);
                Some((tier.clone(), Budget::new(Quota::per_minute(r).allow_burst(burst))))
            })
            .collect();
        Self { ip, auth, generate: Arc::new(generate) }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<Option<Verdict>, ApiError> {
        self.ip.as_ref().map(|b| b.check(&ip)).transpose()
    }

    pub fn check_auth(&self, ip: IpAddr) -> Result<Option<Verdict>, ApiError> {
        self.auth.as_ref().map(|b| b.check(&ip)).transpose()
    }

    /// The caller's tier budget (unknown tiers spend `free`'s).
    pub fn check_generate(&self, tier: &str, user_id: &str) -> Result<Option<Verdict>, ApiError> {
        let budget = self.generate.get(tier).or_else(|| self.generate.get("free"));
        budget.map(|b| b.check(&user_id.to_owned())).transpose()
    }

    /// Drops the state of keys that are back to a full budget (run now and then).
    pub fn forget_idle(&self) {
        if let Some(b) = &self.ip {
            b.limiter.retain_recent();
        }
        if let Some(b) = &self.auth {
            b.limiter.retain_recent();
        }
        for b in self.generate.values() {
            b.limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ip_per_sec: u32, ip_burst: u32) -> RateConfig {
        RateConfig {
            ip_per_sec,
            ip_burst,
            auth_per_min: 0,
            auth_burst: 0,
            generate_per_min: [("free".to_owned(), 60)].into_iter().collect(),
            generate_burst: 2,
        }
    }

    #[test]
    fn the_burst_then_refusal_with_retry_after() {
        let l = Limits::new(&cfg(1, 3));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let v: Vec<_> = (0..3).map(|_| l.check_ip(ip).unwrap().unwrap().remaining).collect();
        assert_eq!(v, [2, 1, 0]);
        let e = l.check_ip(ip).unwrap_err();
        assert_eq!(e.status, 429);
        assert_eq!(e.code, "RATE_LIMITED");
        assert_eq!(e.headers[header::RETRY_AFTER], "1");
        // Other clients have their own budget.
        assert!(l.check_ip([10, 0, 0, 2].into()).is_ok());
    }

    #[test]
    fn zero_means_no_limit_and_unknown_tiers_spend_free() {
        let l = Limits::new(&cfg(0, 0));
        for _ in 0..1000 {
            assert_eq!(l.check_ip([10, 0, 0, 1].into()).unwrap(), None);
        }
        assert!(l.check_generate("platinum", "u").unwrap().is_some());
        assert!(l.check_generate("platinum", "u").unwrap().is_some());
        assert!(l.check_generate("free", "u").is_err(), "the same budget: burst of 2 spent");
    }
}
