//! The generator: its state, and what every way of generating shares — the request checked
//! and its prompt built (`prepare`), the provider request, the answer as the API shows it, and
//! the quota and prompt ports it calls.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use sha2::{Digest, Sha256};
use skillup_kit::{bus::SharedBus, cache::SharedCache, identity::Caller};
use uuid::Uuid;

use crate::{
    config::AiConfig,
    domain::{Completion, Delivery, GenerationRequest, Mode, RawChat, TaskStatus},
    error::{AiError, Result},
    ports::{PromptAsk, Prompts, Quota},
    providers::{Answer, Chain, ChatMessage, ChatRequest, estimate_tokens},
    store::task,
};

/// Sync holds lapse after this long if the process dies before settling them.
pub(crate) const SYNC_HOLD_TTL: u32 = 900;

/// The longest conversation for a provider's model: messages, and characters in all.
const RAW_MAX_MESSAGES: usize = 256;
const RAW_MAX_CHARS: usize = 200_000;

/// The answer's length for a provider's model when the caller sets none.
const RAW_DEFAULT_MAX_TOKENS: u32 = 1_024;

/// Writers of task rows side by side (each writes a batch at a time; see `TaskWriter`).
pub(crate) const TASK_WRITERS: usize = 4;

#[derive(Clone)]
pub struct Generator {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub cache: SharedCache,
    pub bus: SharedBus,
    pub chain: Chain,
    pub cfg: AiConfig,
    pub quota: Arc<dyn Quota>,
    pub prompts: Arc<dyn Prompts>,
    pub tasks: crate::store::Tasks,
}

/// A request made ready: the caller, the built prompt and the chosen limits.
pub(crate) struct Prepared {
    pub user: Uuid,
    /// The request id of the call (logs and the queued job carry it).
    pub request_id: String,
    pub req: GenerationRequest,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: u32,
    /// The function is a long one (queued under `mode: auto`).
    pub long: bool,
    pub estimated_input: u32,
    pub locale: String,
}

impl Prepared {
    /// Tokens to hold: the prompt's estimate plus the most the answer may take.
    pub(crate) fn hold_tokens(&self) -> u64 {
        (self.estimated_input as u64 + self.max_tokens as u64).max(1)
    }
}

pub(crate) fn sha_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn invalid(field: &'static str, msg: impl Into<String>) -> AiError {
    AiError::Invalid(field, msg.into())
}

/// Limits the contract states, checked before anything else is asked.
pub(crate) fn validate(r: &GenerationRequest) -> Result<()> {
    let topic = r.topic.trim();
    if topic.is_empty() || topic.chars().count() > 200 {
        return Err(invalid("topic", skillup_kit::invalid::chars("topic", 1, 200)));
    }
    if r.function.is_empty()
        || r.function.len() > 64
        || !r
            .function
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(invalid("function", skillup_kit::invalid::slug("function")));
    }
    if r.params.len() > 16 {
        return Err(invalid("params", skillup_kit::invalid::at_most_items("params", 16)));
    }
    if let Some((k, _)) = r.params.iter().find(|(_, v)| v.chars().count() > 200) {
        let k: String = k.chars().take(32).collect();
        return Err(invalid(
            "params",
            skillup_kit::invalid::at_most_chars(&format!("params.{k}"), 200),
        ));
    }
    if r.max_tokens > 32_000 {
        return Err(invalid("max_tokens", skillup_kit::invalid::at_most("max_tokens", 32_000)));
    }
    if r.idempotency_key.len() > 128 {
        return Err(invalid(
            "idempotency_key",
            skillup_kit::invalid::at_most_chars("idempotency_key", 128),
        ));
    }
    Ok(())
}

pub(crate) fn completion(id: &Uuid, provider: &str, a: Answer, cached: bool) -> Completion {
    Completion {
        id: id.to_string(),
        text: a.text,
        usage: a.usage,
        provider: provider.to_owned(),
        model: a.model,
        finish_reason: a.finish_reason,
        cached,
    }
}

impl Generator {
    /// The bus this generator publishes on.
    pub fn bus(&self) -> SharedBus {
        self.inner.bus.clone()
    }

