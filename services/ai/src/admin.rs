//! Operators' work on the generation queue (`GenerationAdminService`, adapted in `grpc.rs`):
//! queue depths and the consumers' lag, reading the dead-letter queue, and requeueing from it.
//!
//! Requeue is at-least-once and idempotent: the new job is enqueued (confirmed) before the dead
//! message is acknowledged, and only a task still `failed` is requeued — so a crash between the
//! two leaves a dead letter that the next requeue acknowledges as stale.

use std::time::Duration;

use chrono::Utc;
use skillup_kit::bus::{Consumer, DEATH_REASON_HEADER, Delivery, Message};
use uuid::Uuid;

use crate::{
    domain::{DeadLetter, Job, QueueStats, RequeueOutcome, TaskStatus as Stored},
    generator::Generator,
    ports::HoldAsk,
    queue::{QUEUE, dead_queue, queue_spec},
    store::task,
    tasks::TASK_HOLD_TTL,
};

const MAX_BATCH: u32 = 500;
/// How long to wait for the broker to hand over a dead letter it said it holds.
const TAKE_WAIT: Duration = Duration::from_secs(2);

fn batch(limit: u32) -> u32 {
    if limit == 0 { 50 } else { limit.min(MAX_BATCH) }
}

impl Generator {
    /// Age of the oldest task still queued, seconds (0 when none): the consumers' lag.
    pub async fn queue_lag(&self) -> crate::error::Result<f64> {
        let oldest = self.inner.tasks.oldest_queued().await?;
        Ok(oldest
            .map(|at| (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0))
    }

    /// Queue depths and tasks by state.
    pub async fn queue_stats(&self) -> crate::error::Result<QueueStats> {
        let bus = &self.inner.bus;
        let queued = bus.depth(QUEUE).await?;
        let mut retrying = Vec::new();
        for level in 0..queue_spec(&self.inner.cfg).retry_delays.len() {
            retrying.push(bus.depth(&format!("{QUEUE}.retry.{level}")).await?);
        }
        let dead = bus.depth(&dead_queue()).await?;
        let tasks = self.inner.tasks.counts().await?;
        let oldest_queued_seconds = self.queue_lag().await?;
        Ok(QueueStats { queued, retrying, dead, tasks, oldest_queued_seconds })
    }

    /// Takes up to `n` dead letters off the queue, unsettled: the caller settles each, and
    /// keeps the consumer until then (dropping it hands unsettled letters back).
    async fn take_dead(
        &self,
        n: u32,
    ) -> crate::error::Result<(u64, Vec<Delivery>, Option<Consumer>)> {
        let total = self.inner.bus.depth(&dead_queue()).await?;
        let want = (n as u64).min(total) as usize;
        let mut taken = Vec::with_capacity(want);
        if want == 0 {
            return Ok((total, taken, None));
        }
        let mut consumer = self.inner.bus.consume(&dead_queue(), want as u16).await?;
        while taken.len() < want {
            match tokio::time::timeout(TAKE_WAIT, consumer.next()).await {
                Ok(Some(d)) => taken.push(d),
                _ => break,
            }
        }
        Ok((total, taken, Some(consumer)))
    }

    /// The oldest dead letters, left where they are, and how many there are.
    pub async fn dead_letters(&self, limit: u32) -> crate::error::Result<(Vec<DeadLetter>, u64)> {
        let (total, taken, _consumer) = self.take_dead(batch(limit)).await?;
        let mut out = Vec::with_capacity(taken.len());
        for d in taken {
            out.push(self.describe(&d).await);
            let _ = d.requeue().await;
        }
        Ok((out, total))
    }

    async fn describe(&self, d: &Delivery) -> DeadLetter {
        let job = crate::queue::decode(&d.message.payload).unwrap_or_default();
        let reason = d.message.headers.get(DEATH_REASON_HEADER).cloned().unwrap_or_default();
        let row = match Uuid::parse_str(&job.task_id) {
            Ok(id) => self.inner.tasks.get(id).await.ok().flatten(),
            Err(_) => None,
        };
        DeadLetter {
            task_id: job.task_id,
            user_id: job.user_id,
            reason,
            attempts: row.as_ref().map(|t| t.attempts.max(0) as u32).unwrap_or(d.attempt()),
            status: row.as_ref().map(|t| t.status),
            error: row.and_then(|t| t.error).unwrap_or_default(),
        }
    }

    /// Moves dead letters back onto the work queue (see the module docs).
    pub async fn requeue_dead(
        &self,
        task_ids: &[String],
        limit: u32,
    ) -> crate::error::Result<Vec<RequeueOutcome>> {
        let only: Vec<&str> = task_ids.iter().map(String::as_str).collect();
        // With a list, look through the whole queue for them (bounded by the batch size).
        let look_at = if only.is_empty() { batch(limit) } else { MAX_BATCH };
        let (_, taken, _consumer) = self.take_dead(look_at).await?;
        let mut outcomes = Vec::new();
        let mut budget = batch(limit) as usize;
        for d in taken {
            let job = crate::queue::decode(&d.message.payload).unwrap_or_default();
            if budget == 0 || (!only.is_empty() && !only.contains(&job.task_id.as_str())) {
                let _ = d.requeue().await;
                continue;
            }
            budget -= 1;
            let outcome = self.requeue_one(&job).await;
            match &outcome {
                Requeue::Done | Requeue::Stale(_) => {
                    let _ = d.ack().await;
                }
                Requeue::Refused(_) => {
                    let _ = d.requeue().await;
                }
            }
            let (requeued, reason) = match outcome {
                Requeue::Done => (true, String::new()),
                Requeue::Stale(r) => (false, r),
                Requeue::Refused(r) => (false, r),
            };
            outcomes.push(RequeueOutcome { task_id: job.task_id, requeued, reason });
        }
        Ok(outcomes)
    }

    async fn requeue_one(&self, job: &Job) -> Requeue {
        let Ok(id) = Uuid::parse_str(&job.task_id) else {
            return Requeue::Stale("malformed job: dropped".into());
        };
        let tasks = &self.inner.tasks;
        let t = match tasks.get(id).await {
            Ok(Some(t)) => t,
            Ok(None) => return Requeue::Stale("no such task: dropped".into()),
            Err(e) => return Requeue::Refused(format!("database: {e}")),
        };
        if t.status != Stored::Failed {
            return Requeue::Stale(format!("task is {}: dead letter dropped", t.status));
        }
        // The failure released the old hold: hold the quota again, as a new submission would.
        let input_estimate = (t.messages.len() / 4) as u64;
        let tokens = (input_estimate + t.max_tokens.max(1) as u64).max(1);
        let key = format!("ai:requeue:{id}:{}", t.updated_at.timestamp_millis());
        let ask = HoldAsk {
            user: t.user_id,
            function: t.function.clone(),
            tokens,
            key,
            ttl_secs: TASK_HOLD_TTL,
        };
        let hold = match self.inner.quota.reserve(&ask).await {
            Ok(h) => h,
            Err(e) => return Requeue::Refused(format!("quota: {e}")),
        };
        let Ok(hold_id) = Uuid::parse_str(&hold.id) else {
            return Requeue::Refused("subscribe returned a bad hold id".into());
        };
        match tasks.requeue(id, hold_id).await {
            Ok(true) => {}
            Ok(false) => {
                self.release(&hold.id, crate::ports::Release::Unsaid).await;
                return Requeue::Stale("task changed meanwhile: dead letter dropped".into());
            }
            Err(e) => {
                self.release(&hold.id, crate::ports::Release::Unsaid).await;
                return Requeue::Refused(format!("database: {e}"));
            }
        }
        let job = Job { hold_id: hold.id.clone(), ..job.clone() };
        let mut msg =
            Message::new(crate::queue::encode(job)).with_priority(hold.priority.min(9) as u8);
        msg.id = id.to_string();
        if let Err(e) = self.inner.bus.enqueue(QUEUE, msg).await {
            // Put the task back as it was; the dead letter stays for another try.
            let _ = tasks.unrequeue(id, t.error.clone()).await;
            self.release(&hold.id, crate::ports::Release::Unsaid).await;
            return Requeue::Refused(format!("queue: {e}"));
        }
        self.cache_task(&task::Model {
            status: Stored::Queued,
            error: None,
            attempts: 0,
            hold_id,
            ..t
        })
        .await;
        metrics::counter!("ai_tasks_requeued_total").increment(1);
        tracing::info!(task = %id, "dead letter requeued");
        Requeue::Done
    }
}

enum Requeue {
    Done,
    /// Nothing to run: the dead letter is dropped.
    Stale(String),
    /// Could not requeue now: the dead letter stays.
    Refused(String),
}
