//! A chat completion request as OpenAI's clients send it, checked into ai's `ChatCompletionRequest`.

use super::*;

/// A chat completion request as OpenAI's API takes it. Fields SkillUp cannot honour are
/// refused by name rather than ignored; those that change nothing here (penalties, `seed`,
/// `store`, …) are accepted and ignored, as OpenAI-compatible servers do.
#[derive(Debug, Deserialize)]
pub(super) struct ChatRequest {
    pub(super) model: Option<String>,
    pub(super) messages: Option<Vec<ChatMessage>>,
    pub(super) max_tokens: Option<u64>,
    pub(super) max_completion_tokens: Option<u64>,
    pub(super) temperature: Option<f64>,
    pub(super) top_p: Option<f64>,
    pub(super) stop: Option<Value>,
    pub(super) user: Option<String>,
    pub(super) n: Option<u64>,
    #[serde(default)]
    pub(super) stream: bool,
    pub(super) stream_options: Option<StreamOptions>,
    pub(super) metadata: Option<HashMap<String, Value>>,
    pub(super) tools: Option<Value>,
    pub(super) functions: Option<Value>,
    pub(super) tool_choice: Option<Value>,
    pub(super) response_format: Option<Value>,
    pub(super) logprobs: Option<bool>,
    pub(super) audio: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ChatMessage {
    role: String,
    content: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The request, checked: what goes to ai, and how to answer.
pub(super) struct Checked {
    pub(super) ask: ai::ChatCompletionRequest,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
}

pub(super) fn check(body: &[u8]) -> Result<Checked, OpenAiError> {
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
pub(super) fn text_of(i: usize, content: Option<&Value>) -> Result<String, OpenAiError> {
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
