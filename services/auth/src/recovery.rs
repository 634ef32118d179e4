//! Revocation that survives the cache losing its data. Logout, session revocation and
//! deactivation are written to PostgreSQL and marked in the cache, where `ValidateToken` reads
//! them in one round trip. A cache that was flushed, replaced or evicted its keys would forget
//! the marks, and tokens of a signed-out session or a deactivated account would work again
//! until they expire. So the cache also holds a sentinel ([`CACHE_EPOCH_KEY`], no expiry),
//! written only once the marks are in: without it, `ValidateToken` asks PostgreSQL about the
//! token's session and account, and one call puts the marks back from PostgreSQL (sessions
//! revoked within an access token's life, every deactivated account, their identity stamps
//! rewritten so every edge drops what it cached), then writes the sentinel. The edge, for its
//! part, trusts no cached decision while the sentinel is missing.

use std::{collections::BTreeSet, sync::atomic::Ordering};

use bytes::Bytes;
use skillup_kit::identity::CACHE_EPOCH_KEY;
use uuid::Uuid;

use crate::{
    auth::*,
    error::{AuthError, Result},
};

impl Auth {
    /// Puts the revocation marks back, unless this replica is at it already (then the caller
    /// goes on with PostgreSQL's answer alone).
    pub(crate) async fn cache_lost(&self) {
        if self.recovering.swap(true, Ordering::SeqCst) {
            return;
        }
        // Another replica (or this one, a moment ago) may have put them back already.
        if let Ok(Some(_)) = self.cache.get(CACHE_EPOCH_KEY).await {
            self.recovering.store(false, Ordering::SeqCst);
            return;
        }
        match self.rebuild_marks().await {
            // A new cache (a first start) has nothing to lose.
            Ok(0) => tracing::info!("revocation marks: none needed in this cache"),
            Ok(n) => tracing::warn!(
                marks = n,
                "the cache had lost auth's revocation marks; they are back from PostgreSQL"
            ),
            Err(e) => {
                tracing::error!(error = %e, "revocation marks not rebuilt; PostgreSQL answers until they are")
            }
        }
        self.recovering.store(false, Ordering::SeqCst);
    }

    /// Refuses a token whose session was revoked or whose account is deactivated or gone, by
    /// PostgreSQL.
    pub(crate) async fn check_in_database(&self, user: Uuid, session: Uuid) -> Result<()> {
        match self.store.session(session).await? {
            Some(s) if s.revoked_at.is_none() => {}
            _ => return Err(AuthError::Revoked("the access token was revoked")),
        }
        match self.store.user(user).await? {
            Some(u) if u.is_active => Ok(()),
            _ => Err(AuthError::Forbidden("error-deactivated")),
        }
    }

    /// Writes the marks PostgreSQL implies, then the sentinel; answers how many marks.
    async fn rebuild_marks(&self) -> Result<usize> {
        let ttl = self.marker_ttl();
        let since = now() - chrono::Duration::from_std(ttl).unwrap_or_default();
        let mut touched = BTreeSet::new();
        let mut marks = 0;
        for (session, user) in self.store.sessions_revoked_since(since).await? {
            self.cache
                .set(&format!("auth:sid:{session}"), Bytes::from_static(b"1"), Some(ttl))
                .await
                .map_err(cache_err)?;
            touched.insert(user);
            marks += 1;
        }
        for user in self.store.inactive_users().await? {
            self.cache
                .set(&format!("auth:off:{user}"), Bytes::from_static(b"1"), None)
                .await
                .map_err(cache_err)?;
            touched.insert(user);
            marks += 1;
        }
        for user in touched {
            self.bump_identity_version(user).await?;
        }
        let stamp = Bytes::from(now().to_rfc3339());
        self.cache.set(CACHE_EPOCH_KEY, stamp, None).await.map_err(cache_err)?;
        Ok(marks)
    }
}
