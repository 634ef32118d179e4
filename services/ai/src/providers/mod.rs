//! Text providers behind one port: OpenAI Chat Completions (and any OpenAI-compatible server),
//! Anthropic Messages, and an offline provider for `skillup up` without API keys. A [`Chain`]
//! tries them in order before the first token, each behind its own circuit breaker and
//! timeouts.
//!
//! Hand-written over reqwest + `eventsource-stream` rather than a vendor SDK: the two wire
//! formats are small, and one error taxonomy across them (what is retryable, what falls back,
//! what is the caller's fault) is the part that matters here.

mod anthropic;
mod offline;
mod openai;

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, stream::BoxStream};
use skillup_kit::breaker::Breaker;

use crate::config::{AiConfig, ProviderConfig, ProviderKind};

pub use self::{anthropic::Anthropic, offline::Offline, openai::OpenAi};

/// Who speaks in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// One request to a provider.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: u32,
    pub temperature: f32,
    /// Nucleus sampling; `None`: the provider's default.
    pub top_p: Option<f32>,
    /// Sequences the answer stops before (at most 4).
    pub stop: Vec<String>,
    /// What the messages ask for — the catalog function, the user's topic, the language —
    /// for the offline provider's sample (real providers read the messages only).
    pub function: String,
    pub topic: String,
    pub locale: String,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub input: u32,
    pub output: u32,
}

impl Usage {
    pub fn total(&self) -> u32 {
        self.input.saturating_add(self.output)
    }
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    pub text: String,
    pub usage: Usage,
    pub finish_reason: String,
    pub model: String,
}

/// A piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Text, in order (never empty).
    Delta(String),
    /// Usage as the provider reports it (may come before or after the finish reason).
    Usage(Usage),
    /// Why it stopped: "stop", "length", "content_filter", …
    Finish(String),
}

pub type ChunkStream = BoxStream<'static, Result<Chunk, ProviderError>>;

/// What went wrong, in the terms the callers decide on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// 429: try later (at least `retry_after`), or another provider now.
    #[error("the provider is rate limiting: {message}")]
    RateLimited { retry_after: Option<Duration>, message: String },
    /// 5xx, overloaded, a timeout, a refused connection, a cut stream.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// Our side is wrong for this provider (401, 403, 404 model): another provider may serve.
    #[error("the provider refused our credentials or model: {0}")]
    Misconfigured(String),
    /// The request itself is bad (400, 422): no provider will take it; not retryable.
    #[error("the provider rejected the request: {0}")]
    Rejected(String),
    /// The content policy refused it: not retryable.
    #[error("the provider's content policy refused it: {0}")]
    ContentPolicy(String),
    /// Every provider's breaker is open; the first closes again after this long.
    #[error("every text provider is failing; retry in {0:?}")]
    Open(Duration),
}

impl ProviderError {
    /// Worth another attempt later (the worker's retry queue).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Unavailable(_)
                | ProviderError::Open(_)
                | ProviderError::Misconfigured(_)
        )
    }

    /// The provider (not the request) failed: counts against its breaker, and the next
    /// provider in the chain is tried.
    pub fn provider_fault(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Unavailable(_)
                | ProviderError::Misconfigured(_)
        )
    }

    /// The least wait the provider asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } => *retry_after,
            ProviderError::Open(d) => Some(*d),
            _ => None,
        }
    }

    /// A reason a user can read (no internals), at most 500 characters.
    pub fn user_reason(&self) -> String {
        let s = match self {
            ProviderError::RateLimited { .. } | ProviderError::Open(_) => {
                "the text provider is busy; please try again later".to_owned()
            }
            ProviderError::Unavailable(_) | ProviderError::Misconfigured(_) => {
                "the text provider is unavailable; please try again later".to_owned()
            }
            ProviderError::Rejected(m) => format!("the text provider rejected the request: {m}"),
            ProviderError::ContentPolicy(_) => {
                "the text provider's content policy refused this request".to_owned()
            }
        };
        s.chars().take(500).collect()
    }
}

/// One provider.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// "openai", "anthropic", "compatible" or "offline" — shown in every response.
    fn label(&self) -> &'static str;
    /// The whole answer.
    async fn complete(&self, req: &ChatRequest) -> Result<Answer, ProviderError>;
    /// The answer as it is generated. Dropping the stream cancels the provider request.
    async fn stream(&self, req: &ChatRequest) -> Result<ChunkStream, ProviderError>;
}

