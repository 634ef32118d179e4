//! Generation benchmark driver (issue #6), run by `scripts/bench-ai` as processes of their own:
//!
//! - `gen_load fake --port P --latency-ms L --words W`: the fake provider with a fixed latency;
//! - `gen_load load --edge URL --scenario sync|stream|queued|direct …`: an open-loop load at a
//!   fixed rate (or closed-loop with `--rate 0 --concurrency C`) through the edge, with its own
//!   accounts (premium, so quota never interferes). `direct` calls the fake provider itself at
//!   the same rate: the anchor the overhead is measured against. `stream` measures the time to
//!   the first token event; `queued` the time to a 202.
//! - `gen_load load --scenario openai|openai-stream --base URL --model M (--key K | --api-keys)`:
//!   OpenAI's `POST {base}/chat/completions` — against SkillUp's `/v1` (with `--api-keys`: API
//!   keys of this run's own premium accounts, made through `--edge`), LiteLLM's proxy (its master
//!   key) or the fake provider itself (the anchor). `openai-stream` measures the time to the first
//!   chunk that carries text.
//!
//! Prints one JSON line per run.

#![allow(clippy::print_stdout)] // the report is this tool's output

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use futures::StreamExt;
use skillup_ai::fake::{Behavior, FakeProvider};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the fake provider until killed.
    Fake {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        #[arg(long, default_value_t = 50)]
        words: usize,
    },
    /// Drives load and prints a JSON line.
    Load {
        #[arg(long)]
        edge: String,
        /// sync, stream, queued or direct.
        #[arg(long)]
        scenario: String,
        /// Requests per second (open loop); 0 = closed loop with --concurrency.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 8)]
        users: usize,
        /// The fake provider's base URL (for `direct`).
        #[arg(long, default_value = "")]
        provider: String,
        /// An OpenAI-compatible base URL (for `openai` and `openai-stream`).
        #[arg(long, default_value = "")]
        base: String,
        /// The model those requests name.
        #[arg(long, default_value = "m")]
        model: String,
        /// The bearer key those requests carry.
        #[arg(long, default_value = "")]
        key: String,
        /// Carry API keys of this run's own premium accounts (made through `--edge`) instead.
        #[arg(long)]
        api_keys: bool,
    },
}

#[tokio::main]
async fn main() {
    skillup_kit::install_crypto_provider();
    match Cli::parse().cmd {
        Cmd::Fake { port, latency_ms, words } => {
            let _fake = FakeProvider::start_on(
                ([127, 0, 0, 1], port).into(),
                Behavior::Answer {
                    words,
                    first_token: Duration::from_millis(latency_ms),
                    per_token: Duration::ZERO,
                },
            )
            .await;
            tokio::signal::ctrl_c().await.ok();
            std::future::pending::<()>().await;
        }
        Cmd::Load {
            edge,
            scenario,
            rate,
            concurrency,
            seconds,
            users,
            provider,
            base,
            model,
            key,
            api_keys,
        } => {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .tcp_nodelay(true)
                .build()
                .expect("client");
            let openai = scenario.starts_with("openai");
            let tokens = if openai && !api_keys {
                vec![key]
            } else if scenario == "direct" {
                vec![]
            } else {
                let tokens = accounts(&http, &edge, users).await;
                if api_keys { keys(&http, &edge, &tokens).await } else { tokens }
            };
            let run = Arc::new(Run { http, edge, scenario, tokens, provider, base, model });
            let (ok, errors, mut micros, secs) =
                drive(run.clone(), rate, concurrency, seconds).await;
            micros.sort_unstable();
            let pct = |p: f64| {
                let i = ((micros.len().max(1) - 1) as f64 * p) as usize;
                micros.get(i).copied().unwrap_or(0) as f64 / 1000.0
            };
            println!(
                "{{\"scenario\":\"{}\",\"rate\":{rate},\"ok\":{ok},\"errors\":{errors},\"per_second\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
                run.scenario,
                ok as f64 / secs,
                pct(0.5),
                pct(0.99)
            );
        }
    }
}

struct Run {
    http: reqwest::Client,
    edge: String,
    scenario: String,
    tokens: Vec<String>,
    provider: String,
    base: String,
    model: String,
}

/// Accounts of this run's own on the premium plan.
async fn accounts(http: &reqwest::Client, edge: &str, n: usize) -> Vec<String> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let mut tokens = Vec::new();
    for i in 0..n {
        let email = format!("bench-{run}-{i}@example.com");
        let account = serde_json::json!({"email": email, "password": "correct horse battery"});
        http.post(format!("{edge}/api/auth/register"))
            .json(&account)
            .send()
            .await
            .expect("register");
        let res: serde_json::Value = http
            .post(format!("{edge}/api/auth/login"))
            .json(&account)
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login json");
        let token = res["access_token"].as_str().expect("token").to_owned();
        let ok = http
            .post(format!("{edge}/api/payments/top-up"))
            .bearer_auth(&token)
            .header("idempotency-key", "bench")
            .json(&serde_json::json!({"amount_minor": 249000, "currency": "RUB"}))
            .send()
            .await
            .expect("top up")
            .status()
            .is_success();
        assert!(ok, "top up refused");
        let ok = http
            .post(format!("{edge}/api/subscriptions"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"plan": "premium"}))
            .send()
            .await
            .expect("subscribe")
            .status()
            .is_success();
        assert!(ok, "subscribe refused");
        tokens.push(token);
    }
    tokens
}

