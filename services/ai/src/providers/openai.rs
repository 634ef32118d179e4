//! OpenAI Chat Completions (`POST {base}/chat/completions`), and any server that speaks it
//! (Ollama, vLLM, LM Studio). Streams ask for `stream_options.include_usage`, so the last chunk
//! carries the usage the charge is settled by.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{
    Answer, ChatRequest, Chunk, ChunkStream, Provider, ProviderError, Usage, transport_error,
};

pub struct OpenAi {
    http: reqwest::Client,
    url: String,
    key: Option<SecretString>,
    label: &'static str,
}

impl OpenAi {
    /// api.openai.com (or a proxy of it): `max_completion_tokens`.
    pub fn official(http: reqwest::Client, base_url: &str, key: Option<SecretString>) -> Self {
        Self { http, url: endpoint(base_url), key, label: "openai" }
    }

    /// An OpenAI-compatible server: `max_tokens`, key optional.
    pub fn compatible(http: reqwest::Client, base_url: &str, key: Option<SecretString>) -> Self {
        Self { http, url: endpoint(base_url), key, label: "compatible" }
    }

    fn body(&self, req: &ChatRequest, stream: bool) -> Value {
        let messages: Vec<Value> =
            req.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
        let mut body = json!({
            "model": req.model,
            "messages": messages,
            "temperature": req.temperature,
            "stream": stream,
        });
        let field = if self.label == "openai" { "max_completion_tokens" } else { "max_tokens" };
        body[field] = json!(req.max_tokens);
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        if let Some(p) = req.top_p {
            body["top_p"] = json!(p);
        }
        if !req.stop.is_empty() {
            body["stop"] = json!(req.stop);
        }
        body
    }

    async fn send(
        &self,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut rb = self.http.post(&self.url).json(&self.body(req, stream));
        if let Some(key) = &self.key {
            rb = rb.bearer_auth(key.expose_secret());
        }
        super::send(rb).await
    }
}

fn endpoint(base: &str) -> String {
    format!("{}/chat/completions", base.trim_end_matches('/'))
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        input: u["prompt_tokens"].as_u64().unwrap_or(0) as u32,
        output: u["completion_tokens"].as_u64().unwrap_or(0) as u32,
    })
}

#[async_trait::async_trait]
impl Provider for OpenAi {
    fn label(&self) -> &'static str {
        self.label
    }

    async fn complete(&self, req: &ChatRequest) -> Result<Answer, ProviderError> {
        let res = self.send(req, false).await?;
        let v: Value = res.json().await.map_err(transport_error)?;
        let choice = &v["choices"][0];
        let text = choice["message"]["content"].as_str().unwrap_or_default().to_owned();
        let finish_reason = choice["finish_reason"].as_str().unwrap_or("stop").to_owned();
        if finish_reason == "content_filter" && text.is_empty() {
            return Err(ProviderError::ContentPolicy("the answer was filtered".into()));
        }
        let usage = usage_of(&v).unwrap_or(Usage {
            input: req.messages.iter().map(|m| super::estimate_tokens(&m.content)).sum(),
            output: super::estimate_tokens(&text),
        });
        let model = v["model"].as_str().unwrap_or(&req.model).to_owned();
        Ok(Answer { text, usage, finish_reason, model })
    }

    async fn stream(&self, req: &ChatRequest) -> Result<ChunkStream, ProviderError> {
        let res = self.send(req, true).await?;
        let events = res.bytes_stream().eventsource();
        // Each SSE event becomes zero or more chunks; `[DONE]` ends it; an end without it is
        // a cut stream.
        let s = futures::stream::unfold((events, false), |(mut events, done)| async move {
            if done {
                return None;
            }
            loop {
                let Some(ev) = events.next().await else {
                    let cut = ProviderError::Unavailable("the stream was cut".into());
                    return Some((vec![Err(cut)], (events, true)));
                };
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        let err = ProviderError::Unavailable(format!("stream: {e}"));
                        return Some((vec![Err(err)], (events, true)));
                    }
                };
                if ev.data.trim() == "[DONE]" {
                    return None;
                }
                let Ok(v) = serde_json::from_str::<Value>(&ev.data) else { continue };
                if v.get("error").is_some_and(|e| e.is_object()) {
                    let msg = v["error"]["message"].as_str().unwrap_or("error").to_owned();
                    return Some((vec![Err(ProviderError::Unavailable(msg))], (events, true)));
                }
                let mut out = Vec::new();
                let choice = &v["choices"][0];
                if let Some(t) = choice["delta"]["content"].as_str().filter(|t| !t.is_empty()) {
                    out.push(Ok(Chunk::Delta(t.to_owned())));
                }
                if let Some(f) = choice["finish_reason"].as_str() {
                    out.push(Ok(Chunk::Finish(f.to_owned())));
                }
                if let Some(u) = usage_of(&v) {
                    out.push(Ok(Chunk::Usage(u)));
                }
                if !out.is_empty() {
                    return Some((out, (events, false)));
                }
            }
        })
        .flat_map(futures::stream::iter);
        Ok(s.boxed())
    }
}