/// Rough tokens of a text when a provider does not say: characters / 4, rounded up.
pub fn estimate_tokens(text: &str) -> u32 {
    (text.chars().count() as u32).div_ceil(4)
}

/// A configured provider with its breaker and limits.
pub struct Entry {
    pub name: String,
    pub provider: Arc<dyn Provider>,
    pub config: ProviderConfig,
    pub breaker: Breaker,
}

/// Who answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Config name of the entry ("openai", "local", …).
    pub name: String,
    /// Its wire label ("openai", "anthropic", "compatible", "offline").
    pub label: &'static str,
    pub model: String,
}

/// The providers in fallback order.
pub struct Chain {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|e| &e.name)).finish()
    }
}

impl Chain {
    pub fn new(entries: Vec<Entry>) -> Self {
        Self { entries }
    }

    /// The chain the config describes: entries of `ai.chain` that can run (a key where one is
    /// needed), or the offline provider when none can. Keys never reach the logs.
    pub fn from_config(cfg: &AiConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let mut entries = Vec::new();
        for name in &cfg.chain {
            let pc = match cfg.providers.get(name) {
                Some(pc) => pc.clone(),
                None if name == "offline" => {
                    ProviderConfig { kind: ProviderKind::Offline, ..Default::default() }
                }
                None => return Err(format!("ai.chain names `{name}`, which is not configured")),
            };
            let key = pc.resolve_key().map_err(|e| format!("ai.providers.{name}: {e}"))?;
            let provider: Arc<dyn Provider> = match pc.kind {
                ProviderKind::Offline => Arc::new(Offline),
                ProviderKind::Compatible => {
                    Arc::new(OpenAi::compatible(http.clone(), &pc.base_url, key))
                }
                ProviderKind::Openai | ProviderKind::Anthropic if key.is_none() => {
                    tracing::debug!(provider = %name, "no API key configured; skipped");
                    continue;
                }
                ProviderKind::Openai => Arc::new(OpenAi::official(http.clone(), &pc.base_url, key)),
                ProviderKind::Anthropic => {
                    Arc::new(Anthropic::new(http.clone(), &pc.base_url, key))
                }
            };
            entries.push(Entry {
                name: name.clone(),
                provider,
                breaker: Breaker::new(format!("provider:{name}"), cfg.breaker.clone()),
                config: pc,
            });
        }
        if entries.is_empty() {
            tracing::debug!("no text provider has an API key: the offline provider answers");
            entries.push(Entry {
                name: "offline".into(),
                provider: Arc::new(Offline),
                breaker: Breaker::new("provider:offline", cfg.breaker.clone()),
                config: ProviderConfig { kind: ProviderKind::Offline, ..Default::default() },
            });
        }
        Ok(Self { entries })
    }

