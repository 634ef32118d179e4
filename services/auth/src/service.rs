//! The auth service's behaviour, independent of gRPC: accounts, sessions (refresh families),
//! rotation with reuse detection, revocation, validation, email tokens and brute-force limits.
//!
//! Revocation state lives in the cache (Redis in production) so that ValidateToken answers from
//! one round trip:
//! - `auth:jwt:{jti}`   token metadata, TTL = the token's remaining life
//! - `auth:bl:{jti}`    a logged-out access token, TTL = its remaining life
//! - `auth:sid:{sid}`   a revoked session: its access tokens die with it
//! - `auth:rb:{user}`   "revoked before" (ms): tokens minted earlier are dead (log out everywhere)
//! - `auth:off:{user}`  the account is deactivated
//! - `auth:tier:{user}` / `auth:ev:{user}`  tier and email verification newer than a token

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, Set, SqlErr, TransactionTrait, sea_query::Expr,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use skillup_kit::{
    bus::SharedBus,
    cache::SharedCache,
    config::AuthConfig,
    mailer::{Email as Mail, SharedMailer},
    outbox::Outbox,
};
use skillup_proto::events::Event;
use uuid::Uuid;

use crate::{
    domain::{
        email::Email,
        password, secrets,
        tokens::{AccessClaims, LEEWAY_SECS, TokenError, TokenKeys},
    },
    error::{AuthError, Result},
    store::entities::{email_token, refresh_token, session, user},
};

/// Where a request came from (for sessions and per-IP limits).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

/// A validated caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: Uuid,
    pub email: String,
    pub scopes: Vec<String>,
    pub tier: String,
    pub email_verified: bool,
    pub jti: String,
    pub session_id: Uuid,
    pub expires_at: i64,
    /// The account's identity stamp (`auth:ver:{user}`); empty when never changed.
    pub version: String,
}

/// What a successful sign-in hands back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u32,
    pub refresh_expires_in: u32,
    /// A sign-in's device token (see [`Auth::login`]); empty on refreshes.
    #[serde(default)]
    pub device_token: String,
}

#[derive(Clone)]
pub struct Auth {
    pub(crate) db: DatabaseConnection,
    pub(crate) cache: SharedCache,
    pub(crate) bus: SharedBus,
    pub(crate) mailer: SharedMailer,
    pub(crate) keys: TokenKeys,
    pub(crate) cfg: AuthConfig,
    /// A real bcrypt hash at the configured cost, checked against for unknown emails so a
    /// login's timing does not reveal whether the account exists.
    dummy_hash: String,
    /// Recently read accounts for GetMe (the hottest call of a web front end), each under the
    /// identity stamp it was read with: every change to an account rewrites the stamp, so an
    /// entry is used only while nothing changed, and never for longer than `PROFILE_TTL`.
    profiles: Arc<RwLock<HashMap<Uuid, Profile>>>,
    /// `user.registered` waits here until the broker has it (the other events are about
    /// revocations and sign-ins kept in Redis, and are published directly, after the fact).
    outbox: Outbox,
}

/// How long a device that signed in stays known (see [`Auth::login`]).
const DEVICE_TTL: Duration = Duration::from_secs(90 * 86_400);

/// One cached account row: (identity stamp it was read under, when, the row).
type Profile = (String, Instant, user::Model);

/// Longest reuse of a cached account row.
const PROFILE_TTL: Duration = Duration::from_secs(30);
/// Most account rows kept.
const PROFILE_MAX: usize = 100_000;

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn invalid(field: &'static str, msg: impl Into<String>) -> AuthError {
    AuthError::Invalid(field, msg.into())
}

fn cache_err(e: skillup_kit::Error) -> AuthError {
    AuthError::Unavailable(e.to_string())
}

impl Auth {
    pub async fn new(
        db: DatabaseConnection,
        cache: SharedCache,
        bus: SharedBus,
        mailer: SharedMailer,
        keys: TokenKeys,
        cfg: AuthConfig,
    ) -> Result<Self> {
        let dummy_hash = password::hash(SecretString::from(secrets::new_token()), cfg.bcrypt_cost)
            .await
            .map_err(AuthError::Internal)?;
        let outbox = Outbox::new(db.clone(), bus.clone(), crate::store::OUTBOX);
        Ok(Self { db, cache, bus, mailer, keys, cfg, dummy_hash, profiles: Arc::default(), outbox })
    }

