//! The events the ai service publishes and consumes, as the contract's messages:
//! `generation.completed` / `generation.failed` when a queued task ends, and
//! `generation.cancelled` when its owner cancels it (the workers listen for it).

use skillup_kit::bus::{SharedBus, SubscriptionSpec};
use skillup_proto::{ai::v1 as pb, events::Event as _};
use uuid::Uuid;

use crate::domain::{Task, TaskStatus};

/// `generation.completed` or `generation.failed` for a task that ended, under an id fixed by
/// the task and its outcome, so a repeat after a crash is recognisably the same event.
pub(crate) async fn ended(bus: &SharedBus, user: Uuid, t: Task) -> skillup_kit::Result<()> {
    let user = user.to_string();
    let id = format!("{}:{}", t.id, t.status);
    if t.status == TaskStatus::Completed {
        let ev = pb::GenerationCompleted { task: Some(t.into()) };
        skillup_kit::events::publish_with_id(bus, &id, &user, &ev).await.map(drop)
    } else {
        let ev = pb::GenerationFailed { task: Some(t.into()) };
        skillup_kit::events::publish_with_id(bus, &id, &user, &ev).await.map(drop)
    }
}

/// `generation.cancelled`.
pub(crate) async fn cancelled(bus: &SharedBus, user: Uuid, task: Uuid) -> skillup_kit::Result<()> {
    let ev = pb::GenerationCancelled { task_id: task.to_string(), user_id: user.to_string() };
    skillup_kit::events::publish(bus, &user.to_string(), &ev).await.map(drop)
}

/// The subscription of a worker's cancel listener.
pub(crate) fn cancels(name: &str) -> SubscriptionSpec {
    SubscriptionSpec::new(name, &[pb::GenerationCancelled::KIND])
}

/// The task a `generation.cancelled` body names (`None`: not one).
pub(crate) fn cancelled_task(body: &[u8]) -> Option<Uuid> {
    skillup_kit::events::decode::<pb::GenerationCancelled>(body)
        .and_then(|(_, ev)| Uuid::parse_str(&ev.task_id).ok())
}

/// The audit entry of an administrator's requeue: which dead letters went back to the queue
/// and which were dropped or left, with why.
pub(crate) fn requeue_audit(
    actor: &skillup_kit::audit::Actor,
    outcomes: &[crate::domain::RequeueOutcome],
    reason: &str,
) -> skillup_proto::common::v1::AuditEntry {
    let requeued: Vec<&str> =
        outcomes.iter().filter(|o| o.requeued).map(|o| o.task_id.as_str()).collect();
    let left: Vec<serde_json::Value> = outcomes
        .iter()
        .filter(|o| !o.requeued)
        .map(|o| serde_json::json!({ "task_id": o.task_id, "reason": o.reason }))
        .collect();
    let target = if outcomes.len() == 1 { outcomes[0].task_id.clone() } else { String::new() };
    let before = serde_json::json!({ "dead_letters": outcomes.len() });
    let after = serde_json::json!({ "requeued": requeued, "not_requeued": left });
    actor.entry(
        "ai",
        "queue.requeue",
        ("dead_letter", &target),
        Some(&before),
        Some(&after),
        reason,
    )
}
