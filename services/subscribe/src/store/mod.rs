//! Plans, subscriptions, usage per period and quota holds.

pub mod entities;
pub mod migration;
pub mod quota;
pub mod service;
pub mod subscriptions;

/// The table `subscription.changed` events wait in until the broker has them.
pub const OUTBOX: &str = "subscribe_outbox";
