//! The generation rules: prepare (caller, email, limits, the prompt from the prompt service),
//! choose a mode, hold quota at the subscribe service, then answer inline, stream, or queue a
//! task durably — and settle the hold by the tokens actually used, or release it on failure.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures::StreamExt;
use prost::Message as _;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};
use sha2::{Digest, Sha256};
use skillup_kit::{
    bus::{Message, QueueSpec, SharedBus},
    cache::SharedCache,
    config::AiConfig,
    grpc::ServiceChannel,
    identity::Identity,
};
use skillup_proto::{
    ai::v1::{self as pb, TaskStatus},
    prompt::v1::{
        BuildPromptRequest, FunctionClass, Role as PbRole,
        prompt_service_client::PromptServiceClient,
    },
    subscribe::v1::{
        CheckEntitlementRequest, CheckEntitlementResponse, CommitQuotaRequest, ReleaseQuotaRequest,
        ReserveQuotaRequest, subscription_service_client::SubscriptionServiceClient,
    },
};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::{
    error::{AiError, Result},
    providers::{Answer, Chain, ChatMessage, ChatRequest, Chunk, Role, Usage, estimate_tokens},
    store::task,
};

/// The work queue of long generations (retry levels `generate.long.retry.N`, dead letters in
/// `generate.long.dead`).
pub const QUEUE: &str = "generate.long";

/// The queue with its priorities (0..=9 by plan) and backoff.
pub fn queue_spec(cfg: &AiConfig) -> QueueSpec {
    QueueSpec::new(QUEUE)
        .max_priority(9)
        .exponential_backoff(Duration::from_millis(cfg.retry_base_ms.max(1)), cfg.max_retries)
}

/// Sync holds lapse after this long if the process dies before settling them.
const SYNC_HOLD_TTL: u32 = 900;
/// Queued tasks may wait and retry for up to a day.
pub(crate) const TASK_HOLD_TTL: u32 = 86_400;

/// Cache key prefixes.
const RESULT_KEY: &str = "ai:res:";
/// Idempotency records of inline and streamed generations: `P` + the request's fingerprint
/// while it runs, `R` + fingerprint + the answer once done (the `2` marks records that carry a
/// fingerprint).
const IDEM_KEY: &str = "ai:idem2:";
/// How long a running request's claim on its key lasts if its process dies.
const IDEM_PENDING: Duration = Duration::from_secs(600);
/// How long a finished request's answer is replayed for its key.
const IDEM_DONE: Duration = Duration::from_secs(86_400);
const TASK_KEY: &str = "ai:task:";
/// Writers of task rows side by side (each writes a batch at a time; see `TaskWriter`).
const TASK_WRITERS: usize = 4;

#[derive(Clone)]
pub struct Generator {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub db: DatabaseConnection,
    pub cache: SharedCache,
    pub bus: SharedBus,
    pub chain: Chain,
    pub cfg: AiConfig,
    pub quota: SubscriptionServiceClient<ServiceChannel>,
    pub prompts: PromptServiceClient<ServiceChannel>,
    pub tasks: crate::store::TaskWriter,
}

/// A request made ready: the caller, the built prompt and the chosen limits.
pub(crate) struct Prepared {
    pub user: Uuid,
    /// The request id of the call (logs and the queued job carry it).
    pub request_id: String,
    pub req: pb::GenerateRequest,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: u32,
    pub class: FunctionClass,
    pub estimated_input: u32,
    pub locale: String,
}

impl Prepared {
    /// Tokens to hold: the prompt's estimate plus the most the answer may take.
    fn hold_tokens(&self) -> u64 {
        (self.estimated_input as u64 + self.max_tokens as u64).max(1)
    }
}

/// What `Generate` did.
pub enum Outcome {
    Inline(pb::Completion),
    Queued(pb::TaskRef),
}

/// What a client's idempotency key already stands for.
enum Claim {
    /// The key is ours now: run the request, then [`Generator::settle_claim`].
    Ours { key: String, fingerprint: [u8; 32] },
    /// The same request ran already: its answer.
    Replay(pb::Completion),
}

/// The request a key binds to: everything that decides the answer, in a canonical order
/// (parameters sorted), hashed. Delivery (inline or streamed, the mode) is not part of it.
fn fingerprint(r: &pb::GenerateRequest) -> [u8; 32] {
    let mut params: Vec<(&String, &String)> = r.params.iter().collect();
    params.sort();
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    part(r.topic.trim().as_bytes());
    part(r.function.as_bytes());
    part(r.locale.as_bytes());
    part(&r.max_tokens.to_be_bytes());
    for (k, v) in params {
        part(k.as_bytes());
        part(v.as_bytes());
    }
    h.finalize().into()
}

