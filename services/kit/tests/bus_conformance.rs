//! The bus port's behaviour, run against both adapters: the real RabbitMQ of this machine
//! (`AMQP_URL`) and the in-process bus. Each case is generated once per adapter. The broker
//! fault cases (connections closed, broker restarted) disturb every client of the broker, so
//! they are `#[ignore]`d here and run serially by `scripts/test` (see docs/testing.md).

use std::{sync::Arc, time::Duration};

use skillup_kit::bus::{
    DEATH_REASON_HEADER, MemoryBus, Message, QueueSpec, RetryOutcome, SharedBus, SubscriptionSpec,
};
use skillup_testkit as testing;
use tokio::time::{Instant, timeout};

async fn amqp() -> SharedBus {
    Arc::new(testing::amqp_bus().await)
}

async fn memory() -> SharedBus {
    Arc::new(MemoryBus::new())
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod amqp_adapter {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::amqp().await).await })*
        }
        mod memory_adapter {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::memory().await).await })*
        }
    };
}

conformance!(
    confirmed_enqueue_is_in_the_queue_then_acked_away,
    higher_priority_first,
    unacked_message_is_redelivered_when_its_consumer_dies,
    requeue_hands_it_back,
    retries_back_off_then_dead_letter,
    retry_after_picks_a_longer_delay,
    dead_letter_at_once,
    prefetch_bounds_unsettled_deliveries,
    events_reach_every_group_once,
    a_group_shares_its_events,
    enqueue_to_an_undeclared_queue_is_refused,
);

const WAIT: Duration = Duration::from_secs(10);

async fn next(c: &mut skillup_kit::bus::Consumer) -> skillup_kit::bus::Delivery {
    timeout(WAIT, c.next()).await.expect("a delivery in time").expect("consumer open")
}

async fn nothing_for(c: &mut skillup_kit::bus::Consumer, d: Duration) {
    if let Ok(Some(del)) = timeout(d, c.next()).await {
        panic!("unexpected delivery {:?}", del.message);
    }
}

async fn confirmed_enqueue_is_in_the_queue_then_acked_away(bus: SharedBus) {
    bus.declare_queue(&QueueSpec::new("work")).await.unwrap();
    let msg = Message::new(&b"hello"[..]).with_header("traceparent", "00-abc-def-01");
    bus.enqueue("work", msg.clone()).await.unwrap();
    // Confirm-before-return: once enqueue returns the broker holds it.
    assert_eq!(bus.depth("work").await.unwrap(), 1);
    let mut c = bus.consume("work", 4).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.message.id, msg.id);
    assert_eq!(&d.message.payload[..], b"hello");
    assert_eq!(d.message.headers.get("traceparent").map(String::as_str), Some("00-abc-def-01"));
    assert_eq!(d.attempt(), 1);
    assert!(!d.redelivered);
    d.ack().await.unwrap();
    nothing_for(&mut c, Duration::from_millis(300)).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bus.depth("work").await.unwrap(), 0, "acked means gone");
}

async fn higher_priority_first(bus: SharedBus) {
    bus.declare_queue(&QueueSpec::new("prio").max_priority(9)).await.unwrap();
    for (p, body) in [(0u8, "low"), (1, "mid"), (9, "high"), (0, "low2")] {
        bus.enqueue("prio", Message::new(body.as_bytes().to_vec()).with_priority(p)).await.unwrap();
    }
    let mut c = bus.consume("prio", 1).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        let d = next(&mut c).await;
        order.push(String::from_utf8(d.message.payload.to_vec()).unwrap());
        d.ack().await.unwrap();
    }
    assert_eq!(order, ["high", "mid", "low", "low2"]);
}

async fn unacked_message_is_redelivered_when_its_consumer_dies(bus: SharedBus) {
    bus.declare_queue(&QueueSpec::new("crash")).await.unwrap();
    bus.enqueue("crash", Message::new(&b"job"[..])).await.unwrap();
    let mut c = bus.consume("crash", 1).await.unwrap();
    let d = next(&mut c).await;
    let id = d.message.id.clone();
    // The handler dies holding the delivery, and its consumer with it.
    drop(d);
    drop(c);
    let mut c2 = bus.consume("crash", 1).await.unwrap();
    let again = next(&mut c2).await;
    assert_eq!(again.message.id, id);
    assert!(again.redelivered, "the broker says it was delivered before");
    again.ack().await.unwrap();
}

