//! Client-side balancing (`grpc::balance`) against real gRPC servers on loopback: calls spread
//! evenly over every replica, a replica that comes up later gets its share within the resolve
//! interval, one that shuts down costs no call, one that hangs is routed around, connections
//! the servers age out cost no call.

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use skillup_kit::{
    Readiness, Shutdown,
    grpc::{BalanceSettings, Balanced, GrpcServer, ServiceChannel},
    mesh::MeshConnectInfo,
};
use tonic::{
    Request, Response, Status,
    body::Body,
    codegen::http,
    server::{NamedService, UnaryService},
};

/// `test.Who/Ask`: counts its calls and the connections they came on, takes 2 ms — or never
/// answers while `hang` is set.
#[derive(Clone, Default)]
struct Who {
    calls: Arc<AtomicU64>,
    hang: Arc<AtomicBool>,
    /// The callers' addresses: one per connection.
    connections: Arc<Mutex<BTreeSet<SocketAddr>>>,
}

impl NamedService for Who {
    const NAME: &'static str = "test.Who";
}

impl UnaryService<()> for Who {
    type Response = ();
    type Future = BoxFuture<'static, Result<Response<()>, Status>>;
    fn call(&mut self, req: Request<()>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let remote = req.extensions().get::<MeshConnectInfo>().and_then(|i| i.remote);
        self.connections.lock().unwrap().extend(remote);
        let hang = self.hang.load(Ordering::SeqCst);
        Box::pin(async move {
            if hang {
                futures::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(Response::new(()))
        })
    }
}

impl tower::Service<http::Request<Body>> for Who {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let who = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), ()>::default());
            Ok(grpc.unary(who, req).await)
        })
    }
}

struct Replica {
    addr: SocketAddr,
    who: Who,
    shutdown: Shutdown,
    handle: tokio::task::JoinHandle<skillup_kit::Result<()>>,
}

impl Replica {
    async fn start(addr: SocketAddr) -> Replica {
        Self::start_aged(addr, Duration::ZERO).await
    }

    /// A replica that closes each connection gracefully at about `age` (zero: never).
    async fn start_aged(addr: SocketAddr, age: Duration) -> Replica {
        let who = Who::default();
        let server = GrpcServer::builder()
            .max_connection_age(age)
            .mesh_tls(skillup_testkit::mesh_tls("auth"))
            .add_service(who.clone())
            .readiness(Readiness::new(), Duration::from_millis(100))
            .shutdown_timings(Duration::from_millis(100), Duration::from_secs(5))
            .bind(addr)
            .await
            .unwrap();
        let addr = server.local_addr();
        let shutdown = Shutdown::new();
        let handle = tokio::spawn(server.run(shutdown.clone()));
        Replica { addr, who, shutdown, handle }
    }

    fn calls(&self) -> u64 {
        self.who.calls.load(Ordering::SeqCst)
    }

    fn connections(&self) -> usize {
        self.who.connections.lock().unwrap().len()
    }
}

/// A loopback address nothing listens on now, for a replica to bind (now or later).
fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], skillup_testkit::free_port()))
}

fn balanced(addrs: &[SocketAddr], resolve_every: Duration) -> Balanced {
    let url = addrs.iter().map(|a| format!("http://{a}")).collect::<Vec<_>>().join(",");
    let settings = BalanceSettings {
        resolve_every,
        connections_per_backend: 1,
        endpoint: |e| e.connect_timeout(Duration::from_secs(1)),
        mesh: Some(skillup_testkit::mesh_tls("edge")),
    };
    Balanced::new("who", &url, settings).unwrap()
}

async fn ask(channel: &Balanced, timeout: Duration) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(ServiceChannel::from(channel.clone()));
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = Request::new(());
    req.set_timeout(timeout);
    let path = http::uri::PathAndQuery::from_static("/test.Who/Ask");
    let call = grpc.unary::<(), (), _>(req, path, tonic_prost::ProstCodec::default());
    match tokio::time::timeout(timeout, call).await {
        Ok(res) => res.map(|_| ()),
        Err(_) => Err(Status::deadline_exceeded("deadline")),
    }
}

