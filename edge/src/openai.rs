//! The OpenAI-compatible API: `GET /v1/models` and `POST /v1/chat/completions`, in OpenAI's wire
//! format, so the `openai` SDKs and the tools built on them work against SkillUp with a SkillUp
//! API key (or an access token). An adapter onto the services' gRPC contracts — prompt's
//! catalog for the models, ai's `ChatCompletion` for the answers — never a second way to
//! generate: entitlement, the quota hold settled by actual tokens, the library and provider
//! fallback are ai's, as for `/api/generate`. The edge's own steps are the same as for every
//! route: the per-IP budget, `ValidateToken` (with its decision cache), the per-user generation
//! budget, the signed identity assertion, the upstream's breaker and deadline.
//!
//! What differs is the shape: OpenAI's JSON in and out (`stream: true` as OpenAI's SSE, ending
//! with `data: [DONE]`), and errors as `{"error": {"message", "type", "param", "code"}}` with the
//! status and type OpenAI's clients act on — a 429 for quota says `x-should-retry: false`, so
//! the SDKs' automatic retries stop there and go on for rate limits.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::State,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header, request::Parts};
use prost::Message as _;
use serde::Deserialize;
use serde_json::{Value, json};
use skillup_kit::{i18n::Locale, identity::now_secs};
use skillup_proto::{
    ai::v1::{self as ai, generate_stream_event::Event as AiEvent},
    prompt::v1 as prompt,
};

use crate::{
    Inner, X_REQUEST_ID,
    authn::Decision,
    errors::ApiError,
    limits::Verdict,
    pipeline::{self, bearer},
};

/// Models that are catalog functions: `skillup/<function>`.
const FUNCTION_MODEL_PREFIX: &str = "skillup/";

/// How long a whole chat completion may take (a long answer streams for minutes).
const CHAT_DEADLINE: Duration = Duration::from_secs(600);

pub(crate) fn routes() -> Router<Arc<Inner>> {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
}

/// An OpenAI-shaped error (boxed: it travels in every `Result` of the adapter).
#[derive(Debug)]
pub(crate) struct OpenAiError(Box<Refusal>);

#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<String>,
    message: String,
    headers: HeaderMap,
}

impl std::ops::Deref for OpenAiError {
    type Target = Refusal;
    fn deref(&self) -> &Refusal {
        &self.0
    }
}

impl From<Refusal> for OpenAiError {
    fn from(r: Refusal) -> Self {
        OpenAiError(Box::new(r))
    }
}

impl OpenAiError {
    fn invalid(param: &str, message: impl Into<String>) -> Self {
        OpenAiError::from(Refusal {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            param: Some(param.to_owned()),
            message: message.into(),
            headers: HeaderMap::new(),
        })
    }

    /// The edge's or a service's refusal, as OpenAI's clients read it.
    fn from_api(e: ApiError, locale: Locale) -> Self {
        let e = e.worded(locale);
        let (status, kind, code): (u16, &'static str, Option<&'static str>) =
            match (e.status.as_u16(), e.code.as_str()) {
                (401, _) => (401, "authentication_error", Some("invalid_api_key")),
                (_, "SUBSCRIPTION_REQUIRED") => {
                    (403, "permission_error", Some("model_not_allowed"))
                }
                (_, "EMAIL_NOT_VERIFIED") => (403, "permission_error", Some("email_not_verified")),
                (403, _) => (403, "permission_error", None),
                (404, _) => (404, "invalid_request_error", Some("model_not_found")),
                (_, "QUOTA_EXCEEDED" | "INSUFFICIENT_FUNDS") => {
                    (429, "insufficient_quota", Some("insufficient_quota"))
                }
                (429, _) => (429, "rate_limit_error", Some("rate_limit_exceeded")),
                (400 | 413 | 415 | 422, _) => (e.status.as_u16(), "invalid_request_error", None),
                (408, _) => (408, "invalid_request_error", Some("timeout")),
                (s, _) if s >= 500 => (s, "api_error", None),
                (s, _) => (s, "invalid_request_error", None),
            };
        let mut headers = e.headers.clone();
        if kind == "insufficient_quota" {
            // The SDKs retry every 429 unless told not to: waiting does not bring quota back.
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        OpenAiError::from(Refusal {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            kind,
            code,
            param: e.field.as_deref().map(param_of),
            message: e.message.clone(),
            headers,
        })
    }

    fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }

