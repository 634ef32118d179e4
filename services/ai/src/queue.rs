//! The work queue of long generations, `generate.long`: its shape (priorities 0..=9 by plan,
//! retry levels with backoff, dead letters in `generate.long.dead`) and its messages, encoded
//! as the contract's `GenerationJob`.

use std::time::Duration;

use prost::Message as _;
use skillup_kit::bus::QueueSpec;

use crate::config::AiConfig;
use skillup_proto::ai::v1 as pb;

use crate::domain::Job;

/// The queue's name.
pub const QUEUE: &str = "generate.long";

/// Message header carrying the request id of the call that queued the task.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The queue with its priorities (0..=9 by plan) and backoff.
pub fn queue_spec(cfg: &AiConfig) -> QueueSpec {
    QueueSpec::new(QUEUE)
        .max_priority(9)
        .exponential_backoff(Duration::from_millis(cfg.retry_base_ms.max(1)), cfg.max_retries)
}

/// The dead-letter queue.
pub(crate) fn dead_queue() -> String {
    format!("{QUEUE}.dead")
}

/// A job as a message body.
pub(crate) fn encode(job: Job) -> Vec<u8> {
    pb::GenerationJob::from(job).encode_to_vec()
}

/// A message body as a job (`None`: not one).
pub(crate) fn decode(body: &[u8]) -> Option<Job> {
    pb::GenerationJob::decode(body).ok().map(Job::from)
}
