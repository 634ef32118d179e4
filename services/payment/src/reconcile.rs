//! The reconciliation job: settles checkouts whose notification never came by asking the
//! provider, finishes the ones whose create call failed midway (the same provider key finds the
//! payment the provider may have made), expires abandoned ones, and ends refunds to the card the
//! provider has answered about (or asks again for those it never answered). Safe on any number of
//! replicas: each checkout is claimed by a conditional update of its next check before it is
//! looked at, and settling is idempotent anyway.

use std::time::Duration;

use skillup_kit::Shutdown;

use crate::{
    checkout::Checkouts,
    domain::{CheckoutStatus as Status, RefundStatus},
    error::Result,
};

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Checkouts this replica claimed and asked about.
    pub checked: usize,
    pub credited: usize,
    pub canceled: usize,
    pub expired: usize,
    /// Refunds to the card whose provider answer this run applied.
    pub refunds_ended: usize,
}

/// Checkouts looked at per run, at most.
const BATCH: u64 = 200;

impl Checkouts {
    /// One run at `now`.
    pub async fn reconcile(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Tally> {
        let mut tally = Tally::default();
        for row in self.store.due(now, BATCH).await? {
            let next = now + self.terms.reconcile_every;
            if !self.store.claim(row.id, row.next_check_at, next).await? {
                continue;
            }
            tally.checked += 1;
            let overdue = (now - row.created_at).to_std().unwrap_or_default() >= self.terms.ttl;
            let payment = match &row.provider_payment_id {
                Some(id) => Some(id.clone()),
                // Never opened at the provider (its create call failed): try again while it may
                // still be paid, with the same key.
                None if !overdue => match self.open(row.clone()).await {
                    Ok(opened) => opened.provider_payment_id,
                    Err(e) => {
                        tracing::warn!(checkout = %row.id, error = %e, "reopening a checkout failed");
                        None
                    }
                },
                None => None,
            };
            if let Some(id) = payment {
                match self.provider.fetch(&id).await {
                    Ok(p) => match self.settle(p).await? {
                        "credited" => tally.credited += 1,
                        "canceled" => tally.canceled += 1,
                        _ => {}
                    },
                    Err(e) => {
                        tracing::warn!(checkout = %row.id, error = %e, "asking the provider failed");
                        continue;
                    }
                }
            }
            let still = self.store.get(row.id).await?;
            if overdue && still.is_some_and(|c| c.status == Status::Pending) {
                let why = "not paid in time";
                if self.store.end_unpaid(row.id, Status::Expired, why, now).await? {
                    tally.expired += 1;
                }
            }
        }
        self.reconcile_refunds(now, &mut tally).await?;
        if tally != Tally::default() {
            tracing::info!(?tally, "checkouts reconciled");
            for (outcome, n) in [
                ("credited", tally.credited),
                ("canceled", tally.canceled),
                ("expired", tally.expired),
                ("refund_ended", tally.refunds_ended),
            ] {
                metrics::counter!("skillup_payment_reconciled_total", "outcome" => outcome)
                    .increment(n as u64);
            }
        }
        Ok(tally)
    }

    /// Pending refunds to the card: asked again with the same key when the provider never
    /// answered, else fetched; what the provider says is applied.
    async fn reconcile_refunds(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        tally: &mut Tally,
    ) -> Result<()> {
        for r in self.refunds.due(now, BATCH).await? {
            let next = now + self.terms.reconcile_every;
            if !self.refunds.claim(r.id, r.next_check_at, next).await? {
                continue;
            }
            tally.checked += 1;
            let ended = match &r.provider_refund_id {
                None => match self.store.get(r.checkout_id).await? {
                    Some(c) => {
                        self.ask_provider(r.clone(), &c).await?.status != RefundStatus::Pending
                    }
                    None => false,
                },
                Some(id) => match self.provider.fetch_refund(id).await {
                    Ok(report) => self.settle_refunds(vec![report]).await? == "refunded",
                    Err(e) => {
                        tracing::warn!(refund = %r.id, error = %e, "asking the provider about a refund failed");
                        false
                    }
                },
            };
            if ended {
                tally.refunds_ended += 1;
            }
        }
        Ok(())
    }

    /// Runs [`Self::reconcile`] every `reconcile_every` (with jitter, so replicas drift apart)
    /// until `shutdown`.
    pub fn spawn_reconciler(self, shutdown: Shutdown) {
        tokio::spawn(async move {
            let every = self.terms.reconcile_every;
            loop {
                let jitter =
                    Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_u128() as u16) % 1000);
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(every + jitter) => {}
                }
                if let Err(e) = self.reconcile(chrono::Utc::now()).await {
                    tracing::warn!(error = %e, "checkout reconciliation failed");
                }
            }
        });
    }
}