async fn requeue_hands_it_back(bus: SharedBus) {
    bus.declare_queue(&QueueSpec::new("requeue")).await.unwrap();
    bus.enqueue("requeue", Message::new(&b"x"[..])).await.unwrap();
    let mut c = bus.consume("requeue", 1).await.unwrap();
    next(&mut c).await.requeue().await.unwrap();
    let d = next(&mut c).await;
    assert!(d.redelivered);
    assert_eq!(d.attempt(), 1, "a requeue is not a failed attempt");
    d.ack().await.unwrap();
}

async fn retries_back_off_then_dead_letter(bus: SharedBus) {
    let spec = QueueSpec::new("flaky")
        .retry_delays(vec![Duration::from_millis(300), Duration::from_millis(600)]);
    bus.declare_queue(&spec).await.unwrap();
    bus.enqueue("flaky", Message::new(&b"job"[..])).await.unwrap();
    let mut c = bus.consume("flaky", 1).await.unwrap();

    let d = next(&mut c).await;
    assert_eq!(d.attempt(), 1);
    let failed_at = Instant::now();
    let out = d.retry("provider 503", None).await.unwrap();
    assert_eq!(out, RetryOutcome::Scheduled { attempt: 2, delay: Duration::from_millis(300) });

    let d = next(&mut c).await;
    let waited = failed_at.elapsed();
    assert!(waited >= Duration::from_millis(280), "first retry waited {waited:?}");
    assert_eq!(d.attempt(), 2);
    let failed_at = Instant::now();
    assert_eq!(
        d.retry("provider 503", None).await.unwrap(),
        RetryOutcome::Scheduled { attempt: 3, delay: Duration::from_millis(600) }
    );

    let d = next(&mut c).await;
    let waited = failed_at.elapsed();
    assert!(waited >= Duration::from_millis(580), "second retry waited {waited:?} (backoff grows)");
    assert_eq!(d.attempt(), 3);
    let id = d.message.id.clone();
    assert_eq!(d.retry("provider 503", None).await.unwrap(), RetryOutcome::DeadLettered);

    nothing_for(&mut c, Duration::from_millis(900)).await;
    let mut dead = bus.consume("flaky.dead", 1).await.unwrap();
    let d = next(&mut dead).await;
    assert_eq!(d.message.id, id);
    assert_eq!(
        d.message.headers.get(DEATH_REASON_HEADER).map(String::as_str),
        Some("provider 503")
    );
    assert_eq!(d.attempt(), 3);
    d.ack().await.unwrap();
}

async fn retry_after_picks_a_longer_delay(bus: SharedBus) {
    let spec = QueueSpec::new("ratelimited")
        .retry_delays(vec![Duration::from_millis(100), Duration::from_millis(700)]);
    bus.declare_queue(&spec).await.unwrap();
    bus.enqueue("ratelimited", Message::new(&b"job"[..])).await.unwrap();
    let mut c = bus.consume("ratelimited", 1).await.unwrap();
    let d = next(&mut c).await;
    let at = Instant::now();
    let out = d.retry("429", Some(Duration::from_millis(500))).await.unwrap();
    assert_eq!(out, RetryOutcome::Scheduled { attempt: 2, delay: Duration::from_millis(700) });
    let d = next(&mut c).await;
    assert!(at.elapsed() >= Duration::from_millis(650), "honoured retry-after: {:?}", at.elapsed());
    d.ack().await.unwrap();
}

