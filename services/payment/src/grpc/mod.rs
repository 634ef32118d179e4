//! The tonic adapter. Balance, top-up, checkouts and the ledger are the caller's own (the
//! identity the edge asserted); Charge and Refund are internal RPCs for the other services;
//! provider webhooks are public (their signature or a fetch-back is the proof). Checkouts'
//! conversions are in [`checkout`].

mod checkout;

use skillup_kit::{db::timestamp, identity::Caller};
use skillup_proto::{
    common::v1::{Money, PageResponse},
    payment::v1::{self as pb, payment_service_server::PaymentServiceServer},
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    checkout::Checkouts,
    domain::{Currency, IdempotencyKey, MinorUnits},
    error::PaymentError,
    events::transaction_pb,
    ledger::{Ledger, Outcome},
};

#[derive(Clone)]
pub struct PaymentGrpc {
    ledger: Ledger,
    checkouts: Checkouts,
}

impl PaymentGrpc {
    pub fn new(ledger: Ledger, checkouts: Checkouts) -> Self {
        Self { ledger, checkouts }
    }

    pub fn into_server(self) -> PaymentServiceServer<Self> {
        PaymentServiceServer::new(self)
    }

    /// [`Self::into_server`], and its unary methods for direct calls from this process
    /// (`skillup up`: see `skillup_kit::grpc::LocalChannel`).
    pub fn into_local_server(self) -> (PaymentServiceServer<Self>, skillup_proto::local::Handlers) {
        pb::payment_service_local::serve(self)
    }
}

fn caller<T>(req: &Request<T>) -> Result<Uuid, Status> {
    Caller::account(req)
}

/// A movement's answer: 201, the same for a replay of its key (as the first answer was), which
/// says so in `idempotent-replayed: true` (Stripe's header; the edge passes it on).
fn answer((t, new): Outcome) -> Response<pb::Transaction> {
    created(Response::new(transaction_pb(&t)), new)
}

/// 201, and `idempotent-replayed: true` when not `new`.
fn created<T>(mut res: Response<T>, new: bool) -> Response<T> {
    let md = res.metadata_mut();
    md.insert("x-http-status", tonic::metadata::MetadataValue::from_static("201"));
    if !new {
        md.insert(IDEMPOTENT_REPLAYED, tonic::metadata::MetadataValue::from_static("true"));
    }
    res
}

/// Response metadata (and HTTP header) marking the answer of an idempotency key sent again.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

