//! The components `skillup` can run, what infrastructure each needs, and their migrations.
//! Service issues register their `serve` functions here as they land.

use std::time::Duration;

use anyhow::Context;
use sea_orm::DatabaseConnection;
use skillup_kit::{Config, Shutdown, config::Needs, grpc::GrpcServer, infra::Infra, ops};

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
            Component::Edge => Needs { database: false, cache: true, bus: true },
            _ => Needs { database: true, cache: true, bus: true },
        }
    }

    pub fn all_needs() -> Needs {
        Needs { database: true, cache: true, bus: true }
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
    let builder = GrpcServer::builder()
        .readiness(infra.readiness.clone(), config.readiness_interval())
        .shutdown_timings(
            Duration::from_millis(config.shutdown.drain_ms),
            Duration::from_millis(config.shutdown.grace_ms),
        );
    let builder = match component {
        Component::Auth => {
            builder.add_service(auth(&config, &infra, &shutdown).await?.into_server())
        }
        other => anyhow::bail!(
            "component `{}` is not built yet in this version of SkillUp; `skillup up` runs what exists",
            other.name()
        ),
    };
    let grpc = builder
        .bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC on {}", config.grpc_addr))?;
    tracing::info!(component = component.name(), grpc = %grpc.local_addr(), http = %config.http_addr, "serving");
    let http = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
    let (g, h) = tokio::join!(
        grpc.run(shutdown.clone()),
        ops::serve(http, ops::router(infra.readiness.clone()), shutdown.clone())
    );
    g?;
    h?;
    Ok(())
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

/// Applies every component's migrations; returns how many components have any.
pub async fn migrate_all(db: &DatabaseConnection) -> anyhow::Result<usize> {
    skillup_auth::migrate(db).await.context("auth migrations")?;
    Ok(1)
}