    fn into_response_with(self, request_id: &str) -> Response {
        let body = self.body();
        let parts = *self.0;
        let mut res = (parts.status, axum::Json(body)).into_response();
        res.headers_mut().extend(parts.headers);
        if let Ok(v) = HeaderValue::from_str(request_id) {
            res.headers_mut().insert(X_REQUEST_ID, v);
        }
        res
    }
}

/// The request field a service's refusal names, in the request's terms.
fn param_of(field: &str) -> String {
    match field {
        "topic" => "messages".to_owned(),
        "max_tokens" => "max_tokens".to_owned(),
        "locale" => "metadata.locale".to_owned(),
        f if f.starts_with("params") => f.replacen("params", "metadata", 1),
        f => f.to_owned(),
    }
}

/// What every `/v1` request goes through before its own work: the per-IP budget, then the
/// credential (an API key or an access token).
struct Caller {
    rid: String,
    client: std::net::IpAddr,
    locale: Locale,
    decision: Decision,
    verdict: Option<Verdict>,
}

async fn admit(inner: &Inner, parts: &Parts) -> Result<Caller, OpenAiError> {
    let locale = Locale::of_parts(&parts.headers, &parts.extensions);
    let rid = pipeline::request_id(&parts.headers);
    let (client, verdict) =
        pipeline::admit_client(inner, parts).map_err(|e| OpenAiError::from_api(e, locale))?;
    let Some(token) = bearer(&parts.headers) else {
        return Err(OpenAiError::from(Refusal {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            code: Some("invalid_api_key"),
            param: None,
            message: "send your SkillUp API key as Authorization: Bearer sk-skillup-…".into(),
            headers: HeaderMap::new(),
        }));
    };
    let decision =
        inner.authn.authenticate(token, &[]).await.map_err(|e| OpenAiError::from_api(e, locale))?;
    Ok(Caller { rid, client, locale, decision, verdict })
}

/// `GET /v1/models`: one `skillup/<function>` model per function of the catalog.
async fn models(State(inner): State<Arc<Inner>>, req: Request<Body>) -> Response {
    let started = std::time::Instant::now();
    let (parts, _) = req.into_parts();
    let rid = pipeline::request_id(&parts.headers);
    let res = match list_models(&inner, &parts).await {
        Ok(res) => res,
        Err(e) => e.into_response_with(&rid),
    };
    measured("/v1/models", &parts.method, &res, started);
    res
}

/// The route's RED metrics, as every route has them (a stream's time is to its first byte).
fn measured(route: &str, method: &http::Method, res: &Response, started: std::time::Instant) {
    let secs = started.elapsed().as_secs_f64();
    crate::routes::RouteMetrics::record_other(route, method, res.status(), secs);
}

async fn list_models(inner: &Inner, parts: &Parts) -> Result<Response, OpenAiError> {
    let who = admit(inner, parts).await?;
    let locale = who.locale;
    let mut md = inner.base_metadata(&parts.headers, &who.rid);
    inner.put_identity(&mut md, Some(&who.decision), &who.rid, who.client);
    let ask = prompt::ListFunctionsRequest { locale: who.decision.caller.locale.clone() };
    let (catalog, providers) = tokio::join!(
        ask_unary(
            inner,
            "prompt",
            "/skillup.prompt.v1.PromptService/ListFunctions",
            ask,
            md.clone()
        ),
        ask_unary(
            inner,
            "ai",
            "/skillup.ai.v1.GenerationService/ListModels",
            ai::ListModelsRequest {},
            md
        ),
    );
    let functions = prompt::ListFunctionsResponse::decode(
        catalog.map_err(|e| OpenAiError::from_api(e, locale))?,
    )
    .map_err(|e| internal(&format!("catalog answer: {e}"), locale))?
    .functions;
    let models =
        ai::ListModelsResponse::decode(providers.map_err(|e| OpenAiError::from_api(e, locale))?)
            .map_err(|e| internal(&format!("models answer: {e}"), locale))?
            .models;
    let mut data: Vec<Value> = functions
        .iter()
        .map(|f| {
            json!({
                "id": format!("{FUNCTION_MODEL_PREFIX}{}", f.id),
                "object": "model",
                // Neither the catalog nor the providers' configuration keeps a date.
                "created": 0,
                "owned_by": "skillup",
                "skillup": {
                    "title": f.title,
                    "description": f.description,
                    "min_tier": f.min_tier,
                    "params": f.params,
                    "locales": f.locales,
                },
            })
        })
        .collect();
    data.extend(
        models
            .iter()
            .map(|m| json!({"id": m.id, "object": "model", "created": 0, "owned_by": m.kind})),
    );
    let mut res = axum::Json(json!({"object": "list", "data": data})).into_response();
    finish_headers(res.headers_mut(), &who.rid, who.verdict);
    Ok(res)
}

