//! Plans, subscriptions, usage per period and quota holds.

pub mod entities;
pub mod migration;