fn key_reused() -> AiError {
    AiError::KeyReused(
        "this Idempotency-Key was already used for another request; send a new key with a new request"
            .into(),
    )
}

/// A cached answer.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedAnswer {
    provider: String,
    answer: Answer,
}

fn sha_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn ts(t: chrono::DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

pub(crate) fn status_text(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Queued => "queued",
        TaskStatus::Running => "running",
        TaskStatus::Completed => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
        TaskStatus::Unspecified => "",
    }
}

pub(crate) fn status_of(s: &str) -> TaskStatus {
    match s {
        "queued" => TaskStatus::Queued,
        "running" => TaskStatus::Running,
        "completed" => TaskStatus::Completed,
        "failed" => TaskStatus::Failed,
        "cancelled" => TaskStatus::Cancelled,
        _ => TaskStatus::Unspecified,
    }
}

/// A task row as the API shows it.
pub fn task_pb(t: &task::Model, with_text: bool) -> pb::Task {
    let input = t.input_tokens.max(0) as u32;
    let output = t.output_tokens.max(0) as u32;
    pb::Task {
        id: t.id.to_string(),
        status: status_of(&t.status) as i32,
        topic: t.topic.clone(),
        function: t.function.clone(),
        text: if with_text { t.text.clone().unwrap_or_default() } else { String::new() },
        error: t.error.clone().unwrap_or_default(),
        usage: (t.status == "completed").then_some(pb::TokenUsage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input + output,
        }),
        attempts: t.attempts.max(0) as u32,
        created_at: Some(ts(t.created_at)),
        updated_at: Some(ts(t.updated_at)),
        locale: t.locale.clone(),
    }
}

fn token_usage(u: Usage) -> pb::TokenUsage {
    pb::TokenUsage { input_tokens: u.input, output_tokens: u.output, total_tokens: u.total() }
}

fn invalid(field: &'static str, msg: impl Into<String>) -> AiError {
    AiError::Invalid(field, msg.into())
}

/// Limits the contract states, checked before anything else is asked.
fn validate(r: &pb::GenerateRequest) -> Result<()> {
    let topic = r.topic.trim();
    if topic.is_empty() || topic.chars().count() > 200 {
        return Err(invalid("topic", "`topic` must be 1..=200 characters"));
    }
    if r.function.is_empty()
        || r.function.len() > 64
        || !r
            .function
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(invalid("function", "`function` must be a function slug such as \"quiz\""));
    }
    if r.params.len() > 16 {
        return Err(invalid("params", "at most 16 `params`"));
    }
    if let Some((k, _)) = r.params.iter().find(|(_, v)| v.chars().count() > 200) {
        let k: String = k.chars().take(32).collect();
        return Err(invalid("params", format!("`params.{k}` is longer than 200 characters")));
    }
    if r.max_tokens > 32_000 {
        return Err(invalid("max_tokens", "`max_tokens` must be at most 32000"));
    }
    if r.idempotency_key.len() > 128 {
        return Err(invalid("idempotency_key", "`idempotency_key` must be at most 128 characters"));
    }
    if pb::Mode::try_from(r.mode).is_err() {
        return Err(invalid("mode", "`mode` must be auto, sync or async"));
    }
    Ok(())
}

