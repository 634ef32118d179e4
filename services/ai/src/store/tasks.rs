//! Every statement on `ai_tasks`, and the cache of finished tasks: the rules ask for what they
//! need by name (claim, complete, requeue, …); none of them builds a query.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, DatabaseBackend, DatabaseConnection, DbErr, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, SimpleExpr},
};
use skillup_kit::cache::SharedCache;
use uuid::Uuid;

use super::{Flush, TaskWriter, task};
use crate::domain::{DocumentEdit, LibraryQuery, Task, TaskStatus as Status};

/// Finished tasks kept for fast polling: the owner's id (16 bytes), then the task as JSON.
/// `ai:task3:{user}:{id}`: under the user, so their entries go with them.
const TASK_KEY: &str = "ai:task3:";

/// What a run produced, to store on its task.
pub struct Produced {
    pub text: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub provider: String,
    pub model: String,
    pub finish_reason: String,
}

#[derive(Clone)]
pub struct Tasks {
    db: DatabaseConnection,
    cache: SharedCache,
    writer: Arc<TaskWriter>,
    /// Wakes the search indexer (PostgreSQL) when a document was filed or changed.
    indexer: Arc<tokio::sync::Notify>,
}

/// Documents the indexer fills at a time.
const INDEX_BATCH: u64 = 200;

#[derive(FromQueryResult)]
struct StatusCount {
    status: String,
    n: i64,
}

impl Tasks {
    /// The table on `db` (inserts batched by `writers` writers), finished tasks cached in
    /// `cache`.
    pub fn new(db: DatabaseConnection, cache: SharedCache, writers: usize) -> Self {
        let writer = Arc::new(TaskWriter::start(db.clone(), writers));
        let indexer = Arc::new(tokio::sync::Notify::new());
        let tasks = Self { db, cache, writer, indexer };
        if tasks.db.get_database_backend() == DatabaseBackend::Postgres {
            let db = tasks.db.clone();
            let index = move || {
                let db = db.clone();
                async move { index_pending(&db).await }
            };
            tokio::spawn(index_while_used(index, Arc::downgrade(&tasks.indexer), INDEX_LINGER));
        }
        tasks
    }

    /// Fills the search vector of up to [`INDEX_BATCH`] documents that have none (several
    /// processes at once take different rows); how many. PostgreSQL only.
    pub async fn index_pending(&self) -> Result<u64, DbErr> {
        index_pending(&self.db).await
    }

    fn changed(&self) {
        self.indexer.notify_one();
    }

    /// Inserts a new task; returns when it is committed.
    pub async fn insert(&self, row: task::Model) -> Result<(), DbErr> {
        self.writer.insert(row, Flush::Wait).await
    }

