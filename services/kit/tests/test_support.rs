//! The test helpers themselves: a service started in-process on a free port answers through
//! its client, on both real and embedded infrastructure.

use skillup_kit::grpc::GrpcServer;
use skillup_testkit::{TestInfra, TestServer};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn serves_with(t: TestInfra) {
    let server = TestServer::start(
        GrpcServer::builder()
            .readiness(t.infra.readiness.clone(), std::time::Duration::from_millis(100)),
    )
    .await;
    let mut client = HealthClient::new(server.channel());
    let mut status = ServingStatus::Unknown;
    for _ in 0..50 {
        status = client
            .check(HealthCheckRequest { service: String::new() })
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == ServingStatus::Serving {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, ServingStatus::Serving, "every probe of the test infrastructure passes");
    assert!(t.infra.readiness.is_ready().await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_real_infrastructure() {
    let t = TestInfra::real().await;
    assert_eq!(t.infra.database_kind, "PostgreSQL");
    serves_with(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_embedded_infrastructure() {
    serves_with(TestInfra::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_test_database_is_its_own_and_goes_away() {
    use sea_orm::{ConnectionTrait, Statement};
    let a = skillup_testkit::TestDb::postgres().await;
    let b = skillup_testkit::TestDb::postgres().await;
    assert_ne!(a.url, b.url);
    a.conn.execute_unprepared("CREATE TABLE only_in_a (id int)").await.unwrap();
    assert!(b.conn.execute_unprepared("SELECT * FROM only_in_a").await.is_err());
    let name = a.url.rsplit('/').next().unwrap().to_owned();
    drop(a);
    let admin = skillup_kit::db::connect(&skillup_testkit::postgres_url(), 1).await.unwrap();
    let row = admin
        .query_one_raw(Statement::from_string(
            admin.get_database_backend(),
            format!("SELECT count(*) AS n FROM pg_database WHERE datname = '{name}'"),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 0, "dropped with its TestDb");
}
