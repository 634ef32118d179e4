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

type Pending = (task::Model, tokio::sync::oneshot::Sender<Result<(), DbErr>>);

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
                    let mut batch = Vec::new();
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

    /// Inserts `row`; returns when it is committed (or why not).
    pub async fn insert(&self, row: task::Model) -> Result<(), DbErr> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let stopped = || DbErr::Custom("the task writer stopped".into());
        self.tx.send((row, done)).await.map_err(|_| stopped())?;
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

/// A batch: one statement, committed on its own (PostgreSQL: the statement alone, one round
/// trip — what the sync path awaits before answering; SQLite: inside `BEGIN IMMEDIATE`, and a
/// row at a time in a transaction of its own, ended either way, because a statement that
/// failed inside the full-text index's trigger otherwise leaves its connection reading an old
/// snapshot, and the pool's next write on it fails with SQLITE_BUSY_SNAPSHOT).
async fn write(db: &sea_orm::DatabaseConnection, mut batch: Vec<Pending>) {
    use sea_orm::EntityTrait;
    let postgres = db.get_database_backend() == sea_orm::DatabaseBackend::Postgres;
    let one = |row: task::Model| async move {
        let insert = task::Entity::insert(task::ActiveModel::from(row));
        if postgres {
            return insert.exec_without_returning(db).await.map(drop);
        }
        let tx = begin_write(db).await?;
        insert.exec_without_returning(&tx).await?;
        tx.commit().await
    };
    if batch.len() == 1 {
        let (row, done) = batch.pop().expect("one row");
        let _ = done.send(one(row).await);
        return;
    }
    let rows: Vec<task::ActiveModel> = batch.iter().map(|(r, _)| r.clone().into()).collect();
    let many = async {
        let insert = task::Entity::insert_many(rows);
        if postgres {
            return insert.exec_without_returning(db).await.map(drop);
        }
        let tx = begin_write(db).await?;
        insert.exec_without_returning(&tx).await?;
        tx.commit().await
    };
    match many.await {
        Ok(_) => {
            for (_, done) in batch {
                let _ = done.send(Ok(()));
            }
        }
        Err(e) if skillup_kit::db::is_unique_violation(&e) => {
            for (row, done) in batch {
                let _ = done.send(one(row).await);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for (_, done) in batch {
                let _ = done.send(Err(DbErr::Custom(msg.clone())));
            }
        }
    }
}
