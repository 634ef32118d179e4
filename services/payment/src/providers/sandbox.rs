//! The sandbox provider: no real money, and the same flow as a real provider. A payment is a
//! row of its own table; its hosted page is the console's `/pay/sandbox/{checkout}`, where the
//! person pays or gives up ([`Sandbox::complete`]); its notification names the payment only,
//! so it is believed after fetching the payment back, as YooKassa's is.

use super::{
    Hosted, Notice, Order, Payment, Provider, ProviderError, Refund, RefundOrder, RefundState,
    State,
    http::{self, Headers},
};
use crate::store::{checkouts::CheckoutStore, entities::sandbox_payment};
use sea_orm::{DatabaseConnection, Set};

pub struct Sandbox {
    store: CheckoutStore,
}

/// How a person left the sandbox's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Paid,
    Canceled,
    Declined,
}

fn unavailable(e: sea_orm::DbErr) -> ProviderError {
    ProviderError::Transient(format!("the sandbox's table: {e}"))
}

impl Sandbox {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { store: CheckoutStore::new(db) }
    }

    /// The person's choice on the hosted page (a payment already ended keeps its end). The
    /// notification a provider would then send: its body.
    pub async fn complete(&self, id: &str, outcome: Outcome) -> Result<Vec<u8>, ProviderError> {
        let (status, reason) = match outcome {
            Outcome::Paid => ("succeeded", ""),
            Outcome::Canceled => ("canceled", "the payer gave up"),
            Outcome::Declined => ("canceled", "the card was declined (sandbox)"),
        };
        self.store.sandbox_complete(id, status, reason).await.map_err(unavailable)?;
        let event = if status == "succeeded" { "payment.succeeded" } else { "payment.canceled" };
        Ok(serde_json::json!({"type": "notification", "event": event, "object": {"id": id}})
            .to_string()
            .into_bytes())
    }
}

#[async_trait::async_trait]
impl Provider for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn create(&self, order: &Order) -> Result<Hosted, ProviderError> {
        let row = sandbox_payment::ActiveModel {
            id: Set(format!("sbx_{}", uuid::Uuid::now_v7().simple())),
            idempotency_key: Set(order.idempotency_key.clone()),
            checkout_id: Set(order.checkout_id),
            amount_minor: Set(order.amount_minor),
            currency: Set(order.currency.clone()),
            status: Set("pending".into()),
            reason: Set(String::new()),
            created_at: Set(chrono::Utc::now()),
        };
        let made =
            self.store.sandbox_create(row, &order.idempotency_key).await.map_err(unavailable)?;
        Ok(Hosted {
            provider_payment_id: made.id,
            confirmation_url: format!("/pay/sandbox/{}", order.checkout_id),
        })
    }

    async fn fetch(&self, provider_payment_id: &str) -> Result<Payment, ProviderError> {
        let p = self
            .store
            .sandbox_get(provider_payment_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ProviderError::Refused("no such sandbox payment".into()))?;
        let state = match p.status.as_str() {
            "succeeded" => State::Paid,
            "canceled" => State::Canceled { reason: p.reason },
            _ => State::Pending,
        };
        Ok(Payment {
            provider_payment_id: p.id,
            checkout_id: Some(p.checkout_id),
            state,
            amount_minor: p.amount_minor,
            currency: p.currency,
        })
    }

    /// The sandbox returns money at once (its refund id carries ours).
    async fn refund(&self, order: &RefundOrder) -> Result<Refund, ProviderError> {
        Ok(Refund {
            provider_refund_id: format!("sbxr_{}", order.refund_id.simple()),
            refund_id: Some(order.refund_id),
            state: RefundState::Succeeded,
        })
    }

    async fn fetch_refund(&self, provider_refund_id: &str) -> Result<Refund, ProviderError> {
        let id = provider_refund_id
            .strip_prefix("sbxr_")
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
            .ok_or_else(|| ProviderError::Refused("no such sandbox refund".into()))?;
        Ok(Refund {
            provider_refund_id: provider_refund_id.to_owned(),
            refund_id: Some(id),
            state: RefundState::Succeeded,
        })
    }

    fn read_notice(
        &self,
        _headers: &Headers,
        body: &[u8],
        _now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Notice, ProviderError> {
        let n = http::json_body(body)?;
        match n["object"]["id"].as_str() {
            Some(id) if id.starts_with("sbx_") && id.len() <= 64 => {
                Ok(Notice::Unverified { provider_payment_id: id.to_owned() })
            }
            _ => Err(ProviderError::NotGenuine("a notification without a payment".into())),
        }
    }
}
