//! The subscribe service's migrations (own history table). The default plans are not
//! seeded here but at start, priced in the deployment's selling currency (see
//! [`crate::selling`]).

use sea_orm_migration::{prelude::*, schema::*};

/// The default plans' service levels (given by m0007 and to the plans seeded at start):
/// (plan, queued work's p95 start in ms, availability in basis points, credit in percent of
/// the price when a month misses either).
pub const DEFAULT_SERVICE_LEVELS: &[(&str, i32, i32, i32)] =
    &[("basic", 60_000, 9_900, 10), ("premium", 15_000, 9_950, 25)];

skillup_kit::migrator!(
    Migrator,
    "subscribe_migrations",
    [
        M0001Init,
        skillup_kit::outbox::Migration::new("m0002_outbox", super::OUTBOX),
        M0003PlanChanges,
        M0004StatusNames,
        M0005HoldFunctions,
        M0006PlanTerms,
        M0007ServiceLevels
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

/// Plans promise a service level (queued work's start, availability, the credit when missed);
/// holds keep the plan they were taken on, how their generation ended and how long queued
/// work waited; each closed month's record per plan. The default paid plans get their
/// promises.
struct M0007ServiceLevels;

skillup_kit::migration_name!(M0007ServiceLevels, "m0007_service_levels");

#[async_trait::async_trait]
impl MigrationTrait for M0007ServiceLevels {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in ["sla_queue_p95_ms", "sla_availability_bp", "sla_credit_percent"] {
            m.alter_table(
                Table::alter()
                    .table("subscribe_plans")
                    .add_column(integer(c).default(0))
                    .to_owned(),
            )
            .await?;
        }
        let hold_columns = [
            string_len("plan_id", 32).default("").to_owned(),
            string_len_null("outcome", 16),
            big_integer_null("queue_wait_ms"),
        ];
        for mut c in hold_columns {
            m.alter_table(Table::alter().table("subscribe_holds").add_column(&mut c).to_owned())
                .await?;
        }
        m.create_index(
            Index::create()
                .name("subscribe_holds_plan_created")
                .table("subscribe_holds")
                .col("plan_id")
                .col("created_at")
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("subscribe_service_records")
                .if_not_exists()
                .col(string_len("plan_id", 32))
                .col(string_len("month", 7))
                .col(big_integer("generations"))
                .col(big_integer("failed"))
                .col(big_integer("queued"))
                .col(big_integer("queue_p95_ms"))
                .col(integer("availability_bp"))
                .col(text("terms"))
                .col(boolean("met"))
                .col(integer("credits"))
                .col(boolean("credits_done"))
                .col(timestamp_with_time_zone("closed_at"))
                .primary_key(Index::create().col("plan_id").col("month"))
                .to_owned(),
        )
        .await?;
        // The default paid plans' promises (a plan an operator already gave one keeps it).
        for (id, p95, availability, credit) in DEFAULT_SERVICE_LEVELS.iter().copied() {
            let update = Query::update()
                .table("subscribe_plans")
                .values([
                    (Alias::new("sla_queue_p95_ms"), p95.into()),
                    (Alias::new("sla_availability_bp"), availability.into()),
                    (Alias::new("sla_credit_percent"), credit.into()),
                ])
                .and_where(Expr::col("id").eq(id))
                .and_where(Expr::col("sla_queue_p95_ms").eq(0))
                .and_where(Expr::col("sla_availability_bp").eq(0))
                .to_owned();
            m.get_connection().execute(&update).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("subscribe_service_records").to_owned()).await?;
        m.drop_index(
            Index::drop().name("subscribe_holds_plan_created").table("subscribe_holds").to_owned(),
        )
        .await?;
        for c in ["plan_id", "outcome", "queue_wait_ms"] {
            m.alter_table(Table::alter().table("subscribe_holds").drop_column(c).to_owned())
                .await?;
        }
        for c in ["sla_queue_p95_ms", "sla_availability_bp", "sla_credit_percent"] {
            m.alter_table(Table::alter().table("subscribe_plans").drop_column(c).to_owned())
                .await?;
        }
        Ok(())
    }
}
