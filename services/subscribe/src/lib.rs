//! The subscribe service (`skillup.subscribe.v1`): plans (free, basic, premium by default),
//! subscriptions charged through the payment service once per user, plan and period, switches
//! with proration, cancellation at period end, renewal and expiry to free, entitlements, and
//! quota as hold → settle (see [`holds`]).
//!
//! Reads top-down: [`build`] wires it and starts the periodic job; [`grpc`] is the tonic
//! adapter (the [`domain`] values into the contract's messages), [`events`] the bus adapter,
//! [`clients`] the payment adapter of the [`billing`] port; the rules: [`subscriptions`]
//! (state, plans, the current plan), [`holds`] (quota), [`history`] (usage over time), [`user_data`] (a person's part of their data export), [`changes`] (subscribe, cancel,
//! renew); [`store`] the tables and default plans. No protobuf or tonic type reaches below
//! the adapters.

pub mod billing;
pub mod changes;
pub mod clients;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod history;
pub mod holds;
pub mod plans;
pub mod selling;
pub mod service_levels;
pub mod store;
pub mod subscriptions;
pub mod texts;
pub mod user_data;

use std::{sync::Arc, time::Duration};

use skillup_kit::{
    Shutdown,
    component::{BuildError, Component, Context},
    infra::Infra,
};
use skillup_proto::auth::v1::UserDeleted;

use crate::store::migration::Migrator;
pub use crate::{
    billing::Billing, clients::PaymentBilling, grpc::SubscribeGrpc, subscriptions::Subscriptions,
};

/// Runs the subscribe service's migrations (the default plans included).
pub async fn migrate(db: &sea_orm::DatabaseConnection) -> skillup_kit::Result<()> {
    skillup_kit::db::migrate::<Migrator>(db).await
}

/// Builds the service (migrating first) and starts the relay of its outbox and the periodic
/// job — expired holds back, ended periods renewed — every `interval`, until `shutdown`. The job is safe to run on every
/// replica at once.
pub async fn build(
    infra: &Infra,
    billing: Arc<dyn Billing>,
    currency: &str,
    interval: Duration,
    shutdown: Shutdown,
) -> Result<SubscribeGrpc, BuildError> {
    migrate(&infra.db).await.map_err(BuildError::migrations(<SubscribeGrpc as Component>::NAME))?;
    let subs =
        Subscriptions::new(infra.db.clone(), infra.bus.clone(), infra.cache.clone(), billing)
            .selling_in(currency);
    subs.adopt_currency().await.map_err(|e| {
        BuildError::config(
            <SubscribeGrpc as Component>::NAME,
            format!("pricing the plans in {currency}: {e}"),
        )
    })?;
    subs.outbox().spawn_relay(shutdown.clone());
    let deleted = skillup_kit::events::subscribe::<UserDeleted>(&infra.bus, "subscribe")
        .await
        .map_err(BuildError::infrastructure(
            <SubscribeGrpc as Component>::NAME,
            "the deleted-user subscription",
        ))?;
    let forgetting = subs.clone();
    tokio::spawn(skillup_kit::events::consume(
        deleted,
        shutdown.clone(),
        move |_, ev: UserDeleted| {
            let subs = forgetting.clone();
            async move { forget(&subs, &ev.user_id).await }
        },
    ));
    let job = subs.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait() => return,
            }
            if let Err(e) = job.expire_due(None).await {
                tracing::warn!(error = %e, "expiring holds failed");
            }
            if let Err(e) = job.renew_due().await {
                tracing::warn!(error = %e, "renewals failed");
            }
            let now = chrono::Utc::now();
            if let Err(e) = job.close_due(now).await {
                tracing::warn!(error = %e, "closing the month's service levels failed");
            }
            if let Err(e) = job.report_service_levels(now).await {
                tracing::warn!(error = %e, "measuring the service levels failed");
            }
        }
    });
    Ok(SubscribeGrpc::new(subs))
}

/// `user.deleted`: the subscription ends now.
async fn forget(subs: &Subscriptions, user_id: &str) -> skillup_kit::events::Outcome {
    use skillup_kit::events::Outcome;
    let Ok(user) = uuid::Uuid::parse_str(user_id) else {
        return Outcome::Reject(format!("not a user id: {user_id}"));
    };
    match subs.forget_user(user).await {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

#[async_trait::async_trait]
impl Component for SubscribeGrpc {
    const NAME: &'static str = "subscribe";

    type Config = ();

    /// [`build`] charging through the payment service, with the periodic job every 5 s.
    async fn build(ctx: &Context<'_>, _: &()) -> Result<Self, BuildError> {
        let billing = Arc::new(PaymentBilling::new(ctx.channel("payment")?));
        let currency = &ctx.deployment.currency;
        build(ctx.infra, billing, currency, Duration::from_secs(5), ctx.shutdown.clone()).await
    }
}
