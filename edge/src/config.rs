//! The edge's settings (`[edge]`, `SKILLUP_EDGE__…`): upstreams, limits, retries, rate
//! budgets, breakers, timeouts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use skillup_kit::config::{BreakerConfig, Needs, Section, invalid};

/// The edge (`SKILLUP_EDGE__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// gRPC address of each service by its short name (`auth`, `prompt`, `subscribe`,
    /// `payment`, `ai`, `notification`), e.g. `http://auth-grpc:50051`, or several separated
    /// by commas: calls are balanced over every address they resolve to.
    pub upstreams: std::collections::BTreeMap<String, String>,
    /// Address of any service not in `upstreams`; unset = this process's `grpc_addr`.
    pub upstream_default: Option<String>,
    /// HTTP/2 connections to each replica of an upstream (calls are spread over them).
    pub upstream_connections: u32,
    /// Under `skillup up`, call the services of the same process in-process (no socket, no
    /// HTTP/2 framing; the same contracts and server layers) rather than over loopback.
    pub in_process: bool,
    /// Default deadline of an upstream call, milliseconds (a route's own rule may differ).
    pub timeout_ms: u64,
    /// How long a token decision is reused, milliseconds (never past the token's expiry;
    /// revocation events evict at once). 0 = ask auth every time.
    pub decision_cache_ms: u64,
    /// Most decisions kept.
    pub decision_cache_max: u64,
    /// Largest request body, bytes (413 above).
    pub max_body_bytes: usize,
    /// Largest request header section, bytes (431 above).
    pub max_header_bytes: usize,
    /// A new connection must start its request, and a request's header section must arrive,
    /// within this long, milliseconds; otherwise the connection is closed.
    pub header_timeout_ms: u64,
    /// A request's body must arrive whole within this long, milliseconds (408 otherwise).
    pub body_timeout_ms: u64,
    /// A connection with no request in flight and no traffic for this long is closed,
    /// milliseconds (HTTP/1.1 keep-alive and HTTP/2 alike; streams and sockets in use stay).
    pub idle_timeout_ms: u64,
    /// Most connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Most connections open at once from one client address (trusted proxies exempt).
    pub max_connections_per_ip: usize,
    /// Networks allowed on internal routes (the Nginx validate endpoint), CIDR notation; also
    /// the only peers `/readyz` and `/metrics` answer on the public listener when `ops_addr`
    /// is unset.
    pub internal_cidrs: Vec<String>,
    /// Where the edge serves `/healthz`, `/readyz` and `/metrics` for probes and Prometheus
    /// (Kubernetes: a port no Ingress routes to). Set, the public listener answers `/healthz`
    /// only.
    pub ops_addr: Option<std::net::SocketAddr>,
    /// Proxies whose `X-Forwarded-For` is believed, CIDR notation; empty = none.
    pub trusted_proxies: Vec<String>,
    /// Origins allowed by CORS; empty = no CORS headers; `*` = any origin.
    pub cors_origins: Vec<String>,
    /// PEM certificate chain; with `tls_key_file`, the edge speaks HTTPS (HTTP/2 by ALPN).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Keep-alive comment interval on SSE streams, milliseconds.
    pub sse_keepalive_ms: u64,
    /// WebSocket ping interval, milliseconds; a socket that misses two is closed.
    pub ws_ping_ms: u64,
    /// How long a WebSocket may take to send its token, milliseconds.
    pub ws_auth_timeout_ms: u64,
    /// Serve the web console (built into the binary) at `/`; off = the JSON API only.
    pub console: bool,
    /// Rate limits.
    pub rate: RateConfig,
    /// Circuit breakers, one per upstream service.
    pub breaker: BreakerConfig,
    /// Retries of upstream calls that failed with UNAVAILABLE.
    pub retry: RetryConfig,
}

/// The edge's retry policy (`SKILLUP_EDGE__RETRY__…`), as gRPC's (gRFC A6): a call that
/// failed with UNAVAILABLE is tried again with exponential backoff and jitter, within its
/// deadline — if it is safe to repeat (GET, or sent with an `Idempotency-Key`) or it certainly
/// never reached the service (connection refused, stream refused). This is what carries
/// requests across a component's restart.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included; 1 = no retries.
    pub max_attempts: u32,
    /// Wait before the first retry, milliseconds; doubles each time.
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts, milliseconds.
    pub max_backoff_ms: u64,
    /// A call that certainly never reached the service (connection refused, stream refused)
    /// is tried again for up to this long from its start, whatever `max_attempts` says — as
    /// gRPC's wait-for-ready — so a lone replica's restart, however slow on a loaded machine,
    /// is ridden out; always inside the call's deadline. 0 = `max_attempts` only.
    pub unreachable_ms: u64,
}