/// An API key for each signed-in account.
async fn keys(http: &reqwest::Client, edge: &str, tokens: &[String]) -> Vec<String> {
    let mut keys = Vec::new();
    for token in tokens {
        let res: serde_json::Value = http
            .post(format!("{edge}/api/auth/api-keys"))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": "bench"}))
            .send()
            .await
            .expect("create key")
            .json()
            .await
            .expect("key json");
        keys.push(res["secret"].as_str().expect("the key's secret").to_owned());
    }
    keys
}

/// Whether an OpenAI SSE line is a chunk carrying text.
fn has_text(line: &str) -> bool {
    let Some(data) = line.strip_prefix("data:") else { return false };
    serde_json::from_str::<serde_json::Value>(data.trim()).is_ok_and(|chunk| {
        chunk["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty())
    })
}

/// One OpenAI-format chat completion: the whole answer's latency or, streamed, the first text's.
async fn openai(run: &Run, i: u64, started: Instant) -> Option<u32> {
    let stream = run.scenario == "openai-stream";
    let res = run
        .http
        .post(format!("{}/chat/completions", run.base))
        .bearer_auth(run.tokens.get(i as usize % run.tokens.len().max(1))?)
        .json(&serde_json::json!({
            "model": run.model,
            "messages": [{"role": "user", "content": format!("bench topic {i}")}],
            "max_tokens": 100,
            "stream": stream,
        }))
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        static SHOWN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
            eprintln!("refused: {} {}", res.status(), res.text().await.unwrap_or_default());
        }
        return None;
    }
    if !stream {
        let body: serde_json::Value = res.json().await.ok()?;
        body["choices"][0]["message"]["content"].as_str().filter(|t| !t.is_empty())?;
        return Some(started.elapsed().as_micros() as u32);
    }
    let mut s = res.bytes_stream();
    let (mut pending, mut first, mut done) = (String::new(), None, false);
    while let Some(chunk) = s.next().await {
        pending.push_str(&String::from_utf8_lossy(&chunk.ok()?));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if first.is_none() && has_text(&line) {
                first = Some(started.elapsed().as_micros() as u32);
            }
            done |= line.trim() == "data: [DONE]";
        }
    }
    done.then_some(())?;
    first
}

/// One request; its latency in microseconds, or `None` on failure.
async fn one(run: &Run, i: u64) -> Option<u32> {
    let started = Instant::now();
    let body = serde_json::json!({
        "topic": format!("bench topic {i}"),
        "function": "quiz",
        "mode": if run.scenario == "queued" { "MODE_ASYNC" } else { "MODE_SYNC" },
        "max_tokens": 100,
    });
    let token = run.tokens.get(i as usize % run.tokens.len().max(1));
    let elapsed = || Some(started.elapsed().as_micros() as u32);
    match run.scenario.as_str() {
        "openai" | "openai-stream" => openai(run, i, started).await,
        "direct" => {
            let res = run
                .http
                .post(format!("{}/chat/completions", run.provider))
                .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": body["topic"]}], "max_completion_tokens": 100}))
                .send()
                .await
                .ok()?;
            res.status().is_success().then_some(())?;
            res.bytes().await.ok()?;
            elapsed()
        }
        "stream" => {
            let res = run
                .http
                .post(format!("{}/api/generate", run.edge))
                .bearer_auth(token?)
                .header("accept", "text/event-stream")
                .json(&body)
                .send()
                .await
                .ok()?;
            res.status().is_success().then_some(())?;
            let mut s = res.bytes_stream();
            let mut seen = String::new();
            let mut first = None;
            while let Some(chunk) = s.next().await {
                seen.push_str(&String::from_utf8_lossy(&chunk.ok()?));
                if first.is_none() && seen.contains("\"delta\"") {
                    first = elapsed();
                }
            }
            seen.contains("\"finished\"").then_some(())?;
            first
        }
        _ => {
            let res = run
                .http
                .post(format!("{}/api/generate", run.edge))
                .bearer_auth(token?)
                .json(&body)
                .send()
                .await
                .ok()?;
            let want = if run.scenario == "queued" { 202 } else { 200 };
            if res.status().as_u16() != want {
                static SHOWN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
                    eprintln!("refused: {} {}", res.status(), res.text().await.unwrap_or_default());
                }
                return None;
            }
            res.bytes().await.ok()?;
            elapsed()
        }
    }
}

async fn drive(
    run: Arc<Run>,
    rate: u32,
    concurrency: usize,
    seconds: u64,
) -> (u64, u64, Vec<u32>, f64) {
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut handles: Vec<tokio::task::JoinHandle<Vec<Option<u32>>>> = Vec::new();
    if rate > 0 {
        // Open loop: one request per tick whatever the answers do (no coordinated omission).
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut i = 0u64;
        while Instant::now() < end {
            tick.tick().await;
            let run = run.clone();
            handles.push(tokio::spawn(async move { vec![one(&run, i).await] }));
            i += 1;
        }
    } else {
        // Closed loop: each caller sends its next request when the last is answered.
        for c in 0..concurrency {
            let run = run.clone();
            handles.push(tokio::spawn(async move {
                let mut out = Vec::new();
                let mut n = 0u64;
                while Instant::now() < end {
                    out.push(one(&run, (c as u64) << 32 | n).await);
                    n += 1;
                }
                out
            }));
        }
    }
    let mut micros = Vec::new();
    let mut errors = 0;
    for h in handles {
        for r in h.await.expect("request task") {
            match r {
                Some(m) => micros.push(m),
                None => errors += 1,
            }
        }
    }
    let secs = start.elapsed().as_secs_f64().max(0.001);
    (micros.len() as u64, errors, micros, secs)
}
