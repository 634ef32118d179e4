//! The ledger's tables: accounts with their balances, transactions, and postings.

pub mod entities;
pub mod ledger;
pub mod migration;

/// The table `payment.succeeded` / `payment.failed` events wait in until the broker has them.
pub const OUTBOX: &str = "payment_outbox";
