//! Quota in the tables: holds taken only through a conditional update of the period's usage
//! row (`used + held + asked <= quota`) and settled exactly once — on PostgreSQL each in one
//! statement, elsewhere in one transaction. Every statement on `subscribe_usage` and
//! `subscribe_holds` is here, but the service-level measurements read from holds
//! (`service.rs`).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, FromQueryResult, QueryFilter, QuerySelect, Set, Statement, TransactionTrait,
    sea_query::{Expr, ExprTrait, Func},
};
use uuid::Uuid;

use super::entities::{hold, usage};
use crate::domain::SubscriptionStatus as Status;

/// What a reserve attempt took.
#[derive(Debug)]
pub enum Taken {
    /// The hold, and the usage row it left.
    Yes(Box<hold::Model>, usage::Model),
    /// No room in the quota, or no usage row for the period yet.
    NoRoom,
    /// The subscription row the attempt assumed is not the table's any more: nothing taken.
    Stale,
}

/// Whether a settle moved the hold, and the usage row it left.
#[derive(Debug, PartialEq)]
pub enum Settled {
    No,
    Yes(Option<usage::Model>),
}

/// How a settled hold's generation ended, for the plans' service levels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ending {
    /// `completed`, `failed` (by the platform), `cancelled` (by its owner); `None`: not said.
    pub outcome: Option<&'static str>,
    /// Queued work: its 202 → start, ms.
    pub queue_wait_ms: Option<i64>,
}

/// The subscription a reserve assumes: checked against the table by PostgreSQL's statement.
#[derive(Debug, Clone)]
pub struct Assumed {
    /// The plan in force (kept on the hold, for its service level).
    pub plan_id: String,
    /// The active paid plan (`None`: the free plan, no active subscription).
    pub paid_plan: Option<String>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub token_quota: i64,
    pub generation_quota: i32,
}

/// What a reserve asks for.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub function: &'a str,
    pub tokens: i64,
    /// `{user}:{key}`.
    pub idem: &'a str,
    /// Seconds until the hold lapses.
    pub ttl: u32,
}

/// Settled usage of one function in one period.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct FunctionSum {
    pub period_start: DateTime<Utc>,
    pub function_id: String,
    pub tokens: i64,
    pub generations: i64,
}

/// One settled generation: when it started, what it was, what it cost.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct Charged {
    pub created_at: DateTime<Utc>,
    pub function_id: String,
    pub actual_tokens: i64,
}

#[derive(Clone)]
pub struct QuotaStore {
    db: DatabaseConnection,
}

