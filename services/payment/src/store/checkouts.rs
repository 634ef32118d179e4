//! Every statement on `payment_checkouts` (a payment into a wallet on a provider's hosted page)
//! and on `payment_sandbox_payments` (the sandbox provider's own side).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use uuid::Uuid;

use super::entities::{checkout, sandbox_payment};
use crate::domain::CheckoutStatus as Status;

#[derive(Clone)]
pub struct CheckoutStore {
    db: DatabaseConnection,
}

impl CheckoutStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn insert(&self, row: checkout::ActiveModel) -> Result<checkout::Model, DbErr> {
        row.insert(&self.db).await
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<checkout::Model>, DbErr> {
        checkout::Entity::find_by_id(id).one(&self.db).await
    }

    /// Up to `limit` of a user's checkouts older than `before`, newest first.
    pub async fn of_user(
        &self,
        user: Uuid,
        before: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<checkout::Model>, DbErr> {
        let mut q = checkout::Entity::find().filter(checkout::Column::UserId.eq(user));
        if let Some(before) = before {
            q = q.filter(checkout::Column::Id.lt(before));
        }
        q.order_by_desc(checkout::Column::Id).limit(limit).all(&self.db).await
    }

    /// The checkout a user's key made.
    pub async fn by_key(&self, user: Uuid, key: &str) -> Result<Option<checkout::Model>, DbErr> {
        checkout::Entity::find()
            .filter(checkout::Column::UserId.eq(user))
            .filter(checkout::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await
    }

    /// The checkout of a provider's payment.
    pub async fn by_provider_payment(
        &self,
        provider: &str,
        provider_payment_id: &str,
    ) -> Result<Option<checkout::Model>, DbErr> {
        checkout::Entity::find()
            .filter(checkout::Column::Provider.eq(provider))
            .filter(checkout::Column::ProviderPaymentId.eq(provider_payment_id))
            .one(&self.db)
            .await
    }

    /// Records the provider's id of the payment (and where to pay, when known); never replaces
    /// another id. False when the checkout has another.
    pub async fn set_provider_payment(
        &self,
        id: Uuid,
        provider_payment_id: &str,
        confirmation_url: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, DbErr> {
        let mut q = checkout::Entity::update_many()
            .col_expr(checkout::Column::ProviderPaymentId, Expr::value(provider_payment_id))
            .col_expr(checkout::Column::UpdatedAt, Expr::value(now));
        if let Some(url) = confirmation_url {
            q = q.col_expr(checkout::Column::ConfirmationUrl, Expr::value(url));
        }
        let done = q
            .filter(checkout::Column::Id.eq(id))
            .filter(
                checkout::Column::ProviderPaymentId
                    .is_null()
                    .or(checkout::Column::ProviderPaymentId.eq(provider_payment_id)),
            )
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected == 1)
    }

    /// Marks a checkout paid by ledger entry `entry`, in the movement's transaction.
    pub async fn mark_paid<C: ConnectionTrait>(
        txn: &C,
        id: Uuid,
        entry: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        checkout::Entity::update_many()
            .col_expr(checkout::Column::Status, Expr::value(Status::Succeeded))
            .col_expr(checkout::Column::TransactionId, Expr::value(entry))
            .col_expr(checkout::Column::FailureReason, Expr::value(""))
            .col_expr(checkout::Column::UpdatedAt, Expr::value(now))
            .filter(checkout::Column::Id.eq(id))
            .filter(checkout::Column::Status.ne(Status::Succeeded))
            .exec(txn)
            .await
            .map(drop)
    }

    /// Ends a pending checkout unpaid (`Canceled` with the reason, or `Expired`). False when it
    /// was no longer pending.
    pub async fn end_unpaid(
        &self,
        id: Uuid,
        status: Status,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, DbErr> {
        let done = checkout::Entity::update_many()
            .col_expr(checkout::Column::Status, Expr::value(status))
            .col_expr(checkout::Column::FailureReason, Expr::value(reason))
            .col_expr(checkout::Column::UpdatedAt, Expr::value(now))
            .filter(checkout::Column::Id.eq(id))
            .filter(checkout::Column::Status.eq(Status::Pending))
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected == 1)
    }

    /// Up to `limit` pending checkouts due for a question to the provider, longest due first.
    pub async fn due(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<checkout::Model>, DbErr> {
        checkout::Entity::find()
            .filter(checkout::Column::Status.eq(Status::Pending))
            .filter(checkout::Column::NextCheckAt.lte(now))
            .order_by_asc(checkout::Column::NextCheckAt)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Claims a due checkout for one replica's job: moves its next check from `seen` (as that
    /// replica read it) to `next`. False when another replica claimed it first.
    pub async fn claim(
        &self,
        id: Uuid,
        seen: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> Result<bool, DbErr> {
        let done = checkout::Entity::update_many()
            .col_expr(checkout::Column::NextCheckAt, Expr::value(next))
            .filter(checkout::Column::Id.eq(id))
            .filter(checkout::Column::NextCheckAt.eq(seen))
            .filter(checkout::Column::Status.eq(Status::Pending))
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected == 1)
    }

    /// The sandbox's payment made with `key`, made now from `row` when there is none.
    pub async fn sandbox_create(
        &self,
        row: sandbox_payment::ActiveModel,
        key: &str,
    ) -> Result<sandbox_payment::Model, DbErr> {
        let by_key = || {
            sandbox_payment::Entity::find()
                .filter(sandbox_payment::Column::IdempotencyKey.eq(key))
                .one(&self.db)
        };
        if let Some(found) = by_key().await? {
            return Ok(found);
        }
        match row.insert(&self.db).await {
            Ok(made) => Ok(made),
            Err(e) if skillup_kit::db::is_unique_violation(&e) => {
                by_key().await?.ok_or(DbErr::RecordNotFound("the sandbox payment".into()))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn sandbox_get(&self, id: &str) -> Result<Option<sandbox_payment::Model>, DbErr> {
        sandbox_payment::Entity::find_by_id(id.to_owned()).one(&self.db).await
    }

    /// Ends a pending sandbox payment (`succeeded` or `canceled` with the reason).
    pub async fn sandbox_complete(
        &self,
        id: &str,
        status: &str,
        reason: &str,
    ) -> Result<(), DbErr> {
        sandbox_payment::Entity::update_many()
            .col_expr(sandbox_payment::Column::Status, Expr::value(status))
            .col_expr(sandbox_payment::Column::Reason, Expr::value(reason))
            .filter(sandbox_payment::Column::Id.eq(id))
            .filter(sandbox_payment::Column::Status.eq("pending"))
            .exec(&self.db)
            .await
            .map(drop)
    }
}
