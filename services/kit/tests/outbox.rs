//! The transactional outbox on real PostgreSQL and RabbitMQ (and on SQLite with the
//! in-process bus): an event goes out only with its change's commit, survives until a relay
//! publishes it, in order and under its id, and goes out at once when the writer wakes the relay.

use std::time::{Duration, Instant};

use prost::Message as _;
use sea_orm::TransactionTrait;
use sea_orm_migration::SchemaManager;
use skillup_kit::{
    Shutdown,
    bus::{Consumer, SubscriptionSpec},
    outbox::{self, Outbox},
};
use skillup_proto::{
    auth::v1::{EmailVerified, TokensRevoked},
    common::v1::EventEnvelope,
    events::Event as _,
};
use skillup_testkit::Kind;
use tokio::time::timeout;

skillup_testkit::both_adapters!(an_event_goes_out_only_with_its_commit_and_waits_for_a_relay);

const WAIT: Duration = Duration::from_secs(10);

/// The next event's id and type.
async fn next(c: &mut Consumer) -> (String, String) {
    let d = timeout(WAIT, c.next()).await.expect("an event in time").expect("consumer open");
    let env = EventEnvelope::decode(d.message.payload.as_ref()).expect("an event envelope");
    assert_eq!(d.message.id, env.id, "the message id is the event id");
    d.ack().await.unwrap();
    (env.id, env.r#type)
}

async fn nothing_for(c: &mut Consumer, d: Duration) {
    if let Ok(Some(del)) = timeout(d, c.next()).await {
        panic!("unexpected event {:?}", del.message);
    }
}

async fn an_event_goes_out_only_with_its_commit_and_waits_for_a_relay(kind: Kind) {
    let t = kind.infra().await;
    let db = &t.infra.db;
    outbox::create_table(&SchemaManager::new(db), "test_outbox").await.unwrap();
    let ob = Outbox::new(db.clone(), t.infra.bus.clone(), "test_outbox");
    let mut events = t
        .infra
        .bus
        .subscribe(
            &SubscriptionSpec::new("outbox-test", &[TokensRevoked::KIND, EmailVerified::KIND]),
            8,
        )
        .await
        .unwrap();
    // Two events of the catalogue stand for any: what matters is the order and the ids.
    let (happened, changed) = (TokensRevoked::default(), EmailVerified::default());

    // A change that rolls back takes its event with it.
    let txn = db.begin().await.unwrap();
    ob.add(&txn, "e0", "u1", &happened).await.unwrap();
    txn.rollback().await.unwrap();
    // Two committed while no relay runs (as when the process dies right after the commit):
    // stored, not sent.
    let txn = db.begin().await.unwrap();
    ob.add(&txn, "e1", "u1", &happened).await.unwrap();
    ob.add(&txn, "e2", "u1", &changed).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(ob.pending().await.unwrap(), 2);
    nothing_for(&mut events, Duration::from_millis(300)).await;

    // A relay (the restarted process's) publishes them oldest first, under their ids, and
    // forgets them once the broker has them.
    let shutdown = Shutdown::new();
    let relay = ob.spawn_relay(shutdown.clone());
    assert_eq!(next(&mut events).await, ("e1".into(), TokensRevoked::KIND.into()));
    assert_eq!(next(&mut events).await, ("e2".into(), EmailVerified::KIND.into()));
    for _ in 0..100 {
        if ob.pending().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ob.pending().await.unwrap(), 0);

    // Woken after its commit, an event goes out at once, not at the next tick.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let txn = db.begin().await.unwrap();
    ob.add(&txn, "e3", "u2", &happened).await.unwrap();
    txn.commit().await.unwrap();
    let woken = Instant::now();
    ob.wake();
    assert_eq!(next(&mut events).await.0, "e3");
    assert!(woken.elapsed() < Duration::from_millis(500), "{:?}", woken.elapsed());
    // And the rolled-back one never comes.
    nothing_for(&mut events, Duration::from_millis(300)).await;
    shutdown.trigger();
    relay.await.unwrap();
}
