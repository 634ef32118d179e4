//! Migrations that change stored data, on PostgreSQL and on SQLite: ledger entries written by
//! the older schema read correctly through the newer one.

use chrono::Utc;
use sea_orm::{
    ConnectionTrait, EntityTrait,
    sea_query::{Alias, Query},
};
use sea_orm_migration::MigratorTrait;
use skillup_payment::{
    domain::{TransactionKind, TransactionStatus},
    store::{entities::transaction, migration::Migrator},
};
use skillup_testkit::Kind;
use uuid::Uuid;

skillup_testkit::both_adapters!(entry_kinds_and_statuses_stored_as_numbers_become_names);

async fn entry_kinds_and_statuses_stored_as_numbers_become_names(kind: Kind) {
    let t = kind.infra().await;
    let db = &t.infra.db;
    // The ledger as it was before kinds and statuses became names (m0001, m0002).
    Migrator::up(db, Some(2)).await.unwrap();
    let cases = [(1, 2), (2, 3), (3, 1)];
    let mut ids = Vec::new();
    for (i, (k, s)) in cases.into_iter().enumerate() {
        let (id, user) = (Uuid::now_v7(), Uuid::now_v7());
        let columns = [
            "id",
            "user_id",
            "kind",
            "status",
            "amount_minor",
            "currency",
            "balance_after_minor",
            "idempotency_scope",
            "idempotency_key",
            "request_hash",
            "description",
            "refunded_minor",
            "failure_reason",
            "created_at",
        ];
        let insert = Query::insert()
            .into_table(Alias::new("payment_transactions"))
            .columns(columns.map(Alias::new))
            .values_panic([
                id.into(),
                user.into(),
                k.into(),
                s.into(),
                100i64.into(),
                "USD".into(),
                0i64.into(),
                format!("{k}:{user}").into(),
                format!("key-{i}").into(),
                "h".into(),
                "d".into(),
                0i64.into(),
                "".into(),
                Utc::now().into(),
            ])
            .to_owned();
        db.execute(&insert).await.unwrap();
        ids.push(id);
    }
    Migrator::up(db, None).await.unwrap();
    let want = [
        (TransactionKind::TopUp, TransactionStatus::Succeeded),
        (TransactionKind::Charge, TransactionStatus::Failed),
        (TransactionKind::Refund, TransactionStatus::Pending),
    ];
    for (id, (k, s)) in ids.iter().zip(want) {
        let row = transaction::Entity::find_by_id(*id).one(db).await.unwrap().expect("kept");
        assert_eq!((row.kind, row.status), (k, s));
        // The scope keeps the number it was written with, so a key sent again still finds it.
        assert_eq!(row.idempotency_scope, format!("{}:{}", k.scope_number(), row.user_id));
    }
}
