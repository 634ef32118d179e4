//! The tonic adapter. The caller's own subscription and usage come from the identity the edge
//! asserted; entitlement and quota RPCs are internal (the ai service passes the user).

use skillup_kit::{db::timestamp as ts, identity::Caller};
use skillup_proto::{
    common::v1 as common,
    subscribe::v1::{self as pb, subscription_service_server::SubscriptionServiceServer},
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{
        DenyReason, Entitlement, FunctionUsage, Money, Plan, QuotaHold, ServiceLevel,
        ServiceRecord, Subscription, Usage, UsageHistory,
    },
    error::SubscribeError,
    events::status_pb,
    holds::Release,
    subscriptions::Subscriptions,
};

impl From<Money> for common::Money {
    fn from(m: Money) -> Self {
        common::Money { amount_minor: m.minor, currency: m.currency }
    }
}

impl From<Plan> for pb::Plan {
    fn from(p: Plan) -> Self {
        pb::Plan {
            id: p.id,
            title: p.title,
            price: Some(p.price.into()),
            period_days: p.period_days,
            functions: p.functions,
            token_quota: p.token_quota,
            generation_quota: p.generation_quota,
            rate_limit_tier: p.rate_limit_tier,
            priority: p.priority,
            archived: p.archived,
            service_level: Some(p.service_level.into()),
        }
    }
}

impl From<ServiceLevel> for pb::ServiceLevel {
    fn from(l: ServiceLevel) -> Self {
        pb::ServiceLevel {
            queue_start_p95_ms: l.queue_start_p95_ms,
            availability_bp: l.availability_bp,
            credit_percent: l.credit_percent,
        }
    }
}

impl From<ServiceRecord> for pb::ServiceRecord {
    fn from(r: ServiceRecord) -> Self {
        pb::ServiceRecord {
            plan: r.plan,
            month: r.month,
            generations: r.generations,
            failed: r.failed,
            availability_bp: r.availability_bp,
            queued: r.queued,
            queue_start_p95_ms: u32::try_from(r.queue_start_p95_ms).unwrap_or(u32::MAX),
            promised: Some(r.promised.into()),
            met: r.met,
            closed: r.closed,
            credits: r.credits,
        }
    }
}

/// A wait as the contract carries it (`None`: unset, or not a wait).
fn wait_of(d: Option<prost_types::Duration>) -> Option<std::time::Duration> {
    d.and_then(|d| std::time::Duration::try_from(d).ok())
}

/// A plan as an operator sent it (its code from `id`; `archived` left to ArchivePlan).
fn plan_row(p: pb::Plan) -> crate::store::entities::plan::Model {
    let price = p.price.unwrap_or_default();
    crate::store::entities::plan::Model {
        id: p.id,
        title: p.title,
        price_minor: price.amount_minor,
        currency: price.currency,
        period_days: i32::try_from(p.period_days).unwrap_or(i32::MAX),
        functions: p.functions.join(" "),
        token_quota: i64::try_from(p.token_quota).unwrap_or(-1),
        generation_quota: i32::try_from(p.generation_quota).unwrap_or(-1),
        rate_limit_tier: p.rate_limit_tier,
        priority: i32::try_from(p.priority).unwrap_or(i32::MAX),
        archived: false,
        sla_queue_p95_ms: p.service_level.map_or(0, |l| clamp_i32(l.queue_start_p95_ms)),
        sla_availability_bp: p.service_level.map_or(0, |l| clamp_i32(l.availability_bp)),
        sla_credit_percent: p.service_level.map_or(0, |l| clamp_i32(l.credit_percent)),
    }
}

/// A number the plan's checks then bound (beyond `i32`: out of bounds).
fn clamp_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn plan_pb(p: &crate::store::entities::plan::Model) -> pb::Plan {
    Plan::from(p).into()
}

impl From<Usage> for pb::Usage {
    fn from(u: Usage) -> Self {
        pb::Usage {
            period_start: Some(ts(u.period_start)),
            period_end: Some(ts(u.period_end)),
            tokens_used: u.tokens_used,
            tokens_held: u.tokens_held,
            token_quota: u.token_quota,
            generations_used: u.generations_used,
            generations_held: u.generations_held,
            generation_quota: u.generation_quota,
        }
    }
}

fn functions(by: Vec<FunctionUsage>) -> Vec<pb::FunctionUsage> {
    by.into_iter()
        .map(|f| pb::FunctionUsage {
            function_id: f.function,
            tokens: f.tokens,
            generations: f.generations,
        })
        .collect()
}

