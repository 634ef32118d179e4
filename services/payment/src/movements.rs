//! The movements users and services ask for: a top-up through the processor, a charge of a
//! wallet, a refund of (part of) a charge — each built as a [`Movement`] and applied by the
//! ledger (`ledger.rs`).

use uuid::Uuid;

use crate::{
    domain::{
        self, Authorization, Currency, IdempotencyKey, MinorUnits, TransactionKind as Kind,
        TransactionStatus as Status,
    },
    error::{PaymentError, Result},
    ledger::{Ledger, Movement, Outcome, hash, system_account, wallet},
};

impl Ledger {
    /// Adds money through the processor.
    pub async fn top_up(
        &self,
        user: Uuid,
        amount: MinorUnits,
        currency: Currency,
        key: IdempotencyKey,
        payment_method: &str,
    ) -> Result<Outcome> {
        let (amount, currency, key) = (amount.get(), currency.to_string(), key.as_str().to_owned());
        self.check_selling("currency", &currency)?;
        if payment_method.len() > 200 {
            return Err(PaymentError::Invalid(
                "payment_method",
                skillup_kit::invalid::at_most_chars("payment_method", 200),
            ));
        }
        let m = Movement {
            kind: Kind::TopUp,
            user_id: user,
            amount,
            currency: currency.clone(),
            from: system_account(&format!("processor:{}", self.provider.name()), &currency, user),
            to: wallet(user, &currency),
            hash: hash(&[
                "top-up",
                &user.to_string(),
                &amount.to_string(),
                &currency,
                payment_method,
            ]),
            key,
            description: format!("top-up ({})", self.provider.name()),
            refund_of: None,
            audit: None,
            settles: None,
            hold: None,
        };
        if let Some(existing) = self.existing(&m).await? {
            return self.replay(existing, &m.hash);
        }
        // The processor deduplicates by the same key, so racing duplicates capture once.
        let scoped_key = format!("{}:{}", m.scope(), m.key);
        match self.provider.capture(amount, &currency, payment_method, &scoped_key).await? {
            Authorization::Approved { .. } => self.apply(m).await,
            Authorization::Declined { reason } => self.refuse(m, reason).await,
        }
    }

    /// Credits the wallet with a paid checkout, once: its key is the checkout's (`checkout
    /// {id}`: a space, which no caller's key may hold), and the checkout is marked paid in the
    /// same transaction.
    pub(crate) async fn credit_checkout(
        &self,
        c: &crate::store::entities::checkout::Model,
    ) -> Result<Outcome> {
        let m = Movement {
            kind: Kind::TopUp,
            user_id: c.user_id,
            amount: c.amount_minor,
            currency: c.currency.clone(),
            from: system_account(&format!("processor:{}", c.provider), &c.currency, c.user_id),
            to: wallet(c.user_id, &c.currency),
            hash: hash(&["checkout", &c.id.to_string(), &c.amount_minor.to_string(), &c.currency]),
            key: format!("checkout {}", c.id),
            description: format!("top-up ({})", c.provider),
            refund_of: None,
            audit: None,
            settles: Some(c.id),
            hold: None,
        };
        self.apply(m).await
    }

    /// Debits a wallet (internal: subscriptions, usage).
    pub async fn charge(
        &self,
        user: Uuid,
        amount: MinorUnits,
        currency: Currency,
        key: IdempotencyKey,
        description: &str,
    ) -> Result<Outcome> {
        let (amount, currency, key) = (amount.get(), currency.to_string(), key.as_str().to_owned());
        let description = domain::description(description)?;
        let m = Movement {
            kind: Kind::Charge,
            user_id: user,
            amount,
            currency: currency.clone(),
            from: wallet(user, &currency),
            to: system_account("revenue", &currency, user),
            hash: hash(&[
                "charge",
                &user.to_string(),
                &amount.to_string(),
                &currency,
                &description,
            ]),
            key,
            description,
            refund_of: None,
            audit: None,
            settles: None,
            hold: None,
        };
        self.apply(m).await
    }

