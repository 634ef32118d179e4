//! The `skillup` binary as a user runs it.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{free_port, skillup};
use skillup_auth::keys::{KeyStore, SigningKey};
use skillup_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use skillup_testkit as testing;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[path = "cli/admin.rs"]
mod admin;
#[path = "cli/attack.rs"]
mod attack;
#[path = "cli/commands.rs"]
mod commands;
#[path = "cli/distributed.rs"]
mod distributed;
#[path = "cli/keys.rs"]
mod keys;

use distributed::*;

fn data_dir_with_test_key() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("skillup-cli-{}", testing::unique()));
    let key = SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap();
    KeyStore::new(dir.join("keys")).store(&key, true).unwrap();
    skillup_kit::mesh::issue::init(&dir.join("keys/mesh"), &[], false).unwrap();
    dir
}

struct Up {
    child: Child,
    grpc: String,
    http: String,
    lines: Vec<String>,
}

/// Starts `skillup up` on free ports and waits for its "SkillUp is up" line.
fn start_up(cmd: &mut Command, data_dir: &std::path::Path) -> Up {
    let mut child = cmd
        .args(["up", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.starts_with("SkillUp is up");
                lines.push(line);
                if done {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("`skillup up` did not get ready; it printed: {lines:#?}");
            }
        }
    }
    let addr_of = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {lines:#?}"))
            .to_owned()
    };
    let grpc = addr_of("ready  grpc");
    let http = addr_of("ready  edge");
    Up { child, grpc, http, lines }
}

