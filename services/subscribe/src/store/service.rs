//! The plans' service levels in the tables: what the holds of a plan's generations say about a
//! month (read here, written by the quota statements), and the closed months' records.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use uuid::Uuid;

use super::entities::{hold, service_record};

/// One plan's generations in a span of time, as their holds tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measured {
    /// Succeeded, or failed by the platform (a lapsed hold counts as failed).
    pub generations: i64,
    pub failed: i64,
    /// Queued generations that started.
    pub queued: i64,
    /// Nearest-rank 95th percentile of their 202 → start, ms (0: none).
    pub queue_p95_ms: i64,
}

#[derive(Debug, FromQueryResult)]
struct Counts {
    generations: Option<i64>,
    failed: Option<i64>,
    queued: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct Wait {
    queue_wait_ms: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct User {
    user_id: Uuid,
}

#[derive(Clone)]
pub struct ServiceStore {
    db: DatabaseConnection,
}

/// The holds of `plan` taken in `[from, to)` whose generation counts: it succeeded, the
/// platform failed it, or its hold lapsed unsettled (cancellations and releases nobody
/// explained do not count).
fn counted(plan: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(hold::Column::PlanId.eq(plan))
        .add(hold::Column::CreatedAt.gte(from))
        .add(hold::Column::CreatedAt.lt(to))
        .add(
            Condition::any()
                .add(hold::Column::Status.is_in(["committed", "expired"]))
                .add(hold::Column::Outcome.eq("failed")),
        )
}

impl ServiceStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// What `plan`'s holds of `[from, to)` say.
    pub async fn measure(
        &self,
        plan: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Measured, DbErr> {
        let failed = "CASE WHEN outcome = 'failed' OR status = 'expired' THEN 1 ELSE 0 END";
        let queued = "CASE WHEN queue_wait_ms IS NOT NULL THEN 1 ELSE 0 END";
        let counts = hold::Entity::find()
            .select_only()
            .expr_as(Expr::col(hold::Column::Id).count(), "generations")
            .expr_as(Expr::cust(format!("SUM({failed})")), "failed")
            .expr_as(Expr::cust(format!("SUM({queued})")), "queued")
            .filter(counted(plan, from, to))
            .into_model::<Counts>()
            .one(&self.db)
            .await?;
        let (generations, failed, queued) = counts
            .map(|c| (c.generations.unwrap_or(0), c.failed.unwrap_or(0), c.queued.unwrap_or(0)))
            .unwrap_or_default();
        let mut m = Measured { generations, failed, queued, queue_p95_ms: 0 };
        if queued > 0 {
            // Nearest rank: the ⌈0.95·n⌉-th smallest wait.
            let rank = (queued * 95 + 99) / 100;
            let wait = hold::Entity::find()
                .select_only()
                .column(hold::Column::QueueWaitMs)
                .filter(counted(plan, from, to))
                .filter(hold::Column::QueueWaitMs.is_not_null())
                .order_by_asc(hold::Column::QueueWaitMs)
                .offset((rank - 1) as u64)
                .limit(1)
                .into_model::<Wait>()
                .one(&self.db)
                .await?;
            m.queue_p95_ms = wait.and_then(|w| w.queue_wait_ms).unwrap_or(0);
        }
        Ok(m)
    }

    /// The users whose generations on `plan` counted in `[from, to)`.
    pub async fn users(
        &self,
        plan: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, DbErr> {
        let rows = hold::Entity::find()
            .select_only()
            .column(hold::Column::UserId)
            .distinct()
            .filter(counted(plan, from, to))
            .order_by_asc(hold::Column::UserId)
            .into_model::<User>()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|u| u.user_id).collect())
    }

    /// The closed records of `months` (`YYYY-MM`).
    pub async fn records(&self, months: &[String]) -> Result<Vec<service_record::Model>, DbErr> {
        service_record::Entity::find()
            .filter(service_record::Column::Month.is_in(months.iter().cloned()))
            .all(&self.db)
            .await
    }

    /// One plan's closed record of `month`.
    pub async fn record(
        &self,
        plan: &str,
        month: &str,
    ) -> Result<Option<service_record::Model>, DbErr> {
        service_record::Entity::find_by_id((plan.to_owned(), month.to_owned())).one(&self.db).await
    }

    /// Closes a month's record unless another replica did (the first one stands).
    pub async fn close(&self, r: service_record::Model) -> Result<(), DbErr> {
        service_record::Entity::insert(service_record::ActiveModel::from(r))
            .on_conflict(
                OnConflict::columns([
                    service_record::Column::PlanId,
                    service_record::Column::Month,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map(drop)
    }

    /// Every credit of a record issued.
    pub async fn credited(&self, plan: &str, month: &str, credits: i32) -> Result<(), DbErr> {
        service_record::Entity::update_many()
            .col_expr(service_record::Column::Credits, Expr::value(credits))
            .col_expr(service_record::Column::CreditsDone, Expr::value(true))
            .filter(service_record::Column::PlanId.eq(plan))
            .filter(service_record::Column::Month.eq(month))
            .exec(&self.db)
            .await
            .map(drop)
    }
}
