//! The OpenAI-compatible API: `GET /v1/models` and `POST /v1/chat/completions`, in OpenAI's wire
//! format, so the `openai` SDKs and the tools built on them work against SkillUp with a SkillUp
//! API key (or an access token). An adapter onto the services' gRPC contracts — prompt's
//! catalog for the models, ai's `ChatCompletion` (streamed) and `CompleteChat` (whole) for the
//! answers — never a second way to
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

mod answer;
mod error;
mod request;
#[cfg(test)]
mod tests;

use self::{answer::*, error::*, request::*};
use crate::{
    Inner, X_REQUEST_ID,
    authn::Decision,
    errors::ApiError,
    limits::Verdict,
    pipeline::{self, bearer},
    upstream::CallError,
};

/// Models that are catalog functions: `skillup/<function>`.
const FUNCTION_MODEL_PREFIX: &str = "skillup/";

/// How long a whole chat completion may take (a long answer streams for minutes).
const CHAT_DEADLINE: Duration = Duration::from_secs(600);
/// ai's chat completion, streamed and whole.
const CHAT_COMPLETION: &str = "/skillup.ai.v1.GenerationService/ChatCompletion";
const COMPLETE_CHAT: &str = "/skillup.ai.v1.GenerationService/CompleteChat";

pub(crate) fn routes() -> Router<Arc<Inner>> {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
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
        pipeline::admit_client(inner, parts).await.map_err(|e| OpenAiError::from_api(e, locale))?;
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
        .await
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
    let ask = Bytes::from(checked.ask.encode_to_vec());
    let failed = |e: CallError| OpenAiError::from_api(inner.call_error(e), locale);
    if !checked.stream {
        // Answered whole by a unary call (in-process under `skillup up`, like /api/generate).
        let whole = upstream.unary(COMPLETE_CHAT, ask, md, CHAT_DEADLINE, false).await;
        let done = ai::Completion::decode(whole.map_err(failed)?.into_inner())
            .map_err(|e| internal(&format!("ai answer: {e}"), locale))?;
        let mut res = whole_answer(done, model);
        finish_headers(res.headers_mut(), &who.rid, who.verdict);
        return Ok(res);
    }
    let opened = upstream.server_streaming(CHAT_COMPLETION, ask, md, CHAT_DEADLINE, false).await;
    let opened = opened.map_err(failed)?;
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
    let mut res = stream_answer(head, events, checked.include_usage, locale, who.rid.clone());
    finish_headers(res.headers_mut(), &who.rid, who.verdict);
    Ok(res)
}

fn decode(bytes: &[u8]) -> Result<Option<AiEvent>, String> {
    ai::GenerateStreamEvent::decode(bytes).map(|e| e.event).map_err(|e| format!("ai answer: {e}"))
}
