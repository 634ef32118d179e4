//! Stripe Checkout: a Checkout Session per payment (`POST /v1/checkout/sessions`, form-encoded,
//! `mode=payment`, our id as `client_reference_id` and in `metadata`, an `Idempotency-Key`);
//! webhooks believed by their `Stripe-Signature` (HMAC-SHA256 over `t.payload`, compared in
//! constant time, within the tolerance, any `v1` of any current signing secret).

use std::time::Duration;

use aws_lc_rs::hmac;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use uuid::Uuid;

use super::{
    Hosted, Notice, Order, Payment, Provider, ProviderError, Refund, RefundOrder, RefundState,
    State,
    http::{self, Headers},
};
use crate::config::{StripeConfig, resolve_secret};

pub struct Stripe {
    api_base: String,
    secret_key: SecretString,
    signing: Vec<hmac::Key>,
    tolerance: Duration,
    item_name: String,
    client: reqwest::Client,
}

impl Stripe {
    pub fn from_config(c: &StripeConfig, timeout: Duration) -> skillup_kit::Result<Self> {
        let secret_key = resolve_secret(&c.secret_key, &c.secret_key_file, "payment.stripe")?
            .ok_or_else(|| {
                skillup_kit::config::invalid("payment.stripe.secret_key", "is required")
            })?;
        let signing = c
            .signing_secrets()?
            .iter()
            .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.expose_secret().as_bytes()))
            .collect();
        Ok(Self {
            api_base: c.api_base.trim_end_matches('/').to_owned(),
            secret_key,
            signing,
            tolerance: Duration::from_secs(c.tolerance_secs),
            item_name: c.item_name.clone(),
            client: http::client(timeout)?,
        })
    }

    /// Checks a `Stripe-Signature` header against `body`: a timestamp within the tolerance of
    /// `now` and a `v1` that some signing secret makes.
    fn verify(&self, header: &str, body: &[u8], now: i64) -> Result<(), ProviderError> {
        let mut t = None;
        let mut v1 = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => t = v.parse::<i64>().ok(),
                Some(("v1", v)) => v1.extend(hex(v)),
                _ => {}
            }
        }
        let t = t.ok_or_else(|| ProviderError::NotGenuine("no timestamp".into()))?;
        if (now - t).unsigned_abs() > self.tolerance.as_secs() {
            return Err(ProviderError::NotGenuine("the signature is too old".into()));
        }
        if v1.is_empty() {
            return Err(ProviderError::NotGenuine("no v1 signature".into()));
        }
        let mut signed = Vec::with_capacity(body.len() + 12);
        signed.extend_from_slice(t.to_string().as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        // `hmac::verify` compares in constant time.
        let genuine =
            self.signing.iter().any(|k| v1.iter().any(|sig| hmac::verify(k, &signed, sig).is_ok()));
        if genuine {
            Ok(())
        } else {
            Err(ProviderError::NotGenuine("the signature does not match".into()))
        }
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.bearer_auth(self.secret_key.expose_secret())
    }
}

/// Hex digits as bytes (`None`: not hex).
fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A Checkout Session object as our payment.
fn session(s: &Value) -> Result<Payment, ProviderError> {
    let id =
        s["id"].as_str().ok_or_else(|| ProviderError::Refused("a session without id".into()))?;
    let state = match (s["status"].as_str(), s["payment_status"].as_str()) {
        (_, Some("paid" | "no_payment_required")) => State::Paid,
        (Some("expired"), _) => State::Canceled { reason: "the session expired".into() },
        _ => State::Pending,
    };
    let checkout_id = s["client_reference_id"]
        .as_str()
        .or_else(|| s["metadata"]["payment_id"].as_str())
        .and_then(|v| Uuid::parse_str(v).ok());
    Ok(Payment {
        provider_payment_id: id.to_owned(),
        checkout_id,
        state,
        amount_minor: s["amount_total"].as_i64().unwrap_or(0),
        currency: s["currency"].as_str().unwrap_or_default().to_ascii_uppercase(),
    })
}

/// A Refund object as our refund.
fn refund_of(r: &Value) -> Result<Refund, ProviderError> {
    let id =
        r["id"].as_str().ok_or_else(|| ProviderError::Refused("a refund without id".into()))?;
    let state = match r["status"].as_str() {
        Some("succeeded") => RefundState::Succeeded,
        Some(s @ ("failed" | "canceled")) => RefundState::Failed {
            reason: r["failure_reason"].as_str().unwrap_or(s).chars().take(100).collect(),
        },
        _ => RefundState::Pending,
    };
    Ok(Refund {
        provider_refund_id: id.to_owned(),
        refund_id: r["metadata"]["refund_id"].as_str().and_then(|v| Uuid::parse_str(v).ok()),
        state,
    })
}

