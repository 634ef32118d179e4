//! Database connections (PostgreSQL or SQLite, one code path through sea-orm) and migrations.
//! Each service owns its tables and a migrator with its own history table, so services that
//! share one database under `skillup up` never see each other's migrations.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};
use sea_orm_migration::MigratorTrait;

use crate::{Readiness, Result};

/// Connects with sane pool settings. SQLite gets WAL, a busy timeout and foreign keys, so
/// concurrent writers wait instead of failing.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection> {
    let sqlite = url.starts_with("sqlite:");
    if sqlite
        && let Some(path) = sqlite_path(url)
        && let Some(dir) = std::path::Path::new(&path).parent()
        && !dir.as_os_str().is_empty()
    {
        // People's data: the directory and the database file are the owner's alone (SQLite
        // gives its -wal and -shm files the database file's mode).
        crate::files::private_dir(dir)?;
        crate::files::private_file(std::path::Path::new(&path))?;
    }
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(if sqlite { max_connections.min(4) } else { max_connections })
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let db = Database::connect(opts).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        db.execute_unprepared(
            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;",
        )
        .await?;
    }
    Ok(db)
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.to_owned())
}

/// Applies every pending migration of `M`. On PostgreSQL one process at a time does (replicas
/// starting together wait for the first, then find nothing pending): a transaction holds an
/// advisory lock named after the migrator's history table while the migrations run.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> Result<()> {
    use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
    if db.get_database_backend() != DbBackend::Postgres {
        M::up(db, None).await?;
        return Ok(());
    }
    let name = M::migration_table_name().to_string();
    if db.get_postgres_connection_pool().options().get_max_connections() < 2 {
        // The lock's transaction would hold the only connection the migrations need.
        tracing::warn!(migrations = %name, "a pool of one connection migrates without the lock");
        M::up(db, None).await?;
        return Ok(());
    }
    let lock = db.begin().await?;
    lock.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        [format!("skillup-migrate:{name}").into()],
    ))
    .await?;
    let res = M::up(db, None).await;
    lock.commit().await?;
    res?;
    Ok(())
}

#[doc(hidden)]
pub use async_trait as __async_trait;
#[doc(hidden)]
pub use sea_orm_migration as __migration;

/// A service's migrator: its own history table (so services sharing a database never mix
/// histories) and its migrations in order.
///
/// ```ignore
/// skillup_kit::migrator!(Migrator, "payment_migrations", [M0001Init, Outbox("m0002_outbox")]);
/// ```
#[macro_export]
macro_rules! migrator {
    ($name:ident, $table:literal, [$($migration:expr),* $(,)?]) => {
        pub struct $name;

        #[$crate::db::__async_trait::async_trait]
        impl $crate::db::__migration::MigratorTrait for $name {
            fn migrations() -> Vec<Box<dyn $crate::db::__migration::MigrationTrait>> {
                vec![$(Box::new($migration)),*]
            }

            fn migration_table_name() -> $crate::db::__migration::prelude::DynIden {
                $crate::db::__migration::prelude::IntoIden::into_iden($table)
            }
        }
    };
}

/// Names a migration: `skillup_kit::migration_name!(M0001Init, "m0001_init");`.
#[macro_export]
macro_rules! migration_name {
    ($ty:ident, $name:literal) => {
        impl $crate::db::__migration::MigrationName for $ty {
            fn name(&self) -> &str {
                $name
            }
        }
    };
}

/// Turns an integer enum column (protobuf numbers, as services stored them first) into one of
/// names: a new text column filled by `CASE` (`otherwise` for any number not in `names`), the
/// old one dropped, the new one renamed — the same steps on PostgreSQL and SQLite. Run it
/// inside one transaction (`SchemaManager::begin`): a pooled SQLite connection whose schema
/// was read before the new column existed would not find it to rename it.
pub async fn enum_numbers_to_names(
    m: &sea_orm_migration::SchemaManager<'_>,
    table: &str,
    column: &str,
    names: &[(i32, &str)],
    otherwise: &str,
) -> std::result::Result<(), sea_orm::DbErr> {
    use sea_orm_migration::{prelude::*, schema::string_len};
    let temp = format!("{column}_name");
    let valid = |s: &str| s.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    assert!(
        [table, column, otherwise].into_iter().chain(names.iter().map(|n| n.1)).all(valid),
        "names are lowercase identifiers"
    );
    m.alter_table(
        Table::alter()
            .table(Alias::new(table))
            .add_column(string_len(Alias::new(&temp), 32).default(otherwise))
            .to_owned(),
    )
    .await?;
    let cases: String = names.iter().map(|(n, name)| format!(" WHEN {n} THEN '{name}'")).collect();
    m.get_connection()
        .execute_unprepared(&format!(
            "UPDATE {table} SET {temp} = CASE {column}{cases} ELSE '{otherwise}' END"
        ))
        .await?;
    m.alter_table(
        Table::alter().table(Alias::new(table)).drop_column(Alias::new(column)).to_owned(),
    )
    .await?;
    m.alter_table(
        Table::alter()
            .table(Alias::new(table))
            .rename_column(Alias::new(&temp), Alias::new(column))
            .to_owned(),
    )
    .await
}

/// A readiness probe that runs `SELECT 1`.
pub fn probe(db: DatabaseConnection) -> Readiness {
    Readiness::new().with("database", move || {
        let db = db.clone();
        async move { db.ping().await.map_err(|e| e.to_string()) }
    })
}

/// Pool gauges sampled at each scrape: `db_pool_connections{state="in_use"|"idle"}` and
/// `db_pool_max_connections`, labelled with the database kind. Once per process: the collector
/// keeps the pool for as long as the process lives.
pub fn report_pool(db: &DatabaseConnection, kind: &'static str) {
    let db = db.clone();
    crate::ops::on_scrape(Box::new(move || {
        let (size, idle, max) = match db.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                let p = db.get_postgres_connection_pool();
                (p.size(), p.num_idle() as u32, p.options().get_max_connections())
            }
            sea_orm::DbBackend::Sqlite => {
                let p = db.get_sqlite_connection_pool();
                (p.size(), p.num_idle() as u32, p.options().get_max_connections())
            }
            _ => (0, 0, 0),
        };
        metrics::gauge!("db_pool_connections", "db" => kind, "state" => "in_use")
            .set(size.saturating_sub(idle) as f64);
        metrics::gauge!("db_pool_connections", "db" => kind, "state" => "idle").set(idle as f64);
        metrics::gauge!("db_pool_max_connections", "db" => kind).set(max as f64);
        Box::pin(async {})
    }));
}

/// SQLite's "database is locked": another transaction holds the write lock; try again.
pub fn is_busy(e: &sea_orm::DbErr) -> bool {
    e.to_string().contains("database is locked")
}

/// PostgreSQL broke a lock cycle by failing this transaction (`40P01`); trying again works.
pub fn is_deadlock(e: &sea_orm::DbErr) -> bool {
    e.to_string().contains("deadlock detected")
}

/// A unique index refused the row (a concurrent duplicate got there first).
pub fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
    matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

/// A stored time as a protobuf `Timestamp`.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("sqlite://./data/x.db?mode=rwc").as_deref(), Some("./data/x.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }

    #[tokio::test]
    async fn sqlite_file_is_created_with_its_directory() {
        let dir = std::env::temp_dir().join(format!("skillup-db-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/nested/x.db?mode=rwc", dir.display());
        let db = connect(&url, 2).await.expect("connects");
        db.ping().await.expect("pings");
        assert!(dir.join("nested/x.db").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
