//! The ai service's table, `ai_tasks`: queued generations and their results — the entity
//! ([`task`]), every statement on it ([`tasks::Tasks`]), batched inserts ([`writer`]) and the
//! migrations (below).

pub mod task;
pub mod tasks;
pub mod writer;

pub use tasks::Tasks;
pub use writer::TaskWriter;

use sea_orm_migration::{prelude::*, schema::*};

skillup_kit::migrator!(Migrator, "ai_migrations", [M0001Tasks, M0002StatusIndex]);

struct M0001Tasks;

skillup_kit::migration_name!(M0001Tasks, "m0001_tasks");

#[async_trait::async_trait]
impl MigrationTrait for M0001Tasks {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("ai_tasks")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(string_len("status", 16))
                .col(string_len("topic", 200))
                .col(string_len("function", 64))
                .col(string_len("locale", 16))
                .col(text("messages"))
                .col(integer("max_tokens"))
                .col(uuid("hold_id"))
                .col(integer("priority"))
                .col(text_null("text"))
                .col(text_null("error"))
                .col(integer("input_tokens"))
                .col(integer("output_tokens"))
                .col(string_len("provider", 32))
                .col(string_len("model", 128))
                .col(string_len("finish_reason", 32))
                .col(integer("attempts"))
                .col(string_len_null("idempotency", 200).unique_key())
                .col(string_len_null("claim", 40))
                .col(timestamp_with_time_zone_null("lease_until"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ai_tasks_user_id")
                .table("ai_tasks")
                .col("user_id")
                .col("id")
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("ai_tasks").to_owned()).await
    }
}

/// The consumers' lag (oldest queued task) and the operators' counts by state, read by index.
struct M0002StatusIndex;

skillup_kit::migration_name!(M0002StatusIndex, "m0002_status_index");

#[async_trait::async_trait]
impl MigrationTrait for M0002StatusIndex {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("ai_tasks_status_created")
                .table("ai_tasks")
                .col("status")
                .col("created_at")
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("ai_tasks_status_created").table("ai_tasks").to_owned())
            .await
    }
}