impl From<UsageHistory> for pb::UsageHistory {
    fn from(h: UsageHistory) -> Self {
        pb::UsageHistory {
            time_zone: h.time_zone,
            periods: h
                .periods
                .into_iter()
                .map(|p| pb::PeriodUsage {
                    period_start: Some(ts(p.period_start)),
                    period_end: Some(ts(p.period_end)),
                    tokens_used: p.tokens_used,
                    generations_used: p.generations_used,
                    by_function: functions(p.by_function),
                    current: p.current,
                })
                .collect(),
            days: h
                .days
                .into_iter()
                .map(|d| pb::DayUsage {
                    date: d.date.to_string(),
                    tokens: d.tokens,
                    generations: d.generations,
                    by_function: functions(d.by_function),
                })
                .collect(),
        }
    }
}

impl From<Subscription> for pb::Subscription {
    fn from(s: Subscription) -> Self {
        pb::Subscription {
            id: s.id.map(|id| id.to_string()).unwrap_or_default(),
            user_id: s.user.to_string(),
            plan: Some(s.plan.into()),
            status: status_pb(s.status) as i32,
            current_period_start: Some(ts(s.period_start)),
            current_period_end: Some(ts(s.period_end)),
            cancel_at_period_end: s.cancel_at_period_end,
            usage: Some(s.usage.into()),
        }
    }
}

impl From<Entitlement> for pb::CheckEntitlementResponse {
    fn from(e: Entitlement) -> Self {
        let (reason, message) = match e.denied {
            None => (pb::DenyReason::Unspecified, String::new()),
            Some((DenyReason::FunctionNotInPlan, m)) => (pb::DenyReason::FunctionNotInPlan, m),
            Some((DenyReason::QuotaExhausted, m)) => (pb::DenyReason::QuotaExhausted, m),
        };
        pb::CheckEntitlementResponse {
            allowed: reason == pb::DenyReason::Unspecified,
            reason: reason as i32,
            message,
            plan: e.plan,
            priority: e.priority,
        }
    }
}

impl From<QuotaHold> for pb::QuotaHold {
    fn from(h: QuotaHold) -> Self {
        pb::QuotaHold {
            hold_id: h.id.to_string(),
            tokens: h.tokens,
            expires_at: Some(prost_types::Timestamp {
                seconds: h.expires_at.timestamp(),
                nanos: 0,
            }),
            usage: Some(h.usage.into()),
            priority: h.priority,
        }
    }
}

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
    Caller::account(req)
}

fn user_id(s: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(s).map_err(|_| {
        SubscribeError::Invalid("user_id", skillup_kit::invalid::uuid("user_id")).into()
    })
}

#[tonic::async_trait]
impl pb::subscription_service_server::SubscriptionService for SubscribeGrpc {
    async fn list_plans(
        &self,
        _req: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        let plans = self.subs.plans().await?.into_iter().map(Into::into).collect();
        Ok(Response::new(pb::ListPlansResponse { plans, currency: self.subs.selling().to_owned() }))
    }