impl Generator {
    pub fn new(
        db: DatabaseConnection,
        cache: SharedCache,
        bus: SharedBus,
        chain: Chain,
        cfg: AiConfig,
        subscribe: ServiceChannel,
        prompt: ServiceChannel,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db: db.clone(),
                cache,
                bus,
                chain,
                cfg,
                quota: SubscriptionServiceClient::new(subscribe),
                prompts: PromptServiceClient::new(prompt),
                tasks: crate::store::TaskWriter::start(db.clone(), TASK_WRITERS),
            }),
        }
    }

    pub fn chain(&self) -> &Chain {
        &self.inner.chain
    }

    /// Checks the caller and the request, and builds the prompt.
    pub(crate) async fn prepare(
        &self,
        identity: &Identity,
        req: pb::GenerateRequest,
    ) -> Result<Prepared> {
        let user = Uuid::parse_str(&identity.user_id)
            .map_err(|_| invalid("user_id", "the caller is not an account"))?;
        if self.inner.cfg.require_verified_email && !identity.email_verified {
            return Err(AiError::EmailNotVerified);
        }
        validate(&req)?;
        let ask = BuildPromptRequest {
            topic: req.topic.trim().to_owned(),
            function_id: req.function.clone(),
            params: req.params.clone(),
            locale: req.locale.clone(),
            max_tokens: req.max_tokens,
        };
        let built = again(|| {
            let mut call = tonic::Request::new(ask.clone());
            identity.forward(&mut call);
            call.set_timeout(Duration::from_secs(5));
            let mut prompts = self.inner.prompts.clone();
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
        Ok(Prepared {
            user,
            request_id: identity.request_id.clone(),
            class: built.class(),
            max_tokens: built.max_tokens.max(1),
            estimated_input: built.estimated_input_tokens,
            locale: built.locale,
            messages,
            req,
        })
    }

    /// `mode: auto` queues long functions and long answers.
    fn queues(&self, p: &Prepared) -> bool {
        match p.req.mode() {
            pb::Mode::Sync => false,
            pb::Mode::Async => true,
            pb::Mode::Auto | pb::Mode::Unspecified => {
                p.class == FunctionClass::Long || p.max_tokens > self.inner.cfg.sync_max_tokens
            }
        }
    }

    fn chat(&self, p: &Prepared, model: String) -> ChatRequest {
        ChatRequest {
            model,
            messages: p.messages.clone(),
            max_tokens: p.max_tokens,
            temperature: self.inner.cfg.temperature,
            function: p.req.function.clone(),
            topic: p.req.topic.trim().to_owned(),
            locale: p.locale.clone(),
        }
    }

    /// The result cache's key: per user (another user's identical request is no hit, so the
    /// cache tells nobody what others asked), per provider, model, prompt and limits.
    fn result_key(&self, p: &Prepared) -> String {
        let primary = self.inner.chain.primary(&p.req.function);
        let messages = serde_json::to_vec(&p.messages).unwrap_or_default();
        format!(
            "{RESULT_KEY}{}",
            sha_hex(&[
                p.user.as_bytes(),
                primary.name.as_bytes(),
                primary.model.as_bytes(),
                &messages,
                &p.max_tokens.to_be_bytes(),
                &self.inner.cfg.temperature.to_be_bytes(),
            ])
        )
    }

    async fn cached(&self, p: &Prepared) -> Option<CachedAnswer> {
        if self.inner.cfg.cache_ttl_secs == 0 {
            return None;
        }
        match self.inner.cache.get(&self.result_key(p)).await {
            Ok(Some(b)) => serde_json::from_slice(&b).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "result cache unavailable; generating");
                None
            }
        }
    }

    async fn remember(&self, p: &Prepared, provider: &str, answer: &Answer) {
        self.remember_at(&self.result_key(p), provider, answer).await;
    }

    async fn remember_at(&self, key: &str, provider: &str, answer: &Answer) {
        let ttl = self.inner.cfg.cache_ttl_secs;
        if ttl == 0 || answer.finish_reason == "content_filter" {
            return;
        }
        let value = CachedAnswer { provider: provider.to_owned(), answer: answer.clone() };
        if let Ok(bytes) = serde_json::to_vec(&value) {
            let _ = self.inner.cache.set(key, bytes.into(), Some(Duration::from_secs(ttl))).await;
        }
    }

    /// A cache hit's charge: a configured share of its tokens, settled through a hold, or just
    /// an entitlement check when hits are free (a plan must still include the function).
    async fn charge_hit(&self, p: &Prepared, key: &str, usage: Usage) -> Result<()> {
        let pct = self.inner.cfg.cache_hit_charge_percent as u64;
        let tokens = usage.total() as u64 * pct / 100;
        if tokens == 0 {
            let res = self.entitlement(p).await?;
            if !res.allowed {
                use skillup_proto::subscribe::v1::DenyReason;
                let code = match res.reason() {
                    DenyReason::QuotaExhausted => {
                        skillup_proto::common::v1::ErrorCode::QuotaExceeded
                    }
                    _ => skillup_proto::common::v1::ErrorCode::SubscriptionRequired,
                };
                return Err(AiError::Upstream(skillup_kit::error::status(code, res.message)));
            }
            return Ok(());
        }
        let (hold, _) = self.reserve(p, tokens, key, SYNC_HOLD_TTL).await?;
        self.commit(&hold, tokens).await;
        Ok(())
    }

    pub(crate) async fn reserve(
        &self,
        p: &Prepared,
        tokens: u64,
        key: &str,
        ttl: u32,
    ) -> Result<(String, u32)> {
        let ask = ReserveQuotaRequest {
            user_id: p.user.to_string(),
            function_id: p.req.function.clone(),
            tokens,
            idempotency_key: key.to_owned(),
            ttl_seconds: ttl,
        };
        // Safe to repeat: a second reserve with the key finds the first one's hold.
        let hold = again(|| {
            let (mut quota, call) = (self.inner.quota.clone(), traced(ask.clone()));
            async move { quota.reserve_quota(call).await }
        })
        .await
        .map_err(|s| AiError::from_call("subscribe", s))?
        .into_inner();
        Ok((hold.hold_id, hold.priority))
    }

    /// Settles a hold by what was used; retried, since the answer was already produced (a
    /// hold left unsettled lapses back to the user after its TTL — under-charging, never over).
    /// `false`: not settled, worth trying again later.
    pub(crate) async fn commit(&self, hold_id: &str, tokens: u64) -> bool {
        for attempt in 0..3u32 {
            let res = self
                .inner
                .quota
                .clone()
                .commit_quota(traced(CommitQuotaRequest {
                    hold_id: hold_id.to_owned(),
                    actual_tokens: tokens,
                }))
                .await;
            match res {
                Ok(_) => return true,
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    // Settled another way already (released by a cancel): nothing to charge.
                    tracing::info!(hold = hold_id, "hold already settled");
                    return true;
                }
                Err(s) if s.code() == tonic::Code::NotFound => {
                    // Only a database crash right after the reserve loses a hold (holds commit
                    // without waiting for the WAL flush): nothing to charge, nothing to retry.
                    tracing::error!(
                        hold = hold_id,
                        "the hold is gone; this generation is not charged"
                    );
                    return true;
                }
                Err(s) => {
                    tracing::warn!(hold = hold_id, code = ?s.code(), "committing the hold failed");
                    tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
                }
            }
        }
        false
    }

    /// Gives a hold back (the generation failed or was cancelled).
    pub(crate) async fn release(&self, hold_id: &str) -> bool {
        for attempt in 0..3u32 {
            let res = self
                .inner
                .quota
                .clone()
                .release_quota(traced(ReleaseQuotaRequest { hold_id: hold_id.to_owned() }))
                .await;
            match res {
                Ok(_) => return true,
                Err(s) if s.code() == tonic::Code::AlreadyExists => return true,
                Err(s) => {
                    tracing::warn!(hold = hold_id, code = ?s.code(), "releasing the hold failed");
                    tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
                }
            }
        }
        false
    }

    /// The quota idempotency key of a queued task: the client's key (so a concurrent retry
    /// finds the same hold), or a fresh one. Inline and streamed generations always take a
    /// fresh hold: their key is bound to the request by [`Self::claim`] instead.
    fn hold_key(p: &Prepared, fresh: &Uuid) -> String {
        if p.req.idempotency_key.is_empty() {
            format!("ai:{fresh}")
        } else {
            format!("ai:{}", &sha_hex(&[p.req.idempotency_key.as_bytes()])[..40])
        }
    }

    /// `Generate`: inline or queued by the mode.
    pub async fn generate(&self, identity: &Identity, req: pb::GenerateRequest) -> Result<Outcome> {
        let p = self.prepare(identity, req).await?;
        if self.queues(&p) {
            let task = self.enqueue(p).await?;
            return Ok(Outcome::Queued(pb::TaskRef {
                status_url: format!("/api/generate/{}", task.id),
                task_id: task.id,
                status: task.status,
            }));
        }
        match self.claim(&p).await? {
            None => self.inline(&p).await.map(Outcome::Inline),
            Some(Claim::Replay(c)) => Ok(Outcome::Inline(c)),
            Some(Claim::Ours { key, fingerprint }) => {
                let res = self.inline(&p).await;
                self.settle_claim(&key, &fingerprint, res.as_ref().ok()).await;
                res.map(Outcome::Inline)
            }
        }
    }

    /// Binds the request's idempotency key (if any) to the request: the first request with a
    /// key claims it; the same request again gets the first answer (or, while the first still
    /// runs, a conflict to retry); another request with the key is refused.
    async fn claim(&self, p: &Prepared) -> Result<Option<Claim>> {
        if p.req.idempotency_key.is_empty() {
            return Ok(None);
        }
        let key = format!("{IDEM_KEY}{}:{}", p.user, sha_hex(&[p.req.idempotency_key.as_bytes()]));
        let fingerprint = fingerprint(&p.req);
        let mut pending = vec![b'P'];
        pending.extend(fingerprint);
        let cache = &self.inner.cache;
        if cache.set_if_absent(&key, pending.into(), Some(IDEM_PENDING)).await? {
            return Ok(Some(Claim::Ours { key, fingerprint }));
        }
        match cache.get(&key).await? {
            Some(b) if b.len() >= 33 && b[1..33] != fingerprint => Err(key_reused()),
            Some(b) if b[0] == b'R' && b.len() >= 33 => pb::Completion::decode(&b[33..])
                .map(|c| Some(Claim::Replay(c)))
                .map_err(|e| AiError::Unavailable(format!("stored answer: {e}"))),
            _ => Err(AiError::Conflict(
                "a request with this idempotency key is still running; retry in a moment".into(),
            )),
        }
    }

    /// Ends a claim: the answer is kept for replays, or (no answer: the request failed, or its
    /// client left mid-stream) the key is free again — whatever was produced was charged.
    async fn settle_claim(
        &self,
        key: &str,
        fingerprint: &[u8; 32],
        answer: Option<&pb::Completion>,
    ) {
        let cache = &self.inner.cache;
        let res = match answer {
            Some(c) => {
                let mut v = vec![b'R'];
                v.extend(fingerprint);
                v.extend(c.encode_to_vec());
                cache.set(key, v.into(), Some(IDEM_DONE)).await
            }
            None => cache.delete(key).await.map(|_| ()),
        };
        if let Err(e) = res {
            // The pending claim lapses on its own; until then the key answers "still running".
            tracing::warn!(error = %e, "idempotency record not updated");
        }
    }

    async fn inline(&self, p: &Prepared) -> Result<pb::Completion> {
        let id = Uuid::now_v7();
        let key = format!("ai:{id}");
        if let Some(hit) = self.cached(p).await {
            self.charge_hit(p, &key, hit.answer.usage).await?;
            metrics::counter!("ai_cache_hits_total").increment(1);
            return Ok(completion(&id, &hit.provider, hit.answer, true));
        }
        let (hold, _) = self.reserve(p, p.hold_tokens(), &key, SYNC_HOLD_TTL).await?;
        let started = std::time::Instant::now();
        match self.inner.chain.complete(&p.req.function, |m| self.chat(p, m)).await {
            Ok((served, answer)) => {
                metrics::histogram!("ai_provider_seconds", "mode" => "sync")
                    .record(started.elapsed().as_secs_f64());
                // Settle and cache off the answer's path: the answer is produced either way, and
                // a hold a crash leaves unsettled lapses back to the user (under-charge, never
                // over).
                let (this, tokens, label) =
                    (self.clone(), answer.usage.total() as u64, served.label);
                let (key, kept) = (self.result_key(p), answer.clone());
                tokio::spawn(async move {
                    this.remember_at(&key, label, &kept).await;
                    this.commit(&hold, tokens).await;
                });
                Ok(completion(&id, served.label, answer, false))
            }
            Err(e) => {
                self.release(&hold).await;
                Err(e.into())
            }
        }
    }

    /// `GenerateStream`: `started`, the text as it comes, `finished` with the usage charged.
    /// A client that leaves stops the provider call; the hold settles by what was produced.
    /// With an idempotency key, the same request again replays the first stream.
    pub async fn stream(&self, identity: &Identity, req: pb::GenerateRequest) -> Result<Events> {
        let p = self.prepare(identity, req).await?;
        let claim = match self.claim(&p).await? {
            Some(Claim::Replay(c)) => return Ok(replay(c)),
            Some(Claim::Ours { key, fingerprint }) => Some((key, fingerprint)),
            None => None,
        };
        let res = self.stream_now(p, claim.clone()).await;
        if res.is_err()
            && let Some((key, fingerprint)) = &claim
        {
            self.settle_claim(key, fingerprint, None).await;
        }
        res
    }

    async fn stream_now(&self, p: Prepared, claim: Option<(String, [u8; 32])>) -> Result<Events> {
        use pb::generate_stream_event::Event;
        let id = Uuid::now_v7();
        let key = format!("ai:{id}");
        if let Some(hit) = self.cached(&p).await {
            self.charge_hit(&p, &key, hit.answer.usage).await?;
            metrics::counter!("ai_cache_hits_total").increment(1);
            let c = completion(&id, &hit.provider, hit.answer, true);
            if let Some((key, fingerprint)) = &claim {
                self.settle_claim(key, fingerprint, Some(&c)).await;
            }
            return Ok(replay(c));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let ev = |e: Event| Ok(pb::GenerateStreamEvent { event: Some(e) });

        let (hold, _) = self.reserve(&p, p.hold_tokens(), &key, SYNC_HOLD_TTL).await?;
        let opened = self.inner.chain.stream(&p.req.function, |m| self.chat(&p, m)).await;
        let (served, first, mut rest) = match opened {
            Ok(s) => s,
            Err(e) => {
                self.release(&hold).await;
                return Err(e.into());
            }
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut text = String::new();
            let mut usage: Option<Usage> = None;
            let mut finish: Option<String> = None;
            let mut failure: Option<crate::providers::ProviderError> = None;
            let mut left = false;
            let started = ev(Event::Started(pb::StreamStarted {
                id: id.to_string(),
                provider: served.label.to_owned(),
                model: served.model.clone(),
                cached: false,
            }));
            let mut pending = first.map(Ok);
            if tx.send(started).await.is_err() {
                left = true;
            }
            while !left {
                let item = match pending.take() {
                    Some(i) => Some(i),
                    None => tokio::select! {
                        i = rest.next() => i,
                        _ = tx.closed() => { left = true; break; }
                    },
                };
                match item {
                    None => break,
                    Some(Ok(Chunk::Delta(t))) => {
                        text.push_str(&t);
                        if tx.send(ev(Event::Delta(t))).await.is_err() {
                            left = true;
                        }
                    }
                    Some(Ok(Chunk::Usage(u))) => usage = Some(u),
                    Some(Ok(Chunk::Finish(f))) => finish = Some(f),
                    Some(Err(e)) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            // Dropping the provider stream closes its connection: the provider stops.
            drop(rest);
            let produced = Usage {
                input: usage.map_or(p.estimated_input, |u| u.input),
                output: match usage {
                    Some(u) if !left && failure.is_none() => u.output,
                    _ => estimate_tokens(&text),
                },
            };
            let outcome = if left {
                "client_left"
            } else if failure.is_some() {
                "provider_failed"
            } else {
                "ok"
            };
            metrics::counter!("ai_streams_total", "outcome" => outcome).increment(1);
            if left {
                tracing::info!(generation = %id, tokens = produced.total(), "client left mid-stream; provider call cancelled");
                if let Some((key, fingerprint)) = &claim {
                    this.settle_claim(key, fingerprint, None).await;
                }
            } else if let Some(e) = failure {
                // Settled before the error: a client sees the end only after the charge.
                this.commit(&hold, produced.total() as u64).await;
                if let Some((key, fingerprint)) = &claim {
                    this.settle_claim(key, fingerprint, None).await;
                }
                let status: tonic::Status = AiError::Provider(e).into();
                let _ = tx.send(Err(status)).await;
                return;
            } else {
                // The last event first; the stream closes once the hold is settled. A replay
                // of the key is ready before the client sees the end.
                let finish_reason = finish.unwrap_or_else(|| "stop".into());
                let answer = Answer { text, usage: produced, finish_reason, model: served.model };
                if let Some((key, fingerprint)) = &claim {
                    let c = completion(&id, served.label, answer.clone(), false);
                    this.settle_claim(key, fingerprint, Some(&c)).await;
                }
                let finish_reason = answer.finish_reason.clone();
                let _ = tx
                    .send(ev(Event::Finished(pb::StreamFinished {
                        usage: Some(token_usage(produced)),
                        finish_reason: finish_reason.clone(),
                    })))
                    .await;
                this.remember(&p, served.label, &answer).await;
            }
            this.commit(&hold, produced.total() as u64).await;
        });
        Ok(ReceiverStream::new(rx))
    }

    /// `SubmitTask`: always queued.
    pub async fn submit(&self, identity: &Identity, req: pb::GenerateRequest) -> Result<pb::Task> {
        let p = self.prepare(identity, req).await?;
        self.enqueue(p).await
    }

    /// Stores the task, holds its quota and puts it on the queue with a publisher confirm —
    /// only then is it accepted. A publish that cannot be confirmed fails the task and gives
    /// the hold back, so nothing is left half-written.
    async fn enqueue(&self, p: Prepared) -> Result<pb::Task> {
        // On a task of its own: a caller that leaves (the edge cancels the call when its
        // client disconnects) must not cut it between the hold, the row and the publish.
        // It stays in the caller's span, so the published job carries the caller's trace.
        use tracing::Instrument;
        let this = self.clone();
        tokio::spawn(async move { this.enqueue_now(p).await }.instrument(tracing::Span::current()))
            .await
            .map_err(|e| AiError::Unavailable(format!("queueing: {e}")))?
    }

    async fn enqueue_now(&self, p: Prepared) -> Result<pb::Task> {
        let task_id = Uuid::now_v7();
        let key = Self::hold_key(&p, &task_id);
        let idempotency = (!p.req.idempotency_key.is_empty())
            .then(|| format!("{}:{}", p.user, p.req.idempotency_key));
        if let Some(idem) = &idempotency
            && let Some(t) = task::Entity::find()
                .filter(task::Column::Idempotency.eq(idem.clone()))
                .one(&self.inner.db)
                .await?
        {
            return same_task(&t, &p).then(|| task_pb(&t, true)).ok_or_else(key_reused);
        }
        let (hold, priority) = self.reserve(&p, p.hold_tokens(), &key, TASK_HOLD_TTL).await?;
        let hold_uuid = Uuid::parse_str(&hold)
            .map_err(|_| AiError::Unavailable("subscribe returned a bad hold id".into()))?;
        let now = Utc::now();
        let row = task::Model {
            topic: p.req.topic.trim().to_owned(),
            function: p.req.function.clone(),
            locale: p.locale.clone(),
            messages: serde_json::to_string(&p.messages).unwrap_or_default(),
            max_tokens: p.max_tokens as i32,
            priority: priority as i32,
            idempotency: idempotency.clone(),
            ..task::Model::queued(task_id, p.user, hold_uuid, now)
        };
        let row = match self.inner.tasks.insert(row.clone()).await {
            Ok(()) => row,
            Err(e) if skillup_kit::db::is_unique_violation(&e) => {
                // A concurrent retry with the same key won; it holds the same quota hold.
                let idem = idempotency.unwrap_or_default();
                let t = task::Entity::find()
                    .filter(task::Column::Idempotency.eq(idem))
                    .one(&self.inner.db)
                    .await?
                    .ok_or_else(|| AiError::Unavailable("task vanished".into()))?;
                return same_task(&t, &p).then(|| task_pb(&t, true)).ok_or_else(key_reused);
            }
            Err(e) => {
                self.release(&hold).await;
                return Err(e.into());
            }
        };
        let job = pb::GenerationJob {
            task_id: task_id.to_string(),
            user_id: p.user.to_string(),
            hold_id: hold.clone(),
            request: Some(p.req.clone()),
        };
        let mut msg = Message::new(job.encode_to_vec()).with_priority(priority.min(9) as u8);
        msg.id = task_id.to_string();
        if !p.request_id.is_empty() {
            msg = msg.with_header(crate::worker::REQUEST_ID_HEADER, p.request_id.clone());
        }
        if let Err(e) = self.inner.bus.enqueue(QUEUE, msg).await {
            tracing::error!(task = %task_id, error = %e, "queueing failed; the task is failed and its hold released");
            let _ = task::Entity::update_many()
                .col_expr(task::Column::Status, Expr::value("failed"))
                .col_expr(
                    task::Column::Error,
                    Expr::value("the task could not be queued; nothing was charged"),
                )
                .col_expr(task::Column::UpdatedAt, Expr::value(Utc::now()))
                .filter(task::Column::Id.eq(task_id))
                .exec(&self.inner.db)
                .await;
            self.release(&hold).await;
            return Err(AiError::Unavailable(format!("queue: {e}")));
        }
        metrics::counter!("ai_tasks_queued_total").increment(1);
        Ok(task_pb(&row, true))
    }

    async fn entitlement(&self, p: &Prepared) -> Result<CheckEntitlementResponse> {
        let req = CheckEntitlementRequest {
            user_id: p.user.to_string(),
            function_id: p.req.function.clone(),
        };
        Ok(again(|| {
            let (mut quota, call) = (self.inner.quota.clone(), traced(req.clone()));
            async move { quota.check_entitlement(call).await }
        })
        .await
        .map_err(|s| AiError::from_call("subscribe", s))?
        .into_inner())
    }

    /// One of the user's tasks: from the cache while fresh, else the database.
    pub async fn task(&self, user: Uuid, id: &str) -> Result<pb::Task> {
        let id = Uuid::parse_str(id).map_err(|_| invalid("task_id", "`task_id` must be a UUID"))?;
        if let Ok(Some(b)) = self.inner.cache.get(&format!("{TASK_KEY}{id}")).await
            && b.len() > 16
            && b[..16] == *user.as_bytes()
            && let Ok(t) = pb::Task::decode(&b[16..])
        {
            return Ok(t);
        }
        let t = self.find(user, id).await?;
        Ok(task_pb(&t, true))
    }

    pub(crate) async fn find(&self, user: Uuid, id: Uuid) -> Result<task::Model> {
        task::Entity::find_by_id(id)
            .one(&self.inner.db)
            .await?
            .filter(|t| t.user_id == user)
            .ok_or_else(|| AiError::NotFound("no such task".into()))
    }

    /// Keeps a finished task in the cache for fast polling.
    pub(crate) async fn cache_task(&self, t: &task::Model) {
        let mut v = t.user_id.as_bytes().to_vec();
        v.extend(task_pb(t, true).encode_to_vec());
        let ttl = Duration::from_secs(self.inner.cfg.task_cache_secs.max(1));
        let _ = self.inner.cache.set(&format!("{TASK_KEY}{}", t.id), v.into(), Some(ttl)).await;
    }

    /// The user's tasks, newest first (task ids are time-ordered).
    pub async fn tasks(
        &self,
        user: Uuid,
        page_size: u32,
        page_token: &str,
        status: TaskStatus,
    ) -> Result<(Vec<pb::Task>, String)> {
        let size = match page_size {
            0 => 20,
            n => n.min(100),
        } as u64;
        let mut q = task::Entity::find().filter(task::Column::UserId.eq(user));
        if !page_token.is_empty() {
            let after = Uuid::parse_str(page_token)
                .map_err(|_| invalid("page.page_token", "`page_token` is not one this API gave"))?;
            q = q.filter(task::Column::Id.lt(after));
        }
        if status != TaskStatus::Unspecified {
            q = q.filter(task::Column::Status.eq(status_text(status)));
        }
        let mut rows =
            q.order_by_desc(task::Column::Id).limit(size + 1).all(&self.inner.db).await?;
        let next = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last().map(|t| t.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows.iter().map(|t| task_pb(t, false)).collect(), next))
    }

    /// Cancels a queued or running task: its hold goes back, a worker running it stops.
    pub async fn cancel(&self, user: Uuid, id: &str) -> Result<pb::Task> {
        let id = Uuid::parse_str(id).map_err(|_| invalid("task_id", "`task_id` must be a UUID"))?;
        let n = task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value("cancelled"))
            .col_expr(task::Column::Claim, Expr::value(Option::<String>::None))
            .col_expr(task::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(task::Column::Id.eq(id))
            .filter(task::Column::UserId.eq(user))
            .filter(task::Column::Status.is_in(["queued", "running"]))
            .exec(&self.inner.db)
            .await?
            .rows_affected;
        let t = self.find(user, id).await?;
        if n == 0 {
            return Err(AiError::Conflict(format!("the task is already {}", t.status)));
        }
        self.release(&t.hold_id.to_string()).await;
        self.cache_task(&t).await;
        let ev = pb::GenerationCancelled { task_id: id.to_string(), user_id: user.to_string() };
        if let Err(e) = skillup_kit::events::publish(&self.inner.bus, &user.to_string(), &ev).await
        {
            // The worker also re-reads the row before storing a result: it cannot complete it.
            tracing::warn!(task = %id, error = %e, "cancel event not published");
        }
        Ok(task_pb(&t, true))
    }
}