/// A unary read of a service (safe to repeat), its answer's bytes.
async fn ask_unary(
    inner: &Inner,
    upstream: &str,
    path: &str,
    msg: impl prost::Message,
    md: tonic::metadata::MetadataMap,
) -> Result<Bytes, ApiError> {
    let Some(upstream) = inner.upstreams.get(upstream) else {
        return Err(ApiError::new(502, "UNAVAILABLE", "no upstream for this call"));
    };
    let timeout = Duration::from_millis(inner.cfg.timeout_ms);
    let answer = upstream
        .unary(path, Bytes::from(msg.encode_to_vec()), md, timeout, true)
        .await
        .map_err(|e| inner.call_error(e))?;
    Ok(answer.into_inner())
}

fn internal(detail: &str, locale: Locale) -> OpenAiError {
    tracing::error!(%detail, "OpenAI-compatible adapter");
    OpenAiError::from_api(ApiError::new(500, "INTERNAL", "internal error"), locale)
}

/// The rate-limit headers as OpenAI names them (besides the IETF draft's, which every route
/// has) and the request id.
fn finish_headers(headers: &mut HeaderMap, rid: &str, verdict: Option<Verdict>) {
    if let Some(v) = verdict {
        v.write(headers);
        let mut put = |k: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(header::HeaderName::from_static(k), v);
            }
        };
        put("x-ratelimit-limit-requests", v.limit.to_string());
        put("x-ratelimit-remaining-requests", v.remaining.to_string());
        put("x-ratelimit-reset-requests", format!("{}s", v.reset));
    }
    if let Ok(v) = HeaderValue::from_str(rid) {
        headers.insert(X_REQUEST_ID, v);
    }
}

/// A chat completion request as OpenAI's API takes it. Fields SkillUp cannot honour are
/// refused by name rather than ignored; those that change nothing here (penalties, `seed`,
/// `store`, …) are accepted and ignored, as OpenAI-compatible servers do.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<Value>,
    user: Option<String>,
    n: Option<u64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    metadata: Option<HashMap<String, Value>>,
    tools: Option<Value>,
    functions: Option<Value>,
    tool_choice: Option<Value>,
    response_format: Option<Value>,
    logprobs: Option<bool>,
    audio: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The request, checked: what goes to ai, and how to answer.
struct Checked {
    ask: ai::ChatCompletionRequest,
    stream: bool,
    include_usage: bool,
}

