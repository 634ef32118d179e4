//! `skillup`: the one binary. `up` runs every component in one process on embedded defaults;
//! `serve <component>` runs one component per process (Kubernetes); `migrate`; `keys`.

mod components;
mod keys;
mod settings;
mod up;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use skillup_kit::{
    config::{LogFormat, Overrides, RunMode},
    telemetry,
};

use crate::{components::Component, keys::KeysCommand, settings::Settings};

/// mimalloc: glibc's malloc contends on its arena locks under many small concurrent
/// allocations (h2 frames, JSON); the edge benchmark showed ~12 % of CPU in malloc/free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// SkillUp turns a topic and a chosen function ("blog post", "quiz", "lesson plan", …) into
/// AI-written text. This binary runs the whole platform or any one part of it.
///
/// Configuration comes from, lowest to highest: built-in defaults, a TOML file (--config or
/// SKILLUP_CONFIG), DATABASE_URL / REDIS_URL / AMQP_URL, SKILLUP_* variables (`__` for nested
/// keys, e.g. SKILLUP_BUS__PREFETCH), then these flags.
#[derive(Debug, Parser)]
#[command(name = "skillup", version, propagate_version = true)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "SKILLUP_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where `up` keeps its SQLite database and signing keys [default: ./skillup-data].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, global = true, value_name = "ADDR")]
    grpc_addr: Option<std::net::SocketAddr>,
    /// HTTP listen address: the edge, /healthz, /readyz, /metrics [default: 127.0.0.1:8080].
    #[arg(long, global = true, value_name = "ADDR")]
    http_addr: Option<std::net::SocketAddr>,
    /// Log format: auto (pretty on a terminal, JSON otherwise), pretty or json.
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the whole platform in this one process. With no DATABASE_URL / REDIS_URL /
    /// AMQP_URL it runs on embedded defaults: a SQLite file and signing keys under the data
    /// directory, an in-process cache and an in-process message bus. Set those variables to use
    /// real PostgreSQL, Redis and RabbitMQ instead. Prints a line per component as it becomes
    /// ready, then the URLs. Stops cleanly on Ctrl-C / SIGTERM.
    Up,
    /// Run one component in this process, the way Kubernetes runs SkillUp. Needs the real
    /// servers: DATABASE_URL (PostgreSQL), REDIS_URL and AMQP_URL; refuses the in-process
    /// cache and bus, which cannot be shared between processes.
    Serve {
        /// The component to run.
        component: Component,
    },
    /// Apply every component's pending database migrations (DATABASE_URL, or the SQLite file
    /// under the data directory), then exit.
    Migrate,
    /// Manage the RS256 signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Exit 0 when the component on this machine answers ready at `/readyz` (of `--http-addr`;
    /// an unspecified bind address is asked on loopback), 1 otherwise. For container health
    /// checks: the runtime image has no shell or curl.
    Health {
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Print the edge's OpenAPI document (every REST route of the contracts) and exit; the
    /// web console's typed client is generated from it (`web/api/openapi.json`).
    Openapi,
    /// Operators' tools.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Print a short-lived identity assertion signed with the edge's identity key, for calling
    /// services directly: `grpcurl -H "x-skillup-identity: $(skillup admin assertion)" …`.
    /// Only whoever holds the private key (`identity.key`: the edge and operators) can do
    /// this; services hold the public half.
    Assertion {
        /// Scopes to assert, comma-separated.
        #[arg(long, default_value = "admin", value_delimiter = ',')]
        scopes: Vec<String>,
        /// Who the calls are logged as.
        #[arg(long, default_value = "operator")]
        subject: String,
        /// Life of the assertion, seconds.
        #[arg(long, default_value_t = 300)]
        ttl_secs: u64,
    },
    /// Grant the admin scope to the account with this email address (the first operator's
    /// way in: no admin is needed). Calls auth as an operator — a certificate issued for the
    /// call from the mesh CA (`<keys>/mesh/ca.key`) and an assertion signed with the identity
    /// key — so the change is audited like any other. The account signs in again to use it.
    Grant(GrantArgs),
    /// Revoke the admin scope from the account with this email address; it is signed out
    /// everywhere at once. The last active admin cannot be revoked.
    Revoke(GrantArgs),
}

#[derive(Debug, clap::Args)]
struct GrantArgs {
    /// The account's email address.
    email: String,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    reason: String,
    /// Auth's gRPC address [default: grpc_addr, where `skillup up` serves every service].
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    skillup_kit::install_crypto_provider();
    skillup_kit::raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        grpc_addr: cli.grpc_addr,
        http_addr: cli.http_addr,
        log_format: cli.log_format.map(|f| match f {
            LogFormatArg::Auto => LogFormat::Auto,
            LogFormatArg::Pretty => LogFormat::Pretty,
            LogFormatArg::Json => LogFormat::Json,
        }),
    };
    let config = Settings::load(cli.config.as_deref(), &overrides)?;
    let service = match &cli.command {
        Command::Up => "skillup".to_owned(),
        Command::Serve { component } => format!("skillup-{}", component.name()),
        _ => "skillup-cli".to_owned(),
    };
    // Kept to the end of `run`: dropping it flushes batched spans and queued error reports.
    let _telemetry =
        telemetry::init(config.shared.log_format, &service, telemetry::Exporters::from_env());
    match cli.command {
        Command::Up => {
            config.validate(RunMode::AllInOne, Component::all_needs())?;
            up::run(config).await
        }
        Command::Serve { component } => {
            config.validate(RunMode::Distributed, component.needs())?;
            components::serve(component, config).await
        }
        Command::Migrate => {
            config.validate(RunMode::AllInOne, Default::default())?;
            let url = config.shared.database_url_or_embedded();
            // Two connections: on PostgreSQL one holds the migrations' lock while they run on
            // the other.
            let db =
                skillup_kit::db::connect(&url, 2).await.context("connecting to the database")?;
            let applied = components::migrate_all(&db).await?;
            say(&format!("database schema up to date ({applied} components with migrations)"));
            Ok(())
        }
        Command::Keys { command } => keys::keys(command, &config).await,
        Command::Health { timeout_ms } => health(&config, timeout_ms).await,
        Command::Openapi => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(skillup_edge::openapi::contract_document().as_bytes())
                .context("writing the document")?;
            Ok(())
        }
        Command::Admin { command: AdminCommand::Grant(args) } => {
            admin_scope(&config, args, true).await
        }
        Command::Admin { command: AdminCommand::Revoke(args) } => {
            admin_scope(&config, args, false).await
        }
        Command::Admin { command: AdminCommand::Assertion { scopes, subject, ttl_secs } } => {
            let key = config.identity_key(false).context("the identity key (identity.key_file)")?;
            let identity = skillup_kit::identity::Caller {
                user_id: subject,
                scopes,
                exp: skillup_kit::identity::now_secs() + ttl_secs.max(1),
                request_id: format!("admin-{}", uuid::Uuid::now_v7()),
                ..Default::default()
            };
            say(&key.sign(&identity));
            Ok(())
        }
    }
}