/// Rate limits (`SKILLUP_EDGE__RATE__…`), GCRA: a sustained rate plus a burst. 0 = no limit.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Requests per second per client IP, every route.
    pub ip_per_sec: u32,
    /// Burst of the per-IP budget.
    pub ip_burst: u32,
    /// Requests per minute per client IP on sign-in, registration, refresh, verification and
    /// reset routes.
    pub auth_per_min: u32,
    /// Burst of the auth budget.
    pub auth_burst: u32,
    /// Generation requests per minute per user, by subscription tier; tiers not listed use
    /// `free`'s.
    pub generate_per_min: std::collections::BTreeMap<String, u32>,
    /// Burst of the generation budget, as a number of requests.
    pub generate_burst: u32,
    /// The budgets are kept in the cache (Redis), one for all edges. While it does not answer
    /// (within `shared_timeout_ms`, or its breaker is open), each edge keeps them itself at
    /// this share of each budget (0 < share ≤ 1; never unlimited).
    pub fallback_share: f64,
    /// Longest wait for the cache's verdict, milliseconds, before the edge's own is used.
    pub shared_timeout_ms: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            upstreams: Default::default(),
            upstream_default: None,
            upstream_connections: 2,
            in_process: true,
            timeout_ms: 30_000,
            decision_cache_ms: 5_000,
            decision_cache_max: 100_000,
            max_body_bytes: 1 << 20,
            max_header_bytes: 16 << 10,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            internal_cidrs: vec!["127.0.0.0/8".into(), "::1/128".into()],
            ops_addr: None,
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            sse_keepalive_ms: 15_000,
            ws_ping_ms: 20_000,
            ws_auth_timeout_ms: 10_000,
            console: true,
            rate: RateConfig {
                ip_per_sec: 50,
                ip_burst: 100,
                auth_per_min: 30,
                auth_burst: 10,
                generate_per_min: [("free", 10), ("basic", 60), ("premium", 300)]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                generate_burst: 5,
                fallback_share: 0.5,
                shared_timeout_ms: 50,
            },
            breaker: BreakerConfig {
                consecutive_failures: 5,
                failure_rate_percent: 50,
                window: 20,
                open_ms: 5_000,
                half_open_probes: 3,
            },
            retry: RetryConfig {
                max_attempts: 8,
                initial_backoff_ms: 25,
                max_backoff_ms: 500,
                unreachable_ms: 5_000,
            },
        }
    }
}

impl Section for EdgeConfig {
    const KEY: &'static str = "edge";

    fn check(&self, _needs: Needs) -> skillup_kit::Result<()> {
        let share = self.rate.fallback_share;
        if !(share > 0.0 && share <= 1.0) {
            return Err(invalid("edge.rate.fallback_share", "must be in (0, 1]"));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid(
                "edge.tls_cert_file",
                "and edge.tls_key_file must be set together",
            ));
        }
        for (key, value) in [
            ("edge.header_timeout_ms", self.header_timeout_ms),
            ("edge.body_timeout_ms", self.body_timeout_ms),
            ("edge.idle_timeout_ms", self.idle_timeout_ms),
            ("edge.max_connections", self.max_connections as u64),
            ("edge.max_connections_per_ip", self.max_connections_per_ip as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be above 0"));
            }
        }
        for (key, list) in [
            ("edge.internal_cidrs", &self.internal_cidrs),
            ("edge.trusted_proxies", &self.trusted_proxies),
        ] {
            if let Some(bad) = list.iter().find(|n| n.parse::<ipnet::IpNet>().is_err()) {
                return Err(invalid(key, &format!("holds `{bad}`, which is not a CIDR")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use figment::Jail;
    use skillup_kit::config::{Layers, Overrides};

    use super::*;

    #[test]
    fn edge_settings_are_checked() {
        EdgeConfig::default().check(Needs::default()).expect("the defaults work");
        let mut c = EdgeConfig::default();
        c.internal_cidrs.push("10.0.0.0/33".into());
        let err = c.check(Needs::default()).unwrap_err().to_string();
        assert!(err.contains("edge.internal_cidrs") && err.contains("10.0.0.0/33"), "{err}");
        let c = EdgeConfig { tls_cert_file: Some("cert.pem".into()), ..EdgeConfig::default() };
        let err = c.check(Needs::default()).unwrap_err().to_string();
        assert!(err.contains("tls_key_file"), "{err}");
        let c = EdgeConfig { idle_timeout_ms: 0, ..EdgeConfig::default() };
        let err = c.check(Needs::default()).unwrap_err().to_string();
        assert!(err.contains("SKILLUP_EDGE__IDLE_TIMEOUT_MS"), "{err}");
    }

    #[test]
    fn nested_edge_keys_come_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("SKILLUP_EDGE__UPSTREAMS__AUTH", "http://auth:50051");
            jail.set_env("SKILLUP_EDGE__RATE__GENERATE_PER_MIN__GOLD", "1000");
            let load = || {
                Layers::new(None, &Overrides::default())
                    .with::<EdgeConfig>()
                    .section::<EdgeConfig>()
                    .map_err(|e| e.to_string())
            };
            let c = load()?;
            assert_eq!(c.upstreams["auth"], "http://auth:50051");
            assert_eq!(c.rate.generate_per_min["gold"], 1000);
            assert_eq!(c.rate.generate_per_min["free"], 10, "defaults kept beside it");
            // Lists as the deployment manifests write them.
            jail.set_env("SKILLUP_EDGE__INTERNAL_CIDRS", r#"["127.0.0.0/8","172.28.0.10/32"]"#);
            assert_eq!(load()?.internal_cidrs, ["127.0.0.0/8", "172.28.0.10/32"]);
            Ok(())
        });
    }
}
