//! Sessions and tokens: a sign-in starts a session (a refresh family), refresh rotates with
//! reuse detection, logout and revocation, and ValidateToken.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sea_orm::TransactionTrait;
use skillup_kit::identity::Caller;
use uuid::Uuid;

use crate::{
    domain::{
        secrets,
        tokens::{AccessClaims, LEEWAY_SECS, TokenError},
    },
    error::{AuthError, Result},
    store::{
        accounts::Client,
        entities::{session, user},
    },
};

use crate::auth::*;

impl Auth {
    /// A sign-in: a new session (refresh family) and its first pair; its `user.logged_in`
    /// commits with the session through the outbox.
    pub(crate) async fn start_session(
        &self,
        user: &user::Model,
        client: &ClientInfo,
    ) -> Result<Issued> {
        let t = now();
        let refresh_ttl = chrono::Duration::seconds(self.cfg.refresh_ttl_secs as i64);
        let sid = Uuid::now_v7();
        let refresh = secrets::new_token();
        let client = Client {
            ip: &truncate(&client.ip, 64),
            user_agent: &truncate(&client.user_agent, 512),
        };
        let hash = secrets::hash(&refresh);
        let txn = self.db.begin().await?;
        self.store.start_session(&txn, sid, user.id, client, hash, t + refresh_ttl).await?;
        let event = crate::events::logged_in(user.id, sid, client);
        self.outbox.add(&txn, &format!("logged_in:{sid}"), &user.id.to_string(), &event).await?;
        txn.commit().await?;
        self.outbox.wake();
        let access = self.mint_access(user, sid).await?;
        Ok(self.issued(user.id, sid, access, refresh))
    }

