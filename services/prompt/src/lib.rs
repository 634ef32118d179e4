//! The prompt service (`skillup.prompt.v1`): the catalog of topics and functions, versioned
//! templates per function and locale (en, ru), and `BuildPrompt`, which turns a topic, a
//! function and parameters into provider-neutral messages. User text is data, never template
//! code (see [`domain::template`]).
//!
//! Reads top-down: [`build`] wires it; [`grpc`] is the tonic adapter (the [`domain`] values
//! into the contract's messages and back); the rules: [`catalog`] (reading, building prompts)
//! and [`editing`] (functions and template versions); [`domain`] values and the template
//! language; [`store`] the tables and the starter catalog.

pub mod catalog;
pub mod domain;
pub mod editing;
pub mod error;
pub mod grpc;
pub mod store;
pub mod texts;

use skillup_kit::{
    component::{BuildError, Component, Context},
    infra::Infra,
};

use crate::store::migration::Migrator;
pub use crate::{catalog::Catalog, grpc::PromptGrpc};

/// Runs the prompt service's migrations (the starter catalog included).
pub async fn migrate(db: &sea_orm::DatabaseConnection) -> skillup_kit::Result<()> {
    skillup_kit::db::migrate::<Migrator>(db).await
}

/// Builds the service on connected infrastructure (migrating first).
pub async fn build(infra: &Infra) -> Result<PromptGrpc, BuildError> {
    migrate(&infra.db).await.map_err(BuildError::migrations(<PromptGrpc as Component>::NAME))?;
    Ok(PromptGrpc::new(Catalog::new(infra.db.clone())))
}

#[async_trait::async_trait]
impl Component for PromptGrpc {
    const NAME: &'static str = "prompt";

    type Config = ();

    async fn build(ctx: &Context<'_>, _: &()) -> Result<Self, BuildError> {
        build(ctx.infra).await
    }
}