    /// Returns (part of) a charge.
    /// Returns `amount` (0: what is left) of charge `id`.
    pub async fn refund(
        &self,
        id: Uuid,
        amount: i64,
        key: IdempotencyKey,
        description: &str,
    ) -> Result<Outcome> {
        let (charge_id, key) = (id.to_string(), key.as_str().to_owned());
        let description = domain::description(description)?;
        let charge = self
            .store
            .entry(id)
            .await?
            .filter(|t| t.kind == Kind::Charge && t.status == Status::Succeeded)
            .ok_or_else(|| PaymentError::NotFound(format!("no successful charge {id}")))?;
        let amount = if amount == 0 { charge.amount_minor - charge.refunded_minor } else { amount };
        let amount = MinorUnits::parse("amount_minor", amount)?.get();
        let m = Movement {
            kind: Kind::Refund,
            user_id: charge.user_id,
            amount,
            currency: charge.currency.clone(),
            from: system_account("revenue", &charge.currency, charge.user_id),
            to: wallet(charge.user_id, &charge.currency),
            hash: hash(&["refund", &charge_id, &amount.to_string(), &description]),
            key,
            description,
            refund_of: Some(id),
            audit: None,
            settles: None,
            hold: None,
        };
        self.apply(m).await
    }

    /// A credit the platform issues by its own rules (a plan that missed its service level),
    /// in the selling currency, once per key.
    pub async fn service_credit(
        &self,
        user: Uuid,
        amount: MinorUnits,
        currency: Currency,
        key: IdempotencyKey,
        description: &str,
    ) -> Result<Outcome> {
        let (amount, currency, key) = (amount.get(), currency.to_string(), key.as_str().to_owned());
        self.check_selling("amount.currency", &currency)?;
        let description = domain::description(description)?;
        if description.is_empty() {
            return Err(PaymentError::Invalid(
                "description",
                skillup_kit::invalid::required("description"),
            ));
        }
        let m = Movement {
            kind: Kind::ServiceCredit,
            user_id: user,
            amount,
            currency: currency.clone(),
            from: system_account("service-credits", &currency, user),
            to: wallet(user, &currency),
            hash: hash(&[
                "credit",
                &user.to_string(),
                &amount.to_string(),
                &currency,
                &description,
            ]),
            key,
            description,
            refund_of: None,
            audit: None,
            settles: None,
            hold: None,
        };
        self.apply(m).await
    }

    /// An operator's adjustment: credits (`amount` > 0) or debits (< 0) a wallet, never below
    /// zero, with the reason in the ledger and its audit entry in the same transaction.
    pub async fn adjust(
        &self,
        actor: &skillup_kit::audit::Actor,
        user: Uuid,
        amount: i64,
        currency: Currency,
        key: IdempotencyKey,
        reason: &str,
    ) -> Result<Outcome> {
        let reason = skillup_kit::audit::reason(reason, true)
            .map_err(|m| PaymentError::Invalid("reason", m))?;
        let magnitude = MinorUnits::parse("amount_minor", amount.saturating_abs())?.get();
        let (currency, key) = (currency.to_string(), key.as_str().to_owned());
        self.check_selling("currency", &currency)?;
        let (kind, from, to) = if amount < 0 {
            (
                Kind::AdjustmentDebit,
                wallet(user, &currency),
                system_account("adjustments", &currency, user),
            )
        } else {
            (
                Kind::AdjustmentCredit,
                system_account("adjustments", &currency, user),
                wallet(user, &currency),
            )
        };
        let m = Movement {
            kind,
            user_id: user,
            amount: magnitude,
            currency: currency.clone(),
            from,
            to,
            hash: hash(&["adjust", &user.to_string(), &amount.to_string(), &currency, &reason]),
            key,
            // The ledger's line holds the reason's start; the audit entry keeps all of it.
            description: format!("adjustment: {}", reason.chars().take(186).collect::<String>()),
            refund_of: None,
            audit: Some((actor.clone(), reason, crate::events::adjustment_audit)),
            settles: None,
            hold: None,
        };
        self.apply(m).await
    }
}
