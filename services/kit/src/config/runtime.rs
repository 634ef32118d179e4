//! What every component shares: the bus, the gRPC servers' limits, shutdown timings, a
//! circuit breaker.

use super::*;

/// Message bus settings (`SKILLUP_BUS__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Topic exchange for events.
    pub exchange: String,
    /// Prefix of every queue name (per deployment, or per test).
    pub queue_prefix: String,
    /// Unacknowledged deliveries a consumer holds at once.
    pub prefetch: u16,
    /// How long a publish may wait for the broker (reconnects included), in milliseconds.
    pub publish_timeout_ms: u64,
}

/// Every gRPC server's back-pressure (`SKILLUP_GRPC__…`): past `max_concurrent_rpcs` calls in
/// flight a server refuses more at once with UNAVAILABLE (a client retries elsewhere or
/// later) instead of queueing them; no call runs past `rpc_timeout_ms` (DEADLINE_EXCEEDED).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Calls one server runs at once (a server stream counts until its first answer).
    pub max_concurrent_rpcs: usize,
    /// The server's own deadline for one call, milliseconds (a caller's shorter
    /// `grpc-timeout` still wins).
    pub rpc_timeout_ms: u64,
    /// A server ends each connection this old (±10 %, milliseconds) with a graceful GOAWAY:
    /// calls on it finish, the client connects again — and, if it cannot re-resolve, lands
    /// wherever kube-proxy sends it now, so new replicas get their share. 0 = never.
    pub max_connection_age_ms: u64,
    /// How often a client resolves another service's address again to find every replica
    /// (a headless Service's DNS name; also at once when a connection is refused), and the
    /// longest an ejected replica stays out. Milliseconds.
    pub resolve_interval_ms: u64,
}

/// Shutdown timings (`SKILLUP_SHUTDOWN__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, how long health reads NOT_SERVING before the listener stops, so load
    /// balancers stop routing first. Milliseconds.
    pub drain_ms: u64,
    /// How long in-flight work may take to finish after that. Milliseconds.
    pub grace_ms: u64,
}

/// A circuit breaker (the edge's per upstream, `SKILLUP_EDGE__BREAKER__…`; ai's per provider,
/// `SKILLUP_AI__BREAKER__…`).
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
