//! A local stand-in for the paid providers, speaking their real wire formats: OpenAI Chat
//! Completions (`POST /v1/chat/completions`, JSON or SSE chunks with a usage chunk and
//! `[DONE]`) and Anthropic Messages (`POST /v1/messages`, JSON or typed SSE events), with their
//! error bodies, `retry-after`, slow first tokens and streams cut midway. Tests, benchmarks and
//! the fault suite point a provider's `base_url` at it (OpenAI: `{url}/v1`, Anthropic: `{url}`).
//!
//! Behaviour is scripted: each request takes the next [`Behavior`] from the script, or the
//! default when the script is empty. Counters say what the provider saw, including streams the
//! client abandoned (the cancellation a disconnect must cause).

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::Bytes;
use serde_json::{Value, json};

/// What the fake does with one request.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Answers `words` words of deterministic text: the first after `first_token`, then one
    /// every `per_token` (streams) — a whole answer waits `first_token + per_token × words`.
    /// A zero `per_token` sends the words at once (no sleep, which would wait for the timer's next
    /// millisecond tick each time: 50 words would take 50 ms).
    Answer { words: usize, first_token: Duration, per_token: Duration },
    /// Answers this HTTP status with the provider's error body (and `retry-after` seconds).
    Fail { status: u16, retry_after: Option<u64> },
    /// Streams `after` words, then cuts the connection without finishing.
    Cut { after: usize },
    /// Content policy refusal (400 with the provider's code).
    ContentPolicy,
}

impl Behavior {
    pub fn quick(words: usize) -> Self {
        Behavior::Answer { words, first_token: Duration::ZERO, per_token: Duration::ZERO }
    }
}

/// What the fake saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub requests: AtomicU64,
    /// Streams that ran to their end.
    pub finished_streams: AtomicU64,
    /// Streams the client dropped before their end.
    pub abandoned_streams: AtomicU64,
    /// Whole (non-stream) answers the client stopped waiting for.
    pub abandoned_answers: AtomicU64,
    /// The last request body.
    pub last_body: Mutex<Option<Value>>,
    /// The last `authorization` / `x-api-key` header.
    pub last_key: Mutex<Option<String>>,
}

struct FakeState {
    script: Mutex<VecDeque<Behavior>>,
    default: Mutex<Behavior>,
    seen: Arc<Seen>,
}

