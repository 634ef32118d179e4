//! Checkouts and provider notifications: requests into the use cases' terms, checkouts into
//! the contract's.

use skillup_kit::{db::timestamp, identity::Caller};
use skillup_proto::{common::v1::Money, payment::v1 as pb};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::created;
use crate::{
    checkout::{self as rules, Checkouts},
    domain::{CheckoutStatus, IdempotencyKey, RefundStatus},
    error::PaymentError,
    providers::{http::Headers, sandbox::Outcome},
    store::entities::{checkout, refund},
};

/// A checkout (with its refunds) as the contract shows one.
pub(crate) fn checkout_pb(c: &checkout::Model, refunds: &[refund::Model]) -> pb::Checkout {
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
        refunded: Some(Money {
            amount_minor: crate::refunds::refunded(refunds),
            currency: c.currency.clone(),
        }),
    }
}

/// A refund as the contract shows one.
pub(crate) fn refund_pb(r: &refund::Model) -> pb::CheckoutRefund {
    let status = match r.status {
        RefundStatus::Pending => pb::RefundStatus::Pending,
        RefundStatus::Succeeded => pb::RefundStatus::Succeeded,
        RefundStatus::Failed => pb::RefundStatus::Failed,
    };
    pb::CheckoutRefund {
        id: r.id.to_string(),
        checkout_id: r.checkout_id.to_string(),
        user_id: r.user_id.to_string(),
        status: status as i32,
        amount: Some(Money { amount_minor: r.amount_minor, currency: r.currency.clone() }),
        provider_refund_id: r.provider_refund_id.clone().unwrap_or_default(),
        reason: r.reason.clone(),
        failure_reason: r.failure_reason.clone(),
        transaction_id: r.transaction_id.to_string(),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
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
    Ok(created(Response::new(checkout_pb(&c, &[])), new))
}

pub(super) async fn get(
    checkouts: &Checkouts,
    req: Request<pb::GetCheckoutRequest>,
) -> Result<Response<pb::Checkout>, Status> {
    let user = Caller::account(&req)?;
    let id = checkout_id(&req.get_ref().checkout_id)?;
    let c = checkouts.get(user, id).await?;
    Ok(Response::new(checkout_pb(&c, &checkouts.refunds_of(id).await?)))
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
    let c = checkouts.complete_sandbox(user, id, outcome).await?;
    Ok(Response::new(checkout_pb(&c, &checkouts.refunds_of(id).await?)))
}

/// The headers a provider's signature may be in (those the edge forwards).
const SIGNATURE_HEADERS: [&str; 1] = ["stripe-signature"];

pub(super) async fn webhook(
    checkouts: &Checkouts,
    req: Request<pb::ProviderWebhookRequest>,
) -> Result<Response<pb::ProviderWebhookResponse>, Status> {
    let md = req.metadata();
    // The address the edge vouched for rides along as a pseudo-header (never a client's).
    let from = skillup_kit::identity::ClientAddr::of(&req);
    let headers = Headers::new(
        SIGNATURE_HEADERS
            .iter()
            .filter_map(|name| Some((*name, md.get(*name)?.to_str().ok()?)))
            .chain([(rules::FROM, from.as_str())]),
    );
    let r = req.into_inner();
    let body = r.body.map(|b| b.data).unwrap_or_default();
    let outcome = checkouts.notify(&r.provider, &headers, &body).await?;
    metrics::counter!("skillup_payment_webhooks_total", "provider" => r.provider, "outcome" => outcome)
        .increment(1);
    Ok(Response::new(pb::ProviderWebhookResponse { outcome: outcome.to_owned() }))
}

pub(super) async fn refund(
    checkouts: &Checkouts,
    req: Request<pb::RefundCheckoutRequest>,
) -> Result<Response<pb::CheckoutRefund>, Status> {
    let actor = skillup_kit::audit::Actor::admin(&req)?;
    let key = skillup_kit::grpc::idempotency_key(&req, &req.get_ref().idempotency_key);
    let key = IdempotencyKey::parse(&key)?;
    let r = req.into_inner();
    let id = checkout_id(&r.checkout_id)?;
    let (made, new) = checkouts.refund(&actor, id, r.amount_minor, &r.reason, key).await?;
    Ok(created(Response::new(refund_pb(&made)), new))
}

pub(super) async fn mine(
    checkouts: &Checkouts,
    req: Request<pb::ListCheckoutsRequest>,
) -> Result<Response<pb::ListCheckoutsResponse>, Status> {
    let user = Caller::account(&req)?;
    let page = req.into_inner().page.unwrap_or_default();
    let (rows, next) = checkouts.of_user(user, page.page_size, &page.page_token).await?;
    Ok(Response::new(pb::ListCheckoutsResponse {
        checkouts: rows.iter().map(|(c, refunds)| checkout_pb(c, refunds)).collect(),
        page: Some(skillup_proto::common::v1::PageResponse { next_page_token: next }),
    }))
}

pub(super) async fn of_user(
    checkouts: &Checkouts,
    req: Request<pb::ListUserCheckoutsRequest>,
) -> Result<Response<pb::ListUserCheckoutsResponse>, Status> {
    skillup_kit::audit::Actor::admin(&req)?;
    let r = req.into_inner();
    let user = Uuid::parse_str(&r.user_id)
        .map_err(|_| PaymentError::Invalid("user_id", skillup_kit::invalid::uuid("user_id")))?;
    let page = r.page.unwrap_or_default();
    let (rows, next) = checkouts.of_user(user, page.page_size, &page.page_token).await?;
    Ok(Response::new(pb::ListUserCheckoutsResponse {
        checkouts: rows
            .iter()
            .map(|(c, refunds)| pb::CheckoutWithRefunds {
                checkout: Some(checkout_pb(c, refunds)),
                refunds: refunds.iter().map(refund_pb).collect(),
            })
            .collect(),
        page: Some(skillup_proto::common::v1::PageResponse { next_page_token: next }),
    }))
}