async fn dead_letter_at_once(bus: SharedBus) {
    let spec = QueueSpec::new("policy").exponential_backoff(Duration::from_millis(100), 3);
    bus.declare_queue(&spec).await.unwrap();
    bus.enqueue("policy", Message::new(&b"bad"[..])).await.unwrap();
    let mut c = bus.consume("policy", 1).await.unwrap();
    next(&mut c).await.dead_letter("content policy").await.unwrap();
    nothing_for(&mut c, Duration::from_millis(400)).await;
    let mut dead = bus.consume("policy.dead", 1).await.unwrap();
    let d = next(&mut dead).await;
    assert_eq!(
        d.message.headers.get(DEATH_REASON_HEADER).map(String::as_str),
        Some("content policy")
    );
    d.ack().await.unwrap();
}

async fn prefetch_bounds_unsettled_deliveries(bus: SharedBus) {
    bus.declare_queue(&QueueSpec::new("prefetch")).await.unwrap();
    for i in 0..3 {
        bus.enqueue("prefetch", Message::new(format!("{i}").into_bytes())).await.unwrap();
    }
    let mut c = bus.consume("prefetch", 2).await.unwrap();
    let a = next(&mut c).await;
    let b = next(&mut c).await;
    nothing_for(&mut c, Duration::from_millis(400)).await;
    a.ack().await.unwrap();
    let third = next(&mut c).await;
    b.ack().await.unwrap();
    third.ack().await.unwrap();
}

async fn events_reach_every_group_once(bus: SharedBus) {
    let mut notif = bus
        .subscribe(&SubscriptionSpec::new("notification", &["order.*", "invoice.#"]), 8)
        .await
        .unwrap();
    let mut billing =
        bus.subscribe(&SubscriptionSpec::new("billing", &["invoice.succeeded"]), 8).await.unwrap();
    let mut edge = bus
        .subscribe(&SubscriptionSpec::new("edge", &["session.ended"]).per_instance(), 8)
        .await
        .unwrap();

    bus.publish("order.completed", Message::new(&b"g"[..])).await.unwrap();
    bus.publish("invoice.succeeded", Message::new(&b"p"[..])).await.unwrap();
    bus.publish("session.ended", Message::new(&b"t"[..])).await.unwrap();
    bus.publish("nobody.listens", Message::new(&b"n"[..])).await.unwrap();

    let mut got = Vec::new();
    for _ in 0..2 {
        let d = next(&mut notif).await;
        got.push(d.message.headers.get("x-routing-key").cloned().unwrap());
        d.ack().await.unwrap();
    }
    got.sort();
    assert_eq!(got, ["invoice.succeeded", "order.completed"]);
    let d = next(&mut billing).await;
    assert_eq!(&d.message.payload[..], b"p");
    d.ack().await.unwrap();
    let d = next(&mut edge).await;
    assert_eq!(&d.message.payload[..], b"t");
    d.ack().await.unwrap();
    nothing_for(&mut notif, Duration::from_millis(300)).await;
    nothing_for(&mut billing, Duration::from_millis(100)).await;
    nothing_for(&mut edge, Duration::from_millis(100)).await;
}

