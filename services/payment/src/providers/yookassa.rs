//! YooKassa (API v3): `POST /v3/payments` with Basic auth (shop id, secret key) and an
//! `Idempotence-Key`, `capture: true`, a `redirect` confirmation, our id in `metadata`, and a
//! 54-FZ `receipt` when configured. Its HTTP notifications are not signed, so a notification
//! only names a payment: the payment is fetched back (`GET /v3/payments/{id}`) and that answer
//! is what is believed.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    Hosted, Notice, Order, Payment, Provider, ProviderError, Refund, RefundOrder, RefundState,
    State, decimal,
    http::{self, Headers},
    minor,
};
use crate::config::{YooKassaConfig, resolve_secret};

pub struct YooKassa {
    api_base: String,
    shop_id: String,
    secret_key: SecretString,
    receipt: bool,
    vat_code: u8,
    description: String,
    client: reqwest::Client,
}

impl YooKassa {
    pub fn from_config(c: &YooKassaConfig, timeout: Duration) -> skillup_kit::Result<Self> {
        let secret_key = resolve_secret(&c.secret_key, &c.secret_key_file, "payment.yookassa")?
            .ok_or_else(|| {
                skillup_kit::config::invalid("payment.yookassa.secret_key", "is required")
            })?;
        Ok(Self {
            api_base: c.api_base.trim_end_matches('/').to_owned(),
            shop_id: c.shop_id.clone(),
            secret_key,
            receipt: c.receipt,
            vat_code: c.vat_code,
            description: c.description.clone(),
            client: http::client(timeout)?,
        })
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.basic_auth(&self.shop_id, Some(self.secret_key.expose_secret()))
    }
}

/// A payment object as our payment.
fn payment(p: &Value) -> Result<Payment, ProviderError> {
    let id =
        p["id"].as_str().ok_or_else(|| ProviderError::Refused("a payment without id".into()))?;
    let currency = p["amount"]["currency"].as_str().unwrap_or_default().to_owned();
    let amount = p["amount"]["value"].as_str().and_then(|v| minor(v, &currency)).unwrap_or(0);
    let state = match p["status"].as_str() {
        Some("succeeded") if p["paid"].as_bool() != Some(false) => State::Paid,
        Some("canceled") => State::Canceled {
            reason: p["cancellation_details"]["reason"]
                .as_str()
                .unwrap_or("canceled")
                .chars()
                .take(100)
                .collect(),
        },
        _ => State::Pending,
    };
    Ok(Payment {
        provider_payment_id: id.to_owned(),
        checkout_id: p["metadata"]["payment_id"].as_str().and_then(|v| Uuid::parse_str(v).ok()),
        state,
        amount_minor: amount,
        currency,
    })
}

/// A refund object as our refund (YooKassa's refunds keep no metadata: they are found by id).
fn refund_of(r: &Value) -> Result<Refund, ProviderError> {
    let id =
        r["id"].as_str().ok_or_else(|| ProviderError::Refused("a refund without id".into()))?;
    let state = match r["status"].as_str() {
        Some("succeeded") => RefundState::Succeeded,
        Some("canceled") => RefundState::Failed {
            reason: r["cancellation_details"]["reason"]
                .as_str()
                .unwrap_or("canceled")
                .chars()
                .take(100)
                .collect(),
        },
        _ => RefundState::Pending,
    };
    Ok(Refund { provider_refund_id: id.to_owned(), refund_id: None, state })
}

/// An id YooKassa made: safe in a URL path.
fn yookassa_id(id: &str) -> Result<&str, ProviderError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(id)
    } else {
        Err(ProviderError::Refused("not a YooKassa id".into()))
    }
}

impl YooKassa {
    /// A JSON POST under an idempotence key, repeated on transient failures.
    async fn post(&self, path: &str, key: &str, body: &Value) -> Result<Value, ProviderError> {
        let url = format!("{}{path}", self.api_base);
        http::retrying(|| async {
            let req = self.auth(self.client.post(&url)).header("Idempotence-Key", key).json(body);
            http::json(req.send().await).await
        })
        .await
    }

    async fn get(&self, path: &str) -> Result<Value, ProviderError> {
        let url = format!("{}{path}", self.api_base);
        http::retrying(|| async { http::json(self.auth(self.client.get(&url)).send().await).await })
            .await
    }
}

