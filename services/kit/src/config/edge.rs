//! The edge's settings: upstreams, limits, retries, rate budgets, breakers, timeouts.

use super::*;

/// The edge (`SKILLUP_EDGE__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// gRPC address of each service by its short name (`auth`, `prompt`, `subscribe`,
    /// `payment`, `ai`, `notification`), e.g. `http://auth:50051`.
    pub upstreams: std::collections::BTreeMap<String, String>,
    /// Address of any service not in `upstreams`; unset = this process's `grpc_addr`.
    pub upstream_default: Option<String>,
    /// HTTP/2 connections to each upstream (calls are spread over them).
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
}

/// Circuit breaker per upstream (`SKILLUP_EDGE__BREAKER__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Opens after this many failures in a row (UNAVAILABLE, DEADLINE_EXCEEDED, transport
    /// errors); 0 = never on a streak.
    pub consecutive_failures: u32,
    /// Also opens when at least this percent of the last `window` calls failed; 0 = off.
    pub failure_rate_percent: u32,
    /// Calls the failure rate is taken over (and the least before it counts).
    pub window: u32,
    /// How long it stays open before half-open probes, milliseconds.
    pub open_ms: u64,
    /// Probe calls let through while half-open; all must succeed to close.
    pub half_open_probes: u32,
}
