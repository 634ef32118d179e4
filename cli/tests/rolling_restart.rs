//! Graceful rolling restarts: every component runs as its own `skillup serve` process on the
//! real servers; a steady load of reads goes through the edge from this (second) process while
//! each component in turn gets SIGTERM (health NOT_SERVING → drain → exit) and starts again.
//! The edge retries UNAVAILABLE where repeating is safe, so no request may fail; the load
//! client retries only what the edge itself cannot answer (the edge's own restart: refused or
//! closed connections), as a gRPC client's retry policy would. Tasks submitted while the worker
//! is down complete once it is back.

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