#[async_trait::async_trait]
impl Provider for YooKassa {
    fn name(&self) -> &'static str {
        "yookassa"
    }

    async fn create(&self, order: &Order) -> Result<Hosted, ProviderError> {
        let amount = json!({"value": decimal(order.amount_minor, &order.currency), "currency": order.currency});
        let mut body = json!({
            "amount": amount,
            "capture": true,
            "confirmation": {"type": "redirect", "return_url": order.return_url},
            "description": self.description.chars().take(128).collect::<String>(),
            "metadata": {"payment_id": order.checkout_id.to_string()},
        });
        if self.receipt {
            let email = order.receipt_email.as_deref().ok_or_else(|| {
                ProviderError::Refused("a receipt needs the customer's email".into())
            })?;
            body["receipt"] = json!({
                "customer": {"email": email},
                "items": [{
                    "description": self.description.chars().take(128).collect::<String>(),
                    "quantity": "1.00",
                    "amount": amount,
                    "vat_code": self.vat_code,
                    "payment_mode": "full_payment",
                    "payment_subject": "service",
                }],
            });
        }
        let made = self.post("/v3/payments", &order.idempotency_key, &body).await?;
        let hosted = Hosted {
            provider_payment_id: made["id"].as_str().unwrap_or_default().to_owned(),
            confirmation_url: made["confirmation"]["confirmation_url"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        if hosted.provider_payment_id.is_empty() || hosted.confirmation_url.is_empty() {
            return Err(ProviderError::Refused("a payment without id or confirmation_url".into()));
        }
        Ok(hosted)
    }

    async fn fetch(&self, provider_payment_id: &str) -> Result<Payment, ProviderError> {
        let id = yookassa_id(provider_payment_id)?;
        payment(&self.get(&format!("/v3/payments/{id}")).await?)
    }

    async fn refund(&self, order: &RefundOrder) -> Result<Refund, ProviderError> {
        let body = json!({
            "payment_id": order.provider_payment_id,
            "amount": {"value": decimal(order.amount_minor, &order.currency), "currency": order.currency},
        });
        let made = self.post("/v3/refunds", &order.idempotency_key, &body).await?;
        refund_of(&made)
    }

    async fn fetch_refund(&self, provider_refund_id: &str) -> Result<Refund, ProviderError> {
        let id = yookassa_id(provider_refund_id)?;
        refund_of(&self.get(&format!("/v3/refunds/{id}")).await?)
    }

    fn read_notice(
        &self,
        _headers: &Headers,
        body: &[u8],
        _now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Notice, ProviderError> {
        let n = http::json_body(body)?;
        if n["type"].as_str() != Some("notification") {
            return Err(ProviderError::NotGenuine("not a notification".into()));
        }
        let event = n["event"].as_str().unwrap_or_default();
        let id = n["object"]["id"].as_str().unwrap_or_default();
        Ok(match event {
            "payment.succeeded" | "payment.canceled" | "payment.waiting_for_capture"
                if !id.is_empty() =>
            {
                Notice::Unverified { provider_payment_id: id.to_owned() }
            }
            "refund.succeeded" | "refund.canceled" if !id.is_empty() => {
                Notice::UnverifiedRefund { provider_refund_id: id.to_owned() }
            }
            "payment.succeeded" | "payment.canceled" | "refund.succeeded" | "refund.canceled" => {
                return Err(ProviderError::NotGenuine("a notification without its object".into()));
            }
            other => Notice::Ignored { event: other.chars().take(64).collect() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_only_name_what_to_fetch() {
        let y = YooKassa::from_config(
            &YooKassaConfig { secret_key: Some("k".to_owned().into()), ..Default::default() },
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        let read = |v: serde_json::Value| {
            y.read_notice(&Headers::default(), v.to_string().as_bytes(), chrono::Utc::now())
        };
        let paid = json!({"type": "notification", "event": "payment.succeeded", "object": {"id": "2d5a", "status": "succeeded"}});
        assert_eq!(read(paid).unwrap(), Notice::Unverified { provider_payment_id: "2d5a".into() });
        let refund = json!({"type": "notification", "event": "refund.succeeded", "object": {"id": "3e6b", "status": "succeeded"}});
        assert_eq!(
            read(refund).unwrap(),
            Notice::UnverifiedRefund { provider_refund_id: "3e6b".into() }
        );
        assert!(
            read(json!({"type": "notification", "event": "payment.succeeded", "object": {}}))
                .is_err()
        );
        assert!(read(json!({"event": "payment.succeeded", "object": {"id": "x"}})).is_err());
        assert!(matches!(
            read(json!({"type": "notification", "event": "deal.closed", "object": {"id": "x"}}))
                .unwrap(),
            Notice::Ignored { .. }
        ));
    }

    #[test]
    fn a_payment_object_reads_as_ours() {
        let id = Uuid::now_v7();
        let v = json!({"id": "2d5a0b", "status": "succeeded", "paid": true,
            "amount": {"value": "150.00", "currency": "RUB"}, "metadata": {"payment_id": id.to_string()}});
        let p = payment(&v).unwrap();
        assert_eq!(
            (p.state, p.amount_minor, p.currency, p.checkout_id),
            (State::Paid, 15000, "RUB".into(), Some(id))
        );
        let v = json!({"id": "x", "status": "canceled", "cancellation_details": {"party": "yoo_money", "reason": "card_expired"}});
        assert_eq!(payment(&v).unwrap().state, State::Canceled { reason: "card_expired".into() });
        let v = json!({"id": "x", "status": "pending"});
        assert_eq!(payment(&v).unwrap().state, State::Pending);
    }
}
