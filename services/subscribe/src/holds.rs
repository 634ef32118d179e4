//! Quota is **hold → settle**: a reserve takes a hold only through a conditional update
//! (`used + held + asked <= quota`), so no mix of concurrent calls can push use past the limit;
//! commit charges the actual use (never more than the hold), release returns it, and holds
//! never settled expire back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult,
    QueryFilter, QuerySelect, Set, Statement, TransactionTrait,
    sea_query::{Expr, ExprTrait},
};
use skillup_kit::db::{is_busy as busy, is_unique_violation as unique_violation};
use uuid::Uuid;

use crate::domain::{DenyReason, Entitlement, QuotaHold, SubscriptionStatus as Status, Usage};
use crate::subscriptions::*;
use crate::{
    error::{Result, SubscribeError},
    store::entities::{hold, usage},
};

/// What a reserve attempt took.
#[derive(Debug)]
pub(crate) enum Taken {
    /// The hold, and the usage row it left.
    Yes(hold::Model, usage::Model),
    /// No room in the quota, or no usage row for the period yet.
    NoRoom,
    /// The subscription row the attempt assumed is not the table's any more: nothing taken.
    Stale,
}

/// Whether a settle moved the hold, and the usage row it left.
#[derive(Debug, PartialEq)]
pub(crate) enum Settled {
    No,
    Yes(Option<usage::Model>),
}

/// Longest a hold may live.
pub const MAX_HOLD_SECS: u32 = 86_400;

/// A hold's life when the caller does not say.
pub const DEFAULT_HOLD_SECS: u32 = 3_600;

pub(crate) fn hold_uuid(id: &str) -> Result<Uuid> {
    Uuid::parse_str(id)
        .map_err(|_| SubscribeError::Invalid("hold_id", "`hold_id` must be a UUID".into()))
}

impl Subscriptions {
    /// Whether the plan allows `function` and quota is left.
    pub async fn entitlement(&self, user: Uuid, function: &str) -> Result<Entitlement> {
        let cur = self.current(user).await?;
        let deny = |reason: DenyReason, message: String| Entitlement {
            denied: Some((reason, message)),
            plan: cur.plan.id.clone(),
            priority: Ord::max(cur.plan.priority, 0) as u32,
        };
        if !includes(&cur.plan, function) {
            return Ok(deny(
                DenyReason::FunctionNotInPlan,
                format!(
                    "`{function}` is unavailable on the {} plan — subscribe to a plan that includes it (недоступно — оформите подписку)",
                    cur.plan.title
                ),
            ));
        }
        let u = self.usage_row(user, cur.period_start).await?;
        let (tu, th, gu, gh) = u.map_or((0, 0, 0, 0), |u| {
            (u.tokens_used, u.tokens_held, u.generations_used, u.generations_held)
        });
        if tu + th >= cur.plan.token_quota || gu + gh >= cur.plan.generation_quota {
            return Ok(deny(
                DenyReason::QuotaExhausted,
                "this period's quota is used up — upgrade your plan (квота исчерпана — смените тариф)".into(),
            ));
        }
        Ok(Entitlement {
            denied: None,
            plan: cur.plan.id.clone(),
            priority: Ord::max(cur.plan.priority, 0) as u32,
        })
    }

