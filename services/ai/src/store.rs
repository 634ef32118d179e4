//! The ai service's table: queued generations (tasks) and their results.

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
        pub status: crate::domain::TaskStatus,
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

    impl Model {
        /// A task as submitted: queued, nothing run yet (the caller fills in the request).
        pub fn queued(id: Uuid, user_id: Uuid, hold_id: Uuid, now: DateTimeUtc) -> Self {
            Model {
                id,
                user_id,
                status: crate::domain::TaskStatus::Queued,
                topic: String::new(),
                function: String::new(),
                locale: String::new(),
                messages: "[]".into(),
                max_tokens: 0,
                hold_id,
                priority: 0,
                text: None,
                error: None,
                input_tokens: 0,
                output_tokens: 0,
                provider: String::new(),
                model: String::new(),
                finish_reason: String::new(),
                attempts: 0,
                idempotency: None,
                claim: None,
                lease_until: None,
                created_at: now,
                updated_at: now,
            }
        }
    }

    impl From<&Model> for crate::domain::Task {
        fn from(t: &Model) -> Self {
            let completed = t.status == crate::domain::TaskStatus::Completed;
            crate::domain::Task {
                id: t.id,
                status: t.status,
                topic: t.topic.clone(),
                function: t.function.clone(),
                locale: t.locale.clone(),
                text: t.text.clone(),
                error: t.error.clone(),
                usage: completed.then_some(crate::domain::Usage {
                    input: t.input_tokens.max(0) as u32,
                    output: t.output_tokens.max(0) as u32,
                }),
                attempts: t.attempts.max(0) as u32,
                created_at: t.created_at,
                updated_at: t.updated_at,
            }
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

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

async fn write(db: &sea_orm::DatabaseConnection, mut batch: Vec<Pending>) {
    use sea_orm::{ActiveModelTrait, EntityTrait};
    let one =
        |row: task::Model| async move { task::ActiveModel::from(row).insert(db).await.map(|_| ()) };
    if batch.len() == 1 {
        let (row, done) = batch.pop().expect("one row");
        let _ = done.send(one(row).await);
        return;
    }
    let rows: Vec<task::ActiveModel> = batch.iter().map(|(r, _)| r.clone().into()).collect();
    match task::Entity::insert_many(rows).exec_without_returning(db).await {
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
