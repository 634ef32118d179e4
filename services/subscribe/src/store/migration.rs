//! The subscribe service's migrations (own history table). The default plans are not
//! seeded here but at start, priced in the deployment's selling currency (see
//! [`crate::selling`]).

use sea_orm_migration::{prelude::*, schema::*};

skillup_kit::migrator!(
    Migrator,
    "subscribe_migrations",
    [
        M0001Init,
        skillup_kit::outbox::Migration::new("m0002_outbox", super::OUTBOX),
        M0003PlanChanges,
        M0004StatusNames,
        M0005HoldFunctions,
        M0006PlanTerms
    ]
);

struct M0001Init;

skillup_kit::migration_name!(M0001Init, "m0001_init");

#[async_trait::async_trait]
impl MigrationTrait for M0001Init {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("subscribe_plans")
                .if_not_exists()
                .col(string_len("id", 32).primary_key())
                .col(string_len("title", 120))
                .col(big_integer("price_minor"))
                .col(string_len("currency", 3))
                .col(integer("period_days"))
                .col(text("functions"))
                .col(big_integer("token_quota"))
                .col(integer("generation_quota"))
                .col(string_len("rate_limit_tier", 32))
                .col(integer("priority"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("subscribe_subscriptions")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("user_id").unique_key())
                .col(string_len("plan_id", 32))
                .col(integer("status"))
                .col(timestamp_with_time_zone("period_start"))
                .col(timestamp_with_time_zone("period_end"))
                .col(boolean("cancel_at_period_end"))
                .col(timestamp_with_time_zone("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("subscribe_usage")
                .if_not_exists()
                .col(uuid("user_id"))
                .col(timestamp_with_time_zone("period_start"))
                .col(big_integer("tokens_used"))
                .col(big_integer("tokens_held"))
                .col(integer("generations_used"))
                .col(integer("generations_held"))
                .primary_key(Index::create().col("user_id").col("period_start"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("subscribe_holds")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(timestamp_with_time_zone("period_start"))
                .col(big_integer("tokens"))
                .col(string_len("status", 16))
                .col(big_integer("actual_tokens"))
                .col(string_len("idempotency", 200).unique_key())
                .col(timestamp_with_time_zone("expires_at"))
                .col(timestamp_with_time_zone("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("subscribe_holds_expiry")
                .table("subscribe_holds")
                .col("status")
                .col("expires_at")
                .to_owned(),
        )
        .await?;
        // (Deployments migrated before the default plans were seeded at start got them here,
        // priced in USD; `crate::selling` moves them to the selling currency.)
        Ok(())
    }
}

/// One plan change at a time per user: a change claims the user's row here before it charges,
/// so two concurrent subscribes cannot both pay for one plan.
struct M0003PlanChanges;

skillup_kit::migration_name!(M0003PlanChanges, "m0003_plan_changes");

#[async_trait::async_trait]
impl MigrationTrait for M0003PlanChanges {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("subscribe_changes")
                .if_not_exists()
                .col(uuid("user_id").primary_key())
                .col(uuid("change_id"))
                .col(timestamp_with_time_zone("started_at"))
                .to_owned(),
        )
        .await
    }
}

/// Subscription statuses stored as names (`active`, `canceled`, `expired`) instead of the
/// protobuf enum's numbers (1, 2, 3): the table no longer depends on the wire contract's
/// numbering.
struct M0004StatusNames;

skillup_kit::migration_name!(M0004StatusNames, "m0004_status_names");

#[async_trait::async_trait]
impl MigrationTrait for M0004StatusNames {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let m = m.begin().await?;
        let names = [(1, "active"), (2, "canceled"), (3, "expired")];
        skillup_kit::db::enum_numbers_to_names(
            &m,
            "subscribe_subscriptions",
            "status",
            &names,
            "expired",
        )
        .await?;
        m.commit().await
    }
}

/// Each hold names the function it was taken for, so usage can be told by function and by
/// day; an index serves a user's history. Holds taken before it read as function `""`.
struct M0005HoldFunctions;

skillup_kit::migration_name!(M0005HoldFunctions, "m0005_hold_functions");

#[async_trait::async_trait]
impl MigrationTrait for M0005HoldFunctions {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let mut column = string_len("function_id", 64).default("").to_owned();
        m.alter_table(Table::alter().table("subscribe_holds").add_column(&mut column).to_owned())
            .await?;
        m.create_index(
            Index::create()
                .name("subscribe_holds_user_period")
                .table("subscribe_holds")
                .col("user_id")
                .col("period_start")
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop().name("subscribe_holds_user_period").table("subscribe_holds").to_owned(),
        )
        .await?;
        m.alter_table(Table::alter().table("subscribe_holds").drop_column("function_id").to_owned())
            .await
    }
}

/// Plans an operator edits: a plan can be archived (no longer sold), and a subscription keeps
/// the terms it was bought on (`terms`, the plan's row as JSON) until its period ends — edits
/// reach it at renewal. Rows without terms (bought before) read the plan's current ones.
struct M0006PlanTerms;

skillup_kit::migration_name!(M0006PlanTerms, "m0006_plan_terms");

#[async_trait::async_trait]
impl MigrationTrait for M0006PlanTerms {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("subscribe_plans")
                .add_column(boolean("archived").default(false))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("subscribe_subscriptions")
                .add_column(text_null("terms"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter().table("subscribe_subscriptions").drop_column("terms").to_owned(),
        )
        .await?;
        m.alter_table(Table::alter().table("subscribe_plans").drop_column("archived").to_owned())
            .await
    }
}
