//! Checking a loaded configuration once, for the way the process runs: every error names the
//! key and the variable that sets it.

use super::*;

impl Config {
    /// Checks the values once, for the way the process runs. The message names the key and
    /// the variable that sets it.
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
        if !(4..=31).contains(&self.auth.bcrypt_cost) {
            return Err(bad("auth.bcrypt_cost", "SKILLUP_AUTH__BCRYPT_COST", "must be 4..=31"));
        }
        if self.auth.password_min_chars < 8 {
            return Err(bad(
                "auth.password_min_chars",
                "SKILLUP_AUTH__PASSWORD_MIN_CHARS",
                "must be at least 8",
            ));
        }
        if self.auth.access_ttl_secs < 60 || self.auth.refresh_ttl_secs <= self.auth.access_ttl_secs
        {
            return Err(bad(
                "auth.access_ttl_secs",
                "SKILLUP_AUTH__ACCESS_TTL_SECS",
                "must be at least 60 and below auth.refresh_ttl_secs",
            ));
        }
        if self.identity.ttl_secs == 0 || self.identity.ttl_secs > 3_600 {
            return Err(bad("identity.ttl_secs", "SKILLUP_IDENTITY__TTL_SECS", "must be 1..=3600"));
        }
        if self.edge.tls_cert_file.is_some() != self.edge.tls_key_file.is_some() {
            return Err(bad(
                "edge.tls_cert_file",
                "SKILLUP_EDGE__TLS_CERT_FILE",
                "and edge.tls_key_file must be set together",
            ));
        }
        for (key, var, value) in [
            (
                "edge.header_timeout_ms",
                "SKILLUP_EDGE__HEADER_TIMEOUT_MS",
                self.edge.header_timeout_ms,
            ),
            ("edge.body_timeout_ms", "SKILLUP_EDGE__BODY_TIMEOUT_MS", self.edge.body_timeout_ms),
            ("edge.idle_timeout_ms", "SKILLUP_EDGE__IDLE_TIMEOUT_MS", self.edge.idle_timeout_ms),
            (
                "edge.max_connections",
                "SKILLUP_EDGE__MAX_CONNECTIONS",
                self.edge.max_connections as u64,
            ),
            (
                "edge.max_connections_per_ip",
                "SKILLUP_EDGE__MAX_CONNECTIONS_PER_IP",
                self.edge.max_connections_per_ip as u64,
            ),
        ] {
            if value == 0 {
                return Err(bad(key, var, "must be above 0"));
            }
        }
        for (key, var, list) in [
            ("edge.internal_cidrs", "SKILLUP_EDGE__INTERNAL_CIDRS", &self.edge.internal_cidrs),
            ("edge.trusted_proxies", "SKILLUP_EDGE__TRUSTED_PROXIES", &self.edge.trusted_proxies),
        ] {
            if let Some(bad_net) = list.iter().find(|n| n.parse::<ipnet::IpNet>().is_err()) {
                return Err(bad(key, var, &format!("holds `{bad_net}`, which is not a CIDR")));
            }
        }
        self.validate_ai(needs.providers)?;
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

    fn validate_ai(&self, keys: bool) -> Result<()> {
        let ai = &self.ai;
        if ai.cache_hit_charge_percent > 100 {
            return Err(bad(
                "ai.cache_hit_charge_percent",
                "SKILLUP_AI__CACHE_HIT_CHARGE_PERCENT",
                "must be 0..=100",
            ));
        }
        if let Some(name) =
            ai.chain.iter().find(|n| n.as_str() != "offline" && !ai.providers.contains_key(*n))
        {
            return Err(bad(
                "ai.chain",
                "SKILLUP_AI__CHAIN",
                &format!("names `{name}`, which is not in ai.providers"),
            ));
        }
        for (name, p) in &ai.providers {
            if p.kind != ProviderKind::Offline {
                if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                    return Err(Error::Config(format!(
                        "`ai.providers.{name}.base_url` (SKILLUP_AI__PROVIDERS__{}__BASE_URL) must be an http(s) URL",
                        name.to_ascii_uppercase()
                    )));
                }
                if p.model.is_empty() {
                    return Err(Error::Config(format!(
                        "`ai.providers.{name}.model` (SKILLUP_AI__PROVIDERS__{}__MODEL) must be set",
                        name.to_ascii_uppercase()
                    )));
                }
            }
            if keys {
                p.resolve_key()
                    .map_err(|e| Error::Config(format!("`ai.providers.{name}`: {e}")))?;
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

fn bad(key: &str, var: &str, why: &str) -> Error {
    Error::Config(format!("`{key}` ({var}) {why}"))
}

fn missing(key: &str, var: &str, what: &str) -> Error {
    Error::Config(format!("`{key}` is required here: set {var} to {what}"))
}
