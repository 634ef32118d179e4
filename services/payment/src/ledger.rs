//! The ledger: its state, balances, listings and the audit, and how a movement is applied (the
//! three movements users and services ask for are in `movements.rs`). Every movement is one database transaction that writes the user-facing entry,
//! moves the balances (the debit is a conditional update, so a wallet never goes below zero,
//! on SQLite and PostgreSQL alike) and writes two postings that sum to zero. Idempotency keys
//! are unique per kind and user: a duplicate — sequential or concurrent — meets the first
//! entry at the unique index and gets its answer; the same key with another request is refused.

use std::{sync::Arc, time::Duration};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Set, TransactionTrait};
use sha2::{Digest, Sha256};
use skillup_kit::{
    bus::SharedBus,
    db::{is_busy as busy, is_unique_violation as unique_violation},
    outbox::Outbox,
};
use uuid::Uuid;

use crate::{
    domain::{
        Balance, Currency, PaymentProvider, TransactionKind as Kind, TransactionStatus as Status,
    },
    error::{PaymentError, Result},
    store::{entities::transaction, ledger::LedgerStore},
};

/// The currency of a balance asked for without one, when the ledger has no selling currency.
pub const DEFAULT_CURRENCY: &str = "RUB";

#[derive(Clone)]
pub struct Ledger {
    db: DatabaseConnection,
    pub(crate) store: LedgerStore,
    outbox: Outbox,
    pub(crate) provider: Arc<dyn PaymentProvider>,
    /// The one currency money comes in (top-ups, adjustments); `None`: any.
    selling: Option<String>,
}

/// A ledger entry and whether this call made it (false: an idempotent replay).
pub type Outcome = (transaction::Model, bool);

pub(crate) struct Movement {
    pub(crate) kind: Kind,
    pub(crate) user_id: Uuid,
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) key: String,
    pub(crate) hash: String,
    pub(crate) description: String,
    /// For refunds: the charge, whose refunded total may not exceed its amount.
    pub(crate) refund_of: Option<Uuid>,
    /// For an operator's action: who, why, and how its audit entry reads (it commits with it).
    pub(crate) audit: Option<(skillup_kit::audit::Actor, String, crate::events::AuditOf)>,
    /// For a checkout's top-up: the checkout, marked paid in the same transaction.
    pub(crate) settles: Option<Uuid>,
    /// For a refund to the card: its row, written with the entry; the entry stays PENDING
    /// (the money held) until the provider answers ([`Ledger::finish_card_refund`]).
    pub(crate) hold: Option<crate::store::entities::refund::ActiveModel>,
}

impl Movement {
    pub(crate) fn scope(&self) -> String {
        format!("{}:{}", self.kind.scope_number(), self.user_id)
    }

    /// The ledger entry of this movement, succeeded or refused.
    fn entry(
        &self,
        id: Uuid,
        status: Status,
        failure_reason: String,
        at: chrono::DateTime<chrono::Utc>,
    ) -> transaction::ActiveModel {
        transaction::ActiveModel {
            id: Set(id),
            user_id: Set(self.user_id),
            kind: Set(self.kind),
            status: Set(status),
            amount_minor: Set(self.amount),
            currency: Set(self.currency.clone()),
            balance_after_minor: Set(0),
            idempotency_scope: Set(self.scope()),
            idempotency_key: Set(self.key.clone()),
            request_hash: Set(self.hash.clone()),
            description: Set(self.description.clone()),
            refunded_transaction_id: Set(self.refund_of),
            refunded_minor: Set(0),
            failure_reason: Set(failure_reason),
            created_at: Set(at),
        }
    }
}

/// Shards of each system account: every movement locks its system account's row until commit,
/// so one row would serialise every user's payments; a user's movements always use the same
/// shard, and the system's balance is the sum over its shards.
pub const SYSTEM_SHARDS: u128 = 16;

pub(crate) fn system_account(name: &str, currency: &str, user: Uuid) -> String {
    format!("system:{name}:{currency}:{}", user.as_u128() % SYSTEM_SHARDS)
}

pub(crate) fn wallet(user: Uuid, currency: &str) -> String {
    format!("user:{user}:{currency}")
}

pub(crate) fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn backoff(attempt: u64) -> u64 {
    Ord::min(attempt * 3, 50)
}

/// Why a movement did not happen.
enum Refused {
    Insufficient,
    RefundTooLarge,
}

