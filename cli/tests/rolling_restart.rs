//! Graceful rolling restarts: every component runs as its own `skillup serve` process on the
//! real servers; a steady load of reads goes through the edge from this (second) process while
//! each component in turn gets SIGTERM (health NOT_SERVING → drain → exit) and starts again.
//! The edge retries UNAVAILABLE where repeating is safe, so no request may fail; the load
//! client retries only what the edge itself cannot answer (the edge's own restart: refused or
//! closed connections), as a gRPC client's retry policy would. Tasks submitted while the worker
//! is down complete once it is back. And the notification service SIGKILLed in the middle of a
//! burst of events loses none of them.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::mesh::{COMPONENTS, Mesh};
use serde_json::{Value, json};

const READS: [&str; 6] = [
    "/api/auth/me",
    "/api/catalog/functions",
    "/api/subscriptions/me",
    "/api/payments/balance?currency=RUB",
    "/api/generate",
    "/api/notifications",
];

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    client_retries: AtomicU64,
}

/// One GET as a well-behaved client makes it: transport errors (the edge restarting) are
/// retried with backoff for up to 10 s; any HTTP answer is final.
async fn get(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    tally: &Tally,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut backoff = Duration::from_millis(20);
    loop {
        match client.get(url).bearer_auth(token).send().await {
            Ok(r) if r.status() == 200 => return Ok(()),
            Ok(r) => {
                let status = r.status();
                return Err(format!("{url}: {status} {}", r.text().await.unwrap_or_default()));
            }
            Err(_) if Instant::now() < deadline => {
                tally.client_retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(format!("{url}: {e}")),
        }
    }
}

/// A steady load of reads through the edge: 4 clients, each a fresh keep-alive pool, reads in
/// turn, every outcome counted, each failure with the phase it happened in.
struct Load {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    phase: Arc<std::sync::Mutex<&'static str>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(base: &str, token: &str) -> Load {
        let load = Load {
            tally: Arc::default(),
            stop: Arc::default(),
            errors: Arc::default(),
            phase: Arc::new(std::sync::Mutex::new("steady")),
            clients: Vec::new(),
        };
        let mut clients = Vec::new();
        for i in 0..4 {
            let (tally, stop, errors, phase) =
                (load.tally.clone(), load.stop.clone(), load.errors.clone(), load.phase.clone());
            let (token, base) = (token.to_owned(), base.to_owned());
            clients.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = i;
                while !stop.load(Ordering::Relaxed) {
                    let url = format!("{base}{}", READS[n % READS.len()]);
                    n += 1;
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    match get(&client, &url, &token, &tally).await {
                        Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            let during = *phase.lock().unwrap();
                            errors.lock().unwrap().push(format!("during {during}: {e}"));
                            tally.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        Load { clients, ..load }
    }

    /// Stops the load; asserts that no request failed (and enough ran to mean something).
    async fn finish(self, mesh: &Mesh, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            c.await.unwrap();
        }
        let t = &self.tally;
        let (sent, ok, failed, retried) = (
            t.sent.load(Ordering::Relaxed),
            t.ok.load(Ordering::Relaxed),
            t.failed.load(Ordering::Relaxed),
            t.client_retries.load(Ordering::Relaxed),
        );
        eprintln!(
            "{what}: {sent} requests, {ok} ok, {failed} failed, {retried} client retries (edge restart)"
        );
        let errors = self.errors.lock().unwrap().clone();
        let edge_warnings: Vec<String> =
            mesh.log("edge").lines().filter(|l| l.contains("WARN")).map(str::to_owned).collect();
        assert_eq!(failed, 0, "failed requests: {errors:#?}\nthe edge warned: {edge_warnings:#?}");
        assert_eq!(sent, ok);
        assert!(sent > 200, "too little load to mean anything: {sent}");
    }
}

async fn json(res: reqwest::Response) -> Value {
    let status = res.status();
    let text = res.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_restarts_under_load_with_no_failed_request() {
    // Every protected request asks auth (no reuse of decisions), and no rate limit.
    let mut mesh = Mesh::start(&[
        ("SKILLUP_EDGE__DECISION_CACHE_MS", "0"),
        ("SKILLUP_EDGE__RATE__IP_PER_SEC", "0"),
        ("SKILLUP_EDGE__RATE__AUTH_PER_MIN", "0"),
    ])
    .await;
    let base = mesh.edge();
    let rest = reqwest::Client::new();
    // Verified, so it may queue generations.
    let token = mesh.user("rolling@example.com").await;
    let res = rest
        .post(format!("{base}/api/payments/top-up"))
        .bearer_auth(&token)
        .header("idempotency-key", "rolling-top-up")
        .json(&json!({"amount_minor": 100000, "currency": "RUB"}))
        .send()
        .await
        .unwrap();
    json(res).await;
    let res = rest
        .post(format!("{base}/api/subscriptions"))
        .bearer_auth(&token)
        .json(&json!({"plan": "basic"}))
        .send()
        .await
        .unwrap();
    json(res).await;
    for path in READS {
        let res = rest.get(format!("{base}{path}")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}: {}", res.text().await.unwrap());
    }

    let load = Load::start(&base, &token);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut tasks = Vec::new();
    for c in COMPONENTS {
        *load.phase.lock().unwrap() = c;
        let before = load.tally.ok.load(Ordering::Relaxed);
        let took = if c == "worker" {
            // Work accepted while no worker runs waits in the queue.
            assert!(mesh.stop(c).await.success(), "{}", mesh.log(c));
            for i in 0..5 {
                let res = rest
                    .post(format!("{base}/api/generate/tasks"))
                    .bearer_auth(&token)
                    .json(&json!({"topic": format!("restart {i}"), "function": "quiz"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202);
                tasks.push(json(res).await["id"].as_str().unwrap().to_owned());
            }
            let started = Instant::now();
            mesh.start_again(c).await;
            started.elapsed()
        } else {
            mesh.restart(c).await
        };
        // Steady state again before the next one.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let served = load.tally.ok.load(Ordering::Relaxed) - before;
        eprintln!(
            "restarted {c:<12} in {:>5} ms; {served} requests served meanwhile",
            took.as_millis()
        );
        assert!(served > 0, "no request was served around {c}'s restart");
    }
    load.finish(&mesh, "rolling restart of every component").await;

    // The tasks accepted while the worker was down ran, each once.
    for id in &tasks {
        let mut status = String::new();
        for _ in 0..200 {
            let t = json(
                rest.get(format!("{base}/api/generate/{id}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            status = t["status"].as_str().unwrap().to_owned();
            if status == "TASK_STATUS_COMPLETED" {
                assert_eq!(t["attempts"], 1, "{t}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, "TASK_STATUS_COMPLETED", "task {id}");
    }
}

/// Issue 27: the identity key rotated the way OPERATIONS says — `keys identity add`, roll out;
/// `promote`, roll out; `retire` the old one, roll out — across separate processes under load,
/// with no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_key_rotates_under_load_with_no_failed_request() {
    let mut mesh = Mesh::start(&[
        ("SKILLUP_EDGE__DECISION_CACHE_MS", "0"),
        ("SKILLUP_EDGE__RATE__IP_PER_SEC", "0"),
        ("SKILLUP_EDGE__RATE__AUTH_PER_MIN", "0"),
    ])
    .await;
    let base = mesh.edge();
    let token = mesh.user("rotation@example.com").await;
    let dir = mesh.dir.clone();
    let keys = |args: &[&str]| {
        let out = common::skillup()
            .args(["keys", "identity"])
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let old = keys(&["list"]).split_whitespace().next().unwrap().to_owned();
    let new = keys(&["add"]).split_whitespace().nth(3).unwrap().to_owned();
    let load = Load::start(&base, &token);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (step, args) in [
        ("add", vec![]),
        ("promote", vec!["promote", new.as_str()]),
        ("retire", vec!["retire", &old]),
    ] {
        if !args.is_empty() {
            keys(&args);
        }
        *load.phase.lock().unwrap() = step;
        for c in COMPONENTS {
            mesh.restart(c).await;
        }
        eprintln!("identity rotation: `{step}` rolled out to {} components", COMPONENTS.len());
    }
    assert_eq!(keys(&["list"]).trim(), format!("{new}  (signing)"));
    load.finish(&mesh, "identity key rotation in three rollouts").await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The notification socket through the edge, after `after_id` as a reconnecting console
/// opens it; `None` while the edge cannot open it.
async fn notifications_socket(base: &str, token: &str, after_id: &str) -> Option<Ws> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url =
        format!("{}/api/notifications/ws?after_id={after_id}", base.replacen("http", "ws", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", format!("skillup.v1, bearer.{token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.ok().map(|(ws, _)| ws)
}

/// Issue 22: every event the bus confirmed reaches the person — on their open socket (which
/// reconnects after the last id it saw, as the console does) and in their list — although the
/// notification service is SIGKILLed in the middle of the burst and started again: stored once
/// each, none lost, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_killed_mid_burst_lose_no_event() {
    use futures::{SinkExt, StreamExt};
    use skillup_kit::bus::{AmqpBus, SharedBus};
    use skillup_proto::ai::v1 as aipb;
    use tokio_tungstenite::tungstenite::Message;

    const EVENTS: usize = 1_500;
    let mut mesh = Mesh::start(&[
        ("SKILLUP_EDGE__RATE__IP_PER_SEC", "0"),
        ("SKILLUP_EDGE__RATE__AUTH_PER_MIN", "0"),
    ])
    .await;
    let base = mesh.edge();
    let token = mesh.user("burst@example.com").await;
    let rest = reqwest::Client::new();
    let me =
        json(rest.get(format!("{base}/api/auth/me")).bearer_auth(&token).send().await.unwrap())
            .await;
    let user = me["id"].as_str().unwrap().to_owned();
    let bus: SharedBus = Arc::new(
        AmqpBus::connect(
            &skillup_testkit::amqp_url(),
            mesh.setting("SKILLUP_BUS__EXCHANGE").unwrap(),
            mesh.setting("SKILLUP_BUS__QUEUE_PREFIX").unwrap(),
            Duration::from_secs(30),
        )
        .await
        .unwrap(),
    );
    let mut ws = notifications_socket(&base, &token, "").await.expect("the socket opens");
    // The edge opens the subscription behind the socket after the handshake: one event seen on
    // it says the subscription is in place (a subscription without `after_id` sends only what
    // is stored after it).
    let first = aipb::GenerationCompleted {
        task: Some(aipb::Task {
            id: "warm-up".into(),
            function: "quiz".into(),
            ..Default::default()
        }),
    };
    let mut warm_ups = 0;
    let mut last_id = loop {
        warm_ups += 1;
        let id = format!("warm-up-{warm_ups}");
        skillup_kit::events::publish_with_id(&bus, &id, &user, &first).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                break serde_json::from_str::<Value>(&t).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
            }
            Ok(Some(Ok(_))) | Err(_) => continue,
            Ok(other) => panic!("the socket closed: {other:?}"),
        }
    };

    // The burst, 500 a second: every publish confirmed by the broker.
    let confirmed = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (bus, user, confirmed) = (bus.clone(), user.clone(), confirmed.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            let mut publishes = Vec::with_capacity(EVENTS);
            for i in 0..EVENTS {
                tick.tick().await;
                let (bus, user, confirmed) = (bus.clone(), user.clone(), confirmed.clone());
                publishes.push(tokio::spawn(async move {
                    let task = aipb::Task {
                        id: uuid::Uuid::now_v7().to_string(),
                        status: aipb::TaskStatus::Completed as i32,
                        topic: format!("burst {i}"),
                        function: "quiz".into(),
                        ..Default::default()
                    };
                    let event = aipb::GenerationCompleted { task: Some(task) };
                    skillup_kit::events::publish_with_id(&bus, &format!("kill-{i}"), &user, &event)
                        .await
                        .expect("the broker confirms");
                    confirmed.fetch_add(1, Ordering::Relaxed);
                }));
            }
            for p in publishes {
                p.await.unwrap();
            }
        })
    };

    let mut seen = std::collections::HashMap::<String, u32>::new();
    let (mut reconnects, mut killed_at) = (0u32, None);
    // Until every one has arrived, or nothing has for 20 s.
    let mut progress = Instant::now();
    while seen.len() < EVENTS && progress.elapsed() < Duration::from_secs(20) {
        if killed_at.is_none() && seen.len() >= EVENTS / 4 {
            killed_at = Some(seen.len());
            eprintln!(
                "killing notification: {} confirmed, {} on the socket",
                confirmed.load(Ordering::Relaxed),
                seen.len()
            );
            mesh.kill("notification").await;
            mesh.start_again("notification").await;
        }
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                let title = v["title"].as_str().unwrap().to_owned();
                *seen.entry(title).or_default() += 1;
                progress = Instant::now();
                last_id = v["id"].as_str().unwrap().to_owned();
            }
            Ok(Some(Ok(Message::Ping(p)))) => {
                let _ = ws.send(Message::Pong(p)).await;
            }
            Ok(Some(Ok(_))) => {}
            // Closed (the service went away under the edge), broken, or silent: open again
            // after the last one seen.
            other => loop {
                eprintln!("socket: {other:?} after {} seen; opening it again", seen.len());
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some(again) = notifications_socket(&base, &token, &last_id).await {
                    ws = again;
                    reconnects += 1;
                    break;
                }
            },
        }
    }
    publisher.await.unwrap();
    let list = json(
        rest.get(format!("{base}/api/notifications")).bearer_auth(&token).send().await.unwrap(),
    )
    .await;
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "on the socket twice: {twice:?}");
    let want: std::collections::BTreeSet<String> =
        (0..EVENTS).map(|i| format!("Your quiz about «burst {i}» is ready")).collect();
    let missing: Vec<_> = want.iter().filter(|t| !seen.contains_key(*t)).collect();
    assert!(
        missing.is_empty(),
        "never on the socket (killed after {killed_at:?}; {} in the list): {missing:?}",
        list["unread_count"]
    );
    assert_eq!(seen.len(), EVENTS);
    assert_eq!(list["unread_count"], json!(EVENTS + warm_ups), "stored once each (and the first)");
    eprintln!(
        "fault notification-sigkill: published {} (confirmed), on the socket {}, in the list {}, \
         lost 0, duplicated 0; killed after {} had arrived, the socket reopened {reconnects}×",
        confirmed.load(Ordering::Relaxed),
        seen.len(),
        list["unread_count"],
        killed_at.unwrap_or(0)
    );
}
