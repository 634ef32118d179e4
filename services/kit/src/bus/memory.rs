//! In-process bus for `skillup up`: the same semantics as the RabbitMQ adapter (priorities,
//! manual ack, redelivery of unsettled messages, delayed retry, dead letters, topic routing)
//! within one process. Not durable across restarts — `skillup serve` refuses it.

use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashMap},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{Bus, Consumer, Delivery, Message, QueueSpec, Settle, SubscriptionSpec, topic_matches};
use crate::{Error, Result};

#[derive(Debug)]
struct Pending {
    priority: u8,
    seq: u64,
    message: Message,
    redelivered: bool,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    // Max-heap: higher priority first, then lower sequence (FIFO within a priority).
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.cmp(&other.priority).then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Debug)]
struct Queue {
    spec: QueueSpec,
    heap: Mutex<(BinaryHeap<Pending>, u64)>,
    notify: Notify,
    /// Messages waiting out each retry level's delay (what `<q>.retry.N` holds on RabbitMQ).
    retrying: Vec<std::sync::atomic::AtomicU64>,
}

impl Queue {
    fn new(spec: QueueSpec) -> Arc<Self> {
        let retrying = spec.retry_delays.iter().map(|_| Default::default()).collect();
        Arc::new(Self {
            spec,
            heap: Mutex::new((BinaryHeap::new(), 0)),
            notify: Notify::new(),
            retrying,
        })
    }

    fn push(&self, message: Message, redelivered: bool) {
        {
            let mut guard = self.heap.lock().unwrap_or_else(|p| p.into_inner());
            let (heap, seq) = &mut *guard;
            *seq += 1;
            let priority = message.priority.min(self.spec.max_priority);
            heap.push(Pending { priority, seq: *seq, message, redelivered });
        }
        self.notify.notify_waiters();
    }

    fn pop(&self) -> Option<Pending> {
        self.heap.lock().unwrap_or_else(|p| p.into_inner()).0.pop()
    }

    fn len(&self) -> usize {
        self.heap.lock().unwrap_or_else(|p| p.into_inner()).0.len()
    }
}

#[derive(Debug, Default)]
struct Inner {
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    bindings: Mutex<Vec<(String, String)>>,
}

impl Inner {
    fn queue(&self, name: &str) -> Result<Arc<Queue>> {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Bus(format!("queue {name} is not declared")))
    }

    fn declare(&self, spec: &QueueSpec) -> Arc<Queue> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let dead = format!("{}.dead", spec.name);
        queues.entry(dead.clone()).or_insert_with(|| Queue::new(QueueSpec::new(dead)));
        queues.entry(spec.name.clone()).or_insert_with(|| Queue::new(spec.clone())).clone()
    }
}

/// The in-process adapter. Cloning shares the queues.
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn consumer(
        &self,
        queue: Arc<Queue>,
        prefetch: u16,
        on_drop: Option<Box<dyn FnOnce() + Send>>,
    ) -> Consumer {
        let permits = Arc::new(Semaphore::new(prefetch.max(1) as usize));
        let state = (self.inner.clone(), queue, permits, DropGuard(on_drop));
        Consumer::new(futures::stream::unfold(state, |(inner, queue, permits, guard)| async move {
            let permit = permits.clone().acquire_owned().await.ok()?;
            let pending = loop {
                let notified = queue.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(p) = queue.pop() {
                    break p;
                }
                notified.await;
            };
            let settle = MemSettle {
                inner: inner.clone(),
                queue: queue.clone(),
                _permit: permit,
                pending: Some(pending.message.clone()),
            };
            let delivery = Delivery::new(pending.message, pending.redelivered, Box::new(settle));
            Some((delivery, (inner, queue, permits, guard)))
        }))
    }
}