impl Ledger {
    pub fn new(db: DatabaseConnection, bus: SharedBus, provider: Arc<dyn PaymentProvider>) -> Self {
        let outbox = Outbox::new(db.clone(), bus, crate::store::OUTBOX);
        Self { store: LedgerStore::new(db.clone()), outbox, db, provider, selling: None }
    }

    /// Money comes in only in `currency` (`payment.currency`): a top-up or an adjustment in
    /// another is refused, naming it (a wallet in a currency nothing is priced in strands the
    /// money).
    pub fn selling_in(mut self, currency: &str) -> Self {
        self.selling = Some(currency.to_owned());
        self
    }

    /// Refuses money in any currency but the selling one.
    pub(crate) fn check_selling(&self, field: &'static str, currency: &str) -> Result<()> {
        match &self.selling {
            Some(selling) if selling != currency => Err(PaymentError::Invalid(
                field,
                skillup_kit::invalid::currency_only(field, selling),
            )),
            _ => Ok(()),
        }
    }

    /// A wallet's balance (`None`: the selling currency's, else [`DEFAULT_CURRENCY`]'s).
    pub async fn balance(&self, user: Uuid, currency: Option<Currency>) -> Result<Balance> {
        let currency = currency.map_or_else(
            || self.selling.clone().unwrap_or_else(|| DEFAULT_CURRENCY.to_owned()),
            |c| c.to_string(),
        );
        let row = self.store.account(&wallet(user, &currency)).await?;
        Ok(Balance {
            user,
            available_minor: row.as_ref().map_or(0, |a| a.balance_minor),
            currency,
            updated_at: row.map(|a| a.updated_at),
        })
    }

    /// The caller's entries, newest first; `page_token` is the last id seen.
    pub async fn list(
        &self,
        user: Uuid,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<transaction::Model>, String)> {
        let page = crate::domain::Page::parse(page_size, page_token)?;
        let rows = self.store.entries(user, page.before, page.size + 1).await?;
        Ok(page.cut(rows, |r| r.id))
    }

    pub(crate) async fn existing(&self, m: &Movement) -> Result<Option<transaction::Model>> {
        Ok(self.store.entry_by_key(&m.scope(), &m.key).await?)
    }

    /// The first answer for a key, or a refusal when the request differs.
    pub(crate) fn replay(&self, t: transaction::Model, hash: &str) -> Result<Outcome> {
        if t.request_hash != hash {
            return Err(PaymentError::KeyReused);
        }
        if t.status == Status::Failed {
            return Err(if t.kind == Kind::TopUp {
                PaymentError::Declined(t.failure_reason)
            } else {
                PaymentError::InsufficientFunds(format!("{} {}", t.amount_minor, t.currency))
            });
        }
        Ok((t, false))
    }

