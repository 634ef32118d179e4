//! The ledger's tables: accounts with their balances, transactions, and postings.

pub mod entities;
pub mod migration;
