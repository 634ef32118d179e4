//! Every statement on `payment_refunds` (refunds of paid checkouts to the card). Statements of
//! a movement take the transaction the ledger opened, so a refund's row, its money and its
//! audit entry commit together.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use uuid::Uuid;

use super::entities::refund;
use crate::domain::RefundStatus as Status;

#[derive(Clone)]
pub struct RefundStore {
    db: DatabaseConnection,
}

impl RefundStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn insert<C: ConnectionTrait>(
        txn: &C,
        row: refund::ActiveModel,
    ) -> Result<refund::Model, DbErr> {
        row.insert(txn).await
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<refund::Model>, DbErr> {
        refund::Entity::find_by_id(id).one(&self.db).await
    }

    pub async fn by_entry(&self, entry: Uuid) -> Result<Option<refund::Model>, DbErr> {
        refund::Entity::find().filter(refund::Column::TransactionId.eq(entry)).one(&self.db).await
    }

    pub async fn by_key(&self, checkout: Uuid, key: &str) -> Result<Option<refund::Model>, DbErr> {
        refund::Entity::find()
            .filter(refund::Column::CheckoutId.eq(checkout))
            .filter(refund::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await
    }

    pub async fn by_provider_refund(
        &self,
        provider: &str,
        provider_refund_id: &str,
    ) -> Result<Option<refund::Model>, DbErr> {
        refund::Entity::find()
            .filter(refund::Column::Provider.eq(provider))
            .filter(refund::Column::ProviderRefundId.eq(provider_refund_id))
            .one(&self.db)
            .await
    }

    /// The refunds of `checkouts`, oldest first.
    pub async fn of_checkouts(&self, checkouts: &[Uuid]) -> Result<Vec<refund::Model>, DbErr> {
        refund::Entity::find()
            .filter(refund::Column::CheckoutId.is_in(checkouts.iter().copied()))
            .order_by_asc(refund::Column::Id)
            .all(&self.db)
            .await
    }

    /// Records the provider's id of the refund (never replacing another).
    pub async fn set_provider_refund(
        &self,
        id: Uuid,
        provider_refund_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        refund::Entity::update_many()
            .col_expr(refund::Column::ProviderRefundId, Expr::value(provider_refund_id))
            .col_expr(refund::Column::UpdatedAt, Expr::value(now))
            .filter(refund::Column::Id.eq(id))
            .filter(refund::Column::ProviderRefundId.is_null())
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// Ends a pending refund, in the ledger's transaction. False when it had already ended.
    pub async fn finish<C: ConnectionTrait>(
        txn: &C,
        id: Uuid,
        status: Status,
        failure_reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, DbErr> {
        let done = refund::Entity::update_many()
            .col_expr(refund::Column::Status, Expr::value(status))
            .col_expr(refund::Column::FailureReason, Expr::value(failure_reason))
            .col_expr(refund::Column::UpdatedAt, Expr::value(now))
            .filter(refund::Column::Id.eq(id))
            .filter(refund::Column::Status.eq(Status::Pending))
            .exec(txn)
            .await?;
        Ok(done.rows_affected == 1)
    }

    /// Up to `limit` pending refunds due for a question to the provider.
    pub async fn due(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<refund::Model>, DbErr> {
        refund::Entity::find()
            .filter(refund::Column::Status.eq(Status::Pending))
            .filter(refund::Column::NextCheckAt.lte(now))
            .order_by_asc(refund::Column::NextCheckAt)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Claims a due refund for one replica (as `CheckoutStore::claim`).
    pub async fn claim(
        &self,
        id: Uuid,
        seen: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> Result<bool, DbErr> {
        let done = refund::Entity::update_many()
            .col_expr(refund::Column::NextCheckAt, Expr::value(next))
            .filter(refund::Column::Id.eq(id))
            .filter(refund::Column::NextCheckAt.eq(seen))
            .filter(refund::Column::Status.eq(Status::Pending))
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected == 1)
    }
}
