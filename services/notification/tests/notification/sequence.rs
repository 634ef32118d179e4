//! Issue 22's sequence numbers: a burst for one user, each event delivered to both replicas at
//! once, stores every event once under 1, 2, 3, … with no gap — the per-user counter is taken
//! in the insert's transaction, and a duplicate's rollback gives its number back.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use skillup_notification::store::item;

use super::*;

/// A finished quiz about `topic`.
pub(crate) fn quiz_ready(topic: &str) -> aipb::GenerationCompleted {
    let task = aipb::Task {
        id: Uuid::now_v7().to_string(),
        status: aipb::TaskStatus::Completed as i32,
        topic: topic.into(),
        function: "quiz".into(),
        ..Default::default()
    };
    aipb::GenerationCompleted { task: Some(task) }
}

pub(crate) async fn a_burst_on_two_replicas_numbers_each_event_once_without_gaps(kind: Kind) {
    let h = harness(kind, 2).await;
    let user = Uuid::now_v7();
    let events: Vec<Vec<u8>> = (0..60)
        .map(|i| {
            let ev = quiz_ready(&format!("burst {i}"));
            skillup_kit::events::envelope(&format!("seq-{i}"), &user.to_string(), &ev)
        })
        .collect();
    let mut runs = Vec::new();
    for bytes in &events {
        for n in &h.notifiers {
            let (n, bytes) = (n.clone(), bytes.clone());
            runs.push(tokio::spawn(async move { n.record(&bytes).await.map(|r| r.map(|r| r.id)) }));
        }
    }
    let mut ids = std::collections::BTreeMap::<Uuid, usize>::new();
    for r in runs {
        let id = r.await.unwrap().unwrap().expect("a user's event");
        *ids.entry(id).or_default() += 1;
    }
    assert_eq!(ids.len(), 60, "each event stored once");
    assert!(ids.values().all(|n| *n == 2), "both deliveries answer the stored row");
    let rows = item::Entity::find()
        .filter(item::Column::UserId.eq(user))
        .order_by_asc(item::Column::Seq)
        .all(&h.t.infra.db)
        .await
        .unwrap();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<i64>>(), "1..=60, no gap, no repeat");
    // Delivered again later: nothing new, no number spent.
    h.notifiers[0].record(&events[0]).await.unwrap();
    let next = aipb::GenerationCompleted {
        task: Some(aipb::Task { id: "t-61".into(), function: "quiz".into(), ..Default::default() }),
    };
    let bytes = skillup_kit::events::envelope("seq-60", &user.to_string(), &next);
    h.notifiers[1].record(&bytes).await.unwrap();
    let last = item::Entity::find()
        .filter(item::Column::EventId.eq("seq-60"))
        .one(&h.t.infra.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.seq, 61);
}