fn stop(mut up: Up) -> std::process::ExitStatus {
    let pid = up.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    for _ in 0..150 {
        if let Some(status) = up.child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = up.child.kill();
    panic!("`skillup up` did not stop within 15 s of SIGTERM");
}

async fn grpc_health(addr: &str) -> ServingStatus {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(ch);
    for _ in 0..50 {
        let status = client
            .check(HealthCheckRequest { service: String::new() })
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == ServingStatus::Serving {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ServingStatus::NotServing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_embedded_defaults_serves_health_and_stops_on_sigterm() {
    let dir = data_dir_with_test_key();
    let up = start_up(&mut skillup(), &dir);
    assert!(
        up.lines.iter().any(|l| l.contains("database") && l.contains("SQLite")),
        "{:#?}",
        up.lines
    );
    assert!(up.lines.iter().any(|l| l.contains("cache") && l.contains("in-process")));
    assert!(up.lines.iter().any(|l| l.contains("bus") && l.contains("in-process")));
    assert!(dir.join("skillup.db").exists(), "SQLite file under the data dir");
    assert!(up.lines.iter().any(|l| l.starts_with("ready  auth")), "{:#?}", up.lines);
    // The auth service answers on the shared listener: to the edge's certificate, not to a
    // caller without one.
    let anonymous = testing::channel_with(&up.grpc, None);
    let refused = AuthServiceClient::new(anonymous)
        .register(pb::RegisterRequest { email: "eve@example.com".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let ch = testing::channel_in(&dir.join("keys"), &up.grpc, "edge");
    let mut auth = AuthServiceClient::new(ch);
    auth.register(pb::RegisterRequest {
        email: "ada@example.com".into(),
        password: "correct horse battery".into(),
        name: String::new(),
        ..Default::default()
    })
    .await
    .expect("register through `up`");
    let res = auth
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: "correct horse battery".into(),
            ..Default::default()
        })
        .await
        .expect("sign in through `up`")
        .into_inner();
    let me = auth
        .validate_token(pb::ValidateTokenRequest {
            token: res.access_token,
            required_scopes: vec![],
        })
        .await
        .unwrap();
    assert_eq!(me.into_inner().tier, "free");
    assert!(
        std::fs::read_dir(dir.join("outbox")).unwrap().count() >= 1,
        "verification email in the outbox"
    );

    // The same service through the edge's REST routes.
    let rest = reqwest::Client::new();
    let account =
        serde_json::json!({"email": "grace@example.com", "password": "correct horse battery"});
    let res =
        rest.post(format!("http://{}/api/auth/register", up.http)).json(&account).send().await;
    assert_eq!(res.unwrap().status(), 201);
    let res = rest.post(format!("http://{}/api/auth/login", up.http)).json(&account).send().await;
    let body: serde_json::Value = res.unwrap().json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let me = rest
        .get(format!("http://{}/api/auth/me", up.http))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["email"], "grace@example.com");
    // Money through the edge: the Idempotency-Key header makes a retry safe.
    let top_up = || {
        rest.post(format!("http://{}/api/payments/top-up", up.http))
            .bearer_auth(token)
            .header("idempotency-key", "first-top-up")
            .json(&serde_json::json!({"amount_minor": 100000, "currency": "RUB"}))
    };
    let first = top_up().send().await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: serde_json::Value = first.json().await.unwrap();
    // A replay, not a second top-up: the same answer, marked as one.
    let again = top_up().send().await.unwrap();
    assert_eq!(again.status(), 201, "a replay answers as the first call did");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<serde_json::Value>().await.unwrap(), first);
    let balance: serde_json::Value =
        get_json(&rest, format!("http://{}/api/payments/balance?currency=RUB", up.http), token)
            .await;
    assert_eq!(balance["available"]["amount_minor"], "100000", "{balance}");
    // Subscribe through the edge: charged from the balance; auth learns the tier from the event.
    let sub = rest
        .post(format!("http://{}/api/subscriptions", up.http))
        .bearer_auth(token)
        .json(&serde_json::json!({"plan": "basic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sub.status(), 200);
    let sub: serde_json::Value = sub.json().await.unwrap();
    assert_eq!(sub["plan"]["id"], "basic", "{sub}");
    let mut tier = String::new();
    for _ in 0..50 {
        let me: serde_json::Value =
            get_json(&rest, format!("http://{}/api/auth/me", up.http), token).await;
        tier = me["tier"].as_str().unwrap_or_default().to_owned();
        if tier == "basic" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tier, "basic", "subscription.changed reached auth");
    let doc: serde_json::Value = reqwest::get(format!("http://{}/api/openapi.json", up.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/auth/login"].is_object());
    assert!(doc["paths"]["/api/catalog/functions"].is_object());
    let fns: serde_json::Value = reqwest::get(format!("http://{}/api/catalog/functions", up.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(fns["functions"].as_array().unwrap().iter().any(|f| f["id"] == "lesson_plan"), "{fns}");
    assert!(doc["paths"]["/api/generate"]["post"].is_object(), "generation is served");
    assert!(doc["paths"]["/api/notifications"]["get"].is_object(), "notifications are served");

    generation_through_the_edge(&rest, &up.http, token, &dir).await;

    let res = reqwest::get(format!("http://{}/healthz", up.http)).await.unwrap();
    assert_eq!(res.status(), 200);
    let ready: serde_json::Value =
        reqwest::get(format!("http://{}/readyz", up.http)).await.unwrap().json().await.unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(grpc_health(&up.grpc).await, ServingStatus::Serving);
    let metrics =
        reqwest::get(format!("http://{}/metrics", up.http)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("grpc_server_handled_total"), "{metrics}");
    // Sampled at the scrape: the pool, the worker's queues and its lag.
    for gauge in [
        "db_pool_connections{db=\"SQLite\",state=\"idle\"}",
        "db_pool_max_connections{db=\"SQLite\"} 4",
        "bus_queue_depth{queue=\"generate.long\"} 0",
        "bus_queue_depth{queue=\"generate.long.dead\"} 0",
        "ai_queue_lag_seconds 0",
        "ai_worker_in_flight 0",
    ] {
        assert!(metrics.contains(gauge), "{gauge} missing from {metrics}");
    }
    // The container health check: ready now, and not once the process is gone.
    let health = |addr: &str| {
        skillup().args(["health", "--http-addr", addr]).output().unwrap().status.success()
    };
    assert!(health(&up.http), "`skillup health` against a ready process");

    let http = up.http.clone();
    let status = stop(up);
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(!health(&http), "`skillup health` against a stopped process");
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 27.6 and 27.7: `skillup health` asked plain HTTP of a TLS edge (a healthy container
/// marked unhealthy), and emailed links kept `:8080` under another `--http-addr`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_emailed_links_follow_the_listener_tls_included() {
    skillup_kit::install_crypto_provider();
    let dir = data_dir_with_test_key();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let tls = |cmd: &mut Command| {
        cmd.env("SKILLUP_EDGE__TLS_CERT_FILE", dir.join("cert.pem"))
            .env("SKILLUP_EDGE__TLS_KEY_FILE", dir.join("key.pem"));
    };
    let mut cmd = skillup();
    tls(&mut cmd);
    let up = start_up(&mut cmd, &dir);
    let mut health = skillup();
    tls(&mut health);
    let out = health.args(["health", "--http-addr", &up.http]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let email = format!("links-{}@example.com", testing::unique());
    let res = client
        .post(format!("https://{}/api/auth/register", up.http))
        .json(&serde_json::json!({"email": email, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let token = common::mailed_token(&dir.join("outbox"), &email);
    let mail = std::fs::read_dir(dir.join("outbox"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .find(|m| m.contains(&token))
        .unwrap();
    let link = format!("https://{}/verify-email?token={token}", up.http);
    assert!(mail.contains(&link), "{mail}");
    assert!(stop(up).success());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_switches_to_the_real_servers_when_their_urls_are_set() {
    let db = testing::TestDb::postgres().await;
    let dir = data_dir_with_test_key();
    let mut cmd = skillup();
    cmd.env("DATABASE_URL", &db.url)
        .env("REDIS_URL", testing::redis_url())
        .env("AMQP_URL", testing::amqp_url())
        .env("SKILLUP_CACHE_PREFIX", format!("test:{}:", testing::unique()))
        .env("SKILLUP_BUS__EXCHANGE", format!("test.{}.events", testing::unique()));
    let up = start_up(&mut cmd, &dir);
    assert!(
        up.lines.iter().any(|l| l.contains("database") && l.contains("PostgreSQL")),
        "{:#?}",
        up.lines
    );
    assert!(up.lines.iter().any(|l| l.contains("cache") && l.contains("Redis")));
    assert!(up.lines.iter().any(|l| l.contains("bus") && l.contains("RabbitMQ")));
    assert_eq!(grpc_health(&up.grpc).await, ServingStatus::Serving);
    assert!(stop(up).success());
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 24: every RPC of every contract, called over the network on `skillup up`'s port,
/// refuses a caller without a certificate (UNAUTHENTICATED) and one of a component (or an
/// operator) its contract does not name (PERMISSION_DENIED) — before the service sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_an_anonymous_and_a_wrong_caller() {
    use skillup_kit::mesh::{COMPONENTS, OPERATOR, Peer, issue::MeshCa};
    let dir = data_dir_with_test_key();
    let mut up = start_up(&mut skillup(), &dir);
    let mesh = dir.join("keys/mesh");
    MeshCa::load(&mesh)
        .unwrap()
        .issue(&Peer::operator("matrix"), &[], Duration::from_secs(600))
        .unwrap()
        .write(&mesh, "matrix")
        .unwrap();
    let channel = |who: Option<&str>| match who {
        None => testing::channel_with(&up.grpc, None),
        Some(OPERATOR) => {
            let files = skillup_kit::mesh::MeshFiles::in_dir(&mesh, "matrix");
            testing::channel_with(&up.grpc, Some(skillup_kit::mesh::MeshTls::load(files).unwrap()))
        }
        Some(c) => testing::channel_in(&dir.join("keys"), &up.grpc, c),
    };
    let mut channels = std::collections::HashMap::new();
    let call = |ch: tonic::transport::Channel, path: &'static str| async move {
        let mut grpc = tonic::client::Grpc::new(ch);
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static(path);
        grpc.unary::<(), (), _>(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .expect_err("refused")
    };
    let everyone: Vec<&str> = COMPONENTS.iter().copied().chain([OPERATOR]).collect();
    for (path, allowed) in skillup_proto::callers::CALLERS {
        if path.starts_with("/skillup.testing.") {
            continue;
        }
        let anonymous = channels.entry(None).or_insert_with(|| channel(None)).clone();
        let err = call(anonymous, path).await;
        assert_eq!(
            err.code(),
            tonic::Code::Unauthenticated,
            "{path} without a certificate: {err:?}"
        );
        let wrong =
            everyone.iter().find(|c| !allowed.contains(c)).expect("someone may not call it");
        let ch = channels.entry(Some(*wrong)).or_insert_with(|| channel(Some(wrong))).clone();
        let err = call(ch, path).await;
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{path} as {wrong}: {err:?}");
        assert!(err.message().contains(*wrong), "{err:?}");
    }
    // A certificate of the mesh's own CA that has expired gets no further than the handshake.
    MeshCa::load(&mesh)
        .unwrap()
        .issue(&Peer::component("subscribe"), &[], Duration::ZERO)
        .unwrap()
        .write(&mesh, "expired")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let expired =
        skillup_kit::mesh::MeshTls::load(skillup_kit::mesh::MeshFiles::in_dir(&mesh, "expired"));
    let err = call(
        testing::channel_with(&up.grpc, Some(expired.unwrap())),
        "/skillup.payment.v1.PaymentService/Charge",
    )
    .await;
    // The server's alert (CertificateExpired) or the closed connection reaches the client with
    // its first request, as UNKNOWN, UNAVAILABLE or CANCELLED by the timing: a transport error
    // either way, never an answer of the service.
    assert!(std::error::Error::source(&err).is_some(), "an expired certificate: {err:?}");
    // The same call with a valid certificate of the same component gets the service's answer.
    let answered = call(
        testing::channel_in(&dir.join("keys"), &up.grpc, "subscribe"),
        "/skillup.payment.v1.PaymentService/Charge",
    )
    .await;
    assert!(std::error::Error::source(&answered).is_none(), "{answered:?}");
    assert_eq!(answered.code(), tonic::Code::InvalidArgument, "{answered:?}");
    up.child.kill().unwrap();
    let _ = up.child.wait();
}
