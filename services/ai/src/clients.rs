//! The gRPC adapters of [`crate::ports`]: the subscribe and prompt services over a
//! [`ServiceChannel`] (a connection, or in-process under `skillup up`). Each call carries this
//! span's trace, and the calls safe to repeat are asked again after UNAVAILABLE.

use std::time::Duration;

use async_trait::async_trait;
use skillup_kit::{grpc::ServiceChannel, identity::Caller};
use skillup_proto::{
    prompt::v1::{
        BuildPromptRequest, FunctionClass, Role as PbRole,
        prompt_service_client::PromptServiceClient,
    },
    subscribe::v1::{
        CheckEntitlementRequest, CommitQuotaRequest, DenyReason, ReleaseQuotaRequest,
        ReserveQuotaRequest, subscription_service_client::SubscriptionServiceClient,
    },
};
use tonic::Code;
use uuid::Uuid;

use crate::{
    error::{AiError, Result},
    ports::{BuiltPrompt, Entitlement, Hold, HoldAsk, PromptAsk, Prompts, Quota, Release, Settled},
    providers::{ChatMessage, Role},
};

/// [`Quota`] at the subscribe service.
#[derive(Clone)]
pub struct GrpcQuota(SubscriptionServiceClient<ServiceChannel>);

impl GrpcQuota {
    pub fn new(channel: impl Into<ServiceChannel>) -> Self {
        Self(SubscriptionServiceClient::new(channel.into()))
    }
}

#[async_trait]
impl Quota for GrpcQuota {
    async fn entitlement(&self, user: Uuid, function: &str) -> Result<Entitlement> {
        let req =
            CheckEntitlementRequest { user_id: user.to_string(), function_id: function.into() };
        let res = again(|| {
            let (mut quota, call) = (self.0.clone(), traced(req.clone()));
            async move { quota.check_entitlement(call).await }
        })
        .await
        .map_err(|s| AiError::from_call("subscribe", s))?
        .into_inner();
        Ok(match (res.allowed, res.reason()) {
            (true, _) => Entitlement::Allowed,
            (false, DenyReason::QuotaExhausted) => Entitlement::QuotaExhausted(res.message),
            (false, _) => Entitlement::NotSubscribed(res.message),
        })
    }

    async fn reserve(&self, ask: &HoldAsk) -> Result<Hold> {
        let req = ReserveQuotaRequest {
            user_id: ask.user.to_string(),
            function_id: ask.function.clone(),
            tokens: ask.tokens,
            idempotency_key: ask.key.clone(),
            ttl_seconds: ask.ttl_secs,
        };
        // Safe to repeat: a second reserve with the key finds the first one's hold.
        let hold = again(|| {
            let (mut quota, call) = (self.0.clone(), traced(req.clone()));
            async move { quota.reserve_quota(call).await }
        })
        .await
        .map_err(|s| AiError::from_call("subscribe", s))?
        .into_inner();
        Ok(Hold { id: hold.hold_id, priority: hold.priority })
    }

    async fn commit(
        &self,
        hold: &str,
        tokens: u64,
        queue_wait: Option<std::time::Duration>,
    ) -> Result<Settled> {
        let req = CommitQuotaRequest {
            hold_id: hold.to_owned(),
            actual_tokens: tokens,
            queue_wait: queue_wait.and_then(|d| prost_types::Duration::try_from(d).ok()),
        };
        settled(self.0.clone().commit_quota(traced(req)).await.map(|_| ()))
    }

    async fn release(
        &self,
        hold: &str,
        why: Release,
        queue_wait: Option<std::time::Duration>,
    ) -> Result<Settled> {
        use skillup_proto::subscribe::v1::ReleaseReason;
        let reason = match why {
            Release::Failed => ReleaseReason::Failed,
            Release::Cancelled => ReleaseReason::Cancelled,
            Release::Unsaid => ReleaseReason::Unspecified,
        };
        let req = ReleaseQuotaRequest {
            hold_id: hold.to_owned(),
            reason: reason as i32,
            queue_wait: queue_wait.and_then(|d| prost_types::Duration::try_from(d).ok()),
        };
        settled(self.0.clone().release_quota(traced(req)).await.map(|_| ()))
    }
}

fn settled(res: std::result::Result<(), tonic::Status>) -> Result<Settled> {
    match res {
        Ok(()) => Ok(Settled::Now),
        Err(s) if s.code() == Code::AlreadyExists => Ok(Settled::Already),
        Err(s) if s.code() == Code::NotFound => Ok(Settled::Gone),
        Err(s) => Err(AiError::from_call("subscribe", s)),
    }
}

/// [`Prompts`] at the prompt service.
#[derive(Clone)]
pub struct GrpcPrompts(PromptServiceClient<ServiceChannel>);

impl GrpcPrompts {
    pub fn new(channel: impl Into<ServiceChannel>) -> Self {
        Self(PromptServiceClient::new(channel.into()))
    }
}

#[async_trait]
impl Prompts for GrpcPrompts {
    async fn build(&self, caller: &Caller, ask: &PromptAsk) -> Result<BuiltPrompt> {
        let req = BuildPromptRequest {
            topic: ask.topic.clone(),
            function_id: ask.function.clone(),
            params: ask.params.clone(),
            locale: ask.locale.clone(),
            max_tokens: ask.max_tokens,
        };
        let built = again(|| {
            let mut call = tonic::Request::new(req.clone());
            caller.forward(&mut call);
            call.set_timeout(Duration::from_secs(5));
            let mut prompts = self.0.clone();
            async move { prompts.build_prompt(call).await }
        })
        .await
        .map_err(|s| AiError::from_call("prompt", s))?
        .into_inner();
        let messages = built
            .messages
            .iter()
            .map(|m| ChatMessage {
                role: match PbRole::try_from(m.role) {
                    Ok(PbRole::System) => Role::System,
                    Ok(PbRole::Assistant) => Role::Assistant,
                    _ => Role::User,
                },
                content: m.content.clone(),
            })
            .collect();
        Ok(BuiltPrompt {
            messages,
            long: built.class() == FunctionClass::Long,
            max_tokens: built.max_tokens.max(1),
            estimated_input: built.estimated_input_tokens,
            locale: built.locale,
        })
    }
}

/// A call to another service, carrying this span's trace (its span is a child of ours).
/// A call on behalf of the one being served: its trace and its language.
fn traced<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    skillup_kit::telemetry::inject_metadata(req.metadata_mut());
    skillup_kit::i18n::forward(req.metadata_mut());
    req
}

/// Calls another service, and again after UNAVAILABLE — the service restarting or being
/// redeployed, a connection reset — a few times within ~0.4 s, with jittered exponential
/// backoff. Only for calls safe to repeat: reads, and reserves (by their idempotency key).
async fn again<T, F, Fut>(call: F) -> std::result::Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
{
    use backon::Retryable as _;
    call.retry(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(25))
            .with_max_times(4)
            .with_jitter(),
    )
    .when(|s: &tonic::Status| s.code() == Code::Unavailable)
    .notify(|s: &tonic::Status, wait: Duration| {
        tracing::debug!(code = ?s.code(), message = s.message(), ?wait, "service unavailable, asking again");
    })
    .await
}
