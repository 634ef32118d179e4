//! The bus port: events on a topic exchange (publish / subscribe, one queue per consumer
//! group) and work queues (publish with publisher confirms, manual ack, delayed retry with
//! backoff, a dead-letter queue after the last attempt, priorities). Two adapters with one
//! behaviour — [`AmqpBus`] (RabbitMQ via lapin, reconnecting by itself) and [`MemoryBus`] for
//! `skillup up` — proven alike by `tests/bus_conformance.rs`.
//!
//! Retry topology (no delayed-message plugin): for a queue `q` with delays `[d1, d2, …]` there
//! are TTL queues `q.retry.0`, `q.retry.1`, … whose messages dead-letter back into `q` when
//! their TTL runs out, and `q.dead` for messages out of attempts.

mod amqp;
mod memory;

use std::{collections::BTreeMap, pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use self::{amqp::AmqpBus, memory::MemoryBus};
use crate::Result;

/// Header carrying the 1-based delivery attempt.
pub const ATTEMPT_HEADER: &str = "x-attempt";
/// Header a dead-lettered message carries: why it gave up.
pub const DEATH_REASON_HEADER: &str = "x-death-reason";

/// A message on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique id (UUID v7 unless the producer set one); consumers deduplicate by it.
    pub id: String,
    /// The encoded body (protobuf from `skillup-proto`).
    pub payload: Bytes,
    /// String headers (trace context, attempt, death reason).
    pub headers: BTreeMap<String, String>,
    /// 0 (lowest) ..= the queue's `max_priority`.
    pub priority: u8,
}

impl Message {
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            payload: payload.into(),
            headers: BTreeMap::new(),
            priority: 0,
        }
    }

    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// The delivery attempt (1 for the first delivery).
    pub fn attempt(&self) -> u32 {
        self.headers.get(ATTEMPT_HEADER).and_then(|a| a.parse().ok()).unwrap_or(1)
    }
}

/// A durable work queue and its retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Name without the deployment prefix, e.g. "generate.long".
    pub name: String,
    /// Highest priority honoured (RabbitMQ `x-max-priority`); 0 = no priorities.
    pub max_priority: u8,
    /// Delay before each retry; attempts = delays + 1. Empty = no retry, straight to `.dead`.
    pub retry_delays: Vec<Duration>,
}

impl QueueSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), max_priority: 0, retry_delays: Vec::new() }
    }

    pub fn max_priority(mut self, p: u8) -> Self {
        self.max_priority = p;
        self
    }

    pub fn retry_delays(mut self, delays: Vec<Duration>) -> Self {
        self.retry_delays = delays;
        self
    }

    /// Exponential backoff: `base`, `base·2`, … for `retries` retries.
    pub fn exponential_backoff(mut self, base: Duration, retries: u32) -> Self {
        self.retry_delays = (0..retries).map(|i| base * 2u32.pow(i)).collect();
        self
    }

    pub fn max_attempts(&self) -> u32 {
        self.retry_delays.len() as u32 + 1
    }

    /// Which retry level to use after `attempt` failed: the attempt's own level, or a later
    /// one whose delay covers `not_before` (a provider's `retry-after`).
    pub(crate) fn retry_level(&self, attempt: u32, not_before: Option<Duration>) -> Option<usize> {
        let first = attempt.saturating_sub(1) as usize;
        if first >= self.retry_delays.len() {
            return None;
        }
        let level = match not_before {
            Some(min) => (first..self.retry_delays.len())
                .find(|&i| self.retry_delays[i] >= min)
                .unwrap_or(self.retry_delays.len() - 1),
            None => first,
        };
        Some(level)
    }
}

/// An event subscription: one queue per `group`, bound to the exchange with `patterns`
/// (`*` = one word, `#` = zero or more). Replicas of one group share the work; with
/// `per_instance` every replica gets every event (its queue is private and goes away with it).
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    pub group: String,
    pub patterns: Vec<String>,
    pub per_instance: bool,
    pub retry_delays: Vec<Duration>,
}

impl SubscriptionSpec {
    pub fn new(group: impl Into<String>, patterns: &[&str]) -> Self {
        Self {
            group: group.into(),
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            per_instance: false,
            retry_delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60),
            ],
        }
    }

    pub fn per_instance(mut self) -> Self {
        self.per_instance = true;
        self
    }

    pub fn retry_delays(mut self, delays: Vec<Duration>) -> Self {
        self.retry_delays = delays;
        self
    }
}

/// What [`Delivery::retry`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// It comes back as `attempt` after `delay`.
    Scheduled { attempt: u32, delay: Duration },
    /// Out of attempts: it is in the dead-letter queue.
    DeadLettered,
}

/// How an adapter settles one delivery (transport only: the retry policy is the port's).
#[async_trait]
pub(crate) trait Settle: Send + Sync {
    /// The queue the delivery came from.
    fn spec(&self) -> &QueueSpec;
    async fn ack(&mut self) -> Result<()>;
    async fn requeue(&mut self) -> Result<()>;
    /// Puts `next` on retry level `level` (it returns after that level's delay), then acks.
    async fn schedule_retry(&mut self, next: Message, level: usize) -> Result<()>;
    /// Puts `dead` on the dead-letter queue, then acks.
    async fn dead_letter(&mut self, dead: Message) -> Result<()>;
}

/// One message handed to a consumer. Settle it exactly once; a delivery dropped unsettled
/// (a crashed handler) comes back to the queue, as RabbitMQ does when a consumer dies.
pub struct Delivery {
    pub message: Message,
    /// True if the message was delivered before and not acknowledged.
    pub redelivered: bool,
    settle: Box<dyn Settle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

impl Delivery {
    pub(crate) fn new(message: Message, redelivered: bool, settle: Box<dyn Settle>) -> Self {
        Self { message, redelivered, settle }
    }