    async fn get_my_subscription(
        &self,
        req: Request<pb::GetMySubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let user = caller(&req)?;
        Ok(Response::new(self.subs.subscription(user).await?.into()))
    }

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let user = caller(&req)?;
        let key = skillup_kit::grpc::idempotency_key(&req, &req.get_ref().idempotency_key);
        let r = req.into_inner();
        Ok(Response::new(self.subs.subscribe(user, &r.plan, &key).await?.into()))
    }

    async fn cancel_subscription(
        &self,
        req: Request<pb::CancelSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let user = caller(&req)?;
        Ok(Response::new(self.subs.cancel(user).await?.into()))
    }

    async fn get_usage(
        &self,
        req: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::Usage>, Status> {
        let user = caller(&req)?;
        Ok(Response::new(self.subs.usage(user).await?.into()))
    }

    async fn get_usage_history(
        &self,
        req: Request<pb::GetUsageHistoryRequest>,
    ) -> Result<Response<pb::UsageHistory>, Status> {
        let user = caller(&req)?;
        let r = req.into_inner();
        Ok(Response::new(self.subs.usage_history(user, &r.time_zone, r.periods).await?.into()))
    }

    async fn admin_list_plans(
        &self,
        req: Request<pb::AdminListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        skillup_kit::audit::Actor::admin(&req)?;
        let plans = self.subs.admin_plans().await?.iter().map(plan_pb).collect();
        Ok(Response::new(pb::ListPlansResponse { plans, currency: self.subs.selling().to_owned() }))
    }

    async fn create_plan(
        &self,
        req: Request<pb::SavePlanRequest>,
    ) -> Result<Response<pb::Plan>, Status> {
        let actor = skillup_kit::audit::Actor::admin(&req)?;
        let r = req.into_inner();
        let plan = plan_row(r.plan.unwrap_or_default());
        let made = self.subs.create_plan(&actor, plan, &r.reason).await?;
        let mut res = Response::new(plan_pb(&made));
        res.metadata_mut()
            .insert("x-http-status", tonic::metadata::MetadataValue::from_static("201"));
        Ok(res)
    }

    async fn update_plan(
        &self,
        req: Request<pb::SavePlanRequest>,
    ) -> Result<Response<pb::Plan>, Status> {
        let actor = skillup_kit::audit::Actor::admin(&req)?;
        let r = req.into_inner();
        let plan = plan_row(r.plan.unwrap_or_default());
        let saved = self.subs.update_plan(&actor, &r.plan_id, plan, &r.reason).await?;
        Ok(Response::new(plan_pb(&saved)))
    }

    async fn archive_plan(
        &self,
        req: Request<pb::ArchivePlanRequest>,
    ) -> Result<Response<pb::Plan>, Status> {
        let actor = skillup_kit::audit::Actor::admin(&req)?;
        let r = req.into_inner();
        let saved = self.subs.archive_plan(&actor, &r.plan_id, r.archived, &r.reason).await?;
        Ok(Response::new(plan_pb(&saved)))
    }

    type ExportUserDataStream = skillup_kit::grpc::ExportStream;

    async fn export_user_data(
        &self,
        req: Request<skillup_proto::common::v1::ExportUserDataRequest>,
    ) -> Result<Response<Self::ExportUserDataStream>, Status> {
        let subs = self.subs.clone();
        skillup_kit::grpc::export_part(req.get_ref(), move |user, sink| async move {
            subs.export_user(user, &sink).await
        })
    }

    async fn check_entitlement(
        &self,
        req: Request<pb::CheckEntitlementRequest>,
    ) -> Result<Response<pb::CheckEntitlementResponse>, Status> {
        let r = req.into_inner();
        let e = self.subs.entitlement(user_id(&r.user_id)?, &r.function_id).await?;
        Ok(Response::new(e.into()))
    }

    async fn reserve_quota(
        &self,
        req: Request<pb::ReserveQuotaRequest>,
    ) -> Result<Response<pb::QuotaHold>, Status> {
        let r = req.into_inner();
        let hold = self
            .subs
            .reserve(
                user_id(&r.user_id)?,
                &r.function_id,
                r.tokens,
                &r.idempotency_key,
                r.ttl_seconds,
            )
            .await?;
        Ok(Response::new(hold.into()))
    }

    async fn commit_quota(
        &self,
        req: Request<pb::CommitQuotaRequest>,
    ) -> Result<Response<pb::Usage>, Status> {
        let r = req.into_inner();
        let usage = self.subs.commit(&r.hold_id, r.actual_tokens, wait_of(r.queue_wait));
        Ok(Response::new(usage.await?.into()))
    }

    async fn release_quota(
        &self,
        req: Request<pb::ReleaseQuotaRequest>,
    ) -> Result<Response<pb::Usage>, Status> {
        let r = req.into_inner();
        let reason = match r.reason() {
            pb::ReleaseReason::Failed => Some(Release::Failed),
            pb::ReleaseReason::Cancelled => Some(Release::Cancelled),
            pb::ReleaseReason::Unspecified => None,
        };
        let usage = self.subs.release(&r.hold_id, reason, wait_of(r.queue_wait));
        Ok(Response::new(usage.await?.into()))
    }

    async fn list_service_records(
        &self,
        req: Request<pb::ListServiceRecordsRequest>,
    ) -> Result<Response<pb::ListServiceRecordsResponse>, Status> {
        let months = match req.into_inner().months {
            0 => 3,
            n if n > 24 => {
                return Err(SubscribeError::Invalid(
                    "months",
                    skillup_kit::invalid::between("months", 1, 24),
                )
                .into());
            }
            n => n,
        };
        let records = self.subs.service_records(months, chrono::Utc::now()).await?;
        Ok(Response::new(pb::ListServiceRecordsResponse {
            records: records.into_iter().map(Into::into).collect(),
        }))
    }
}
