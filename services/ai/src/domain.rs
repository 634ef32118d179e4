//! The ai service's own values: what is asked, what is answered, where a task is. `grpc.rs`
//! converts the contract's messages into these and back; nothing below it sees a protobuf type.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{DeriveActiveEnum, EnumIter, sea_query::StringLen};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::providers::Usage;

/// How the caller wants the answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Inline, unless the function or the answer is long: then queued.
    #[default]
    Auto,
    /// Inline, whatever its length.
    Sync,
    /// Queued, whatever its length.
    Async,
}

/// A generation asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationRequest {
    pub topic: String,
    /// The function's slug.
    pub function: String,
    pub params: HashMap<String, String>,
    pub mode: Mode,
    /// BCP 47; empty: the function's first locale.
    pub locale: String,
    /// 0: the function's default.
    pub max_tokens: u32,
    /// Empty: none.
    pub idempotency_key: String,
    /// Never answered from the result cache (a regeneration).
    pub fresh: bool,
    /// The document this one is generated again from.
    pub regenerated_from: Option<Uuid>,
    /// Asked through the OpenAI-compatible API (filed as delivery `api`).
    pub via_api: bool,
    /// How the provider samples the answer (the API's `temperature`, `top_p`, `stop`).
    pub sampling: Sampling,
    /// A conversation for one provider's model, sent as it is (no prompt template): the API's
    /// `<provider>/<model>` models. `function` is then [`RAW_CHAT_FUNCTION`].
    pub raw: Option<RawChat>,
}

/// What plans must include for the providers' own models.
pub const RAW_CHAT_FUNCTION: &str = "chat";

/// A conversation for one provider's model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawChat {
    pub provider: String,
    pub model: String,
    pub messages: Vec<crate::providers::ChatMessage>,
}

/// Sampling asked for by an API caller; unset fields are the service's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
}

/// An answer given inline (or replayed as a stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The generation's id.
    pub id: String,
    pub text: String,
    pub usage: Usage,
    /// The provider's label (`openai`, `offline`, …).
    pub provider: String,
    pub model: String,
    pub finish_reason: String,
    /// Served from the result cache.
    pub cached: bool,
}

/// One event of a streamed generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    Started { id: String, provider: String, model: String, cached: bool },
    Delta(String),
    Finished { usage: Usage, finish_reason: String },
}

impl Completion {
    /// The answer as the events a stream of it shows: `started`, its words, `finished`.
    pub fn into_events(self) -> Vec<StreamEvent> {
        let mut out = vec![StreamEvent::Started {
            id: self.id,
            provider: self.provider,
            model: self.model,
            cached: self.cached,
        }];
        for (i, w) in self.text.split(' ').enumerate() {
            out.push(StreamEvent::Delta(if i == 0 { w.to_owned() } else { format!(" {w}") }));
        }
        out.push(StreamEvent::Finished { usage: self.usage, finish_reason: self.finish_reason });
        out
    }
}

/// A generation as its owner sees it: a document of their library, whichever way it ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: Uuid,
    pub status: TaskStatus,
    pub topic: String,
    pub function: String,
    pub locale: String,
    /// Set once completed (and, for a stream its client left, what was generated).
    pub text: Option<String>,
    /// Why it failed, in words its owner can read.
    pub error: Option<String>,
    /// Set once completed.
    pub usage: Option<Usage>,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How it ran.
    #[serde(default)]
    pub delivery: Delivery,
    /// Its owner's title; the topic until they set one.
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub starred: bool,
    /// The function's parameters as asked.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// Who answered.
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub finish_reason: String,
    /// The document this one was generated again from.
    #[serde(default)]
    pub regenerated_from: Option<Uuid>,
    /// A stream its client left before the end: `text` holds what was generated.
    #[serde(default)]
    pub interrupted: bool,
    /// The text's beginning, in listings (which leave `text` out).
    #[serde(default)]
    pub excerpt: String,
}

/// Characters of a document's text a listing shows.
pub const EXCERPT_CHARS: usize = 240;

