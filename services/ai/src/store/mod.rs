//! The ai service's table, `ai_tasks`: every generation a user made (inline, streamed or
//! queued) — the user's library — and its result: the entity ([`task`]), every statement on it
//! ([`tasks::Tasks`]), batched inserts ([`writer`]) and the migrations (below), with the
//! full-text index (PostgreSQL: a `tsvector` column by the document's locale under a GIN index;
//! SQLite: an FTS5 table kept by triggers).

pub mod task;
pub mod tasks;
pub mod writer;

pub use tasks::Tasks;
pub use writer::{Flush, TaskWriter};

use sea_orm_migration::{prelude::*, schema::*};

skillup_kit::migrator!(
    Migrator,
    "ai_migrations",
    [M0001Tasks, M0002StatusIndex, M0003Library, M0004DeferredSearch]
);

/// PostgreSQL: a document's words as its `search` vector — title, topic and text, stemmed by
/// the document's locale (Russian or English).
pub(crate) const PG_VECTOR: &str = "to_tsvector(
    CASE WHEN locale LIKE 'ru%' THEN 'russian'::regconfig ELSE 'english'::regconfig END,
    coalesce(title, '') || ' ' || topic || ' ' || coalesce(text, '')
)";

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

/// Every generation is a document of its owner's library: how it ran, a title and a star its
/// owner sets, the parameters asked, what it was regenerated from, whether its client left
/// mid-stream; and the full-text index.
struct M0003Library;

skillup_kit::migration_name!(M0003Library, "m0003_library");

/// PostgreSQL: the words of the title, topic and text, stemmed by the document's locale.
const PG_SEARCH: &[&str] = &[
    "ALTER TABLE ai_tasks ADD COLUMN IF NOT EXISTS search tsvector GENERATED ALWAYS AS (
        to_tsvector(
            CASE WHEN locale LIKE 'ru%' THEN 'russian'::regconfig ELSE 'english'::regconfig END,
            coalesce(title, '') || ' ' || topic || ' ' || coalesce(text, '')
        )
    ) STORED",
    "CREATE INDEX IF NOT EXISTS ai_tasks_search ON ai_tasks USING GIN (search)",
];

/// SQLite (`skillup up`): an FTS5 table of the same words, kept by triggers.
const SQLITE_SEARCH: &[&str] = &[
    "CREATE VIRTUAL TABLE IF NOT EXISTS ai_tasks_fts USING fts5(
        id UNINDEXED, title, topic, text, tokenize = 'unicode61 remove_diacritics 2'
    )",
    "CREATE TRIGGER IF NOT EXISTS ai_tasks_fts_insert AFTER INSERT ON ai_tasks BEGIN
        INSERT INTO ai_tasks_fts (id, title, topic, text)
        VALUES (new.id, coalesce(new.title, ''), new.topic, coalesce(new.text, ''));
    END",
    "CREATE TRIGGER IF NOT EXISTS ai_tasks_fts_update AFTER UPDATE OF title, topic, text ON ai_tasks
    BEGIN
        DELETE FROM ai_tasks_fts WHERE id = old.id;
        INSERT INTO ai_tasks_fts (id, title, topic, text)
        VALUES (new.id, coalesce(new.title, ''), new.topic, coalesce(new.text, ''));
    END",
    "CREATE TRIGGER IF NOT EXISTS ai_tasks_fts_delete AFTER DELETE ON ai_tasks BEGIN
        DELETE FROM ai_tasks_fts WHERE id = old.id;
    END",
    "INSERT INTO ai_tasks_fts (id, title, topic, text)
        SELECT id, coalesce(title, ''), topic, coalesce(text, '') FROM ai_tasks",
];

#[async_trait::async_trait]
impl MigrationTrait for M0003Library {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds them one at a time.
        for column in [
            string_len("delivery", 16).default("queued").to_owned(),
            string_len_null("title", 200),
            boolean("starred").default(false).to_owned(),
            text("params").default("{}").to_owned(),
            uuid_null("regenerated_from"),
            boolean("interrupted").default(false).to_owned(),
        ] {
            let mut column = column;
            m.alter_table(Table::alter().table("ai_tasks").add_column(&mut column).to_owned())
                .await?;
        }
        let search = match m.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => PG_SEARCH,
            sea_orm::DatabaseBackend::Sqlite => SQLITE_SEARCH,
            other => return Err(DbErr::Migration(format!("no full-text index for {other:?}"))),
        };
        for statement in search {
            m.get_connection().execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let drop = match m.get_database_backend() {
            sea_orm::DatabaseBackend::Sqlite => &[
                "DROP TRIGGER IF EXISTS ai_tasks_fts_insert",
                "DROP TRIGGER IF EXISTS ai_tasks_fts_update",
                "DROP TRIGGER IF EXISTS ai_tasks_fts_delete",
                "DROP TABLE IF EXISTS ai_tasks_fts",
            ][..],
            _ => {
                &["DROP INDEX IF EXISTS ai_tasks_search", "ALTER TABLE ai_tasks DROP COLUMN search"]
                    [..]
            }
        };
        for statement in drop {
            m.get_connection().execute_unprepared(statement).await?;
        }
        for column in ["delivery", "title", "starred", "params", "regenerated_from", "interrupted"]
        {
            m.alter_table(Table::alter().table("ai_tasks").drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}

/// PostgreSQL: the search vector is no longer computed in the statement that files a document
/// (a `GENERATED` column made every insert pay for stemming the whole text and its GIN entry,
/// half of what filing cost on the sync path). It is a plain column filled right after by the
/// indexer ([`tasks::Tasks::index_pending`]); rows waiting for it are found through a partial
/// index, and searches match them on the fly meanwhile, so results stay exact. SQLite's FTS5
/// triggers are unchanged.
struct M0004DeferredSearch;

skillup_kit::migration_name!(M0004DeferredSearch, "m0004_deferred_search");

#[async_trait::async_trait]
impl MigrationTrait for M0004DeferredSearch {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
            return Ok(());
        }
        let fill = format!("UPDATE ai_tasks SET search = {PG_VECTOR}");
        for statement in [
            "ALTER TABLE ai_tasks DROP COLUMN IF EXISTS search",
            "ALTER TABLE ai_tasks ADD COLUMN search tsvector",
            fill.as_str(),
            "CREATE INDEX IF NOT EXISTS ai_tasks_search ON ai_tasks USING GIN (search)",
            "CREATE INDEX IF NOT EXISTS ai_tasks_unindexed ON ai_tasks (user_id, id) \
             WHERE search IS NULL",
        ] {
            m.get_connection().execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
            return Ok(());
        }
        for statement in
            ["DROP INDEX IF EXISTS ai_tasks_unindexed", "ALTER TABLE ai_tasks DROP COLUMN search"]
        {
            m.get_connection().execute_unprepared(statement).await?;
        }
        for statement in PG_SEARCH {
            m.get_connection().execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
