//! The ai service (`skillup.ai.v1`) and its worker: generation through OpenAI, Anthropic, any
//! OpenAI-compatible server or the offline provider; answered inline, streamed, or queued on
//! `generate.long` for the worker; quota held at the subscribe service and settled by the
//! tokens actually used; identical requests answered from the result cache.
//!
//! Reads top-down: [`build`] / [`build_worker`] wire it; [`grpc`] is the tonic adapter (the
//! contract's messages into [`domain`] values and back), [`queue`] and [`events`] the bus
//! adapters, [`clients`] the gRPC adapters of the [`ports`]; the rules, one concern a module:
//! [`generator`] (state, prepare, what every mode shares), [`generate`] (inline), [`stream`],
//! [`tasks`] (queued), [`idempotency`], [`holds`] (quota), [`results`] (the result cache),
//! [`admin`] (operators' queue work), [`export`] (a document as a file), [`user_data`] (a person's part of their data export); [`worker`] the queue consumer; [`providers`] the provider
//! port and its adapters; [`store`] the task table; [`fake`] a local stand-in for the paid
//! providers (tests and benchmarks). No protobuf or tonic type reaches below the adapters.

pub mod admin;
pub mod clients;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod export;
pub mod fake;
pub mod generate;
pub mod generator;
pub mod grpc;
pub mod holds;
pub mod idempotency;
pub mod ports;
pub mod providers;
pub mod queue;
pub mod results;
pub mod store;
pub mod stream;
pub mod tasks;
pub mod texts;
pub mod user_data;
pub mod worker;

use skillup_kit::{
    component::{BuildError, Component, Context},
    grpc::ServiceChannel,
    infra::Infra,
};
use skillup_proto::auth::v1::UserDeleted;

pub use crate::{
    config::AiConfig,
    generator::Generator,
    grpc::{AdminGrpc, AiGrpc},
    providers::Chain,
    worker::Worker,
};

/// Runs the ai service's migrations.
pub async fn migrate(db: &sea_orm::DatabaseConnection) -> skillup_kit::Result<()> {
    skillup_kit::db::migrate::<store::Migrator>(db).await
}

/// The generator on this process's infrastructure, reaching subscribe and prompt over gRPC
/// (migrating first, and declaring the work queue so a 202 never races its topology).
pub async fn generator(
    infra: &Infra,
    cfg: &AiConfig,
    subscribe: impl Into<ServiceChannel>,
    prompt: impl Into<ServiceChannel>,
) -> Result<Generator, BuildError> {
    const NAME: &str = <Generator as Component>::NAME;
    migrate(&infra.db).await.map_err(BuildError::migrations(NAME))?;
    infra
        .bus
        .declare_queue(&queue::queue_spec(cfg))
        .await
        .map_err(BuildError::infrastructure(NAME, "the generate.long queue"))?;
    let chain = Chain::from_config(cfg).map_err(|e| BuildError::config(NAME, e))?;
    tracing::info!(providers = ?chain.names(), "generation providers, in fallback order");
    Ok(Generator::new(
        infra.db.clone(),
        infra.cache.clone(),
        infra.bus.clone(),
        chain,
        cfg.clone(),
        std::sync::Arc::new(clients::GrpcQuota::new(subscribe)),
        std::sync::Arc::new(clients::GrpcPrompts::new(prompt)),
    ))
}

#[async_trait::async_trait]
impl Component for Generator {
    const NAME: &'static str = "ai";

    type Config = AiConfig;

    /// [`generator`] reaching subscribe and prompt as the context says. The ai service
    /// ([`AiGrpc`], [`AdminGrpc`]) and the [`Worker`] are built on it.
    async fn build(ctx: &Context<'_>, config: &AiConfig) -> Result<Self, BuildError> {
        let (subscribe, prompt) = (ctx.channel("subscribe")?, ctx.channel("prompt")?);
        let generator = generator(ctx.infra, config, subscribe, prompt).await?;
        // `user.deleted`: the person's library and cached answers go (one consumer group:
        // whichever process of the deployment takes the event).
        let deleted = skillup_kit::events::subscribe::<UserDeleted>(&ctx.infra.bus, "ai")
            .await
            .map_err(BuildError::infrastructure(Self::NAME, "the deleted-user subscription"))?;
        let g = generator.clone();
        tokio::spawn(skillup_kit::events::consume(
            deleted,
            ctx.shutdown.clone(),
            move |_, ev: UserDeleted| {
                let g = g.clone();
                async move {
                    use skillup_kit::events::Outcome;
                    let Ok(user) = uuid::Uuid::parse_str(&ev.user_id) else {
                        return Outcome::Reject(format!("not a user id: {}", ev.user_id));
                    };
                    match g.forget_user(user).await {
                        Ok(n) => {
                            tracing::info!(%user, documents = n, "a deleted user's library is gone");
                            Outcome::Done
                        }
                        Err(e) => Outcome::Retry(e.to_string()),
                    }
                }
            },
        ));
        Ok(generator)
    }
}