    /// Applies a movement once per key; retries what SQLite reports as busy.
    pub(crate) async fn apply(&self, m: Movement) -> Result<Outcome> {
        for attempt in 0..50u64 {
            if let Some(existing) = self.existing(&m).await? {
                // A charge refused for want of funds moved nothing: the same request may try
                // again once the balance allows (the refusal is not a result to hold on to).
                // Anything else — a success, a processor's decline — is the answer for the key.
                let retry_refused = existing.status == Status::Failed
                    && existing.kind == Kind::Charge
                    && existing.request_hash == m.hash;
                if !retry_refused {
                    return self.replay(existing, &m.hash);
                }
                self.store.forget_refusal(existing.id).await?;
                continue;
            }
            match self.try_apply(&m).await {
                Ok(Ok(t)) => {
                    self.outbox.wake();
                    return Ok((t, true));
                }
                // Money that was spent cannot go back to the card: nothing is recorded.
                Ok(Err(Refused::Insufficient)) if m.hold.is_some() => {
                    return Err(PaymentError::InsufficientFunds(format!(
                        "{} {} (the wallet holds less: the money was spent)",
                        m.amount, m.currency
                    )));
                }
                Ok(Err(Refused::Insufficient)) => {
                    return self.refuse(m, "insufficient funds".into()).await;
                }
                Ok(Err(Refused::RefundTooLarge)) => {
                    return Err(PaymentError::Invalid(
                        "amount_minor",
                        "the refund is more than what is left of the charge".into(),
                    ));
                }
                // A concurrent duplicate got there first: its answer is ours.
                Err(e) if unique_violation(&e) => continue,
                Err(e) if busy(&e) => {
                    tokio::time::sleep(Duration::from_millis(2 + backoff(attempt))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(PaymentError::Unavailable("the ledger stayed busy".into()))
    }

    async fn try_apply(
        &self,
        m: &Movement,
    ) -> std::result::Result<std::result::Result<transaction::Model, Refused>, DbErr> {
        let wallet_user = Some(m.user_id);
        let (from_user, to_user) = match m.kind {
            Kind::Charge | Kind::AdjustmentDebit => (wallet_user, None),
            _ => (None, wallet_user),
        };
        let now = chrono::Utc::now();
        let id = Uuid::now_v7();
        let txn = self.db.begin().await?;
        let store = &self.store;
        // Accounts are made on first use, inside the movement (no commit of their own).
        store.ensure_account(&txn, &m.from, from_user, &m.currency).await?;
        store.ensure_account(&txn, &m.to, to_user, &m.currency).await?;
        // The entry first: the unique index stops a concurrent duplicate here, before any
        // money moves.
        let status = if m.hold.is_some() { Status::Pending } else { Status::Succeeded };
        store.insert_entry(&txn, m.entry(id, status, String::new(), now)).await?;
        if let Some(charge) = m.refund_of
            && !store.add_refunded(&txn, charge, m.amount).await?
        {
            txn.rollback().await?;
            return Ok(Err(Refused::RefundTooLarge));
        }
        // The debit is conditional: a wallet never goes below zero, whatever runs beside it.
        if !store.debit(&txn, &m.from, m.amount, now).await? {
            txn.rollback().await?;
            return Ok(Err(Refused::Insufficient));
        }
        store.credit(&txn, &m.to, m.amount, now).await?;
        store.post(&txn, id, &m.from, &m.to, m.amount, now).await?;
        let row = store.stamp_balance(&txn, id, &wallet(m.user_id, &m.currency)).await?;
        match &m.hold {
            // A held refund's event comes with its end.
            Some(refund) => {
                let mut refund = refund.clone();
                refund.transaction_id = sea_orm::Set(id);
                crate::store::refunds::RefundStore::insert(&txn, refund).await?;
            }
            None => self.record_event(&txn, &row).await?,
        }
        if let Some(checkout) = m.settles {
            crate::store::checkouts::CheckoutStore::mark_paid(&txn, checkout, id, now).await?;
        }
        if let Some((actor, reason, audit_of)) = &m.audit {
            let entry = audit_of(actor, reason, &row);
            self.outbox.add(&txn, &entry.id.clone(), &m.user_id.to_string(), &entry).await?;
        }
        txn.commit().await?;
        Ok(Ok(row))
    }

    /// Ends a held refund to the card as the provider answered: `Ok` takes the held money to
    /// the provider (the entry SUCCEEDED), `Err(reason)` puts it back in the wallet (FAILED, and
    /// the amount may be refunded again); the entry's event — the person's notification —
    /// commits with it. False when the refund had already ended (a repeated answer).
    pub async fn finish_card_refund(
        &self,
        refund: &crate::store::entities::refund::Model,
        outcome: std::result::Result<(), String>,
    ) -> Result<bool> {
        let entry =
            self.store.entry(refund.transaction_id).await?.ok_or_else(|| {
                PaymentError::NotFound(format!("no entry of refund {}", refund.id))
            })?;
        for attempt in 0..50u64 {
            match self.try_finish(refund, &entry, &outcome).await {
                Ok(done) => {
                    self.outbox.wake();
                    return Ok(done);
                }
                Err(e) if busy(&e) => {
                    tokio::time::sleep(Duration::from_millis(2 + backoff(attempt))).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(PaymentError::Unavailable("the ledger stayed busy".into()))
    }

    async fn try_finish(
        &self,
        refund: &crate::store::entities::refund::Model,
        entry: &transaction::Model,
        outcome: &std::result::Result<(), String>,
    ) -> std::result::Result<bool, DbErr> {
        use crate::{domain::RefundStatus, store::refunds::RefundStore};
        let now = chrono::Utc::now();
        let (user, currency, amount) = (refund.user_id, &refund.currency, refund.amount_minor);
        let (status, refund_status, reason) = match outcome {
            Ok(()) => (Status::Succeeded, RefundStatus::Succeeded, ""),
            Err(why) => (Status::Failed, RefundStatus::Failed, why.as_str()),
        };
        let reason: String = reason.chars().take(500).collect();
        let txn = self.db.begin().await?;
        if !RefundStore::finish(&txn, refund.id, refund_status, &reason, now).await? {
            txn.rollback().await?;
            return Ok(false);
        }
        let store = &self.store;
        store.set_status(&txn, entry.id, status, &reason).await?;
        let holds = system_account("refund-holds", currency, user);
        let to = match outcome {
            Ok(()) => system_account(&format!("processor:{}", refund.provider), currency, user),
            Err(_) => {
                if let Some(top_up) = entry.refunded_transaction_id {
                    store.sub_refunded(&txn, top_up, amount).await?;
                }
                wallet(user, currency)
            }
        };
        let to_user = outcome.is_err().then_some(user);
        store.ensure_account(&txn, &to, to_user, currency).await?;
        store.debit(&txn, &holds, amount, now).await?;
        store.credit(&txn, &to, amount, now).await?;
        store.post(&txn, entry.id, &holds, &to, amount, now).await?;
        let row = store.stamp_balance(&txn, entry.id, &wallet(user, currency)).await?;
        self.record_event(&txn, &row).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Records a refused movement under its key (so a retry gets the same answer) and says why.
    pub(crate) async fn refuse(&self, m: Movement, reason: String) -> Result<Outcome> {
        for attempt in 0..50u64 {
            let row = m.entry(Uuid::now_v7(), Status::Failed, reason.clone(), chrono::Utc::now());
            match self.insert_refusal(row).await {
                Ok(t) => {
                    self.outbox.wake();
                    return self.replay(t, &m.hash);
                }
                Err(e) if unique_violation(&e) => {
                    if let Some(existing) = self.existing(&m).await? {
                        return self.replay(existing, &m.hash);
                    }
                }
                Err(e) if busy(&e) => {
                    tokio::time::sleep(Duration::from_millis(2 + backoff(attempt))).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(PaymentError::Unavailable("the ledger stayed busy".into()))
    }

    /// A refused movement's entry and its event, in one transaction.
    async fn insert_refusal(
        &self,
        row: transaction::ActiveModel,
    ) -> std::result::Result<transaction::Model, DbErr> {
        let txn = self.db.begin().await?;
        let t = self.store.insert_entry(&txn, row).await?;
        self.record_event(&txn, &t).await?;
        txn.commit().await?;
        Ok(t)
    }

    /// Stores the event of entry `t` — `payment.succeeded`, or `payment.failed` — in the
    /// transaction that writes it; the outbox publishes it after the commit, under an id
    /// derived from the entry (consumers act on it once).
    async fn record_event<C: ConnectionTrait>(
        &self,
        txn: &C,
        t: &transaction::Model,
    ) -> std::result::Result<(), DbErr> {
        crate::events::record(&self.outbox, txn, t).await
    }

    /// What is left to refund of entry `id` (its amount less its refunded total).
    pub async fn refundable(&self, id: Uuid) -> Result<i64> {
        let e = self
            .store
            .entry(id)
            .await?
            .ok_or_else(|| PaymentError::NotFound(format!("no entry {id}")))?;
        Ok(e.amount_minor - e.refunded_minor)
    }

    /// Wallets with money in currencies other than `currency` (currency, wallets, minor units).
    pub async fn wallets_outside(&self, currency: &str) -> Result<Vec<(String, i64, i64)>> {
        Ok(self.store.wallets_outside(currency).await?)
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The outbox of this service's events (its relay runs in [`crate::build`]).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Invariant checks for tests and operators: every transaction's postings sum to zero and
    /// every account's balance equals the sum of its postings. Returns the offenders.
    pub async fn audit(&self) -> Result<Vec<String>> {
        let mut bad = Vec::new();
        let postings = self.store.all_postings().await?;
        let mut by_tx: std::collections::HashMap<Uuid, i64> = Default::default();
        let mut by_account: std::collections::HashMap<String, i64> = Default::default();
        for p in &postings {
            *by_tx.entry(p.transaction_id).or_default() += p.amount_minor;
            *by_account.entry(p.account_key.clone()).or_default() += p.amount_minor;
        }
        for (tx, sum) in by_tx {
            if sum != 0 {
                bad.push(format!("transaction {tx}: postings sum to {sum}"));
            }
        }
        for a in self.store.all_accounts().await? {
            let sum = by_account.get(&a.key).copied().unwrap_or(0);
            if sum != a.balance_minor {
                bad.push(format!(
                    "account {}: balance {} but postings sum to {sum}",
                    a.key, a.balance_minor
                ));
            }
            if !a.allow_negative && a.balance_minor < 0 {
                bad.push(format!("account {} is negative", a.key));
            }
        }
        Ok(bad)
    }
}
