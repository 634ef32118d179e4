//! The seed's user flow, end to end through the edge's REST API, twice: with every component as
//! its own `skillup serve` process on the real PostgreSQL, Redis and RabbitMQ (the way
//! Kubernetes runs it), and against `skillup up` on its embedded defaults. Register → verify the
//! email from the outbox → top up → subscribe → a short generation inline → a streamed one (SSE)
//! → a long one (202) whose completion is pushed over the WebSocket → poll it → quota and balance
//! reflect exactly what was used → log out → the old token is refused.

mod common;

use std::{
    path::Path,
    process::{Child, Stdio},
    time::Duration,
};

use common::{free_port, mailed_token, mesh::Mesh, skillup};
use futures::StreamExt;
use serde_json::{Value, json};
use skillup_auth::keys::{KeyStore, SigningKey};
use skillup_testkit as testing;

#[path = "e2e/account.rs"]
mod account;
#[path = "e2e/payments.rs"]
mod payments;
#[path = "e2e/push.rs"]
mod push;

async fn ok(res: reqwest::Response, want: u16) -> Value {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert_eq!(status, want, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn number(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        Value::Number(n) => n.as_u64().unwrap(),
        Value::Null => 0,
        other => panic!("not a number: {other}"),
    }
}

async fn seed_flow(base: &str, outbox: &Path) {
    let rest = reqwest::Client::new();
    let email = format!("e2e-{}@example.com", testing::unique());
    let get = |path: &str, token: &str| rest.get(format!("{base}{path}")).bearer_auth(token).send();

    // Register, then confirm the address from the email.
    let account = json!({"email": email, "password": "correct horse battery"});
    ok(rest.post(format!("{base}/api/auth/register")).json(&account).send().await.unwrap(), 201)
        .await;
    let auth =
        ok(rest.post(format!("{base}/api/auth/login")).json(&account).send().await.unwrap(), 200)
            .await;
    let token = auth["access_token"].as_str().unwrap().to_owned();
    let verify = mailed_token(outbox, &email);
    ok(
        rest.post(format!("{base}/api/auth/verify-email"))
            .json(&json!({"token": verify}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;

    // Money in, then a plan bought with it.
    ok(
        rest.post(format!("{base}/api/payments/top-up"))
            .bearer_auth(&token)
            .header("idempotency-key", format!("e2e-{email}"))
            .json(&json!({"amount_minor": 100000, "currency": "RUB"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let plans =
        ok(rest.get(format!("{base}/api/subscriptions/plans")).send().await.unwrap(), 200).await;
    let basic =
        plans["plans"].as_array().unwrap().iter().find(|p| p["id"] == "basic").unwrap().clone();
    let price = number(&basic["price"]["amount_minor"]);
    assert!(price > 0, "{basic}");
    ok(
        rest.post(format!("{base}/api/subscriptions"))
            .bearer_auth(&token)
            .json(&json!({"plan": "basic"}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let balance = ok(get("/api/payments/balance?currency=RUB", &token).await.unwrap(), 200).await;
    assert_eq!(number(&balance["available"]["amount_minor"]), 100_000 - price, "{balance}");
    let usage = ok(get("/api/subscriptions/me/usage", &token).await.unwrap(), 200).await;
    assert_eq!(number(&usage["tokens_used"]), 0, "{usage}");

    let generate =
        |body: Value| rest.post(format!("{base}/api/generate")).bearer_auth(&token).json(&body);
    // A short function: answered inline.
    let inline = ok(
        generate(json!({"topic": "photosynthesis", "function": "quiz"})).send().await.unwrap(),
        200,
    )
    .await;
    let used_inline = number(&inline["completion"]["usage"]["total_tokens"]);
    assert!(used_inline > 0, "{inline}");
    assert!(inline["completion"]["text"].as_str().unwrap().contains("photosynthesis"));

    // Streamed: SSE events, the last one with the usage.
    let sse = generate(json!({"topic": "plate tectonics", "function": "summary"}))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let text = sse.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert!(events.first().is_some_and(|e| e.get("started").is_some()), "{text}");
    let deltas: String =
        events.iter().filter_map(|e| e.get("delta").and_then(Value::as_str)).collect();
    assert!(deltas.contains("plate tectonics"), "{text}");
    let finished = events.iter().find_map(|e| e.get("finished")).expect("a finished event");
    let used_stream = number(&finished["usage"]["total_tokens"]);
    assert!(used_stream > 0, "{finished}");

    // Long: queued (202), its completion pushed over the open WebSocket, then polled.
    let ws_url = format!("{}/api/notifications/ws", base.replacen("http", "ws", 1));
    let mut ws = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = ws_url.into_client_request().unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("skillup.v1, bearer.{token}").parse().unwrap(),
        );
        tokio_tungstenite::connect_async(req).await.expect("the notification socket opens").0
    };
    let queued = ok(
        generate(json!({"topic": "the french revolution", "function": "article"}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    let task_id = queued["task"]["task_id"].as_str().unwrap().to_owned();
    let status_url = queued["task"]["status_url"].as_str().unwrap().to_owned();
    let pushed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(m)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                let n: Value = serde_json::from_str(&t).unwrap();
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
    let task = ok(get(&status_url, &token).await.unwrap(), 200).await;
    assert_eq!(task["status"], "TASK_STATUS_COMPLETED", "{task}");
    assert!(task["text"].as_str().unwrap().contains("the french revolution"), "{task}");
    let used_task = number(&task["usage"]["total_tokens"]);
    assert!(used_task > 0, "{task}");

    // Quota: exactly the three generations, nothing held; the balance paid only the plan.
    let mut usage = Value::Null;
    for _ in 0..100 {
        usage = ok(get("/api/subscriptions/me/usage", &token).await.unwrap(), 200).await;
        if number(&usage["tokens_held"]) == 0 && number(&usage["tokens_used"]) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        number(&usage["tokens_used"]),
        used_inline + used_stream + used_task,
        "charged exactly what was generated: {usage}"
    );
    assert_eq!(number(&usage["tokens_held"]), 0, "{usage}");
    assert_eq!(number(&usage["generations_used"]), 3, "{usage}");
    let balance = ok(get("/api/payments/balance?currency=RUB", &token).await.unwrap(), 200).await;
    assert_eq!(number(&balance["available"]["amount_minor"]), 100_000 - price, "{balance}");

    // The library: the three generations, whichever way they ran, paged, found, edited, deleted.
    let inline_id = inline["completion"]["id"].as_str().unwrap().to_owned();
    let stream_id = events[0]["started"]["id"].as_str().unwrap().to_owned();
    let first = ok(get("/api/generate?page_size=2", &token).await.unwrap(), 200).await;
    let next = first["page"]["next_page_token"].as_str().unwrap().to_owned();
    let rest_page = ok(
        get(&format!("/api/generate?page_size=2&page_token={next}"), &token).await.unwrap(),
        200,
    )
    .await;
    let docs: Vec<&Value> = first["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest_page["tasks"].as_array().unwrap())
        .collect();
    let listed: Vec<(&str, &str)> =
        docs.iter().map(|d| (d["id"].as_str().unwrap(), d["delivery"].as_str().unwrap())).collect();
    assert_eq!(
        listed,
        [
            (task_id.as_str(), "DELIVERY_QUEUED"),
            (stream_id.as_str(), "DELIVERY_STREAM"),
            (inline_id.as_str(), "DELIVERY_INLINE")
        ],
        "newest first: {first} {rest_page}"
    );
    let found = ok(get("/api/generate?query=tectonic", &token).await.unwrap(), 200).await;
    assert_eq!(found["tasks"][0]["id"], stream_id.as_str(), "{found}");
    assert_eq!(found["tasks"].as_array().unwrap().len(), 1, "{found}");
    let doc = ok(get(&format!("/api/generate/{inline_id}"), &token).await.unwrap(), 200).await;
    assert_eq!(doc["text"], inline["completion"]["text"], "an inline answer's id leads to it");
    let edited = ok(
        rest.patch(format!("{base}/api/generate/{inline_id}"))
            .bearer_auth(&token)
            .json(&json!({"title": "Мой квиз", "starred": true}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        (edited["title"].as_str(), edited["starred"].as_bool()),
        (Some("Мой квиз"), Some(true))
    );
    let starred = ok(get("/api/generate?starred=true", &token).await.unwrap(), 200).await;
    assert_eq!(starred["tasks"].as_array().unwrap().len(), 1, "{starred}");
    let bad = rest
        .patch(format!("{base}/api/generate/{inline_id}"))
        .bearer_auth(&token)
        .json(&json!({"title": ""}))
        .send()
        .await
        .unwrap();
    let bad = ok(bad, 400).await;
    assert_eq!(bad["error"]["field"], "title", "{bad}");
    let again = rest
        .post(format!("{base}/api/generate/{inline_id}/regenerate"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let again = ok(again, 200).await;
    let new_id = again["completion"]["id"].as_str().unwrap();
    assert_ne!(new_id, inline_id, "{again}");
    let doc = ok(get(&format!("/api/generate/{new_id}"), &token).await.unwrap(), 200).await;
    assert_eq!(doc["regenerated_from"], inline_id.as_str(), "{doc}");
    let file = get(&format!("/api/generate/{inline_id}/export?format=html"), &token).await.unwrap();
    assert_eq!(file.status(), 200);
    let h = file.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"document.html\"; filename*=UTF-8''%D0%9C%D0%BE%D0%B9%20%D0%BA%D0%B2%D0%B8%D0%B7.html"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h["content-security-policy"].to_str().unwrap().contains("sandbox"));
    let page = file.text().await.unwrap();
    assert!(page.contains("<title>Мой квиз</title>"), "{page}");
    let bad = get(&format!("/api/generate/{inline_id}/export?format=pdf"), &token).await.unwrap();
    assert_eq!(ok(bad, 400).await["error"]["field"], "format");
    let gone =
        rest.delete(format!("{base}/api/generate/{task_id}")).bearer_auth(&token).send().await;
    assert_eq!(gone.unwrap().status(), 204);
    ok(get(&status_url, &token).await.unwrap(), 404).await;

    // The profile: a language and a time zone, each validated.
    let me = rest
        .patch(format!("{base}/api/auth/me"))
        .bearer_auth(&token)
        .json(&json!({"name": "Ада", "locale": "ru", "time_zone": "Europe/Moscow"}))
        .send()
        .await
        .unwrap();
    let me = ok(me, 200).await;
    assert_eq!(
        (me["locale"].as_str(), me["time_zone"].as_str()),
        (Some("ru"), Some("Europe/Moscow"))
    );
    let bad = rest
        .patch(format!("{base}/api/auth/me"))
        .bearer_auth(&token)
        .json(&json!({"time_zone": "Moscow"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok(bad, 400).await["error"]["field"], "time_zone");
    let me = ok(get("/api/auth/me", &token).await.unwrap(), 200).await;
    assert_eq!(me["name"], "Ада", "{me}");

    // Usage over time: this flow's generations, today, in the reader's zone.
    let history = ok(
        get("/api/subscriptions/usage/history?time_zone=Europe/Moscow", &token).await.unwrap(),
        200,
    )
    .await;
    assert_eq!(history["time_zone"], "Europe/Moscow");
    assert_eq!(history["periods"][0]["current"], true, "{history}");
    let today = history["days"].as_array().unwrap().last().unwrap().clone();
    assert!(today["generations"].as_u64().unwrap() >= 3, "{history}");

    // Log out: the same token is refused at once.
    let out = rest
        .post(format!("{base}/api/auth/logout"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let me = get("/api/auth/me", &token).await.unwrap();
    assert_eq!(me.status(), 401, "{}", me.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_flow_across_separate_serve_processes() {
    let mesh = Mesh::start(&[]).await;
    seed_flow(&mesh.edge(), &mesh.dir.join("outbox")).await;
}

struct Up {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_flow_against_skillup_up() {
    let (up, base) = start_up().await;
    seed_flow(&base, &up.dir.join("outbox")).await;
}

/// `skillup up` on free ports in a fresh data directory, ready; its base URL.
async fn start_up() -> (Up, String) {
    let dir = std::env::temp_dir().join(format!("skillup-e2e-{}", testing::unique()));
    let key = SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap();
    KeyStore::new(dir.join("keys")).store(&key, true).unwrap();
    let (grpc, http) = (free_port(), free_port());
    let child = skillup()
        .args(["up", "--grpc-addr", &format!("127.0.0.1:{grpc}"), "--http-addr"])
        .arg(format!("127.0.0.1:{http}"))
        .arg("--data-dir")
        .arg(&dir)
        .env("SKILLUP_AUTH__BCRYPT_COST", "4")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let up = Up { child, dir };
    let base = format!("http://127.0.0.1:{http}");
    let mut ready = false;
    for _ in 0..300 {
        if reqwest::get(format!("{base}/readyz")).await.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "`skillup up` never got ready");
    (up, base)
}

/// Registers `account` and confirms its address from the email.
async fn register_verified(rest: &reqwest::Client, base: &str, outbox: &Path, account: &Value) {
    let res = rest.post(format!("{base}/api/auth/register")).json(account).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let verify = mailed_token(outbox, account["email"].as_str().unwrap());
    let res = rest
        .post(format!("{base}/api/auth/verify-email"))
        .json(&json!({"token": verify}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_the_notification_service_never_heard_of_still_gets_mail() {
    use sea_orm::{ConnectionTrait, Statement};
    let mesh = Mesh::start(&[("SKILLUP_NOTIFICATION__DIGEST_SECS", "1")]).await;
    let (base, outbox) = (mesh.edge(), mesh.dir.join("outbox"));
    let rest = reqwest::Client::new();
    let email = format!("unheard-{}@example.com", testing::unique());
    let account = json!({"email": email, "password": "correct horse battery"});
    register_verified(&rest, &base, &outbox, &account).await;
    // As if the account predated the notification service: its contact is not on file.
    let db = sea_orm::Database::connect(mesh.database_url()).await.unwrap();
    let pg = sea_orm::DatabaseBackend::Postgres;
    let count = Statement::from_sql_and_values(
        pg,
        "SELECT count(*) AS n FROM notification_contacts WHERE email = $1",
        [email.clone().into()],
    );
    for _ in 0..100 {
        let n: i64 =
            db.query_one_raw(count.clone()).await.unwrap().unwrap().try_get("", "n").unwrap();
        if n == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let forget = Statement::from_sql_and_values(
        pg,
        "DELETE FROM notification_contacts WHERE email = $1",
        [email.clone().into()],
    );
    assert_eq!(db.execute_raw(forget).await.unwrap().rows_affected(), 1);

    let res = rest.post(format!("{base}/api/auth/login")).json(&account).send().await.unwrap();
    let token = ok(res, 200).await["access_token"].as_str().unwrap().to_owned();
    let res = rest
        .post(format!("{base}/api/generate"))
        .bearer_auth(&token)
        .json(&json!({"topic": "volcanoes", "function": "quiz", "mode": "MODE_ASYNC"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    // The finished task's notification asks auth for the contact; the digest mails it.
    let mut mailed = false;
    for _ in 0..300 {
        mailed = std::fs::read_dir(&outbox).into_iter().flatten().any(|e| {
            let body = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
            body.contains(&format!("To: {email}")) && body.contains("volcanoes")
        });
        if mailed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(mailed, "no email about the finished task: {}", mesh.log("notification"));
}
