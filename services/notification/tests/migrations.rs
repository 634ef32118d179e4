//! Migrations that change stored data, on PostgreSQL and on SQLite: notifications written by
//! the older schema read correctly through the newer one.

use chrono::Utc;
use sea_orm::{
    ConnectionTrait, EntityTrait,
    sea_query::{Alias, Query},
};
use sea_orm_migration::MigratorTrait;
use skillup_notification::{
    domain::NotificationKind,
    store::{Migrator, item},
};
use skillup_testkit::Kind;
use uuid::Uuid;

skillup_testkit::both_adapters!(notification_kinds_stored_as_numbers_become_names);

async fn notification_kinds_stored_as_numbers_become_names(kind: Kind) {
    let t = kind.infra().await;
    let db = &t.infra.db;
    Migrator::up(db, Some(2)).await.unwrap();
    let user = Uuid::now_v7();
    let mut ids = Vec::new();
    for n in 1..=5i32 {
        let id = Uuid::now_v7();
        let columns =
            ["id", "user_id", "seq", "kind", "title", "body", "data", "event_id", "created_at"];
        let insert = Query::insert()
            .into_table(Alias::new("notification_items"))
            .columns(columns.map(Alias::new))
            .values_panic([
                id.into(),
                user.into(),
                i64::from(n).into(),
                n.into(),
                "t".into(),
                "b".into(),
                "{}".into(),
                format!("event-{id}").into(),
                Utc::now().into(),
            ])
            .to_owned();
        db.execute(&insert).await.unwrap();
        ids.push(id);
    }
    Migrator::up(db, None).await.unwrap();
    let want = [
        NotificationKind::GenerationCompleted,
        NotificationKind::GenerationFailed,
        NotificationKind::PaymentSucceeded,
        NotificationKind::PaymentFailed,
        NotificationKind::SubscriptionChanged,
    ];
    for (id, want) in ids.iter().zip(want) {
        let row = item::Entity::find_by_id(*id).one(db).await.unwrap().expect("kept");
        assert_eq!(row.kind, want);
    }
    // m0005 filled the user's counter from what was stored: the next notification is 6th.
    let store = skillup_notification::store::NotificationStore::new(db.clone());
    let next = item::Model {
        id: Uuid::now_v7(),
        user_id: user,
        seq: 0,
        kind: NotificationKind::GenerationCompleted,
        title: "t".into(),
        body: "b".into(),
        data: "{}".into(),
        event_id: "after-m0005".into(),
        created_at: Utc::now(),
        read_at: None,
        mail_state: 0,
    };
    let stored = store.insert_batch(&[(next, false)]).await.unwrap();
    assert_eq!(stored.new[0].seq, 6);
}
