//! The transactional outbox: an event is stored in the same database transaction as the change
//! it reports, and a relay publishes it after the commit — at once (the writer wakes it), and
//! every second for whatever a crash or a broker outage left behind — deleting it only once the
//! broker confirmed it. So a committed change always gets its event (at least once; consumers
//! deduplicate by the event id, which the outbox keeps), and a change that rolled back never
//! does.
//!
//! One relay publishes at a time per table (a PostgreSQL advisory lock; SQLite is one process),
//! oldest first, so the events of one user arrive in the order of their changes.

use skillup_proto::events::Event;
use std::{sync::Arc, time::Duration};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait, Value,
};
use sea_orm_migration::{prelude::*, schema::*};

use crate::{
    Shutdown,
    bus::{Message, SharedBus},
};

/// Events waiting for the broker, in a service's own table.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    bus: SharedBus,
    table: String,
    wake: tokio::sync::Notify,
}

/// How many events one pass publishes before it deletes them.
const BATCH: u64 = 100;

/// How often the relay looks for events nobody woke it for.
const TICK: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("table", &self.inner.table).finish()
    }
}

impl Outbox {
    /// The outbox in `table` (created by [`create_table`] in the service's migrations).
    pub fn new(db: DatabaseConnection, bus: SharedBus, table: &str) -> Self {
        Self {
            inner: Arc::new(Inner { db, bus, table: table.to_owned(), wake: Default::default() }),
        }
    }

    /// Stores event `payload` (see [`crate::events::publish_with_id`]) through `conn` — the
    /// transaction of the change it reports. Call [`Outbox::wake`] after the commit.
    pub async fn add<C: ConnectionTrait, E: Event>(
        &self,
        conn: &C,
        id: &str,
        user_id: &str,
        payload: &E,
    ) -> Result<(), DbErr> {
        let (kind, body) = (E::KIND, crate::events::envelope(id, user_id, payload));
        let backend = conn.get_database_backend();
        let sql = format!(
            "INSERT INTO {} (id, kind, body, created_at) VALUES ({}, {}, {}, {})",
            self.inner.table,
            param(backend, 1),
            param(backend, 2),
            param(backend, 3),
            param(backend, 4)
        );
        let values: [Value; 4] = [id.into(), kind.into(), body.into(), chrono::Utc::now().into()];
        conn.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
        Ok(())
    }

    /// Publishes what was just committed now rather than at the next tick.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// One pass: publishes up to [`BATCH`] stored events, oldest first, and deletes those the
    /// broker confirmed. Returns how many; 0 also when another replica's relay holds the table.
    pub async fn flush(&self) -> crate::Result<usize> {
        let db = &self.inner.db;
        if db.get_database_backend() != DbBackend::Postgres {
            // One process owns a SQLite file, and its relay is one task: no lock, and no
            // transaction held across the broker (a reader turned writer would be refused).
            return self.pass(db).await;
        }
        let txn = db.begin().await?;
        let locked = txn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_try_advisory_xact_lock($1) AS locked",
                [lock_key(&self.inner.table).into()],
            ))
            .await?
            .map(|r| r.try_get::<bool>("", "locked"))
            .transpose()?
            .unwrap_or(false);
        if !locked {
            txn.rollback().await?;
            return Ok(0);
        }
        let res = self.pass(&txn).await;
        txn.commit().await?;
        res
    }

    async fn pass<C: ConnectionTrait>(&self, conn: &C) -> crate::Result<usize> {
        let backend = conn.get_database_backend();
        let table = &self.inner.table;
        let rows = conn
            .query_all_raw(Statement::from_string(
                backend,
                format!("SELECT id, kind, body FROM {table} ORDER BY id LIMIT {BATCH}"),
            ))
            .await?;
        let mut sent: Vec<String> = Vec::with_capacity(rows.len());
        let mut failed = None;
        for row in rows {
            let id: String = row.try_get("", "id")?;
            let kind: String = row.try_get("", "kind")?;
            let body: Vec<u8> = row.try_get("", "body")?;
            let mut msg = Message::new(body);
            msg.id = id.clone();
            match self.inner.bus.publish(&kind, msg).await {
                Ok(()) => sent.push(id),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if !sent.is_empty() {
            let marks: Vec<String> = (1..=sent.len()).map(|n| param(backend, n)).collect();
            let sql = format!("DELETE FROM {table} WHERE id IN ({})", marks.join(", "));
            let values: Vec<Value> = sent.iter().map(|id| id.as_str().into()).collect();
            conn.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(sent.len()),
        }
    }

    /// The relay: a pass whenever a writer wakes it and every second, until `shutdown`, then a
    /// last pass. A pass that fails (the broker or the database away) is logged and tried
    /// again on the next tick; nothing is lost meanwhile.
    pub fn spawn_relay(&self, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let stopping = tokio::select! {
                    _ = this.inner.wake.notified() => false,
                    _ = tokio::time::sleep(TICK) => false,
                    _ = shutdown.wait() => true,
                };
                loop {
                    match this.flush().await {
                        Ok(n) if n as u64 == BATCH => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(table = %this.inner.table, error = %e, "outbox relay: events wait for the next pass");
                            break;
                        }
                    }
                }
                if stopping {
                    return;
                }
            }
        })
    }

    /// Events not yet published (tests and operators).
    pub async fn pending(&self) -> crate::Result<u64> {
        let db = &self.inner.db;
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT COUNT(*) AS n FROM {}", self.inner.table),
            ))
            .await?;
        Ok(row.map(|r| r.try_get::<i64>("", "n")).transpose()?.unwrap_or(0) as u64)
    }
}

/// The `n`-th bind parameter in `backend`'s syntax.
fn param(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

/// The advisory lock of a table's relay: a stable 64-bit FNV-1a hash of its name.
fn lock_key(table: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in table.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// A service's migration that creates its outbox table: `Migration::new("m0002_outbox", table)`
/// in its migrator's list.
pub struct Migration {
    name: &'static str,
    table: &'static str,
}

impl Migration {
    pub fn new(name: &'static str, table: &'static str) -> Self {
        Self { name, table }
    }
}

impl MigrationName for Migration {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        create_table(m, self.table).await
    }
}

/// Creates an outbox table (see [`Migration`]).
pub async fn create_table(m: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(Alias::new(table))
            .if_not_exists()
            .col(string_len("id", 128).primary_key())
            .col(string_len("kind", 128))
            .col(blob("body"))
            .col(timestamp_with_time_zone("created_at"))
            .to_owned(),
    )
    .await
}
