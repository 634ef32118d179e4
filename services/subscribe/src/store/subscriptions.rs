//! Every statement on `subscribe_plans`, `subscribe_subscriptions` and
//! `subscribe_plan_changes`. Statements that belong to a change's transaction take the
//! connection (`txn`) the rules opened, so the row, its event and the end of the change's
//! claim commit together.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect,
    Set,
    sea_query::{Expr, OnConflict},
};
use uuid::Uuid;

use super::entities::{change, plan, subscription};
use crate::domain::SubscriptionStatus as Status;

#[derive(Clone)]
pub struct SubscriptionStore {
    db: DatabaseConnection,
}

impl SubscriptionStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Every plan, archived ones too, cheapest first.
    pub async fn plans(&self) -> Result<Vec<plan::Model>, DbErr> {
        let mut plans = plan::Entity::find().all(&self.db).await?;
        plans.sort_by_key(|p| (p.price_minor, p.id.clone()));
        Ok(plans)
    }

    /// A plan, its row locked in `txn` for a change (PostgreSQL; SQLite's write lock is taken
    /// by the change itself).
    pub async fn plan_for_change<C: ConnectionTrait>(
        &self,
        txn: &C,
        id: &str,
    ) -> Result<Option<plan::Model>, DbErr> {
        let q = plan::Entity::find_by_id(id.to_owned());
        if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
            q.lock_exclusive().one(txn).await
        } else {
            q.one(txn).await
        }
    }

    /// A default plan, unless a plan with its code exists (replicas seeding at once agree).
    pub async fn seed_plan(&self, p: plan::Model) -> Result<(), DbErr> {
        plan::Entity::insert(plan::ActiveModel::from(p))
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(plan::Column::Id).do_nothing().to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map(drop)
    }

    /// A new plan (a unique violation: the code is taken).
    pub async fn insert_plan<C: ConnectionTrait>(
        &self,
        txn: &C,
        p: plan::Model,
    ) -> Result<(), DbErr> {
        plan::Entity::insert(plan::ActiveModel::from(p)).exec_without_returning(txn).await.map(drop)
    }

    /// A plan's row replaced by `p` (same code).
    pub async fn save_plan<C: ConnectionTrait>(
        &self,
        txn: &C,
        p: plan::Model,
    ) -> Result<(), DbErr> {
        use sea_orm::ActiveModelTrait as _;
        let mut row = plan::ActiveModel::from(p);
        // Every column but the key is written.
        for c in [
            plan::Column::Title,
            plan::Column::PriceMinor,
            plan::Column::Currency,
            plan::Column::PeriodDays,
            plan::Column::Functions,
            plan::Column::TokenQuota,
            plan::Column::GenerationQuota,
            plan::Column::RateLimitTier,
            plan::Column::Priority,
            plan::Column::Archived,
        ] {
            row.reset(c);
        }
        row.update(txn).await.map(drop)
    }

    /// The user's subscription row (one per user, whatever its status).
    pub async fn of_user(&self, user: Uuid) -> Result<Option<subscription::Model>, DbErr> {
        subscription::Entity::find()
            .filter(subscription::Column::UserId.eq(user))
            .one(&self.db)
            .await
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<subscription::Model>, DbErr> {
        subscription::Entity::find_by_id(id).one(&self.db).await
    }

    /// Up to `limit` active subscriptions whose period has ended.
    pub async fn due(&self, limit: u64) -> Result<Vec<subscription::Model>, DbErr> {
        subscription::Entity::find()
            .filter(subscription::Column::Status.eq(Status::Active))
            .filter(subscription::Column::PeriodEnd.lte(Utc::now()))
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// A deleted user's subscription ends now (expired, never renewed); how many rows moved.
    pub async fn end_now(&self, user: Uuid) -> Result<u64, DbErr> {
        let now = Utc::now();
        Ok(subscription::Entity::update_many()
            .col_expr(subscription::Column::Status, Expr::value(Status::Expired))
            .col_expr(subscription::Column::CancelAtPeriodEnd, Expr::value(true))
            .col_expr(subscription::Column::PeriodEnd, Expr::value(now))
            .col_expr(subscription::Column::UpdatedAt, Expr::value(now))
            .filter(subscription::Column::UserId.eq(user))
            .filter(subscription::Column::Status.ne(Status::Expired))
            .exec(&self.db)
            .await?
            .rows_affected)
    }

    /// Sets or takes back a cancellation at the period's end.
    pub async fn set_cancel_at_period_end<C: ConnectionTrait>(
        &self,
        conn: &C,
        id: Uuid,
        cancel: bool,
    ) -> Result<(), DbErr> {
        subscription::Entity::update_many()
            .col_expr(subscription::Column::CancelAtPeriodEnd, Expr::value(cancel))
            .col_expr(subscription::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(subscription::Column::Id.eq(id))
            .exec(conn)
            .await
            .map(drop)
    }

    /// The user's row made active on `plan`'s terms for `[start, end)`: inserted the first
    /// time, updated after.
    pub async fn activate<C: ConnectionTrait>(
        &self,
        txn: &C,
        user: Uuid,
        plan: &plan::Model,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        subscription::Entity::insert(subscription::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user),
            plan_id: Set(plan.id.clone()),
            terms: Set(Some(terms_of(plan))),
            status: Set(Status::Active),
            period_start: Set(start),
            period_end: Set(end),
            cancel_at_period_end: Set(false),
            updated_at: Set(Utc::now()),
        })
        .on_conflict(
            OnConflict::column(subscription::Column::UserId)
                .update_columns([
                    subscription::Column::PlanId,
                    subscription::Column::Terms,
                    subscription::Column::Status,
                    subscription::Column::PeriodStart,
                    subscription::Column::PeriodEnd,
                    subscription::Column::CancelAtPeriodEnd,
                    subscription::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await
        .map(drop)
    }

    /// Moves an ended active period on (`Active`: the next one ends at `end`, on `terms`, the
    /// plan's terms now) or sets its status (`Expired`) — only if the row is still the one `s`
    /// read. Whether it did.
    pub async fn advance<C: ConnectionTrait>(
        &self,
        txn: &C,
        s: &subscription::Model,
        status: Status,
        end: DateTime<Utc>,
        terms: Option<&plan::Model>,
    ) -> Result<bool, DbErr> {
        let mut q = subscription::Entity::update_many()
            .col_expr(subscription::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(subscription::Column::Id.eq(s.id))
            .filter(subscription::Column::PeriodEnd.eq(s.period_end))
            .filter(subscription::Column::Status.eq(Status::Active));
        if status == Status::Active {
            q = q
                .col_expr(subscription::Column::PeriodStart, Expr::value(s.period_end))
                .col_expr(subscription::Column::PeriodEnd, Expr::value(end));
            if let Some(p) = terms {
                q = q.col_expr(subscription::Column::Terms, Expr::value(terms_of(p)));
            }
        } else {
            q = q.col_expr(subscription::Column::Status, Expr::value(status));
        }
        Ok(q.exec(txn).await?.rows_affected == 1)
    }

    /// Moves the user's period end (tests and operators).
    pub async fn set_period_end(&self, user: Uuid, end: DateTime<Utc>) -> Result<(), DbErr> {
        subscription::Entity::update_many()
            .col_expr(subscription::Column::PeriodEnd, Expr::value(end))
            .filter(subscription::Column::UserId.eq(user))
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// Claims the user's one plan change (`Err` with a unique violation: another holds it).
    pub async fn claim_change(
        &self,
        user: Uuid,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        let claim =
            change::ActiveModel { user_id: Set(user), change_id: Set(id), started_at: Set(now) };
        change::Entity::insert(claim).exec_without_returning(&self.db).await.map(drop)
    }

    /// Drops the user's change claim if it started before `before` (its process died); how
    /// many it dropped.
    pub async fn drop_stale_change(&self, user: Uuid, before: DateTime<Utc>) -> Result<u64, DbErr> {
        Ok(change::Entity::delete_many()
            .filter(change::Column::UserId.eq(user))
            .filter(change::Column::StartedAt.lt(before))
            .exec(&self.db)
            .await?
            .rows_affected)
    }

    /// Ends change `change`'s claim; whether it still held it.
    pub async fn end_change<C: ConnectionTrait>(
        &self,
        conn: &C,
        user: Uuid,
        change: Uuid,
    ) -> Result<bool, DbErr> {
        Ok(change::Entity::delete_many()
            .filter(change::Column::UserId.eq(user))
            .filter(change::Column::ChangeId.eq(change))
            .exec(conn)
            .await?
            .rows_affected
            == 1)
    }
}

/// A plan's terms as a subscription keeps them.
pub fn terms_of(p: &plan::Model) -> String {
    serde_json::to_string(p).expect("a plan serialises")
}

/// The terms a subscription keeps, when it keeps any (and they read).
pub fn terms_in(s: &subscription::Model) -> Option<plan::Model> {
    s.terms.as_deref().and_then(|t| serde_json::from_str(t).ok())
}