fn check(body: &[u8]) -> Result<Checked, OpenAiError> {
    let r: ChatRequest = serde_json::from_slice(body).map_err(|e| {
        OpenAiError::invalid("", format!("the body is not a chat completion request: {e}"))
    })?;
    let model = r
        .model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| OpenAiError::invalid("model", "model is required: one of GET /v1/models"))?;
    let messages = r.messages.filter(|m| !m.is_empty()).ok_or_else(|| {
        OpenAiError::invalid("messages", "messages is required: at least one message")
    })?;
    if messages.len() > 256 {
        return Err(OpenAiError::invalid("messages", "at most 256 messages"));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant") {
            return Err(OpenAiError::invalid(
                &format!("messages[{i}].role"),
                format!(
                    "role `{}` is not supported: use system, developer, user or assistant",
                    m.role.chars().take(32).collect::<String>()
                ),
            ));
        }
        let role = if m.role == "developer" { "system" } else { m.role.as_str() };
        out.push(ai::ChatMessage {
            role: role.to_owned(),
            content: text_of(i, m.content.as_ref())?,
        });
    }
    if !out.iter().any(|m| m.role == "user") {
        return Err(OpenAiError::invalid("messages", "messages needs a user message"));
    }
    let max_tokens = match (r.max_completion_tokens, r.max_tokens) {
        (Some(n), _) | (None, Some(n)) if n == 0 || n > 32_000 => {
            let param = if r.max_completion_tokens.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(OpenAiError::invalid(param, format!("{param} must be 1 to 32000")));
        }
        (Some(n), _) | (None, Some(n)) => n as u32,
        (None, None) => 0,
    };
    if let Some(t) = r.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(OpenAiError::invalid("temperature", "temperature must be 0 to 2"));
    }
    if let Some(p) = r.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(OpenAiError::invalid("top_p", "top_p must be above 0 and at most 1"));
    }
    let stop: Vec<String> = match r.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(Value::is_string) => {
            a.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
        }
        Some(_) => {
            return Err(OpenAiError::invalid("stop", "stop must be a string or up to 4 strings"));
        }
    };
    if stop.iter().any(|s| s.is_empty() || s.chars().count() > 64) {
        return Err(OpenAiError::invalid("stop", "each stop sequence must be 1 to 64 characters"));
    }
    if r.user.as_ref().is_some_and(|u| u.chars().count() > 256) {
        return Err(OpenAiError::invalid("user", "user must be at most 256 characters"));
    }
    if r.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::invalid("n", "only n = 1 is supported"));
    }
    for (param, given) in [
        ("tools", r.tools.is_some()),
        ("functions", r.functions.is_some()),
        ("tool_choice", r.tool_choice.as_ref().is_some_and(|v| v != "none")),
        ("logprobs", r.logprobs == Some(true)),
        ("audio", r.audio.is_some()),
        (
            "response_format",
            r.response_format
                .as_ref()
                .is_some_and(|f| f.get("type").and_then(Value::as_str) != Some("text")),
        ),
    ] {
        if given {
            return Err(OpenAiError::invalid(
                param,
                format!("{param} is not supported by SkillUp's models"),
            ));
        }
    }
    let mut metadata = HashMap::new();
    for (k, v) in r.metadata.unwrap_or_default() {
        let Value::String(v) = v else {
            return Err(OpenAiError::invalid(
                &format!("metadata.{k}"),
                "metadata values must be strings",
            ));
        };
        metadata.insert(k, v);
    }
    if r.stream_options.is_some() && !r.stream {
        return Err(OpenAiError::invalid("stream_options", "stream_options needs stream: true"));
    }
    Ok(Checked {
        ask: ai::ChatCompletionRequest {
            model,
            messages: out,
            max_tokens,
            metadata,
            temperature: r.temperature.map(|t| t as f32),
            top_p: r.top_p.map(|p| p as f32),
            stop,
        },
        stream: r.stream,
        include_usage: r.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// A message's text: a string, or text parts joined (other parts refused).
fn text_of(i: usize, content: Option<&Value>) -> Result<String, OpenAiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str))
                {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(OpenAiError::invalid(
                            &format!("messages[{i}].content[{j}]"),
                            "only text parts are supported",
                        ));
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(OpenAiError::invalid(
            &format!("messages[{i}].content"),
            "content must be a string or a list of text parts",
        )),
    }
}

/// `POST /v1/chat/completions`.
async fn chat_completions(State(inner): State<Arc<Inner>>, req: Request<Body>) -> Response {
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let rid = pipeline::request_id(&parts.headers);
    let method = parts.method.clone();
    let res = match chat(&inner, parts, body).await {
        Ok(res) => res,
        Err(e) => e.into_response_with(&rid),
    };
    measured("/v1/chat/completions", &method, &res, started);
    res
}