async fn a_group_shares_its_events(bus: SharedBus) {
    let spec = SubscriptionSpec::new("workers", &["job.*"]);
    let mut a = bus.subscribe(&spec, 1).await.unwrap();
    let mut b = bus.subscribe(&spec, 1).await.unwrap();
    for i in 0..10 {
        bus.publish("job.created", Message::new(format!("{i}").into_bytes())).await.unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0;
    while total < 10 {
        let d = tokio::select! {
            Some(d) = a.next() => d,
            Some(d) = b.next() => d,
            _ = tokio::time::sleep(WAIT) => panic!("only {total} of 10 events arrived"),
        };
        assert!(seen.insert(d.message.id.clone()), "duplicate delivery");
        d.ack().await.unwrap();
        total += 1;
    }
    nothing_for(&mut a, Duration::from_millis(300)).await;
}

async fn enqueue_to_an_undeclared_queue_is_refused(bus: SharedBus) {
    assert!(bus.enqueue("never-declared", Message::new(&b"x"[..])).await.is_err());
}

// ---- broker faults (RabbitMQ only; run serially by scripts/test) ----

fn rabbitmqctl(args: &[&str]) {
    let out =
        std::process::Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

async fn resumes_after(fault: impl FnOnce()) {
    let bus = amqp().await;
    let spec = QueueSpec::new("survivor").max_priority(5);
    bus.declare_queue(&spec).await.unwrap();
    let mut c = bus.consume("survivor", 4).await.unwrap();
    bus.enqueue("survivor", Message::new(&b"before"[..])).await.unwrap();
    next(&mut c).await.ack().await.unwrap();
    let mut events =
        bus.subscribe(&SubscriptionSpec::new("survivors", &["still.*"]), 4).await.unwrap();

    fault();

    // Publisher and consumers come back by themselves.
    let sent = Message::new(&b"after"[..]);
    bus.enqueue("survivor", sent.clone()).await.expect("enqueue after the fault is confirmed");
    let d = timeout(Duration::from_secs(30), c.next()).await.expect("consumer resumed").unwrap();
    assert_eq!(d.message.id, sent.id);
    d.ack().await.unwrap();
    // Event bindings are durable and the subscriber resumed too. Publish until it arrives:
    // the subscriber may still be reconnecting, and an event published before its queue is
    // bound again would be lost by design (events are not work).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        bus.publish("still.here", Message::new(&b"e"[..])).await.unwrap();
        if let Ok(Some(d)) = timeout(Duration::from_millis(500), events.next()).await {
            d.ack().await.unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "subscriber never resumed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "closes every broker connection: run serially (scripts/test)"]
async fn amqp_resumes_after_close_all_connections() {
    resumes_after(|| rabbitmqctl(&["close_all_connections", "conformance test"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the broker: run serially (scripts/test)"]
async fn amqp_resumes_after_broker_restart() {
    resumes_after(|| {
        rabbitmqctl(&["stop_app"]);
        rabbitmqctl(&["start_app"]);
    })
    .await;
}

/// Issue 27.5: `SKILLUP_AI__RETRY_BASE_MS=300` on a live broker made the worker exit with
/// `PRECONDITION_FAILED inequivalent arg 'x-message-ttl'`. Retry queues are named by their
/// delay: a changed backoff declares new ones, and a message waiting in an old one still comes
/// back to the work queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_backoff_is_declared_on_a_live_broker_and_loses_no_waiting_retry() {
    use skillup_kit::bus::{AmqpBus, Bus};
    skillup_kit::install_crypto_provider();
    let (id, url) = (testing::unique(), testing::amqp_url());
    let connect = || {
        AmqpBus::connect(
            &url,
            format!("test.{id}.events"),
            format!("test.{id}."),
            Duration::from_secs(20),
        )
    };
    let before = connect().await.unwrap();
    before
        .declare_queue(&QueueSpec::new("shaped").retry_delays(vec![Duration::from_millis(1500)]))
        .await
        .unwrap();
    before.enqueue("shaped", Message::new(&b"job"[..])).await.unwrap();
    let mut c = before.consume("shaped", 1).await.unwrap();
    let d = next(&mut c).await;
    d.retry("provider 503", None).await.unwrap();
    assert_eq!(before.depth("shaped.retry.0").await.unwrap(), 1, "waiting out the old delay");
    drop(c);

    // A new release with another backoff, on the same broker and names.
    let after = connect().await.unwrap();
    let shorter = QueueSpec::new("shaped")
        .retry_delays(vec![Duration::from_millis(200), Duration::from_millis(400)]);
    after.declare_queue(&shorter).await.expect("a changed backoff is declared");
    let mut c = after.consume("shaped", 1).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!((d.attempt(), &d.message.payload[..]), (2, &b"job"[..]), "the old retry came back");
    let failed_at = Instant::now();
    let out = d.retry("provider 503", None).await.unwrap();
    assert_eq!(out, RetryOutcome::Scheduled { attempt: 3, delay: Duration::from_millis(400) });
    let d = next(&mut c).await;
    assert!(failed_at.elapsed() < Duration::from_millis(1400), "the new, shorter delay");
    assert_eq!(d.attempt(), 3);
    d.ack().await.unwrap();
}
