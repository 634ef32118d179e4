//! Email tokens: address verification, password resets (one use, every outstanding one spent
//! by a reset or change), and password changes.

use std::time::Duration;

use bytes::Bytes;
use secrecy::SecretString;
use skillup_kit::{fluent_args, identity::Caller};
use uuid::Uuid;

use crate::{
    domain::{email::Email, password, secrets},
    error::{AuthError, Result},
    letters,
    store::entities::{email_token, user},
};

use crate::auth::*;

impl Auth {
    pub(crate) async fn send_email_token(&self, user: &user::Model, kind: &str) -> Result<()> {
        let token = secrets::new_token();
        let ttl =
            if kind == "verify" { self.cfg.verification_ttl_secs } else { self.cfg.reset_ttl_secs };
        let expires = now() + chrono::Duration::seconds(ttl as i64);
        self.store.insert_email_token(user.id, kind, secrets::hash(&token), expires, None).await?;
        let base = self.cfg.public_url.trim_end_matches('/');
        let mail = if kind == "verify" {
            let link = format!("{base}/verify-email?token={token}");
            let args =
                fluent_args![("link", link), ("token", token.as_str()), ("hours", ttl / 3600)];
            letters::letter(user, "verify-email", args)
        } else {
            let link = format!("{base}/reset-password?token={token}");
            let args =
                fluent_args![("link", link), ("token", token.as_str()), ("minutes", ttl / 60)];
            letters::letter(user, "reset-password", args)
        };
        self.mailer.send(mail).await.map_err(|e| AuthError::Unavailable(format!("mailer: {e}")))
    }

    /// Spends an emailed token of `kind` atomically; returns its user.
    pub(crate) async fn spend_email_token(&self, token: &str, kind: &str) -> Result<Uuid> {
        Ok(self.spend_email_token_row(token, kind).await?.user_id)
    }

    /// [`Self::spend_email_token`], the whole row.
    pub(crate) async fn spend_email_token_row(
        &self,
        token: &str,
        kind: &str,
    ) -> Result<email_token::Model> {
        let bad = || refused("token", "link-invalid", 0);
        if !secrets::looks_like_token(token) {
            return Err(bad());
        }
        let row = self.store.email_token(&secrets::hash(token), kind).await?.ok_or_else(bad)?;
        if row.used_at.is_some() {
            return Err(refused("token", "link-used", 0));
        }
        if row.expires_at <= now() {
            return Err(refused("token", "link-expired", 0));
        }
        if !self.store.spend_email_token(row.id).await? {
            return Err(refused("token", "link-used", 0));
        }
        Ok(row)
    }

    pub async fn verify_email(&self, token: &str) -> Result<()> {
        let user_id = self.spend_email_token(token, "verify").await?;
        self.store.set_email_verified(user_id).await?;
        self.cache
            .set(&format!("auth:ev:{user_id}"), Bytes::from_static(b"1"), Some(self.marker_ttl()))
            .await
            .map_err(cache_err)?;
        self.bump_identity_version(user_id).await?;
        self.emit_email_verified(user_id).await;
        Ok(())
    }

    /// Throttled: one email per `resend_interval_secs` per account and kind.
    pub(crate) async fn throttle_mail(&self, user_id: Uuid, kind: &str) -> Result<()> {
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
        let email = Email::parse(email).map_err(|k| refused("email", k, 0))?;
        let Some(user) = self.store.user_by_email(email.as_str()).await? else {
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
            .map_err(|(k, n)| refused("new_password", k, n))?;
        let user_id = self.spend_email_token(token, "reset").await?;
        self.set_password(user_id, new_password).await?;
        self.logout_all(user_id).await?;
        self.emit_password_changed(user_id, true).await;
        Ok(())
    }

    pub async fn change_password(
        &self,
        who: &Caller,
        current: &str,
        new_password: &str,
    ) -> Result<()> {
        let (user_id, session) = (account_of(who)?, who.session());
        let user = self.user(user_id).await?;
        if !password::verify(SecretString::from(current.to_owned()), user.password_hash.clone())
            .await
        {
            return Err(refused("current_password", "password-wrong", 0));
        }
        password::check_policy(new_password, self.cfg.password_min_chars)
            .map_err(|(k, n)| refused("new_password", k, n))?;
        if current == new_password {
            return Err(refused("new_password", "password-same", 0));
        }
        self.set_password(user_id, new_password).await?;
        let others: Vec<Uuid> = self
            .active_session_ids(user_id)
            .await?
            .into_iter()
            .filter(|s| Some(*s) != session)
            .collect();
        self.revoke_sessions(user_id, &others).await?;
        self.emit_revoked(user_id, Vec::new(), None).await;
        self.emit_password_changed(user_id, false).await;
        Ok(())
    }

    /// Sets the password and, in the same transaction, spends every reset link still out: a
    /// link mailed before a reset or a change must not set the password again.
    pub(crate) async fn set_password(&self, user_id: Uuid, new_password: &str) -> Result<()> {
        let hash =
            password::hash(SecretString::from(new_password.to_owned()), self.cfg.bcrypt_cost)
                .await
                .map_err(AuthError::Internal)?;
        Ok(self.store.set_password(user_id, hash).await?)
    }
}
