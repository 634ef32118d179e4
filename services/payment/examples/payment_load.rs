//! Load generator for the payment service, run from its own process against a running
//! `skillup serve payment` (see `scripts/bench-payment`). Prints one JSON line per scenario.
//!
//! - `spread`: charges of 1 spread over many wallets (no two callers on one row).
//! - `hot`: every caller charges the same wallet (the row lock serialises them).

#![allow(clippy::print_stdout)] // the report is this tool's output

use std::time::{Duration, Instant};

use clap::Parser;
use skillup_kit::identity::{Caller, IdentityKey, now_secs};
use skillup_proto::{
    common::v1::Money,
    payment::v1::{self as pb, payment_service_client::PaymentServiceClient},
};
use tonic::transport::Channel;

#[derive(Parser, Debug)]
struct Args {
    /// Scenario: spread | hot
    scenario: String,
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// The identity key file the service verifies assertions with (for the top-ups).
    #[arg(long)]
    identity_key: std::path::PathBuf,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The deployment's mesh (`<keys dir>/mesh`): top-ups are the edge's calls, charges the
    /// subscribe service's, each with its certificate (without it they are refused).
    #[arg(long)]
    mesh_dir: Option<std::path::PathBuf>,
}

fn client(addr: &str, mesh: Option<&std::path::Path>, as_: &str) -> PaymentServiceClient<Channel> {
    PaymentServiceClient::new(
        skillup_kit::mesh::channel_in(mesh, addr, as_).expect("a certificate"),
    )
}

async fn fund(c: &mut PaymentServiceClient<Channel>, key: &IdentityKey, user: uuid::Uuid) {
    let id = Caller { user_id: user.to_string(), exp: now_secs() + 300, ..Default::default() };
    let mut req = tonic::Request::new(pb::TopUpRequest {
        amount_minor: 100_000_000,
        currency: "RUB".into(),
        idempotency_key: format!("fund-{user}"),
        payment_method: String::new(),
    });
    req.metadata_mut().insert("x-skillup-identity", key.sign(&id).parse().unwrap());
    c.top_up(req).await.expect("top-up");
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let key = IdentityKey::load(&args.identity_key, false).expect("identity key");
    let mesh = args.mesh_dir.as_deref();
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(client(&args.addr, mesh, "subscribe"));
    }
    let mut edge = client(&args.addr, mesh, "edge");
    let wallets: Vec<uuid::Uuid> = match args.scenario.as_str() {
        "spread" => (0..args.concurrency).map(|_| uuid::Uuid::now_v7()).collect(),
        "hot" => vec![uuid::Uuid::now_v7()],
        other => panic!("unknown scenario {other}"),
    };
    for w in &wallets {
        fund(&mut edge, &key, *w).await;
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        let mut c = conns[i % conns.len()].clone();
        let user = wallets[i % wallets.len()];
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut micros) = (0u64, 0u64, Vec::new());
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let t = Instant::now();
                let res = c
                    .charge(pb::ChargeRequest {
                        user_id: user.to_string(),
                        amount: Some(Money { amount_minor: 1, currency: "RUB".into() }),
                        idempotency_key: format!("c-{i}-{n}"),
                        description: "bench".into(),
                    })
                    .await;
                if res.is_ok() {
                    ok += 1;
                    micros.push(t.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                }
            }
            (ok, errors, micros)
        }));
    }
    println!("{}", skillup_testkit::load_report(&args.scenario, tasks, start).await);
}
