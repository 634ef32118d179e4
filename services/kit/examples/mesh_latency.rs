//! What the mesh adds to one call on a warm connection (issue 24's goal: mutual TLS and the
//! caller check together ≤ 0.1 ms p50 over plaintext). One `GrpcServer` with the mesh's TLS on
//! its one port, called one call at a time over two warm connections in turns: plaintext and
//! mutual TLS (with an edge certificate). The call is health's `Check`, which every caller may
//! make, so both connections run the same code but the record layer; the caller check itself
//! (a binary search of the contract's table, per call) is timed on its own below.
//!
//! `cargo run --release -p skillup-kit --example mesh_latency -- [rounds] [calls per round]`

#![allow(clippy::print_stdout)] // the report is this tool's output

mod common;

use std::time::{Duration, Instant};

use skillup_kit::mesh::{self, MeshConnector, MeshTls, Peer};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn round(
    client: &mut HealthClient<tonic::transport::Channel>,
    calls: usize,
) -> Vec<Duration> {
    let mut took = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        client.check(HealthCheckRequest { service: String::new() }).await.expect("health answers");
        took.push(start.elapsed());
    }
    took.sort();
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let calls: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let bench = common::Bench::start("mesh-bench").await;
    let (addr, tls) = (bench.addr, |c: &str| bench.tls(c));
    let channel = |t: Option<std::sync::Arc<MeshTls>>| {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_with_connector_lazy(MeshConnector::new(t))
    };
    let mut plain = HealthClient::new(channel(None));
    let mut mtls = HealthClient::new(channel(Some(tls("edge"))));
    // Warm both: connections made, handshakes done.
    round(&mut plain, 2_000).await;
    round(&mut mtls, 2_000).await;
    println!("round,plaintext_p50_ms,mtls_p50_ms,added_p50_ms,plaintext_p99_ms,mtls_p99_ms");
    for r in 1..=rounds {
        let (p, m) = if r % 2 == 1 {
            let p = round(&mut plain, calls).await;
            (p, round(&mut mtls, calls).await)
        } else {
            let m = round(&mut mtls, calls).await;
            (round(&mut plain, calls).await, m)
        };
        let (p50, m50) = (percentile(&p, 0.5), percentile(&m, 0.5));
        println!(
            "{r},{p50:.4},{m50:.4},{:.4},{:.4},{:.4}",
            m50 - p50,
            percentile(&p, 0.99),
            percentile(&m, 0.99)
        );
    }
    // The caller check, per call: the path's entry found, the caller looked for in it.
    let path = "/skillup.subscribe.v1.SubscriptionService/ReserveQuota";
    let peer = Peer::component("ai");
    let n = 2_000_000u32;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(mesh::authorize(std::hint::black_box(path), Some(&peer))).unwrap();
    }
    println!("caller_check_ns,{:.1}", start.elapsed().as_nanos() as f64 / f64::from(n));
    bench.stop();
}
