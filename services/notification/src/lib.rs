//! The notification service (`skillup.notification.v1`): generation, payment and subscription
//! events become each user's notifications (once per event), listed and marked read over the
//! API and pushed live over a server stream — the edge's WebSocket `/api/notifications/ws` —
//! with missed-event recovery by the last id seen and fan-out across replicas through the bus.
//!
//! Reads top-down: [`build`] wires it and starts the consumers; [`grpc`] is the tonic adapter;
//! [`service`] the rules; [`store`] the tables.

pub mod clients;
pub mod config;
pub mod deliver;
pub mod digest;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod inbox;
pub mod live;
pub mod notifier;
pub mod ports;
pub mod push;
pub mod store;
pub mod texts;
pub mod user_data;

use std::time::Duration;

use skillup_kit::{
    Shutdown,
    component::{BuildError, Component, Context},
    infra::Infra,
    mailer::SharedMailer,
};

pub use crate::{config::NotificationConfig, grpc::NotificationGrpc, notifier::Notifier};

/// Runs the notification service's migrations.
pub async fn migrate(db: &sea_orm::DatabaseConnection) -> skillup_kit::Result<()> {
    skillup_kit::db::migrate::<store::Migrator>(db).await
}

/// Builds the service (migrating first), starts consuming events and sends the email digest
/// every `digest_every`, until `shutdown`. The consumers are subscribed before this returns,
/// so no event published afterwards is missed.
pub async fn build(
    infra: &Infra,
    mailer: SharedMailer,
    public_url: &str,
    digest_every: Duration,
    shutdown: Shutdown,
) -> Result<NotificationGrpc, BuildError> {
    let notifier = Notifier::new(infra.db.clone(), infra.bus.clone(), mailer, public_url);
    start(infra, notifier, digest_every, shutdown).await
}

/// [`build`] on a notifier made already (one that asks a directory, say).
pub async fn start(
    infra: &Infra,
    notifier: Notifier,
    digest_every: Duration,
    shutdown: Shutdown,
) -> Result<NotificationGrpc, BuildError> {
    const NAME: &str = <NotificationGrpc as Component>::NAME;
    migrate(&infra.db).await.map_err(BuildError::migrations(NAME))?;
    let mut notifier = notifier;
    notifier.presence.get_or_insert_with(|| infra.cache.clone());
    let consumers =
        notifier.consumers().await.map_err(BuildError::infrastructure(NAME, "consumers"))?;
    tokio::spawn(notifier.clone().run(consumers, shutdown.clone()));
    // Open consoles, said again before their note lapses.
    let present = notifier.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(deliver::PRESENCE_TTL / 3) => {}
                _ = stop.wait() => return,
            }
            present.refresh_presence().await;
        }
    });
    let job = notifier.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(digest_every) => {}
                _ = shutdown.wait() => return,
            }
            if let Err(e) = job.send_digests().await {
                tracing::warn!(error = %e, "sending digests failed");
            }
        }
    });
    Ok(NotificationGrpc::new(notifier))
}

#[async_trait::async_trait]
impl Component for NotificationGrpc {
    const NAME: &'static str = "notification";

    type Config = NotificationConfig;

    /// [`build`] emailing through the process's mailer, with the digest every
    /// `notification.digest_secs`.
    async fn build(ctx: &Context<'_>, config: &NotificationConfig) -> Result<Self, BuildError> {
        let mailer = skillup_kit::mailer::from_config(ctx.config)
            .map_err(BuildError::infrastructure(Self::NAME, "mailer"))?;
        let every = Duration::from_secs(config.digest_secs.max(1));
        let public_url = &ctx.deployment.public_url;
        let auth = clients::GrpcDirectory::new(ctx.channel("auth")?);
        let mut notifier =
            Notifier::new(ctx.infra.db.clone(), ctx.infra.bus.clone(), mailer, public_url)
                .with_directory(std::sync::Arc::new(auth));
        let key_file = config.vapid_key_path(&ctx.deployment.keys_dir);
        if key_file.exists() {
            let key = push::VapidKey::load(&key_file)
                .map_err(|e| skillup_kit::Error::Keys(e.to_string()))
                .map_err(BuildError::infrastructure(Self::NAME, "the VAPID key"))?;
            notifier = notifier.with_push(push::PushSettings {
                key,
                subject: config.subject(&ctx.config.mail.from),
                reach: push::Reach { loopback: config.push_allow_loopback },
            });
        } else {
            tracing::warn!(
                file = %key_file.display(),
                "no VAPID key: Web Push is off (`skillup keys init` writes one)"
            );
        }
        start(ctx.infra, notifier, every, ctx.shutdown.clone()).await
    }
}
