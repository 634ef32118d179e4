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

mod layers;
mod runtime;
mod shared;
mod validate;

pub use self::{
    layers::{Layers, Section},
    runtime::{BreakerConfig, BusConfig, GrpcConfig, ShutdownConfig},
    shared::{IdentityConfig, MailConfig, MeshConfig},
    validate::{Needs, invalid},
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

/// The settings every component shares. Field names are the config keys: `grpc_addr` in the
/// file, `SKILLUP_GRPC_ADDR` in the environment, `--grpc-addr` on the command line. Each
/// service owns its own section (a [`Section`]: `auth`, `ai`, `edge`, …) in its crate; the
/// binary loads them all from the same [`Layers`]. Unknown keys are refused by [`Layers`]
/// (top level) and by each section (inside it).
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Outgoing email.
    pub mail: MailConfig,
    /// The identity assertion the edge signs and every service verifies.
    pub identity: IdentityConfig,
    /// This component's mesh certificate (mutual TLS between components).
    pub mesh: MeshConfig,
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
            grpc: GrpcConfig {
                max_concurrent_rpcs: 1_024,
                rpc_timeout_ms: 300_000,
                max_connection_age_ms: 300_000,
                resolve_interval_ms: 5_000,
            },
            readiness_interval_ms: 2_000,
            mail: MailConfig {
                from: "SkillUp <no-reply@skillup.local>".into(),
                outbox_dir: None,
                smtp_url: None,
            },
            identity: IdentityConfig { key_file: None, public_key_file: None, ttl_secs: 60 },
            mesh: MeshConfig {
                ca_file: None,
                cert_file: None,
                key_file: None,
                reload_interval_ms: 30_000,
            },
        }
    }
}

/// Serializes a secret setting (for the layered defaults; never logged).
pub fn ser_secret_opt<S: serde::Serializer>(
    v: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
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
    "SKIP_SDK",
    "SKIP_WEB",
    "SDK_NODE",
    "API_FUZZ_SECS",
    "EDGE_ADDR",
];

