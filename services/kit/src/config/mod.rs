//! Layered configuration: defaults → optional TOML file → `DATABASE_URL` / `REDIS_URL` /
//! `AMQP_URL` → `SKILLUP_*` env (`__` for nesting) → command-line flags. Validated once at
//! start; every error names the key (and the variable that sets it).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

mod ai;
mod auth;
mod edge;
mod runtime;
mod validate;

pub use self::{
    ai::{AiConfig, ProviderConfig, ProviderKind},
    auth::{AuthConfig, IdentityConfig, MailConfig},
    edge::{BreakerConfig, EdgeConfig, RateConfig, RetryConfig},
    runtime::{BusConfig, GrpcConfig, NotificationConfig, ShutdownConfig},
    validate::Needs,
};
pub use crate::telemetry::LogFormat;

/// How the process runs: everything in one process, or one component per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// `skillup up`: embedded defaults allowed (SQLite, in-process cache and bus).
    AllInOne,
    /// `skillup serve <component>`: real servers required.
    Distributed,
}

/// The whole process configuration. Field names are the config keys: `grpc_addr` in the file,
/// `SKILLUP_GRPC_ADDR` in the environment, `--grpc-addr` on the command line.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where `up` keeps its SQLite file and keys.
    pub data_dir: PathBuf,
    /// The gRPC listener (all services share it under `up`).
    pub grpc_addr: SocketAddr,
    /// The HTTP listener: the edge, `/healthz`, `/readyz`, `/metrics`.
    pub http_addr: SocketAddr,
    /// PostgreSQL (`postgres://…`) or SQLite (`sqlite:…`) URL. Unset under `up` = SQLite file.
    #[serde(serialize_with = "ser_secret_opt")]
    pub database_url: Option<SecretString>,
    /// Redis URL (`redis://…`). Unset under `up` = in-process cache.
    #[serde(serialize_with = "ser_secret_opt")]
    pub redis_url: Option<SecretString>,
    /// RabbitMQ URL (`amqp://…`). Unset under `up` = in-process bus.
    #[serde(serialize_with = "ser_secret_opt")]
    pub amqp_url: Option<SecretString>,
    /// Log format: auto, pretty or json.
    pub log_format: LogFormat,
    /// Prefix of every cache key (lets several deployments or tests share one Redis).
    pub cache_prefix: String,
    /// Database pool size per process.
    pub db_max_connections: u32,
    /// Message bus settings.
    pub bus: BusConfig,
    /// Shutdown timings.
    pub shutdown: ShutdownConfig,
    /// Every gRPC server's limits.
    pub grpc: GrpcConfig,
    /// How often readiness probes run, in milliseconds.
    pub readiness_interval_ms: u64,
    /// The auth service.
    pub auth: AuthConfig,
    /// Outgoing email.
    pub mail: MailConfig,
    /// The identity assertion the edge signs and every service verifies.
    pub identity: IdentityConfig,
    /// The REST/JSON edge.
    pub edge: EdgeConfig,
    /// Generation: providers, modes, cache, the worker.
    pub ai: AiConfig,
    /// Notifications.
    pub notification: NotificationConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./skillup-data"),
            grpc_addr: ([127, 0, 0, 1], 50051).into(),
            http_addr: ([127, 0, 0, 1], 8080).into(),
            database_url: None,
            redis_url: None,
            amqp_url: None,
            log_format: LogFormat::Auto,
            cache_prefix: "skillup:".into(),
            db_max_connections: 10,
            bus: BusConfig {
                exchange: "skillup.events".into(),
                queue_prefix: String::new(),
                prefetch: 16,
                publish_timeout_ms: 10_000,
            },
            shutdown: ShutdownConfig { drain_ms: 2_000, grace_ms: 30_000 },
            grpc: GrpcConfig { max_concurrent_rpcs: 1_024, rpc_timeout_ms: 300_000 },
            readiness_interval_ms: 2_000,
            auth: AuthConfig {
                issuer: "skillup".into(),
                audience: "skillup-api".into(),
                access_ttl_secs: 3_600,
                refresh_ttl_secs: 14 * 24 * 3_600,
                refresh_grace_secs: 10,
                bcrypt_cost: 12,
                password_min_chars: 8,
                verification_ttl_secs: 24 * 3_600,
                reset_ttl_secs: 3_600,
                resend_interval_secs: 60,
                max_failures_per_account: 5,
                max_failures_per_account_total: 50,
                max_failures_per_ip: 50,
                failure_window_secs: 900,
                lockout_base_secs: 30,
                lockout_max_secs: 3_600,
                keys_dir: None,
                public_url: "http://127.0.0.1:8080".into(),
            },
            mail: MailConfig {
                from: "SkillUp <no-reply@skillup.local>".into(),
                outbox_dir: None,
                smtp_url: None,
            },
            identity: IdentityConfig { key_file: None, ttl_secs: 60 },
            edge: EdgeConfig {
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
            },
            ai: AiConfig {
                providers: [
                    (
                        "openai".to_owned(),
                        ProviderConfig {
                            kind: ProviderKind::Openai,
                            base_url: "https://api.openai.com/v1".into(),
                            api_key_env: Some("OPENAI_API_KEY".into()),
                            model: "gpt-4o-mini".into(),
                            ..ProviderConfig::default()
                        },
                    ),
                    (
                        "anthropic".to_owned(),
                        ProviderConfig {
                            kind: ProviderKind::Anthropic,
                            base_url: "https://api.anthropic.com".into(),
                            api_key_env: Some("ANTHROPIC_API_KEY".into()),
                            model: "claude-3-5-haiku-latest".into(),
                            ..ProviderConfig::default()
                        },
                    ),
                ]
                .into_iter()
                .collect(),
                chain: vec!["openai".into(), "anthropic".into()],
                require_verified_email: true,
                sync_max_tokens: 1_000,
                temperature: 0.7,
                cache_ttl_secs: 3_600,
                cache_hit_charge_percent: 0,
                worker_concurrency: 16,
                retry_base_ms: 2_000,
                max_retries: 4,
                lease_secs: 600,
                task_cache_secs: 3_600,
                breaker: BreakerConfig {
                    consecutive_failures: 5,
                    failure_rate_percent: 50,
                    window: 20,
                    open_ms: 30_000,
                    half_open_probes: 1,
                },
            },
            notification: NotificationConfig { digest_secs: 60 },
        }
    }
}

