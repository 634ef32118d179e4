//! Accounts: registration (that never tells whether an address is taken), sign-in with
//! brute-force limits per account and address (a known device is never locked out).

use std::time::Duration;

use bytes::Bytes;
use sea_orm::{SqlErr, TransactionTrait};
use secrecy::SecretString;
use skillup_kit::{fluent_args, i18n::Locale};
use uuid::Uuid;

use crate::{
    domain::{
        email::Email,
        password,
        profile::{self, ProfileEdit},
        secrets,
    },
    error::{AuthError, Result},
    letters,
    store::{accounts::ProfileChange, entities::user},
};

use crate::auth::*;

/// How long a device that signed in stays known (see [`Auth::login`]).
pub(crate) const DEVICE_TTL: Duration = Duration::from_secs(90 * 86_400);

/// What registration asks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Registration<'a> {
    pub email: &'a str,
    pub password: &'a str,
    pub name: &'a str,
    /// `en` / `ru`, or empty for `request_locale`.
    pub locale: &'a str,
    /// IANA name, or empty for UTC.
    pub time_zone: &'a str,
    /// The language the request came in (its `Accept-Language`, as the edge negotiated it).
    pub request_locale: Locale,
}

impl Auth {
    /// Creates an account and mails its confirmation link. An address that has an account
    /// already gets the same answer — a look-alike account, after the same password hashing —
    /// and its owner a note instead of a link (OWASP: registration never tells whether an
    /// address is registered). Tokens come from [`Auth::login`].
    pub async fn register(&self, r: &Registration<'_>) -> Result<user::Model> {
        let password = r.password;
        let email = Email::parse(r.email).map_err(|k| refused("email", k, 0))?;
        let name = profile::name(r.name).map_err(|k| refused("name", k, 0))?;
        let locale = match r.locale {
            "" => r.request_locale,
            l => profile::locale(l).map_err(|k| refused("locale", k, 0))?,
        };
        let time_zone = match r.time_zone {
            "" => profile::DEFAULT_TIME_ZONE.to_owned(),
            tz => profile::time_zone(tz).map_err(|k| refused("time_zone", k, 0))?,
        };
        password::check_policy(password, self.cfg.password_min_chars)
            .map_err(|(k, n)| refused("password", k, n))?;
        let hash = password::hash(SecretString::from(password.to_owned()), self.cfg.bcrypt_cost)
            .await
            .map_err(AuthError::Internal)?;
        let t = now();
        let model = user::Model {
            id: Uuid::now_v7(),
            email: email.as_str().to_owned(),
            name,
            password_hash: hash,
            email_verified: false,
            tier: "free".into(),
            scopes: "user".into(),
            is_active: true,
            created_at: t,
            updated_at: t,
            locale: locale.tag().to_owned(),
            time_zone,
        };
        // The unique index decides between concurrent registrations of one address; the
        // account and its `user.registered` (the notification service's contact) commit together.
        let txn = self.db.begin().await?;
        let user = match self.store.insert_user(&txn, model.clone()).await {
            Ok(u) => u,
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                txn.rollback().await?;
                self.note_to_owner(email.as_str()).await?;
                // The same answer as a new account (an address's owner is not disclosed);
                // nothing of it is stored.
                return Ok(user::Model {
                    id: Uuid::now_v7(),
                    password_hash: String::new(),
                    ..model
                });
            }
            Err(e) => return Err(e.into()),
        };
        let msg = crate::events::registered(&user);
        let id = format!("registered:{}", user.id);
        self.outbox.add(&txn, &id, &user.id.to_string(), &msg).await?;
        txn.commit().await?;
        self.outbox.wake();
        self.send_email_token(&user, "verify").await?;
        Ok(user)
    }

    /// Tells an address's owner that someone tried to register it (once per resend interval:
    /// repeated attempts cannot flood the owner's mailbox).
    pub(crate) async fn note_to_owner(&self, email: &str) -> Result<()> {
        let Some(owner) = self.store.user_by_email(email).await? else {
            return Ok(());
        };
        match self.throttle_mail(owner.id, "taken").await {
            Err(AuthError::Throttled(_)) => return Ok(()),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        let base = self.cfg.public_url.trim_end_matches('/');
        let args =
            fluent_args![("home", format!("{base}/")), ("reset", format!("{base}/reset-password"))];
        let mail = letters::letter(&owner, "account-taken", args);
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
            return Err(invalid("password", skillup_kit::invalid::required("password")));
        }
        let email = Email::parse(email).map_err(|k| refused("email", k, 0))?;
        // The cache never holds an address: its keys and values name its hash.
        let who = secrets::hash(email.as_str());
        let device = self.known_device(&who, device_token).await?;
        let cfg = &self.cfg;
        let counters: Vec<(String, u32)> = match &device {
            Some(hash) => vec![(format!("dev:{hash}"), cfg.max_failures_per_account)],
            None => vec![
                (format!("pair:{who}:{}", client.ip), cfg.max_failures_per_account),
                (format!("ip:{}", client.ip), cfg.max_failures_per_ip),
                (format!("acct:{who}"), cfg.max_failures_per_account_total),
            ],
        };
        self.refuse_if_locked(&counters).await?;

        let found = self.store.user_by_email(email.as_str()).await?;
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
            return Err(AuthError::Forbidden("error-deactivated"));
        }
        // The owner is in: this device's (or pair's) failures and the account's are forgiven.
        let account = format!("acct:{who}");
        for counter in [counters[0].0.as_str(), account.as_str()] {
            self.cache.delete(&format!("auth:fail:{counter}")).await.map_err(cache_err)?;
        }
        let mut issued = self.start_session(&user, client).await?;
        issued.device_token = self.know_device(&who, device.map(|_| device_token)).await?;
        Ok((user, issued))
    }

    /// The hash of `token` when it is a device token of the address hashed `email`.
    pub(crate) async fn known_device(&self, email: &str, token: &str) -> Result<Option<String>> {
        if !secrets::looks_like_token(token) {
            return Ok(None);
        }
        let hash = secrets::hash(token);
        let owner = self.cache.get(&format!("auth:dev:{hash}")).await.map_err(cache_err)?;
        Ok(owner.filter(|o| o.as_ref() == email.as_bytes()).map(|_| hash))
    }

    /// Remembers a device of the address hashed `email` for [`DEVICE_TTL`] more: the one it already had, or a
    /// new one. Returns its token.
    pub(crate) async fn know_device(&self, email: &str, known: Option<&str>) -> Result<String> {
        let token = known.map_or_else(secrets::new_token, str::to_owned);
        let key = format!("auth:dev:{}", secrets::hash(&token));
        let owner = Bytes::copy_from_slice(email.as_bytes());
        self.cache.set(&key, owner, Some(DEVICE_TTL)).await.map_err(cache_err)?;
        Ok(token)
    }

    pub(crate) async fn refuse_if_locked(&self, counters: &[(String, u32)]) -> Result<()> {
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
    pub(crate) async fn count_failures(&self, counters: &[(String, u32)]) -> Result<()> {
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
}

impl Auth {
    /// Its owner's change of profile (name, language, time zone; each alone). The row and its
    /// `user.updated` commit together; a new language is in force on the caller's next request
    /// at every edge (the cache holds it beside the tier, and the identity stamp changes).
    pub async fn update_me(&self, user_id: Uuid, edit: &ProfileEdit) -> Result<user::Model> {
        let name = edit.name.as_deref().map(profile::name).transpose();
        let name = name.map_err(|k| refused("name", k, 0))?;
        let locale = edit.locale.as_deref().map(profile::locale).transpose();
        let locale = locale.map_err(|k| refused("locale", k, 0))?;
        let time_zone = edit.time_zone.as_deref().map(profile::time_zone).transpose();
        let time_zone = time_zone.map_err(|k| refused("time_zone", k, 0))?;
        if name.is_none() && locale.is_none() && time_zone.is_none() {
            return self.user(user_id).await;
        }
        let change = ProfileChange { name, locale: locale.map(Locale::tag), time_zone };
        let txn = self.db.begin().await?;
        let Some(user) = self.store.update_profile(&txn, user_id, &change).await? else {
            return Err(AuthError::NotFound("error-no-account"));
        };
        let msg = crate::events::updated(&user);
        let id = format!("updated:{}:{}", user.id, Uuid::now_v7());
        self.outbox.add(&txn, &id, &user.id.to_string(), &msg).await?;
        txn.commit().await?;
        self.outbox.wake();
        if let Some(l) = locale {
            let key = format!("auth:loc:{user_id}");
            let tag = Bytes::from_static(l.tag().as_bytes());
            self.cache.set(&key, tag, Some(self.marker_ttl())).await.map_err(cache_err)?;
        }
        self.bump_identity_version(user_id).await?;
        Ok(user)
    }
}