#[tonic::async_trait]
impl pb::payment_service_server::PaymentService for PaymentGrpc {
    async fn get_balance(
        &self,
        req: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::Balance>, Status> {
        let user = caller(&req)?;
        let currency = match req.get_ref().currency.as_str() {
            "" => None,
            c => Some(Currency::parse("currency", c)?),
        };
        let b = self.ledger.balance(user, currency).await?;
        Ok(Response::new(pb::Balance {
            user_id: b.user.to_string(),
            available: Some(Money { amount_minor: b.available_minor, currency: b.currency }),
            updated_at: b.updated_at.map(timestamp),
        }))
    }

    async fn top_up(
        &self,
        req: Request<pb::TopUpRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let user = caller(&req)?;
        let key = skillup_kit::grpc::idempotency_key(&req, &req.get_ref().idempotency_key);
        let r = req.into_inner();
        let amount = MinorUnits::parse("amount_minor", r.amount_minor)?;
        let currency = Currency::parse("currency", &r.currency)?;
        let key = IdempotencyKey::parse(&key)?;
        if self.checkouts.provider.name() != "sandbox" {
            // Real money comes in through the provider's page only.
            return Err(skillup_kit::error::status(
                skillup_proto::common::v1::ErrorCode::Conflict,
                "top-ups go through a checkout on this deployment: POST /api/payments/checkouts",
            ));
        }
        Ok(answer(self.ledger.top_up(user, amount, currency, key, &r.payment_method).await?))
    }

    async fn create_checkout(
        &self,
        req: Request<pb::CreateCheckoutRequest>,
    ) -> Result<Response<pb::Checkout>, Status> {
        checkout::create(&self.checkouts, req).await
    }

    async fn get_checkout(
        &self,
        req: Request<pb::GetCheckoutRequest>,
    ) -> Result<Response<pb::Checkout>, Status> {
        checkout::get(&self.checkouts, req).await
    }

    async fn list_checkouts(
        &self,
        req: Request<pb::ListCheckoutsRequest>,
    ) -> Result<Response<pb::ListCheckoutsResponse>, Status> {
        checkout::mine(&self.checkouts, req).await
    }

    async fn handle_provider_webhook(
        &self,
        req: Request<pb::ProviderWebhookRequest>,
    ) -> Result<Response<pb::ProviderWebhookResponse>, Status> {
        checkout::webhook(&self.checkouts, req).await
    }

    async fn refund_checkout(
        &self,
        req: Request<pb::RefundCheckoutRequest>,
    ) -> Result<Response<pb::CheckoutRefund>, Status> {
        checkout::refund(&self.checkouts, req).await
    }

    async fn list_user_checkouts(
        &self,
        req: Request<pb::ListUserCheckoutsRequest>,
    ) -> Result<Response<pb::ListUserCheckoutsResponse>, Status> {
        checkout::of_user(&self.checkouts, req).await
    }

    async fn complete_sandbox_checkout(
        &self,
        req: Request<pb::CompleteSandboxCheckoutRequest>,
    ) -> Result<Response<pb::Checkout>, Status> {
        checkout::complete_sandbox(&self.checkouts, req).await
    }

    async fn list_transactions(
        &self,
        req: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let user = caller(&req)?;
        let page = req.into_inner().page.unwrap_or_default();
        let (rows, next) = self.ledger.list(user, page.page_size, &page.page_token).await?;
        Ok(Response::new(pb::ListTransactionsResponse {
            transactions: rows.iter().map(transaction_pb).collect(),
            page: Some(PageResponse { next_page_token: next }),
        }))
    }

    async fn charge(
        &self,
        req: Request<pb::ChargeRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let r = req.into_inner();
        let (user, amount, currency, key) = movement(&r.user_id, r.amount, &r.idempotency_key)?;
        Ok(answer(self.ledger.charge(user, amount, currency, key, &r.description).await?))
    }

    async fn issue_credit(
        &self,
        req: Request<pb::IssueCreditRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let r = req.into_inner();
        let (user, amount, currency, key) = movement(&r.user_id, r.amount, &r.idempotency_key)?;
        let credit = self.ledger.service_credit(user, amount, currency, key, &r.description);
        Ok(answer(credit.await?))
    }

    async fn refund(
        &self,
        req: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let r = req.into_inner();
        let id = Uuid::parse_str(&r.transaction_id).map_err(|_| {
            PaymentError::Invalid("transaction_id", skillup_kit::invalid::uuid("transaction_id"))
        })?;
        let key = IdempotencyKey::parse(&r.idempotency_key)?;
        Ok(answer(self.ledger.refund(id, r.amount_minor, key, &r.description).await?))
    }

    async fn adjust_balance(
        &self,
        req: Request<pb::AdjustBalanceRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let actor = skillup_kit::audit::Actor::admin(&req)?;
        let key = skillup_kit::grpc::idempotency_key(&req, &req.get_ref().idempotency_key);
        let r = req.into_inner();
        let user = Uuid::parse_str(&r.user_id)
            .map_err(|_| PaymentError::Invalid("user_id", skillup_kit::invalid::uuid("user_id")))?;
        let currency = Currency::parse("currency", &r.currency)?;
        let key = IdempotencyKey::parse(&key)?;
        let outcome = self.ledger.adjust(&actor, user, r.amount_minor, currency, key, &r.reason);
        Ok(answer(outcome.await?))
    }

    type ExportUserDataStream = skillup_kit::grpc::ExportStream;

    async fn export_user_data(
        &self,
        req: Request<skillup_proto::common::v1::ExportUserDataRequest>,
    ) -> Result<Response<Self::ExportUserDataStream>, Status> {
        let ledger = self.ledger.clone();
        skillup_kit::grpc::export_part(req.get_ref(), move |user, sink| async move {
            ledger.export_user(user, &sink).await
        })
    }
}

/// The parts of an internal movement's request (a charge, a credit), checked.
fn movement(
    user_id: &str,
    amount: Option<skillup_proto::common::v1::Money>,
    key: &str,
) -> Result<(Uuid, MinorUnits, Currency, IdempotencyKey), PaymentError> {
    let user = Uuid::parse_str(user_id)
        .map_err(|_| PaymentError::Invalid("user_id", skillup_kit::invalid::uuid("user_id")))?;
    let money = amount.unwrap_or_default();
    let amount = MinorUnits::parse("amount.amount_minor", money.amount_minor)?;
    let currency = Currency::parse("amount.currency", &money.currency)?;
    Ok((user, amount, currency, IdempotencyKey::parse(key)?))
}