    pub fn attempt(&self) -> u32 {
        self.message.attempt()
    }

    /// Done: the broker forgets it.
    pub async fn ack(mut self) -> Result<()> {
        self.settle.ack().await
    }

    /// Put it back now, unchanged (a graceful stop hands work back this way).
    pub async fn requeue(mut self) -> Result<()> {
        self.settle.requeue().await
    }

    /// Failed, may succeed later: schedule the next attempt after the queue's backoff (at
    /// least `not_before`), or dead-letter it after the last attempt.
    pub async fn retry(
        mut self,
        reason: &str,
        not_before: Option<Duration>,
    ) -> Result<RetryOutcome> {
        let attempt = self.message.attempt();
        let spec = self.settle.spec();
        let Some(level) = spec.retry_level(attempt, not_before) else {
            let dead = self.message.clone().with_header(DEATH_REASON_HEADER, reason);
            self.settle.dead_letter(dead).await?;
            return Ok(RetryOutcome::DeadLettered);
        };
        let delay = spec.retry_delays[level];
        let next = self.message.clone().with_header(ATTEMPT_HEADER, (attempt + 1).to_string());
        self.settle.schedule_retry(next, level).await?;
        Ok(RetryOutcome::Scheduled { attempt: attempt + 1, delay })
    }

    /// Failed for good: straight to the dead-letter queue.
    pub async fn dead_letter(mut self, reason: &str) -> Result<()> {
        let dead = self.message.clone().with_header(DEATH_REASON_HEADER, reason);
        self.settle.dead_letter(dead).await
    }
}

/// A stream of deliveries. Dropping it stops consuming; unsettled deliveries are redelivered.
pub struct Consumer {
    inner: Pin<Box<dyn Stream<Item = Delivery> + Send>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Consumer")
    }
}

impl Consumer {
    pub(crate) fn new(inner: impl Stream<Item = Delivery> + Send + 'static) -> Self {
        Self { inner: Box::pin(inner) }
    }

    /// The next delivery; `None` once the bus is closed.
    pub async fn next(&mut self) -> Option<Delivery> {
        futures::StreamExt::next(&mut self.inner).await
    }
}

impl Stream for Consumer {
    type Item = Delivery;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Delivery>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The port.
#[async_trait]
pub trait Bus: Send + Sync + std::fmt::Debug + 'static {
    /// Creates the queue with its retry and dead-letter queues (idempotent).
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()>;
    /// Puts a message on a declared work queue; returns once the broker has it durably.
    async fn enqueue(&self, queue: &str, msg: Message) -> Result<()>;
    /// Consumes a declared work queue with at most `prefetch` unsettled deliveries.
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer>;
    /// Publishes an event on the topic exchange under `routing_key`; returns once confirmed.
    async fn publish(&self, routing_key: &str, msg: Message) -> Result<()>;
    /// Subscribes to events (declaring the group's queue and bindings).
    async fn subscribe(&self, spec: &SubscriptionSpec, prefetch: u16) -> Result<Consumer>;
    /// Messages waiting in a queue (ready, not unacknowledged) — for metrics and tests.
    async fn depth(&self, queue: &str) -> Result<u64>;
    /// Checks the broker answers (readiness).
    async fn ping(&self) -> Result<()>;
}

/// The shared handle services hold.
pub type SharedBus = Arc<dyn Bus>;

/// A readiness probe for a bus.
pub fn probe(bus: SharedBus) -> crate::Readiness {
    crate::Readiness::new().with("bus", move || {
        let bus = bus.clone();
        async move { bus.ping().await.map_err(|e| e.to_string()) }
    })
}

/// AMQP topic matching: words split on `.`, `*` matches one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(w), Some(x)) if w == x => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("order.completed", "order.completed", true)]
    #[case("order.*", "order.completed", true)]
    #[case("order.*", "order.completed.extra", false)]
    #[case("order.#", "order", true)]
    #[case("order.#", "order.a.b", true)]
    #[case("#", "anything.at.all", true)]
    #[case("*.completed", "order.completed", true)]
    #[case("*.completed", "completed", false)]
    #[case("invoice.*", "order.completed", false)]
    #[case("#.failed", "order.failed", true)]
    fn topic_patterns(#[case] pattern: &str, #[case] key: &str, #[case] want: bool) {
        assert_eq!(topic_matches(pattern, key), want, "{pattern} vs {key}");
    }

    proptest! {
        #[test]
        fn a_key_matches_itself_and_hash(key in "[a-z]{1,5}(\\.[a-z]{1,5}){0,4}") {
            prop_assert!(topic_matches(&key, &key));
            prop_assert!(topic_matches("#", &key));
        }
    }

    #[test]
    fn retry_levels_follow_attempts_and_retry_after() {
        let spec = QueueSpec::new("q").retry_delays(vec![
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(30),
        ]);
        assert_eq!(spec.max_attempts(), 4);
        assert_eq!(spec.retry_level(1, None), Some(0));
        assert_eq!(spec.retry_level(3, None), Some(2));
        assert_eq!(spec.retry_level(4, None), None, "out of attempts");
        assert_eq!(
            spec.retry_level(1, Some(Duration::from_secs(4))),
            Some(1),
            "retry-after honoured"
        );
        assert_eq!(
            spec.retry_level(1, Some(Duration::from_secs(600))),
            Some(2),
            "capped at the last level"
        );
        let exp = QueueSpec::new("q").exponential_backoff(Duration::from_millis(100), 3);
        assert_eq!(
            exp.retry_delays,
            vec![
                Duration::from_millis(100),
                Duration::from_millis(200),
                Duration::from_millis(400)
            ]
        );
    }
}