    /// The outbox of this service's `user.registered` events (its relay runs in
    /// [`crate::build`]).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.cfg.access_ttl_secs)
    }

    /// How long a per-token or per-session marker must live: longer than any access token.
    fn marker_ttl(&self) -> Duration {
        Duration::from_secs(self.cfg.access_ttl_secs + LEEWAY_SECS + 5)
    }

    // ---------- accounts ----------

    /// Creates an account and mails its confirmation link. An address that has an account
    /// already gets the same answer — a look-alike account, after the same password hashing —
    /// and its owner a note instead of a link (OWASP: registration never tells whether an
    /// address is registered). Tokens come from [`Auth::login`].
    pub async fn register(&self, email: &str, password: &str, name: &str) -> Result<user::Model> {
        let email = Email::parse(email).map_err(|m| invalid("email", m))?;
        let name = name.trim();
        if name.chars().count() > 100 {
            return Err(invalid("name", "name must be at most 100 characters"));
        }
        if name.chars().any(|c| c.is_control()) {
            return Err(invalid("name", "name cannot contain control characters"));
        }
        password::check_policy(password, self.cfg.password_min_chars)
            .map_err(|m| invalid("password", m))?;
        let hash = password::hash(SecretString::from(password.to_owned()), self.cfg.bcrypt_cost)
            .await
            .map_err(AuthError::Internal)?;
        let t = now();
        let model = user::ActiveModel {
            id: Set(Uuid::now_v7()),
            email: Set(email.as_str().to_owned()),
            name: Set(name.to_owned()),
            password_hash: Set(hash),
            email_verified: Set(false),
            tier: Set("free".into()),
            scopes: Set("user".into()),
            is_active: Set(true),
            created_at: Set(t),
            updated_at: Set(t),
        };
        // The unique index decides between concurrent registrations of one address; the
        // account and its `user.registered` (the notification service's contact) commit together.
        let txn = self.db.begin().await?;
        let user = match model.clone().insert(&txn).await {
            Ok(u) => u,
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                txn.rollback().await?;
                self.note_to_owner(email.as_str()).await?;
                return Ok(user::Model {
                    id: Uuid::now_v7(),
                    email: email.as_str().to_owned(),
                    name: name.to_owned(),
                    password_hash: String::new(),
                    email_verified: false,
                    tier: "free".into(),
                    scopes: "user".into(),
                    is_active: true,
                    created_at: t,
                    updated_at: t,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let msg =
            skillup_proto::auth::v1::UserRegistered { user: Some(crate::grpc::user_pb(&user)) };
        let id = format!("registered:{}", user.id);
        self.outbox.add(&txn, &id, &user.id.to_string(), &msg).await?;
        txn.commit().await?;
        self.outbox.wake();
        self.send_email_token(&user, "verify").await?;
        Ok(user)
    }

    /// Tells an address's owner that someone tried to register it (once per resend interval:
    /// repeated attempts cannot flood the owner's mailbox).
    async fn note_to_owner(&self, email: &str) -> Result<()> {
        let Some(owner) =
            user::Entity::find().filter(user::Column::Email.eq(email)).one(&self.db).await?
        else {
            return Ok(());
        };
        match self.throttle_mail(owner.id, "taken").await {
            Err(AuthError::Throttled(_)) => return Ok(()),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        let base = self.cfg.public_url.trim_end_matches('/');
        let body = format!(
            "Hello{},\n\nsomeone tried to create a SkillUp account with this address, which already has one. If it was you, sign in at {base}/ — or, if you forgot your password, reset it at {base}/reset-password.\n\nIf it was not you, nothing changed; you can ignore this email.\n",
            greeting(&owner)
        );
        let mail =
            Mail { to: owner.email.clone(), subject: "Your SkillUp account".to_owned(), body };
        self.mailer.send(mail).await.map_err(|e| AuthError::Unavailable(format!("mailer: {e}")))
    }

    /// Signs in. Failures are counted per account and client address, per address, and per
    /// account from anywhere (a softer limit); past each limit that key locks for a time that
    /// doubles. A device that signed in to the account before (its `device_token`, as OWASP's
    /// device cookies) counts only its own failures: nobody can lock an owner out by failing
    /// from elsewhere — and a client holding a refresh token never needs to sign in at all.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        device_token: &str,
        client: &ClientInfo,
    ) -> Result<(user::Model, Issued)> {
        if password.is_empty() {
            return Err(invalid("password", "password is required"));
        }
        let email = Email::parse(email).map_err(|m| invalid("email", m))?;
        let device = self.known_device(email.as_str(), device_token).await?;
        let cfg = &self.cfg;
        let counters: Vec<(String, u32)> = match &device {
            Some(hash) => vec![(format!("dev:{hash}"), cfg.max_failures_per_account)],
            None => vec![
                (format!("pair:{}:{}", email.as_str(), client.ip), cfg.max_failures_per_account),
                (format!("ip:{}", client.ip), cfg.max_failures_per_ip),
                (format!("acct:{}", email.as_str()), cfg.max_failures_per_account_total),
            ],
        };
        self.refuse_if_locked(&counters).await?;

        let found = user::Entity::find()
            .filter(user::Column::Email.eq(email.as_str()))
            .one(&self.db)
            .await?;
        let secret = SecretString::from(password.to_owned());
        let ok = match &found {
            Some(u) => password::verify(secret, u.password_hash.clone()).await,
            None => {
                let _ = password::verify(secret, self.dummy_hash.clone()).await;
                false
            }
        };
        let Some(user) = found.filter(|_| ok) else {
            self.count_failures(&counters).await?;
            return Err(AuthError::InvalidCredentials);
        };
        if !user.is_active {
            return Err(AuthError::Forbidden("this account is deactivated"));
        }
        // The owner is in: this device's (or pair's) failures and the account's are forgiven.
        let account = format!("acct:{}", email.as_str());
        for who in [counters[0].0.as_str(), account.as_str()] {
            self.cache.delete(&format!("auth:fail:{who}")).await.map_err(cache_err)?;
        }
        let mut issued = self.start_session(&user, client).await?;
        issued.device_token =
            self.know_device(email.as_str(), device.map(|_| device_token)).await?;
        self.emit(
            &user.id,
            &skillup_proto::auth::v1::UserLoggedIn {
                user_id: user.id.to_string(),
                session_id: issued.session_id.to_string(),
                ip: client.ip.clone(),
                user_agent: client.user_agent.clone(),
            },
        )
        .await;
        Ok((user, issued))
    }

    /// The hash of `token` when it is a device token of `email`.
    async fn known_device(&self, email: &str, token: &str) -> Result<Option<String>> {
        if !secrets::looks_like_token(token) {
            return Ok(None);
        }
        let hash = secrets::hash(token);
        let owner = self.cache.get(&format!("auth:dev:{hash}")).await.map_err(cache_err)?;
        Ok(owner.filter(|o| o.as_ref() == email.as_bytes()).map(|_| hash))
    }

    /// Remembers a device of `email` for [`DEVICE_TTL`] more: the one it already had, or a
    /// new one. Returns its token.
    async fn know_device(&self, email: &str, known: Option<&str>) -> Result<String> {
        let token = known.map_or_else(secrets::new_token, str::to_owned);
        let key = format!("auth:dev:{}", secrets::hash(&token));
        let owner = Bytes::copy_from_slice(email.as_bytes());
        self.cache.set(&key, owner, Some(DEVICE_TTL)).await.map_err(cache_err)?;
        Ok(token)
    }

    async fn refuse_if_locked(&self, counters: &[(String, u32)]) -> Result<()> {
        for (who, _) in counters {
            let key = format!("auth:lock:{who}");
            if let Some(Some(left)) = self.cache.ttl(&key).await.map_err(cache_err)? {
                return Err(AuthError::Throttled(left.as_secs().max(1)));
            }
        }
        Ok(())
    }

    /// Counts a failure on every counter (atomic increments, exact under parallel attempts);
    /// past its limit, a counter's key locks for a time that doubles with every further failure.
    async fn count_failures(&self, counters: &[(String, u32)]) -> Result<()> {
        let window = Some(Duration::from_secs(self.cfg.failure_window_secs));
        for (who, max) in counters {
            let n =
                self.cache.incr(&format!("auth:fail:{who}"), 1, window).await.map_err(cache_err)?;
            if n >= i64::from(*max) {
                let over = (n - i64::from(*max)).clamp(0, 20) as u32;
                let secs = self
                    .cfg
                    .lockout_base_secs
                    .saturating_mul(1u64 << over)
                    .min(self.cfg.lockout_max_secs);
                self.cache
                    .set(
                        &format!("auth:lock:{who}"),
                        Bytes::from_static(b"1"),
                        Some(Duration::from_secs(secs)),
                    )
                    .await
                    .map_err(cache_err)?;
                let kind = who.split(':').next().unwrap_or_default();
                tracing::warn!(
                    kind,
                    failures = n,
                    lock_secs = secs,
                    "login locked after repeated failures"
                );
            }
        }
        Ok(())
    }

    pub async fn user(&self, id: Uuid) -> Result<user::Model> {
        user::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(AuthError::NotFound("no such account"))
    }

    /// The account as of identity stamp `version` (see `profiles`).
    pub async fn profile(&self, id: Uuid, version: &str) -> Result<user::Model> {
        if let Some((v, at, user)) = self.profiles.read().expect("profiles lock").get(&id)
            && v == version
            && at.elapsed() < PROFILE_TTL
        {
            return Ok(user.clone());
        }
        let user = self.user(id).await?;
        let mut map = self.profiles.write().expect("profiles lock");
        if map.len() >= PROFILE_MAX {
            map.retain(|_, (_, at, _)| at.elapsed() < PROFILE_TTL);
            if map.len() >= PROFILE_MAX {
                map.clear();
            }
        }
        map.insert(id, (version.to_owned(), Instant::now(), user.clone()));
        Ok(user)
    }

    // ---------- sessions and tokens ----------

    async fn start_session(&self, user: &user::Model, client: &ClientInfo) -> Result<Issued> {
        let t = now();
        let refresh_ttl = chrono::Duration::seconds(self.cfg.refresh_ttl_secs as i64);
        let sid = Uuid::now_v7();
        let refresh = secrets::new_token();
        let txn = self.db.begin().await?;
        session::ActiveModel {
            id: Set(sid),
            user_id: Set(user.id),
            user_agent: Set(truncate(&client.user_agent, 512)),
            ip: Set(truncate(&client.ip, 64)),
            created_at: Set(t),
            last_used_at: Set(t),
            expires_at: Set(t + refresh_ttl),
            revoked_at: Set(None),
        }
        .insert(&txn)
        .await?;
        insert_refresh(&txn, sid, user.id, &refresh, t, t + refresh_ttl).await?;
        txn.commit().await?;
        let access = self.mint_access(user, sid).await?;
        Ok(self.issued(user.id, sid, access, refresh))
    }

    fn issued(&self, user_id: Uuid, session_id: Uuid, access: String, refresh: String) -> Issued {
        Issued {
            user_id,
            session_id,
            access_token: access,
            refresh_token: refresh,
            expires_in: self.cfg.access_ttl_secs as u32,
            refresh_expires_in: self.cfg.refresh_ttl_secs as u32,
            device_token: String::new(),
        }
    }

    async fn mint_access(&self, user: &user::Model, sid: Uuid) -> Result<String> {
        let iat = now().timestamp();
        let claims = AccessClaims {
            iss: self.keys.issuer().to_owned(),
            aud: self.keys.audience().to_owned(),
            sub: user.id.to_string(),
            iat,
            nbf: iat,
            exp: iat + self.cfg.access_ttl_secs as i64,
            jti: Uuid::now_v7().to_string(),
            typ: "access".into(),
            scope: user.scopes.clone(),
            tier: user.tier.clone(),
            email_verified: user.email_verified,
            sid: sid.to_string(),
            email: user.email.clone(),
        };
        let meta = serde_json::json!({
            "user_id": claims.sub, "email": claims.email, "scopes": claims.scope.split_whitespace().collect::<Vec<_>>(),
            "tier": claims.tier, "email_verified": claims.email_verified,
        });
        let jti = claims.jti.clone();
        let token = self.keys.sign(claims).await.map_err(AuthError::Internal)?;
        self.cache
            .set(&format!("auth:jwt:{jti}"), Bytes::from(meta.to_string()), Some(self.access_ttl()))
            .await
            .map_err(cache_err)?;
        Ok(token)
    }

    /// Spends a refresh token for a new pair. A spent token used again revokes its whole
    /// family — unless it is a retry within the grace window, which gets the same pair back.
    pub async fn refresh(&self, token: &str, client: &ClientInfo) -> Result<(user::Model, Issued)> {
        if !secrets::looks_like_token(token) {
            return Err(AuthError::Unauthenticated("the refresh token is not valid"));
        }
        let hash = secrets::hash(token);
        let row = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(&hash))
            .one(&self.db)
            .await?
            .ok_or(AuthError::Unauthenticated("the refresh token is not valid"))?;
        let sess = session::Entity::find_by_id(row.session_id)
            .one(&self.db)
            .await?
            .ok_or(AuthError::Unauthenticated("the refresh token is not valid"))?;
        if sess.revoked_at.is_some() {
            return Err(AuthError::Revoked("this session was signed out"));
        }
        let t = now();
        if row.expires_at <= t {
            return Err(AuthError::Expired("the refresh token has expired; sign in again"));
        }
        let user = self.user(row.user_id).await?;
        if !user.is_active {
            return Err(AuthError::Forbidden("this account is deactivated"));
        }
        if let Some(used) = row.used_at {
            return self.spent(&hash, &sess, &user, Some(used)).await;
        }
        // Claim it: exactly one refresh wins the conditional update.
        let refresh_ttl = chrono::Duration::seconds(self.cfg.refresh_ttl_secs as i64);
        let next = secrets::new_token();
        let txn = self.db.begin().await?;
        let claimed = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::UsedAt, Expr::value(t))
            .filter(refresh_token::Column::Id.eq(row.id))
            .filter(refresh_token::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        if claimed.rows_affected != 1 {
            txn.rollback().await?;
            return self.spent(&hash, &sess, &user, None).await;
        }
        insert_refresh(&txn, sess.id, user.id, &next, t, t + refresh_ttl).await?;
        session::Entity::update_many()
            .col_expr(session::Column::LastUsedAt, Expr::value(t))
            .col_expr(session::Column::ExpiresAt, Expr::value(t + refresh_ttl))
            .col_expr(session::Column::Ip, Expr::value(truncate(&client.ip, 64)))
            .col_expr(session::Column::UserAgent, Expr::value(truncate(&client.user_agent, 512)))
            .filter(session::Column::Id.eq(sess.id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        let access = self.mint_access(&user, sess.id).await?;
        let issued = self.issued(user.id, sess.id, access, next);
        let grace = Duration::from_secs(self.cfg.refresh_grace_secs);
        if !grace.is_zero() {
            let body =
                serde_json::to_vec(&issued).map_err(|e| AuthError::Internal(e.to_string()))?;
            self.cache
                .set(&format!("auth:grace:{hash}"), body.into(), Some(grace))
                .await
                .map_err(cache_err)?;
        }
        Ok((user, issued))
    }

    /// A spent token came back: the same pair within the grace window, else reuse → revoke.
    async fn spent(
        &self,
        hash: &str,
        sess: &session::Model,
        user: &user::Model,
        used_at: Option<DateTime<Utc>>,
    ) -> Result<(user::Model, Issued)> {
        let grace = chrono::Duration::seconds(self.cfg.refresh_grace_secs as i64);
        let recent = used_at.is_none_or(|u| now() - u <= grace);
        if recent && !grace.is_zero() {
            // The winner of a concurrent refresh may still be writing its pair: wait briefly.
            for _ in 0..40 {
                if let Some(body) =
                    self.cache.get(&format!("auth:grace:{hash}")).await.map_err(cache_err)?
                {
                    let issued: Issued = serde_json::from_slice(&body)
                        .map_err(|e| AuthError::Internal(e.to_string()))?;
                    return Ok((user.clone(), issued));
                }
                // A token spent moments ago: its winner may not have stored the pair yet
                // (it commits the claim first, then mints); wait for it rather than
                // mistaking a concurrent refresh for a replay.
                let just_now = used_at.is_none_or(|u| now() - u <= chrono::Duration::seconds(2));
                if !just_now {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tracing::warn!(user_id = %user.id, session_id = %sess.id, "refresh token reused: revoking its session");
        self.revoke_sessions(user.id, &[sess.id]).await?;
        self.emit_revoked(user.id, Vec::new(), None).await;
        Err(AuthError::Revoked("this refresh token was already used; the session is signed out"))
    }

    /// Revokes sessions: their refresh tokens stop working and their access tokens fail
    /// validation at once.
    async fn revoke_sessions(&self, user_id: Uuid, ids: &[Uuid]) -> Result<()> {
        self.bump_identity_version(user_id).await?;
        if ids.is_empty() {
            return Ok(());
        }
        session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(now()))
            .filter(session::Column::Id.is_in(ids.to_vec()))
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        for id in ids {
            self.cache
                .set(&format!("auth:sid:{id}"), Bytes::from_static(b"1"), Some(self.marker_ttl()))
                .await
                .map_err(cache_err)?;
        }
        Ok(())
    }

    /// Stamps the account's identity as changed (`auth:ver:{user}`): an edge reuses a cached
    /// token decision only while the stamp it saw is unchanged, so a revocation or a tier
    /// change takes effect on the next request at every edge, before any event arrives.
    async fn bump_identity_version(&self, user_id: Uuid) -> Result<()> {
        self.cache
            .set(
                &format!("{}{user_id}", skillup_kit::identity::VERSION_KEY_PREFIX),
                Bytes::from(Uuid::now_v7().to_string()),
                Some(self.marker_ttl()),
            )
            .await
            .map_err(cache_err)
    }

    async fn active_session_ids(&self, user_id: Uuid) -> Result<Vec<Uuid>> {
        Ok(session::Entity::find()
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::RevokedAt.is_null())
            .all(&self.db)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect())
    }

    pub async fn logout(&self, who: &Identity, refresh_token: &str) -> Result<()> {
        let left = (who.expires_at - now().timestamp()).max(0) as u64 + LEEWAY_SECS;
        self.cache
            .set(
                &format!("auth:bl:{}", who.jti),
                Bytes::from_static(b"1"),
                Some(Duration::from_secs(left)),
            )
            .await
            .map_err(cache_err)?;
        let mut sessions = vec![who.session_id];
        if !refresh_token.is_empty() && secrets::looks_like_token(refresh_token) {
            let hash = secrets::hash(refresh_token);
            if let Some(row) = refresh_token::Entity::find()
                .filter(refresh_token::Column::TokenHash.eq(hash))
                .one(&self.db)
                .await?
                && row.user_id == who.user_id
                && row.session_id != who.session_id
            {
                sessions.push(row.session_id);
            }
        }
        self.revoke_sessions(who.user_id, &sessions).await?;
        self.emit_revoked(who.user_id, vec![who.jti.clone()], None).await;
        Ok(())
    }

    /// Every token of the user issued before now stops working.
    pub async fn logout_all(&self, user_id: Uuid) -> Result<()> {
        let cutoff = now();
        self.cache
            .set(
                &format!("auth:rb:{user_id}"),
                Bytes::from(cutoff.timestamp_millis().to_string()),
                Some(self.marker_ttl()),
            )
            .await
            .map_err(cache_err)?;
        let ids = self.active_session_ids(user_id).await?;
        self.revoke_sessions(user_id, &ids).await?;
        self.emit_revoked(user_id, Vec::new(), Some(cutoff)).await;
        Ok(())
    }

    pub async fn list_sessions(&self, user_id: Uuid) -> Result<Vec<session::Model>> {
        Ok(session::Entity::find()
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::RevokedAt.is_null())
            .filter(session::Column::ExpiresAt.gt(now()))
            .order_by_desc(session::Column::LastUsedAt)
            .all(&self.db)
            .await?)
    }

    pub async fn revoke_session(&self, user_id: Uuid, session_id: &str) -> Result<()> {
        let id = Uuid::parse_str(session_id)
            .map_err(|_| invalid("session_id", "session_id must be a UUID"))?;
        let found = session::Entity::find_by_id(id).one(&self.db).await?;
        match found {
            Some(s) if s.user_id == user_id && s.revoked_at.is_none() => {
                self.revoke_sessions(user_id, &[id]).await?;
                self.emit_revoked(user_id, Vec::new(), None).await;
                Ok(())
            }
            _ => Err(AuthError::NotFound("no such session")),
        }
    }

    // ---------- validation ----------

    /// The check the edge and Nginx depend on. Fails closed: if the cache cannot answer, the
    /// answer is "unavailable", never "valid".
    pub async fn validate(&self, token: &str, required_scopes: &[String]) -> Result<Identity> {
        let claims = self.keys.verify(token).map_err(|e| match e {
            TokenError::Expired => AuthError::Expired("the access token has expired"),
            TokenError::Invalid(_) => AuthError::Unauthenticated("the access token is not valid"),
        })?;
        let user_id = Uuid::parse_str(&claims.sub)
            .map_err(|_| AuthError::Unauthenticated("the access token is not valid"))?;
        let session_id = Uuid::parse_str(&claims.sid)
            .map_err(|_| AuthError::Unauthenticated("the access token is not valid"))?;
        let keys = [
            format!("auth:bl:{}", claims.jti),
            format!("auth:sid:{}", claims.sid),
            format!("auth:rb:{}", claims.sub),
            format!("auth:off:{}", claims.sub),
            format!("auth:tier:{}", claims.sub),
            format!("auth:ev:{}", claims.sub),
            format!("{}{}", skillup_kit::identity::VERSION_KEY_PREFIX, claims.sub),
        ];
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let vals = self.cache.get_many(&refs).await.map_err(cache_err)?;
        if vals[0].is_some() || vals[1].is_some() {
            return Err(AuthError::Revoked("the access token was revoked"));
        }
        if let Some(cutoff) = vals[2]
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse::<i64>().ok())
        {
            // The jti is a UUID v7: its own millisecond timestamp says when it was minted.
            let minted_ms = Uuid::parse_str(&claims.jti)
                .ok()
                .and_then(|u| u.get_timestamp())
                .map(|ts| {
                    let (s, n) = ts.to_unix();
                    s as i64 * 1000 + (n / 1_000_000) as i64
                })
                .unwrap_or(claims.iat * 1000);
            if minted_ms <= cutoff {
                return Err(AuthError::Revoked("the access token was revoked"));
            }
        }
        if vals[3].is_some() {
            return Err(AuthError::Forbidden("this account is deactivated"));
        }
        let scopes: Vec<String> = claims.scope.split_whitespace().map(str::to_owned).collect();
        if let Some(missing) = required_scopes.iter().find(|s| !scopes.contains(s)) {
            tracing::debug!(%missing, "scope missing");
            return Err(AuthError::Forbidden("this action needs a scope the token does not have"));
        }
        let tier = vals[4]
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned)
            .unwrap_or(claims.tier);
        Ok(Identity {
            user_id,
            email: claims.email,
            scopes,
            tier,
            email_verified: claims.email_verified || vals[5].is_some(),
            jti: claims.jti,
            session_id,
            expires_at: claims.exp,
            version: vals[6]
                .as_deref()
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default()
                .to_owned(),
        })
    }

    // ---------- email tokens ----------

    async fn send_email_token(&self, user: &user::Model, kind: &str) -> Result<()> {
        let token = secrets::new_token();
        let ttl =
            if kind == "verify" { self.cfg.verification_ttl_secs } else { self.cfg.reset_ttl_secs };
        let t = now();
        email_token::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user.id),
            kind: Set(kind.into()),
            token_hash: Set(secrets::hash(&token)),
            created_at: Set(t),
            expires_at: Set(t + chrono::Duration::seconds(ttl as i64)),
            used_at: Set(None),
        }
        .insert(&self.db)
        .await?;
        let base = self.cfg.public_url.trim_end_matches('/');
        let (subject, body) = if kind == "verify" {
            (
                "Confirm your email for SkillUp".to_owned(),
                format!(
                    "Hello{},\n\nconfirm your email address by opening this link:\n{base}/verify-email?token={token}\n\nOr send this token to POST /api/auth/verify-email: {token}\n\nThe link expires in {} hours.\n",
                    greeting(user),
                    ttl / 3600
                ),
            )
        } else {
            (
                "Reset your SkillUp password".to_owned(),
                format!(
                    "Hello{},\n\nsomeone asked to reset your password. If it was you, open:\n{base}/reset-password?token={token}\n\nOr send this token to POST /api/auth/password/reset/confirm: {token}\n\nThe link expires in {} minutes. If it was not you, ignore this email.\n",
                    greeting(user),
                    ttl / 60
                ),
            )
        };
        self.mailer
            .send(Mail { to: user.email.clone(), subject, body })
            .await
            .map_err(|e| AuthError::Unavailable(format!("mailer: {e}")))
    }

    /// Spends an emailed token of `kind` atomically; returns its user.
    async fn spend_email_token(&self, token: &str, kind: &str) -> Result<Uuid> {
        let bad = || invalid("token", "this link is not valid; ask for a new one");
        if !secrets::looks_like_token(token) {
            return Err(bad());
        }
        let row = email_token::Entity::find()
            .filter(email_token::Column::TokenHash.eq(secrets::hash(token)))
            .filter(email_token::Column::Kind.eq(kind))
            .one(&self.db)
            .await?
            .ok_or_else(bad)?;
        if row.used_at.is_some() {
            return Err(invalid("token", "this link was already used"));
        }
        if row.expires_at <= now() {
            return Err(invalid("token", "this link has expired; ask for a new one"));
        }
        let spent = email_token::Entity::update_many()
            .col_expr(email_token::Column::UsedAt, Expr::value(now()))
            .filter(email_token::Column::Id.eq(row.id))
            .filter(email_token::Column::UsedAt.is_null())
            .exec(&self.db)
            .await?;
        if spent.rows_affected != 1 {
            return Err(invalid("token", "this link was already used"));
        }
        Ok(row.user_id)
    }

    pub async fn verify_email(&self, token: &str) -> Result<()> {
        let user_id = self.spend_email_token(token, "verify").await?;
        user::Entity::update_many()
            .col_expr(user::Column::EmailVerified, Expr::value(true))
            .col_expr(user::Column::UpdatedAt, Expr::value(now()))
            .filter(user::Column::Id.eq(user_id))
            .exec(&self.db)
            .await?;
        self.cache
            .set(&format!("auth:ev:{user_id}"), Bytes::from_static(b"1"), Some(self.marker_ttl()))
            .await
            .map_err(cache_err)?;
        self.bump_identity_version(user_id).await?;
        self.emit(
            &user_id,
            &skillup_proto::auth::v1::EmailVerified { user_id: user_id.to_string() },
        )
        .await;
        Ok(())
    }

    /// Throttled: one email per `resend_interval_secs` per account and kind.
    async fn throttle_mail(&self, user_id: Uuid, kind: &str) -> Result<()> {
        let key = format!("auth:mail:{kind}:{user_id}");
        let interval = Duration::from_secs(self.cfg.resend_interval_secs);
        if !self
            .cache
            .set_if_absent(&key, Bytes::from_static(b"1"), Some(interval))
            .await
            .map_err(cache_err)?
        {
            let left = self.cache.ttl(&key).await.map_err(cache_err)?.flatten().unwrap_or(interval);
            return Err(AuthError::Throttled(left.as_secs().max(1)));
        }
        Ok(())
    }

    pub async fn resend_verification(&self, user_id: Uuid) -> Result<()> {
        let user = self.user(user_id).await?;
        if user.email_verified {
            return Ok(());
        }
        self.throttle_mail(user_id, "verify").await?;
        self.send_email_token(&user, "verify").await
    }

    /// Answers the same whether or not the account exists.
    pub async fn request_password_reset(&self, email: &str) -> Result<()> {
        let email = Email::parse(email).map_err(|m| invalid("email", m))?;
        let Some(user) = user::Entity::find()
            .filter(user::Column::Email.eq(email.as_str()))
            .one(&self.db)
            .await?
        else {
            return Ok(());
        };
        if !user.is_active {
            return Ok(());
        }
        match self.throttle_mail(user.id, "reset").await {
            // Throttled silently: telling would reveal that the account exists.
            Err(AuthError::Throttled(_)) => Ok(()),
            Err(e) => Err(e),
            Ok(()) => self.send_email_token(&user, "reset").await,
        }
    }

    pub async fn reset_password(&self, token: &str, new_password: &str) -> Result<()> {
        password::check_policy(new_password, self.cfg.password_min_chars)
            .map_err(|m| invalid("new_password", m))?;
        let user_id = self.spend_email_token(token, "reset").await?;
        self.set_password(user_id, new_password).await?;
        self.logout_all(user_id).await?;
        self.emit_password_changed(user_id, true).await;
        Ok(())
    }

    pub async fn change_password(
        &self,
        who: &Identity,
        current: &str,
        new_password: &str,
    ) -> Result<()> {
        let user = self.user(who.user_id).await?;
        if !password::verify(SecretString::from(current.to_owned()), user.password_hash.clone())
            .await
        {
            return Err(invalid("current_password", "the current password is wrong"));
        }
        password::check_policy(new_password, self.cfg.password_min_chars)
            .map_err(|m| invalid("new_password", m))?;
        if current == new_password {
            return Err(invalid(
                "new_password",
                "the new password must differ from the current one",
            ));
        }
        self.set_password(who.user_id, new_password).await?;
        let others: Vec<Uuid> = self
            .active_session_ids(who.user_id)
            .await?
            .into_iter()
            .filter(|s| *s != who.session_id)
            .collect();
        self.revoke_sessions(who.user_id, &others).await?;
        self.emit_revoked(who.user_id, Vec::new(), None).await;
        self.emit_password_changed(who.user_id, false).await;
        Ok(())
    }

    /// Sets the password and, in the same transaction, spends every reset link still out: a
    /// link mailed before a reset or a change must not set the password again.
    async fn set_password(&self, user_id: Uuid, new_password: &str) -> Result<()> {
        let hash =
            password::hash(SecretString::from(new_password.to_owned()), self.cfg.bcrypt_cost)
                .await
                .map_err(AuthError::Internal)?;
        let t = now();
        let txn = self.db.begin().await?;
        user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(hash))
            .col_expr(user::Column::UpdatedAt, Expr::value(t))
            .filter(user::Column::Id.eq(user_id))
            .exec(&txn)
            .await?;
        email_token::Entity::update_many()
            .col_expr(email_token::Column::UsedAt, Expr::value(t))
            .filter(email_token::Column::UserId.eq(user_id))
            .filter(email_token::Column::Kind.eq("reset"))
            .filter(email_token::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    // ---------- administration and tiers ----------

    pub async fn set_active(&self, user_id: &str, active: bool) -> Result<user::Model> {
        let id =
            Uuid::parse_str(user_id).map_err(|_| invalid("user_id", "user_id must be a UUID"))?;
        let user = self.user(id).await?;
        user::Entity::update_many()
            .col_expr(user::Column::IsActive, Expr::value(active))
            .col_expr(user::Column::UpdatedAt, Expr::value(now()))
            .filter(user::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        if active {
            self.cache.delete(&format!("auth:off:{id}")).await.map_err(cache_err)?;
        } else {
            self.cache
                .set(&format!("auth:off:{id}"), Bytes::from_static(b"1"), None)
                .await
                .map_err(cache_err)?;
            let ids = self.active_session_ids(id).await?;
            self.revoke_sessions(id, &ids).await?;
            self.emit_revoked(id, Vec::new(), Some(now())).await;
        }
        Ok(user::Model { is_active: active, ..user })
    }

    /// Applies a `subscription.changed` event: new tokens carry the tier, and existing ones
    /// read it from the cache at validation.
    pub async fn apply_tier(&self, user_id: &str, tier: &str) -> Result<()> {
        let id =
            Uuid::parse_str(user_id).map_err(|_| invalid("user_id", "user_id must be a UUID"))?;
        if tier.is_empty() || tier.len() > 32 {
            return Err(invalid("plan", "tier must be 1..=32 characters"));
        }
        user::Entity::update_many()
            .col_expr(user::Column::Tier, Expr::value(tier))
            .col_expr(user::Column::UpdatedAt, Expr::value(now()))
            .filter(user::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        self.cache
            .set(&format!("auth:tier:{id}"), Bytes::from(tier.to_owned()), Some(self.marker_ttl()))
            .await
            .map_err(cache_err)?;
        self.bump_identity_version(id).await?;
        Ok(())
    }

    // ---------- events (after the fact; a bus outage does not undo a sign-in) ----------

    async fn emit<E: Event>(&self, user_id: &Uuid, msg: &E) {
        if let Err(e) = skillup_kit::events::publish(&self.bus, &user_id.to_string(), msg).await {
            tracing::warn!(event = E::KIND, error = %e, "event not published");
        }
    }

    async fn emit_password_changed(&self, user_id: Uuid, via_reset: bool) {
        let msg =
            skillup_proto::auth::v1::PasswordChanged { user_id: user_id.to_string(), via_reset };
        self.emit(&user_id, &msg).await;
    }

    async fn emit_revoked(&self, user_id: Uuid, jtis: Vec<String>, before: Option<DateTime<Utc>>) {
        let msg = skillup_proto::auth::v1::TokensRevoked {
            jtis,
            user_id: user_id.to_string(),
            issued_before: before.map(|t| prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: t.timestamp_subsec_nanos() as i32,
            }),
        };
        self.emit(&user_id, &msg).await;
    }
}

async fn insert_refresh<C: ConnectionTrait>(
    db: &C,
    sid: Uuid,
    user_id: Uuid,
    token: &str,
    at: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> Result<()> {
    refresh_token::ActiveModel {
        id: Set(Uuid::now_v7()),
        session_id: Set(sid),
        user_id: Set(user_id),
        token_hash: Set(secrets::hash(token)),
        created_at: Set(at),
        expires_at: Set(expires),
        used_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The name to greet by — only once the address is confirmed: until then the name is whatever
/// someone typed next to an address that may not be theirs, and our mail must not carry a
/// stranger's text to it.
fn greeting(user: &user::Model) -> String {
    if user.name.is_empty() || !user.email_verified {
        String::new()
    } else {
        format!(" {}", user.name)
    }
}
