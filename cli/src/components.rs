//! The components `skillup` can run, what infrastructure each needs, and their migrations.
//! Service issues register their `serve` functions here as they land.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use sea_orm::DatabaseConnection;
use skillup_kit::{
    Config, Shutdown,
    config::Needs,
    grpc::{GrpcServer, LocalSlot, ServiceChannel},
    identity::IdentityKey,
    infra::Infra,
    ops,
};

/// A component that runs as its own process under `skillup serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    /// Accounts, tokens, ValidateToken (skillup.auth.v1).
    Auth,
    /// Catalog and prompt building (skillup.prompt.v1).
    Prompt,
    /// Plans, entitlements, quotas (skillup.subscribe.v1).
    Subscribe,
    /// Balances and the ledger (skillup.payment.v1).
    Payment,
    /// Generation API (skillup.ai.v1).
    Ai,
    /// Queued generation worker (consumes generate.long).
    Worker,
    /// Notifications (skillup.notification.v1).
    Notification,
    /// The REST/JSON edge.
    Edge,
}

impl Component {
    /// What a component needs when it runs on its own.
    pub fn needs(self) -> Needs {
        match self {
            // The edge keeps no tables: it needs the cache (rate limits, decisions) and the
            // bus (revocation events), and reaches the services over gRPC.
            Component::Edge => Needs { database: false, cache: true, bus: true, providers: false },
            // Only these call a provider: only they read the providers' API key files.
            Component::Ai | Component::Worker => {
                Needs { database: true, cache: true, bus: true, providers: true }
            }
            _ => Needs { database: true, cache: true, bus: true, providers: false },
        }
    }

    pub fn all_needs() -> Needs {
        Needs { database: true, cache: true, bus: true, providers: true }
    }

    pub fn name(self) -> &'static str {
        match self {
            Component::Auth => "auth",
            Component::Prompt => "prompt",
            Component::Subscribe => "subscribe",
            Component::Payment => "payment",
            Component::Ai => "ai",
            Component::Worker => "worker",
            Component::Notification => "notification",
            Component::Edge => "edge",
        }
    }
}

/// Runs one component until SIGTERM: its gRPC server (health, reflection, metrics) and the
/// ops HTTP endpoints. Components not built yet say so plainly instead of pretending to serve.
pub async fn serve(component: Component, config: Config) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let infra = Infra::connect(&config).await.context("connecting the infrastructure")?;
    if component.needs().database {
        skillup_kit::db::report_pool(&infra.db, infra.database_kind);
    }
    let identity_key = identity_key(&config)?;
    if component == Component::Edge {
        let edge = edge(&config, &infra, identity_key, None, None, &shutdown)?;
        let http = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
        tracing::info!(component = "edge", http = %http.local_addr()?, "serving");
        edge.serve(http, shutdown).await.context("edge")?;
        return Ok(());
    }
    let builder = GrpcServer::builder()
        .identity_key(identity_key)
        .readiness(infra.readiness.clone(), config.readiness_interval())
        .shutdown_timings(
            Duration::from_millis(config.shutdown.drain_ms),
            Duration::from_millis(config.shutdown.grace_ms),
        )
        .limits(config.grpc.max_concurrent_rpcs, Duration::from_millis(config.grpc.rpc_timeout_ms));
    // The worker's run: awaited before the process exits, so SIGTERM lets the tasks in hand
    // finish (within the grace) instead of cutting them off to be paid for twice elsewhere.
    let mut worker_run = None;
    let builder = match component {
        Component::Auth => {
            builder.add_service(auth(&config, &infra, &shutdown).await?.into_server())
        }
        Component::Prompt => builder.add_service(prompt(&infra).await?.into_server()),
        Component::Payment => builder.add_service(payment(&infra, &shutdown).await?.into_server()),
        Component::Subscribe => {
            builder.add_service(subscribe(&config, &infra, None, &shutdown).await?.into_server())
        }
        Component::Ai => {
            let generator = generator(&config, &infra, None).await?;
            builder
                .add_service(skillup_ai::AdminGrpc::new(generator.clone()).into_server())
                .add_service(skillup_ai::AiGrpc::new(generator).into_server())
        }
        Component::Worker => {
            // The worker serves no RPCs of its own: health, reflection and metrics only, so
            // Kubernetes probes it like every other component.
            anyhow::ensure!(
                config.ai.worker_concurrency > 0,
                "`ai.worker_concurrency` (SKILLUP_AI__WORKER_CONCURRENCY) must be at least 1 for a worker"
            );
            let worker = skillup_ai::Worker::new(generator(&config, &infra, None).await?);
            worker.report_metrics();
            let grace = Duration::from_millis(config.shutdown.grace_ms);
            let stop = shutdown.clone();
            worker_run = Some(tokio::spawn(async move {
                if let Err(e) = worker.run(stop, grace).await {
                    tracing::error!(error = %e, "worker stopped");
                }
            }));
            builder
        }
        Component::Notification => {
            builder.add_service(notification(&config, &infra, &shutdown).await?.into_server())
        }
        Component::Edge => anyhow::bail!("the edge is served on its own path above"),
    };
    let grpc = builder
        .bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC on {}", config.grpc_addr))?;
    tracing::info!(component = component.name(), grpc = %grpc.local_addr(), http = %config.http_addr, "serving");
    let http = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
    let drained = async {
        if let Some(run) = worker_run {
            let _ = run.await;
            tracing::info!("worker drained");
        }
    };
    let (g, h, ()) = tokio::join!(
        grpc.run(shutdown.clone()),
        ops::serve(http, ops::router(infra.readiness.clone()), shutdown.clone()),
        drained
    );
    g?;
    h?;
    Ok(())
}

