//! RabbitMQ adapter (lapin). It keeps one connection and one confirm-mode publishing channel,
//! and rebuilds them on demand after the broker closes them or restarts (lapin's own recovery
//! is not relied on). Each consumer runs a supervisor task that reopens its channel,
//! re-declares its topology and resumes consuming after any disconnect.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Bus, Consumer, Delivery, Message, QueueSpec, Settle, SubscriptionSpec};
use crate::{Error, Result};

/// What a consumer consumes, with everything needed to re-declare it after a reconnect.
#[derive(Debug, Clone)]
struct Source {
    spec: QueueSpec,
    bindings: Vec<String>,
    transient: bool,
}

#[derive(Debug)]
struct Inner {
    url: String,
    exchange: String,
    prefix: String,
    publish_timeout: Duration,
    conn: Mutex<Option<Arc<Connection>>>,
    publisher: Mutex<Option<Channel>>,
    specs: std::sync::Mutex<HashMap<String, QueueSpec>>,
    closed: CancellationToken,
    /// Milliseconds after which a queue nobody uses is deleted by the broker (0: never).
    idle_queue_expiry_ms: std::sync::atomic::AtomicU64,
}

/// The RabbitMQ adapter. Cloning shares the connection.
#[derive(Debug, Clone)]
pub struct AmqpBus {
    inner: Arc<Inner>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl AmqpBus {
    /// Lets the broker delete every queue this bus declares once nobody has used it for
    /// `after` (RabbitMQ's `x-expires`). For tests, whose queues have names of their own and
    /// would otherwise pile up in the broker (thousands of durable queues make every broker
    /// restart slow). Set it before the first queue is declared.
    pub fn expire_idle_queues(self, after: Duration) -> Self {
        let ms = after.as_millis().max(1) as u64;
        self.inner.idle_queue_expiry_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Connects (so a wrong URL fails at start) and declares the event exchange. Every queue
    /// name gets `queue_prefix` in front.
    pub async fn connect(
        url: &str,
        exchange: impl Into<String>,
        queue_prefix: impl Into<String>,
        publish_timeout: Duration,
    ) -> Result<Self> {
        let bus = Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                exchange: exchange.into(),
                prefix: queue_prefix.into(),
                publish_timeout,
                conn: Mutex::new(None),
                publisher: Mutex::new(None),
                specs: std::sync::Mutex::new(HashMap::new()),
                closed: CancellationToken::new(),
                idle_queue_expiry_ms: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        bus.inner.publisher().await?;
        Ok(bus)
    }

    /// Stops every consumer of this bus and closes the connection.
    pub async fn close(&self) {
        self.inner.closed.cancel();
        if let Some(conn) = self.inner.conn.lock().await.take() {
            let _ = conn.close(200, "bye".into()).await;
        }
    }
}

impl Inner {
    fn name(&self, queue: &str) -> String {
        format!("{}{queue}", self.prefix)
    }

    async fn connection(&self) -> Result<Arc<Connection>> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref()
            && conn.status().connected()
        {
            return Ok(conn.clone());
        }
        let props = ConnectionProperties::default().with_connection_name("skillup".into());
        let conn = Arc::new(
            tokio::time::timeout(Duration::from_secs(5), Connection::connect(&self.url, props))
                .await
                .map_err(|_| Error::Bus("connecting to the broker timed out".into()))??,
        );
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn publisher(&self) -> Result<Channel> {
        let mut guard = self.publisher.lock().await;
        if let Some(ch) = guard.as_ref()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let conn = self.connection().await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        self.declare_exchange(&ch).await?;
        *guard = Some(ch.clone());
        Ok(ch)
    }

    /// The durable topic exchange events go through.
    async fn declare_exchange(&self, ch: &Channel) -> Result<()> {
        ch.exchange_declare(
            self.exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
        Ok(())
    }

    async fn drop_publisher(&self) {
        *self.publisher.lock().await = None;
    }

    /// Declares a queue with its retry and dead-letter queues on `ch`. `name` is full.
    async fn declare_topology(
        &self,
        ch: &Channel,
        spec: &QueueSpec,
        transient: bool,
    ) -> Result<()> {
        let name = self.name(&spec.name);
        // A per-instance queue outlives a reconnect, but not its instance; a bus told to
        // (tests: `AmqpBus::expire_idle_queues`) lets the broker delete every idle queue.
        let idle = self.idle_queue_expiry_ms.load(std::sync::atomic::Ordering::Relaxed) as i64;
        let expires = |extra: i64| match (transient, idle) {
            (true, _) => Some(60_000 + extra),
            (false, 0) => None,
            (false, ms) => Some(ms + extra),
        };
        let mut args = FieldTable::default();
        if spec.max_priority > 0 {
            args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(spec.max_priority));
        }
        if let Some(ms) = expires(0) {
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
        }
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            args,
        )
        .await?;
        for (i, delay) in spec.retry_delays.iter().enumerate() {
            let mut args = FieldTable::default();
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay.as_millis() as i64));
            args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(name.as_str().into()),
            );
            if let Some(ms) = expires(delay.as_millis() as i64) {
                args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
            }
            ch.queue_declare(
                retry_queue_name(&name, i, *delay).into(),
                QueueDeclareOptions { durable: true, ..Default::default() },
                args,
            )
            .await?;
        }
        let mut dead_args = FieldTable::default();
        if let Some(ms) = expires(0) {
            dead_args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
        }
        ch.queue_declare(
            format!("{name}.dead").into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            dead_args,
        )
        .await?;
        Ok(())
    }

    /// Publishes and waits for the broker's confirm, reconnecting and retrying until
    /// `publish_timeout`. With `spec`, an unroutable message re-declares the queue and retries
    /// (the broker may have been reset), so a confirmed enqueue is never silently dropped.
    async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        msg: &Message,
        spec: Option<&QueueSpec>,
    ) -> Result<()> {
        let deadline = Instant::now() + self.publish_timeout;
        let mut backoff = Duration::from_millis(50);
        let mut last_error = String::from("no attempt made");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Bus(format!(
                    "publish to {routing_key} not confirmed: {last_error}"
                )));
            }
            let attempt = async {
                let ch = self.publisher().await?;
                let confirm = ch
                    .basic_publish(
                        exchange.into(),
                        routing_key.into(),
                        BasicPublishOptions { mandatory: spec.is_some(), ..Default::default() },
                        &msg.payload,
                        properties(msg),
                    )
                    .await?;
                Ok::<_, Error>((ch, confirm.await?))
            };
            match tokio::time::timeout(remaining, attempt).await {
                Ok(Ok((_, Confirmation::Ack(None) | Confirmation::NotRequested))) => return Ok(()),
                Ok(Ok((ch, Confirmation::Ack(Some(_))))) => {
                    last_error = "unroutable".into();
                    match spec {
                        Some(spec) => {
                            tracing::warn!(queue = %routing_key, "queue missing on the broker, declaring it again");
                            if let Err(e) = self.declare_topology(&ch, spec, false).await {
                                last_error = e.to_string();
                                self.drop_publisher().await;
                            }
                        }
                        None => return Err(Error::Bus(format!("{routing_key} is unroutable"))),
                    }
                }
                Ok(Ok((_, Confirmation::Nack(_)))) => {
                    last_error = "broker refused the message (nack)".into();
                }
                Ok(Err(e)) => {
                    last_error = e.to_string();
                    tracing::debug!(error = %e, "publish failed, reconnecting");
                    self.drop_publisher().await;
                }
                Err(_) => {
                    return Err(Error::Bus(format!(
                        "publish to {routing_key} not confirmed in time: {last_error}"
                    )));
                }
            }
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Opens a channel, declares `source` and starts consuming it.
    async fn open_consumer(
        &self,
        source: &Source,
        prefetch: u16,
    ) -> Result<(Channel, lapin::Consumer)> {
        let conn = self.connection().await?;
        let ch = conn.create_channel().await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        self.declare_source(&ch, source).await?;
        let name = self.name(&source.spec.name);
        let consumer = ch
            .basic_consume(
                name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((ch, consumer))
    }

    /// Declares a source's queues and bindings.
    async fn declare_source(&self, ch: &Channel, source: &Source) -> Result<()> {
        self.declare_topology(ch, &source.spec, source.transient).await?;
        let name = self.name(&source.spec.name);
        if !source.bindings.is_empty() {
            self.declare_exchange(ch).await?;
        }
        for pattern in &source.bindings {
            ch.queue_bind(
                name.as_str().into(),
                self.exchange.as_str().into(),
                pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    }
}

fn properties(msg: &Message) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (k, v) in &msg.headers {
        headers.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_priority(msg.priority)
        .with_message_id(msg.id.as_str().into())
        .with_headers(headers)
}

fn from_delivery(d: &lapin::message::Delivery) -> Message {
    let mut headers = BTreeMap::new();
    if let Some(table) = d.properties.headers() {
        for (k, v) in table.inner() {
            let value = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                AMQPValue::LongInt(n) => n.to_string(),
                _ => continue,
            };
            headers.insert(k.as_str().to_owned(), value);
        }
    }
    Message {
        id: d.properties.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        payload: d.data.clone().into(),
        headers,
        priority: d.properties.priority().unwrap_or(0),
    }
}

struct AmqpSettle {
    bus: Arc<Inner>,
    spec: QueueSpec,
    acker: Option<Acker>,
}

impl AmqpSettle {
    async fn ack_now(&mut self) -> Result<()> {
        if let Some(acker) = self.acker.take() {
            acker.ack(BasicAckOptions::default()).await?;
        }
        Ok(())
    }
}

impl Drop for AmqpSettle {
    fn drop(&mut self) {
        // Unsettled (the handler gave up or panicked): hand it back now rather than when the
        // channel closes.
        if let Some(acker) = self.acker.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
            });
        }
    }
}

