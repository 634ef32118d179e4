//! Auth's tables (all prefixed `auth_`), its migrations, and the queries the domain needs.

pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod entities;
pub mod exports;
pub mod migration;

/// The table `user.registered` events wait in.
pub const OUTBOX: &str = "auth_outbox";
