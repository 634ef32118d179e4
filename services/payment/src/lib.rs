//! The payment service (`skillup.payment.v1`): balances in integer minor units per currency,
//! a double-entry ledger (every movement one transaction whose postings sum to zero; a balance
//! always equals the sum of its postings), money paid in on a provider's hosted page
//! ([`checkout`]: Stripe, YooKassa or the sandbox, settled by verified notifications and the
//! [`reconcile`] job), charges and refunds, all idempotent by key.
//!
//! Reads top-down: [`build`] wires it ([`config`] its settings); [`grpc`] is the tonic adapter;
//! [`checkout`] and [`reconcile`] paying in; [`ledger`] and [`movements`] the ledger;
//! [`user_data`] a person's part of their data export; [`providers`] the hosted-payment port
//! and its adapters; [`domain`] checked values and the sandbox's instant top-up;
//! [`store`] the tables.

pub mod checkout;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod ledger;
pub mod movements;
pub mod providers;
pub mod reconcile;
pub mod refunds;
pub mod store;
pub mod user_data;

use std::sync::Arc;

use skillup_kit::{
    Shutdown,
    component::{BuildError, Component, Context},
    infra::Infra,
};

use crate::store::migration::Migrator;
pub use crate::{
    checkout::{Checkouts, Terms},
    config::PaymentConfig,
    domain::SandboxProvider,
    grpc::PaymentGrpc,
    ledger::Ledger,
};

/// Runs the payment service's migrations.
pub async fn migrate(db: &sea_orm::DatabaseConnection) -> skillup_kit::Result<()> {
    skillup_kit::db::migrate::<Migrator>(db).await
}

/// Builds the service on connected infrastructure with the provider `config` names (migrating
/// first), and starts the relay of its outbox and the checkouts' reconciliation until
/// `shutdown`. `public_url` is where people reach the platform (return addresses).
pub async fn build(
    infra: &Infra,
    config: &PaymentConfig,
    public_url: &str,
    shutdown: Shutdown,
) -> Result<PaymentGrpc, BuildError> {
    const NAME: &str = <PaymentGrpc as Component>::NAME;
    migrate(&infra.db).await.map_err(BuildError::migrations(NAME))?;
    let ledger = Ledger::new(infra.db.clone(), infra.bus.clone(), Arc::new(SandboxProvider))
        .selling_in(&config.currency);
    ledger.outbox().spawn_relay(shutdown.clone());
    report_other_currencies(&ledger, &config.currency).await;
    let checkouts = checkouts(&ledger, config, public_url)
        .map_err(|e| BuildError::config(NAME, e.to_string()))?;
    checkouts.clone().spawn_reconciler(shutdown);
    Ok(PaymentGrpc::new(ledger, checkouts))
}

/// Wallets holding money in a currency other than the selling one are reported (a warning
/// naming the currencies and how many wallets), never converted: an operator decides.
async fn report_other_currencies(ledger: &Ledger, selling: &str) {
    match ledger.wallets_outside(selling).await {
        Ok(others) if !others.is_empty() => {
            let list: Vec<String> = others
                .iter()
                .map(|(c, n, sum)| format!("{c}: {n} wallets, {sum} minor units"))
                .collect();
            tracing::warn!(
                selling,
                others = %list.join("; "),
                "wallets hold money in currencies other than payment.currency; nothing is converted"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "checking wallets' currencies failed"),
    }
}

/// The checkouts of `ledger` on the provider `config` names.
pub fn checkouts(
    ledger: &Ledger,
    config: &PaymentConfig,
    public_url: &str,
) -> skillup_kit::Result<Checkouts> {
    use std::time::Duration;
    let terms = Terms {
        currency: config.currency.clone(),
        ttl: Duration::from_secs(config.checkout_ttl_secs),
        reconcile_every: Duration::from_secs(config.reconcile_secs),
        reconcile_after: Duration::from_secs(config.reconcile_after_secs),
        public_url: public_url.to_owned(),
        email_required: config.provider == config::ProviderKind::Yookassa
            && config.yookassa.receipt,
        webhook_networks: config.webhook_networks()?,
    };
    let timeout = Duration::from_millis(config.request_timeout_ms);
    let provider: Arc<dyn providers::Provider> = match config.provider {
        config::ProviderKind::Sandbox => {
            let sandbox = Arc::new(providers::sandbox::Sandbox::new(ledger.db().clone()));
            return Ok(Checkouts::with_sandbox(ledger.clone(), sandbox, terms));
        }
        config::ProviderKind::Stripe => {
            Arc::new(providers::stripe::Stripe::from_config(&config.stripe, timeout)?)
        }
        config::ProviderKind::Yookassa => {
            Arc::new(providers::yookassa::YooKassa::from_config(&config.yookassa, timeout)?)
        }
    };
    Ok(Checkouts::new(ledger.clone(), provider, terms))
}

#[async_trait::async_trait]
impl Component for PaymentGrpc {
    const NAME: &'static str = "payment";

    type Config = PaymentConfig;

    async fn build(ctx: &Context<'_>, config: &PaymentConfig) -> Result<Self, BuildError> {
        build(ctx.infra, config, &ctx.deployment.public_url, ctx.shutdown.clone()).await
    }
}
