use sea_orm_migration::MigratorTrait;
use skillup_subscribe::store::migration::Migrator;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh() {
    for i in 0..40 {
        let t = skillup_testkit::Kind::Embedded.infra().await;
        if let Err(e) = Migrator::up(&t.infra.db, None).await {
            panic!("round {i}: {e}");
        }
    }
}