/// A running fake provider.
pub struct FakeProvider {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeProvider {
    /// Starts on a free loopback port, answering `default` when the script is empty.
    pub async fn start(default: Behavior) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), default).await
    }

    pub async fn start_on(addr: SocketAddr, default: Behavior) -> Self {
        let state = Arc::new(FakeState {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            seen: Arc::new(Seen::default()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the fake provider");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            // TCP_NODELAY as real providers' servers have it: without it Nagle holds each
            // small SSE write until the client's delayed ACK (tens of milliseconds).
            use axum::serve::ListenerExt as _;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    /// Base URL for an OpenAI or compatible provider entry.
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for an Anthropic provider entry.
    pub fn anthropic_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues behaviours for the next requests, in order.
    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.state.script.lock().expect("script").extend(behaviors);
    }

    pub fn set_default(&self, b: Behavior) {
        *self.state.default.lock().expect("default") = b;
    }

    pub fn seen(&self) -> &Seen {
        &self.state.seen
    }

    pub fn requests(&self) -> u64 {
        self.state.seen.requests.load(Ordering::SeqCst)
    }
}

/// The deterministic answer text: `words` words.
pub fn answer_words(words: usize) -> Vec<String> {
    const LOREM: [&str; 8] = ["skill", "up", "writes", "clear", "text", "about", "every", "topic"];
    (0..words).map(|i| LOREM[i % LOREM.len()].to_owned()).collect()
}

fn next(state: &FakeState, headers: &HeaderMap, body: &Value) -> Behavior {
    state.seen.requests.fetch_add(1, Ordering::SeqCst);
    *state.seen.last_body.lock().expect("seen") = Some(body.clone());
    let key = headers
        .get(header::AUTHORIZATION)
        .or_else(|| headers.get("x-api-key"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    *state.seen.last_key.lock().expect("seen") = key;
    let scripted = state.script.lock().expect("script").pop_front();
    scripted.unwrap_or_else(|| state.default.lock().expect("default").clone())
}

fn input_tokens(body: &Value) -> u64 {
    let mut chars = body["system"].as_str().map_or(0, |s| s.chars().count());
    for m in body["messages"].as_array().into_iter().flatten() {
        chars += m["content"].as_str().map_or(0, |s| s.chars().count());
    }
    chars.div_ceil(4) as u64
}

fn max_tokens(body: &Value) -> usize {
    body["max_tokens"]
        .as_u64()
        .or_else(|| body["max_completion_tokens"].as_u64())
        .unwrap_or(u64::MAX) as usize
}

/// Counts a whole answer as abandoned unless it is finished (the handler future is dropped
/// when the client goes away).
struct Waiting(Option<Arc<Seen>>);

impl Waiting {
    fn finish(mut self) {
        self.0 = None;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(seen) = self.0.take() {
            seen.abandoned_answers.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// An SSE body fed by a task that notices when the client goes away.
fn sse_body(
    seen: Arc<Seen>,
    produce: impl FnOnce(
        tokio::sync::mpsc::Sender<Result<Bytes, Infallible>>,
    ) -> futures::future::BoxFuture<'static, bool>
    + Send
    + 'static,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let finished = produce(tx).await;
        let counter = if finished { &seen.finished_streams } else { &seen.abandoned_streams };
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut res = Response::new(Body::from_stream(stream));
    res.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().expect("ct"));
    res
}

async fn send(tx: &tokio::sync::mpsc::Sender<Result<Bytes, Infallible>>, frame: String) -> bool {
    tx.send(Ok(Bytes::from(frame))).await.is_ok()
}

fn openai_error(status: u16, retry_after: Option<u64>) -> Response {
    let (kind, msg) = match status {
        429 => ("rate_limit_exceeded", "Rate limit reached for requests"),
        400 => ("invalid_request_error", "Invalid request"),
        401 => ("invalid_api_key", "Incorrect API key provided"),
        _ => ("server_error", "The server had an error while processing your request"),
    };
    let mut res = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(json!({"error": {"message": msg, "type": kind, "param": null, "code": kind}})),
    )
        .into_response();
    if let Some(s) = retry_after {
        res.headers_mut().insert("retry-after", s.to_string().parse().expect("header"));
    }
    res
}

async fn openai(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let behavior = next(&state, &headers, &body);
    let model = body["model"].as_str().unwrap_or("fake").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let input = input_tokens(&body);
    let cap = max_tokens(&body);
    let (words, first, per, cut) = match behavior {
        Behavior::Fail { status, retry_after } => return openai_error(status, retry_after),
        Behavior::ContentPolicy => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"message": "Your request was rejected as a result of our safety system.", "type": "invalid_request_error", "param": null, "code": "content_policy_violation"}})),
            )
                .into_response();
        }
        Behavior::Answer { words, first_token, per_token } => (words, first_token, per_token, None),
        Behavior::Cut { after } => (after + 10, Duration::ZERO, Duration::ZERO, Some(after)),
    };
    let all = answer_words(words);
    let finish = if all.len() > cap { "length" } else { "stop" };
    let text_words: Vec<String> = all.into_iter().take(cap).collect();
    if !stream {
        let waiting = Waiting(Some(state.seen.clone()));
        tokio::time::sleep(first + per * text_words.len() as u32).await;
        waiting.finish();
        let output = text_words.len() as u64;
        return Json(json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text_words.join(" ")}, "finish_reason": finish}],
            "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
        }))
        .into_response();
    }
    let seen = state.seen.clone();
    sse_body(seen, move |tx| {
        Box::pin(async move {
            let chunk = |delta: Value, finish: Value| {
                format!(
                    "data: {}\n\n",
                    json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                )
            };
            if !send(&tx, chunk(json!({"role": "assistant", "content": ""}), Value::Null)).await {
                return false;
            }
            tokio::time::sleep(first).await;
            for (i, w) in text_words.iter().enumerate() {
                if cut == Some(i) {
                    return true; // the connection ends without [DONE]
                }
                if i > 0 && !per.is_zero() {
                    tokio::time::sleep(per).await;
                }
                let piece = if i == 0 { w.clone() } else { format!(" {w}") };
                if !send(&tx, chunk(json!({"content": piece}), Value::Null)).await {
                    return false;
                }
            }
            let output = text_words.len() as u64;
            let usage = format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}})
            );
            send(&tx, chunk(json!({}), json!(finish))).await
                && send(&tx, usage).await
                && send(&tx, "data: [DONE]\n\n".into()).await
        })
    })
}

