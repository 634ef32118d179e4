//! The ai service's table: queued generations (tasks) and their results.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001Tasks), Box::new(M0002StatusIndex)]
    }

    fn migration_table_name() -> DynIden {
        "ai_migrations".into_iden()
    }
}

struct M0001Tasks;

impl MigrationName for M0001Tasks {
    fn name(&self) -> &str {
        "m0001_tasks"
    }
}

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

impl MigrationName for M0002StatusIndex {
    fn name(&self) -> &str {
        "m0002_status_index"
    }
}

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

/// A queued generation.
pub mod task {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ai_tasks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        /// queued | running | completed | failed | cancelled
        pub status: String,
        pub topic: String,
        pub function: String,
        pub locale: String,
        /// The built prompt, JSON `[{role, content}]` (fixed at submission).
        pub messages: String,
        pub max_tokens: i32,
        pub hold_id: Uuid,
        pub priority: i32,
        pub text: Option<String>,
        pub error: Option<String>,
        pub input_tokens: i32,
        pub output_tokens: i32,
        pub provider: String,
        pub model: String,
        pub finish_reason: String,
        pub attempts: i32,
        /// `{user}:{key}`; unique, so a retried submission gets the same task.
        pub idempotency: Option<String>,
        /// The worker run that holds it while running.
        pub claim: Option<String>,
        pub lease_until: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
