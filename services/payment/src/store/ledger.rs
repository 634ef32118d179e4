//! Every statement on the ledger's tables: `payment_accounts` (balances), `payment_transactions`
//! (the entries users see) and `payment_postings` (two per movement, summing to zero).
//! Statements of a movement take the transaction (`txn`) the rules opened, so the entry, the
//! balances, the postings and the event commit together.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::{Expr, ExprTrait},
};
use uuid::Uuid;

use super::entities::{account, posting, transaction};
use crate::domain::{TransactionKind as Kind, TransactionStatus as Status};

#[derive(Clone)]
pub struct LedgerStore {
    db: DatabaseConnection,
}

impl LedgerStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn account(&self, key: &str) -> Result<Option<account::Model>, DbErr> {
        account::Entity::find_by_id(key.to_owned()).one(&self.db).await
    }

    pub async fn entry(&self, id: Uuid) -> Result<Option<transaction::Model>, DbErr> {
        transaction::Entity::find_by_id(id).one(&self.db).await
    }

    /// The entry an idempotency key (within its scope) already made.
    pub async fn entry_by_key(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<transaction::Model>, DbErr> {
        transaction::Entity::find()
            .filter(transaction::Column::IdempotencyScope.eq(scope))
            .filter(transaction::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await
    }

    /// Up to `limit` of the user's entries older than `before`, newest first.
    pub async fn entries(
        &self,
        user: Uuid,
        before: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<transaction::Model>, DbErr> {
        let mut q = transaction::Entity::find().filter(transaction::Column::UserId.eq(user));
        if let Some(before) = before {
            q = q.filter(transaction::Column::Id.lt(before));
        }
        q.order_by_desc(transaction::Column::Id).limit(limit).all(&self.db).await
    }

    /// Deletes a refused charge's entry (so the same request may try again).
    pub async fn forget_refusal(&self, id: Uuid) -> Result<(), DbErr> {
        transaction::Entity::delete_many()
            .filter(transaction::Column::Id.eq(id))
            .filter(transaction::Column::Status.eq(Status::Failed))
            .filter(transaction::Column::Kind.eq(Kind::Charge))
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// Creates an account on first use (no-op when it exists); system accounts (`user: None`)
    /// may go negative.
    pub async fn ensure_account<C: ConnectionTrait>(
        &self,
        txn: &C,
        key: &str,
        user: Option<Uuid>,
        currency: &str,
    ) -> Result<(), DbErr> {
        account::Entity::insert(account::ActiveModel {
            key: Set(key.to_owned()),
            user_id: Set(user),
            currency: Set(currency.to_owned()),
            balance_minor: Set(0),
            allow_negative: Set(user.is_none()),
            updated_at: Set(Utc::now()),
        })
        .on_conflict_do_nothing_on([account::Column::Key])
        .exec(txn)
        .await
        .map(drop)
    }

    /// Writes an entry (a unique violation: its key was used).
    pub async fn insert_entry<C: ConnectionTrait>(
        &self,
        txn: &C,
        row: transaction::ActiveModel,
    ) -> Result<transaction::Model, DbErr> {
        row.insert(txn).await
    }

    /// Adds `amount` to a charge's refunded total, only if it stays within the charge; whether
    /// it did.
    pub async fn add_refunded<C: ConnectionTrait>(
        &self,
        txn: &C,
        charge: Uuid,
        amount: i64,
    ) -> Result<bool, DbErr> {
        let done = transaction::Entity::update_many()
            .col_expr(
                transaction::Column::RefundedMinor,
                Expr::col(transaction::Column::RefundedMinor).add(amount),
            )
            .filter(transaction::Column::Id.eq(charge))
            .filter(
                Expr::col(transaction::Column::RefundedMinor)
                    .add(amount)
                    .lte(Expr::col(transaction::Column::AmountMinor)),
            )
            .exec(txn)
            .await?;
        Ok(done.rows_affected == 1)
    }

    /// Gives back `amount` of an entry's refunded total (a refund that did not happen).
    pub async fn sub_refunded<C: ConnectionTrait>(
        &self,
        txn: &C,
        entry: Uuid,
        amount: i64,
    ) -> Result<(), DbErr> {
        transaction::Entity::update_many()
            .col_expr(
                transaction::Column::RefundedMinor,
                Expr::col(transaction::Column::RefundedMinor).sub(amount),
            )
            .filter(transaction::Column::Id.eq(entry))
            .exec(txn)
            .await
            .map(drop)
    }

    /// Sets a pending entry's end (and the reason of a failure).
    pub async fn set_status<C: ConnectionTrait>(
        &self,
        txn: &C,
        entry: Uuid,
        status: Status,
        failure_reason: &str,
    ) -> Result<(), DbErr> {
        transaction::Entity::update_many()
            .col_expr(transaction::Column::Status, Expr::value(status))
            .col_expr(transaction::Column::FailureReason, Expr::value(failure_reason))
            .filter(transaction::Column::Id.eq(entry))
            .exec(txn)
            .await
            .map(drop)
    }

    /// Takes `amount` from an account, only if it may go negative or covers it; whether it
    /// did. A conditional update: a wallet never goes below zero, whatever runs beside it.
    pub async fn debit<C: ConnectionTrait>(
        &self,
        txn: &C,
        key: &str,
        amount: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, DbErr> {
        let debited = account::Entity::update_many()
            .col_expr(
                account::Column::BalanceMinor,
                Expr::col(account::Column::BalanceMinor).sub(amount),
            )
            .col_expr(account::Column::UpdatedAt, Expr::value(now))
            .filter(account::Column::Key.eq(key))
            .filter(
                Condition::any()
                    .add(account::Column::AllowNegative.eq(true))
                    .add(account::Column::BalanceMinor.gte(amount)),
            )
            .exec(txn)
            .await?;
        Ok(debited.rows_affected == 1)
    }

    pub async fn credit<C: ConnectionTrait>(
        &self,
        txn: &C,
        key: &str,
        amount: i64,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        account::Entity::update_many()
            .col_expr(
                account::Column::BalanceMinor,
                Expr::col(account::Column::BalanceMinor).add(amount),
            )
            .col_expr(account::Column::UpdatedAt, Expr::value(now))
            .filter(account::Column::Key.eq(key))
            .exec(txn)
            .await
            .map(drop)
    }

    /// The movement's two postings (`from` −amount, `to` +amount).
    pub async fn post<C: ConnectionTrait>(
        &self,
        txn: &C,
        entry: Uuid,
        from: &str,
        to: &str,
        amount: i64,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        for (key, amount) in [(from, -amount), (to, amount)] {
            posting::ActiveModel {
                id: Set(Uuid::now_v7()),
                transaction_id: Set(entry),
                account_key: Set(key.to_owned()),
                amount_minor: Set(amount),
                created_at: Set(now),
            }
            .insert(txn)
            .await?;
        }
        Ok(())
    }

    /// Stamps an entry with its wallet's balance after the movement; the entry as stored.
    pub async fn stamp_balance<C: ConnectionTrait>(
        &self,
        txn: &C,
        entry: Uuid,
        wallet: &str,
    ) -> Result<transaction::Model, DbErr> {
        let after = account::Entity::find_by_id(wallet.to_owned())
            .one(txn)
            .await?
            .map_or(0, |a| a.balance_minor);
        transaction::Entity::update_many()
            .col_expr(transaction::Column::BalanceAfterMinor, Expr::value(after))
            .filter(transaction::Column::Id.eq(entry))
            .exec(txn)
            .await?;
        transaction::Entity::find_by_id(entry)
            .one(txn)
            .await?
            .ok_or(DbErr::RecordNotFound("the entry just written".into()))
    }

    pub async fn all_postings(&self) -> Result<Vec<posting::Model>, DbErr> {
        posting::Entity::find().all(&self.db).await
    }

    pub async fn all_accounts(&self) -> Result<Vec<account::Model>, DbErr> {
        account::Entity::find().all(&self.db).await
    }

    /// Users' wallets with money in a currency other than `currency`: how many, and how much,
    /// per currency.
    pub async fn wallets_outside(&self, currency: &str) -> Result<Vec<(String, i64, i64)>, DbErr> {
        account::Entity::find()
            .select_only()
            .column(account::Column::Currency)
            .column_as(Expr::cust("CAST(COUNT(*) AS BIGINT)"), "wallets")
            .column_as(Expr::cust("CAST(SUM(balance_minor) AS BIGINT)"), "total")
            .filter(account::Column::UserId.is_not_null())
            .filter(account::Column::Currency.ne(currency))
            .filter(account::Column::BalanceMinor.gt(0))
            .group_by(account::Column::Currency)
            .order_by_asc(account::Column::Currency)
            .into_tuple()
            .all(&self.db)
            .await
    }

    /// The user's wallets, one per currency.
    pub async fn wallets(&self, user: Uuid) -> Result<Vec<account::Model>, DbErr> {
        account::Entity::find()
            .filter(account::Column::UserId.eq(user))
            .order_by_asc(account::Column::Currency)
            .all(&self.db)
            .await
    }
}
