//! The tonic adapter. The caller's own subscription and usage come from the identity the edge
//! asserted; entitlement and quota RPCs are internal (the ai service passes the user).

use skillup_kit::identity::Identity;
use skillup_proto::subscribe::v1::{
    self as pb, subscription_service_server::SubscriptionServiceServer,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{error::SubscribeError, subscriptions::Subscriptions};

#[derive(Clone)]
pub struct SubscribeGrpc {
    subs: Subscriptions,
}

impl SubscribeGrpc {
    pub fn new(subs: Subscriptions) -> Self {
        Self { subs }
    }

    pub fn into_server(self) -> SubscriptionServiceServer<Self> {
        SubscriptionServiceServer::new(self)
    }

    /// [`Self::into_server`], and its unary methods for direct calls from this process
    /// (`skillup up`: see `skillup_kit::grpc::LocalChannel`).
    pub fn into_local_server(
        self,
    ) -> (SubscriptionServiceServer<Self>, skillup_proto::local::Handlers) {
        pb::subscription_service_local::serve(self)
    }
}

fn caller<T>(req: &Request<T>) -> Result<Uuid, Status> {
    Identity::account(req)
}

fn user_id(s: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(s)
        .map_err(|_| SubscribeError::Invalid("user_id", "`user_id` must be a UUID".into()).into())
}

#[tonic::async_trait]
impl pb::subscription_service_server::SubscriptionService for SubscribeGrpc {
    async fn list_plans(
        &self,
        _req: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        Ok(Response::new(pb::ListPlansResponse { plans: self.subs.plans().await? }))
    }

    async fn get_my_subscription(
        &self,
        req: Request<pb::GetMySubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let user = caller(&req)?;
        Ok(Response::new(self.subs.subscription_pb(user).await?))
    }

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let user = caller(&req)?;
        let key = skillup_kit::grpc::idempotency_key(&req, &req.get_ref().idempotency_key);
        let r = req.into_inner();
        Ok(Response::new(self.subs.subscribe(user, &r.plan, &key).await?))
    }

    async fn cancel_subscription(
        &self,
        req: Request<pb::CancelSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let user = caller(&req)?;
        Ok(Response::new(self.subs.cancel(user).await?))
    }

    async fn get_usage(
        &self,
        req: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::Usage>, Status> {
        let user = caller(&req)?;
        Ok(Response::new(self.subs.usage(user).await?))
    }

    async fn check_entitlement(
        &self,
        req: Request<pb::CheckEntitlementRequest>,
    ) -> Result<Response<pb::CheckEntitlementResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(self.subs.entitlement(user_id(&r.user_id)?, &r.function_id).await?))
    }

    async fn reserve_quota(
        &self,
        req: Request<pb::ReserveQuotaRequest>,
    ) -> Result<Response<pb::QuotaHold>, Status> {
        let r = req.into_inner();
        let (h, usage, priority) = self
            .subs
            .reserve(
                user_id(&r.user_id)?,
                &r.function_id,
                r.tokens,
                &r.idempotency_key,
                r.ttl_seconds,
            )
            .await?;
        Ok(Response::new(pb::QuotaHold {
            hold_id: h.id.to_string(),
            tokens: h.tokens as u64,
            expires_at: Some(prost_types::Timestamp {
                seconds: h.expires_at.timestamp(),
                nanos: 0,
            }),
            usage: Some(usage),
            priority,
        }))
    }

    async fn commit_quota(
        &self,
        req: Request<pb::CommitQuotaRequest>,
    ) -> Result<Response<pb::Usage>, Status> {
        let r = req.into_inner();
        Ok(Response::new(self.subs.commit(&r.hold_id, r.actual_tokens).await?))
    }

    async fn release_quota(
        &self,
        req: Request<pb::ReleaseQuotaRequest>,
    ) -> Result<Response<pb::Usage>, Status> {
        Ok(Response::new(self.subs.release(&req.into_inner().hold_id).await?))
    }
}
