//! The offline provider: `skillup up` without API keys still answers every request, with a
//! deterministic draft built from the prompt, fast, and labelled `offline` in every response
//! (and in the text itself), so nobody mistakes it for a model's work.

use futures::StreamExt;

use super::{
    Answer, ChatRequest, Chunk, ChunkStream, Provider, ProviderError, Role, Usage, estimate_tokens,
};

pub const MODEL: &str = "skillup-offline-1";

pub struct Offline;

/// The draft: a label, then the request's own lines echoed as numbered points, cut at
/// `max_tokens` words. Deterministic: the same request gives the same text.
pub fn compose(req: &ChatRequest) -> (String, &'static str) {
    let prompt = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    let mut words: Vec<String> = "[Offline draft — no AI provider is configured; set OPENAI_API_KEY or ANTHROPIC_API_KEY for real text.]"
        .split(' ')
        .map(str::to_owned)
        .collect();
    let sentences: Vec<&str> =
        prompt.split(['.', '\n', '!', '?']).map(str::trim).filter(|s| !s.is_empty()).collect();
    for (i, s) in sentences.iter().enumerate() {
        words.push(format!("\n\n{}.", i + 1));
        words.extend(s.split_whitespace().map(str::to_owned));
    }
    let limit = req.max_tokens.max(1) as usize;
    let reason = if words.len() > limit { "length" } else { "stop" };
    words.truncate(limit);
    let mut text = String::new();
    for w in &words {
        if !text.is_empty() && !w.starts_with('\n') {
            text.push(' ');
        }
        text.push_str(w);
    }
    (text, reason)
}

#[async_trait::async_trait]
impl Provider for Offline {
    fn label(&self) -> &'static str {
        "offline"
    }

    async fn complete(&self, req: &ChatRequest) -> Result<Answer, ProviderError> {
        let (text, reason) = compose(req);
        let usage = Usage {
            input: req.messages.iter().map(|m| estimate_tokens(&m.content)).sum(),
            output: text.split(' ').count() as u32,
        };
        Ok(Answer { text, usage, finish_reason: reason.into(), model: MODEL.into() })
    }

    async fn stream(&self, req: &ChatRequest) -> Result<ChunkStream, ProviderError> {
        let answer = self.complete(req).await?;
        let mut chunks: Vec<Result<Chunk, ProviderError>> = Vec::new();
        for (i, w) in answer.text.split(' ').enumerate() {
            let piece = if i == 0 { w.to_owned() } else { format!(" {w}") };
            chunks.push(Ok(Chunk::Delta(piece)));
        }
        chunks.push(Ok(Chunk::Finish(answer.finish_reason)));
        chunks.push(Ok(Chunk::Usage(answer.usage)));
        Ok(futures::stream::iter(chunks).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ChatMessage;

    fn req(max: u32) -> ChatRequest {
        ChatRequest {
            model: MODEL.into(),
            messages: vec![
                ChatMessage { role: Role::System, content: "be brief".into() },
                ChatMessage {
                    role: Role::User,
                    content: "Write a quiz. About rust ownership!".into(),
                },
            ],
            max_tokens: max,
            temperature: 0.0,
        }
    }

    #[tokio::test]
    async fn deterministic_labelled_and_bounded() {
        let a = Offline.complete(&req(200)).await.unwrap();
        assert_eq!(a, Offline.complete(&req(200)).await.unwrap());
        assert!(a.text.starts_with("[Offline draft"), "{}", a.text);
        assert!(a.text.contains("2. About rust ownership"), "{}", a.text);
        assert_eq!(a.finish_reason, "stop");
        let short = Offline.complete(&req(5)).await.unwrap();
        assert_eq!(short.usage.output, 5);
        assert_eq!(short.finish_reason, "length");
        let streamed: Vec<_> = Offline.stream(&req(200)).await.unwrap().collect().await;
        let text: String = streamed
            .iter()
            .filter_map(|c| match c {
                Ok(Chunk::Delta(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, a.text, "the stream spells the same answer");
    }
}
