//! Charging a plan: the [`Billing`] port (its adapter, the payment service over gRPC, is
//! [`crate::clients::PaymentBilling`]).

use uuid::Uuid;

use crate::error::Result;

/// Takes money for plans (the payment service).
#[async_trait::async_trait]
pub trait Billing: Send + Sync {
    /// Debits `amount` once per `key`; `InsufficientFunds` when the balance does not cover it.
    async fn charge(
        &self,
        user: Uuid,
        amount: i64,
        currency: &str,
        key: &str,
        description: &str,
    ) -> Result<()>;

    /// Credits `amount` once per `key` (a plan's missed service level), with its reason.
    async fn credit(
        &self,
        user: Uuid,
        amount: i64,
        currency: &str,
        key: &str,
        description: &str,
    ) -> Result<()>;
}
