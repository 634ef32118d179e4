//! Migrations that change stored data, on PostgreSQL and on SQLite: rows written by the older
//! schema read correctly through the newer one.

use chrono::Utc;
use sea_orm::{
    ConnectionTrait, EntityTrait,
    sea_query::{Alias, Expr, ExprTrait, Query},
};
use sea_orm_migration::MigratorTrait;
use skillup_subscribe::{
    domain::SubscriptionStatus,
    store::{entities::subscription, migration::Migrator},
};
use skillup_testkit::Kind;
use uuid::Uuid;

skillup_testkit::both_adapters!(subscription_statuses_stored_as_numbers_become_names);

async fn subscription_statuses_stored_as_numbers_become_names(kind: Kind) {
    let t = kind.infra().await;
    let db = &t.infra.db;
    // The schema as it was before statuses became names (m0001..m0003).
    Migrator::up(db, Some(3)).await.unwrap();
    let rows: Vec<(Uuid, i32)> = [1, 2, 3].into_iter().map(|n| (Uuid::now_v7(), n)).collect();
    for (id, status) in &rows {
        let columns = [
            "id",
            "user_id",
            "plan_id",
            "status",
            "period_start",
            "period_end",
            "cancel_at_period_end",
            "updated_at",
        ];
        let insert = Query::insert()
            .into_table(Alias::new("subscribe_subscriptions"))
            .columns(columns.map(Alias::new))
            .values_panic([
                (*id).into(),
                Uuid::now_v7().into(),
                "basic".into(),
                (*status).into(),
                Utc::now().into(),
                Utc::now().into(),
                false.into(),
                Utc::now().into(),
            ])
            .to_owned();
        db.execute(&insert).await.unwrap();
    }
    Migrator::up(db, None).await.unwrap();
    let want =
        [SubscriptionStatus::Active, SubscriptionStatus::Canceled, SubscriptionStatus::Expired];
    for ((id, _), want) in rows.iter().zip(want) {
        let row = subscription::Entity::find_by_id(*id).one(db).await.unwrap().expect("kept");
        assert_eq!(row.status, want);
    }
    // Stored under its name.
    let select = Query::select()
        .column(Alias::new("status"))
        .from(Alias::new("subscribe_subscriptions"))
        .and_where(Expr::col(Alias::new("id")).eq(rows[0].0))
        .to_owned();
    let raw = db.query_one(&select).await.unwrap().unwrap();
    assert_eq!(raw.try_get::<String>("", "status").unwrap(), "active");
}

/// Replicas starting together on PostgreSQL: one migrates, the others wait and find nothing
/// to do (a data migration run twice at once would fail the second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let db = skillup_testkit::TestDb::postgres().await;
    let pools = futures_pools(&db.url, 4).await;
    let runs = pools.iter().map(skillup_subscribe::migrate);
    for res in futures::future::join_all(runs).await {
        res.expect("every replica starts");
    }
    let applied = Migrator::get_applied_migrations(&pools[0]).await.unwrap();
    assert_eq!(applied.len(), Migrator::migrations().len());
}

async fn futures_pools(url: &str, n: usize) -> Vec<sea_orm::DatabaseConnection> {
    let mut pools = Vec::new();
    for _ in 0..n {
        pools.push(skillup_kit::db::connect(url, 3).await.unwrap());
    }
    pools
}
