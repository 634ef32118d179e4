//! A change of address: asked for with the password, confirmed from the new address, noticed
//! at the old one. Sessions stay; the account's events and the identity stamp follow.

use bytes::Bytes;
use sea_orm::{SqlErr, TransactionTrait};
use secrecy::SecretString;
use skillup_kit::{fluent_args, identity::Caller};

use crate::{
    domain::{email::Email, password, secrets},
    error::{AuthError, Result},
    letters,
};

use crate::auth::*;

/// How long a link to a new address works.
pub const EMAIL_CHANGE_TTL_SECS: u64 = 24 * 3600;

impl Auth {
    /// Mails a confirmation link to `new_email` and a notice to the current address. When the
    /// new address has an account already, its owner gets a note instead and the caller the
    /// same answer: nobody learns whose address it is.
    pub async fn change_email(&self, who: &Caller, pw: &str, new_email: &str) -> Result<()> {
        let user = self.user(account_of(who)?).await?;
        if pw.is_empty() {
            return Err(invalid("password", skillup_kit::invalid::required("password")));
        }
        let new = Email::parse(new_email).map_err(|k| refused("new_email", k, 0))?;
        if new.as_str() == user.email {
            return Err(refused("new_email", "address-same", 0));
        }
        if !password::verify(SecretString::from(pw.to_owned()), user.password_hash.clone()).await {
            return Err(refused("password", "password-wrong", 0));
        }
        self.throttle_mail(user.id, "email_change").await?;
        let base = self.cfg.public_url.trim_end_matches('/');
        if let Some(owner) = self.store.user_by_email(new.as_str()).await? {
            let args = fluent_args![
                ("home", format!("{base}/")),
                ("reset", format!("{base}/reset-password"))
            ];
            return self.send(letters::letter(&owner, "email-taken", args)).await;
        }
        let token = secrets::new_token();
        let expires = now() + chrono::Duration::seconds(EMAIL_CHANGE_TTL_SECS as i64);
        let hash = secrets::hash(&token);
        let pending = Some(new.as_str().to_owned());
        self.store.insert_email_token(user.id, "email_change", hash, expires, pending).await?;
        let link = format!("{base}/confirm-email?token={token}");
        let hours = EMAIL_CHANGE_TTL_SECS / 3600;
        let args = fluent_args![("link", link), ("token", token.as_str()), ("hours", hours)];
        let mut confirm = letters::letter(&user, "confirm-email", args);
        confirm.to = new.as_str().to_owned();
        self.send(confirm).await?;
        let args = fluent_args![("new", new.as_str()), ("reset", format!("{base}/reset-password"))];
        self.send(letters::letter(&user, "email-changing", args)).await
    }

    /// Moves the account to the address the token was mailed to; returns the address.
    pub async fn confirm_email_change(&self, token: &str) -> Result<String> {
        let row = self.spend_email_token_row(token, "email_change").await?;
        let Some(new) = row.new_email else {
            return Err(refused("token", "link-invalid", 0));
        };
        let txn = self.db.begin().await?;
        let user = match self.store.change_email(&txn, row.user_id, &new).await {
            Ok(Some(u)) => u,
            Ok(None) => return Err(AuthError::NotFound("error-no-account")),
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                return Err(AuthError::Conflict("error-address-taken"));
            }
            Err(e) => return Err(e.into()),
        };
        let id = format!("updated:{}:{}", user.id, uuid::Uuid::now_v7());
        self.outbox.add(&txn, &id, &user.id.to_string(), &crate::events::updated(&user)).await?;
        txn.commit().await?;
        self.outbox.wake();
        // The new address is proven: verified from the next request on, at every edge.
        let marker = format!("auth:ev:{}", user.id);
        self.cache
            .set(&marker, Bytes::from_static(b"1"), Some(self.marker_ttl()))
            .await
            .map_err(cache_err)?;
        self.bump_identity_version(user.id).await?;
        Ok(user.email)
    }

    async fn send(&self, mail: skillup_kit::mailer::Email) -> Result<()> {
        self.mailer.send(mail).await.map_err(|e| AuthError::Unavailable(format!("mailer: {e}")))
    }
}

impl Auth {
    /// Deletes the caller's account, confirmed by the password. Every session and token ends
    /// at once (the revocation markers outlive any token); the row stays only as a tombstone
    /// of its id (address, name, password and sessions erased) and its `user.deleted` commits
    /// with it, so every service forgets the person.
    pub async fn delete_me(&self, who: &Caller, pw: &str) -> Result<()> {
        let user = self.user(account_of(who)?).await?;
        if pw.is_empty() {
            return Err(invalid("password", skillup_kit::invalid::required("password")));
        }
        if !password::verify(SecretString::from(pw.to_owned()), user.password_hash.clone()).await {
            return Err(refused("password", "password-wrong", 0));
        }
        // Tokens die first: from here on the account answers to nobody.
        self.logout_all(user.id).await?;
        let off = format!("auth:off:{}", user.id);
        self.cache
            .set(&off, Bytes::from_static(b"1"), Some(self.marker_ttl()))
            .await
            .map_err(cache_err)?;
        let txn = self.db.begin().await?;
        self.store.erase(&txn, user.id).await?;
        self.exports.forget_user(&txn, user.id).await?;
        self.api_keys.forget_user(&txn, user.id).await?;
        let msg = crate::events::deleted(user.id);
        self.outbox.add(&txn, &format!("deleted:{}", user.id), &user.id.to_string(), &msg).await?;
        txn.commit().await?;
        self.outbox.wake();
        for marker in ["tier", "ev", "loc"] {
            self.cache.delete(&format!("auth:{marker}:{}", user.id)).await.map_err(cache_err)?;
        }
        self.bump_identity_version(user.id).await?;
        self.forget_profile(user.id);
        Ok(())
    }
}