/// Whether a stored task is the one `p` asks for (its key's retry) — the same function,
/// topic, limits and built prompt (which holds the parameters and locale).
fn same_task(t: &task::Model, p: &Prepared) -> bool {
    t.function == p.req.function
        && t.topic == p.req.topic.trim()
        && t.max_tokens == p.max_tokens as i32
        && serde_json::to_string(&p.messages).is_ok_and(|m| m == t.messages)
}

/// The events of a streamed generation.
pub type Events = ReceiverStream<std::result::Result<pb::GenerateStreamEvent, tonic::Status>>;

/// A finished answer as a stream: `started`, its words, `finished`.
fn replay(c: pb::Completion) -> Events {
    use pb::generate_stream_event::Event;
    let ev = |e: Event| Ok(pb::GenerateStreamEvent { event: Some(e) });
    let mut out = vec![ev(Event::Started(pb::StreamStarted {
        id: c.id,
        provider: c.provider,
        model: c.model,
        cached: c.cached,
    }))];
    for (i, w) in c.text.split(' ').enumerate() {
        out.push(ev(Event::Delta(if i == 0 { w.to_owned() } else { format!(" {w}") })));
    }
    out.push(ev(Event::Finished(pb::StreamFinished {
        usage: c.usage,
        finish_reason: c.finish_reason,
    })));
    let (tx, rx) = tokio::sync::mpsc::channel(out.len());
    for e in out {
        let _ = tx.try_send(e);
    }
    ReceiverStream::new(rx)
}

