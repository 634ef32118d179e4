//! Load generator for quota holds, run from its own process against a running
//! `skillup serve subscribe` (see `scripts/bench-payment`): ReserveQuota + CommitQuota pairs
//! from many callers, each on its own user (the free plan's quota is large enough for the run
//! only per user, so callers rotate to fresh users when one runs out). One JSON line.

#![allow(clippy::print_stdout)] // the report is this tool's output

use std::time::{Duration, Instant};

use clap::Parser;
use skillup_proto::subscribe::v1::{
    self as pb, subscription_service_client::SubscriptionServiceClient,
};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The deployment's mesh (`<keys dir>/mesh`): the calls are the ai service's, with its
    /// certificate (without it they are refused).
    #[arg(long)]
    mesh_dir: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut conns = Vec::new();
    for _ in 0..4 {
        let ch = skillup_kit::mesh::channel_in(args.mesh_dir.as_deref(), &args.addr, "ai")
            .expect("the ai service's certificate");
        conns.push(SubscriptionServiceClient::new(ch));
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        let mut c = conns[i % conns.len()].clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut micros) = (0u64, 0u64, Vec::new());
            let mut user = uuid::Uuid::now_v7();
            let mut used = 0;
            while Instant::now() < deadline {
                if used == 25 {
                    user = uuid::Uuid::now_v7(); // the free plan allows 30 generations a period
                    used = 0;
                }
                let t = Instant::now();
                let hold = c
                    .reserve_quota(pb::ReserveQuotaRequest {
                        user_id: user.to_string(),
                        function_id: "quiz".into(),
                        tokens: 100,
                        idempotency_key: String::new(),
                        ttl_seconds: 60,
                    })
                    .await;
                let done = match hold {
                    Ok(h) => c
                        .commit_quota(pb::CommitQuotaRequest {
                            hold_id: h.into_inner().hold_id,
                            actual_tokens: 80,
                            queue_wait: None,
                        })
                        .await
                        .is_ok(),
                    Err(_) => false,
                };
                used += 1;
                if done {
                    ok += 1;
                    micros.push(t.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                }
            }
            (ok, errors, micros)
        }));
    }
    println!("{}", skillup_testkit::load_report("reserve+commit", tasks, start).await);
}
