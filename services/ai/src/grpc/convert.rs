//! The contract's messages and the service's own values, each way.

use skillup_kit::db::timestamp as ts;
use skillup_proto::ai::v1 as pb;

use crate::{
    domain::{
        Completion, DeadLetter, Delivery, GenerationRequest, Job, Mode, QueueStats, RequeueOutcome,
        StreamEvent, Task, TaskStatus, Usage,
    },
    error::AiError,
};

impl TryFrom<pb::GenerateRequest> for GenerationRequest {
    type Error = AiError;

    fn try_from(r: pb::GenerateRequest) -> Result<Self, AiError> {
        let mode = match pb::Mode::try_from(r.mode) {
            Ok(pb::Mode::Auto | pb::Mode::Unspecified) => Mode::Auto,
            Ok(pb::Mode::Sync) => Mode::Sync,
            Ok(pb::Mode::Async) => Mode::Async,
            Err(_) => {
                return Err(AiError::Invalid(
                    "mode",
                    skillup_kit::invalid::one_of("mode", &["auto", "sync", "async"]),
                ));
            }
        };
        Ok(GenerationRequest {
            topic: r.topic,
            function: r.function,
            params: r.params,
            mode,
            locale: r.locale,
            max_tokens: r.max_tokens,
            idempotency_key: r.idempotency_key,
            fresh: false,
            regenerated_from: None,
            via_api: false,
            sampling: Default::default(),
            raw: None,
        })
    }
}

impl From<GenerationRequest> for pb::GenerateRequest {
    fn from(r: GenerationRequest) -> Self {
        let mode = match r.mode {
            Mode::Auto => pb::Mode::Auto,
            Mode::Sync => pb::Mode::Sync,
            Mode::Async => pb::Mode::Async,
        };
        pb::GenerateRequest {
            topic: r.topic,
            function: r.function,
            params: r.params,
            mode: mode as i32,
            locale: r.locale,
            max_tokens: r.max_tokens,
            idempotency_key: r.idempotency_key,
        }
    }
}

impl From<Job> for pb::GenerationJob {
    fn from(j: Job) -> Self {
        pb::GenerationJob {
            task_id: j.task_id,
            user_id: j.user_id,
            hold_id: j.hold_id,
            request: j.request.map(Into::into),
        }
    }
}

impl From<pb::GenerationJob> for Job {
    /// A request the contract refuses (an unknown mode) is kept without its mode.
    fn from(j: pb::GenerationJob) -> Self {
        let request = j.request.map(|r| {
            let raw = r.clone();
            GenerationRequest::try_from(r).unwrap_or(GenerationRequest {
                topic: raw.topic,
                function: raw.function,
                params: raw.params,
                locale: raw.locale,
                max_tokens: raw.max_tokens,
                idempotency_key: raw.idempotency_key,
                mode: Mode::Auto,
                ..GenerationRequest::default()
            })
        });
        Job { task_id: j.task_id, user_id: j.user_id, hold_id: j.hold_id, request }
    }
}

pub(super) fn usage_pb(u: Usage) -> pb::TokenUsage {
    pb::TokenUsage { input_tokens: u.input, output_tokens: u.output, total_tokens: u.total() }
}

impl From<Completion> for pb::Completion {
    fn from(c: Completion) -> Self {
        pb::Completion {
            id: c.id,
            text: c.text,
            usage: Some(usage_pb(c.usage)),
            provider: c.provider,
            model: c.model,
            finish_reason: c.finish_reason,
            cached: c.cached,
        }
    }
}

impl From<StreamEvent> for pb::GenerateStreamEvent {
    fn from(e: StreamEvent) -> Self {
        use pb::generate_stream_event::Event;
        let event = match e {
            StreamEvent::Started { id, provider, model, cached } => {
                Event::Started(pb::StreamStarted { id, provider, model, cached })
            }
            StreamEvent::Delta(t) => Event::Delta(t),
            StreamEvent::Finished { usage, finish_reason } => {
                Event::Finished(pb::StreamFinished { usage: Some(usage_pb(usage)), finish_reason })
            }
        };
        pb::GenerateStreamEvent { event: Some(event) }
    }
}

impl From<TaskStatus> for pb::TaskStatus {
    fn from(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Queued => pb::TaskStatus::Queued,
            TaskStatus::Running => pb::TaskStatus::Running,
            TaskStatus::Completed => pb::TaskStatus::Completed,
            TaskStatus::Failed => pb::TaskStatus::Failed,
            TaskStatus::Cancelled => pb::TaskStatus::Cancelled,
        }
    }
}

/// The contract's status filter (`None`: unspecified, any).
pub(super) fn status_filter(s: pb::TaskStatus) -> Option<TaskStatus> {
    match s {
        pb::TaskStatus::Queued => Some(TaskStatus::Queued),
        pb::TaskStatus::Running => Some(TaskStatus::Running),
        pb::TaskStatus::Completed => Some(TaskStatus::Completed),
        pb::TaskStatus::Failed => Some(TaskStatus::Failed),
        pb::TaskStatus::Cancelled => Some(TaskStatus::Cancelled),
        pb::TaskStatus::Unspecified => None,
    }
}

impl From<Task> for pb::Task {
    fn from(t: Task) -> Self {
        pb::Task {
            id: t.id.to_string(),
            status: pb::TaskStatus::from(t.status) as i32,
            topic: t.topic,
            function: t.function,
            text: t.text.unwrap_or_default(),
            error: t.error.unwrap_or_default(),
            usage: t.usage.map(usage_pb),
            attempts: t.attempts,
            created_at: Some(ts(t.created_at)),
            updated_at: Some(ts(t.updated_at)),
            locale: t.locale,
            delivery: pb::Delivery::from(t.delivery) as i32,
            title: t.title,
            starred: t.starred,
            params: t.params.into_iter().collect(),
            provider: t.provider,
            model: t.model,
            finish_reason: t.finish_reason,
            regenerated_from: t.regenerated_from.map(|id| id.to_string()).unwrap_or_default(),
            interrupted: t.interrupted,
            excerpt: t.excerpt,
        }
    }
}

impl From<Delivery> for pb::Delivery {
    fn from(d: Delivery) -> Self {
        match d {
            Delivery::Inline => pb::Delivery::Inline,
            Delivery::Stream => pb::Delivery::Stream,
            Delivery::Queued => pb::Delivery::Queued,
            Delivery::Api => pb::Delivery::Api,
        }
    }
}

impl From<QueueStats> for pb::QueueStats {
    fn from(s: QueueStats) -> Self {
        pb::QueueStats {
            queued: s.queued,
            retrying: s.retrying,
            dead: s.dead,
            tasks: s.tasks.into_iter().collect(),
            oldest_queued_seconds: s.oldest_queued_seconds,
        }
    }
}

impl From<DeadLetter> for pb::DeadLetter {
    fn from(d: DeadLetter) -> Self {
        pb::DeadLetter {
            task_id: d.task_id,
            user_id: d.user_id,
            reason: d.reason,
            attempts: d.attempts,
            status: d.status.map(pb::TaskStatus::from).unwrap_or_default() as i32,
            error: d.error,
        }
    }
}

impl From<RequeueOutcome> for pb::RequeueOutcome {
    fn from(o: RequeueOutcome) -> Self {
        pb::RequeueOutcome { task_id: o.task_id, requeued: o.requeued, reason: o.reason }
    }
}

// ---- GenerationService -------------------------------------------------------------------
