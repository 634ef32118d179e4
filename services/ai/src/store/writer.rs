//! Batched inserts of task rows.

use sea_orm::DbErr;

use super::task;

/// Task rows written together: what arrives while a batch is being written goes into the next
/// one, so under load many submissions share one statement and one commit, and alone a row is
/// written at once (no timer, no added wait). A few writers run side by side. A batch that
/// breaks a unique key (a retried submission) is written row by row, so each caller gets its
/// own outcome.
pub struct TaskWriter {
    tx: tokio::sync::mpsc::Sender<Pending>,
    batches: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

type Pending = (task::Model, Flush, tokio::sync::oneshot::Sender<Result<(), DbErr>>);

/// What a row's commit waits for on PostgreSQL (SQLite's commits are all alike here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// The WAL on disk: a queued task, whose 202 promises it exists.
    Wait,
    /// Only the commit, not its WAL flush (`synchronous_commit = off` for the statement's own
    /// transaction, PostgreSQL's documented per-transaction trade, as quota holds do): a
    /// generation answered already, filed in its owner's library. It is visible to every read
    /// once the insert returns and survives any crash of SkillUp; only a crash of PostgreSQL
    /// itself before the WAL writer's next flush (200 ms by default) could lose it — sooner
    /// where the hold's settle, a flushed commit right after the filing, runs on the same
    /// server (`skillup up`): its flush carries the filing along. It saves the flush's wait on
    /// the answer's path (≈ 0.25 ms at 100 generations/s here, more under load).
    Behind,
}

/// Rows per statement at most (PostgreSQL's 65,535 bind parameters allow far more; this keeps
/// one statement short).
const MAX_BATCH: usize = 64;

impl TaskWriter {
    pub fn start(db: sea_orm::DatabaseConnection, writers: usize) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel::<Pending>(4 * MAX_BATCH);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        let batches = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        for _ in 0..writers.max(1) {
            let (db, rx, count) = (db.clone(), rx.clone(), batches.clone());
            tokio::spawn(async move {
                loop {
                    let mut batch: Vec<Pending> = Vec::new();
                    {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else { return };
                        batch.push(first);
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(p) => batch.push(p),
                                Err(_) => break,
                            }
                        }
                    }
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    write(&db, batch).await;
                }
            });
        }
        Self { tx, batches }
    }

    /// Batches written so far (a batch is one statement unless it broke a unique key).
    pub fn batches(&self) -> u64 {
        self.batches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Inserts `row`; returns when it is committed (or why not), its WAL flushed or not as
    /// `flush` says.
    pub async fn insert(&self, row: task::Model, flush: Flush) -> Result<(), DbErr> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let stopped = || DbErr::Custom("the task writer stopped".into());
        self.tx.send((row, flush, done)).await.map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }
}

/// A write transaction: on SQLite `BEGIN IMMEDIATE`, which takes the write lock at once (waiting
/// for it as `busy_timeout` says) instead of upgrading a read part-way, which SQLite may refuse
/// at once with SQLITE_BUSY when another connection writes; PostgreSQL ignores the mode.
pub(crate) async fn begin_write(
    db: &sea_orm::DatabaseConnection,
) -> Result<sea_orm::DatabaseTransaction, DbErr> {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// PostgreSQL's insert of `rows`, its commit waiting for the WAL flush or not as `flush`
/// says: [`Flush::Behind`] sets `synchronous_commit = off` for the statement's own implicit
/// transaction from its `RETURNING` list, so it costs no round trip more (a `SET LOCAL` would
/// need an explicit transaction: three more).
pub fn insert_statement(rows: Vec<task::ActiveModel>, flush: Flush) -> sea_orm::Statement {
    use sea_orm::{
        EntityTrait, QueryTrait,
        sea_query::{Expr, Query},
    };
    let mut insert = task::Entity::insert_many(rows).into_query();
    if flush == Flush::Behind {
        insert.returning(
            Query::returning().expr(Expr::cust("set_config('synchronous_commit', 'off', true)")),
        );
    }
    sea_orm::DatabaseBackend::Postgres.build(&insert)
}

/// A batch: one statement, committed on its own (PostgreSQL: the statement alone, one round
/// trip — what the sync path awaits before answering — flushed if any of its rows asks for it;
/// SQLite: inside `BEGIN IMMEDIATE`, and a row at a time in a transaction of its own, ended
/// either way, because a statement that failed inside the full-text index's trigger otherwise
/// leaves its connection reading an old snapshot, and the pool's next write on it fails with
/// SQLITE_BUSY_SNAPSHOT).
async fn write(db: &sea_orm::DatabaseConnection, mut batch: Vec<Pending>) {
    use sea_orm::{ConnectionTrait, EntityTrait};
    let postgres = db.get_database_backend() == sea_orm::DatabaseBackend::Postgres;
    let insert = |rows: Vec<task::ActiveModel>, flush: Flush| async move {
        if postgres {
            return db.execute_raw(insert_statement(rows, flush)).await.map(drop);
        }
        let tx = begin_write(db).await?;
        task::Entity::insert_many(rows).exec_without_returning(&tx).await?;
        tx.commit().await
    };
    if batch.len() == 1 {
        let (row, flush, done) = batch.pop().expect("one row");
        let _ = done.send(insert(vec![row.into()], flush).await);
        return;
    }
    let flush =
        if batch.iter().any(|(_, f, _)| *f == Flush::Wait) { Flush::Wait } else { Flush::Behind };
    let rows: Vec<task::ActiveModel> = batch.iter().map(|(r, _, _)| r.clone().into()).collect();
    match insert(rows, flush).await {
        Ok(_) => {
            for (_, _, done) in batch {
                let _ = done.send(Ok(()));
            }
        }
        Err(e) if skillup_kit::db::is_unique_violation(&e) => {
            for (row, flush, done) in batch {
                let _ = done.send(insert(vec![row.into()], flush).await);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for (_, _, done) in batch {
                let _ = done.send(Err(DbErr::Custom(msg.clone())));
            }
        }
    }
}
