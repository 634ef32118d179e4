//! Checkouts and provider notifications: requests into the use cases' terms, checkouts into
//! the contract's.

use skillup_kit::{db::timestamp, identity::Caller};
use skillup_proto::{common::v1::Money, payment::v1 as pb};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::created;
use crate::{
    checkout::{self as rules, Checkouts},
    domain::{CheckoutStatus, IdempotencyKey},
    error::PaymentError,
    providers::{http::Headers, sandbox::Outcome},
    store::entities::checkout,
};

/// A checkout as the contract shows one.
pub(crate) fn checkout_pb(c: &checkout::Model) -> pb::Checkout {
    let status = match c.status {
        CheckoutStatus::Pending => pb::CheckoutStatus::Pending,
        CheckoutStatus::Succeeded => pb::CheckoutStatus::Succeeded,
        CheckoutStatus::Canceled => pb::CheckoutStatus::Canceled,
        CheckoutStatus::Expired => pb::CheckoutStatus::Expired,
    };
    pb::Checkout {
        id: c.id.to_string(),
        user_id: c.user_id.to_string(),
        status: status as i32,
        amount: Some(Money { amount_minor: c.amount_minor, currency: c.currency.clone() }),
        provider: c.provider.clone(),
        provider_payment_id: c.provider_payment_id.clone().unwrap_or_default(),
        // Only while it can still be paid.
        confirmation_url: if c.status == CheckoutStatus::Pending {
            c.confirmation_url.clone()
        } else {
            String::new()
        },
        return_url: c.return_url.clone(),
        transaction_id: c.transaction_id.map(|t| t.to_string()).unwrap_or_default(),
        failure_reason: c.failure_reason.clone(),
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
    }
}

fn checkout_id(id: &str) -> Result<Uuid, PaymentError> {
    Uuid::parse_str(id).map_err(|_| {
        PaymentError::Invalid("checkout_id", skillup_kit::invalid::uuid("checkout_id"))
    })
}

pub(super) async fn create(
    checkouts: &Checkouts,
    req: Request<pb::CreateCheckoutRequest>,
) -> Result<Response<pb::Checkout>, Status> {
    let user = Caller::account(&req)?;
    let key = skillup_kit::grpc::idempotency_key(&req, &req.get_ref().idempotency_key);
    let key = IdempotencyKey::parse(&key)?;
    let r = req.into_inner();
    let asked = rules::Request {
        amount_minor: r.amount_minor,
        currency: &r.currency,
        return_url: &r.return_url,
        receipt_email: &r.receipt_email,
    };
    let (c, new) = checkouts.create(user, asked, key).await?;
    Ok(created(Response::new(checkout_pb(&c)), new))
}

pub(super) async fn get(
    checkouts: &Checkouts,
    req: Request<pb::GetCheckoutRequest>,
) -> Result<Response<pb::Checkout>, Status> {
    let user = Caller::account(&req)?;
    let id = checkout_id(&req.get_ref().checkout_id)?;
    Ok(Response::new(checkout_pb(&checkouts.get(user, id).await?)))
}

pub(super) async fn complete_sandbox(
    checkouts: &Checkouts,
    req: Request<pb::CompleteSandboxCheckoutRequest>,
) -> Result<Response<pb::Checkout>, Status> {
    let user = Caller::account(&req)?;
    let r = req.into_inner();
    let id = checkout_id(&r.checkout_id)?;
    let outcome = match pb::SandboxOutcome::try_from(r.outcome) {
        Ok(pb::SandboxOutcome::Paid) => Outcome::Paid,
        Ok(pb::SandboxOutcome::Canceled) => Outcome::Canceled,
        Ok(pb::SandboxOutcome::Declined) => Outcome::Declined,
        _ => {
            let why = skillup_kit::invalid::one_of("outcome", &["PAID", "CANCELED", "DECLINED"]);
            return Err(PaymentError::Invalid("outcome", why).into());
        }
    };
    Ok(Response::new(checkout_pb(&checkouts.complete_sandbox(user, id, outcome).await?)))
}

/// The headers a provider's signature may be in (those the edge forwards).
const SIGNATURE_HEADERS: [&str; 1] = ["stripe-signature"];

pub(super) async fn webhook(
    checkouts: &Checkouts,
    req: Request<pb::ProviderWebhookRequest>,
) -> Result<Response<pb::ProviderWebhookResponse>, Status> {
    let md = req.metadata();
    let headers = Headers::new(
        SIGNATURE_HEADERS.iter().filter_map(|name| Some((*name, md.get(*name)?.to_str().ok()?))),
    );
    let r = req.into_inner();
    let body = r.body.map(|b| b.data).unwrap_or_default();
    let outcome = checkouts.notify(&r.provider, &headers, &body).await?;
    metrics::counter!("skillup_payment_webhooks_total", "provider" => r.provider, "outcome" => outcome)
        .increment(1);
    Ok(Response::new(pb::ProviderWebhookResponse { outcome: outcome.to_owned() }))
}
