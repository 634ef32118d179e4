//! What the client-side balancer (`grpc::balance`, issue 25's goal: ≤ 20 µs p50 per call) adds
//! to one call on a warm connection. One `GrpcServer` with the mesh's TLS, called one call at a
//! time over two warm mutual-TLS channels, alternating call by call: a tonic `Channel` straight to its address,
//! and a `Balanced` channel whose one backend is the same address (discovery, the p2c pick over
//! outstanding calls, the queue in front of the balancer, the request kept for a resend, the
//! per-backend outcome). The call is health's `Check`.
//!
//! `cargo run --release -p skillup-kit --example balance_latency -- [rounds] [calls per round]`

#![allow(clippy::print_stdout)] // the report is this tool's output

mod common;

use std::time::{Duration, Instant};

use skillup_kit::{
    grpc::{BalanceSettings, Balanced, ServiceChannel},
    mesh::MeshConnector,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// `calls` pairs, a direct call then a balanced one (which goes first alternates), so drift of
/// the machine hits both alike; each side's times sorted, and the pairwise differences sorted.
async fn round(
    direct: &mut HealthClient<ServiceChannel>,
    balanced: &mut HealthClient<ServiceChannel>,
    calls: usize,
) -> (Vec<Duration>, Vec<Duration>, Vec<f64>) {
    let mut d = Vec::with_capacity(calls);
    let mut b = Vec::with_capacity(calls);
    let mut diff = Vec::with_capacity(calls);
    for i in 0..calls {
        let one = async |c: &mut HealthClient<ServiceChannel>| {
            let start = Instant::now();
            c.check(HealthCheckRequest { service: String::new() }).await.expect("health answers");
            start.elapsed()
        };
        let (x, y) = if i % 2 == 0 {
            let x = one(direct).await;
            (x, one(balanced).await)
        } else {
            let y = one(balanced).await;
            (one(direct).await, y)
        };
        d.push(x);
        b.push(y);
        diff.push((y.as_secs_f64() - x.as_secs_f64()) * 1e6);
    }
    d.sort();
    b.sort();
    diff.sort_by(f64::total_cmp);
    (d, b, diff)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let calls: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let bench = common::Bench::start("balance-bench").await;
    let (addr, tls) = (bench.addr, |c: &str| bench.tls(c));
    let endpoint = |e: tonic::transport::Endpoint| e.tcp_nodelay(true);
    let direct =
        endpoint(tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap())
            .connect_with_connector_lazy(MeshConnector::new(Some(tls("edge"))));
    let settings = BalanceSettings {
        resolve_every: Duration::from_secs(5),
        connections_per_backend: 1,
        endpoint,
        mesh: Some(tls("edge")),
    };
    let balanced = Balanced::new("payment", &format!("http://{addr}"), settings).unwrap();
    let mut direct = HealthClient::new(ServiceChannel::Network(direct));
    let mut balanced = HealthClient::new(ServiceChannel::Balanced(balanced));
    // Warm both: connections made, handshakes done.
    round(&mut direct, &mut balanced, 2_000).await;
    println!(
        "round,direct_p50_us,balanced_p50_us,added_p50_us,pairwise_median_us,direct_p99_us,balanced_p99_us"
    );
    for r in 1..=rounds {
        let (d, b, diff) = round(&mut direct, &mut balanced, calls).await;
        let (d50, b50) = (percentile(&d, 0.5), percentile(&b, 0.5));
        println!(
            "{r},{d50:.1},{b50:.1},{:.1},{:.1},{:.1},{:.1}",
            b50 - d50,
            diff[diff.len() / 2],
            percentile(&d, 0.99),
            percentile(&b, 0.99)
        );
    }
    bench.stop();
}
