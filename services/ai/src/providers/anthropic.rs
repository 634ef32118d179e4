//! Anthropic Messages (`POST {base}/v1/messages`, `anthropic-version: 2023-06-01`). The system
//! prompt is a top-level field; streams are typed events (`message_start` carries the input
//! tokens, `message_delta` the output tokens and the stop reason, `error` a failure midway).

use eventsource_stream::Eventsource;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{
    Answer, ChatRequest, Chunk, ChunkStream, Provider, ProviderError, Role, Usage, transport_error,
};

pub struct Anthropic {
    http: reqwest::Client,
    url: String,
    key: Option<SecretString>,
}

impl Anthropic {
    pub fn new(http: reqwest::Client, base_url: &str, key: Option<SecretString>) -> Self {
        Self { http, url: format!("{}/v1/messages", base_url.trim_end_matches('/')), key }
    }

    fn body(req: &ChatRequest, stream: bool) -> Value {
        let system: Vec<&str> = req
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let messages: Vec<Value> = req
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect();
        let mut body = json!({
            "model": req.model,
            "max_tokens": req.max_tokens,
            "messages": messages,
            "temperature": req.temperature.min(1.0),
            "stream": stream,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if let Some(p) = req.top_p {
            body["top_p"] = json!(p);
        }
        if !req.stop.is_empty() {
            body["stop_sequences"] = json!(req.stop);
        }
        body
    }

    async fn send(
        &self,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut rb = self
            .http
            .post(&self.url)
            .header("anthropic-version", "2023-06-01")
            .json(&Self::body(req, stream));
        if let Some(key) = &self.key {
            rb = rb.header("x-api-key", key.expose_secret());
        }
        super::send(rb).await
    }
}

/// Anthropic's stop reasons in the OpenAI vocabulary the API shows.
fn finish(reason: &str) -> String {
    match reason {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" => "length",
        "refusal" => "content_filter",
        other => other,
    }
    .to_owned()
}

/// An `error` event's body as a provider error.
fn stream_error(v: &Value) -> ProviderError {
    let msg = v["error"]["message"].as_str().unwrap_or("error").to_owned();
    match v["error"]["type"].as_str().unwrap_or_default() {
        "rate_limit_error" => ProviderError::RateLimited { retry_after: None, message: msg },
        "invalid_request_error" => ProviderError::Rejected(msg),
        _ => ProviderError::Unavailable(msg),
    }
}

#[async_trait::async_trait]
impl Provider for Anthropic {
    fn label(&self) -> &'static str {
        "anthropic"
    }

    async fn complete(&self, req: &ChatRequest) -> Result<Answer, ProviderError> {
        let res = self.send(req, false).await?;
        let v: Value = res.json().await.map_err(transport_error)?;
        let text: String = v["content"]
            .as_array()
            .map(|blocks| {
                blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let usage = Usage {
            input: v["usage"]["input_tokens"].as_u64().unwrap_or(0) as u32,
            output: v["usage"]["output_tokens"].as_u64().unwrap_or(0) as u32,
        };
        Ok(Answer {
            text,
            usage,
            finish_reason: finish(v["stop_reason"].as_str().unwrap_or("end_turn")),
            model: v["model"].as_str().unwrap_or(&req.model).to_owned(),
        })
    }

    async fn stream(&self, req: &ChatRequest) -> Result<ChunkStream, ProviderError> {
        let res = self.send(req, true).await?;
        let events = res.bytes_stream().eventsource();
        // State: the events, input tokens from message_start, done.
        let s = futures::stream::unfold(
            (events, 0u32, false),
            |(mut events, input, done)| async move {
                if done {
                    return None;
                }
                let mut input = input;
                loop {
                    let Some(ev) = events.next().await else {
                        let cut = ProviderError::Unavailable("the stream was cut".into());
                        return Some((vec![Err(cut)], (events, input, true)));
                    };
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => {
                            let err = ProviderError::Unavailable(format!("stream: {e}"));
                            return Some((vec![Err(err)], (events, input, true)));
                        }
                    };
                    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else { continue };
                    let kind = if ev.event.is_empty() || ev.event == "message" {
                        v["type"].as_str().unwrap_or_default().to_owned()
                    } else {
                        ev.event.clone()
                    };
                    match kind.as_str() {
                        "message_start" => {
                            input =
                                v["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0) as u32;
                        }
                        "content_block_delta" => {
                            if let Some(t) = v["delta"]["text"].as_str().filter(|t| !t.is_empty()) {
                                return Some((
                                    vec![Ok(Chunk::Delta(t.to_owned()))],
                                    (events, input, false),
                                ));
                            }
                        }
                        "message_delta" => {
                            let mut out = Vec::new();
                            if let Some(r) = v["delta"]["stop_reason"].as_str() {
                                out.push(Ok(Chunk::Finish(finish(r))));
                            }
                            if let Some(o) = v["usage"]["output_tokens"].as_u64() {
                                out.push(Ok(Chunk::Usage(Usage { input, output: o as u32 })));
                            }
                            if !out.is_empty() {
                                return Some((out, (events, input, false)));
                            }
                        }
                        "message_stop" => return None,
                        "error" => {
                            return Some((vec![Err(stream_error(&v))], (events, input, true)));
                        }
                        _ => {} // ping, content_block_start/stop
                    }
                }
            },
        )
        .flat_map(futures::stream::iter);
        Ok(s.boxed())
    }
}