/// An id Stripe made (`cs_…`, `re_…`): safe in a URL path.
fn stripe_id(id: &str) -> Result<&str, ProviderError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(id)
    } else {
        Err(ProviderError::Refused("not a Stripe id".into()))
    }
}

impl Stripe {
    /// A form POST under an idempotency key, repeated on transient failures.
    async fn post(
        &self,
        path: &str,
        key: &str,
        form: &[(&str, &str)],
    ) -> Result<Value, ProviderError> {
        let url = format!("{}{path}", self.api_base);
        http::retrying(|| async {
            let req = self.auth(self.client.post(&url)).header("Idempotency-Key", key).form(form);
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
impl Provider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create(&self, order: &Order) -> Result<Hosted, ProviderError> {
        let id = order.checkout_id.to_string();
        let amount = order.amount_minor.to_string();
        let currency = order.currency.to_ascii_lowercase();
        let mut form: Vec<(&str, &str)> = vec![
            ("mode", "payment"),
            ("client_reference_id", &id),
            ("metadata[payment_id]", &id),
            ("payment_intent_data[metadata][payment_id]", &id),
            ("line_items[0][quantity]", "1"),
            ("line_items[0][price_data][currency]", &currency),
            ("line_items[0][price_data][unit_amount]", &amount),
            ("line_items[0][price_data][product_data][name]", &self.item_name),
            ("success_url", &order.return_url),
            ("cancel_url", &order.return_url),
        ];
        if let Some(email) = &order.receipt_email {
            form.push(("customer_email", email));
        }
        let made = self.post("/v1/checkout/sessions", &order.idempotency_key, &form).await?;
        let hosted = Hosted {
            provider_payment_id: made["id"].as_str().unwrap_or_default().to_owned(),
            confirmation_url: made["url"].as_str().unwrap_or_default().to_owned(),
        };
        if hosted.provider_payment_id.is_empty() || hosted.confirmation_url.is_empty() {
            return Err(ProviderError::Refused("a session without id or url".into()));
        }
        Ok(hosted)
    }

    async fn fetch(&self, provider_payment_id: &str) -> Result<Payment, ProviderError> {
        let id = stripe_id(provider_payment_id)?;
        session(&self.get(&format!("/v1/checkout/sessions/{id}")).await?)
    }

    async fn refund(&self, order: &RefundOrder) -> Result<Refund, ProviderError> {
        // A session is paid through its PaymentIntent: that is what Stripe refunds.
        let id = stripe_id(&order.provider_payment_id)?;
        let session = self.get(&format!("/v1/checkout/sessions/{id}")).await?;
        let intent = session["payment_intent"]
            .as_str()
            .ok_or_else(|| ProviderError::Refused("the session has no payment to refund".into()))?;
        let (amount, refund_id) = (order.amount_minor.to_string(), order.refund_id.to_string());
        let form =
            [("payment_intent", intent), ("amount", &amount), ("metadata[refund_id]", &refund_id)];
        let made = self.post("/v1/refunds", &order.idempotency_key, &form).await?;
        refund_of(&made)
    }

    async fn fetch_refund(&self, provider_refund_id: &str) -> Result<Refund, ProviderError> {
        let id = stripe_id(provider_refund_id)?;
        refund_of(&self.get(&format!("/v1/refunds/{id}")).await?)
    }

    fn read_notice(
        &self,
        headers: &Headers,
        body: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Notice, ProviderError> {
        let sig = headers
            .get("stripe-signature")
            .ok_or_else(|| ProviderError::NotGenuine("no Stripe-Signature header".into()))?;
        self.verify(sig, body, now.timestamp())?;
        let event = http::json_body(body)?;
        let kind = event["type"].as_str().unwrap_or_default();
        let object = &event["data"]["object"];
        Ok(match kind {
            "checkout.session.completed"
            | "checkout.session.async_payment_succeeded"
            | "checkout.session.expired" => Notice::Verified(session(object)?),
            "checkout.session.async_payment_failed" => {
                let mut p = session(object)?;
                p.state = State::Canceled { reason: "the payment failed".into() };
                Notice::Verified(p)
            }
            "refund.created" | "refund.updated" | "refund.failed" => {
                Notice::Refunds(vec![refund_of(object)?])
            }
            // Older API versions list the charge's refunds in the event.
            "charge.refunded" => match object["refunds"]["data"].as_array() {
                Some(list) => {
                    Notice::Refunds(list.iter().map(refund_of).collect::<Result<_, _>>()?)
                }
                None => Notice::Ignored { event: kind.into() },
            },
            other => Notice::Ignored { event: other.chars().take(64).collect() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripe(secrets: &str) -> Stripe {
        let c = StripeConfig {
            secret_key: Some("sk_test_x".to_owned().into()),
            webhook_secrets: Some(secrets.to_owned().into()),
            ..Default::default()
        };
        Stripe::from_config(&c, Duration::from_secs(1)).unwrap()
    }

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let mut msg = format!("{t}.").into_bytes();
        msg.extend_from_slice(body);
        hmac::sign(&key, &msg).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn signatures_are_checked_as_stripe_makes_them() {
        let s = stripe("whsec_old,whsec_new");
        let body = br#"{"type":"checkout.session.completed"}"#;
        let now = 1_800_000_000;
        let good = sign("whsec_new", now, body);
        s.verify(&format!("t={now},v1={good}"), body, now).expect("current secret");
        let old = sign("whsec_old", now, body);
        s.verify(&format!("t={now},v1=00ff,v1={old},v0=abc"), body, now)
            .expect("any v1, any secret during a rotation");
        // Stale, from the future, tampered, missing parts, another secret.
        assert!(s.verify(&format!("t={},v1={good}", now - 301), body, now).is_err());
        assert!(s.verify(&format!("t={},v1={good}", now + 301), body, now).is_err());
        assert!(s.verify(&format!("t={now},v1={good}"), b"{}", now).is_err());
        assert!(s.verify(&format!("v1={good}"), body, now).is_err());
        assert!(s.verify(&format!("t={now}"), body, now).is_err());
        let other = sign("whsec_other", now, body);
        assert!(s.verify(&format!("t={now},v1={other}"), body, now).is_err());
        assert!(s.verify(&format!("t={now},v1=zz"), body, now).is_err());
    }

    #[test]
    fn refund_events_read_as_our_refunds() {
        let s = stripe("whsec_new");
        let now = chrono::Utc::now();
        let ours = Uuid::now_v7();
        let notice = |body: serde_json::Value| {
            let body = body.to_string().into_bytes();
            let sig =
                format!("t={},v1={}", now.timestamp(), sign("whsec_new", now.timestamp(), &body));
            s.read_notice(&Headers::new([("stripe-signature", sig.as_str())]), &body, now).unwrap()
        };
        let updated = serde_json::json!({"type": "refund.updated", "data": {"object": {
            "id": "re_1", "status": "failed", "failure_reason": "lost_or_stolen_card",
            "metadata": {"refund_id": ours.to_string()}}}});
        assert_eq!(
            notice(updated),
            Notice::Refunds(vec![Refund {
                provider_refund_id: "re_1".into(),
                refund_id: Some(ours),
                state: RefundState::Failed { reason: "lost_or_stolen_card".into() },
            }])
        );
        let charge = serde_json::json!({"type": "charge.refunded", "data": {"object": {"refunds": {"data": [
            {"id": "re_2", "status": "succeeded", "metadata": {}},
            {"id": "re_3", "status": "pending", "metadata": {}}]}}}});
        match notice(charge) {
            Notice::Refunds(r) => {
                let states: Vec<_> =
                    r.iter().map(|r| (r.provider_refund_id.as_str(), r.state.clone())).collect();
                assert_eq!(
                    states,
                    [("re_2", RefundState::Succeeded), ("re_3", RefundState::Pending)]
                );
            }
            other => panic!("{other:?}"),
        }
        // Newer API versions leave the refunds out of charge.refunded: nothing to act on.
        let bare =
            serde_json::json!({"type": "charge.refunded", "data": {"object": {"id": "ch_1"}}});
        assert!(matches!(notice(bare), Notice::Ignored { .. }));
    }

    #[test]
    fn a_session_reads_as_our_payment() {
        let id = Uuid::now_v7();
        let v = serde_json::json!({"id": "cs_test_1", "status": "complete", "payment_status": "paid",
            "amount_total": 1500, "currency": "usd", "client_reference_id": id.to_string()});
        let p = session(&v).unwrap();
        assert_eq!(
            (p.state, p.amount_minor, p.currency, p.checkout_id),
            (State::Paid, 1500, "USD".into(), Some(id))
        );
        let v =
            serde_json::json!({"id": "cs_test_2", "status": "open", "payment_status": "unpaid"});
        assert_eq!(session(&v).unwrap().state, State::Pending);
        let v =
            serde_json::json!({"id": "cs_test_3", "status": "expired", "payment_status": "unpaid"});
        assert!(matches!(session(&v).unwrap().state, State::Canceled { .. }));
    }
}