/// The key the edge signs identity assertions with and every service verifies them with:
/// `identity.key_file` (a Secret in Kubernetes), or `<keys_dir>/identity.key`, created on first
/// start when unset and missing (processes sharing a data directory share it).
pub fn identity_key(config: &Config) -> anyhow::Result<Arc<IdentityKey>> {
    let create = config.identity.key_file.is_none();
    Ok(Arc::new(config.identity_key(create).context("loading the identity assertion key")?))
}

/// The edge on this process's infrastructure, routing every contract in `proto/`.
/// `services` limits the routes to the services that exist (under `up`, the ones this version
/// serves); `None` routes every contract.
pub fn edge(
    config: &Config,
    infra: &Infra,
    identity_key: Arc<IdentityKey>,
    services: Option<Vec<String>>,
    local: Option<skillup_kit::grpc::LocalChannel>,
    shutdown: &Shutdown,
) -> anyhow::Result<skillup_edge::Edge> {
    let descriptors = prost_reflect::DescriptorPool::decode(skillup_proto::FILE_DESCRIPTOR_SET)
        .context("reading the contracts")?;
    skillup_edge::Edge::build(
        skillup_edge::EdgeParts {
            config: config.clone(),
            descriptors,
            cache: infra.cache.clone(),
            bus: infra.bus.clone(),
            identity_key,
            readiness: infra.readiness.clone(),
            services,
            local,
        },
        shutdown.clone(),
    )
    .map_err(|e| anyhow::anyhow!("edge: {e}"))
}

/// The auth service on this process's infrastructure.
pub async fn auth(
    config: &Config,
    infra: &Infra,
    shutdown: &Shutdown,
) -> anyhow::Result<skillup_auth::AuthGrpc> {
    let mailer = skillup_kit::mailer::from_config(config)?;
    skillup_auth::build(config.auth.clone(), config.keys_dir(), infra, mailer, shutdown.clone())
        .await
        .map_err(|e| anyhow::anyhow!("auth: {e}"))
}

/// The prompt service (catalog and prompt building) on this process's database.
pub async fn prompt(infra: &Infra) -> anyhow::Result<skillup_prompt::PromptGrpc> {
    skillup_prompt::build(infra).await.map_err(|e| anyhow::anyhow!("prompt: {e}"))
}

/// The payment service (balances and the ledger) with the sandbox card processor.
pub async fn payment(
    infra: &Infra,
    shutdown: &Shutdown,
) -> anyhow::Result<skillup_payment::PaymentGrpc> {
    skillup_payment::build(infra, shutdown.clone())
        .await
        .map_err(|e| anyhow::anyhow!("payment: {e}"))
}

/// The subscribe service, charging through the payment service (see [`service_channel`]), with
/// its renewal and hold-expiry job every 5 s.
pub async fn subscribe(
    config: &Config,
    infra: &Infra,
    local: Option<&LocalSlot>,
    shutdown: &Shutdown,
) -> anyhow::Result<skillup_subscribe::SubscribeGrpc> {
    let billing = Arc::new(skillup_subscribe::PaymentBilling::new(service_channel(
        config, "payment", local,
    )?));
    skillup_subscribe::build(infra, billing, Duration::from_secs(5), shutdown.clone())
        .await
        .map_err(|e| anyhow::anyhow!("subscribe: {e}"))
}

/// How this process reaches service `name`: in-process through `local` when it runs here too
/// (`skillup up` with `edge.in_process`) and no `edge.upstreams.<name>` sends it elsewhere;
/// otherwise over gRPC at `config.service_url(name)`.
fn service_channel(
    config: &Config,
    name: &str,
    local: Option<&LocalSlot>,
) -> anyhow::Result<ServiceChannel> {
    Ok(match local {
        Some(slot) if !config.edge.upstreams.contains_key(name) => {
            ServiceChannel::InProcess(slot.clone())
        }
        _ => ServiceChannel::Network(channel(config, name)?),
    })
}

fn channel(config: &Config, service: &str) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(config.service_url(service))
        .with_context(|| format!("the {service} service's address"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy())
}

/// The generator the ai service and the worker share, reaching subscribe and prompt as
/// [`service_channel`] says.
pub async fn generator(
    config: &Config,
    infra: &Infra,
    local: Option<&LocalSlot>,
) -> anyhow::Result<skillup_ai::Generator> {
    skillup_ai::generator(
        infra,
        &config.ai,
        service_channel(config, "subscribe", local)?,
        service_channel(config, "prompt", local)?,
    )
    .await
    .map_err(|e| anyhow::anyhow!("ai: {e}"))
}

/// The notification service, emailing through the same mailer as auth.
pub async fn notification(
    config: &Config,
    infra: &Infra,
    shutdown: &Shutdown,
) -> anyhow::Result<skillup_notification::NotificationGrpc> {
    let mailer = skillup_kit::mailer::from_config(config)?;
    skillup_notification::build(
        infra,
        mailer,
        &config.auth.public_url,
        Duration::from_secs(config.notification.digest_secs.max(1)),
        shutdown.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("notification: {e}"))
}

/// Applies every component's migrations; returns how many components have any.
pub async fn migrate_all(db: &DatabaseConnection) -> anyhow::Result<usize> {
    skillup_auth::migrate(db).await.context("auth migrations")?;
    skillup_prompt::migrate(db).await.context("prompt migrations")?;
    skillup_payment::migrate(db).await.context("payment migrations")?;
    skillup_subscribe::migrate(db).await.context("subscribe migrations")?;
    skillup_ai::migrate(db).await.context("ai migrations")?;
    skillup_notification::migrate(db).await.context("notification migrations")?;
    Ok(6)
}