impl Config {
    /// The layered sources (see [`Layers`]).
    fn figment(file: Option<&std::path::Path>, overrides: &Overrides) -> Figment {
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

    /// The identity assertion key: `identity.key_file`, or `<keys_dir>/identity.key` (created
    /// when missing only if `create`).
    pub fn identity_key(
        &self,
        keys_dir: &std::path::Path,
        create: bool,
    ) -> Result<crate::identity::IdentityKey> {
        match &self.identity.key_file {
            Some(path) => crate::identity::IdentityKey::load(path, false),
            None => crate::identity::IdentityKey::load(
                &crate::identity::default_key_path(keys_dir),
                create,
            ),
        }
    }

    /// The public keys a service verifies assertions with: `identity.public_key_file`, else
    /// the `.pub` file beside the key file (`identity.key_file` or `<keys_dir>/identity.key`)
    /// when there is one, else derived from the key file (created when missing only if
    /// `create`, and its `.pub` written beside it).
    pub fn identity_verifier(
        &self,
        keys_dir: &std::path::Path,
        create: bool,
    ) -> Result<std::sync::Arc<crate::identity::IdentityVerifier>> {
        use crate::identity::{IdentityVerifier, default_key_path, public_key_path};
        if let Some(path) = &self.identity.public_key_file {
            return Ok(std::sync::Arc::new(IdentityVerifier::load(path)?));
        }
        let key_file = self.identity.key_file.clone().unwrap_or_else(|| default_key_path(keys_dir));
        let public = public_key_path(&key_file);
        if public.exists() && !key_file.exists() {
            return Ok(std::sync::Arc::new(IdentityVerifier::load(&public)?));
        }
        Ok(self.identity_key(keys_dir, create)?.verifier())
    }

    /// Where `component`'s mesh certificate is: `mesh.*_file`, else `<keys_dir>/mesh/`.
    pub fn mesh_files(
        &self,
        keys_dir: &std::path::Path,
        component: &str,
    ) -> crate::mesh::MeshFiles {
        let d = crate::mesh::MeshFiles::in_dir(&keys_dir.join("mesh"), component);
        crate::mesh::MeshFiles {
            ca: self.mesh.ca_file.clone().unwrap_or(d.ca),
            cert: self.mesh.cert_file.clone().unwrap_or(d.cert),
            key: self.mesh.key_file.clone().unwrap_or(d.key),
        }
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

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use figment::Jail;

    use super::*;

    /// The shared settings alone, every layer (no section registered).
    fn load(file: Option<&std::path::Path>, overrides: &Overrides) -> Result<Config> {
        Layers::new(file, overrides).shared()
    }

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
            let c = load(Some("c.toml".as_ref()), &over).map_err(|e| e.to_string())?;
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
            let err = load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("`grpc_addr`"), "{err}");
            Ok(())
        });
    }

    /// Issue 27.1: `SKILLUP_` variables of the telemetry and the scripts are not config keys.
    #[test]
    fn variables_that_are_not_config_are_left_alone() {
        Jail::expect_with(|jail| {
            for name in NOT_CONFIG {
                jail.set_env(format!("SKILLUP_{name}"), "1");
            }
            load(None, &Overrides::default()).expect("not refused");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_is_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("SKILLUP_GRPC_ADRR", "127.0.0.1:1");
            let err = load(None, &Overrides::default()).unwrap_err().to_string();
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
    fn the_identity_assertion_life_is_checked() {
        let mut c = Config::default();
        c.identity.ttl_secs = 0;
        let err = c.validate(RunMode::AllInOne, Needs::default()).unwrap_err().to_string();
        assert!(err.contains("SKILLUP_IDENTITY__TTL_SECS"), "{err}");
    }

    /// A service's section, as a service crate declares one.
    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Toy {
        per_min: std::collections::BTreeMap<String, u32>,
        limit: u32,
    }

    impl Default for Toy {
        fn default() -> Self {
            Self { per_min: [("free".to_owned(), 10)].into_iter().collect(), limit: 3 }
        }
    }

    impl Section for Toy {
        const KEY: &'static str = "toy";

        fn check(&self, _needs: Needs) -> Result<()> {
            if self.limit == 0 { Err(invalid("toy.limit", "must be above 0")) } else { Ok(()) }
        }
    }

    fn toy_layers(file: Option<&str>) -> Layers {
        Layers::new(file.map(std::path::Path::new), &Overrides::default()).with::<Toy>()
    }

    #[test]
    fn a_section_layers_like_the_shared_settings() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[toy]\nlimit = 5")?;
            jail.set_env("SKILLUP_TOY__PER_MIN__GOLD", "1000");
            let layers = toy_layers(Some("c.toml"));
            let toy: Toy = layers.section().map_err(|e| e.to_string())?;
            assert_eq!(toy.limit, 5, "the file beats the section's default");
            assert_eq!(toy.per_min["gold"], 1000, "nested env with __");
            assert_eq!(toy.per_min["free"], 10, "defaults kept beside it");
            toy.check(Needs::default()).map_err(|e| e.to_string())?;
            layers.shared().map_err(|e| e.to_string())?;
            jail.set_env("SKILLUP_TOY__LIMIT", "0");
            let toy: Toy = toy_layers(Some("c.toml")).section().map_err(|e| e.to_string())?;
            let err = toy.check(Needs::default()).unwrap_err().to_string();
            assert_eq!(err, "configuration: `toy.limit` (SKILLUP_TOY__LIMIT) must be above 0");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused_inside_a_section_and_beside_it() {
        Jail::expect_with(|jail| {
            jail.set_env("SKILLUP_TOY__LIMT", "1");
            let err = toy_layers(None).section::<Toy>().unwrap_err().to_string();
            assert!(err.contains("`toy.limt`: unknown field"), "{err}");
            jail.clear_env();
            jail.set_env("SKILLUP_TOYS__LIMIT", "1");
            let err = toy_layers(None).shared().unwrap_err().to_string();
            assert!(err.contains("`toys` is not a configuration key"), "{err}");
            jail.clear_env();
            jail.set_env("SKILLUP_TOY__LIMIT", "1");
            toy_layers(None).shared().map_err(|e| e.to_string())?;
            let err = load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("`toy` is not a configuration key"), "unregistered: {err}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_in_a_section_names_its_whole_key() {
        Jail::expect_with(|jail| {
            jail.set_env("SKILLUP_TOY__LIMIT", "many");
            let err = toy_layers(None).section::<Toy>().unwrap_err().to_string();
            assert!(err.contains("`toy.limit`"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn url_schemes_are_checked() {
        let c = Config { redis_url: Some("http://x".into()), ..Config::default() };
        let err = c.validate(RunMode::AllInOne, Needs::default()).unwrap_err().to_string();
        assert!(err.contains("REDIS_URL"), "{err}");
    }
}