    /// Names of the entries, in order.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.name.clone()).collect()
    }

    /// Every model the chain's providers are configured with, as `<provider>/<model>` names
    /// for the OpenAI-compatible API: each provider's default model and its per-function ones.
    pub fn models(&self) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        for e in &self.entries {
            let mut models = vec![model_of(e, "")];
            if e.config.kind != ProviderKind::Offline {
                models.extend(e.config.models.values().cloned());
            }
            for m in models {
                let id = format!("{}/{m}", e.name);
                if !m.is_empty() && !out.iter().any(|(x, _)| *x == id) {
                    out.push((id, e.provider.label()));
                }
            }
        }
        out
    }

    /// Whether `provider` is in the chain and configured with `model`.
    pub fn serves(&self, provider: &str, model: &str) -> bool {
        let id = format!("{provider}/{model}");
        self.models().iter().any(|(m, _)| *m == id)
    }

    /// A stream from one provider and model (an API caller chose them: no fallback to another
    /// provider, which would answer with another model), behind that provider's breaker.
    pub async fn stream_on(
        &self,
        provider: &str,
        model: &str,
        request: impl Fn(String) -> ChatRequest,
    ) -> Result<(Served, Option<Chunk>, ChunkStream), ProviderError> {
        let only = self.entries.iter().filter(|e| e.name == provider);
        let (served, (first, rest)) = Self::first_of_entries(
            only,
            |_| model.to_owned(),
            request,
            "provider stream failed to start",
            open_stream,
        )
        .await?;
        Ok((served, first, rest))
    }

    /// The provider and model a function would get first (the result cache's key part).
    pub fn primary(&self, function: &str) -> Served {
        let e = &self.entries[0];
        Served { name: e.name.clone(), label: e.provider.label(), model: model_of(e, function) }
    }

    /// The whole answer from the first provider that gives one. A provider's fault moves on
    /// to the next; a request's fault (rejected, content policy) stops at once.
    pub async fn complete(
        &self,
        function: &str,
        request: impl Fn(String) -> ChatRequest,
    ) -> Result<(Served, Answer), ProviderError> {
        self.first_of(function, request, "provider failed", complete_whole).await
    }

    /// The whole answer from one provider and model (an API caller chose them: no fallback),
    /// behind that provider's breaker.
    pub async fn complete_on(
        &self,
        provider: &str,
        model: &str,
        request: impl Fn(String) -> ChatRequest,
    ) -> Result<(Served, Answer), ProviderError> {
        let only = self.entries.iter().filter(|e| e.name == provider);
        Self::first_of_entries(
            only,
            |_| model.to_owned(),
            request,
            "provider failed",
            complete_whole,
        )
        .await
    }

    /// A stream from the first provider that produces its first piece in time; the fallback
    /// happens only before that first piece. Returns the piece with the rest of the stream.
    pub async fn stream(
        &self,
        function: &str,
        request: impl Fn(String) -> ChatRequest,
    ) -> Result<(Served, Option<Chunk>, ChunkStream), ProviderError> {
        let (served, (first, rest)) = self
            .first_of(function, request, "provider stream failed to start", open_stream)
            .await?;
        Ok((served, first, rest))
    }

    /// The fallback: `attempt` on each provider in order whose breaker lets a call through,
    /// until one succeeds. A provider's fault is recorded by its breaker and moves on; a
    /// request's fault stops at once. Every attempt is counted in `ai_provider_calls_total`.
    async fn first_of<'a, T, F, Fut>(
        &'a self,
        function: &str,
        request: impl Fn(String) -> ChatRequest,
        failed: &'static str,
        attempt: F,
    ) -> Result<(Served, T), ProviderError>
    where
        F: Fn(&'a Entry, ChatRequest) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        Self::first_of_entries(
            self.entries.iter(),
            |e| model_of(e, function),
            request,
            failed,
            attempt,
        )
        .await
    }

    /// [`Self::first_of`] over `entries`, each asked for the model `model` names for it.
    async fn first_of_entries<'a, T, F, Fut>(
        entries: impl Iterator<Item = &'a Entry>,
        model: impl Fn(&Entry) -> String,
        request: impl Fn(String) -> ChatRequest,
        failed: &'static str,
        attempt: F,
    ) -> Result<(Served, T), ProviderError>
    where
        F: Fn(&'a Entry, ChatRequest) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let mut last = None;
        for e in entries {
            let permit = match e.breaker.try_acquire() {
                Ok(p) => p,
                Err(wait) => {
                    last.get_or_insert(ProviderError::Open(wait));
                    continue;
                }
            };
            let model = model(e);
            let res = attempt(e, request(model.clone())).await;
            permit.record(!res.as_ref().is_err_and(ProviderError::provider_fault));
            let outcome = if res.is_ok() { "ok" } else { "error" };
            metrics::counter!("ai_provider_calls_total", "provider" => e.name.clone(), "outcome" => outcome).increment(1);
            match res {
                Ok(v) => return Ok((served(e, model), v)),
                Err(err) => {
                    tracing::warn!(provider = %e.name, error = %err, "{failed}");
                    if !err.provider_fault() {
                        return Err(err);
                    }
                    last = Some(prefer(last, err));
                }
            }
        }
        Err(last.unwrap_or_else(|| ProviderError::Unavailable("no provider configured".into())))
    }
}

/// `e`'s whole answer, within the provider's answer time.
async fn complete_whole(e: &Entry, req: ChatRequest) -> Result<Answer, ProviderError> {
    let timeout = Duration::from_millis(e.config.timeout_ms.max(1));
    match tokio::time::timeout(timeout, e.provider.complete(&req)).await {
        Ok(r) => r,
        Err(_) => Err(ProviderError::Unavailable(format!("no answer in {timeout:?}"))),
    }
}

