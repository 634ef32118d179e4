//! The auth service's state and what its parts share: the caller as validated, the tokens a
//! sign-in issues, cached account rows, and events (after the fact: a bus outage does not undo a
//! sign-in).
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

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use skillup_kit::{
    bus::SharedBus, cache::SharedCache, identity::Caller, mailer::SharedMailer, outbox::Outbox,
};
use uuid::Uuid;

use crate::{
    config::AuthConfig,
    domain::{
        password, secrets,
        tokens::{LEEWAY_SECS, TokenKeys},
    },
    error::{AuthError, Result},
    ports::DataHolder,
    store::entities::user,
    store::{
        accounts::AccountStore, api_keys::ApiKeyStore, audit::AuditStore, exports::ExportStore,
    },
};

/// Where a request came from (for sessions and per-IP limits).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

/// A token that passed validation: the caller it speaks for, and the address it carries (the
/// edge shows it on `ValidateToken`; the assertion to services leaves it out).
#[derive(Debug, Clone)]
pub struct Validated {
    pub caller: Caller,
    pub email: String,
}

/// The account of a caller auth validated (its id always parses), or "sign in first".
pub(crate) fn account_of(who: &Caller) -> Result<Uuid> {
    who.user().ok_or(AuthError::Unauthenticated("error-sign-in"))
}

/// The account of a person who signed in (a session's access token): what an API key may not
/// do — the account's settings, sessions, keys and data — needs one. The edge refuses such
/// calls first (`signed_in` routes); this holds for direct gRPC callers too.
pub(crate) fn person_of(who: &Caller) -> Result<Uuid> {
    let user = account_of(who)?;
    if !who.signed_in() {
        return Err(AuthError::Forbidden("error-signed-in-only"));
    }
    Ok(user)
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
    pub(crate) store: AccountStore,
    pub(crate) cache: SharedCache,
    pub(crate) bus: SharedBus,
    pub(crate) mailer: SharedMailer,
    pub(crate) keys: TokenKeys,
    pub(crate) cfg: AuthConfig,
    /// A real bcrypt hash at the configured cost, checked against for unknown emails so a
    /// login's timing does not reveal whether the account exists.
    pub(crate) dummy_hash: String,
    /// Recently read accounts for GetMe (the hottest call of a web front end), each under the
    /// identity stamp it was read with: every change to an account rewrites the stamp, so an
    /// entry is used only while nothing changed, and never for longer than `PROFILE_TTL`.
    pub(crate) profiles: Arc<RwLock<HashMap<Uuid, Profile>>>,
    /// `user.registered` waits here until the broker has it (the other events are about
    /// revocations and sign-ins kept in Redis, and are published directly, after the fact).
    pub(crate) outbox: Outbox,
    /// People's data exports, and the services holding the other parts of them.
    pub(crate) exports: ExportStore,
    pub(crate) holders: Arc<[Arc<dyn DataHolder>]>,
    /// Wakes this replica's export runner when someone asks for an export.
    pub(crate) export_wake: Arc<tokio::sync::Notify>,
    /// People's API keys.
    pub(crate) api_keys: ApiKeyStore,
    /// The audit log of every service's admin actions.
    pub(crate) audit: AuditStore,
    /// Set while this replica puts revocation markers back into a cache that lost them
    /// (`recovery`): one rebuild at a time.
    pub(crate) recovering: Arc<std::sync::atomic::AtomicBool>,
}

/// One cached account row: (identity stamp it was read under, when, the row).
pub(crate) type Profile = (String, Instant, user::Model);

/// Longest reuse of a cached account row.
pub(crate) const PROFILE_TTL: Duration = Duration::from_secs(30);

/// Most account rows kept.
pub(crate) const PROFILE_MAX: usize = 100_000;

pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

pub(crate) fn invalid(field: &'static str, msg: impl Into<String>) -> AuthError {
    AuthError::Invalid(field, msg.into())
}

/// `field` refused for the reason message `key` (of `locales/*.ftl`) gives, worded for the
/// caller; `n` is the number it names, if any.
pub(crate) fn refused(field: &'static str, key: &str, n: usize) -> AuthError {
    let args = skillup_kit::fluent_args![("n", n)];
    AuthError::Invalid(field, crate::letters::said(key, Some(&args)))
}

pub(crate) fn cache_err(e: skillup_kit::Error) -> AuthError {
    AuthError::Unavailable(e.to_string())
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
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
        let store = AccountStore::new(db.clone());
        let profiles = Arc::default();
        let exports = ExportStore::new(db.clone());
        let (holders, export_wake) = (Arc::from(Vec::new()), Arc::default());
        let api_keys = ApiKeyStore::new(db.clone());
        let audit = AuditStore::new(db.clone());
        Ok(Self {
            db,
            store,
            cache,
            bus,
            mailer,
            keys,
            cfg,
            dummy_hash,
            profiles,
            outbox,
            exports,
            holders,
            export_wake,
            api_keys,
            audit,
            recovering: Arc::default(),
        })
    }

    /// The services holding the other parts of people's data exports (none: an export holds
    /// auth's part only).
    pub fn with_data_holders(mut self, holders: Vec<Arc<dyn DataHolder>>) -> Self {
        self.holders = Arc::from(holders);
        self
    }

    /// The outbox of this service's `user.registered` events (its relay runs in
    /// [`crate::build`]).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub(crate) fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.cfg.access_ttl_secs)
    }

    /// How long a per-token or per-session marker must live: longer than any access token.
    pub(crate) fn marker_ttl(&self) -> Duration {
        Duration::from_secs(self.cfg.access_ttl_secs + LEEWAY_SECS + 5)
    }

    pub async fn user(&self, id: Uuid) -> Result<user::Model> {
        self.store.user(id).await?.ok_or(AuthError::NotFound("error-no-account"))
    }

    /// An active account, for another service that writes to it (deleted and deactivated
    /// ones are NOT_FOUND).
    pub async fn contact(&self, id: Uuid) -> Result<user::Model> {
        match self.store.user(id).await? {
            Some(u) if u.is_active => Ok(u),
            _ => Err(AuthError::NotFound("error-no-account")),
        }
    }

    /// Drops an account from the recently-read ones.
    pub(crate) fn forget_profile(&self, id: Uuid) {
        self.profiles.write().expect("profiles lock").remove(&id);
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
}
