//! The prompt service's migrations (own history table), and the starter catalog.

use sea_orm_migration::{prelude::*, schema::*};

skillup_kit::migrator!(Migrator, "prompt_migrations", [M0001Init, M0002Seed, M0003ClassNames]);

struct M0001Init;

skillup_kit::migration_name!(M0001Init, "m0001_init");

#[async_trait::async_trait]
impl MigrationTrait for M0001Init {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("prompt_topics")
                .if_not_exists()
                .col(string_len("id", 64).primary_key())
                .col(string_len("title_en", 120))
                .col(string_len("title_ru", 120))
                .col(string_len("description_en", 500))
                .col(string_len("description_ru", 500))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("prompt_functions")
                .if_not_exists()
                .col(string_len("id", 64).primary_key())
                .col(string_len("title_en", 120))
                .col(string_len("title_ru", 120))
                .col(string_len("description_en", 500))
                .col(string_len("description_ru", 500))
                .col(integer("class"))
                .col(integer("default_max_tokens"))
                .col(string_len("min_tier", 32))
                .col(text("params"))
                .col(timestamp_with_time_zone("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("prompt_templates")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(string_len("function_id", 64))
                .col(string_len("locale", 8))
                .col(integer("version"))
                .col(text("system"))
                .col(text("user"))
                .col(string_len("variables", 600))
                .col(boolean("current"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(
                    ForeignKey::create()
                        .from("prompt_templates", "function_id")
                        .to("prompt_functions", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        // Two publishers racing for one version: one wins, the other retries.
        m.create_index(
            Index::create()
                .name("prompt_templates_version")
                .table("prompt_templates")
                .col("function_id")
                .col("locale")
                .col("version")
                .unique()
                .to_owned(),
        )
        .await
    }
}

struct M0002Seed;

skillup_kit::migration_name!(M0002Seed, "m0002_seed");

#[async_trait::async_trait]
impl MigrationTrait for M0002Seed {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        super::seed::insert(m.get_connection()).await
    }
}

/// Function classes stored as names (`short`, `long`) instead of the protobuf enum's numbers.
struct M0003ClassNames;

skillup_kit::migration_name!(M0003ClassNames, "m0003_class_names");

#[async_trait::async_trait]
impl MigrationTrait for M0003ClassNames {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let m = m.begin().await?;
        let classes = [(1, "short"), (2, "long")];
        skillup_kit::db::enum_numbers_to_names(&m, "prompt_functions", "class", &classes, "short")
            .await?;
        m.commit().await
    }
}
