//! Scale-out on the split mesh (issue 25): three replicas of auth, each its own `skillup serve
//! auth` on its own loopback address, and one name, `auth.mesh.test`, that the system resolver
//! answers with every replica running (as a headless Service's name with every ready pod; see
//! `Mesh::start_scaled`). Under a steady load through the edge: calls spread evenly, a replica
//! started mid-run gets its share within the resolve interval, one stopped with SIGTERM costs
//! no request, one that hangs (SIGSTOP) is routed around. Per-replica counts are the edge's
//! `grpc_client_calls_total{service, backend}` and are printed.

mod common;

use std::{
    collections::BTreeMap,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::mesh::Mesh;

/// Calls per backend of `service`, read from a process's `/metrics`.
async fn per_backend(ops: &str, service: &str) -> BTreeMap<String, u64> {
    let text = reqwest::get(format!("{ops}/metrics")).await.unwrap().text().await.unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("grpc_client_calls_total{")) {
        let (labels, value) = line.rsplit_once(' ').unwrap();
        if !labels.contains(&format!("service=\"{service}\"")) {
            continue;
        }
        let backend = labels.split("backend=\"").nth(1).unwrap().split('"').next().unwrap();
        out.insert(backend.to_owned(), value.parse::<f64>().unwrap() as u64);
    }
    out
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0))).collect()
}

