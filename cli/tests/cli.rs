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

fn data_dir_with_test_key() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("skillup-cli-{}", testing::unique()));
    let key = SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap();
    KeyStore::new(dir.join("keys")).store(&key, true).unwrap();
    dir
}

struct Up {
    child: Child,
    grpc: String,
    http: String,
    lines: Vec<String>,
}

/// Starts `skillup up` on free ports and waits for its "SkillUp is up." line.
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
                let done = line == "SkillUp is up.";
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
    // The auth service answers on the shared listener.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", up.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut auth = AuthServiceClient::new(ch);
    auth.register(pb::RegisterRequest {
        email: "ada@example.com".into(),
        password: "correct horse battery".into(),
        name: String::new(),
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
            .json(&serde_json::json!({"amount_minor": 1500, "currency": "USD"}))
    };
    assert_eq!(top_up().send().await.unwrap().status(), 201);
    assert_eq!(top_up().send().await.unwrap().status(), 200, "a replay, not a second top-up");
    let balance: serde_json::Value =
        get_json(&rest, format!("http://{}/api/payments/balance?currency=USD", up.http), token)
            .await;
    assert_eq!(balance["available"]["amount_minor"], "1500", "{balance}");
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

#[test]
fn keys_init_creates_what_is_missing_and_keeps_the_rest() {
    let dir = data_dir_with_test_key();
    let keys = dir.join("keys");
    let init = || {
        let out = skillup().args(["keys", "init", "--dir"]).arg(&keys).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = init();
    let kid = SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap().kid;
    assert!(first.contains(&format!("signing key {kid} (kept)")), "{first}");
    assert!(first.contains("identity.key (generated now)"), "{first}");
    let identity = std::fs::read(keys.join("identity.key")).unwrap();
    let second = init();
    assert!(second.contains("identity.key (kept)"), "{second}");
    assert_eq!(std::fs::read(keys.join("identity.key")).unwrap(), identity, "never replaced");

    // An operator's assertion for grpcurl, signed with that key.
    let out = skillup()
        .args(["admin", "assertion", "--scopes", "admin,catalog:write", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let assertion = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let key = skillup_kit::identity::IdentityKey::load(&keys.join("identity.key"), false).unwrap();
    let id = key.verify(&assertion, skillup_kit::identity::now_secs()).unwrap();
    assert_eq!(id.user_id, "operator");
    assert_eq!(id.scopes, ["admin", "catalog:write"]);
    assert!(id.exp <= skillup_kit::identity::now_secs() + 300);
    let other = skillup_kit::identity::IdentityKey::random();
    assert!(other.verify(&assertion, skillup_kit::identity::now_secs()).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

/// Fingerprints and kids are base64url, so one in 64 starts with `-`: it is a value, not a flag.
#[test]
fn key_names_that_start_with_a_hyphen_are_values() {
    let dir = data_dir_with_test_key();
    for args in [
        &["keys", "identity", "promote", "-OIBwdOgAlAG1S84"][..],
        &["keys", "identity", "retire", "-OIBwdOgAlAG1S84"],
        &["keys", "promote", "-OIBwdOgAlAG1S84YyufPoYSkcCUTJaLgZuXVDTqxRA"],
    ] {
        let out = skillup().args(args).arg("--data-dir").arg(&dir).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
        assert!(!out.status.success(), "{args:?}: no such key here");
    }
}

/// Issue 27.3: `keys init` wrote identity.key without a final newline, so the documented
/// `>>` append glued the new key onto the old one and the first restarted service refused every
/// edge call. Rotation is now by command; the file is always newline-terminated and 0600.
#[test]
fn identity_keys_rotate_by_command() {
    use skillup_kit::identity::{Caller, IdentityKey, now_secs};
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir_with_test_key();
    let keys = dir.join("keys");
    let file = keys.join("identity.key");
    let run = |args: &[&str]| {
        let out = skillup().args(["keys"]).args(args).arg("--data-dir").arg(&dir).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["init"]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.ends_with('\n') && text.lines().count() == 1, "{text:?}");
    // The shell way still works: an appended line is a key of its own.
    std::fs::write(&file, format!("{text}{}\n", "ab".repeat(32))).unwrap();
    let old = IdentityKey::load(&file, false).unwrap();
    let signed_old =
        old.sign(&Caller { user_id: "u".into(), exp: now_secs() + 60, ..Default::default() });

    let added = run(&["identity", "add"]);
    let fp = added.split_whitespace().nth(3).unwrap().to_owned();
    let listed = run(&["identity", "list"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(listed.lines().next().unwrap().ends_with("(signing)"));
    let both = IdentityKey::load(&file, false).unwrap();
    assert!(both.verify(&signed_old, now_secs()).is_ok(), "the old key still signs and verifies");

    run(&["identity", "promote", &fp]);
    let listed = run(&["identity", "list"]);
    assert!(listed.lines().next().unwrap().starts_with(&format!("{fp}  (signing)")), "{listed}");
    let promoted = IdentityKey::load(&file, false).unwrap();
    assert!(promoted.verify(&signed_old, now_secs()).is_ok(), "old assertions still verify");
    let signed_new =
        promoted.sign(&Caller { user_id: "u".into(), exp: now_secs() + 60, ..Default::default() });
    assert!(old.verify(&signed_new, now_secs()).is_err(), "signed by the new key");

    let out = skillup()
        .args(["keys", "identity", "retire", &fp, "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the signing key cannot be retired");
    for line in run(&["identity", "list"]).lines().skip(1) {
        run(&["identity", "retire", line.trim()]);
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.ends_with('\n') && text.lines().count() == 1, "{text:?}");
    assert!(IdentityKey::load(&file, false).unwrap().verify(&signed_old, now_secs()).is_err());
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // Staged RS256 rotation: a verify-only key, then promoted by command.
    let out =
        skillup().args(["keys", "generate", "--verify-only", "--dir"]).arg(&keys).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kid = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(3).unwrap().to_owned();
    assert!(run(&["list"]).lines().any(|l| l == kid), "listed, not signing");
    run(&["promote", &kid]);
    assert!(run(&["list"]).lines().any(|l| l == format!("{kid}  (signing)")));
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

#[test]
fn serve_without_database_url_names_the_variable() {
    let out = skillup().args(["serve", "auth"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DATABASE_URL"), "{err}");
}

#[test]
fn serve_refuses_the_in_process_cache_and_bus() {
    let out = skillup()
        .args(["serve", "worker"])
        .env("DATABASE_URL", "postgres://x@127.0.0.1/x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("REDIS_URL"));
    let out = skillup()
        .args(["serve", "edge"])
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AMQP_URL"), "the edge needs no database, but a real bus: {err}");
}

#[test]
fn a_bad_setting_stops_the_process_naming_its_key() {
    let out = skillup().args(["up"]).env("SKILLUP_GRPC_ADDR", "nowhere").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("grpc_addr"), "{err}");
    let out = skillup().args(["up"]).env("REDIS_URL", "http://wrong").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("REDIS_URL"));
}

#[test]
fn help_explains_every_command() {
    let out = skillup().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["up", "serve", "migrate", "keys", "health", "admin"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from:\n{help}"
        );
    }
    let out = skillup().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for c in ["auth", "prompt", "subscribe", "payment", "ai", "worker", "notification", "edge"] {
        assert!(help.contains(c), "{c} missing from serve --help");
    }
}

#[test]
fn keys_list_shows_the_signing_key() {
    let dir = data_dir_with_test_key();
    let kid = SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap().kid;
    let out = skillup().args(["keys", "list", "--dir"]).arg(dir.join("keys")).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{kid}  (signing)"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn migrate_on_the_embedded_database() {
    let dir = std::env::temp_dir().join(format!("skillup-migrate-{}", testing::unique()));
    let out = skillup().args(["migrate", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("skillup.db").exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// `skillup migrate` on PostgreSQL, as the compose file and a Kubernetes Job run it: under the
/// migrations' lock, twice in a row (the second finds nothing to do), and two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_on_postgres_takes_its_lock_and_runs_again_and_concurrently() {
    let db = testing::TestDb::postgres().await;
    let migrate = || {
        let mut cmd = skillup();
        cmd.arg("migrate").env("DATABASE_URL", &db.url);
        cmd
    };
    let out = migrate().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = migrate().output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let fresh = testing::TestDb::postgres().await;
    let both: Vec<_> =
        (0..2).map(|_| migrate().env("DATABASE_URL", &fresh.url).spawn().unwrap()).collect();
    for child in both {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_auth_prompt_and_edge_as_separate_processes_on_the_real_servers() {
    let db = testing::TestDb::postgres().await;
    let dir = data_dir_with_test_key();
    let (grpc, http) = (free_port(), free_port());
    let prefix = format!("test:{}:", testing::unique());
    let exchange = format!("test.{}.events", testing::unique());
    let mut child = skillup()
        .args([
            "serve",
            "auth",
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--http-addr",
            &format!("127.0.0.1:{http}"),
            "--data-dir",
        ])
        .arg(&dir)
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", testing::redis_url())
        .env("AMQP_URL", testing::amqp_url())
        .env("SKILLUP_AUTH__BCRYPT_COST", "4")
        .env("SKILLUP_CACHE_PREFIX", &prefix)
        .env("SKILLUP_BUS__EXCHANGE", &exchange)
        .env("SKILLUP_BUS__QUEUE_PREFIX", format!("test.{}.", testing::unique()))
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{grpc}");
    let mut channel = None;
    for _ in 0..100 {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            channel = Some(ch);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let channel = channel.expect("serve auth listens");
    assert_eq!(grpc_health(&addr).await, ServingStatus::Serving);
    let mut auth = AuthServiceClient::new(channel);
    auth.register(pb::RegisterRequest {
        email: "grace@example.com".into(),
        password: "correct horse battery".into(),
        name: String::new(),
    })
    .await
    .unwrap();
    let res = auth
        .login(pb::LoginRequest {
            email: "grace@example.com".into(),
            password: "correct horse battery".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    auth.validate_token(pb::ValidateTokenRequest {
        token: res.access_token,
        required_scopes: vec![],
    })
    .await
    .unwrap();
    let ready = reqwest::get(format!("http://127.0.0.1:{http}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    // `serve prompt` beside it, on the same database.
    let (prompt_grpc, prompt_http) = (free_port(), free_port());
    let mut prompt = skillup()
        .args([
            "serve",
            "prompt",
            "--grpc-addr",
            &format!("127.0.0.1:{prompt_grpc}"),
            "--http-addr",
            &format!("127.0.0.1:{prompt_http}"),
            "--data-dir",
        ])
        .arg(&dir)
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", testing::redis_url())
        .env("AMQP_URL", testing::amqp_url())
        .env("SKILLUP_CACHE_PREFIX", &prefix)
        .env("SKILLUP_BUS__EXCHANGE", &exchange)
        .env("SKILLUP_BUS__QUEUE_PREFIX", format!("test.{}.", testing::unique()))
        .spawn()
        .unwrap();

    // `serve edge` as a process of its own, in front of them.
    let edge_http = free_port();
    let mut edge = skillup()
        .args(["serve", "edge", "--http-addr", &format!("127.0.0.1:{edge_http}"), "--data-dir"])
        .arg(&dir)
        .env("REDIS_URL", testing::redis_url())
        .env("AMQP_URL", testing::amqp_url())
        .env("SKILLUP_EDGE__UPSTREAMS__AUTH", format!("http://127.0.0.1:{grpc}"))
        .env("SKILLUP_EDGE__UPSTREAMS__PROMPT", format!("http://127.0.0.1:{prompt_grpc}"))
        .env("SKILLUP_CACHE_PREFIX", &prefix)
        .env("SKILLUP_BUS__EXCHANGE", &exchange)
        .env("SKILLUP_BUS__QUEUE_PREFIX", format!("test.{}.", testing::unique()))
        .spawn()
        .unwrap();
    let rest = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{edge_http}");
    let mut login = None;
    for _ in 0..100 {
        if let Ok(r) = rest
            .post(format!("{base}/api/auth/login"))
            .json(&serde_json::json!({"email": "grace@example.com", "password": "correct horse battery"}))
            .send()
            .await
        {
            login = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let login = login.expect("serve edge listens");
    assert_eq!(login.status(), 200);
    let token = login.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = rest.get(format!("{base}/api/auth/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let out = rest
        .post(format!("{base}/api/auth/logout"))
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let me = rest.get(format!("{base}/api/auth/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 401);
    let mut topics = None;
    for _ in 0..100 {
        let r = rest.get(format!("{base}/api/catalog/topics?locale=ru")).send().await.unwrap();
        if r.status() == 200 {
            topics = Some(r.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let topics = topics.expect("serve prompt answers through the edge");
    assert!(topics["topics"].as_array().unwrap().iter().any(|t| t["title"] == "История"));

    for c in [&child, &edge, &prompt] {
        assert!(
            Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap().success()
        );
    }
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    let status = tokio::task::spawn_blocking(move || edge.wait()).await.unwrap().unwrap();
    assert!(status.success(), "edge: {status:?}");
    let status = tokio::task::spawn_blocking(move || prompt.wait()).await.unwrap().unwrap();
    assert!(status.success(), "prompt: {status:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn keys_rotate_keeps_the_old_key_for_verification() {
    let dir = data_dir_with_test_key();
    let old = SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap().kid;
    let out = skillup().args(["keys", "rotate", "--dir"]).arg(dir.join("keys")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = KeyStore::new(dir.join("keys"));
    let current = store.current_kid().unwrap().unwrap();
    assert_ne!(current, old);
    let kids: Vec<String> = store.load_all().unwrap().into_iter().map(|k| k.kid).collect();
    assert!(kids.contains(&old) && kids.contains(&current));
    let _ = std::fs::remove_dir_all(dir);
}

/// Generation as a browser uses it: refused until the email is verified, then inline (200),
/// streamed (SSE) and queued (202, then polled) — all on the offline provider.
async fn generation_through_the_edge(
    rest: &reqwest::Client,
    http: &str,
    token: &str,
    dir: &std::path::Path,
) {
    let generate = |body: serde_json::Value| {
        rest.post(format!("http://{http}/api/generate")).bearer_auth(token).json(&body)
    };
    let res =
        generate(serde_json::json!({"topic": "rust", "function": "quiz"})).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "EMAIL_NOT_VERIFIED", "{err}");
    // Verify from the outbox (the email sent to grace@example.com).
    let mut verify_token = String::new();
    for entry in std::fs::read_dir(dir.join("outbox")).unwrap() {
        let body = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        if body.contains("To: grace@example.com") {
            verify_token = body.split("token=").nth(1).unwrap().chars().take(43).collect();
        }
    }
    let res = rest
        .post(format!("http://{http}/api/auth/verify-email"))
        .json(&serde_json::json!({"token": verify_token}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{:?}", res.text().await);

    let res = generate(serde_json::json!({"topic": "rust ownership", "function": "quiz"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let c = &body["completion"];
    assert_eq!(c["provider"], "offline", "labelled offline: {body}");
    assert!(c["text"].as_str().unwrap().contains("rust ownership"), "{body}");
    assert!(c["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let res = generate(serde_json::json!({"topic": "rust lifetimes", "function": "quiz"}))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let sse = res.text().await.unwrap();
    assert!(sse.contains("\"started\""), "{sse}");
    assert!(sse.contains("\"delta\""), "{sse}");
    assert!(sse.contains("\"finished\""), "{sse}");

    // The live channel: a WebSocket with the token as a subprotocol, as browsers do.
    let mut ws = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{http}/api/notifications/ws").into_client_request().unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("skillup.v1, bearer.{token}").parse().unwrap(),
        );
        tokio_tungstenite::connect_async(req).await.expect("the notification socket opens").0
    };
    let res = generate(serde_json::json!({"topic": "rust traits", "function": "article"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "a long function is queued");
    let body: serde_json::Value = res.json().await.unwrap();
    let url = body["task"]["status_url"].as_str().unwrap().to_owned();
    let task_id = body["task"]["task_id"].as_str().unwrap().to_owned();
    // Its completion is pushed over the socket (other notifications — the payment, the plan —
    // may come first).
    let pushed = tokio::time::timeout(Duration::from_secs(20), async {
        use futures::StreamExt;
        while let Some(Ok(m)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                let n: serde_json::Value = serde_json::from_str(&t).unwrap();
                if n["kind"] == "NOTIFICATION_KIND_GENERATION_COMPLETED" {
                    return n;
                }
            }
        }
        panic!("the socket closed before the completion");
    })
    .await
    .expect("the completion reaches the open WebSocket");
    assert_eq!(pushed["data"]["task_id"], task_id.as_str(), "{pushed}");
    let mut task = serde_json::Value::Null;
    for _ in 0..100 {
        task = get_json(rest, format!("http://{http}{url}"), token).await;
        if task["status"] == "TASK_STATUS_COMPLETED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(task["status"], "TASK_STATUS_COMPLETED", "{task}");
    assert!(task["text"].as_str().unwrap().contains("rust traits"), "{task}");
    let res = rest
        .post(format!("http://{http}/api/generate/tasks"))
        .bearer_auth(token)
        .json(&serde_json::json!({"topic": "rust macros", "function": "quiz"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let history: serde_json::Value =
        get_json(rest, format!("http://{http}/api/generate?page.page_size=10"), token).await;
    assert_eq!(history["tasks"].as_array().unwrap().len(), 2, "{history}");
    // Enums by name in a query, as the OpenAPI document says.
    let done =
        get_json(rest, format!("http://{http}/api/generate?status=TASK_STATUS_COMPLETED"), token)
            .await;
    let done_tasks = done["tasks"].as_array().unwrap();
    assert!(!done_tasks.is_empty(), "{done}");
    assert!(done_tasks.iter().all(|t| t["status"] == "TASK_STATUS_COMPLETED"), "{done}");
    let res = rest
        .get(format!("http://{http}/api/generate?status=3"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"]["field"], "status", "{err}");
    let usage: serde_json::Value =
        get_json(rest, format!("http://{http}/api/subscriptions/me/usage"), token).await;
    assert!(usage["tokens_used"].as_str().unwrap().parse::<u64>().unwrap() > 0, "{usage}");
}

/// GET with the bearer token, as JSON.
async fn get_json(rest: &reqwest::Client, url: String, token: &str) -> serde_json::Value {
    rest.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}
