//! The worker: consumes `generate.long` and runs each task once. Idempotent by task id — a
//! redelivery finds the row already settled and only finishes what the crash interrupted (the
//! hold commit, the event). A delivery is acknowledged only after the result is stored, the
//! hold settled and the event published. Provider failures retry through the queue's backoff
//! (honouring `retry-after`); after the last attempt the task fails, its hold is released and
//! the message rests in `generate.long.dead`. Cancels arrive as `generation.cancelled` events
//! and stop the provider call. On shutdown it finishes what it holds within the grace period,
//! then hands the rest back to the queue.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use skillup_kit::{
    Shutdown,
    bus::{Delivery, RetryOutcome},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    domain::TaskStatus as Status,
    generator::Generator,
    providers::{ChatMessage, ChatRequest},
    queue::{QUEUE, REQUEST_ID_HEADER, queue_spec},
    store::{task, tasks::Produced},
};

/// Running tasks by id, so a cancel event can stop one.
type Running = Arc<Mutex<HashMap<Uuid, CancellationToken>>>;

#[derive(Clone)]
pub struct Worker {
    generator: Generator,
    running: Running,
    /// Trips when shutdown's grace runs out: tasks still running are handed back.
    hand_back: CancellationToken,
}

/// How one delivery ended (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Completed,
    AlreadyDone,
    Retrying,
    Failed,
    Cancelled,
    HandedBack,
    Skipped,
}

impl Worker {
    pub fn new(generator: Generator) -> Self {
        Self { generator, running: Default::default(), hand_back: CancellationToken::new() }
    }

    /// Gauges read at each scrape: `bus_queue_depth{queue}` for the work queue, its retry
    /// levels and its dead letters; `ai_queue_lag_seconds` (age of the oldest queued task);
    /// `ai_worker_in_flight`. Once per process: the collector lives as long as it does.
    pub fn report_metrics(&self) {
        let w = self.clone();
        skillup_kit::ops::on_scrape(Box::new(move || {
            let w = w.clone();
            Box::pin(async move {
                let g = &w.generator;
                let levels = queue_spec(&g.inner.cfg).retry_delays.len();
                let queues = std::iter::once(QUEUE.to_owned())
                    .chain((0..levels).map(|l| format!("{QUEUE}.retry.{l}")))
                    .chain(std::iter::once(format!("{QUEUE}.dead")));
                for q in queues {
                    if let Ok(n) = g.inner.bus.depth(&q).await {
                        metrics::gauge!("bus_queue_depth", "queue" => q).set(n as f64);
                    }
                }
                if let Ok(lag) = g.queue_lag().await {
                    metrics::gauge!("ai_queue_lag_seconds").set(lag);
                }
                let running = w.running.lock().map(|r| r.len()).unwrap_or(0);
                metrics::gauge!("ai_worker_in_flight").set(running as f64);
            })
        }));
    }

