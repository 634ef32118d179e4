//! Load generator for the auth service, run from its own process against a running
//! `skillup serve auth` (see `scripts/bench-auth`). Prints one JSON line per scenario.
//!
//! - `validate`: ValidateToken (signature + the one Redis round trip) from N concurrent callers.
//! - `login`: logins/s next to the raw bcrypt rate at the same cost on this machine.
//! - `validate-under-login`: ValidateToken latency while a login flood runs.
//! - `get-me`: GetMe with a bearer token (`--token`, or a fresh account): the direct-gRPC floor
//!   the edge benchmark (`scripts/bench-edge`) compares the edge and Nginx with.

#![allow(clippy::print_stdout)] // the report is this tool's output

use std::time::{Duration, Instant};

use clap::Parser;
use skillup_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use tonic::transport::Channel;

#[derive(Parser, Debug)]
struct Args {
    /// Scenario: validate | login | validate-under-login | bcrypt
    scenario: String,
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// bcrypt cost the server uses (for the raw-rate baseline).
    #[arg(long, default_value_t = 12)]
    bcrypt_cost: u32,
    /// Access token for `get-me` (default: a fresh account's).
    #[arg(long)]
    token: Option<String>,
    /// HTTP/2 connections the callers share (default: min(concurrency, 4)).
    #[arg(long)]
    connections: Option<usize>,
    /// The deployment's mesh (`<keys dir>/mesh`): the calls are the edge's, with its
    /// certificate (without it they are anonymous, and refused).
    #[arg(long)]
    mesh_dir: Option<std::path::PathBuf>,
}

const PASSWORD: &str = "benchmark password 1";

async fn client(addr: &str, mesh: Option<&std::path::Path>) -> AuthServiceClient<Channel> {
    let ch = skillup_kit::mesh::channel_in(mesh, addr, "edge").expect("the edge's certificate");
    AuthServiceClient::new(ch)
}

async fn account(c: &mut AuthServiceClient<Channel>) -> (String, String) {
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    c.register(pb::RegisterRequest {
        email: email.clone(),
        password: PASSWORD.into(),
        name: String::new(),
        ..Default::default()
    })
    .await
    .expect("register");
    let login =
        pb::LoginRequest { email: email.clone(), password: PASSWORD.into(), ..Default::default() };
    let res = c.login(login).await.expect("login").into_inner();
    (email, res.access_token)
}

struct Stats {
    ok: u64,
    errors: u64,
    micros: Vec<u32>,
    elapsed: Duration,
}

impl Stats {
    fn pct(&mut self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        self.micros.sort_unstable();
        let i = ((self.micros.len() as f64 - 1.0) * p).round() as usize;
        self.micros[i] as f64 / 1000.0
    }

    fn report(mut self, name: &str) {
        let rps = self.ok as f64 / self.elapsed.as_secs_f64();
        let (p50, p99) = (self.pct(0.50), self.pct(0.99));
        println!(
            "{{\"scenario\":\"{name}\",\"ok\":{},\"errors\":{},\"per_second\":{rps:.1},\"p50_ms\":{p50:.2},\"p99_ms\":{p99:.2}}}",
            self.ok, self.errors
        );
    }
}

/// Runs `concurrency` loops of `call` until `seconds` pass, on separate HTTP/2 connections.
async fn drive<F, Fut>(args: &Args, concurrency: usize, seconds: u64, call: F) -> Stats
where
    F: Fn(AuthServiceClient<Channel>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    // Callers multiplex streams over a few HTTP/2 connections, as an edge in front of auth does.
    let mut conns = Vec::new();
    for _ in 0..args.connections.unwrap_or(concurrency.clamp(1, 4)).max(1) {
        conns.push(client(&args.addr, args.mesh_dir.as_deref()).await);
    }
    for i in 0..concurrency {
        let c = conns[i % conns.len()].clone();
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut micros) = (0u64, 0u64, Vec::with_capacity(100_000));
            while Instant::now() < deadline {
                let t = Instant::now();
                if call(c.clone()).await {
                    ok += 1;
                    micros.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                } else {
                    errors += 1;
                }
            }
            (ok, errors, micros)
        }));
    }
    let mut s = Stats { ok: 0, errors: 0, micros: Vec::new(), elapsed: Duration::ZERO };
    for t in tasks {
        let (ok, errors, micros) = t.await.unwrap();
        s.ok += ok;
        s.errors += errors;
        s.micros.extend(micros);
    }
    s.elapsed = start.elapsed();
    s
}

fn bcrypt_rate(cost: u32, seconds: u64) -> f64 {
    let hash = bcrypt::hash(PASSWORD, cost).unwrap();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let hash = hash.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    assert!(bcrypt::verify(PASSWORD, &hash).unwrap());
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.scenario == "bcrypt" {
        let rate = bcrypt_rate(args.bcrypt_cost, args.seconds);
        println!(
            "{{\"scenario\":\"bcrypt\",\"cost\":{},\"per_second\":{rate:.1}}}",
            args.bcrypt_cost
        );
        return;
    }
    let mut c = client(&args.addr, args.mesh_dir.as_deref()).await;
    let (email, token) = account(&mut c).await;
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", args.token.clone().unwrap_or_else(|| token.clone())).parse().unwrap();
    let get_me = move |mut c: AuthServiceClient<Channel>| {
        let bearer = bearer.clone();
        async move {
            let mut req = tonic::Request::new(pb::GetMeRequest {});
            req.metadata_mut().insert("authorization", bearer);
            c.get_me(req).await.is_ok()
        }
    };
    let validate = {
        let token = token.clone();
        move |mut c: AuthServiceClient<Channel>| {
            let token = token.clone();
            async move {
                c.validate_token(pb::ValidateTokenRequest { token, required_scopes: vec![] })
                    .await
                    .is_ok()
            }
        }
    };
    let login = {
        let email = email.clone();
        move |mut c: AuthServiceClient<Channel>| {
            let email = email.clone();
            async move {
                c.login(pb::LoginRequest { email, password: PASSWORD.into(), ..Default::default() })
                    .await
                    .is_ok()
            }
        }
    };
    match args.scenario.as_str() {
        "validate" => {
            drive(&args, args.concurrency, args.seconds, validate).await.report("validate")
        }
        "login" => drive(&args, args.concurrency, args.seconds, login).await.report("login"),
        "get-me" => drive(&args, args.concurrency, args.seconds, get_me).await.report("get-me"),
        "validate-under-login" => {
            let flood = tokio::spawn({
                let args = Args { scenario: String::new(), ..args_clone(&args) };
                async move { drive(&args, 16, args.seconds, login).await }
            });
            let v = drive(&args, args.concurrency, args.seconds, validate).await;
            v.report("validate-under-login");
            flood.await.unwrap().report("login-flood");
        }
        other => panic!("unknown scenario {other}"),
    }
}

fn args_clone(a: &Args) -> Args {
    Args {
        scenario: a.scenario.clone(),
        addr: a.addr.clone(),
        concurrency: a.concurrency,
        seconds: a.seconds,
        bcrypt_cost: a.bcrypt_cost,
        token: a.token.clone(),
        connections: a.connections,
        mesh_dir: a.mesh_dir.clone(),
    }
}