/// The beginning of `text` a listing shows: its first [`EXCERPT_CHARS`] characters, blank runs
/// made one space, cut at a word when one ends near there.
pub fn excerpt(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= EXCERPT_CHARS {
        return flat;
    }
    let cut: String = flat.chars().take(EXCERPT_CHARS).collect();
    let at_word = match cut.rfind(' ') {
        Some(i) if i > cut.len() * 3 / 4 => &cut[..i],
        _ => &cut,
    };
    format!("{at_word}…")
}

/// How a generation ran. Stored as its name in `ai_tasks.delivery`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Answered in one response.
    #[sea_orm(string_value = "inline")]
    Inline,
    /// Streamed as it was generated.
    #[sea_orm(string_value = "stream")]
    Stream,
    /// Queued and run by a worker.
    #[default]
    #[sea_orm(string_value = "queued")]
    Queued,
    /// Through the OpenAI-compatible `/v1/chat/completions`.
    #[sea_orm(string_value = "api")]
    Api,
}

/// Which of a user's documents to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LibraryQuery {
    /// Words to find in the title, topic and text (at most 200 characters); empty = all.
    pub query: String,
    /// Only this function's; empty = all.
    pub function: String,
    /// Only starred ones.
    pub starred: bool,
    pub status: Option<TaskStatus>,
}

/// What its owner changes on a document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocumentEdit {
    /// 1..=200 characters once trimmed.
    pub title: Option<String>,
    pub starred: Option<bool>,
}

/// A message on the work queue: the task to run (its row holds everything else) and the
/// request as asked, for operators reading dead letters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Job {
    pub task_id: String,
    pub user_id: String,
    pub hold_id: String,
    pub request: Option<GenerationRequest>,
}

/// The work queue as operators see it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueStats {
    pub queued: u64,
    /// Messages waiting in each retry level, shortest delay first.
    pub retrying: Vec<u64>,
    pub dead: u64,
    /// Tasks by stored status name.
    pub tasks: std::collections::BTreeMap<String, u64>,
    /// Age of the oldest queued task, seconds.
    pub oldest_queued_seconds: f64,
}

/// A message resting in the dead-letter queue.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub task_id: String,
    pub user_id: String,
    pub reason: String,
    pub attempts: u32,
    /// The task's status, if its row exists.
    pub status: Option<TaskStatus>,
    pub error: String,
}

/// What a requeue did with one dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequeueOutcome {
    pub task_id: String,
    pub requeued: bool,
    pub reason: String,
}

/// Where a queued task is. Stored as its name (`queued`, `running`, …) in `ai_tasks.status`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Accepted and on the queue, not yet taken by a worker.
    #[sea_orm(string_value = "queued")]
    Queued,
    /// A worker holds it.
    #[sea_orm(string_value = "running")]
    Running,
    /// The text is stored.
    #[sea_orm(string_value = "completed")]
    Completed,
    /// Given up after the last attempt, or refused by the provider; its hold was released.
    #[sea_orm(string_value = "failed")]
    Failed,
    /// Cancelled by its user before it finished.
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

impl TaskStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Nothing will change it any more.
    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled)
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ActiveEnum, Iterable};

    use super::TaskStatus;

    #[test]
    fn excerpts_are_short_flat_and_cut_at_a_word() {
        assert_eq!(super::excerpt("  Один\n\nдва  три "), "Один два три");
        let long = "слово ".repeat(100);
        let e = super::excerpt(&long);
        assert!(e.chars().count() <= super::EXCERPT_CHARS + 1, "{e}");
        assert!(e.ends_with("слово…"), "{e}");
    }

    #[test]
    fn every_status_is_stored_under_its_name() {
        for s in TaskStatus::iter() {
            assert_eq!(s.to_value(), s.as_str());
            assert_eq!(TaskStatus::try_from_value(&s.as_str().to_owned()).unwrap(), s);
        }
        assert!(TaskStatus::try_from_value(&"done".to_owned()).is_err());
    }
}