struct DropGuard(Option<Box<dyn FnOnce() + Send>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

struct MemSettle {
    inner: Arc<Inner>,
    queue: Arc<Queue>,
    _permit: OwnedSemaphorePermit,
    /// Still unsettled: put back on drop.
    pending: Option<Message>,
}

impl Drop for MemSettle {
    fn drop(&mut self) {
        if let Some(msg) = self.pending.take() {
            self.queue.push(msg, true);
        }
    }
}

#[async_trait]
impl Settle for MemSettle {
    fn spec(&self) -> &QueueSpec {
        &self.queue.spec
    }

    async fn ack(&mut self) -> Result<()> {
        self.pending = None;
        Ok(())
    }

    async fn requeue(&mut self) -> Result<()> {
        if let Some(msg) = self.pending.take() {
            self.queue.push(msg, true);
        }
        Ok(())
    }

    async fn schedule_retry(&mut self, next: Message, level: usize) -> Result<()> {
        let delay = self.queue.spec.retry_delays[level];
        self.pending = None;
        let queue = self.queue.clone();
        queue.retrying[level].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.retrying[level].fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            queue.push(next, false);
        });
        Ok(())
    }

    async fn dead_letter(&mut self, dead: Message) -> Result<()> {
        let queue = self.inner.queue(&format!("{}.dead", self.queue.spec.name))?;
        queue.push(dead, false);
        self.pending = None;
        Ok(())
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        self.inner.declare(spec);
        Ok(())
    }

    async fn enqueue(&self, queue: &str, mut msg: Message) -> Result<()> {
        crate::telemetry::inject_headers(&mut msg.headers);
        self.inner.queue(queue)?.push(msg, false);
        Ok(())
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer> {
        let q = self.inner.queue(queue)?;
        Ok(self.consumer(q, prefetch, None))
    }

    async fn publish(&self, routing_key: &str, mut msg: Message) -> Result<()> {
        crate::telemetry::inject_headers(&mut msg.headers);
        let targets: Vec<String> = self
            .inner
            .bindings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(pattern, _)| topic_matches(pattern, routing_key))
            .map(|(_, q)| q.clone())
            .collect();
        let mut seen = std::collections::HashSet::new();
        for q in targets.into_iter().filter(|q| seen.insert(q.clone())) {
            if let Ok(queue) = self.inner.queue(&q) {
                queue.push(msg.clone().with_header("x-routing-key", routing_key), false);
            }
        }
        Ok(())
    }

    async fn subscribe(&self, spec: &SubscriptionSpec, prefetch: u16) -> Result<Consumer> {
        let name = if spec.per_instance {
            format!("events.{}.{}", spec.group, uuid::Uuid::new_v4().simple())
        } else {
            format!("events.{}", spec.group)
        };
        let queue =
            self.inner.declare(&QueueSpec::new(&name).retry_delays(spec.retry_delays.clone()));
        {
            let mut b = self.inner.bindings.lock().unwrap_or_else(|p| p.into_inner());
            for p in &spec.patterns {
                if !b.iter().any(|(bp, bq)| bp == p && *bq == name) {
                    b.push((p.clone(), name.clone()));
                }
            }
        }
        let on_drop: Option<Box<dyn FnOnce() + Send>> = if spec.per_instance {
            let inner = self.inner.clone();
            Some(Box::new(move || {
                inner
                    .bindings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|(_, q)| *q != name);
                let mut queues = inner.queues.lock().unwrap_or_else(|p| p.into_inner());
                queues.remove(&name);
                queues.remove(&format!("{name}.dead"));
            }))
        } else {
            None
        };
        Ok(self.consumer(queue, prefetch, on_drop))
    }

    async fn depth(&self, queue: &str) -> Result<u64> {
        // `<q>.retry.N`: the messages waiting out level N's delay.
        if let Some((base, level)) = queue.rsplit_once(".retry.")
            && let Ok(level) = level.parse::<usize>()
            && let Ok(q) = self.inner.queue(base)
            && let Some(n) = q.retrying.get(level)
        {
            return Ok(n.load(std::sync::atomic::Ordering::SeqCst));
        }
        Ok(self.inner.queue(queue)?.len() as u64)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
