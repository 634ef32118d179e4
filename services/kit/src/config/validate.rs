//! Checking a loaded configuration once, for the way the process runs: every error names the
//! key and the variable that sets it.

use super::*;

impl Config {
    /// Checks the values once, for the way the process runs. The message names the key and
    /// the variable that sets it.
    /// (Each service's section checks its own: [`Section::check`].)
    pub fn validate(&self, mode: RunMode, needs: Needs) -> Result<()> {
        if let Some(url) = &self.database_url {
            let url = url.expose_secret();
            if !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
            {
                return Err(bad(
                    "database_url",
                    "DATABASE_URL",
                    "must start with postgres://, postgresql:// or sqlite:",
                ));
            }
        }
        if let Some(url) = &self.redis_url {
            let url = url.expose_secret();
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(bad("redis_url", "REDIS_URL", "must start with redis:// or rediss://"));
            }
        }
        if let Some(url) = &self.amqp_url {
            let url = url.expose_secret();
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                return Err(bad("amqp_url", "AMQP_URL", "must start with amqp:// or amqps://"));
            }
        }
        if self.bus.prefetch == 0 {
            return Err(bad("bus.prefetch", "SKILLUP_BUS__PREFETCH", "must be at least 1"));
        }
        if self.grpc.max_concurrent_rpcs == 0 {
            return Err(bad(
                "grpc.max_concurrent_rpcs",
                "SKILLUP_GRPC__MAX_CONCURRENT_RPCS",
                "must be at least 1",
            ));
        }
        if self.grpc.rpc_timeout_ms < 1_000 {
            return Err(bad(
                "grpc.rpc_timeout_ms",
                "SKILLUP_GRPC__RPC_TIMEOUT_MS",
                "must be at least 1000",
            ));
        }
        if self.grpc.max_connection_age_ms != 0 && self.grpc.max_connection_age_ms < 1_000 {
            return Err(bad(
                "grpc.max_connection_age_ms",
                "SKILLUP_GRPC__MAX_CONNECTION_AGE_MS",
                "must be 0 (never) or at least 1000",
            ));
        }
        if self.grpc.resolve_interval_ms < 100 {
            return Err(bad(
                "grpc.resolve_interval_ms",
                "SKILLUP_GRPC__RESOLVE_INTERVAL_MS",
                "must be at least 100",
            ));
        }
        if self.db_max_connections < 2 {
            return Err(bad(
                "db_max_connections",
                "SKILLUP_DB_MAX_CONNECTIONS",
                "must be at least 2 (migrations hold one connection for their lock)",
            ));
        }
        if self.readiness_interval_ms < 100 {
            return Err(bad(
                "readiness_interval_ms",
                "SKILLUP_READINESS_INTERVAL_MS",
                "must be at least 100",
            ));
        }
        if self.mesh.reload_interval_ms < 100 {
            return Err(bad(
                "mesh.reload_interval_ms",
                "SKILLUP_MESH__RELOAD_INTERVAL_MS",
                "must be at least 100",
            ));
        }
        if self.identity.ttl_secs == 0 || self.identity.ttl_secs > 3_600 {
            return Err(bad("identity.ttl_secs", "SKILLUP_IDENTITY__TTL_SECS", "must be 1..=3600"));
        }
        if mode == RunMode::Distributed {
            if needs.database && self.database_url.is_none() {
                return Err(missing(
                    "database_url",
                    "DATABASE_URL",
                    "a PostgreSQL URL, e.g. postgres://user@host:5432/skillup",
                ));
            }
            if needs.cache && self.redis_url.is_none() {
                return Err(missing(
                    "redis_url",
                    "REDIS_URL",
                    "a Redis URL, e.g. redis://host:6379 (the in-process cache only works under `skillup up`)",
                ));
            }
            if needs.bus && self.amqp_url.is_none() {
                return Err(missing(
                    "amqp_url",
                    "AMQP_URL",
                    "a RabbitMQ URL, e.g. amqp://user:pass@host:5672/%2f (the in-process bus only works under `skillup up`)",
                ));
            }
        }
        Ok(())
    }
}

/// Which infrastructure a component needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub database: bool,
    pub cache: bool,
    pub bus: bool,
    /// The AI providers' API keys (the ai service and the worker): only then are their key
    /// files read, so a component that never calls a provider starts without them mounted.
    pub providers: bool,
}

/// A setting that cannot work: ``"`ai.chain` (SKILLUP_AI__CHAIN) names `x`, …"`` — the key, the
/// variable that sets it, and why.
pub fn invalid(key: &str, why: &str) -> Error {
    let var = format!("SKILLUP_{}", key.replace('.', "__").to_ascii_uppercase());
    bad(key, &var, why)
}

fn bad(key: &str, var: &str, why: &str) -> Error {
    Error::Config(format!("`{key}` ({var}) {why}"))
}

fn missing(key: &str, var: &str, what: &str) -> Error {
    Error::Config(format!("`{key}` is required here: set {var} to {what}"))
}