fn completion(id: &Uuid, provider: &str, a: Answer, cached: bool) -> pb::Completion {
    pb::Completion {
        id: id.to_string(),
        text: a.text,
        usage: Some(token_usage(a.usage)),
        provider: provider.to_owned(),
        model: a.model,
        finish_reason: a.finish_reason,
        cached,
    }
}

/// A call to another service, carrying this span's trace (its span is a child of ours).
fn traced<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    skillup_kit::telemetry::inject_metadata(req.metadata_mut());
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
    .when(|s: &tonic::Status| s.code() == tonic::Code::Unavailable)
    .notify(|s: &tonic::Status, wait: Duration| {
        tracing::debug!(code = ?s.code(), message = s.message(), ?wait, "service unavailable, asking again");
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> pb::GenerateRequest {
        pb::GenerateRequest { topic: "rust".into(), function: "quiz".into(), ..Default::default() }
    }

    #[test]
    fn requests_are_checked_against_the_contract() {
        assert!(validate(&req()).is_ok());
        let bad = |f: fn(&mut pb::GenerateRequest), field: &str| {
            let mut r = req();
            f(&mut r);
            match validate(&r) {
                Err(AiError::Invalid(got, _)) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        };
        bad(|r| r.topic = " ".into(), "topic");
        bad(|r| r.topic = "x".repeat(201), "topic");
        bad(|r| r.function = "Quiz!".into(), "function");
        bad(|r| r.max_tokens = 32_001, "max_tokens");
        bad(|r| r.idempotency_key = "k".repeat(129), "idempotency_key");
        bad(|r| r.mode = 9, "mode");
        bad(
            |r| {
                for i in 0..17 {
                    r.params.insert(format!("p{i}"), "v".into());
                }
            },
            "params",
        );
    }

    #[test]
    fn cache_keys_separate_their_parts() {
        assert_ne!(sha_hex(&[b"ab", b"c"]), sha_hex(&[b"a", b"bc"]));
    }
}