    /// Consumes until `shutdown`, then drains within `grace`.
    pub async fn run(self, shutdown: Shutdown, grace: Duration) -> skillup_kit::Result<()> {
        let inner = &self.generator.inner;
        let spec = queue_spec(&inner.cfg);
        inner.bus.declare_queue(&spec).await?;
        let mut cancels = inner
            .bus
            .subscribe(&crate::events::cancels("ai-worker-cancel").per_instance(), 64)
            .await?;
        let running = self.running.clone();
        let cancel_task = tokio::spawn(async move {
            while let Some(d) = cancels.next().await {
                if let Some(id) = crate::events::cancelled_task(&d.message.payload)
                    && let Some(t) = running.lock().expect("running").get(&id)
                {
                    t.cancel();
                }
                let _ = d.ack().await;
            }
        });
        let mut consumer = inner.bus.consume(QUEUE, inner.cfg.worker_concurrency).await?;
        tracing::info!(queue = QUEUE, concurrency = inner.cfg.worker_concurrency, providers = ?inner.chain.names(), "worker consuming");
        let mut jobs = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                d = consumer.next() => match d {
                    Some(d) => {
                        let w = self.clone();
                        // The task's span continues the trace of the request that queued it.
                        let span = tracing::info_span!(
                            "task",
                            queue = QUEUE,
                            message_id = %d.message.id,
                            request_id = %d.message.headers.get(REQUEST_ID_HEADER).map(String::as_str).unwrap_or(""),
                            trace_id = tracing::field::Empty,
                        );
                        skillup_kit::telemetry::adopt_context(
                            &span,
                            skillup_kit::telemetry::extract_headers(&d.message.headers),
                        );
                        jobs.spawn(tracing::Instrument::instrument(async move { w.handle(d).await }, span));
                    }
                    None => break,
                },
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                _ = shutdown.wait() => break,
            }
        }
        drop(consumer);
        // Finish what is in hand within the grace period; hand back the rest.
        let drained =
            tokio::time::timeout(grace, async { while jobs.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            self.hand_back.cancel();
            while jobs.join_next().await.is_some() {}
        }
        cancel_task.abort();
        Ok(())
    }

    /// One delivery, settled exactly once.
    pub async fn handle(&self, d: Delivery) -> Handled {
        let job = match crate::queue::decode(&d.message.payload) {
            Some(j) => j,
            None => {
                tracing::error!("malformed job; dead-lettered");
                let _ = d.dead_letter("malformed job").await;
                return Handled::Skipped;
            }
        };
        let Ok(id) = Uuid::parse_str(&job.task_id) else {
            let _ = d.dead_letter("malformed task id").await;
            return Handled::Skipped;
        };
        match self.run_task(id, &d).await {
            Ok(outcome) => self.settle(d, outcome).await,
            Err(e) => {
                // Our own infrastructure failed (database, subscribe): try again shortly.
                tracing::warn!(task = %id, error = %e, "task interrupted; handed back");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = d.requeue().await;
                Handled::HandedBack
            }
        }
    }

    async fn settle(&self, d: Delivery, outcome: Step) -> Handled {
        match outcome {
            Step::Ack(h) => {
                let _ = d.ack().await;
                h
            }
            Step::Retry(reason, after) => match d.retry(&reason, after).await {
                Ok(RetryOutcome::Scheduled { .. }) => Handled::Retrying,
                Ok(RetryOutcome::DeadLettered) => Handled::Failed,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduling a retry failed");
                    Handled::HandedBack
                }
            },
            Step::Dead(reason) => {
                let _ = d.dead_letter(&reason).await;
                Handled::Failed
            }
            Step::HandBack => {
                let _ = d.requeue().await;
                Handled::HandedBack
            }
        }
    }

    async fn run_task(&self, id: Uuid, d: &Delivery) -> crate::error::Result<Step> {
        let g = &self.generator;
        let tasks = &g.inner.tasks;
        let Some(t) = tasks.get(id).await? else {
            tracing::warn!(task = %id, "job for an unknown task; dropped");
            return Ok(Step::Ack(Handled::Skipped));
        };
        let hold = t.hold_id.to_string();
        match t.status {
            // A crash after the result was stored: finish settling, publish again (the event
            // id is fixed, so consumers act once).
            Status::Completed => {
                if !g.commit(&hold, (t.input_tokens + t.output_tokens).max(0) as u64, None).await {
                    return Err(crate::error::AiError::Unavailable("commit".into()));
                }
                self.announce(&t).await?;
                return Ok(Step::Ack(Handled::AlreadyDone));
            }
            Status::Failed => {
                g.release(&hold, crate::ports::Release::Failed).await;
                self.announce(&t).await?;
                return Ok(Step::Ack(Handled::AlreadyDone));
            }
            Status::Cancelled => {
                g.release(&hold, crate::ports::Release::Cancelled).await;
                return Ok(Step::Ack(Handled::Cancelled));
            }
            Status::Queued | Status::Running => {}
        }
        // Claim it: queued, or running under a lease that lapsed (its worker died), or
        // redelivered by the broker (the consumer holding it is gone).
        let claim = Uuid::now_v7().to_string();
        let lease = Utc::now() + chrono::Duration::seconds(g.inner.cfg.lease_secs as i64);
        if !tasks.claim(id, &claim, lease, d.attempt(), d.redelivered).await? {
            tracing::info!(task = %id, "another worker holds this task; duplicate delivery acked");
            return Ok(Step::Ack(Handled::Skipped));
        }
        // From its 202 to this run's start (retries count as waiting): the plan's service
        // level measures it.
        let waited = (Utc::now() - t.created_at).to_std().ok();
        let messages: Vec<ChatMessage> = serde_json::from_str(&t.messages).unwrap_or_default();
        let cancel = CancellationToken::new();
        self.running.lock().expect("running").insert(id, cancel.clone());
        let started = std::time::Instant::now();
        let result = tokio::select! {
            r = g.inner.chain.complete(&t.function, |model| ChatRequest {
                model,
                messages: messages.clone(),
                max_tokens: t.max_tokens.max(1) as u32,
                temperature: g.inner.cfg.temperature,
                top_p: None,
                stop: Vec::new(),
                function: t.function.clone(),
                topic: t.topic.clone(),
                locale: t.locale.clone(),
            }) => Some(r),
            _ = cancel.cancelled() => None,
            _ = self.hand_back.cancelled() => {
                self.running.lock().expect("running").remove(&id);
                self.unclaim(id, &claim, Status::Queued, None).await?;
                return Ok(Step::HandBack);
            }
        };
        self.running.lock().expect("running").remove(&id);
        let Some(result) = result else {
            tracing::info!(task = %id, "cancelled while running; provider call stopped");
            return Ok(Step::Ack(Handled::Cancelled));
        };
        metrics::histogram!("ai_provider_seconds", "mode" => "queued")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok((served, answer)) => {
                let produced = Produced {
                    text: answer.text.clone(),
                    input_tokens: answer.usage.input,
                    output_tokens: answer.usage.output,
                    provider: served.label.to_owned(),
                    model: answer.model.clone(),
                    finish_reason: answer.finish_reason.clone(),
                };
                if !tasks.complete(id, &claim, produced).await? {
                    // Cancelled (or taken over) meanwhile: the result is not this run's to keep.
                    return Ok(Step::Ack(Handled::Cancelled));
                }
                let done = self.reload(id).await?;
                if !g.commit(&hold, answer.usage.total() as u64, waited).await {
                    return Err(crate::error::AiError::Unavailable("commit".into()));
                }
                g.cache_task(&done).await;
                self.announce(&done).await?;
                metrics::counter!("ai_tasks_total", "outcome" => "completed").increment(1);
                tracing::info!(task = %id, tokens = answer.usage.total(), "task completed");
                Ok(Step::Ack(Handled::Completed))
            }
            Err(e) => {
                let last = d.attempt() >= queue_spec(&g.inner.cfg).max_attempts();
                if e.retryable() && !last {
                    self.unclaim(
                        id,
                        &claim,
                        Status::Queued,
                        Some(format!("retrying: {}", e.user_reason())),
                    )
                    .await?;
                    return Ok(Step::Retry(e.to_string(), e.retry_after()));
                }
                self.unclaim(id, &claim, Status::Failed, Some(e.user_reason())).await?;
                let failed = self.reload(id).await?;
                g.release_after(&hold, crate::ports::Release::after(&e), waited).await;
                g.cache_task(&failed).await;
                self.announce(&failed).await?;
                metrics::counter!("ai_tasks_total", "outcome" => "failed").increment(1);
                if e.retryable() {
                    // Out of attempts: the message rests in the dead-letter queue.
                    Ok(Step::Dead(e.to_string()))
                } else {
                    Ok(Step::Ack(Handled::Failed))
                }
            }
        }
    }

    async fn reload(&self, id: Uuid) -> crate::error::Result<task::Model> {
        self.generator
            .inner
            .tasks
            .get(id)
            .await?
            .ok_or_else(|| crate::error::AiError::NotFound("task vanished".into()))
    }

    /// Gives the task up from this run: back to the queue, or failed with a reason.
    async fn unclaim(
        &self,
        id: Uuid,
        claim: &str,
        status: Status,
        error: Option<String>,
    ) -> crate::error::Result<()> {
        self.generator.inner.tasks.unclaim(id, claim, status, error).await?;
        Ok(())
    }

    /// `generation.completed` / `generation.failed`, under an id fixed by the task and
    /// outcome, so a repeat after a crash is recognisably the same event.
    async fn announce(&self, t: &task::Model) -> crate::error::Result<()> {
        crate::events::ended(&self.generator.inner.bus, t.user_id, t.into()).await?;
        Ok(())
    }
}

/// What to do with the delivery.
enum Step {
    Ack(Handled),
    Retry(String, Option<Duration>),
    Dead(String),
    HandBack,
}
