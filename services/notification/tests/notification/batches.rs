//! Issue 22's throughput: events stored in batches (one transaction, one multi-row insert, one
//! fan-out message each), every user's numbered in order without gaps, and every one reaching
//! every open stream on every replica exactly once.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use skillup_notification::{
    domain::NotificationKind as Kind_,
    store::{NotificationStore, item},
};

use super::*;

fn row(user: Uuid, event: &str) -> item::Model {
    item::Model {
        id: Uuid::now_v7(),
        user_id: user,
        seq: 0,
        kind: Kind_::GenerationCompleted,
        title: event.into(),
        body: String::new(),
        data: "{}".into(),
        event_id: event.into(),
        created_at: Utc::now(),
        read_at: None,
        mail_state: 0,
    }
}

pub(crate) async fn a_batch_numbers_each_users_events_in_order_and_skips_what_is_stored(
    kind: Kind,
) {
    let t = kind.infra().await;
    skillup_notification::migrate(&t.infra.db).await.unwrap();
    let store = NotificationStore::new(t.infra.db.clone());
    let (known, stranger) = (Uuid::now_v7(), Uuid::now_v7());
    store.add_contact(known, "known@example.com", "en").await.unwrap();
    let first = store.insert_batch(&[(row(known, "b-1"), true)]).await.unwrap();
    assert_eq!(first.new.iter().map(|r| r.seq).collect::<Vec<_>>(), [1]);

    // Interleaved users, an event stored before, the same event twice in the batch.
    let batch = ["b-2", "b-3", "b-1", "b-4", "b-3", "b-5"];
    let owners = [stranger, known, known, stranger, known, known];
    let rows: Vec<_> = batch.iter().zip(owners).map(|(e, u)| (row(u, e), true)).collect();
    let stored = store.insert_batch(&rows).await.unwrap();
    let numbered: Vec<(&str, Uuid, i64)> =
        stored.new.iter().map(|r| (r.event_id.as_str(), r.user_id, r.seq)).collect();
    assert_eq!(
        numbered,
        [("b-2", stranger, 1), ("b-3", known, 2), ("b-4", stranger, 2), ("b-5", known, 3)],
        "each user's next numbers, in the order given; nothing twice"
    );
    assert_eq!(stored.existing.len(), 1);
    assert_eq!((stored.existing[0].event_id.as_str(), stored.existing[0].seq), ("b-1", 1));
    assert_eq!(stored.unknown_contacts, [stranger], "the user with no address on file");

    // All of it again: nothing new, no number spent; the next one follows on.
    let again: Vec<_> = batch.iter().zip(owners).map(|(e, u)| (row(u, e), true)).collect();
    let stored = store.insert_batch(&again).await.unwrap();
    assert!(stored.new.is_empty());
    assert_eq!(stored.existing.len(), 5);
    let next = store.insert_batch(&[(row(known, "b-6"), false)]).await.unwrap();
    assert_eq!(next.new[0].seq, 4);
}

pub(crate) async fn a_burst_for_many_people_reaches_every_open_stream_once_in_order(kind: Kind) {
    const PEOPLE: usize = 8;
    const EACH: usize = 40;
    let h = harness(kind, 2).await;
    // What the replicas fan out, counted from the side.
    let mut fanned =
        h.t.infra
            .bus
            .subscribe(
                &skillup_kit::bus::SubscriptionSpec::new(
                    "test-fanout",
                    &[<pb::NotificationsStored as skillup_proto::events::Event>::KIND],
                ),
                1024,
            )
            .await
            .unwrap();
    let people: Vec<Uuid> = (0..PEOPLE).map(|_| Uuid::now_v7()).collect();
    let mut streams = Vec::new();
    for (i, user) in people.iter().enumerate() {
        streams.push((*user, stream(&h, i % 2, *user, "").await));
        streams.push((*user, stream(&h, (i + 1) % 2, *user, "").await));
    }
    let bus = h.t.infra.bus.clone();
    let publishes = (0..PEOPLE * EACH).map(|i| {
        let (bus, user) = (bus.clone(), people[i % PEOPLE]);
        async move {
            skillup_kit::events::publish_with_id(
                &bus,
                &format!("burst-{i}"),
                &user.to_string(),
                &quiz_ready(&format!("burst {i}")),
            )
            .await
            .unwrap();
        }
    });
    futures::future::join_all(publishes).await;

    let mut seen = Vec::new();
    for (user, s) in &mut streams {
        let mut topics = BTreeSet::new();
        let mut order = Vec::new();
        for _ in 0..EACH {
            let n = next(s).await;
            assert!(topics.insert(n.title.clone()), "{} twice", n.title);
            order.push(Uuid::parse_str(&n.id).unwrap());
        }
        seen.push(order);
        let want: BTreeSet<String> = (0..PEOPLE * EACH)
            .filter(|i| people[i % PEOPLE] == *user)
            .map(|i| format!("Your quiz about «burst {i}» is ready"))
            .collect();
        assert_eq!(topics, want, "each of the user's events, once");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (_, s) in &mut streams {
        if let Ok(Some(n)) = tokio::time::timeout(Duration::ZERO, s.next()).await {
            panic!("unexpected notification: {n:?}");
        }
    }
    // Stored once each, every user's numbered 1..=EACH; every stream saw them in that order.
    let mut seq_of = BTreeMap::new();
    for user in &people {
        let rows = item::Entity::find()
            .filter(item::Column::UserId.eq(*user))
            .order_by_asc(item::Column::Seq)
            .all(&h.t.infra.db)
            .await
            .unwrap();
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=EACH as i64).collect::<Vec<_>>());
        seq_of.extend(rows.iter().map(|r| (r.id, r.seq)));
    }
    for order in seen {
        let seqs: Vec<i64> = order.iter().map(|id| seq_of[id]).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in sequence: {seqs:?}");
    }
    // In batches: each notification in the fan-out, in fewer messages when events came together.
    let (mut messages, mut ids, mut sizes) = (0, BTreeSet::new(), BTreeMap::<usize, usize>::new());
    while ids.len() < PEOPLE * EACH {
        let d = tokio::time::timeout(Duration::from_secs(10), fanned.next())
            .await
            .expect("the fan-out of every notification")
            .unwrap();
        let (_, batch) =
            skillup_kit::events::decode::<pb::NotificationsStored>(&d.message.payload).unwrap();
        messages += 1;
        *sizes.entry(batch.notifications.len()).or_default() += 1;
        ids.extend(batch.notifications.into_iter().map(|n| n.notification.unwrap().id));
        d.ack().await.unwrap();
    }
    eprintln!(
        "burst: {} events stored and fanned out in {messages} batches (size: count {sizes:?})",
        PEOPLE * EACH
    );
}