impl QuotaStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The user's usage rows, newest period first, at most `limit`.
    pub async fn periods(&self, user: Uuid, limit: u64) -> Result<Vec<usage::Model>, DbErr> {
        use sea_orm::QueryOrder;
        usage::Entity::find()
            .filter(usage::Column::UserId.eq(user))
            .order_by_desc(usage::Column::PeriodStart)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Settled usage by period and function, for periods from `since` on.
    pub async fn by_function(
        &self,
        user: Uuid,
        since: DateTime<Utc>,
    ) -> Result<Vec<FunctionSum>, DbErr> {
        hold::Entity::find()
            .select_only()
            .column(hold::Column::PeriodStart)
            .column(hold::Column::FunctionId)
            // PostgreSQL sums a bigint as numeric: back to bigint.
            .column_as(
                Expr::from(Func::cast_as(
                    Func::sum(Expr::col(hold::Column::ActualTokens)),
                    "bigint",
                )),
                "tokens",
            )
            .column_as(Expr::col(hold::Column::Id).count(), "generations")
            .filter(hold::Column::UserId.eq(user))
            .filter(hold::Column::PeriodStart.gte(since))
            .filter(hold::Column::Status.eq("committed"))
            .group_by(hold::Column::PeriodStart)
            .group_by(hold::Column::FunctionId)
            .into_model::<FunctionSum>()
            .all(&self.db)
            .await
    }

    /// Every settled generation of one period (bounded by the period's generation quota).
    pub async fn charged(
        &self,
        user: Uuid,
        period_start: DateTime<Utc>,
    ) -> Result<Vec<Charged>, DbErr> {
        hold::Entity::find()
            .select_only()
            .column(hold::Column::CreatedAt)
            .column(hold::Column::FunctionId)
            .column(hold::Column::ActualTokens)
            .filter(hold::Column::UserId.eq(user))
            .filter(hold::Column::PeriodStart.eq(period_start))
            .filter(hold::Column::Status.eq("committed"))
            .into_model::<Charged>()
            .all(&self.db)
            .await
    }

    /// The period's usage row.
    pub async fn usage(
        &self,
        user: Uuid,
        period_start: DateTime<Utc>,
    ) -> Result<Option<usage::Model>, DbErr> {
        usage::Entity::find_by_id((user, period_start)).one(&self.db).await
    }

    pub async fn hold(&self, id: Uuid) -> Result<Option<hold::Model>, DbErr> {
        hold::Entity::find_by_id(id).one(&self.db).await
    }

    /// The hold a reserve key (`{user}:{key}`) took.
    pub async fn hold_by_key(&self, idem: &str) -> Result<Option<hold::Model>, DbErr> {
        hold::Entity::find().filter(hold::Column::Idempotency.eq(idem)).one(&self.db).await
    }

    /// Up to `limit` holds past their expiry (one user's, or everyone's).
    pub async fn lapsed(&self, user: Option<Uuid>, limit: u64) -> Result<Vec<hold::Model>, DbErr> {
        let mut q = hold::Entity::find()
            .filter(hold::Column::Status.eq("held"))
            .filter(hold::Column::ExpiresAt.lt(Utc::now()));
        if let Some(u) = user {
            q = q.filter(hold::Column::UserId.eq(u));
        }
        q.limit(limit).all(&self.db).await
    }

    /// One attempt at a hold: the usage row's conditional increment (returning the row) and
    /// the hold, in one transaction.
    pub async fn take(&self, user: Uuid, cur: &Assumed, ask: &Ask<'_>) -> Result<Taken, DbErr> {
        let Ask { function, tokens, idem, ttl } = *ask;
        let now = Utc::now();
        let h = hold::Model {
            id: Uuid::now_v7(),
            user_id: user,
            period_start: cur.period_start,
            tokens,
            status: "held".into(),
            actual_tokens: 0,
            idempotency: idem.to_owned(),
            expires_at: now + chrono::Duration::seconds(i64::from(ttl)),
            created_at: now,
            function_id: function.to_owned(),
            plan_id: cur.plan_id.clone(),
            outcome: None,
            queue_wait_ms: None,
        };
        for attempt in 0..2 {
            if self.db.get_database_backend() == DbBackend::Postgres {
                match self.reserve_in_one_statement(&h, cur).await? {
                    Taken::NoRoom if attempt == 0 => {
                        self.ensure_usage_row(user, cur.period_start).await?;
                        continue;
                    }
                    taken => return Ok(taken),
                }
            }
            let txn = self.db.begin().await?;
            let mut taken = usage::Entity::update_many()
                .col_expr(
                    usage::Column::TokensHeld,
                    Expr::col(usage::Column::TokensHeld).add(tokens),
                )
                .col_expr(
                    usage::Column::GenerationsHeld,
                    Expr::col(usage::Column::GenerationsHeld).add(1),
                )
                .filter(usage::Column::UserId.eq(user))
                .filter(usage::Column::PeriodStart.eq(cur.period_start))
                .filter(
                    Expr::col(usage::Column::TokensUsed)
                        .add(Expr::col(usage::Column::TokensHeld))
                        .add(tokens)
                        .lte(cur.token_quota),
                )
                .filter(
                    Expr::col(usage::Column::GenerationsUsed)
                        .add(Expr::col(usage::Column::GenerationsHeld))
                        .add(1)
                        .lte(cur.generation_quota),
                )
                .exec_with_returning(&txn)
                .await?;
            let Some(row) = taken.pop() else {
                txn.rollback().await?;
                // No room — or no usage row yet for this period (a concurrent first reserve
                // may be creating it): make sure it exists and try once more; a second miss is
                // a real refusal.
                if attempt == 1 {
                    return Ok(Taken::NoRoom);
                }
                self.ensure_usage_row(user, cur.period_start).await?;
                continue;
            };
            let h = hold::ActiveModel::from(h).insert(&txn).await?;
            txn.commit().await?;
            return Ok(Taken::Yes(Box::new(h), row));
        }
        Ok(Taken::NoRoom)
    }

    /// PostgreSQL's hot path: room taken in the usage row and the hold inserted from its result
    /// in one statement — one round trip and one implicit transaction instead of four round
    /// trips. A statement is atomic: a duplicate key (unique violation) takes nothing.
    ///
    /// The statement also checks the subscription the reserve assumed (the plan and period in
    /// `cur`, from a row this replica may have read a while ago, see [`KnownRows`]) against the
    /// table, and takes nothing when it changed: [`Taken::Stale`].
    ///
    /// It commits without waiting for the WAL flush (`synchronous_commit = off`, for this
    /// transaction only — PostgreSQL's documented per-transaction trade): a hold is a
    /// reservation, and what makes it count is its settle, which does wait, and whose flush
    /// carries every earlier record with it — a task's row likewise, before its 202. So a
    /// database crash can lose only holds of the last few hundred ms that nothing durable
    /// followed yet; their generations then find no hold to charge (under-charge, never over)
    /// and the quota they held is free again. Concurrency is untouched: the row lock and the
    /// quota check are the same.
    async fn reserve_in_one_statement(
        &self,
        h: &hold::Model,
        cur: &Assumed,
    ) -> Result<Taken, DbErr> {
        // `$10` is the paid plan assumed (NULL: the free plan, no active subscription).
        const SQL: &str = r#"
            WITH async_commit AS (
                SELECT set_config('synchronous_commit', 'off', true)
            ), fresh AS (
                SELECT CASE WHEN $10::text IS NULL THEN NOT EXISTS (
                    SELECT 1 FROM subscribe_subscriptions WHERE user_id = $2 AND status = $12
                ) ELSE EXISTS (
                    SELECT 1 FROM subscribe_subscriptions
                     WHERE user_id = $2 AND status = $12 AND plan_id = $10
                       AND period_start = $3 AND period_end = $11
                ) END AS ok
            ), taken AS (
                UPDATE subscribe_usage
                   SET tokens_held = tokens_held + $1, generations_held = generations_held + 1
                 WHERE user_id = $2 AND period_start = $3
                   AND tokens_used + tokens_held + $1 <= $4
                   AND generations_used + generations_held + 1 <= $5
                   AND (SELECT ok FROM fresh)
                RETURNING *
            ), held AS (
                INSERT INTO subscribe_holds
                    (id, user_id, period_start, tokens, status, actual_tokens, idempotency,
                     expires_at, created_at, function_id, plan_id)
                SELECT $6, $2, $3, $1, 'held', 0, $7, $8, $9, $13, $14 FROM taken
            )
            SELECT fresh.ok AS fresh, taken.*
              FROM fresh CROSS JOIN async_commit LEFT JOIN taken ON true"#;
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            SQL,
            [
                h.tokens.into(),
                h.user_id.into(),
                h.period_start.into(),
                cur.token_quota.into(),
                cur.generation_quota.into(),
                h.id.into(),
                h.idempotency.clone().into(),
                h.expires_at.into(),
                h.created_at.into(),
                cur.paid_plan.clone().into(),
                cur.period_end.into(),
                Status::Active.as_str().into(),
                h.function_id.clone().into(),
                h.plan_id.clone().into(),
            ],
        );
        let res = self
            .db
            .query_one_raw(stmt)
            .await?
            .ok_or_else(|| DbErr::Custom("reserving returned no row".into()))?;
        if !res.try_get::<bool>("", "fresh")? {
            return Ok(Taken::Stale);
        }
        Ok(match usage::Model::from_query_result_optional(&res, "")? {
            Some(row) => Taken::Yes(Box::new(h.clone()), row),
            None => Taken::NoRoom,
        })
    }

    /// The user's usage row for a period, created empty if missing (concurrent creators agree).
    pub async fn ensure_usage_row(
        &self,
        user: Uuid,
        period_start: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        usage::Entity::insert(usage::ActiveModel {
            user_id: Set(user),
            period_start: Set(period_start),
            tokens_used: Set(0),
            tokens_held: Set(0),
            generations_used: Set(0),
            generations_held: Set(0),
        })
        .on_conflict_do_nothing_on([usage::Column::UserId, usage::Column::PeriodStart])
        .exec(&self.db)
        .await?;
        Ok(())
    }

    /// Ends a hold: `commit` charges `actual` tokens (at most what was held) and one
    /// generation; otherwise (`release`, `expire`) everything goes back. Exactly once: the
    /// status moves from `held` by a conditional update.
    pub async fn settle(
        &self,
        id: Uuid,
        to: &str,
        actual: i64,
        ending: Ending,
    ) -> Result<Settled, DbErr> {
        if self.db.get_database_backend() == DbBackend::Postgres {
            return self.settle_in_one_statement(id, to, actual, ending).await;
        }
        let txn = self.db.begin().await?;
        let Some(h) = hold::Entity::find_by_id(id).one(&txn).await? else {
            txn.rollback().await?;
            return Ok(Settled::No);
        };
        let actual = Ord::min(actual, h.tokens);
        let moved = hold::Entity::update_many()
            .col_expr(hold::Column::Status, Expr::value(to))
            .col_expr(hold::Column::ActualTokens, Expr::value(actual))
            .col_expr(hold::Column::Outcome, Expr::value(ending.outcome))
            .col_expr(hold::Column::QueueWaitMs, Expr::value(ending.queue_wait_ms))
            .filter(hold::Column::Id.eq(h.id))
            .filter(hold::Column::Status.eq("held"))
            .exec(&txn)
            .await?;
        if moved.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(Settled::No);
        }
        let used_gens = i32::from(to == "committed");
        let mut row = usage::Entity::update_many()
            .col_expr(usage::Column::TokensHeld, Expr::col(usage::Column::TokensHeld).sub(h.tokens))
            .col_expr(usage::Column::TokensUsed, Expr::col(usage::Column::TokensUsed).add(actual))
            .col_expr(
                usage::Column::GenerationsHeld,
                Expr::col(usage::Column::GenerationsHeld).sub(1),
            )
            .col_expr(
                usage::Column::GenerationsUsed,
                Expr::col(usage::Column::GenerationsUsed).add(used_gens),
            )
            .filter(usage::Column::UserId.eq(h.user_id))
            .filter(usage::Column::PeriodStart.eq(h.period_start))
            .exec_with_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(Settled::Yes(row.pop()))
    }

    /// PostgreSQL: [`Self::settle`] as one statement, by the hold's id alone (one round trip
    /// instead of five: no read of the hold first, the cap at what was held is in the SQL).
    async fn settle_in_one_statement(
        &self,
        id: Uuid,
        to: &str,
        actual: i64,
        ending: Ending,
    ) -> Result<Settled, DbErr> {
        const SQL: &str = r#"
            WITH moved AS (
                UPDATE subscribe_holds SET status = $1, actual_tokens = LEAST($2, tokens),
                       outcome = $5, queue_wait_ms = $6
                 WHERE id = $3 AND status = 'held'
                RETURNING user_id, period_start, tokens, actual_tokens
            ), used AS (
                UPDATE subscribe_usage u
                   SET tokens_held = u.tokens_held - m.tokens,
                       tokens_used = u.tokens_used + m.actual_tokens,
                       generations_held = u.generations_held - 1,
                       generations_used = u.generations_used + $4
                  FROM moved m
                 WHERE u.user_id = m.user_id AND u.period_start = m.period_start
                RETURNING u.*
            )
            SELECT (SELECT count(*) FROM moved) AS moved, used.*
              FROM (SELECT 1) AS one LEFT JOIN used ON true"#;
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            SQL,
            [
                to.into(),
                actual.into(),
                id.into(),
                i32::from(to == "committed").into(),
                ending.outcome.into(),
                ending.queue_wait_ms.into(),
            ],
        );
        let res = self
            .db
            .query_one_raw(stmt)
            .await?
            .ok_or_else(|| DbErr::Custom("settling returned no row".into()))?;
        if res.try_get::<i64>("", "moved")? == 0 {
            return Ok(Settled::No);
        }
        Ok(Settled::Yes(usage::Model::from_query_result_optional(&res, "")?))
    }
}
