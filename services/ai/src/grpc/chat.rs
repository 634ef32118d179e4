//! The OpenAI-compatible API's chat completion as a generation: a function's model, or a
//! provider's own model with the messages as they are.

use skillup_proto::ai::v1 as pb;

use crate::{
    domain::{GenerationRequest, Mode, RAW_CHAT_FUNCTION, RawChat},
    error::AiError,
    providers::{ChatMessage, Role},
};

/// A model of the OpenAI-compatible API that is one of the catalog's functions.
pub const FUNCTION_MODEL_PREFIX: &str = "skillup/";

impl TryFrom<pb::ChatCompletionRequest> for GenerationRequest {
    type Error = AiError;

    /// `skillup/<function>`: the last user message as the topic and the metadata as the
    /// function's parameters (`locale` apart). `<provider>/<model>`: the messages as they are,
    /// for the plan's function `chat`, the last user message the document's topic. Answered
    /// inline and filed as delivery `api`.
    fn try_from(r: pb::ChatCompletionRequest) -> Result<Self, AiError> {
        if r.messages.is_empty() {
            return Err(AiError::Invalid("messages", skillup_kit::invalid::required("messages")));
        }
        let mut messages = Vec::with_capacity(r.messages.len());
        for m in &r.messages {
            let role = match m.role.as_str() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                _ => {
                    return Err(AiError::Invalid(
                        "messages",
                        skillup_kit::invalid::one_of(
                            "messages.role",
                            &["system", "user", "assistant"],
                        ),
                    ));
                }
            };
            messages.push(ChatMessage { role, content: m.content.clone() });
        }
        let Some(last) = r.messages.iter().rev().find(|m| m.role == "user") else {
            return Err(AiError::Invalid(
                "messages",
                skillup_kit::invalid::required("messages.user"),
            ));
        };
        let mut params = r.metadata;
        let locale = params.remove("locale").unwrap_or_default();
        let (function, topic, raw) = match r.model.strip_prefix(FUNCTION_MODEL_PREFIX) {
            Some(function) => (function.to_owned(), last.content.clone(), None),
            None => {
                let Some((provider, model)) = r.model.split_once('/') else {
                    return Err(AiError::UnknownModel(r.model));
                };
                // The document's topic: the start of the last question, on one line.
                let topic: String = last.content.split_whitespace().collect::<Vec<_>>().join(" ");
                let topic: String = topic.chars().take(200).collect();
                let raw =
                    RawChat { provider: provider.to_owned(), model: model.to_owned(), messages };
                (RAW_CHAT_FUNCTION.to_owned(), topic, Some(raw))
            }
        };
        Ok(GenerationRequest {
            topic,
            function,
            params,
            mode: Mode::Sync,
            locale,
            max_tokens: r.max_tokens,
            idempotency_key: String::new(),
            fresh: false,
            regenerated_from: None,
            via_api: true,
            sampling: crate::domain::Sampling {
                temperature: r.temperature,
                top_p: r.top_p,
                stop: r.stop,
            },
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(model: &str, messages: &[(&str, &str)]) -> pb::ChatCompletionRequest {
        pb::ChatCompletionRequest {
            model: model.into(),
            messages: messages
                .iter()
                .map(|(role, content)| pb::ChatMessage {
                    role: (*role).into(),
                    content: (*content).into(),
                })
                .collect(),
            metadata: [
                ("locale".to_owned(), "ru".to_owned()),
                ("questions".to_owned(), "5".to_owned()),
            ]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_function_model_takes_the_last_question_as_its_topic() {
        let r = GenerationRequest::try_from(ask(
            "skillup/quiz",
            &[("user", "old"), ("assistant", "a"), ("user", "Rust")],
        ))
        .unwrap();
        assert_eq!(
            (r.function.as_str(), r.topic.as_str(), r.locale.as_str()),
            ("quiz", "Rust", "ru")
        );
        assert_eq!(r.params["questions"], "5");
        assert!(r.via_api && r.raw.is_none() && r.mode == Mode::Sync);
    }

    #[test]
    fn a_providers_model_takes_the_messages_as_they_are() {
        let long = format!("What  is\n{}", "x".repeat(300));
        let r = GenerationRequest::try_from(ask(
            "local/llama3.1",
            &[("system", "be brief"), ("user", &long)],
        ))
        .unwrap();
        assert_eq!(r.function, RAW_CHAT_FUNCTION);
        assert!(r.topic.starts_with("What is x") && r.topic.chars().count() == 200, "{}", r.topic);
        let raw = r.raw.unwrap();
        assert_eq!((raw.provider.as_str(), raw.model.as_str()), ("local", "llama3.1"));
        assert_eq!(raw.messages[0], ChatMessage { role: Role::System, content: "be brief".into() });
        assert_eq!(raw.messages[1].content, long);
    }

    #[test]
    fn what_is_no_model_or_no_conversation_is_refused() {
        let unknown = GenerationRequest::try_from(ask("gpt-4o", &[("user", "x")])).unwrap_err();
        assert!(matches!(unknown, AiError::UnknownModel(m) if m == "gpt-4o"));
        for messages in [&[][..], &[("system", "x")][..], &[("tool", "x"), ("user", "y")][..]] {
            let e = GenerationRequest::try_from(ask("skillup/quiz", messages)).unwrap_err();
            assert!(matches!(e, AiError::Invalid("messages", _)), "{messages:?}: {e:?}");
        }
    }
}
