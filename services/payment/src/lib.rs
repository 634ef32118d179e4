//! The payment service (`skillup.payment.v1`): balances in integer minor units per currency,
//! a double-entry ledger (every movement one transaction whose postings sum to zero; a balance
//! always equals the sum of its postings), top-ups through a card-processor port (the sandbox
//! processor for `up` and tests), charges and refunds, all idempotent by key.
//!
//! Reads top-down: [`build`] wires it; [`grpc`] is the tonic adapter; [`ledger`] and [`movements`] the ledger;
//! [`user_data`] a person's part of their data export;
//! [`domain`] checked values and the processor port; [`store`] the tables.

pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod ledger;
pub mod movements;
pub mod store;
pub mod user_data;

use std::sync::Arc;

use skillup_kit::{
    Shutdown,
    component::{BuildError, Component, Context},
    infra::Infra,
};

use crate::store::migration::Migrator;
pub use crate::{domain::SandboxProvider, grpc::PaymentGrpc, ledger::Ledger};

/// Runs the payment service's migrations.
pub async fn migrate(db: &sea_orm::DatabaseConnection) -> skillup_kit::Result<()> {
    skillup_kit::db::migrate::<Migrator>(db).await
}

/// Builds the service on connected infrastructure with the sandbox processor (migrating first),
/// and starts the relay of its outbox until `shutdown`.
pub async fn build(infra: &Infra, shutdown: Shutdown) -> Result<PaymentGrpc, BuildError> {
    migrate(&infra.db).await.map_err(BuildError::migrations(<PaymentGrpc as Component>::NAME))?;
    let ledger = Ledger::new(infra.db.clone(), infra.bus.clone(), Arc::new(SandboxProvider));
    ledger.outbox().spawn_relay(shutdown);
    Ok(PaymentGrpc::new(ledger))
}

#[async_trait::async_trait]
impl Component for PaymentGrpc {
    const NAME: &'static str = "payment";

    type Config = ();

    async fn build(ctx: &Context<'_>, _: &()) -> Result<Self, BuildError> {
        build(ctx.infra, ctx.shutdown.clone()).await
    }
}
