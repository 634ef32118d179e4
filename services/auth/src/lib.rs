//! The auth service (`skillup.auth.v1`): accounts, RS256 access tokens, refresh rotation with
//! reuse detection, revocation, API keys, email verification and password reset, brute-force
//! limits, and `ValidateToken` for the edge and Nginx.
//!
//! Reads top-down: [`build`] wires it; [`grpc`] is the tonic adapter; the rules: [`auth`]
//! (state, the caller, events), [`accounts`] (register, sign in), [`sessions`] (tokens,
//! refresh, logout, validation), [`api_keys`] (keys for programs), [`email_tokens`]
//! (verification, resets), [`exports`] (a person's copy of their data, gathered from the
//! [`ports`] — adapters in [`clients`]), [`admin`];
//! [`domain`] the values and token rules; [`keys`] the signing keys on disk; [`store`] the tables.

pub mod accounts;
pub mod admin;
pub mod api_keys;
pub mod auth;
pub mod clients;
pub mod config;
pub mod domain;
pub mod email_change;
pub mod email_tokens;
pub mod error;
pub mod events;
pub mod exports;
pub mod grpc;
pub mod keys;
pub mod letters;
pub mod ports;
pub mod recovery;
pub mod sessions;
pub mod store;

use std::time::Duration;

use skillup_proto::common::v1::AuditEntry;

use skillup_kit::{
    Shutdown,
    bus::{SharedBus, SubscriptionSpec},
    component::{BuildError, Component, Context},
    infra::Infra,
    mailer::SharedMailer,
};
use skillup_proto::{events::Event as _, subscribe::v1::SubscriptionChanged};

pub use crate::{auth::Auth, config::AuthConfig, grpc::AuthGrpc};
use crate::{domain::tokens::TokenKeys, store::migration::Migrator};

/// Runs auth's migrations.
pub async fn migrate(db: &sea_orm::DatabaseConnection) -> skillup_kit::Result<()> {
    skillup_kit::db::migrate::<Migrator>(db).await
}

/// Builds the service on connected infrastructure: migrates, loads the signing keys (and
/// reloads them every 30 s, so a rotation needs no restart), and starts consuming
/// `subscription.changed` to keep tiers current. Background work stops with `shutdown`.
pub async fn build(
    cfg: AuthConfig,
    keys_dir: std::path::PathBuf,
    infra: &Infra,
    mailer: SharedMailer,
    shutdown: Shutdown,
) -> Result<AuthGrpc, BuildError> {
    build_with(cfg, keys_dir, infra, mailer, Vec::new(), shutdown).await
}

/// [`build`], with the services holding the other parts of people's data exports.
pub async fn build_with(
    cfg: AuthConfig,
    keys_dir: std::path::PathBuf,
    infra: &Infra,
    mailer: SharedMailer,
    holders: Vec<std::sync::Arc<dyn ports::DataHolder>>,
    shutdown: Shutdown,
) -> Result<AuthGrpc, BuildError> {
    const NAME: &str = <AuthGrpc as Component>::NAME;
    migrate(&infra.db).await.map_err(BuildError::migrations(NAME))?;
    let keys = TokenKeys::load(&keys_dir, &cfg.issuer, &cfg.audience).map_err(|e| {
        BuildError::infrastructure(NAME, "signing keys")(skillup_kit::Error::Keys(e))
    })?;
    let reloader = keys.spawn_reloader(Duration::from_secs(30));
    let auth =
        Auth::new(infra.db.clone(), infra.cache.clone(), infra.bus.clone(), mailer, keys, cfg)
            .await
            .map_err(|e| BuildError::config(NAME, e.to_string()))?
            .with_data_holders(holders);
    auth.outbox().spawn_relay(shutdown.clone());
    tokio::spawn(auth.clone().run_exports(shutdown.clone()));
    let consumer =
        tokio::spawn(consume_tier_changes(auth.clone(), infra.bus.clone(), shutdown.clone()));
    // The audit log: every service's admin actions, kept here. Subscribed before this build
    // returns, so no entry sent from now on can miss the queue.
    let audit = skillup_kit::events::subscribe::<AuditEntry>(&infra.bus, "auth-audit")
        .await
        .map_err(BuildError::infrastructure(NAME, "the audit log's queue"))?;
    tokio::spawn(skillup_kit::events::consume(audit, shutdown.clone(), {
        let auth = auth.clone();
        move |_, entry: AuditEntry| {
            let auth = auth.clone();
            async move {
                use skillup_kit::events::Outcome;
                let Some(row) = events::audit_row(entry) else {
                    return Outcome::Reject("an audit entry whose ids are not UUIDs".into());
                };
                match auth.record_audit(row).await {
                    Ok(_) => Outcome::Done,
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
        }
    }));
    tokio::spawn(async move {
        shutdown.wait().await;
        reloader.abort();
        consumer.abort();
    });
    Ok(AuthGrpc::new(auth))
}

#[async_trait::async_trait]
impl Component for AuthGrpc {
    const NAME: &'static str = "auth";

    type Config = AuthConfig;

    /// [`build`] with the process's mailer and keys.
    async fn build(ctx: &Context<'_>, config: &AuthConfig) -> Result<Self, BuildError> {
        let mailer = skillup_kit::mailer::from_config(ctx.config)
            .map_err(BuildError::infrastructure(Self::NAME, "mailer"))?;
        let keys_dir = ctx.deployment.keys_dir.clone();
        let holders = clients::GrpcHolder::all(|name| ctx.channel(name))?;
        build_with(config.clone(), keys_dir, ctx.infra, mailer, holders, ctx.shutdown.clone()).await
    }
}

/// Keeps users' tiers in step with their subscriptions.
async fn consume_tier_changes(auth: Auth, bus: SharedBus, shutdown: Shutdown) {
    let spec = SubscriptionSpec::new("auth", &[SubscriptionChanged::KIND]);
    let mut consumer = match bus.subscribe(&spec, 16).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, kind = SubscriptionChanged::KIND, "auth cannot subscribe");
            return;
        }
    };
    loop {
        let delivery = tokio::select! {
            d = consumer.next() => match d { Some(d) => d, None => return },
            _ = shutdown.wait() => return,
        };
        let decoded = skillup_kit::events::decode::<SubscriptionChanged>(&delivery.message.payload);
        let Some((_, event)) = decoded else {
            tracing::warn!(
                kind = SubscriptionChanged::KIND,
                "undecodable event, dead-lettering it"
            );
            let _ = delivery.dead_letter("undecodable").await;
            continue;
        };
        match auth.apply_tier(&event.user_id, &event.plan).await {
            Ok(()) => {
                let _ = delivery.ack().await;
            }
            Err(crate::error::AuthError::Invalid(..)) => {
                let _ = delivery.dead_letter("invalid event").await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "tier change not applied yet");
                let _ = delivery.retry(&e.to_string(), None).await;
            }
        }
    }
}
