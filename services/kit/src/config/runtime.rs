//! What every component shares: the bus, the gRPC servers' limits, shutdown timings; and
//! notifications.

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

/// Notification settings (`SKILLUP_NOTIFICATION__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// How often finished generations are emailed, seconds: one email per user per run, a
    /// digest when several finished.
    pub digest_secs: u64,
}
