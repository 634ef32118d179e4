//! The components `skillup` can run, what infrastructure each needs, and their migrations.
//! Every service is built the same way (`skillup_kit::component::Component::build` from one
//! `Context`); `serve` runs one per process, `up` (see `up.rs`) all of them in one.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use skillup_ai::Generator;
use skillup_auth::AuthGrpc;
use skillup_kit::{
    Shutdown,
    component::{Component as _, Context, Deployment},
    config::Needs,
    grpc::GrpcServer,
    identity::{IdentityKey, IdentityVerifier},
    infra::Infra,
    mesh::MeshTls,
    ops,
};
use skillup_notification::NotificationGrpc;
use skillup_payment::PaymentGrpc;
use skillup_prompt::PromptGrpc;
use skillup_subscribe::SubscribeGrpc;

use crate::settings::Settings;

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
pub async fn serve(component: Component, settings: Settings) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let config = &settings.shared;
    let infra = Infra::connect(config).await.context("connecting the infrastructure")?;
    if component.needs().database {
        skillup_kit::db::report_pool(&infra.db, infra.database_kind);
    }
    let mesh = mesh_tls(&settings, component.name(), &shutdown)?;
    if component == Component::Edge {
        // Only the edge holds the private key: it alone mints identities.
        let identity_key = identity_key(&settings)?;
        let edge = edge(&settings, &infra, identity_key, None, None, Some(mesh), &shutdown)?;
        let http = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
        tracing::info!(component = "edge", http = %http.local_addr()?, "serving");
        edge.serve(http, shutdown).await.context("edge")?;
        return Ok(());
    }
    let builder = GrpcServer::builder()
        .identity_verifier(identity_verifier(&settings)?)
        .mesh_tls(mesh.clone())
        .readiness(infra.readiness.clone(), config.readiness_interval())
        .shutdown_timings(
            Duration::from_millis(config.shutdown.drain_ms),
            Duration::from_millis(config.shutdown.grace_ms),
        )
        .limits(config.grpc.max_concurrent_rpcs, Duration::from_millis(config.grpc.rpc_timeout_ms))
        .max_connection_age(Duration::from_millis(config.grpc.max_connection_age_ms));
    // The worker's run: awaited before the process exits, so SIGTERM lets the tasks in hand
    // finish (within the grace) instead of cutting them off to be paid for twice elsewhere.
    let mut worker_run = None;
    let deployment = Deployment { mesh: Some(mesh), ..settings.deployment() };
    let ctx = Context::new(config, &deployment, &infra, &shutdown).as_component(component.name());
    let builder = match component {
        Component::Auth => {
            builder.add_service(AuthGrpc::build(&ctx, &settings.auth).await?.into_server())
        }
        Component::Prompt => builder.add_service(PromptGrpc::build(&ctx, &()).await?.into_server()),
        Component::Payment => {
            builder.add_service(PaymentGrpc::build(&ctx, &settings.payment).await?.into_server())
        }
        Component::Subscribe => {
            builder.add_service(SubscribeGrpc::build(&ctx, &()).await?.into_server())
        }
        Component::Ai => {
            let generator = Generator::build(&ctx, &settings.ai).await?;
            builder
                .add_service(skillup_ai::AdminGrpc::new(generator.clone()).into_server())
                .add_service(skillup_ai::AiGrpc::new(generator).into_server())
        }
        Component::Worker => {
            // The worker serves no RPCs of its own: health, reflection and metrics only, so
            // Kubernetes probes it like every other component.
            anyhow::ensure!(
                settings.ai.worker_concurrency > 0,
                "`ai.worker_concurrency` (SKILLUP_AI__WORKER_CONCURRENCY) must be at least 1 for a worker"
            );
            let worker = skillup_ai::Worker::new(Generator::build(&ctx, &settings.ai).await?);
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
            let notification = NotificationGrpc::build(&ctx, &settings.notification).await?;
            builder.add_service(notification.into_server())
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

/// The private key the edge signs identity assertions with: `identity.key_file` (a Secret
/// only the edge mounts in Kubernetes), or `<keys_dir>/identity.key`, created on first start
/// when unset and missing (processes sharing a data directory share it; `identity.pub` is
/// written beside it).
pub fn identity_key(settings: &Settings) -> anyhow::Result<Arc<IdentityKey>> {
    let create = settings.shared.identity.key_file.is_none();
    Ok(Arc::new(settings.identity_key(create).context("loading the identity assertion key")?))
}

/// The public keys a service verifies the edge's assertions with (see
/// [`skillup_kit::config::Config::identity_verifier`]): a service never holds the private key.
pub fn identity_verifier(settings: &Settings) -> anyhow::Result<Arc<IdentityVerifier>> {
    let create = settings.shared.identity.key_file.is_none()
        && settings.shared.identity.public_key_file.is_none();
    settings
        .shared
        .identity_verifier(&settings.keys_dir(), create)
        .context("loading the identity assertion's public key")
}

/// This component's mesh certificate (`mesh.*_file`, else `<keys dir>/mesh/<component>.*`),
/// watched for rotation until `shutdown`. A component without one could neither be called
/// nor call anyone, so it does not start.
pub fn mesh_tls(
    settings: &Settings,
    component: &str,
    shutdown: &Shutdown,
) -> anyhow::Result<Arc<MeshTls>> {
    let files = settings.shared.mesh_files(&settings.keys_dir(), component);
    let tls = MeshTls::load(files.clone()).with_context(|| {
        format!(
            "loading the mesh certificate of {component} ({}; create the mesh with `skillup keys init`, or set mesh.cert_file)",
            files.cert.display()
        )
    })?;
    anyhow::ensure!(
        &*tls.me().component == component,
        "{} is the certificate of {}, not of {component}",
        files.cert.display(),
        tls.me().label()
    );
    tls.watch(Duration::from_millis(settings.shared.mesh.reload_interval_ms), shutdown);
    Ok(tls)
}

/// The edge on this process's infrastructure, routing every contract in `proto/`.
/// `services` limits the routes to the services that exist (under `up`, the ones this version
/// serves); `None` routes every contract.
pub fn edge(
    settings: &Settings,
    infra: &Infra,
    identity_key: Arc<IdentityKey>,
    services: Option<Vec<String>>,
    local: Option<skillup_kit::grpc::LocalChannel>,
    mesh: Option<Arc<MeshTls>>,
    shutdown: &Shutdown,
) -> anyhow::Result<skillup_edge::Edge> {
    let descriptors = prost_reflect::DescriptorPool::decode(skillup_proto::FILE_DESCRIPTOR_SET)
        .context("reading the contracts")?;
    skillup_edge::Edge::build(
        skillup_edge::EdgeParts {
            config: settings.shared.clone(),
            edge: settings.edge.clone(),
            descriptors,
            cache: infra.cache.clone(),
            bus: infra.bus.clone(),
            identity_key,
            readiness: infra.readiness.clone(),
            services,
            local,
            mesh,
        },
        shutdown.clone(),
    )
    .map_err(|e| anyhow::anyhow!("edge: {e}"))
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