    /// Takes a hold of `tokens` (and one generation) only if the quota left covers it.
    pub async fn reserve(
        &self,
        user: Uuid,
        function: &str,
        tokens: u64,
        key: &str,
        ttl: u32,
    ) -> Result<QuotaHold> {
        if tokens == 0 || tokens > 10_000_000 {
            return Err(SubscribeError::Invalid("tokens", "`tokens` must be 1..=10000000".into()));
        }
        if key.len() > 128 {
            return Err(SubscribeError::Invalid(
                "idempotency_key",
                "`idempotency_key` is at most 128 characters".into(),
            ));
        }
        let ttl = match ttl {
            0 => DEFAULT_HOLD_SECS,
            t if t > MAX_HOLD_SECS => {
                return Err(SubscribeError::Invalid(
                    "ttl_seconds",
                    format!("`ttl_seconds` is at most {MAX_HOLD_SECS}"),
                ));
            }
            t => t,
        };
        let (mut cur, known) = self.reserve_view(user).await?;
        if !includes(&cur.plan, function) && known {
            // A known row may predate an upgrade: a refusal is decided on the row of now.
            cur = self.reread(user, false).await?;
        }
        let entitled = |cur: &Current| {
            if includes(&cur.plan, function) {
                Ok(())
            } else {
                Err(SubscribeError::SubscriptionRequired(format!(
                    "`{function}` is not in the {} plan",
                    cur.plan.title
                )))
            }
        };
        entitled(&cur)?;
        let idem = if key.is_empty() {
            format!("{user}:{}", Uuid::now_v7())
        } else {
            format!("{user}:{key}")
        };
        let tokens = tokens as i64;
        let priority = |cur: &Current| Ord::max(cur.plan.priority, 0) as u32;
        let held = |h: hold::Model, usage: Usage, priority: u32| QuotaHold {
            id: h.id,
            tokens: Ord::max(h.tokens, 0) as u64,
            expires_at: h.expires_at,
            usage,
            priority,
        };
        // The hot path is one transaction: a retried key is found by its unique violation (or
        // when the quota looks spent), and lapsed holds are reclaimed only when they stand in
        // the way (the periodic job reclaims the rest).
        let (mut reclaimed, mut rereads) = (false, 0);
        for attempt in 0..50u64 {
            match self.try_reserve(user, &cur, tokens, &idem, ttl).await {
                Ok(Taken::Yes(h, row)) => {
                    return Ok(held(h, usage_of(&cur, Some(&row)), priority(&cur)));
                }
                Ok(Taken::Stale) => {
                    // The subscription changed since this replica saw it (the statement took
                    // nothing): read it again, from the table, since the cache may be what
                    // is behind. Only a subscription changing on every attempt ends here.
                    rereads += 1;
                    if rereads > 3 {
                        return Err(SubscribeError::Unavailable(
                            "the subscription kept changing; retry".into(),
                        ));
                    }
                    cur = self.reread(user, true).await?;
                    entitled(&cur)?;
                }
                Ok(Taken::NoRoom) => {
                    if let Some(found) = self.hold_by_key(&cur, &idem).await? {
                        return Ok(held(found.0, found.1, priority(&cur)));
                    }
                    if !reclaimed {
                        reclaimed = true;
                        if self.expire_due(Some(user)).await? > 0 {
                            continue;
                        }
                    }
                    let row = self.usage_row(user, cur.period_start).await?;
                    let u = usage_of(&cur, row.as_ref());
                    return Err(SubscribeError::QuotaExceeded(format!(
                        "{} of {} tokens and {} of {} generations are used or held",
                        u.tokens_used + u.tokens_held,
                        u.token_quota,
                        u.generations_used + u.generations_held,
                        u.generation_quota
                    )));
                }
                Err(e) if unique_violation(&e) => {
                    if let Some(found) = self.hold_by_key(&cur, &idem).await? {
                        return Ok(held(found.0, found.1, priority(&cur)));
                    }
                }
                Err(e) if busy(&e) => {
                    tokio::time::sleep(Duration::from_millis(2 + Ord::min(attempt * 3, 50))).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(SubscribeError::Unavailable("quota store stayed busy".into()))
    }

    /// The hold a reserve key already took, with the usage of its period — only while it is
    /// still held: a key whose hold was settled (committed, released, expired) stands for work
    /// that is over, and taking it again would be a generation nobody pays for.
    pub(crate) async fn hold_by_key(
        &self,
        cur: &Current,
        idem: &str,
    ) -> Result<Option<(hold::Model, Usage)>> {
        let Some(h) =
            hold::Entity::find().filter(hold::Column::Idempotency.eq(idem)).one(&self.db).await?
        else {
            return Ok(None);
        };
        if h.status != "held" {
            return Err(SubscribeError::KeyReused(format!(
                "the hold of this idempotency key was already {}; reserve with a new key",
                h.status
            )));
        }
        let row = self.usage_row(h.user_id, h.period_start).await?;
        Ok(Some((h, usage_of(cur, row.as_ref()))))
    }

    /// One attempt at a hold: the usage row's conditional increment (returning the row) and
    /// the hold, in one transaction.
    pub(crate) async fn try_reserve(
        &self,
        user: Uuid,
        cur: &Current,
        tokens: i64,
        idem: &str,
        ttl: u32,
    ) -> std::result::Result<Taken, DbErr> {
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
                        .lte(cur.plan.token_quota),
                )
                .filter(
                    Expr::col(usage::Column::GenerationsUsed)
                        .add(Expr::col(usage::Column::GenerationsHeld))
                        .add(1)
                        .lte(cur.plan.generation_quota),
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
            return Ok(Taken::Yes(h, row));
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
    pub(crate) async fn reserve_in_one_statement(
        &self,
        h: &hold::Model,
        cur: &Current,
    ) -> std::result::Result<Taken, DbErr> {
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
                     expires_at, created_at)
                SELECT $6, $2, $3, $1, 'held', 0, $7, $8, $9 FROM taken
            )
            SELECT fresh.ok AS fresh, taken.*
              FROM fresh CROSS JOIN async_commit LEFT JOIN taken ON true"#;
        let paid = cur.sub.as_ref().filter(|s| s.status == Status::Active);
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            SQL,
            [
                h.tokens.into(),
                h.user_id.into(),
                h.period_start.into(),
                cur.plan.token_quota.into(),
                cur.plan.generation_quota.into(),
                h.id.into(),
                h.idempotency.clone().into(),
                h.expires_at.into(),
                h.created_at.into(),
                paid.map(|s| s.plan_id.clone()).into(),
                cur.period_end.into(),
                Status::Active.as_str().into(),
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
            Some(row) => Taken::Yes(h.clone(), row),
            None => Taken::NoRoom,
        })
    }

    /// The user's usage row for a period, created empty if missing (concurrent creators agree).
    pub(crate) async fn ensure_usage_row(
        &self,
        user: Uuid,
        period_start: DateTime<Utc>,
    ) -> std::result::Result<(), DbErr> {
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

    pub(crate) async fn find_hold(&self, id: &str) -> Result<hold::Model> {
        let id = hold_uuid(id)?;
        hold::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| SubscribeError::NotFound(format!("no hold {id}")))
    }

    /// Ends a hold: `commit` charges `actual` tokens (at most what was held) and one
    /// generation; otherwise (`release`, `expire`) everything goes back. Exactly once: the
    /// status moves from `held` by a conditional update.
    pub(crate) async fn settle(
        &self,
        id: Uuid,
        to: &str,
        actual: i64,
    ) -> std::result::Result<Settled, DbErr> {
        if self.db.get_database_backend() == DbBackend::Postgres {
            return self.settle_in_one_statement(id, to, actual).await;
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
    pub(crate) async fn settle_in_one_statement(
        &self,
        id: Uuid,
        to: &str,
        actual: i64,
    ) -> std::result::Result<Settled, DbErr> {
        const SQL: &str = r#"
            WITH moved AS (
                UPDATE subscribe_holds SET status = $1, actual_tokens = LEAST($2, tokens)
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
            [to.into(), actual.into(), id.into(), i32::from(to == "committed").into()],
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

    pub(crate) async fn settle_retrying(&self, id: Uuid, to: &str, actual: i64) -> Result<Settled> {
        for attempt in 0..50u64 {
            match self.settle(id, to, actual).await {
                Ok(done) => return Ok(done),
                Err(e) if busy(&e) => {
                    tokio::time::sleep(Duration::from_millis(2 + Ord::min(attempt * 3, 50))).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(SubscribeError::Unavailable("quota store stayed busy".into()))
    }

    /// Charges `actual` tokens (at most what was held) and one generation. The hold is read
    /// only when it did not move: unknown (404), or settled already — by a commit (the same
    /// answer again) or otherwise (409).
    pub async fn commit(&self, hold_id: &str, actual: u64) -> Result<Usage> {
        let id = hold_uuid(hold_id)?;
        let actual = i64::try_from(actual).unwrap_or(i64::MAX);
        let settled = self.settle_retrying(id, "committed", actual).await?;
        if let Settled::Yes(Some(row)) = &settled {
            let cur = self.current(row.user_id).await?;
            if cur.period_start == row.period_start {
                return Ok(usage_of(&cur, Some(row)));
            }
        }
        let h = self.find_hold(hold_id).await?;
        if settled == Settled::No && h.status != "committed" {
            return Err(SubscribeError::Conflict(format!("the hold was already {}", h.status)));
        }
        self.usage(h.user_id).await
    }

    pub async fn release(&self, hold_id: &str) -> Result<Usage> {
        let id = hold_uuid(hold_id)?;
        let settled = self.settle_retrying(id, "released", 0).await?;
        if let Settled::Yes(Some(row)) = &settled {
            return self.usage(row.user_id).await;
        }
        let h = self.find_hold(hold_id).await?;
        if settled == Settled::No && h.status == "committed" {
            return Err(SubscribeError::Conflict("the hold was already committed".into()));
        }
        self.usage(h.user_id).await
    }

    /// Returns holds past their expiry (one user's, or everyone's); safe on many replicas.
    pub async fn expire_due(&self, user: Option<Uuid>) -> Result<usize> {
        let mut q = hold::Entity::find()
            .filter(hold::Column::Status.eq("held"))
            .filter(hold::Column::ExpiresAt.lt(Utc::now()));
        if let Some(u) = user {
            q = q.filter(hold::Column::UserId.eq(u));
        }
        let mut n = 0;
        for h in q.limit(500).all(&self.db).await? {
            if self.settle_retrying(h.id, "expired", 0).await? != Settled::No {
                n += 1;
            }
        }
        Ok(n)
    }
}