pub(crate) async fn a_client_back_after_more_than_a_page_gets_everything_it_missed_in_order(
    kind: Kind,
) {
    const MISSED: usize = 1_234;
    let h = harness(kind, 1).await;
    let user = Uuid::now_v7();
    let store = NotificationStore::new(h.t.infra.db.clone());
    let rows: Vec<_> = (0..=MISSED).map(|i| (row(user, &format!("away-{i}")), false)).collect();
    let stored = store.insert_batch(&rows).await.unwrap();
    let seen = stored.new[0].id.to_string();
    let mut s = stream(&h, 0, user, &seen).await;
    // Arriving while the backlog is read: after it, once.
    completed(&h, user, "back-live", "live").await;
    for i in 1..=MISSED {
        assert_eq!(next(&mut s).await.title, format!("away-{i}"), "{i} in order");
    }
    assert_eq!(next(&mut s).await.title, "Your lesson plan about «live» is ready");
    nothing_more(&mut s).await;
}

/// A bus whose fan-out never arrives (a broker hop that is slow, or lost): what a replica
/// stored reaches its own streams without it.
#[derive(Debug)]
struct NoFanOut(skillup_kit::bus::SharedBus);

#[async_trait::async_trait]
impl skillup_kit::bus::Bus for NoFanOut {
    async fn declare_queue(&self, spec: &skillup_kit::bus::QueueSpec) -> skillup_kit::Result<()> {
        self.0.declare_queue(spec).await
    }
    async fn enqueue(
        &self,
        queue: &str,
        msg: skillup_kit::bus::Message,
    ) -> skillup_kit::Result<()> {
        self.0.enqueue(queue, msg).await
    }
    async fn consume(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> skillup_kit::Result<skillup_kit::bus::Consumer> {
        self.0.consume(queue, prefetch).await
    }
    async fn publish(&self, key: &str, msg: skillup_kit::bus::Message) -> skillup_kit::Result<()> {
        if key == <pb::NotificationsStored as skillup_proto::events::Event>::KIND {
            return Ok(());
        }
        self.0.publish(key, msg).await
    }
    async fn subscribe(
        &self,
        spec: &skillup_kit::bus::SubscriptionSpec,
        prefetch: u16,
    ) -> skillup_kit::Result<skillup_kit::bus::Consumer> {
        self.0.subscribe(spec, prefetch).await
    }
    async fn depth(&self, queue: &str) -> skillup_kit::Result<u64> {
        self.0.depth(queue).await
    }
    async fn ping(&self) -> skillup_kit::Result<()> {
        self.0.ping().await
    }
}

pub(crate) async fn a_replica_hands_what_it_stored_to_its_own_streams_at_once(kind: Kind) {
    let t = kind.infra().await;
    let bus = Arc::new(NoFanOut(t.infra.bus.clone()));
    let h = harness_on(t, bus, 1, None).await;
    let user = Uuid::now_v7();
    let mut s = stream(&h, 0, user, "").await;
    for i in 0..3 {
        completed(&h, user, &format!("local-{user}-{i}"), &format!("topic {i}")).await;
    }
    for i in 0..3 {
        let n = next(&mut s).await;
        assert_eq!(n.data.get("topic").map(String::as_str), Some(format!("topic {i}").as_str()));
    }
    nothing_more(&mut s).await;
}