fn anthropic_error(status: u16, retry_after: Option<u64>) -> Response {
    let (kind, msg) = match status {
        429 => ("rate_limit_error", "Number of request tokens has exceeded your rate limit"),
        400 => ("invalid_request_error", "Invalid request"),
        401 => ("authentication_error", "invalid x-api-key"),
        529 => ("overloaded_error", "Overloaded"),
        _ => ("api_error", "Internal server error"),
    };
    let mut res = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(json!({"type": "error", "error": {"type": kind, "message": msg}})),
    )
        .into_response();
    if let Some(s) = retry_after {
        res.headers_mut().insert("retry-after", s.to_string().parse().expect("header"));
    }
    res
}

async fn anthropic(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let behavior = next(&state, &headers, &body);
    let model = body["model"].as_str().unwrap_or("fake").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let input = input_tokens(&body);
    let cap = max_tokens(&body);
    let (words, first, per, cut) = match behavior {
        Behavior::Fail { status, retry_after } => return anthropic_error(status, retry_after),
        Behavior::ContentPolicy => return anthropic_error(400, None),
        Behavior::Answer { words, first_token, per_token } => (words, first_token, per_token, None),
        Behavior::Cut { after } => (after + 10, Duration::ZERO, Duration::ZERO, Some(after)),
    };
    let all = answer_words(words);
    let stop = if all.len() > cap { "max_tokens" } else { "end_turn" };
    let text_words: Vec<String> = all.into_iter().take(cap).collect();
    if !stream {
        let waiting = Waiting(Some(state.seen.clone()));
        tokio::time::sleep(first + per * text_words.len() as u32).await;
        waiting.finish();
        return Json(json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text_words.join(" ")}],
            "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": text_words.len()},
        }))
        .into_response();
    }
    let seen = state.seen.clone();
    sse_body(seen, move |tx| {
        Box::pin(async move {
            let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
            let start = ev(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "usage": {"input_tokens": input, "output_tokens": 1}}}),
            );
            let block = ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            if !(send(&tx, start).await && send(&tx, block).await) {
                return false;
            }
            tokio::time::sleep(first).await;
            if !send(&tx, ev("ping", json!({"type": "ping"}))).await {
                return false;
            }
            for (i, w) in text_words.iter().enumerate() {
                if cut == Some(i) {
                    return true;
                }
                if i > 0 && !per.is_zero() {
                    tokio::time::sleep(per).await;
                }
                let piece = if i == 0 { w.clone() } else { format!(" {w}") };
                let delta = ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                );
                if !send(&tx, delta).await {
                    return false;
                }
            }
            send(&tx, ev("content_block_stop", json!({"type": "content_block_stop", "index": 0}))).await
                && send(
                    &tx,
                    ev(
                        "message_delta",
                        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": text_words.len()}}),
                    ),
                )
                .await
                && send(&tx, ev("message_stop", json!({"type": "message_stop"}))).await
        })
    })
}
