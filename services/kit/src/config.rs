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

/// How the process runs: everything in one process, or one component per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// `skillup up`: embedded defaults allowed (SQLite, in-process cache and bus).
    AllInOne,
    /// `skillup serve <component>`: real servers required.
    Distributed,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    #[default]
    Auto,
    Pretty,
    Json,
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

/// Notification settings (`SKILLUP_NOTIFICATION__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// How often finished generations are emailed, seconds: one email per user per run, a
    /// digest when several finished.
    pub digest_secs: u64,
}

/// Generation settings (`SKILLUP_AI__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AiConfig {
    /// Text providers by name (`SKILLUP_AI__PROVIDERS__<NAME>__<KEY>`); `openai` and
    /// `anthropic` are predefined and read their keys from `OPENAI_API_KEY` / `ANTHROPIC_API_KEY`.
    pub providers: std::collections::BTreeMap<String, ProviderConfig>,
    /// Providers tried in order before the first token (fallback). An `openai` or `anthropic`
    /// entry without an API key is skipped; when none is usable the offline provider answers
    /// (and every response says `provider: "offline"`).
    pub chain: Vec<String>,
    /// Refuse generation (403 EMAIL_NOT_VERIFIED) until the account's email is verified.
    pub require_verified_email: bool,
    /// `mode: auto` answers inline when the function is short and asks for at most this many
    /// output tokens; otherwise it queues a task.
    pub sync_max_tokens: u32,
    /// Sampling temperature sent to providers.
    pub temperature: f32,
    /// Life of a cached answer (same provider, model, messages and parameters), seconds;
    /// 0 = no result cache.
    pub cache_ttl_secs: u64,
    /// Percent of a cached answer's tokens charged to the quota (0 = cache hits are free).
    pub cache_hit_charge_percent: u32,
    /// Queued tasks a worker runs at once (its prefetch). 0 under `skillup up` = no worker in
    /// that process (tasks wait for a `skillup serve worker` elsewhere).
    pub worker_concurrency: u16,
    /// First retry delay of a queued task after a provider failure, milliseconds; doubles per
    /// retry.
    pub retry_base_ms: u64,
    /// Retries of a queued task before it fails (and goes to `generate.long.dead`).
    pub max_retries: u32,
    /// A running task whose worker has been silent this long may be taken over, seconds.
    pub lease_secs: u64,
    /// How long a finished task stays in the cache for fast polling, seconds.
    pub task_cache_secs: u64,
    /// Circuit breaker per provider.
    pub breaker: BreakerConfig,
}

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI Chat Completions.
    #[default]
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Any OpenAI-compatible server (Ollama, vLLM, LM Studio); the API key is optional.
    Compatible,
    /// Built-in deterministic text, no network.
    Offline,
}

/// One text provider (`SKILLUP_AI__PROVIDERS__<NAME>__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Wire format: openai, anthropic, compatible or offline.
    pub kind: ProviderKind,
    /// API base, e.g. `https://api.openai.com/v1`, `https://api.anthropic.com`,
    /// `http://localhost:11434/v1`.
    pub base_url: String,
    /// The API key itself (prefer a file or a variable).
    #[serde(serialize_with = "ser_secret_opt")]
    pub api_key: Option<SecretString>,
    /// A file holding the API key (a Kubernetes Secret mounted as a file).
    pub api_key_file: Option<PathBuf>,
    /// A variable holding the API key.
    pub api_key_env: Option<String>,
    /// Default model.
    pub model: String,
    /// Model per function slug, overriding `model`.
    pub models: std::collections::BTreeMap<String, String>,
    /// Longest a whole answer may take, milliseconds.
    pub timeout_ms: u64,
    /// Longest wait for the first token of a stream (and for a connection), milliseconds.
    pub first_token_ms: u64,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: ProviderKind::Compatible,
            base_url: String::new(),
            api_key: None,
            api_key_file: None,
            api_key_env: None,
            model: String::new(),
            models: Default::default(),
            timeout_ms: 120_000,
            first_token_ms: 20_000,
        }
    }
}

impl ProviderConfig {
    /// The API key: `api_key`, else the file, else the variable. `Err` names what failed.
    pub fn resolve_key(&self) -> std::result::Result<Option<SecretString>, String> {
        if let Some(k) = &self.api_key {
            return Ok(Some(k.clone()));
        }
        if let Some(path) = &self.api_key_file {
            let key = std::fs::read_to_string(path)
                .map_err(|e| format!("reading the API key file {}: {e}", path.display()))?;
            // An empty file (a Secret entry left blank) means no key, as an unset variable does.
            let key = key.trim();
            return Ok((!key.is_empty()).then(|| SecretString::from(key.to_owned())));
        }
        if let Some(var) = &self.api_key_env
            && let Ok(key) = std::env::var(var)
            && !key.trim().is_empty()
        {
            return Ok(Some(SecretString::from(key.trim().to_owned())));
        }
        Ok(None)
    }

    /// The model for a function.
    pub fn model_for(&self, function: &str) -> &str {
        self.models.get(function).map(String::as_str).unwrap_or(&self.model)
    }
}

/// Identity assertion settings (`SKILLUP_IDENTITY__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// File holding the HMAC key (at least 32 bytes; a Kubernetes Secret). Unset =
    /// `<keys_dir>/identity.key`, created on first start when it is missing.
    pub key_file: Option<PathBuf>,
    /// Life of an assertion the edge mints, seconds.
    pub ttl_secs: u64,
}

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

/// Auth service settings (`SKILLUP_AUTH__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `iss` of every token.
    pub issuer: String,
    /// `aud` of every token.
    pub audience: String,
    /// Access-token life, seconds.
    pub access_ttl_secs: u64,
    /// Refresh-token life, seconds.
    pub refresh_ttl_secs: u64,
    /// A retried refresh within this many seconds gets the same successor pair.
    pub refresh_grace_secs: u64,
    /// bcrypt cost (4..=31).
    pub bcrypt_cost: u32,
    /// Least password length in characters.
    pub password_min_chars: usize,
    /// Email-verification token life, seconds.
    pub verification_ttl_secs: u64,
    /// Password-reset token life, seconds.
    pub reset_ttl_secs: u64,
    /// Seconds between two verification emails to one account.
    pub resend_interval_secs: u64,
    /// Failed logins of one account from one client address (or one known device) before
    /// that pair is locked out.
    pub max_failures_per_account: u32,
    /// Failed logins of one account from anywhere before it is locked out for devices that
    /// never signed in to it (known devices still get in: nobody can lock an owner out).
    pub max_failures_per_account_total: u32,
    /// Failed logins per client IP before a lockout.
    pub max_failures_per_ip: u32,
    /// Window the failure counters count in, seconds.
    pub failure_window_secs: u64,
    /// First lockout, seconds; doubles with every further failure.
    pub lockout_base_secs: u64,
    /// Longest lockout, seconds.
    pub lockout_max_secs: u64,
    /// Where the signing keys are; empty = `<data_dir>/keys`.
    pub keys_dir: Option<PathBuf>,
    /// Public base URL for links in emails.
    pub public_url: String,
}

/// Outgoing email (`SKILLUP_MAIL__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// Sender address.
    pub from: String,
    /// Outbox directory for the file mailer; empty = `<data_dir>/outbox`.
    pub outbox_dir: Option<PathBuf>,
    /// SMTP server (`smtp://host:25?tls=required`, `smtps://user:pass@host:465`); unset = outbox.
    #[serde(serialize_with = "ser_secret_opt")]
    pub smtp_url: Option<SecretString>,
}

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