fn ser_secret_opt<S: serde::Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(v.expose_secret()),
        None => s.serialize_none(),
    }
}

/// Values given on the command line; only the ones set override lower layers.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// `SKILLUP_*` variables that are not configuration keys: read by the telemetry
/// (`SKILLUP_TRACE_FILTER`), the config file's path, and the project's scripts and deploy
/// templates. Any other unknown `SKILLUP_*` variable is refused (a typo shows at start).
pub const NOT_CONFIG: &[&str] = &[
    "CONFIG",
    "TRACE_FILTER",
    "SKIP_API_FUZZ",
    "SKIP_DEPLOY_CHECK",
    "SKIP_DOCS_CHECK",
    "API_FUZZ_SECS",
    "EDGE_ADDR",
];

impl Config {
    /// Loads every layer. `file` is the `--config` path (or `SKILLUP_CONFIG`), if any.
    pub fn load(file: Option<&std::path::Path>, overrides: &Overrides) -> Result<Self> {
        Self::figment(file, overrides).extract().map_err(|e| Error::Config(describe(e)))
    }

    /// The layered sources, for tests and for `skillup config` style tooling.
    pub fn figment(file: Option<&std::path::Path>, overrides: &Overrides) -> Figment {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            fig = fig.merge(Toml::file_exact(path));
        }
        fig.merge(
            Env::raw()
                .only(&["DATABASE_URL", "REDIS_URL", "AMQP_URL"])
                .map(|k| k.as_str().to_ascii_lowercase().into()),
        )
        .merge(
            Env::prefixed("SKILLUP_")
                .ignore(NOT_CONFIG)
                .split("__")
                .map(|k| k.as_str().to_ascii_lowercase().into()),
        )
        .merge(Serialized::defaults(overrides))
    }

    /// The signing-key directory.
    pub fn keys_dir(&self) -> PathBuf {
        self.auth.keys_dir.clone().unwrap_or_else(|| self.data_dir.join("keys"))
    }

    /// The identity assertion key: `identity.key_file`, or `<keys_dir>/identity.key` (created
    /// when missing only if `create`).
    pub fn identity_key(&self, create: bool) -> Result<crate::identity::IdentityKey> {
        match &self.identity.key_file {
            Some(path) => crate::identity::IdentityKey::load(path, false),
            None => crate::identity::IdentityKey::load(
                &crate::identity::default_key_path(&self.keys_dir()),
                create,
            ),
        }
    }

    /// Where this process reaches service `name` (`payment`, `prompt`, …) over gRPC:
    /// `edge.upstreams.<name>`, else `edge.upstream_default`, else this process's `grpc_addr`.
    pub fn service_url(&self, name: &str) -> String {
        self.edge
            .upstreams
            .get(name)
            .cloned()
            .or_else(|| self.edge.upstream_default.clone())
            .unwrap_or_else(|| format!("http://{}", self.grpc_addr))
    }

    /// The file mailer's outbox.
    pub fn outbox_dir(&self) -> PathBuf {
        self.mail.outbox_dir.clone().unwrap_or_else(|| self.data_dir.join("outbox"))
    }

    pub fn readiness_interval(&self) -> Duration {
        Duration::from_millis(self.readiness_interval_ms)
    }

    /// The database URL to use: the configured one, or the SQLite file under `data_dir`.
    pub fn database_url_or_embedded(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose_secret().to_owned(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("skillup.db").display()),
        }
    }
}

fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() { String::from("(root)") } else { e.path.join(".") };
            let source = e.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_default();
            format!("`{key}`: {} (from {source})", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use figment::Jail;

    use super::*;

    #[test]
    fn layers_override_in_order() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "grpc_addr = \"127.0.0.1:1111\"\nhttp_addr = \"127.0.0.1:2222\"\ncache_prefix = \"file:\"")?;
            jail.set_env("SKILLUP_HTTP_ADDR", "127.0.0.1:3333");
            jail.set_env("SKILLUP_BUS__PREFETCH", "7");
            jail.set_env("DATABASE_URL", "postgres://u@h/db");
            let over = Overrides {
                grpc_addr: Some("127.0.0.1:4444".parse().unwrap()),
                ..Default::default()
            };
            let c = Config::load(Some("c.toml".as_ref()), &over).map_err(|e| e.to_string())?;
            assert_eq!(c.grpc_addr.port(), 4444, "flag beats file");
            assert_eq!(c.http_addr.port(), 3333, "env beats file");
            assert_eq!(c.cache_prefix, "file:", "file beats default");
            assert_eq!(c.bus.prefetch, 7, "nested env with __");
            assert_eq!(c.database_url.as_ref().unwrap().expose_secret(), "postgres://u@h/db");
            assert_eq!(c.bus.exchange, "skillup.events", "default kept");
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_its_key() {
        Jail::expect_with(|jail| {
            jail.set_env("SKILLUP_GRPC_ADDR", "not-an-address");
            let err = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("`grpc_addr`"), "{err}");
            Ok(())
        });
    }

    /// Issue 27.2: every k8s pod got the providers' key file variables; all but ai and worker
    /// exit reading files they do not mount.
    #[test]
    fn only_components_that_call_providers_read_their_key_files() {
        let mut c = Config::default();
        let missing = std::path::PathBuf::from("/nonexistent/skillup/providers/openai");
        c.ai.providers.insert(
            "openai".into(),
            ProviderConfig {
                kind: ProviderKind::Openai,
                base_url: "https://api.openai.com/v1".into(),
                model: "gpt-4o-mini".into(),
                api_key_file: Some(missing),
                ..ProviderConfig::default()
            },
        );
        let without = Needs { database: false, cache: false, bus: false, providers: false };
        c.validate(RunMode::AllInOne, without).expect("an edge or auth never reads the key");
        let err = c
            .validate(RunMode::AllInOne, Needs { providers: true, ..without })
            .unwrap_err()
            .to_string();
        assert!(err.contains("reading the API key file"), "{err}");
    }

    /// Issue 27.1: `SKILLUP_` variables of the telemetry and the scripts are not config keys.
    #[test]
    fn variables_that_are_not_config_are_left_alone() {
        Jail::expect_with(|jail| {
            for name in NOT_CONFIG {
                jail.set_env(format!("SKILLUP_{name}"), "1");
            }
            Config::load(None, &Overrides::default()).expect("not refused");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_is_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("SKILLUP_GRPC_ADRR", "127.0.0.1:1");
            let err = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("grpc_adrr"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn distributed_mode_requires_real_servers() {
        let all = Needs { database: true, cache: true, bus: true, providers: true };
        let c = Config::default();
        c.validate(RunMode::AllInOne, all).expect("up runs on embedded defaults");
        let err = c.validate(RunMode::Distributed, all).unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        let c = Config { database_url: Some("postgres://x/y".into()), ..Config::default() };
        let err = c.validate(RunMode::Distributed, all).unwrap_err().to_string();
        assert!(err.contains("REDIS_URL"), "{err}");
        let c = Config { redis_url: Some("redis://x".into()), ..c };
        let err = c.validate(RunMode::Distributed, all).unwrap_err().to_string();
        assert!(err.contains("AMQP_URL"), "{err}");
        let c = Config { amqp_url: Some("amqp://x".into()), ..c };
        c.validate(RunMode::Distributed, all).expect("all set");
    }

    #[test]
    fn edge_settings_are_checked() {
        let mut c = Config::default();
        c.edge.internal_cidrs.push("10.0.0.0/33".into());
        let err = c.validate(RunMode::AllInOne, Needs::default()).unwrap_err().to_string();
        assert!(err.contains("edge.internal_cidrs") && err.contains("10.0.0.0/33"), "{err}");
        let mut c = Config::default();
        c.edge.tls_cert_file = Some("cert.pem".into());
        let err = c.validate(RunMode::AllInOne, Needs::default()).unwrap_err().to_string();
        assert!(err.contains("tls_key_file"), "{err}");
        let mut c = Config::default();
        c.identity.ttl_secs = 0;
        assert!(c.validate(RunMode::AllInOne, Needs::default()).is_err());
    }

    #[test]
    fn nested_edge_keys_come_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("SKILLUP_EDGE__UPSTREAMS__AUTH", "http://auth:50051");
            jail.set_env("SKILLUP_EDGE__RATE__GENERATE_PER_MIN__GOLD", "1000");
            let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(c.edge.upstreams["auth"], "http://auth:50051");
            assert_eq!(c.edge.rate.generate_per_min["gold"], 1000);
            assert_eq!(c.edge.rate.generate_per_min["free"], 10, "defaults kept beside it");
            // Lists as the deployment manifests write them.
            jail.set_env("SKILLUP_EDGE__INTERNAL_CIDRS", r#"["127.0.0.0/8","172.28.0.10/32"]"#);
            let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(c.edge.internal_cidrs, ["127.0.0.0/8", "172.28.0.10/32"]);
            Ok(())
        });
    }

    #[test]
    fn provider_keys_come_from_a_file_and_a_blank_one_means_none() {
        use secrecy::ExposeSecret;
        let dir = std::env::temp_dir().join(format!("skillup-key-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("openai");
        let p = ProviderConfig { api_key_file: Some(file.clone()), ..ProviderConfig::default() };
        assert!(p.resolve_key().unwrap_err().contains("openai"), "a missing file is an error");
        std::fs::write(&file, "  sk-test\n").unwrap();
        assert_eq!(p.resolve_key().unwrap().unwrap().expose_secret(), "sk-test");
        std::fs::write(&file, "\n").unwrap();
        assert!(p.resolve_key().unwrap().is_none(), "a blank Secret entry = no key");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn url_schemes_are_checked() {
        let c = Config { redis_url: Some("http://x".into()), ..Config::default() };
        let err = c.validate(RunMode::AllInOne, Needs::default()).unwrap_err().to_string();
        assert!(err.contains("REDIS_URL"), "{err}");
    }
}
