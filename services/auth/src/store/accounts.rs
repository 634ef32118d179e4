//! Every statement on auth's tables: `auth_users`, `auth_email_tokens` (verification and
//! reset links, by hash), `auth_sessions` (refresh families) and `auth_refresh_tokens`.
//! Statements that belong to a transaction the rules opened take its connection (`txn`).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, Set, TransactionTrait, sea_query::Expr,
};
use uuid::Uuid;

use super::entities::{email_token, refresh_token, session, user};

/// The profile fields to set (validated); `None` leaves one as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange<'a> {
    pub name: Option<String>,
    pub locale: Option<&'a str>,
    pub time_zone: Option<String>,
}

/// What a session records about the client that signs in or refreshes.
#[derive(Clone, Copy)]
pub struct Client<'a> {
    pub ip: &'a str,
    pub user_agent: &'a str,
}

#[derive(Clone)]
pub struct AccountStore {
    db: DatabaseConnection,
}

impl AccountStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    // ---- users --------------------------------------------------------------------------

    pub async fn user(&self, id: Uuid) -> Result<Option<user::Model>, DbErr> {
        user::Entity::find_by_id(id).one(&self.db).await
    }

    /// Accounts whose email or name contains `query` (lower-case; empty = any), newest first
    /// (ids are UUID v7), older than `before`, at most `limit`.
    pub async fn search_users(
        &self,
        query: &str,
        active: Option<bool>,
        admins_only: bool,
        before: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<user::Model>, DbErr> {
        use sea_orm::{
            Condition, QuerySelect,
            sea_query::{ExprTrait as _, Func, LikeExpr},
        };
        let mut cond = Condition::all();
        if !query.is_empty() {
            // The text as typed: `%` and `_` are themselves, not wildcards.
            let escaped = query.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            let like = || LikeExpr::new(format!("%{escaped}%")).escape('\\');
            cond = cond.add(
                Condition::any()
                    .add(Expr::col(user::Column::Email).like(like()))
                    .add(Expr::expr(Func::lower(Expr::col(user::Column::Name))).like(like())),
            );
        }
        if let Some(a) = active {
            cond = cond.add(user::Column::IsActive.eq(a));
        }
        if admins_only {
            cond = cond.add(user::Column::Scopes.contains("admin"));
        }
        if let Some(b) = before {
            cond = cond.add(user::Column::Id.lt(b));
        }
        user::Entity::find()
            .filter(cond)
            .order_by_desc(user::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Locks account `id` in `txn` for an administrator's change and reads it — with every
    /// admin's row, so two admins revoking each other at once are serialised and cannot leave
    /// none. PostgreSQL: row locks in id order (two such changes never deadlock); SQLite: the
    /// first write takes the database's write lock.
    pub async fn lock_for_admin_change<C: ConnectionTrait>(
        &self,
        txn: &C,
        id: Uuid,
    ) -> Result<Option<user::Model>, DbErr> {
        use sea_orm::{Condition, QuerySelect};
        if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
            user::Entity::find()
                .filter(
                    Condition::any()
                        .add(user::Column::Id.eq(id))
                        .add(user::Column::Scopes.contains("admin")),
                )
                .order_by_asc(user::Column::Id)
                .lock_exclusive()
                .all(txn)
                .await?;
        } else {
            user::Entity::update_many()
                .col_expr(user::Column::Id, Expr::col(user::Column::Id))
                .filter(user::Column::Id.eq(id))
                .exec(txn)
                .await?;
        }
        user::Entity::find_by_id(id).one(txn).await
    }

    /// Active accounts whose scopes mention `admin` (the caller checks the exact scope).
    pub async fn active_admins<C: ConnectionTrait>(
        &self,
        txn: &C,
    ) -> Result<Vec<user::Model>, DbErr> {
        user::Entity::find()
            .filter(user::Column::Scopes.contains("admin"))
            .filter(user::Column::IsActive.eq(true))
            .all(txn)
            .await
    }

    /// Sets an account's state and scopes in `txn`.
    pub async fn set_access<C: ConnectionTrait>(
        &self,
        txn: &C,
        id: Uuid,
        active: bool,
        scopes: &str,
        at: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        user::Entity::update_many()
            .col_expr(user::Column::IsActive, Expr::value(active))
            .col_expr(user::Column::Scopes, Expr::value(scopes))
            .col_expr(user::Column::UpdatedAt, Expr::value(at))
            .filter(user::Column::Id.eq(id))
            .exec(txn)
            .await
            .map(drop)
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<user::Model>, DbErr> {
        user::Entity::find().filter(user::Column::Email.eq(email)).one(&self.db).await
    }

    /// A new account (a unique violation: the address has one).
    pub async fn insert_user<C: ConnectionTrait>(
        &self,
        txn: &C,
        u: user::Model,
    ) -> Result<user::Model, DbErr> {
        user::ActiveModel::from(u).insert(txn).await
    }

    /// Sets what `change` holds, in the caller's transaction; the row as it is now, `None`
    /// when there is no such account.
    pub async fn update_profile<C: ConnectionTrait>(
        &self,
        txn: &C,
        id: Uuid,
        change: &ProfileChange<'_>,
    ) -> Result<Option<user::Model>, DbErr> {
        let mut q = user::Entity::update_many()
            .col_expr(user::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(user::Column::Id.eq(id));
        if let Some(name) = &change.name {
            q = q.col_expr(user::Column::Name, Expr::value(name.clone()));
        }
        if let Some(locale) = change.locale {
            q = q.col_expr(user::Column::Locale, Expr::value(locale));
        }
        if let Some(tz) = &change.time_zone {
            q = q.col_expr(user::Column::TimeZone, Expr::value(tz.clone()));
        }
        q.exec(txn).await?;
        user::Entity::find_by_id(id).one(txn).await
    }

    /// Moves the account to a confirmed new address, in the caller's transaction (a unique
    /// violation: the address has an account now); the row as it is now.
    pub async fn change_email<C: ConnectionTrait>(
        &self,
        txn: &C,
        id: Uuid,
        email: &str,
    ) -> Result<Option<user::Model>, DbErr> {
        user::Entity::update_many()
            .col_expr(user::Column::Email, Expr::value(email))
            .col_expr(user::Column::EmailVerified, Expr::value(true))
            .col_expr(user::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(user::Column::Id.eq(id))
            .exec(txn)
            .await?;
        user::Entity::find_by_id(id).one(txn).await
    }

    /// A deleted account, in the caller's transaction: the row keeps only its id (so it is
    /// never reused) under an address nobody has; its sessions, refresh tokens and emailed
    /// tokens go.
    pub async fn erase<C: ConnectionTrait>(&self, txn: &C, id: Uuid) -> Result<(), DbErr> {
        user::Entity::update_many()
            .col_expr(user::Column::Email, Expr::value(format!("{id}@deleted.invalid")))
            .col_expr(user::Column::Name, Expr::value(""))
            .col_expr(user::Column::PasswordHash, Expr::value(""))
            .col_expr(user::Column::EmailVerified, Expr::value(false))
            .col_expr(user::Column::Scopes, Expr::value(""))
            .col_expr(user::Column::IsActive, Expr::value(false))
            .col_expr(user::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(user::Column::Id.eq(id))
            .exec(txn)
            .await?;
        refresh_token::Entity::delete_many()
            .filter(refresh_token::Column::UserId.eq(id))
            .exec(txn)
            .await?;
        session::Entity::delete_many().filter(session::Column::UserId.eq(id)).exec(txn).await?;
        email_token::Entity::delete_many()
            .filter(email_token::Column::UserId.eq(id))
            .exec(txn)
            .await?;
        Ok(())
    }

    pub async fn set_tier(&self, id: Uuid, tier: &str) -> Result<(), DbErr> {
        self.update_user(id, user::Column::Tier, tier).await
    }

    pub async fn set_email_verified(&self, id: Uuid) -> Result<(), DbErr> {
        self.update_user(id, user::Column::EmailVerified, true).await
    }

    async fn update_user(
        &self,
        id: Uuid,
        column: user::Column,
        value: impl Into<sea_orm::Value>,
    ) -> Result<(), DbErr> {
        user::Entity::update_many()
            .col_expr(column, Expr::value(value))
            .col_expr(user::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(user::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// Sets the password hash and, in the same transaction, spends every reset link still
    /// out: a link mailed before a reset or a change must not set the password again.
    pub async fn set_password(&self, id: Uuid, hash: String) -> Result<(), DbErr> {
        let t = Utc::now();
        let txn = self.db.begin().await?;
        user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(hash))
            .col_expr(user::Column::UpdatedAt, Expr::value(t))
            .filter(user::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        email_token::Entity::update_many()
            .col_expr(email_token::Column::UsedAt, Expr::value(t))
            .filter(email_token::Column::UserId.eq(id))
            .filter(email_token::Column::Kind.eq("reset"))
            .filter(email_token::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        txn.commit().await
    }

    // ---- emailed tokens -----------------------------------------------------------------

    pub async fn insert_email_token(
        &self,
        user: Uuid,
        kind: &str,
        token_hash: String,
        expires_at: DateTime<Utc>,
        new_email: Option<String>,
    ) -> Result<(), DbErr> {
        email_token::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user),
            kind: Set(kind.into()),
            token_hash: Set(token_hash),
            created_at: Set(Utc::now()),
            expires_at: Set(expires_at),
            used_at: Set(None),
            new_email: Set(new_email),
        }
        .insert(&self.db)
        .await
        .map(drop)
    }

    pub async fn email_token(
        &self,
        token_hash: &str,
        kind: &str,
    ) -> Result<Option<email_token::Model>, DbErr> {
        email_token::Entity::find()
            .filter(email_token::Column::TokenHash.eq(token_hash))
            .filter(email_token::Column::Kind.eq(kind))
            .one(&self.db)
            .await
    }

    /// Spends an emailed token; whether this call did (not one before it).
    pub async fn spend_email_token(&self, id: Uuid) -> Result<bool, DbErr> {
        let spent = email_token::Entity::update_many()
            .col_expr(email_token::Column::UsedAt, Expr::value(Utc::now()))
            .filter(email_token::Column::Id.eq(id))
            .filter(email_token::Column::UsedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(spent.rows_affected == 1)
    }

    // ---- sessions and refresh tokens ----------------------------------------------------

    /// A new session with its first refresh token, together.
    /// A new session and its first refresh token, in the caller's transaction (which also
    /// holds the sign-in's `user.logged_in`).
    pub async fn start_session<C: ConnectionTrait>(
        &self,
        txn: &C,
        id: Uuid,
        user: Uuid,
        client: Client<'_>,
        refresh_hash: String,
        expires_at: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        let t = Utc::now();
        session::ActiveModel {
            id: Set(id),
            user_id: Set(user),
            user_agent: Set(client.user_agent.to_owned()),
            ip: Set(client.ip.to_owned()),
            created_at: Set(t),
            last_used_at: Set(t),
            expires_at: Set(expires_at),
            revoked_at: Set(None),
        }
        .insert(txn)
        .await?;
        Self::insert_refresh(txn, id, user, refresh_hash, t, expires_at).await
    }

    async fn insert_refresh<C: ConnectionTrait>(
        txn: &C,
        session: Uuid,
        user: Uuid,
        hash: String,
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        refresh_token::ActiveModel {
            id: Set(Uuid::now_v7()),
            session_id: Set(session),
            user_id: Set(user),
            token_hash: Set(hash),
            created_at: Set(at),
            expires_at: Set(expires_at),
            used_at: Set(None),
        }
        .insert(txn)
        .await
        .map(drop)
    }

    pub async fn refresh_token(&self, hash: &str) -> Result<Option<refresh_token::Model>, DbErr> {
        refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(hash))
            .one(&self.db)
            .await
    }

    pub async fn session(&self, id: Uuid) -> Result<Option<session::Model>, DbErr> {
        session::Entity::find_by_id(id).one(&self.db).await
    }

    /// Spends refresh token `spent` for `next` and moves its session on — only if `spent` was
    /// unused: exactly one refresh wins. Whether this call did.
    pub async fn rotate(
        &self,
        spent: &refresh_token::Model,
        next_hash: String,
        client: Client<'_>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, DbErr> {
        let t = Utc::now();
        let txn = self.db.begin().await?;
        let claimed = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::UsedAt, Expr::value(t))
            .filter(refresh_token::Column::Id.eq(spent.id))
            .filter(refresh_token::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        if claimed.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        Self::insert_refresh(&txn, spent.session_id, spent.user_id, next_hash, t, expires_at)
            .await?;
        session::Entity::update_many()
            .col_expr(session::Column::LastUsedAt, Expr::value(t))
            .col_expr(session::Column::ExpiresAt, Expr::value(expires_at))
            .col_expr(session::Column::Ip, Expr::value(client.ip))
            .col_expr(session::Column::UserAgent, Expr::value(client.user_agent))
            .filter(session::Column::Id.eq(spent.session_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Marks the user's sessions among `ids` revoked.
    pub async fn revoke_sessions(&self, user: Uuid, ids: &[Uuid]) -> Result<(), DbErr> {
        session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
            .filter(session::Column::Id.is_in(ids.to_vec()))
            .filter(session::Column::UserId.eq(user))
            .filter(session::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// Sessions revoked after `since`, with their accounts (to put their markers back).
    pub async fn sessions_revoked_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Uuid, Uuid)>, DbErr> {
        Ok(session::Entity::find()
            .filter(session::Column::RevokedAt.gt(since))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|s| (s.id, s.user_id))
            .collect())
    }

    /// Every deactivated account.
    pub async fn inactive_users(&self) -> Result<Vec<Uuid>, DbErr> {
        Ok(user::Entity::find()
            .filter(user::Column::IsActive.eq(false))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|u| u.id)
            .collect())
    }

    /// The user's sessions not revoked (expired ones too).
    pub async fn unrevoked_sessions(&self, user: Uuid) -> Result<Vec<session::Model>, DbErr> {
        session::Entity::find()
            .filter(session::Column::UserId.eq(user))
            .filter(session::Column::RevokedAt.is_null())
            .all(&self.db)
            .await
    }

    /// The user's live sessions, most recently used first.
    pub async fn live_sessions(&self, user: Uuid) -> Result<Vec<session::Model>, DbErr> {
        session::Entity::find()
            .filter(session::Column::UserId.eq(user))
            .filter(session::Column::RevokedAt.is_null())
            .filter(session::Column::ExpiresAt.gt(Utc::now()))
            .order_by_desc(session::Column::LastUsedAt)
            .all(&self.db)
            .await
    }
}
