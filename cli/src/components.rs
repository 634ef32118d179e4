//! The components `skillup` can run, what infrastructure each needs, and their migrations.
//! Service issues register their `serve` functions here as they land.

use sea_orm::DatabaseConnection;
use skillup_kit::{Config, config::Needs};

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

/// Runs one component until SIGTERM. No component has landed yet: each service issue adds
/// its own arm here. Until then this says so plainly instead of pretending to serve.
pub async fn serve(component: Component, _config: Config) -> anyhow::Result<()> {
    anyhow::bail!(
        "component `{}` is not built yet in this version of SkillUp; `skillup up` runs what exists",
        component.name()
    )
}

/// Applies every component's migrations; returns how many components have any.
pub async fn migrate_all(_db: &DatabaseConnection) -> anyhow::Result<usize> {
    Ok(0)
}
