//! Every statement on `notification_push_subscriptions`: the browsers a user's notifications
//! are pushed to.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    sea_query::{Expr, OnConflict},
};
use uuid::Uuid;

use super::push_subscription as row;

#[derive(Clone)]
pub struct PushStore {
    db: DatabaseConnection,
}

impl PushStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Files a subscription; the same endpoint again (the browser renewed its keys, or another
    /// account signed in on it) replaces the row's owner, keys and dates. The stored row.
    pub async fn upsert(&self, r: row::Model) -> Result<row::Model, DbErr> {
        let endpoint = r.endpoint.clone();
        row::Entity::insert(row::ActiveModel::from(r))
            .on_conflict(
                OnConflict::column(row::Column::Endpoint)
                    .update_columns([
                        row::Column::UserId,
                        row::Column::P256dh,
                        row::Column::Auth,
                        row::Column::CreatedAt,
                        row::Column::ExpiresAt,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await?;
        row::Entity::find()
            .filter(row::Column::Endpoint.eq(endpoint))
            .one(&self.db)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("the push subscription just stored".into()))
    }

    /// The user's subscriptions, newest first.
    pub async fn of_user(&self, user: Uuid) -> Result<Vec<row::Model>, DbErr> {
        row::Entity::find()
            .filter(row::Column::UserId.eq(user))
            .order_by_desc(row::Column::CreatedAt)
            .order_by_desc(row::Column::Id)
            .all(&self.db)
            .await
    }

    /// The subscriptions of each of `users`.
    pub async fn of_users(&self, users: &[Uuid]) -> Result<Vec<row::Model>, DbErr> {
        row::Entity::find()
            .filter(row::Column::UserId.is_in(users.iter().copied()))
            .all(&self.db)
            .await
    }

    /// Deletes the user's subscription `id`; whether there was one.
    pub async fn delete(&self, user: Uuid, id: Uuid) -> Result<bool, DbErr> {
        let n = row::Entity::delete_many()
            .filter(row::Column::UserId.eq(user))
            .filter(row::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(n.rows_affected == 1)
    }

    /// Deletes subscriptions by id (gone from their push service, or the user's oldest).
    pub async fn delete_ids(&self, ids: Vec<Uuid>) -> Result<u64, DbErr> {
        if ids.is_empty() {
            return Ok(0);
        }
        let n =
            row::Entity::delete_many().filter(row::Column::Id.is_in(ids)).exec(&self.db).await?;
        Ok(n.rows_affected)
    }

    /// Notes that a push reached the subscription's push service at `at`.
    pub async fn delivered(&self, id: Uuid, at: DateTime<Utc>) -> Result<(), DbErr> {
        row::Entity::update_many()
            .col_expr(row::Column::LastDeliveredAt, Expr::value(at))
            .filter(row::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map(drop)
    }
}