/// `skillup health`: GET /readyz on this process's HTTP address (an edge's `edge.ops_addr`
/// when set).
/// `skillup admin grant|revoke EMAIL`: auth's SetUserAdmin called as an operator named after
/// the login running it, with a certificate issued for this call (ten minutes) and an
/// assertion of the admin scope.
async fn admin_scope(config: &Settings, args: GrantArgs, admin: bool) -> anyhow::Result<()> {
    use skillup_kit::mesh::{MeshConnector, MeshFiles, MeshTls, Peer, issue::MeshCa};
    use skillup_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
    let login = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or("operator".into());
    let mesh_dir = config.keys_dir().join("mesh");
    let ca = MeshCa::load(&mesh_dir).context("the mesh CA (run `skillup keys init` first)")?;
    // The call's certificate, in a private directory removed once it is loaded.
    let tmp = std::env::temp_dir().join(format!("skillup-admin-{}", uuid::Uuid::now_v7()));
    skillup_kit::files::private_dir(&tmp)?;
    let issued = ca.issue(&Peer::operator(&login), &[], Duration::from_secs(600))?;
    let tls = issued
        .write(&tmp, "operator")
        .and_then(|written| MeshTls::load(MeshFiles { ca: mesh_dir.join("ca.pem"), ..written }));
    let _ = std::fs::remove_dir_all(&tmp);
    let tls = tls?;
    let key = config.identity_key(false).context("the identity key (identity.key_file)")?;
    let caller = skillup_kit::identity::Caller {
        user_id: login.clone(),
        scopes: vec![skillup_kit::audit::ADMIN_SCOPE.to_owned()],
        exp: skillup_kit::identity::now_secs() + 120,
        request_id: format!("cli-{}", uuid::Uuid::now_v7()),
        ..Default::default()
    };
    let assertion = key.sign(&caller);
    let addr = args.addr.unwrap_or_else(|| {
        let mut a = config.shared.grpc_addr;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        a.to_string()
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(MeshConnector::new(Some(tls)))
        .await
        .with_context(|| format!("connecting to auth at {addr}"))?;
    let mut auth = AuthServiceClient::new(channel);
    fn asserted<T>(msg: T, assertion: &str, request_id: &str) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        let md = req.metadata_mut();
        md.insert(skillup_kit::identity::ASSERTION, assertion.parse().expect("base64url"));
        md.insert(skillup_kit::identity::REQUEST_ID, request_id.parse().expect("a uuid"));
        req
    }
    let rid = caller.request_id.as_str();
    let email = args.email.trim().to_lowercase();
    let found = auth
        .list_users(asserted(
            pb::ListUsersRequest { query: email.clone(), ..Default::default() },
            &assertion,
            rid,
        ))
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let user = found
        .users
        .into_iter()
        .find(|u| u.email == email)
        .ok_or_else(|| anyhow::anyhow!("no account with the address {email}"))?;
    let user = auth
        .set_user_admin(asserted(
            pb::SetUserAdminRequest { user_id: user.id, admin, reason: args.reason },
            &assertion,
            rid,
        ))
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    say(&format!(
        "{} {} admin (scopes: {})",
        user.email,
        if admin { "is" } else { "is no longer" },
        user.scopes.join(" ")
    ));
    Ok(())
}

async fn health(config: &Settings, timeout_ms: u64) -> anyhow::Result<()> {
    // An edge with an operations listener answers /readyz there only.
    let mut addr = config.edge.ops_addr.unwrap_or(config.shared.http_addr);
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    // The edge's own listener speaks TLS when it has a certificate (the operations listener
    // never does). Loopback, this machine's own process: its name is not what is checked.
    let tls = config.edge.ops_addr.is_none() && config.edge.tls_cert_file.is_some();
    let url = format!("{}://{addr}/readyz", if tls { "https" } else { "http" });
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(timeout_ms))
        .danger_accept_invalid_certs(tls)
        .build()
        .context("building the HTTP client")?;
    let res = client.get(&url).send().await.with_context(|| format!("asking {url}"))?;
    anyhow::ensure!(res.status().is_success(), "not ready: {url} answered {}", res.status());
    Ok(())
}

/// User-facing output of the binary (not logs): stdout, one line.
#[allow(clippy::print_stdout)]
pub(crate) fn say(line: &str) {
    println!("{line}");
}
