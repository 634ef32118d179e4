//! Quota holds at the subscribe service: reserved before the provider is called, then settled
//! by the tokens used or released on failure.

use std::time::Duration;

use uuid::Uuid;

use crate::{
    error::Result,
    ports::{Entitlement, HoldAsk, Release, Settled},
};

use crate::generator::*;

impl Generator {
    pub(crate) async fn reserve(
        &self,
        p: &Prepared,
        tokens: u64,
        key: &str,
        ttl: u32,
    ) -> Result<(String, u32)> {
        let ask = HoldAsk {
            user: p.user,
            function: p.req.function.clone(),
            tokens,
            key: key.to_owned(),
            ttl_secs: ttl,
        };
        let hold = self.inner.quota.reserve(&ask).await?;
        Ok((hold.id, hold.priority))
    }

    /// Settles a hold by what was used; retried, since the answer was already produced (a
    /// hold left unsettled lapses back to the user after its TTL — under-charging, never over).
    /// `false`: not settled, worth trying again later. `queue_wait`: queued work's 202 →
    /// start (the plans' service levels measure it).
    pub(crate) async fn commit(
        &self,
        hold_id: &str,
        tokens: u64,
        queue_wait: Option<Duration>,
    ) -> bool {
        for attempt in 0..3u32 {
            match self.inner.quota.commit(hold_id, tokens, queue_wait).await {
                Ok(Settled::Now) => return true,
                Ok(Settled::Already) => {
                    // Settled another way already (released by a cancel): nothing to charge.
                    tracing::info!(hold = hold_id, "hold already settled");
                    return true;
                }
                Ok(Settled::Gone) => {
                    // Only a database crash right after the reserve loses a hold (holds commit
                    // without waiting for the WAL flush): nothing to charge, nothing to retry.
                    tracing::error!(
                        hold = hold_id,
                        "the hold is gone; this generation is not charged"
                    );
                    return true;
                }
                Err(e) => {
                    tracing::warn!(hold = hold_id, error = %e, "committing the hold failed");
                    tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
                }
            }
        }
        false
    }

    /// Gives a hold back (the generation failed or was cancelled: `why`).
    pub(crate) async fn release(&self, hold_id: &str, why: Release) -> bool {
        self.release_after(hold_id, why, None).await
    }

    /// [`Self::release`] of queued work that waited `queue_wait` to start.
    pub(crate) async fn release_after(
        &self,
        hold_id: &str,
        why: Release,
        queue_wait: Option<Duration>,
    ) -> bool {
        for attempt in 0..3u32 {
            match self.inner.quota.release(hold_id, why, queue_wait).await {
                Ok(Settled::Now | Settled::Already) => return true,
                Ok(Settled::Gone) | Err(_) => {
                    tracing::warn!(hold = hold_id, "releasing the hold failed");
                    tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
                }
            }
        }
        false
    }

    /// The quota idempotency key of a queued task: the client's key (so a concurrent retry
    /// finds the same hold), or a fresh one. Inline and streamed generations always take a
    /// fresh hold: their key is bound to the request by [`Self::claim`] instead.
    pub(crate) fn hold_key(p: &Prepared, fresh: &Uuid) -> String {
        if p.req.idempotency_key.is_empty() {
            format!("ai:{fresh}")
        } else {
            format!("ai:{}", &sha_hex(&[p.req.idempotency_key.as_bytes()])[..40])
        }
    }

    pub(crate) async fn entitlement(&self, p: &Prepared) -> Result<Entitlement> {
        self.inner.quota.entitlement(p.user, &p.req.function).await
    }
}
