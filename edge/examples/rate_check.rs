//! What the shared rate-limit check costs at the edge (issue 24's goal: ≤ 0.3 ms p50). Times
//! `Limits::check_ip` — the edge's own code: the breaker, the timeout, the key, fred's round
//! trip to Redis and the Lua GCRA script — on a fresh client address each call (as traffic
//! from many clients), one call at a time, beside two anchors measured in the same rounds: the
//! same check over the in-process cache (the edge's code without the network), and a plain
//! Redis `GET` through the same client (the network's floor).
//!
//! `cargo run --release -p skillup-edge --example rate_check -- [rounds] [calls per round]`
//! (Redis at `$REDIS`, default `redis://127.0.0.1:6379`).

#![allow(clippy::print_stdout)] // the report is this tool's output

use std::{net::IpAddr, sync::Arc, time::Instant};

use skillup_edge::{config::RateConfig, limits::Limits};
use skillup_kit::cache::{Cache, MemoryCache, RedisCache, SharedCache};

fn config() -> RateConfig {
    RateConfig {
        ip_per_sec: 1_000,
        ip_burst: 1_000,
        auth_per_min: 0,
        auth_burst: 0,
        generate_per_min: Default::default(),
        generate_burst: 0,
        fallback_share: 0.5,
        shared_timeout_ms: 50,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn time(n: usize, mut call: impl AsyncFnMut(usize)) -> (f64, f64) {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        call(i).await;
        took.push(start.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    (percentile(&took, 0.5), percentile(&took, 0.99))
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let url = std::env::var("REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("bench:{}:", uuid::Uuid::now_v7());
    let redis = Arc::new(RedisCache::connect(&url, prefix).await.expect("Redis"));
    let shared = Limits::new(&config(), redis.clone() as SharedCache);
    let memory = Limits::new(&config(), Arc::new(MemoryCache::new()) as SharedCache);
    let ip = |round: usize, i: usize| -> IpAddr {
        let k = (round * n + i) as u32;
        [10, (k >> 16) as u8, (k >> 8) as u8, k as u8].into()
    };
    // Warm the connections and the script cache.
    for i in 0..200 {
        let _ = shared.check_ip(ip(rounds + 1, i)).await;
    }
    let (mut s50, mut s99, mut m50, mut g50) = (vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        let (p50, p99) = time(n, async |i| {
            shared.check_ip(ip(r, i)).await.expect("allowed").expect("a budget");
        })
        .await;
        s50.push(p50);
        s99.push(p99);
        let (p50, _) = time(n, async |i| {
            memory.check_ip(ip(r, i)).await.expect("allowed").expect("a budget");
        })
        .await;
        m50.push(p50);
        let (p50, _) = time(n, async |i| {
            let _ = redis.get(&format!("absent:{i}")).await.expect("GET");
        })
        .await;
        g50.push(p50);
    }
    println!(
        "{rounds} rounds of {n} calls each, one at a time; ms, median of the rounds (min–max)"
    );
    for (name, v) in [
        ("shared check (Redis, Lua GCRA) p50", s50),
        ("shared check (Redis, Lua GCRA) p99", s99),
        ("same check, in-process cache p50", m50),
        ("plain Redis GET p50 (floor)", g50),
    ] {
        let (m, lo, hi) = median(v);
        println!("{name:<40} {m:>7.4} ({lo:.4}–{hi:.4})");
    }
}
