//! What the payment service holds about one person, for their data export: `wallets.json`
//! (each currency's balance) and `transactions.json` (every ledger entry of theirs: top-ups,
//! charges, refunds, refused ones too), read page by page. The ledger keeps these entries
//! after an account is deleted — the books must balance — with no personal data in them.

use chrono::{DateTime, Utc};
use sea_orm::ActiveEnum;
use serde::Serialize;
use skillup_kit::export::{ExportError, Sink};
use uuid::Uuid;

use crate::{
    error::{PaymentError, Result},
    ledger::Ledger,
};

/// Entries read at a time.
const PAGE: u64 = 500;

#[derive(Serialize)]
struct Wallet {
    currency: String,
    balance_minor: i64,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct Entry {
    id: Uuid,
    kind: String,
    status: String,
    amount_minor: i64,
    currency: String,
    balance_after_minor: i64,
    description: String,
    refunded_transaction_id: Option<Uuid>,
    refunded_minor: i64,
    failure_reason: String,
    created_at: DateTime<Utc>,
}

impl Ledger {
    /// Writes the user's wallets and ledger entries (newest first) into `sink`.
    pub async fn export_user(&self, user: Uuid, sink: &Sink) -> Result<()> {
        let wallets: Vec<Wallet> = (self.store.wallets(user).await?.into_iter())
            .map(|a| Wallet {
                currency: a.currency,
                balance_minor: a.balance_minor,
                updated_at: a.updated_at,
            })
            .collect();
        sink.json("wallets.json", &wallets).await.map_err(abandoned)?;
        let mut list = sink.json_array("transactions.json");
        let mut before = None;
        loop {
            let rows = self.store.entries(user, before, PAGE).await?;
            for t in &rows {
                let entry = Entry {
                    id: t.id,
                    kind: t.kind.to_value(),
                    status: t.status.to_value(),
                    amount_minor: t.amount_minor,
                    currency: t.currency.clone(),
                    balance_after_minor: t.balance_after_minor,
                    description: t.description.clone(),
                    refunded_transaction_id: t.refunded_transaction_id,
                    refunded_minor: t.refunded_minor,
                    failure_reason: t.failure_reason.clone(),
                    created_at: t.created_at,
                };
                list.push(&entry).await.map_err(abandoned)?;
            }
            match rows.last() {
                Some(last) if rows.len() as u64 == PAGE => before = Some(last.id),
                _ => break,
            }
        }
        list.finish().await.map_err(abandoned).map(drop)
    }
}

fn abandoned(e: ExportError) -> PaymentError {
    PaymentError::Unavailable(e.to_string())
}