    /// Files a generation its owner was answered already (inline or streamed); returns when it
    /// is committed (its WAL flush left behind, see [`Flush::Behind`]), its search vector left
    /// to the indexer.
    pub async fn file(&self, row: task::Model) -> Result<(), DbErr> {
        self.writer.insert(row, Flush::Behind).await?;
        self.changed();
        Ok(())
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<task::Model>, DbErr> {
        task::Entity::find_by_id(id).one(&self.db).await
    }

    /// The task a submission's idempotency record (`{user}:{key}`) made.
    pub async fn by_idempotency(&self, key: &str) -> Result<Option<task::Model>, DbErr> {
        task::Entity::find().filter(task::Column::Idempotency.eq(key)).one(&self.db).await
    }

    /// Up to `limit` of the user's documents older than `before` that `filter` asks for,
    /// newest first (ids are time-ordered). The words are matched by the full-text index —
    /// PostgreSQL's `tsvector` (the query stemmed both as Russian and as English), SQLite's
    /// FTS5 (every word, as a prefix) — and always bound, never written into the statement.
    pub async fn page(
        &self,
        user: Uuid,
        before: Option<Uuid>,
        filter: &LibraryQuery,
        limit: u64,
    ) -> Result<Vec<task::Model>, DbErr> {
        let mut q = task::Entity::find().filter(task::Column::UserId.eq(user));
        if let Some(before) = before {
            q = q.filter(task::Column::Id.lt(before));
        }
        if let Some(status) = filter.status {
            q = q.filter(task::Column::Status.eq(status));
        }
        if !filter.function.is_empty() {
            q = q.filter(task::Column::Function.eq(filter.function.as_str()));
        }
        if filter.starred {
            q = q.filter(task::Column::Starred.eq(true));
        }
        if let Some(words) = search_condition(self.db.get_database_backend(), &filter.query) {
            q = q.filter(words);
        }
        q.order_by_desc(task::Column::Id).limit(limit).all(&self.db).await
    }

    /// Applies its owner's edit; the document as it is now, `None` if it is not theirs.
    pub async fn edit(
        &self,
        user: Uuid,
        id: Uuid,
        edit: &DocumentEdit,
    ) -> Result<Option<task::Model>, DbErr> {
        let mut q = task::Entity::update_many()
            .col_expr(task::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(task::Column::Id.eq(id))
            .filter(task::Column::UserId.eq(user));
        if let Some(title) = &edit.title {
            q = unindexed(q.col_expr(task::Column::Title, Expr::value(title.as_str())), &self.db);
        }
        if let Some(starred) = edit.starred {
            q = q.col_expr(task::Column::Starred, Expr::value(starred));
        }
        if q.exec(&self.db).await?.rows_affected == 0 {
            return Ok(None);
        }
        self.changed();
        self.forget(user, id).await;
        self.get(id).await
    }

    /// Deletes the user's document; whether there was one.
    pub async fn delete(&self, user: Uuid, id: Uuid) -> Result<bool, DbErr> {
        let n = task::Entity::delete_many()
            .filter(task::Column::Id.eq(id))
            .filter(task::Column::UserId.eq(user))
            .exec(&self.db)
            .await?
            .rows_affected;
        self.forget(user, id).await;
        Ok(n == 1)
    }

    /// Everything of a deleted user: every document (whatever its state) and every cached
    /// entry; how many documents there were.
    pub async fn forget_user(&self, user: Uuid) -> Result<u64, DbErr> {
        let n = task::Entity::delete_many()
            .filter(task::Column::UserId.eq(user))
            .exec(&self.db)
            .await?
            .rows_affected;
        self.cache
            .delete_prefix(&format!("{TASK_KEY}{user}:"))
            .await
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        Ok(n)
    }

    /// Fails a task whose job could not be queued.
    pub async fn fail_unqueued(&self, id: Uuid, error: &str) -> Result<(), DbErr> {
        task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value(Status::Failed))
            .col_expr(task::Column::Error, Expr::value(error))
            .col_expr(task::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(task::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// Cancels the user's task if it is queued or running; whether it did.
    pub async fn cancel(&self, user: Uuid, id: Uuid) -> Result<bool, DbErr> {
        let n = task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value(Status::Cancelled))
            .col_expr(task::Column::Claim, Expr::value(Option::<String>::None))
            .col_expr(task::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(task::Column::Id.eq(id))
            .filter(task::Column::UserId.eq(user))
            .filter(task::Column::Status.is_in([Status::Queued, Status::Running]))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(n == 1)
    }

    /// Takes the task for one run under `claim` until `lease_until`: when it is queued, or
    /// running under a lease that lapsed (its worker died), or — `redelivered` — running for a
    /// consumer the broker gave up on. Whether this run has it.
    pub async fn claim(
        &self,
        id: Uuid,
        claim: &str,
        lease_until: DateTime<Utc>,
        attempt: u32,
        redelivered: bool,
    ) -> Result<bool, DbErr> {
        let now = Utc::now();
        let mut stale = Condition::any().add(task::Column::LeaseUntil.lt(now));
        if redelivered {
            stale = stale.add(task::Column::Status.eq(Status::Running));
        }
        let claimable = Condition::any()
            .add(task::Column::Status.eq(Status::Queued))
            .add(Condition::all().add(task::Column::Status.eq(Status::Running)).add(stale));
        let n = task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value(Status::Running))
            .col_expr(task::Column::Claim, Expr::value(claim))
            .col_expr(task::Column::LeaseUntil, Expr::value(lease_until))
            .col_expr(task::Column::Attempts, Expr::value(attempt as i32))
            .col_expr(task::Column::UpdatedAt, Expr::value(now))
            .filter(task::Column::Id.eq(id))
            .filter(claimable)
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(n == 1)
    }

    /// Stores a run's result — only while the run still holds the task (not cancelled or
    /// taken over meanwhile). Whether it did.
    pub async fn complete(&self, id: Uuid, claim: &str, p: Produced) -> Result<bool, DbErr> {
        let q = task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value(Status::Completed))
            .col_expr(task::Column::Text, Expr::value(p.text));
        let n = unindexed(q, &self.db)
            .col_expr(task::Column::Error, Expr::value(Option::<String>::None))
            .col_expr(task::Column::InputTokens, Expr::value(p.input_tokens as i32))
            .col_expr(task::Column::OutputTokens, Expr::value(p.output_tokens as i32))
            .col_expr(task::Column::Provider, Expr::value(p.provider))
            .col_expr(
                task::Column::Model,
                Expr::value(p.model.chars().take(128).collect::<String>()),
            )
            .col_expr(
                task::Column::FinishReason,
                Expr::value(p.finish_reason.chars().take(32).collect::<String>()),
            )
            .col_expr(task::Column::Claim, Expr::value(Option::<String>::None))
            .col_expr(task::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(task::Column::Id.eq(id))
            .filter(task::Column::Claim.eq(claim))
            .filter(task::Column::Status.eq(Status::Running))
            .exec(&self.db)
            .await?
            .rows_affected;
        if n == 1 {
            self.changed();
        }
        Ok(n == 1)
    }

    /// Gives the task up from the run holding `claim`: back to the queue, or failed with a
    /// reason.
    pub async fn unclaim(
        &self,
        id: Uuid,
        claim: &str,
        status: Status,
        error: Option<String>,
    ) -> Result<(), DbErr> {
        task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value(status))
            .col_expr(task::Column::Error, Expr::value(error))
            .col_expr(task::Column::Claim, Expr::value(Option::<String>::None))
            .col_expr(task::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(task::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(task::Column::Id.eq(id))
            .filter(task::Column::Claim.eq(claim))
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// A failed task queued again from attempt 0 under a new hold; whether it was still
    /// failed.
    pub async fn requeue(&self, id: Uuid, hold: Uuid) -> Result<bool, DbErr> {
        let n = task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value(Status::Queued))
            .col_expr(task::Column::Error, Expr::value(Option::<String>::None))
            .col_expr(task::Column::Attempts, Expr::value(0))
            .col_expr(task::Column::HoldId, Expr::value(hold))
            .col_expr(task::Column::Claim, Expr::value(Option::<String>::None))
            .col_expr(task::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(task::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(task::Column::Id.eq(id))
            .filter(task::Column::Status.eq(Status::Failed))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(n == 1)
    }

    /// Undoes [`Self::requeue`] when the job could not be queued: failed again, with `error`.
    pub async fn unrequeue(&self, id: Uuid, error: Option<String>) -> Result<(), DbErr> {
        task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value(Status::Failed))
            .col_expr(task::Column::Error, Expr::value(error))
            .col_expr(task::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(task::Column::Id.eq(id))
            .filter(task::Column::Status.eq(Status::Queued))
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// When the oldest task still queued was submitted.
    pub async fn oldest_queued(&self) -> Result<Option<DateTime<Utc>>, DbErr> {
        Ok(task::Entity::find()
            .filter(task::Column::Status.eq(Status::Queued))
            .order_by_asc(task::Column::CreatedAt)
            .one(&self.db)
            .await?
            .map(|t| t.created_at))
    }

    /// Tasks by stored status name.
    pub async fn counts(&self) -> Result<BTreeMap<String, u64>, DbErr> {
        let counts = task::Entity::find()
            .select_only()
            .column(task::Column::Status)
            .column_as(task::Column::Id.count(), "n")
            .group_by(task::Column::Status)
            .into_model::<StatusCount>()
            .all(&self.db)
            .await?;
        Ok(counts.into_iter().map(|c| (c.status, c.n.max(0) as u64)).collect())
    }

    /// The user's task from the cache of finished ones, if it is there.
    pub async fn cached(&self, user: Uuid, id: Uuid) -> Option<Task> {
        let b = self.cache.get(&format!("{TASK_KEY}{user}:{id}")).await.ok()??;
        if b.len() > 16 && b[..16] == *user.as_bytes() {
            serde_json::from_slice(&b[16..]).ok()
        } else {
            None
        }
    }

    /// Drops a task from the cache of finished ones (best effort: entries lapse anyway).
    pub async fn forget(&self, user: Uuid, id: Uuid) {
        let _ = self.cache.delete(&format!("{TASK_KEY}{user}:{id}")).await;
    }

    /// Keeps a task in the cache for `ttl` (best effort: the table is the truth).
    pub async fn remember(&self, t: &task::Model, ttl: Duration) {
        let mut v = t.user_id.as_bytes().to_vec();
        v.extend(serde_json::to_vec(&Task::from(t)).unwrap_or_default());
        let key = format!("{TASK_KEY}{}:{}", t.user_id, t.id);
        let _ = self.cache.set(&key, v.into(), Some(ttl)).await;
    }
}

/// The condition that finds `query`'s words, on `backend`; `None` for an empty query (every
/// document), a condition nothing meets for one without a word (`"!!!"`).
fn search_condition(backend: DatabaseBackend, query: &str) -> Option<SimpleExpr> {
    let query = query.trim();
    if query.is_empty() {
        return None;
    }
    Some(match backend {
        DatabaseBackend::Sqlite => match fts5_words(query) {
            Some(words) => Expr::cust_with_values(
                "ai_tasks.id IN (SELECT id FROM ai_tasks_fts WHERE ai_tasks_fts MATCH ?)",
                [words],
            ),
            // No word in it: nothing matches, as PostgreSQL's empty tsquery.
            None => Expr::cust("1 = 0"),
        },
        // Indexed documents by their vector (the GIN index); the few the indexer has not
        // reached yet by their words stemmed now, so a document is found the moment it is filed.
        _ => Expr::cust_with_values(
            format!(
                "(ai_tasks.search @@ (websearch_to_tsquery('russian', $1) \
                   || websearch_to_tsquery('english', $1)) \
                 OR (ai_tasks.search IS NULL AND {} @@ (websearch_to_tsquery('russian', $1) \
                   || websearch_to_tsquery('english', $1))))",
                super::PG_VECTOR
            ),
            [query],
        ),
    })
}

/// `q`, also clearing the search vector (PostgreSQL): the words changed, the indexer fills it
/// again.
fn unindexed(
    q: sea_orm::UpdateMany<task::Entity>,
    db: &DatabaseConnection,
) -> sea_orm::UpdateMany<task::Entity> {
    match db.get_database_backend() {
        DatabaseBackend::Postgres => {
            q.col_expr(sea_orm::sea_query::Alias::new("search"), Expr::cust("NULL"))
        }
        _ => q,
    }
}

async fn index_pending(db: &DatabaseConnection) -> Result<u64, DbErr> {
    use sea_orm::ConnectionTrait;
    let sql = format!(
        "UPDATE ai_tasks SET search = {} WHERE id IN (SELECT id FROM ai_tasks \
         WHERE search IS NULL ORDER BY id LIMIT {INDEX_BATCH} FOR UPDATE SKIP LOCKED)",
        super::PG_VECTOR
    );
    Ok(db.execute_unprepared(&sql).await?.rows_affected())
}

/// How long the indexer lets filings gather after one woke it: under load one statement then
/// fills the vectors of many documents (at 500 filings/s, one UPDATE per document cost
/// PostgreSQL more than every other statement of a generation together); searches match the
/// documents waiting meanwhile on the fly, so no result is missed.
const INDEX_LINGER: Duration = Duration::from_millis(100);

/// The search indexer of a [`Tasks`]: fills vectors when woken (a document filed or changed)
/// and every second (rows another process left), until the `Tasks` is gone.
/// `index` is one [`index_pending`] pass; `linger`, [`INDEX_LINGER`].
async fn index_while_used<F, Fut>(
    mut index: F,
    wake: std::sync::Weak<tokio::sync::Notify>,
    linger: Duration,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, DbErr>>,
{
    loop {
        match index().await {
            Ok(n) if n == INDEX_BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "documents not indexed for search yet"),
        }
        let Some(wake) = wake.upgrade() else { return };
        if tokio::time::timeout(Duration::from_secs(1), wake.notified()).await.is_ok() {
            drop(wake);
            tokio::time::sleep(linger).await;
        }
    }
}

/// An FTS5 query for the words of `query`: each word quoted (so no character of it is query
/// syntax) and matched as a prefix, all of them required. `None` when there is no word.
pub(crate) fn fts5_words(query: &str) -> Option<String> {
    let words: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(32)
        .map(|w| format!("\"{w}\"*"))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicU32, Ordering},
        },
        time::Duration,
    };

    use super::{fts5_words, index_while_used};

    #[tokio::test]
    async fn filings_spread_over_a_burst_are_indexed_by_few_passes() {
        let linger = Duration::from_millis(500);
        let passes = Arc::new(AtomicU32::new(0));
        let wake = Arc::new(tokio::sync::Notify::new());
        let counted = passes.clone();
        let index = move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(1) }
        };
        let indexer = tokio::spawn(index_while_used(index, Arc::downgrade(&wake), linger));
        // Twenty filings 10 ms apart: without the linger, a pass for nearly each.
        let started = std::time::Instant::now();
        for _ in 0..20 {
            wake.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let during = passes.load(Ordering::SeqCst);
        // The pass at start, then at most one pass per linger the burst lasted (however much
        // longer than 200 ms a busy machine made it).
        let bound = 2 + (started.elapsed().as_millis() / linger.as_millis()) as u32;
        assert!(during <= bound, "{during} passes during a burst of 20 filings (bound {bound})");
        // The filings all get their pass once the linger is over.
        let before = passes.load(Ordering::SeqCst);
        tokio::time::sleep(linger * 3).await;
        assert!(passes.load(Ordering::SeqCst) > before, "the burst's filings were indexed");
        drop(wake);
        tokio::time::timeout(Duration::from_secs(10), indexer)
            .await
            .expect("the indexer ends with its Tasks")
            .unwrap();
    }

    #[test]
    fn fts5_queries_are_quoted_words() {
        assert_eq!(fts5_words("plan урока").as_deref(), Some(r#""plan"* "урока"*"#));
        assert_eq!(
            fts5_words(r#"a" OR text:"x* NEAR(b)"#).as_deref(),
            Some(r#""a"* "OR"* "text"* "x"* "NEAR"* "b"*"#),
            "no character of the query is FTS5 syntax"
        );
        assert_eq!(fts5_words(" -- ; "), None);
    }
}
