//! Every statement on `auth_api_keys`: a person's keys (at most a configured number, their
//! creations serialised per person), found by the hash of the secret.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, TransactionTrait, sea_query::Expr,
};
use uuid::Uuid;

use super::entities::{api_key, user};

/// How stale `last_used_at` may be before a use writes it again.
const TOUCH_EVERY: Duration = Duration::minutes(1);

#[derive(Clone)]
pub struct ApiKeyStore {
    db: DatabaseConnection,
}

impl ApiKeyStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Stores `key` unless its owner holds `max` keys already (`None`). One person's creations
    /// are serialised — the transaction first writes their account row, which locks it
    /// (PostgreSQL) or takes the write lock (SQLite) — so two at once cannot both pass the
    /// count.
    pub async fn create(
        &self,
        key: api_key::Model,
        max: u64,
    ) -> Result<Option<api_key::Model>, DbErr> {
        let txn = self.db.begin().await?;
        user::Entity::update_many()
            .col_expr(user::Column::Id, Expr::col(user::Column::Id))
            .filter(user::Column::Id.eq(key.user_id))
            .exec(&txn)
            .await?;
        let held = api_key::Entity::find()
            .filter(api_key::Column::UserId.eq(key.user_id))
            .count(&txn)
            .await?;
        if held >= max {
            txn.rollback().await?;
            return Ok(None);
        }
        let key = api_key::ActiveModel::from(key).insert(&txn).await?;
        txn.commit().await?;
        Ok(Some(key))
    }

    /// `user`'s keys, newest first.
    pub async fn list(&self, user: Uuid) -> Result<Vec<api_key::Model>, DbErr> {
        api_key::Entity::find()
            .filter(api_key::Column::UserId.eq(user))
            .order_by_desc(api_key::Column::CreatedAt)
            .order_by_desc(api_key::Column::Id)
            .all(&self.db)
            .await
    }

    /// Deletes `user`'s key `id`; whether there was one.
    pub async fn delete(&self, user: Uuid, id: Uuid) -> Result<bool, DbErr> {
        let done = api_key::Entity::delete_many()
            .filter(api_key::Column::Id.eq(id))
            .filter(api_key::Column::UserId.eq(user))
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected > 0)
    }

    /// Every key of `user`, in the caller's transaction (the account's deletion).
    pub async fn forget_user<C: ConnectionTrait>(&self, txn: &C, user: Uuid) -> Result<(), DbErr> {
        api_key::Entity::delete_many().filter(api_key::Column::UserId.eq(user)).exec(txn).await?;
        Ok(())
    }

    /// The key whose secret hashes to `hash`, and its owner's account.
    pub async fn find(&self, hash: &str) -> Result<Option<(api_key::Model, user::Model)>, DbErr> {
        let Some(key) = api_key::Entity::find()
            .filter(api_key::Column::SecretHash.eq(hash))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        Ok(user::Entity::find_by_id(key.user_id).one(&self.db).await?.map(|u| (key, u)))
    }

    /// Records a use of key `id` at `now`, unless one was recorded less than a minute ago (a
    /// busy key costs one write a minute, not one per request).
    pub async fn touch(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), DbErr> {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(now))
            .filter(api_key::Column::Id.eq(id))
            .filter(
                Condition::any()
                    .add(api_key::Column::LastUsedAt.is_null())
                    .add(api_key::Column::LastUsedAt.lt(now - TOUCH_EVERY)),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