/// `calls` calls, `concurrency` at a time; the failures.
async fn load(
    channel: &Balanced,
    calls: usize,
    concurrency: usize,
    timeout: Duration,
) -> Vec<Status> {
    use futures::StreamExt;
    futures::stream::iter(0..calls)
        .map(|_| ask(channel, timeout))
        .buffer_unordered(concurrency)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await
}

fn counts(replicas: &[&Replica]) -> BTreeMap<SocketAddr, u64> {
    replicas.iter().map(|r| (r.addr, r.calls())).collect()
}

/// Every count within ±`tolerance` of the even share.
fn assert_even(share: &BTreeMap<SocketAddr, u64>, tolerance: f64) {
    let total: u64 = share.values().sum();
    let even = total as f64 / share.len() as f64;
    for (addr, n) in share {
        let off = (*n as f64 - even).abs() / even;
        assert!(
            off <= tolerance,
            "{addr} got {n} of {total} ({:.0} % off even): {share:?}",
            off * 100.0
        );
    }
}

fn delta(
    before: &BTreeMap<SocketAddr, u64>,
    after: &BTreeMap<SocketAddr, u64>,
) -> BTreeMap<SocketAddr, u64> {
    after.iter().map(|(a, n)| (*a, n - before.get(a).copied().unwrap_or(0))).collect()
}