    pub fn new(
        db: DatabaseConnection,
        cache: SharedCache,
        bus: SharedBus,
        chain: Chain,
        cfg: AiConfig,
        quota: Arc<dyn Quota>,
        prompts: Arc<dyn Prompts>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                cache: cache.clone(),
                bus,
                chain,
                cfg,
                quota,
                prompts,
                tasks: crate::store::Tasks::new(db.clone(), cache.clone(), TASK_WRITERS),
            }),
        }
    }

    pub fn chain(&self) -> &Chain {
        &self.inner.chain
    }

    /// Checks the caller and the request, and builds the prompt.
    pub(crate) async fn prepare(
        &self,
        identity: &Caller,
        req: GenerationRequest,
    ) -> Result<Prepared> {
        let user = Uuid::parse_str(&identity.user_id)
            .map_err(|_| invalid("user_id", skillup_kit::invalid::uuid("user_id")))?;
        if self.inner.cfg.require_verified_email && !identity.email_verified {
            return Err(AiError::EmailNotVerified);
        }
        validate(&req)?;
        if let Some(raw) = &req.raw {
            return self.prepare_raw(identity, user, raw.clone(), req);
        }
        let ask = PromptAsk {
            topic: req.topic.trim().to_owned(),
            function: req.function.clone(),
            params: req.params.clone(),
            locale: req.locale.clone(),
            max_tokens: req.max_tokens,
        };
        let built = self.inner.prompts.build(identity, &ask).await?;
        Ok(Prepared {
            user,
            request_id: identity.request_id.clone(),
            long: built.long,
            max_tokens: built.max_tokens,
            estimated_input: built.estimated_input,
            locale: built.locale,
            messages: built.messages,
            req,
        })
    }

    /// A conversation for one provider's model (the API's `<provider>/<model>`): the messages
    /// as they are, no prompt template; the plan's entitlement is the function `chat`'s, checked
    /// by the hold.
    fn prepare_raw(
        &self,
        identity: &Caller,
        user: Uuid,
        raw: RawChat,
        req: GenerationRequest,
    ) -> Result<Prepared> {
        if !self.inner.chain.serves(&raw.provider, &raw.model) {
            return Err(AiError::UnknownModel(format!("{}/{}", raw.provider, raw.model)));
        }
        let chars: usize = raw.messages.iter().map(|m| m.content.chars().count()).sum();
        if raw.messages.len() > RAW_MAX_MESSAGES || chars > RAW_MAX_CHARS {
            return Err(invalid(
                "messages",
                skillup_kit::invalid::at_most_chars("messages", RAW_MAX_CHARS),
            ));
        }
        let estimated_input = raw.messages.iter().map(|m| estimate_tokens(&m.content) + 4).sum();
        let locale =
            if req.locale.is_empty() { identity.locale.clone() } else { req.locale.clone() };
        Ok(Prepared {
            user,
            request_id: identity.request_id.clone(),
            long: false,
            max_tokens: if req.max_tokens > 0 { req.max_tokens } else { RAW_DEFAULT_MAX_TOKENS },
            estimated_input,
            locale,
            messages: raw.messages,
            req,
        })
    }

    /// The provider and model a request goes to first: the one its caller chose, else its
    /// function's first in the chain (the result cache's key part).
    pub(crate) fn target(&self, p: &Prepared) -> (String, String) {
        match &p.req.raw {
            Some(r) => (r.provider.clone(), r.model.clone()),
            None => {
                let s = self.inner.chain.primary(&p.req.function);
                (s.name, s.model)
            }
        }
    }

    /// `mode: auto` queues long functions and long answers.
    pub(crate) fn queues(&self, p: &Prepared) -> bool {
        match p.req.mode {
            Mode::Sync => false,
            Mode::Async => true,
            Mode::Auto => p.long || p.max_tokens > self.inner.cfg.sync_max_tokens,
        }
    }

    /// The temperature a request is sampled at: its own (an API caller's), else the service's.
    pub(crate) fn temperature(&self, p: &Prepared) -> f32 {
        p.req.sampling.temperature.unwrap_or(self.inner.cfg.temperature)
    }

    pub(crate) fn chat(&self, p: &Prepared, model: String) -> ChatRequest {
        ChatRequest {
            model,
            messages: p.messages.clone(),
            max_tokens: p.max_tokens,
            temperature: self.temperature(p),
            top_p: p.req.sampling.top_p,
            stop: p.req.sampling.stop.clone(),
            function: p.req.function.clone(),
            topic: p.req.topic.trim().to_owned(),
            locale: p.locale.clone(),
        }
    }
}

/// How a generation that was answered at once ended, for its document.
pub(crate) struct Ended<'a> {
    pub id: Uuid,
    pub delivery: Delivery,
    pub provider: &'a str,
    pub answer: &'a Answer,
    /// The quota hold it was charged under (`None` for a cached answer).
    pub hold: Option<&'a str>,
    /// Why it failed, if it did (`answer.text` holds what came before).
    pub error: Option<String>,
    /// Its client left mid-stream.
    pub interrupted: bool,
}

impl Generator {
    /// Files an inline or streamed generation in its owner's library. Awaited before the
    /// answer goes out, so an answer a user saw is in their library; the task writer batches
    /// concurrent ones into one statement and one commit. A failed write is logged and
    /// counted, and the answer still goes out: it was produced and charged.
    pub(crate) async fn keep(&self, p: &Prepared, end: Ended<'_>) {
        let now = chrono::Utc::now();
        let hold = end.hold.and_then(|h| Uuid::parse_str(h).ok()).unwrap_or_default();
        let status = if end.error.is_some() { TaskStatus::Failed } else { TaskStatus::Completed };
        let row = task::Model {
            status,
            topic: p.req.topic.trim().to_owned(),
            function: p.req.function.clone(),
            locale: p.locale.clone(),
            messages: serde_json::to_string(&p.messages).unwrap_or_default(),
            max_tokens: p.max_tokens as i32,
            text: Some(end.answer.text.clone()),
            error: end.error,
            input_tokens: end.answer.usage.input as i32,
            output_tokens: end.answer.usage.output as i32,
            provider: end.provider.chars().take(32).collect(),
            model: end.answer.model.chars().take(128).collect(),
            finish_reason: end.answer.finish_reason.chars().take(32).collect(),
            delivery: end.delivery,
            params: serde_json::to_string(&p.req.params).unwrap_or_else(|_| "{}".into()),
            interrupted: end.interrupted,
            regenerated_from: p.req.regenerated_from,
            ..task::Model::queued(end.id, p.user, hold, now)
        };
        if let Err(e) = self.inner.tasks.file(row).await {
            metrics::counter!("ai_documents_lost_total").increment(1);
            tracing::error!(generation = %end.id, error = %e, "the generation was answered but not filed in the library");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> GenerationRequest {
        GenerationRequest { topic: "rust".into(), function: "quiz".into(), ..Default::default() }
    }

    #[test]
    fn requests_are_checked_against_the_contract() {
        assert!(validate(&req()).is_ok());
        let bad = |f: fn(&mut GenerationRequest), field: &str| {
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
