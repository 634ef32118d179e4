//! Notification benchmark driver (issue #7), run by `scripts/bench-notify` against a running
//! `skillup up` on RabbitMQ: opens `--idle` WebSockets through the edge for one account and
//! reads the server's RSS before and after (memory per idle connection), then publishes
//! `generation.completed` events for `--users` other accounts at each `--rate` per second
//! (several: `--rate 1000,2000,5000`, one after the other on the same sockets) straight onto
//! the bus and times each from its publish to its arrival on its account's open socket; after
//! each rate, waits for the rest to drain and counts what never arrived. Prints one JSON line
//! per rate.

#![allow(clippy::print_stdout)] // the report is this tool's output

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use skillup_kit::bus::{AmqpBus, SharedBus};
use skillup_proto::ai::v1 as aipb;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

#[derive(Parser)]
struct Args {
    /// The edge, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    edge: String,
    /// The server process whose memory is measured.
    #[arg(long)]
    pid: u32,
    #[arg(long)]
    amqp: String,
    /// The deployment's event exchange.
    #[arg(long)]
    exchange: String,
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Events per second; a comma-separated list runs each in turn.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    rate: Vec<u32>,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Accounts the events are spread over (each with one open socket).
    #[arg(long, default_value_t = 50)]
    users: usize,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn now_micros() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros()
}

/// A new account: (token, user id).
async fn account(http: &reqwest::Client, edge: &str) -> (String, String) {
    let email = format!("ws-{}@example.com", uuid::Uuid::now_v7().simple());
    let account = serde_json::json!({"email": email, "password": "correct horse battery"});
    http.post(format!("{edge}/api/auth/register")).json(&account).send().await.expect("register");
    let v: serde_json::Value = http
        .post(format!("{edge}/api/auth/login"))
        .json(&account)
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login json");
    (
        v["access_token"].as_str().expect("token").into(),
        v["user"]["id"].as_str().expect("id").into(),
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(edge: &str, token: &str) -> Ws {
    let url = format!("{}/api/notifications/ws", edge.replacen("http", "ws", 1));
    let mut req = url.into_client_request().expect("url");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("skillup.v1, bearer.{token}").parse().expect("header"),
    );
    tokio_tungstenite::connect_async(req).await.expect("websocket").0
}

#[tokio::main]
async fn main() {
    skillup_kit::install_crypto_provider();
    let a = Args::parse();
    let http = reqwest::Client::new();

    // Memory per idle connection.
    let (idle_token, _) = account(&http, &a.edge).await;
    let before = rss_kib(a.pid);
    let mut idle: Vec<Ws> = Vec::with_capacity(a.idle);
    for chunk in 0..a.idle.div_ceil(250) {
        let n = Ord::min(250, a.idle - chunk * 250);
        let opened = futures::future::join_all((0..n).map(|_| open(&a.edge, &idle_token))).await;
        idle.extend(opened);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(a.pid);
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / a.idle.max(1) as f64;

    // Event-to-socket latency under `rate` events per second, spread over `users` accounts.
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut users = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..a.users {
        let (token, user) = account(&http, &a.edge).await;
        let mut ws = open(&a.edge, &token).await;
        let seen = latencies.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Text(t) => {
                        let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                        if let Some(sent) = v["body"].as_str().and_then(|b| b.parse::<u128>().ok())
                        {
                            seen.lock().expect("lat").push((now_micros() - sent) as u64);
                        }
                    }
                    Message::Ping(p) => {
                        let _ = ws.send(Message::Pong(p)).await;
                    }
                    _ => {}
                }
            }
        }));
        users.push(user);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bus: SharedBus = Arc::new(
        AmqpBus::connect(&a.amqp, a.exchange.clone(), String::new(), Duration::from_secs(10))
            .await
            .expect("amqp"),
    );
    for &rate in &a.rate {
        latencies.lock().expect("lat").clear();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        let end = Instant::now() + Duration::from_secs(a.seconds);
        let mut sent = 0u64;
        let mut pubs = Vec::new();
        while Instant::now() < end {
            tick.tick().await;
            sent += 1;
            let (bus, user) = (bus.clone(), users[sent as usize % users.len()].clone());
            pubs.push(tokio::spawn(async move {
                let task = aipb::Task {
                    id: uuid::Uuid::now_v7().to_string(),
                    status: aipb::TaskStatus::Completed as i32,
                    topic: "bench".into(),
                    function: "quiz".into(),
                    text: now_micros().to_string(),
                    ..Default::default()
                };
                let event = aipb::GenerationCompleted { task: Some(task) };
                skillup_kit::events::publish(&bus, &user, &event).await.is_ok()
            }));
        }
        let published = futures::future::join_all(pubs)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(true)))
            .count();
        // Drained: what has not arrived within 5 s of the last publish is undelivered.
        let drained = Instant::now() + Duration::from_secs(5);
        while Instant::now() < drained && latencies.lock().expect("lat").len() < published {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut l = latencies.lock().expect("lat").clone();
        l.sort_unstable();
        let pct = |p: f64| {
            l.get(((l.len().max(1) - 1) as f64 * p) as usize).copied().unwrap_or(0) as f64 / 1000.0
        };
        println!(
            "{{\"idle_connections\":{},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"bytes_per_idle_connection\":{per_conn:.0},\"events_sent\":{sent},\"events_published\":{published},\"events_delivered\":{},\"undelivered\":{},\"rate\":{rate},\"accounts\":{},\"latency_p50_ms\":{:.2},\"latency_p99_ms\":{:.2}}}",
            idle.len(),
            l.len(),
            published.saturating_sub(l.len()),
            a.users,
            pct(0.5),
            pct(0.99)
        );
        // Quiet between rates.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for r in readers {
        r.abort();
    }
    drop(idle);
}