fn assert_even(share: &BTreeMap<String, u64>, replicas: usize, what: &str) {
    let total: u64 = share.values().sum();
    let even = total as f64 / replicas as f64;
    let live: Vec<_> = share.iter().filter(|(_, n)| **n > 0).collect();
    assert_eq!(live.len(), replicas, "{what}: calls on {live:?}");
    for (backend, n) in live {
        let off = (*n as f64 - even).abs() / even;
        assert!(
            off <= 0.15,
            "{what}: {backend} got {n} of {total} ({:.0} % off): {share:?}",
            off * 100.0
        );
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

/// `GET /api/auth/me` (auth's GetMe, beside the edge's own token checks) from eight clients
/// until stopped.
fn load(
    base: &str,
    token: &str,
    stop: Arc<AtomicBool>,
) -> (Arc<Tally>, Vec<tokio::task::JoinHandle<()>>) {
    let tally = Arc::new(Tally::default());
    let client = reqwest::Client::new();
    let tasks = (0..8)
        .map(|_| {
            let (client, tally, stop) = (client.clone(), tally.clone(), stop.clone());
            let (url, token) = (format!("{base}/api/auth/me"), token.to_owned());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.get(&url).bearer_auth(&token).send().await {
                        Ok(r) if r.status() == 200 => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            let e = match other {
                                Ok(r) => {
                                    format!("{} {}", r.status(), r.text().await.unwrap_or_default())
                                }
                                Err(e) => e.to_string(),
                            };
                            let mut errors = tally.errors.lock().unwrap();
                            if errors.len() < 20 {
                                errors.push(e);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    (tally, tasks)
}

/// Lets the load run until `n` more requests were answered.
async fn answered(tally: &Tally, n: u64) {
    let until = tally.ok.load(Ordering::Relaxed) + n;
    while tally.ok.load(Ordering::Relaxed) < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_every_auth_replica_and_survive_them_coming_and_going() {
    const RESOLVE_MS: u64 = 1_000;
    let resolve = RESOLVE_MS.to_string();
    let mut mesh = Mesh::start_scaled(
        // A 2 s deadline on the edge's calls: a hung replica's calls fail at it.
        &[
            ("SKILLUP_GRPC__RESOLVE_INTERVAL_MS", &resolve),
            ("SKILLUP_EDGE__TIMEOUT_MS", "2000"),
            ("SKILLUP_EDGE__RATE__IP_PER_SEC", "0"),
            ("SKILLUP_EDGE__RATE__AUTH_PER_MIN", "0"),
        ],
        &[("auth", 3)],
    )
    .await;
    let (edge, base) = (mesh.ops("edge"), mesh.edge());
    let token = mesh.user("scale@example.com").await;
    let addr = |p: &str, mesh: &Mesh| mesh.grpc(p);
    let (a1, a2, a3) = (addr("auth", &mesh), addr("auth#2", &mesh), addr("auth#3", &mesh));
    // The third is down when the load starts.
    assert!(mesh.stop("auth#3").await.success());

    let stop = Arc::new(AtomicBool::new(false));
    let (tally, tasks) = load(&base, &token, stop.clone());
    answered(&tally, 200).await;

    let before = per_backend(&edge, "auth").await;
    answered(&tally, 1_500).await;
    let two = delta(&before, &per_backend(&edge, "auth").await);
    eprintln!("two replicas up, the third stopped (out of DNS): {two:?}");
    assert_eq!(two.get(&a3).copied().unwrap_or(0), 0);
    assert_even(&two, 2, "two replicas");

    mesh.start_again("auth#3").await;
    tokio::time::sleep(Duration::from_millis(RESOLVE_MS)).await;
    let before = per_backend(&edge, "auth").await;
    answered(&tally, 2_000).await;
    let three = delta(&before, &per_backend(&edge, "auth").await);
    eprintln!("after the third started (one resolve interval later): {three:?}");
    assert_even(&three, 3, "three replicas");

    // SIGTERM mid-load: it drains and stops; no request fails.
    let before = per_backend(&edge, "auth").await;
    answered(&tally, 300).await;
    assert!(mesh.stop("auth#2").await.success(), "{}", mesh.log("auth#2"));
    answered(&tally, 1_000).await;
    let after_stop = delta(&before, &per_backend(&edge, "auth").await);
    eprintln!("auth#2 stopped with SIGTERM mid-load: {after_stop:?}");
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "{:?}", tally.errors.lock().unwrap());

    // SIGSTOP: the replica hangs with its connections open. Its calls run into their
    // deadline; the balancer ejects it and the rest go to the other.
    let hung = mesh.pid("auth");
    let before = per_backend(&edge, "auth").await;
    let failed_before = tally.failed.load(Ordering::Relaxed);
    signal(hung, "-STOP");
    tokio::time::sleep(Duration::from_secs(12)).await;
    let failed_while_found_out = tally.failed.load(Ordering::Relaxed) - failed_before;
    let during = delta(&before, &per_backend(&edge, "auth").await);
    let before = per_backend(&edge, "auth").await;
    let failed_before = tally.failed.load(Ordering::Relaxed);
    answered(&tally, 1_000).await;
    let routed = delta(&before, &per_backend(&edge, "auth").await);
    let failed_after = tally.failed.load(Ordering::Relaxed) - failed_before;
    signal(hung, "-CONT");
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "auth SIGSTOPped: {failed_while_found_out} requests failed while it was found out \
         ({during:?}); then {failed_after} failed of 1000 ({routed:?}); errors: {:?}",
        tally.errors.lock().unwrap().iter().take(3).collect::<Vec<_>>()
    );
    assert!(failed_while_found_out <= 16, "only what it held failed: {failed_while_found_out}");
    assert_eq!(failed_after, 0, "routed around once found out");
    assert!(routed.get(&a1).copied().unwrap_or(0) <= 2, "the hung one is out: {routed:?}");
    assert!(routed[&a3] >= 990, "the one left took the load: {routed:?}");
    let _ = a2;
}

/// `n` generations (numbered from `from`), four at a time; the failures.
async fn generations(
    rest: reqwest::Client,
    base: String,
    token: String,
    from: usize,
    n: usize,
) -> Vec<String> {
    use futures::StreamExt;
    futures::stream::iter(from..from + n)
        .map(|i| {
            let req = rest
                .post(format!("{base}/api/generate"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"topic": format!("spread {i}"), "function": "quiz"}));
            async move {
                let res = req.send().await.map_err(|e| e.to_string())?;
                match res.status().as_u16() {
                    200 => Ok(()),
                    s => Err(format!("{s} {}", res.text().await.unwrap_or_default())),
                }
            }
        })
        .buffer_unordered(4)
        .filter_map(|r: Result<(), String>| async move { r.err() })
        .collect()
        .await
}

/// One service-to-service path: ai holds and settles quota at subscribe for every generation.
/// With two subscribe replicas those calls spread evenly, and one stopped with SIGTERM in the
/// middle of the generations costs none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_calls_from_ai_spread_over_every_subscribe_replica_and_survive_one_stopping() {
    let mut mesh = Mesh::start_scaled(
        &[
            ("SKILLUP_GRPC__RESOLVE_INTERVAL_MS", "1000"),
            ("SKILLUP_EDGE__RATE__IP_PER_SEC", "0"),
            ("SKILLUP_EDGE__RATE__AUTH_PER_MIN", "0"),
            ("SKILLUP_EDGE__RATE__GENERATE_PER_MIN__BASIC", "100000"),
        ],
        &[("subscribe", 2)],
    )
    .await;
    let (ai, base) = (mesh.ops("ai"), mesh.edge());
    let token = mesh.user("quota-spread@example.com").await;
    let rest = reqwest::Client::new();
    let res = rest
        .post(format!("{base}/api/payments/top-up"))
        .bearer_auth(&token)
        .header("idempotency-key", "scale-top-up")
        .json(&serde_json::json!({"amount_minor": 100000, "currency": "RUB"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let res = rest
        .post(format!("{base}/api/subscriptions"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"plan": "basic"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());

    let run =
        |from: usize, n: usize| generations(rest.clone(), base.clone(), token.clone(), from, n);
    let before = per_backend(&ai, "subscribe").await;
    let failed = run(0, 100).await;
    assert!(failed.is_empty(), "{failed:?}");
    let both = delta(&before, &per_backend(&ai, "subscribe").await);
    eprintln!("ai → subscribe, two replicas, 100 generations: {both:?}");
    assert_even(&both, 2, "ai → subscribe");

    let before = per_backend(&ai, "subscribe").await;
    let generations = tokio::spawn(run(100, 120));
    while delta(&before, &per_backend(&ai, "subscribe").await).values().sum::<u64>() < 40 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(mesh.stop("subscribe#2").await.success(), "{}", mesh.log("subscribe#2"));
    let failed = generations.await.unwrap();
    let after = delta(&before, &per_backend(&ai, "subscribe").await);
    eprintln!(
        "subscribe#2 stopped with SIGTERM during 120 generations: {after:?}; failed {failed:?}"
    );
    assert!(failed.is_empty(), "generations failed while a subscribe replica stopped: {failed:?}");
}
