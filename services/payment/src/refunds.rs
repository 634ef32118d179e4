//! Money back to the card: an administrator refunds (part of) a paid checkout through its
//! provider. The amount is held from the wallet at once — a `refund_to_card` entry, PENDING,
//! never more than what is left of the checkout (a conditional update of its top-up entry's
//! refunded total), written with the refund's row and its audit entry — then taken for good when
//! the provider confirms, or put back when it refuses (`Ledger::finish_card_refund`). The
//! provider's answer comes back synchronously, by its notification, or by the reconciliation
//! job's question.

use sea_orm::Set;
use skillup_kit::audit::Actor;
use uuid::Uuid;

use crate::{
    checkout::Checkouts,
    domain::{CheckoutStatus, IdempotencyKey, MinorUnits, RefundStatus, TransactionKind as Kind},
    error::{PaymentError, Result},
    ledger::{Movement, hash, system_account, wallet},
    providers::{ProviderError, Refund, RefundOrder, RefundState},
    store::entities::{checkout, refund},
};

/// A refund and whether this call made it (false: the answer of a key sent again).
pub type Made = (refund::Model, bool);

impl Checkouts {
    /// Refunds `amount` (0: all that is left) of paid checkout `id` to its card, once per key.
    pub async fn refund(
        &self,
        actor: &Actor,
        id: Uuid,
        amount: i64,
        reason: &str,
        key: IdempotencyKey,
    ) -> Result<Made> {
        let reason = skillup_kit::audit::reason(reason, true)
            .map_err(|m| PaymentError::Invalid("reason", m))?;
        let c = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| PaymentError::NotFound(format!("no checkout {id}")))?;
        let request_hash = hash(&["card-refund", &id.to_string(), &amount.to_string(), &reason]);
        if let Some(found) = self.refunds.by_key(id, key.as_str()).await? {
            return self.replayed(found, &request_hash).await;
        }
        let Some(top_up) = c.transaction_id.filter(|_| c.status == CheckoutStatus::Succeeded)
        else {
            return Err(PaymentError::Conflict(format!("checkout {id} was not paid")));
        };
        if c.provider != self.provider.name() {
            return Err(PaymentError::Conflict(format!(
                "checkout {id} was paid through {}, not this deployment's provider",
                c.provider
            )));
        }
        let left = self.ledger.refundable(top_up).await?;
        let amount =
            MinorUnits::parse("amount_minor", if amount == 0 { left } else { amount })?.get();
        let refund_id = Uuid::now_v7();
        let now = chrono::Utc::now();
        let row = refund::ActiveModel {
            id: Set(refund_id),
            checkout_id: Set(id),
            user_id: Set(c.user_id),
            provider: Set(c.provider.clone()),
            provider_refund_id: Set(None),
            status: Set(RefundStatus::Pending),
            amount_minor: Set(amount),
            currency: Set(c.currency.clone()),
            reason: Set(reason.clone()),
            failure_reason: Set(String::new()),
            idempotency_key: Set(key.as_str().to_owned()),
            request_hash: Set(request_hash.clone()),
            transaction_id: Set(Uuid::nil()),
            created_at: Set(now),
            updated_at: Set(now),
            next_check_at: Set(now + self.terms.reconcile_after),
        };
        let m = Movement {
            kind: Kind::RefundToCard,
            user_id: c.user_id,
            amount,
            currency: c.currency.clone(),
            from: wallet(c.user_id, &c.currency),
            to: system_account("refund-holds", &c.currency, c.user_id),
            // One ledger key per (checkout, administrator's key): duplicates meet at its index.
            hash: request_hash.clone(),
            key: format!("card-refund {}", &hash(&[&id.to_string(), key.as_str()])[..40]),
            description: format!(
                "refund to card: {}",
                reason.chars().take(180).collect::<String>()
            ),
            refund_of: Some(top_up),
            audit: Some((actor.clone(), reason, crate::events::card_refund_audit)),
            settles: None,
            hold: Some(row),
        };
        let (entry, new) = self.ledger.apply(m).await?;
        let made = self
            .refunds
            .by_entry(entry.id)
            .await?
            .ok_or_else(|| PaymentError::Unavailable("the refund's row".into()))?;
        if !new {
            return self.replayed(made, &request_hash).await;
        }
        Ok((self.ask_provider(made, &c).await?, true))
    }

    /// The answer of a key sent again: the same refund, or a refusal when the request differs.
    async fn replayed(&self, found: refund::Model, request_hash: &str) -> Result<Made> {
        if found.request_hash != request_hash {
            return Err(PaymentError::KeyReused);
        }
        Ok((found, false))
    }

    /// Asks the provider to return a held refund (with the same key every time) and applies
    /// what it says; a provider that does not answer leaves it pending for the job.
    pub(crate) async fn ask_provider(
        &self,
        r: refund::Model,
        c: &checkout::Model,
    ) -> Result<refund::Model> {
        let Some(payment) = &c.provider_payment_id else {
            return Err(PaymentError::Conflict("the checkout has no provider payment".into()));
        };
        let order = RefundOrder {
            refund_id: r.id,
            provider_payment_id: payment.clone(),
            amount_minor: r.amount_minor,
            currency: r.currency.clone(),
            idempotency_key: format!("skillup-refund-{}", r.id),
        };
        match self.provider.refund(&order).await {
            Ok(answer) => {
                let now = chrono::Utc::now();
                self.refunds.set_provider_refund(r.id, &answer.provider_refund_id, now).await?;
                self.finish(&r, answer.state).await?;
            }
            Err(ProviderError::Refused(why)) => {
                self.finish(&r, RefundState::Failed { reason: why }).await?;
            }
            Err(e) => {
                tracing::warn!(refund = %r.id, error = %e, "the provider did not answer a refund; the job asks again")
            }
        }
        Ok(self.refunds.get(r.id).await?.unwrap_or(r))
    }

    /// Applies what the provider says about refunds (a verified notification, or fetched).
    pub(crate) async fn settle_refunds(&self, reports: Vec<Refund>) -> Result<&'static str> {
        let mut outcome = "ignored";
        for report in reports {
            let by_id = match report.refund_id {
                Some(id) => self.refunds.get(id).await?,
                None => None,
            };
            let found = match by_id {
                Some(r) => Some(r),
                None => {
                    let name = self.provider.name();
                    self.refunds.by_provider_refund(name, &report.provider_refund_id).await?
                }
            };
            let Some(r) = found.filter(|r| r.provider == self.provider.name()) else { continue };
            if r.provider_refund_id.is_none() {
                let now = chrono::Utc::now();
                self.refunds.set_provider_refund(r.id, &report.provider_refund_id, now).await?;
            } else if r.provider_refund_id.as_deref() != Some(&report.provider_refund_id) {
                continue;
            }
            if self.finish(&r, report.state).await? {
                outcome = "refunded";
            } else if outcome == "ignored" {
                outcome = "pending";
            }
        }
        Ok(outcome)
    }

    /// Ends a pending refund as `state` says (true: this call ended it).
    async fn finish(&self, r: &refund::Model, state: RefundState) -> Result<bool> {
        match state {
            RefundState::Pending => Ok(false),
            RefundState::Succeeded => self.ledger.finish_card_refund(r, Ok(())).await,
            RefundState::Failed { reason } => self.ledger.finish_card_refund(r, Err(reason)).await,
        }
    }

    /// A person's checkouts (newest first, `page_size` of them after cursor `before`) with
    /// their refunds, for an administrator.
    pub async fn of_user(
        &self,
        user: Uuid,
        page_size: u32,
        before: &str,
    ) -> Result<(Vec<(checkout::Model, Vec<refund::Model>)>, String)> {
        let page = crate::domain::Page::parse(page_size, before)?;
        let rows = self.store.of_user(user, page.before, page.size + 1).await?;
        let (rows, next) = page.cut(rows, |c| c.id);
        let ids: Vec<Uuid> = rows.iter().map(|c| c.id).collect();
        let mut refunds = self.refunds.of_checkouts(&ids).await?;
        let out = rows
            .into_iter()
            .map(|c| {
                let (mine, rest) = refunds.drain(..).partition(|r| r.checkout_id == c.id);
                refunds = rest;
                (c, mine)
            })
            .collect();
        Ok((out, next))
    }

    /// The refunds of one checkout.
    pub async fn refunds_of(&self, checkout: Uuid) -> Result<Vec<refund::Model>> {
        Ok(self.refunds.of_checkouts(&[checkout]).await?)
    }
}

/// What of a checkout's refunds is returned or on its way (the failed ones gave it back).
pub fn refunded(refunds: &[refund::Model]) -> i64 {
    refunds.iter().filter(|r| r.status != RefundStatus::Failed).map(|r| r.amount_minor).sum()
}
