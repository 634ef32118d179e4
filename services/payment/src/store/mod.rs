//! The ledger's tables (accounts with their balances, transactions, and postings), the
//! checkouts on providers' hosted pages, and the sandbox provider's payments.

pub mod checkouts;
pub mod entities;
pub mod ledger;
pub mod migration;
pub mod refunds;

/// The table `payment.succeeded` / `payment.failed` events wait in until the broker has them.
pub const OUTBOX: &str = "payment_outbox";