    pub(crate) fn issued(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        access: String,
        refresh: String,
    ) -> Issued {
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

    pub(crate) async fn mint_access(&self, user: &user::Model, sid: Uuid) -> Result<String> {
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
            loc: user.locale.clone(),
        };
        // No address in the cache: a deleted account's must not outlive it there.
        let meta = serde_json::json!({
            "user_id": claims.sub, "scopes": claims.scope.split_whitespace().collect::<Vec<_>>(),
            "tier": claims.tier, "email_verified": claims.email_verified});
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
            return Err(AuthError::Unauthenticated("error-refresh-invalid"));
        }
        let hash = secrets::hash(token);
        let row = self
            .store
            .refresh_token(&hash)
            .await?
            .ok_or(AuthError::Unauthenticated("error-refresh-invalid"))?;
        let sess = self
            .store
            .session(row.session_id)
            .await?
            .ok_or(AuthError::Unauthenticated("error-refresh-invalid"))?;
        if sess.revoked_at.is_some() {
            return Err(AuthError::Revoked("this session was signed out"));
        }
        let t = now();
        if row.expires_at <= t {
            return Err(AuthError::Expired("the refresh token has expired; sign in again"));
        }
        let user = self.user(row.user_id).await?;
        if !user.is_active {
            return Err(AuthError::Forbidden("error-deactivated"));
        }
        if let Some(used) = row.used_at {
            return self.spent(&hash, &sess, &user, Some(used)).await;
        }
        // Claim it: exactly one refresh wins the conditional update.
        let refresh_ttl = chrono::Duration::seconds(self.cfg.refresh_ttl_secs as i64);
        let next = secrets::new_token();
        let (ip, user_agent) = (truncate(&client.ip, 64), truncate(&client.user_agent, 512));
        let client = Client { ip: &ip, user_agent: &user_agent };
        if !self.store.rotate(&row, secrets::hash(&next), client, t + refresh_ttl).await? {
            return self.spent(&hash, &sess, &user, None).await;
        }
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
    pub(crate) async fn spent(
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
    pub(crate) async fn revoke_sessions(&self, user_id: Uuid, ids: &[Uuid]) -> Result<()> {
        self.bump_identity_version(user_id).await?;
        if ids.is_empty() {
            return Ok(());
        }
        self.store.revoke_sessions(user_id, ids).await?;
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
    pub(crate) async fn bump_identity_version(&self, user_id: Uuid) -> Result<()> {
        self.cache
            .set(
                &format!("{}{user_id}", skillup_kit::identity::VERSION_KEY_PREFIX),
                Bytes::from(Uuid::now_v7().to_string()),
                Some(self.marker_ttl()),
            )
            .await
            .map_err(cache_err)
    }

    pub(crate) async fn active_session_ids(&self, user_id: Uuid) -> Result<Vec<Uuid>> {
        Ok(self.store.unrevoked_sessions(user_id).await?.into_iter().map(|s| s.id).collect())
    }

    pub async fn logout(&self, who: &Caller, refresh_token: &str) -> Result<()> {
        let user_id = account_of(who)?;
        let session = who.session().ok_or(AuthError::Unauthenticated("error-sign-in"))?;
        let left = (who.token_exp - now().timestamp()).max(0) as u64 + LEEWAY_SECS;
        self.cache
            .set(
                &format!("auth:bl:{}", who.jti),
                Bytes::from_static(b"1"),
                Some(Duration::from_secs(left)),
            )
            .await
            .map_err(cache_err)?;
        let mut sessions = vec![session];
        if !refresh_token.is_empty() && secrets::looks_like_token(refresh_token) {
            let hash = secrets::hash(refresh_token);
            if let Some(row) = self.store.refresh_token(&hash).await?
                && row.user_id == user_id
                && row.session_id != session
            {
                sessions.push(row.session_id);
            }
        }
        self.revoke_sessions(user_id, &sessions).await?;
        self.emit_revoked(user_id, vec![who.jti.clone()], None).await;
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
        Ok(self.store.live_sessions(user_id).await?)
    }

    pub async fn revoke_session(&self, user_id: Uuid, session_id: &str) -> Result<()> {
        let id = Uuid::parse_str(session_id)
            .map_err(|_| invalid("session_id", skillup_kit::invalid::uuid("session_id")))?;
        let found = self.store.session(id).await?;
        match found {
            Some(s) if s.user_id == user_id && s.revoked_at.is_none() => {
                self.revoke_sessions(user_id, &[id]).await?;
                self.emit_revoked(user_id, Vec::new(), None).await;
                Ok(())
            }
            _ => Err(AuthError::NotFound("error-no-session")),
        }
    }

    /// The check the edge and Nginx depend on. Fails closed: if the cache cannot answer, the
    /// answer is "unavailable", never "valid".
    pub async fn validate(&self, token: &str, required_scopes: &[String]) -> Result<Validated> {
        if crate::domain::api_keys::is_key(token) {
            return self.validate_api_key(token, required_scopes).await;
        }
        let claims = self.keys.verify(token).map_err(|e| match e {
            TokenError::Expired => AuthError::Expired("the access token has expired"),
            TokenError::Invalid(_) => AuthError::Unauthenticated("error-token-invalid"),
        })?;
        let user_id = Uuid::parse_str(&claims.sub)
            .map_err(|_| AuthError::Unauthenticated("error-token-invalid"))?;
        let session_id = Uuid::parse_str(&claims.sid)
            .map_err(|_| AuthError::Unauthenticated("error-token-invalid"))?;
        let keys = [
            format!("auth:bl:{}", claims.jti),
            format!("auth:sid:{}", claims.sid),
            format!("auth:rb:{}", claims.sub),
            format!("auth:off:{}", claims.sub),
            format!("auth:tier:{}", claims.sub),
            format!("auth:ev:{}", claims.sub),
            format!("{}{}", skillup_kit::identity::VERSION_KEY_PREFIX, claims.sub),
            format!("auth:loc:{}", claims.sub),
            skillup_kit::identity::CACHE_EPOCH_KEY.to_owned(),
        ];
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let vals = self.cache.get_many(&refs).await.map_err(cache_err)?;
        if vals[0].is_some() || vals[1].is_some() {
            return Err(AuthError::Revoked("the access token was revoked"));
        }
        if vals[8].is_none() {
            // The cache lost the markers: PostgreSQL says whether the session and the account
            // still stand, while they are put back.
            self.cache_lost().await;
            self.check_in_database(user_id, session_id).await?;
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
            return Err(AuthError::Forbidden("error-deactivated"));
        }
        let scopes: Vec<String> = claims.scope.split_whitespace().map(str::to_owned).collect();
        if let Some(missing) = required_scopes.iter().find(|s| !scopes.contains(s)) {
            tracing::debug!(%missing, "scope missing");
            return Err(AuthError::Forbidden("error-scope"));
        }
        let tier = vals[4]
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned)
            .unwrap_or(claims.tier);
        let version = vals[6]
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
            .to_owned();
        let locale = vals[7]
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned)
            .unwrap_or(claims.loc);
        Ok(Validated {
            caller: Caller {
                locale,
                user_id: user_id.to_string(),
                scopes,
                tier,
                email_verified: claims.email_verified || vals[5].is_some(),
                jti: claims.jti,
                sid: session_id.to_string(),
                token_exp: claims.exp,
                ver: version,
                ..Caller::default()
            },
            email: claims.email,
        })
    }
}