const CALL: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_evenly_and_a_replica_started_later_gets_its_share() {
    let (a, b, c) = (
        Replica::start(free_addr()).await,
        Replica::start(free_addr()).await,
        Replica::start(free_addr()).await,
    );
    let later = free_addr();
    let resolve = Duration::from_millis(500);
    let channel = balanced(&[a.addr, b.addr, c.addr, later], resolve);

    let failed = load(&channel, 1_500, 8, CALL).await;
    assert!(failed.is_empty(), "the address nobody listens on cost calls: {failed:?}");
    let first = counts(&[&a, &b, &c]);
    eprintln!("three replicas and one address down: {first:?}");
    assert_even(&first, 0.15);
    assert_eq!(channel.backends().0, 4);

    let d = Replica::start(later).await;
    tokio::time::sleep(resolve + Duration::from_millis(100)).await;
    // Its first calls open its connection (TCP, then the mesh's TLS handshake) while the
    // others answer: not counted.
    let before = counts(&[&a, &b, &c, &d]);
    let failed = load(&channel, 200, 8, CALL).await;
    assert!(failed.is_empty(), "{failed:?}");
    eprintln!("the first 200 calls after: {:?}", delta(&before, &counts(&[&a, &b, &c, &d])));
    let before = counts(&[&a, &b, &c, &d]);
    let failed = load(&channel, 2_000, 8, CALL).await;
    assert!(failed.is_empty(), "{failed:?}");
    let second = delta(&before, &counts(&[&a, &b, &c, &d]));
    eprintln!("after the fourth came up (one resolve interval later): {second:?}");
    assert_even(&second, 0.15);
    for r in [a, b, c, d] {
        r.shutdown.trigger();
        r.handle.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_shutting_down_mid_load_costs_no_call() {
    let (a, mut b, c) = (
        Replica::start(free_addr()).await,
        Replica::start(free_addr()).await,
        Replica::start(free_addr()).await,
    );
    let channel = balanced(&[a.addr, b.addr, c.addr], Duration::from_millis(500));
    let load_channel = channel.clone();
    let running = tokio::spawn(async move { load(&load_channel, 4_000, 8, CALL).await });
    // Well into the load, b drains and stops (SIGTERM's path: health NOT_SERVING, the drain,
    // GOAWAY, in-flight calls finish).
    while b.calls() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b.shutdown.trigger();
    (&mut b.handle).await.unwrap().unwrap();
    let at_stop = b.calls();
    let failed = running.await.unwrap();
    let share = counts(&[&a, &b, &c]);
    eprintln!("b stopped after {at_stop} calls: {share:?}; failed {}", failed.len());
    assert!(failed.is_empty(), "calls failed while a replica stopped: {failed:?}");
    assert_eq!(b.calls(), at_stop, "nothing reached the stopped replica");
    assert_eq!(share.values().sum::<u64>(), 4_000, "every call answered exactly once");
    for r in [a, c] {
        r.shutdown.trigger();
        r.handle.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_is_routed_around_after_a_few_deadlines() {
    let (a, b, c) = (
        Replica::start(free_addr()).await,
        Replica::start(free_addr()).await,
        Replica::start(free_addr()).await,
    );
    let channel = balanced(&[a.addr, b.addr, c.addr], Duration::from_secs(5));
    let failed = load(&channel, 300, 8, CALL).await;
    assert!(failed.is_empty(), "{failed:?}");
    b.who.hang.store(true, Ordering::SeqCst);
    let deadline = Duration::from_millis(300);
    let before = counts(&[&a, &b, &c]);
    let first = load(&channel, 1_000, 8, deadline).await;
    let during = delta(&before, &counts(&[&a, &b, &c]));
    // Once ejected (five deadlines in a row), it is back a second later (its health check
    // passes: only its calls hang) with one call at a time, and out again when that one fails,
    // for longer: each return costs one call, and this phase sees at most two returns.
    let before = counts(&[&a, &b, &c]);
    let then = load(&channel, 600, 8, deadline).await;
    let after = delta(&before, &counts(&[&a, &b, &c]));
    eprintln!(
        "b hangs: {} failed of 1000 while it was found out ({during:?}), then {} of 600 ({after:?})",
        first.len(),
        then.len()
    );
    assert!(
        // tonic's client reads its own timer as CANCELLED "Timeout expired"; the server cut
        // off at the propagated deadline answers CANCELLED too.
        first
            .iter()
            .all(|s| matches!(s.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)),
        "only the calls b held failed, at their deadline: {first:?}"
    );
    assert!(
        (1..=40).contains(&first.len()),
        "the hung replica is found out within a few deadlines: {} failed",
        first.len()
    );
    assert!(then.len() <= 2, "routed around, one call per return: {} failed", then.len());
    assert!(after[&b.addr] <= 2, "b is out: {after:?}");
    b.who.hang.store(false, Ordering::SeqCst);
    for r in [a, b, c] {
        r.shutdown.trigger();
        let _ = r.handle.await;
    }
}

/// Servers age connections out (graceful GOAWAY at about half a second here, five minutes by
/// default): steady calls for three seconds ride on several connections in turn, and none of
/// them fails — calls in flight finish on the old connection, the next go on a new one, and one
/// caught between the two is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_servers_age_out_cost_no_call() {
    let age = Duration::from_millis(500);
    let (a, b) =
        (Replica::start_aged(free_addr(), age).await, Replica::start_aged(free_addr(), age).await);
    let channel = balanced(&[a.addr, b.addr], Duration::from_secs(5));
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(3) {
        failed.extend(load(&channel, 200, 8, CALL).await);
        rounds += 1;
    }
    let share = counts(&[&a, &b]);
    let connections = (a.connections(), b.connections());
    eprintln!(
        "{} calls in {:.1} s over {connections:?} connections: {share:?}; failed {}",
        rounds * 200,
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    assert!(failed.is_empty(), "calls failed as connections aged out: {failed:?}");
    // A connection closing gracefully says nothing bad of its replica: neither is put out.
    assert_even(&share, 0.15);
    assert!(
        connections.0 >= 4 && connections.1 >= 4,
        "each replica closed its connections as they aged: {connections:?}"
    );
    for r in [a, b] {
        r.shutdown.trigger();
        r.handle.await.unwrap().unwrap();
    }
}