#[async_trait]
impl Settle for AmqpSettle {
    fn spec(&self) -> &QueueSpec {
        &self.spec
    }

    async fn ack(&mut self) -> Result<()> {
        self.ack_now().await
    }

    async fn requeue(&mut self) -> Result<()> {
        if let Some(acker) = self.acker.take() {
            acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
        }
        Ok(())
    }

    async fn schedule_retry(&mut self, next: Message, level: usize) -> Result<()> {
        // The retry copy is confirmed before the original is acked: a crash in between means
        // one extra attempt, never a lost message.
        let delay = self.spec.retry_delays.get(level).copied().unwrap_or_default();
        let retry_queue = retry_queue_name(&self.bus.name(&self.spec.name), level, delay);
        self.bus.publish_confirmed("", &retry_queue, &next, None).await?;
        self.ack_now().await
    }

    async fn dead_letter(&mut self, dead: Message) -> Result<()> {
        let dead_queue = format!("{}.dead", self.bus.name(&self.spec.name));
        self.bus.publish_confirmed("", &dead_queue, &dead, None).await?;
        self.ack_now().await
    }
}

impl AmqpBus {
    fn spawn_consumer(&self, source: Source, prefetch: u16) -> Consumer {
        let (tx, rx) = mpsc::channel::<Delivery>(1);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                if tx.is_closed() || inner.closed.is_cancelled() {
                    return;
                }
                match inner.open_consumer(&source, prefetch).await {
                    Ok((ch, mut consumer)) => {
                        backoff = Duration::from_millis(100);
                        tracing::debug!(queue = %source.spec.name, "consuming");
                        loop {
                            tokio::select! {
                                next = consumer.next() => match next {
                                    Some(Ok(d)) => {
                                        let message = from_delivery(&d);
                                        let settle = AmqpSettle { bus: inner.clone(), spec: source.spec.clone(), acker: Some(d.acker) };
                                        let delivery = Delivery::new(message, d.redelivered, Box::new(settle));
                                        if tx.send(delivery).await.is_err() {
                                            let _ = ch.close(200, "consumer dropped".into()).await;
                                            return;
                                        }
                                    }
                                    Some(Err(e)) => {
                                        tracing::warn!(queue = %source.spec.name, error = %e, "consumer lost its channel, resuming");
                                        break;
                                    }
                                    None => {
                                        tracing::warn!(queue = %source.spec.name, "consumer cancelled by the broker, resuming");
                                        break;
                                    }
                                },
                                _ = tx.closed() => {
                                    let _ = ch.close(200, "consumer dropped".into()).await;
                                    return;
                                }
                                _ = inner.closed.cancelled() => {
                                    let _ = ch.close(200, "bus closed".into()).await;
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(queue = %source.spec.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot consume yet");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tx.closed() => return,
                    _ = inner.closed.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        Consumer::new(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    fn spec(&self, queue: &str) -> Result<QueueSpec> {
        self.inner
            .specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .cloned()
            .ok_or_else(|| Error::Bus(format!("queue {queue} is not declared")))
    }
}

#[async_trait]
impl Bus for AmqpBus {
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        let ch = self.inner.connection().await?.create_channel().await?;
        self.inner.declare_topology(&ch, spec, false).await?;
        let _ = ch.close(200, "declared".into()).await;
        let mut specs = self.inner.specs.lock().unwrap_or_else(|p| p.into_inner());
        specs.insert(spec.name.clone(), spec.clone());
        // The dead-letter queue can be consumed (inspected, requeued from) like any other.
        let dead = format!("{}.dead", spec.name);
        specs.entry(dead.clone()).or_insert_with(|| QueueSpec::new(dead));
        Ok(())
    }

    async fn enqueue(&self, queue: &str, mut msg: Message) -> Result<()> {
        crate::telemetry::inject_headers(&mut msg.headers);
        let spec = self.spec(queue)?;
        self.inner.publish_confirmed("", &self.inner.name(queue), &msg, Some(&spec)).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer> {
        let spec = self.spec(queue)?;
        Ok(self.spawn_consumer(Source { spec, bindings: Vec::new(), transient: false }, prefetch))
    }

    async fn publish(&self, routing_key: &str, mut msg: Message) -> Result<()> {
        crate::telemetry::inject_headers(&mut msg.headers);
        let msg = msg.with_header("x-routing-key", routing_key);
        let exchange = self.inner.exchange.clone();
        self.inner.publish_confirmed(&exchange, routing_key, &msg, None).await
    }

    async fn subscribe(&self, spec: &SubscriptionSpec, prefetch: u16) -> Result<Consumer> {
        let name = if spec.per_instance {
            format!("events.{}.{}", spec.group, uuid::Uuid::new_v4().simple())
        } else {
            format!("events.{}", spec.group)
        };
        let source = Source {
            spec: QueueSpec::new(name).retry_delays(spec.retry_delays.clone()),
            bindings: spec.patterns.clone(),
            transient: spec.per_instance,
        };
        // Declare and bind before returning, so an event published right after is routed.
        let ch = self.inner.connection().await?.create_channel().await?;
        self.inner.declare_source(&ch, &source).await?;
        let _ = ch.close(200, "declared".into()).await;
        Ok(self.spawn_consumer(source, prefetch))
    }

    async fn depth(&self, queue: &str) -> Result<u64> {
        // `<q>.retry.N` is level N of `<q>`: its queue is named by its delay as well.
        let mut physical = self.inner.name(queue);
        if let Some((base, level)) = queue.rsplit_once(".retry.")
            && let Ok(level) = level.parse::<usize>()
            && let Ok(spec) = self.spec(base)
            && let Some(delay) = spec.retry_delays.get(level)
        {
            physical = retry_queue_name(&self.inner.name(base), level, *delay);
        }
        let ch = self.inner.connection().await?.create_channel().await?;
        let q = ch
            .queue_declare(
                physical.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        let _ = ch.close(200, "depth".into()).await;
        Ok(q.message_count() as u64)
    }

    async fn ping(&self) -> Result<()> {
        self.inner.publisher().await.map(|_| ())
    }
}

/// A retry level's queue: `<queue>.retry.<level>.<delay>ms`. Its delay is in its name because
/// RabbitMQ cannot change a declared queue's `x-message-ttl` (a redeclare with another one
/// fails, `PRECONDITION_FAILED`): a changed backoff declares new queues instead, and the old
/// ones drain by themselves — their messages still expire into the work queue after the old
/// delay — so nothing waiting is lost. An old, empty one can be deleted at leisure
/// (`rabbitmqctl delete_queue <name> --if-empty`).
fn retry_queue_name(queue: &str, level: usize, delay: Duration) -> String {
    format!("{queue}.retry.{level}.{}ms", delay.as_millis())
}
