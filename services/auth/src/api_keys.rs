//! API keys: created, listed and revoked by the person who signed in; validated like an access
//! token, so the edge's one path (its decision cache and immediate revocation included) serves
//! both. A key speaks for its account with the account's scopes but `admin`, and never as a
//! signed-in person (its caller has no session): the account's settings, sessions, keys, data and
//! money are not a key's. Revoking one, or the account's deactivation or deletion, takes effect
//! on the next request at every edge (the identity stamp changes; the key row is the truth, not
//! a cache marker).

use chrono::{DateTime, Duration, Utc};
use skillup_kit::identity::{Caller, VERSION_KEY_PREFIX};
use uuid::Uuid;

use crate::{
    auth::{Auth, Validated, cache_err, now, person_of, refused},
    domain::api_keys::{self, NewKey},
    error::{AuthError, Result},
    store::entities::api_key,
};

/// Scopes a key never carries, whatever its account holds.
const NOT_FOR_KEYS: &[&str] = &["admin"];

/// How far ahead a key without an expiry says it is good for, in a validation (the edge asks
/// again long before; it only bounds a cached decision).
const OPEN_ENDED: Duration = Duration::hours(24);

impl Auth {
    /// A new key for the person who signed in: the stored row and the secret, shown this once.
    pub async fn create_api_key(
        &self,
        who: &Caller,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(api_key::Model, String)> {
        let user = person_of(who)?;
        let name = api_keys::name(name).map_err(|k| refused("name", k, 0))?;
        let now = now();
        let expires_at = expires_at
            .map(|at| api_keys::expiry(at, now))
            .transpose()
            .map_err(|k| refused("expires_at", k, 0))?;
        let new = NewKey::generate();
        let row = api_key::Model {
            id: Uuid::now_v7(),
            user_id: user,
            name,
            prefix: new.shown,
            secret_hash: new.hash,
            created_at: now,
            last_used_at: None,
            expires_at,
        };
        let max = u64::from(self.cfg.api_keys_per_user);
        let row = self
            .api_keys
            .create(row, max)
            .await?
            .ok_or(AuthError::Conflict("error-api-keys-full"))?;
        tracing::info!(user = %user, key = %row.id, "API key created");
        Ok((row, new.secret))
    }

    /// The keys of the person who signed in, newest first.
    pub async fn api_keys(&self, who: &Caller) -> Result<Vec<api_key::Model>> {
        Ok(self.api_keys.list(person_of(who)?).await?)
    }

    /// Revokes one of the signed-in person's keys: refused from the next request on.
    pub async fn delete_api_key(&self, who: &Caller, id: &str) -> Result<()> {
        let user = person_of(who)?;
        let id = Uuid::parse_str(id).map_err(|_| AuthError::NotFound("error-no-api-key"))?;
        if !self.api_keys.delete(user, id).await? {
            return Err(AuthError::NotFound("error-no-api-key"));
        }
        // Every edge's cached decision for the account is dropped at its next use.
        self.bump_identity_version(user).await?;
        tracing::info!(user = %user, key = %id, "API key revoked");
        Ok(())
    }

    /// Validates an API key (`sk-skillup-…`) for `required_scopes`.
    pub(crate) async fn validate_api_key(
        &self,
        token: &str,
        required_scopes: &[String],
    ) -> Result<Validated> {
        let invalid = || AuthError::Unauthenticated("error-api-key-invalid");
        let hash = api_keys::lookup_hash(token).ok_or_else(invalid)?;
        let (key, user) = self.api_keys.find(&hash).await?.ok_or_else(invalid)?;
        let now = now();
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(invalid());
        }
        if !user.is_active {
            return Err(AuthError::Forbidden("error-deactivated"));
        }
        let id = user.id;
        let keys = [
            format!("auth:off:{id}"),
            format!("auth:tier:{id}"),
            format!("auth:ev:{id}"),
            format!("{VERSION_KEY_PREFIX}{id}"),
            format!("auth:loc:{id}"),
        ];
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let vals = self.cache.get_many(&refs).await.map_err(cache_err)?;
        if vals[0].is_some() {
            return Err(AuthError::Forbidden("error-deactivated"));
        }
        let text = |i: usize| {
            vals[i].as_deref().and_then(|b| std::str::from_utf8(b).ok()).map(str::to_owned)
        };
        let scopes: Vec<String> = user
            .scopes
            .split_whitespace()
            .filter(|s| !NOT_FOR_KEYS.contains(s))
            .map(str::to_owned)
            .collect();
        if required_scopes.iter().any(|s| !scopes.contains(s)) {
            return Err(AuthError::Forbidden("error-scope"));
        }
        if let Err(e) = self.api_keys.touch(key.id, now).await {
            // Bookkeeping only: the key is valid whether or not its last use is written.
            tracing::warn!(error = %e, key = %key.id, "API key's last use not recorded");
        }
        let exp = key.expires_at.unwrap_or(now + OPEN_ENDED).min(now + OPEN_ENDED);
        Ok(Validated {
            caller: Caller {
                user_id: id.to_string(),
                scopes,
                tier: text(1).unwrap_or(user.tier),
                email_verified: user.email_verified || vals[2].is_some(),
                ver: text(3).unwrap_or_default(),
                locale: text(4).unwrap_or(user.locale),
                token_exp: exp.timestamp(),
                api_key: key.id.to_string(),
                ..Caller::default()
            },
            email: user.email,
        })
    }
}