async fn chat(inner: &Inner, parts: Parts, body: Body) -> Result<Response, OpenAiError> {
    let mut who = admit(inner, &parts).await?;
    let locale = who.locale;
    let spent = inner
        .limits
        .check_generate(&who.decision.caller.tier, &who.decision.caller.user_id)
        .map_err(|e| OpenAiError::from_api(e, locale))?;
    who.verdict = spent.map(|v| v.tighter(who.verdict)).or(who.verdict);
    let bytes = pipeline::read_json_body(inner, &parts, body)
        .await
        .map_err(|e| OpenAiError::from_api(e, locale))?;
    let checked = check(&bytes)?;
    let model = checked.ask.model.clone();
    let Some(upstream) = inner.upstreams.get("ai") else {
        return Err(OpenAiError::from_api(
            ApiError::new(502, "UNAVAILABLE", "no upstream for generation"),
            locale,
        ));
    };
    let mut md = inner.base_metadata(&parts.headers, &who.rid);
    inner.put_identity(&mut md, Some(&who.decision), &who.rid, who.client);
    let opened = upstream
        .server_streaming(
            "/skillup.ai.v1.GenerationService/ChatCompletion",
            Bytes::from(checked.ask.encode_to_vec()),
            md,
            CHAT_DEADLINE,
            false,
        )
        .await
        .map_err(|e| OpenAiError::from_api(inner.call_error(e), locale))?;
    let mut events = opened.into_inner();
    // The first event says the call was taken (or why not): refusals answer with a status, as
    // OpenAI's do, before any stream starts.
    let first = match events.next().await {
        Some(Ok(b)) => decode(&b).map_err(|e| internal(&e, locale))?,
        Some(Err(s)) => return Err(OpenAiError::from_api(ApiError::from_status(&s), locale)),
        None => return Err(internal("the generation ended before it started", locale)),
    };
    let Some(AiEvent::Started(started)) = first else {
        return Err(internal("the generation did not start with `started`", locale));
    };
    let head = Head { id: format!("chatcmpl-{}", started.id), created: now_secs(), model };
    let mut res = if checked.stream {
        stream_answer(head, events, checked.include_usage, locale, who.rid.clone())
    } else {
        whole_answer(head, events, locale).await?
    };
    finish_headers(res.headers_mut(), &who.rid, who.verdict);
    Ok(res)
}

fn decode(bytes: &[u8]) -> Result<Option<AiEvent>, String> {
    ai::GenerateStreamEvent::decode(bytes).map(|e| e.event).map_err(|e| format!("ai answer: {e}"))
}

/// What every object of one answer repeats.
struct Head {
    id: String,
    created: u64,
    model: String,
}

/// OpenAI's finish reasons: ours but `stop`, `length` and `content_filter` never reach a
/// client that is still there.
fn finish_reason(ours: &str) -> &'static str {
    match ours {
        "length" | "max_tokens" => "length",
        "content_filter" => "content_filter",
        _ => "stop",
    }
}

fn usage_json(u: Option<&ai::TokenUsage>) -> Value {
    let u = u.cloned().unwrap_or_default();
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
    })
}

/// The answer gathered into one `chat.completion`.
async fn whole_answer(
    head: Head,
    mut events: tonic::Streaming<Bytes>,
    locale: Locale,
) -> Result<Response, OpenAiError> {
    let mut text = String::new();
    let mut finished: Option<ai::StreamFinished> = None;
    while let Some(item) = events.next().await {
        let bytes = item.map_err(|s| OpenAiError::from_api(ApiError::from_status(&s), locale))?;
        match decode(&bytes).map_err(|e| internal(&e, locale))? {
            Some(AiEvent::Delta(d)) => text.push_str(&d),
            Some(AiEvent::Finished(f)) => finished = Some(f),
            _ => {}
        }
    }
    let Some(f) = finished else {
        return Err(internal("the generation ended without `finished`", locale));
    };
    let body = json!({
        "id": head.id,
        "object": "chat.completion",
        "created": head.created,
        "model": head.model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": finish_reason(&f.finish_reason),
        }],
        "usage": usage_json(f.usage.as_ref()),
    });
    Ok(axum::Json(body).into_response())
}