/// Opens `e`'s stream and waits for its first piece, within the provider's first-token time.
async fn open_stream(
    e: &Entry,
    req: ChatRequest,
) -> Result<(Option<Chunk>, ChunkStream), ProviderError> {
    let first_token = Duration::from_millis(e.config.first_token_ms.max(1));
    tokio::time::timeout(first_token, async {
        let mut s = e.provider.stream(&req).await?;
        match s.next().await {
            Some(Ok(first)) => Ok((Some(first), s)),
            Some(Err(err)) => Err(err),
            None => Ok((None, s)),
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(ProviderError::Unavailable(format!("no first token in {first_token:?}")))
    })
}

/// Of two failures, the one that tells the caller more (a rate limit's retry-after).
fn prefer(old: Option<ProviderError>, new: ProviderError) -> ProviderError {
    match (old, new) {
        (Some(o @ ProviderError::RateLimited { .. }), n)
            if !matches!(n, ProviderError::RateLimited { .. }) =>
        {
            o
        }
        (_, n) => n,
    }
}

fn model_of(e: &Entry, function: &str) -> String {
    match e.config.kind {
        ProviderKind::Offline => offline::MODEL.to_owned(),
        _ => e.config.model_for(function).to_owned(),
    }
}

fn served(e: &Entry, model: String) -> Served {
    Served { name: e.name.clone(), label: e.provider.label(), model }
}

/// Maps an HTTP error answer to the taxonomy. `body` is the provider's JSON error, if any.
pub(crate) fn http_error(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> ProviderError {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let err = &v["error"];
    let message: String = err["message"]
        .as_str()
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"))
        .chars()
        .take(300)
        .collect();
    let kind = format!(
        "{} {}",
        err["type"].as_str().unwrap_or_default(),
        err["code"].as_str().unwrap_or_default()
    );
    match status.as_u16() {
        429 => ProviderError::RateLimited { retry_after: retry_after(headers), message },
        401 | 403 | 404 => ProviderError::Misconfigured(format!("{status}: {message}")),
        400 | 422 if kind.contains("content_filter") || kind.contains("content_policy") => {
            ProviderError::ContentPolicy(message)
        }
        400..=499 => ProviderError::Rejected(message),
        _ => ProviderError::Unavailable(format!("{status}: {message}")),
    }
}

/// `retry-after-ms` (OpenAI) or `retry-after` in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let num = |name: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok())
    };
    num("retry-after-ms")
        .map(|ms| Duration::from_millis(ms.max(0.0) as u64))
        .or_else(|| num("retry-after").map(|s| Duration::from_secs_f64(s.clamp(0.0, 3600.0))))
}

/// Sends a provider request; a non-2xx answer becomes the taxonomy's error.
pub(crate) async fn send(rb: reqwest::RequestBuilder) -> Result<reqwest::Response, ProviderError> {
    let res = rb.send().await.map_err(transport_error)?;
    if res.status().is_success() {
        return Ok(res);
    }
    let (status, headers) = (res.status(), res.headers().clone());
    let body = res.text().await.unwrap_or_default();
    Err(http_error(status, &headers, &body))
}

/// A transport failure (connect, reset, timeout) as a provider error.
pub(crate) fn transport_error(e: reqwest::Error) -> ProviderError {
    // reqwest's Display includes the URL, never headers: the key does not leak.
    ProviderError::Unavailable(format!("transport: {e}"))
}

#[cfg(test)]
mod tests {
    use reqwest::{
        StatusCode,
        header::{HeaderMap, HeaderValue},
    };

    use super::*;

    #[test]
    fn http_errors_map_to_what_callers_decide_on() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        let e = http_error(
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
        );
        assert_eq!(
            e,
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                message: "slow down".into()
            }
        );
        assert!(e.retryable() && e.provider_fault());
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(
            http_error(StatusCode::TOO_MANY_REQUESTS, &h, "").retry_after(),
            Some(Duration::from_millis(250))
        );
        let e = http_error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            r#"{"error":{"message":"flagged","code":"content_filter"}}"#,
        );
        assert!(matches!(e, ProviderError::ContentPolicy(_)) && !e.retryable());
        let e = http_error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            r#"{"error":{"message":"max_tokens too large"}}"#,
        );
        assert!(matches!(e, ProviderError::Rejected(_)) && !e.provider_fault());
        let e = http_error(
            StatusCode::from_u16(529).unwrap(),
            &HeaderMap::new(),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert!(matches!(e, ProviderError::Unavailable(_)) && e.retryable());
        let e = http_error(StatusCode::UNAUTHORIZED, &HeaderMap::new(), "{}");
        assert!(matches!(e, ProviderError::Misconfigured(_)) && e.provider_fault());
    }

    #[test]
    fn token_estimates_round_up() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("привет"), 2);
    }
}
