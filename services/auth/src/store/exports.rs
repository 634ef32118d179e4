//! Every statement on the data-export tables: `auth_data_exports` (one row per export; at most
//! one `preparing` per user, by a partial unique index, and asks of one person serialised) and `auth_data_export_chunks` (a ready
//! archive's bytes, in order). A claim is a compare-and-set on `attempts`, so replicas never
//! prepare one export at once and a replica that lost its claim cannot finish it.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait, sea_query::Expr,
};
use uuid::Uuid;

use super::entities::{data_export as export, data_export_chunk as chunk};

pub const PREPARING: &str = "preparing";
pub const READY: &str = "ready";
pub const FAILED: &str = "failed";

#[derive(Clone)]
pub struct ExportStore {
    db: DatabaseConnection,
}

impl ExportStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// A new export for `user` — or the one being prepared, or one made less than `fresh` ago
    /// (asking twice is one operation). Asks of one person are serialised: the transaction
    /// first writes the person's account row, which locks it (PostgreSQL) or takes the write
    /// lock (SQLite) until it commits — so an ask cannot miss an export that another ask
    /// created and a replica finished in between.
    pub async fn start(
        &self,
        user: Uuid,
        now: DateTime<Utc>,
        fresh: chrono::Duration,
    ) -> Result<export::Model, DbErr> {
        let txn = self.db.begin().await?;
        super::entities::user::Entity::update_many()
            .col_expr(
                super::entities::user::Column::Id,
                Expr::col(super::entities::user::Column::Id),
            )
            .filter(super::entities::user::Column::Id.eq(user))
            .exec(&txn)
            .await?;
        let current = export::Entity::find()
            .filter(export::Column::UserId.eq(user))
            .filter(
                Condition::any().add(export::Column::Status.eq(PREPARING)).add(
                    Condition::all()
                        .add(export::Column::Status.eq(READY))
                        .add(export::Column::ReadyAt.gt(now - fresh)),
                ),
            )
            .order_by_desc(export::Column::Id)
            .one(&txn)
            .await?;
        if let Some(e) = current {
            txn.commit().await?;
            return Ok(e);
        }
        let row = export::Model {
            id: Uuid::now_v7(),
            user_id: user,
            status: PREPARING.into(),
            created_at: now,
            updated_at: now,
            lease_until: now,
            attempts: 0,
            ready_at: None,
            expires_at: None,
            size_bytes: 0,
            error: String::new(),
        };
        export::Entity::insert(export::ActiveModel::from(row.clone()))
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(row)
    }

    /// The user's exports that are not expired at `now`, newest first.
    pub async fn of_user(
        &self,
        user: Uuid,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<export::Model>, DbErr> {
        export::Entity::find()
            .filter(export::Column::UserId.eq(user))
            .filter(
                Condition::any()
                    .add(export::Column::ExpiresAt.is_null())
                    .add(export::Column::ExpiresAt.gt(now)),
            )
            .order_by_desc(export::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<export::Model>, DbErr> {
        export::Entity::find_by_id(id).one(&self.db).await
    }

    /// Takes the export waiting longest whose lease has run out, for `lease`: `None` when there
    /// is none (or another replica took it first).
    pub async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Option<export::Model>, DbErr> {
        let Some(mut row) = export::Entity::find()
            .filter(export::Column::Status.eq(PREPARING))
            .filter(export::Column::LeaseUntil.lte(now))
            .order_by_asc(export::Column::LeaseUntil)
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let taken = export::Entity::update_many()
            .col_expr(export::Column::Attempts, Expr::value(row.attempts + 1))
            .col_expr(export::Column::LeaseUntil, Expr::value(now + lease))
            .col_expr(export::Column::UpdatedAt, Expr::value(now))
            .filter(export::Column::Id.eq(row.id))
            .filter(export::Column::Status.eq(PREPARING))
            .filter(export::Column::Attempts.eq(row.attempts))
            .exec(&self.db)
            .await?
            .rows_affected
            == 1;
        row.attempts += 1;
        row.lease_until = now + lease;
        Ok(taken.then_some(row))
    }

    /// Drops what an earlier attempt of the export wrote.
    pub async fn clear_chunks(&self, id: Uuid) -> Result<(), DbErr> {
        chunk::Entity::delete_many().filter(chunk::Column::ExportId.eq(id)).exec(&self.db).await?;
        Ok(())
    }

    pub async fn put_chunk(&self, id: Uuid, seq: i32, data: Vec<u8>) -> Result<(), DbErr> {
        let row = chunk::ActiveModel { export_id: Set(id), seq: Set(seq), data: Set(data) };
        chunk::Entity::insert(row).exec_without_returning(&self.db).await.map(drop)
    }

    /// Chunk `seq` of an export's archive.
    pub async fn chunk(&self, id: Uuid, seq: i32) -> Result<Option<Vec<u8>>, DbErr> {
        Ok(chunk::Entity::find_by_id((id, seq)).one(&self.db).await?.map(|c| c.data))
    }

    /// Marks claim `attempts` of export `id` done; false when the claim was lost.
    pub async fn ready(
        &self,
        id: Uuid,
        attempts: i32,
        size: i64,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<bool, DbErr> {
        self.settle(id, attempts, |q| {
            q.col_expr(export::Column::Status, Expr::value(READY))
                .col_expr(export::Column::SizeBytes, Expr::value(size))
                .col_expr(export::Column::ReadyAt, Expr::value(now))
                .col_expr(export::Column::ExpiresAt, Expr::value(expires))
                .col_expr(export::Column::UpdatedAt, Expr::value(now))
        })
        .await
    }

    /// Leaves claim `attempts` of export `id` to be tried again after `until` (`None`: never —
    /// it failed for good).
    pub async fn give_back(
        &self,
        id: Uuid,
        attempts: i32,
        until: Option<DateTime<Utc>>,
        error: &str,
    ) -> Result<bool, DbErr> {
        let error: String = error.chars().take(500).collect();
        let now = Utc::now();
        self.settle(id, attempts, |q| {
            let q = q
                .col_expr(export::Column::Error, Expr::value(error))
                .col_expr(export::Column::UpdatedAt, Expr::value(now));
            match until {
                Some(t) => q.col_expr(export::Column::LeaseUntil, Expr::value(t)),
                None => q.col_expr(export::Column::Status, Expr::value(FAILED)).col_expr(
                    export::Column::ExpiresAt,
                    Expr::value(now + chrono::Duration::days(1)),
                ),
            }
        })
        .await
    }

    async fn settle(
        &self,
        id: Uuid,
        attempts: i32,
        set: impl FnOnce(sea_orm::UpdateMany<export::Entity>) -> sea_orm::UpdateMany<export::Entity>,
    ) -> Result<bool, DbErr> {
        let q = export::Entity::update_many()
            .filter(export::Column::Id.eq(id))
            .filter(export::Column::Status.eq(PREPARING))
            .filter(export::Column::Attempts.eq(attempts));
        Ok(set(q).exec(&self.db).await?.rows_affected == 1)
    }

    /// Deletes exports (and their archives) that expired before `now`; how many.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<u64, DbErr> {
        let gone: Vec<Uuid> = export::Entity::find()
            .select_only()
            .column(export::Column::Id)
            .filter(export::Column::ExpiresAt.lte(now))
            .limit(100)
            .into_tuple()
            .all(&self.db)
            .await?;
        self.delete(&self.db, &gone).await?;
        Ok(gone.len() as u64)
    }

    /// A deleted account's exports, in the caller's transaction.
    pub async fn forget_user<C: ConnectionTrait>(&self, txn: &C, user: Uuid) -> Result<(), DbErr> {
        let ids: Vec<Uuid> = export::Entity::find()
            .select_only()
            .column(export::Column::Id)
            .filter(export::Column::UserId.eq(user))
            .into_tuple()
            .all(txn)
            .await?;
        self.delete(txn, &ids).await
    }

    async fn delete<C: ConnectionTrait>(&self, txn: &C, ids: &[Uuid]) -> Result<(), DbErr> {
        if ids.is_empty() {
            return Ok(());
        }
        chunk::Entity::delete_many()
            .filter(chunk::Column::ExportId.is_in(ids.iter().copied()))
            .exec(txn)
            .await?;
        export::Entity::delete_many()
            .filter(export::Column::Id.is_in(ids.iter().copied()))
            .exec(txn)
            .await?;
        Ok(())
    }
}