/// The answer as OpenAI's stream: a chunk per piece of text, the finish reason, the usage when
/// asked for, then `[DONE]`. A failure midway is an `error` object, and no `[DONE]`. A client
/// that leaves drops the upstream stream: ai stops the provider and charges what was produced.
fn stream_answer(
    head: Head,
    events: tonic::Streaming<Bytes>,
    include_usage: bool,
    locale: Locale,
    rid: String,
) -> Response {
    let head = Arc::new(head);
    let chunk = move |h: &Head, delta: Value, finish: Option<&str>, usage: Option<Value>| {
        let mut c = json!({
            "id": h.id,
            "object": "chat.completion.chunk",
            "created": h.created,
            "model": h.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        Event::default().data(c.to_string())
    };
    let opening = chunk(&head, json!({"role": "assistant", "content": ""}), None, None);
    // `None` once the answer has ended.
    let tail = futures::stream::unfold(Some(events), move |state| {
        let head = head.clone();
        let rid = rid.clone();
        async move {
            let mut events = state?;
            let out: Vec<Event> = match events.next().await {
                Some(Ok(bytes)) => match decode(&bytes) {
                    Ok(Some(AiEvent::Delta(d))) => {
                        vec![chunk(&head, json!({"content": d}), None, None)]
                    }
                    Ok(Some(AiEvent::Finished(f))) => {
                        let reason = finish_reason(&f.finish_reason);
                        let mut out = vec![chunk(&head, json!({}), Some(reason), None)];
                        if include_usage {
                            // The last chunk before `[DONE]`: the usage, and no choices.
                            let last = json!({
                                "id": head.id,
                                "object": "chat.completion.chunk",
                                "created": head.created,
                                "model": head.model,
                                "system_fingerprint": null,
                                "choices": [],
                                "usage": usage_json(f.usage.as_ref()),
                            });
                            out.push(Event::default().data(last.to_string()));
                        }
                        out.push(Event::default().data("[DONE]"));
                        return Some((futures::stream::iter(out.into_iter().map(Ok)), None));
                    }
                    Ok(_) => Vec::new(),
                    Err(e) => {
                        // An answer this edge cannot read ends the stream, with why.
                        let e = internal(&e, locale);
                        let out = vec![Event::default().data(e.body().to_string())];
                        return Some((futures::stream::iter(out.into_iter().map(Ok)), None));
                    }
                },
                Some(Err(s)) => {
                    let e = OpenAiError::from_api(ApiError::from_status(&s), locale);
                    tracing::warn!(request_id = %rid, error = %e.message, "chat completion failed midway");
                    let out = vec![Event::default().data(e.body().to_string())];
                    return Some((futures::stream::iter(out.into_iter().map(Ok)), None));
                }
                None => {
                    // Ended without `finished`: cut, never a silent `[DONE]`.
                    let e = internal("the generation ended without `finished`", locale);
                    let out = vec![Event::default().data(e.body().to_string())];
                    return Some((futures::stream::iter(out.into_iter().map(Ok)), None));
                }
            };
            Some((futures::stream::iter(out.into_iter().map(Ok)), Some(events)))
        }
    })
    .flatten();
    let all = futures::stream::once(async move { Ok::<_, Infallible>(opening) }).chain(tail);
    Sse::new(all).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: Value) -> OpenAiError {
        match check(body.to_string().as_bytes()) {
            Ok(_) => panic!("accepted: {body}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_request_becomes_ais_chat_completion() {
        let c = check(
            json!({
                "model": "skillup/quiz",
                "messages": [
                    {"role": "developer", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "Photo"}, {"type": "text", "text": "synthesis"}]},
                ],
                "max_completion_tokens": 300,
                "temperature": 0.2,
                "stop": ["\n\n"],
                "n": 1,
                "stream": true,
                "stream_options": {"include_usage": true},
                "metadata": {"locale": "ru", "questions": "5"},
                "presence_penalty": 0,
                "tool_choice": "none",
                "response_format": {"type": "text"},
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert!(c.stream && c.include_usage);
        assert_eq!(c.ask.model, "skillup/quiz");
        assert_eq!(c.ask.max_tokens, 300);
        assert_eq!(c.ask.messages[0].role, "system");
        assert_eq!(c.ask.messages[1].content, "Photosynthesis");
        assert_eq!(c.ask.metadata["locale"], "ru");
        assert_eq!((c.ask.temperature, c.ask.top_p), (Some(0.2), None));
        assert_eq!(c.ask.stop, ["\n\n"]);
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_its_parameter() {
        let user = json!([{"role": "user", "content": "x"}]);
        for (body, param) in [
            (json!({"messages": user}), "model"),
            (json!({"model": "skillup/quiz", "messages": []}), "messages"),
            (
                json!({"model": "skillup/quiz", "messages": [{"role": "system", "content": "x"}]}),
                "messages",
            ),
            (
                json!({"model": "skillup/quiz", "messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "skillup/quiz", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content[0]",
            ),
            (json!({"model": "skillup/quiz", "messages": user, "n": 2}), "n"),
            (json!({"model": "skillup/quiz", "messages": user, "max_tokens": 0}), "max_tokens"),
            (
                json!({"model": "skillup/quiz", "messages": user, "max_completion_tokens": 40000}),
                "max_completion_tokens",
            ),
            (json!({"model": "skillup/quiz", "messages": user, "temperature": 2.5}), "temperature"),
            (json!({"model": "skillup/quiz", "messages": user, "top_p": 0}), "top_p"),
            (json!({"model": "skillup/quiz", "messages": user, "stop": [1]}), "stop"),
            (json!({"model": "skillup/quiz", "messages": user, "tools": []}), "tools"),
            (json!({"model": "skillup/quiz", "messages": user, "logprobs": true}), "logprobs"),
            (
                json!({"model": "skillup/quiz", "messages": user, "response_format": {"type": "json_object"}}),
                "response_format",
            ),
            (
                json!({"model": "skillup/quiz", "messages": user, "metadata": {"k": 1}}),
                "metadata.k",
            ),
            (
                json!({"model": "skillup/quiz", "messages": user, "stream_options": {"include_usage": true}}),
                "stream_options",
            ),
        ] {
            let e = refused(body.clone());
            assert_eq!(
                (e.status, e.kind),
                (StatusCode::BAD_REQUEST, "invalid_request_error"),
                "{body}"
            );
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
        let Err(e) = check(b"{not json") else { panic!("accepted") };
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn refusals_take_the_status_type_and_code_openai_clients_act_on() {
        let cases = [
            (
                ApiError::new(401, "UNAUTHENTICATED", "x"),
                401,
                "authentication_error",
                Some("invalid_api_key"),
            ),
            (
                ApiError::new(402, "SUBSCRIPTION_REQUIRED", "x"),
                403,
                "permission_error",
                Some("model_not_allowed"),
            ),
            (
                ApiError::new(403, "EMAIL_NOT_VERIFIED", "x"),
                403,
                "permission_error",
                Some("email_not_verified"),
            ),
            (
                ApiError::new(404, "NOT_FOUND", "x"),
                404,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            (
                ApiError::new(429, "QUOTA_EXCEEDED", "x"),
                429,
                "insufficient_quota",
                Some("insufficient_quota"),
            ),
            (
                ApiError::new(429, "RATE_LIMITED", "x"),
                429,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            (ApiError::new(503, "UNAVAILABLE", "x"), 503, "api_error", None),
        ];
        for (e, status, kind, code) in cases {
            let o = OpenAiError::from_api(e, Locale::En);
            assert_eq!((o.status.as_u16(), o.kind, o.code), (status, kind, code));
            assert_eq!(o.headers.get("x-should-retry").is_some(), kind == "insufficient_quota");
        }
        let mut e = ApiError::new(400, "INVALID_ARGUMENT", "topic is too long");
        e = e.field("topic");
        assert_eq!(OpenAiError::from_api(e, Locale::En).param.as_deref(), Some("messages"));
        assert_eq!(param_of("params.questions"), "metadata.questions");
        assert_eq!(finish_reason("max_tokens"), "length");
        assert_eq!(finish_reason("stop"), "stop");
    }
}
