//! The gRPC bootstrap: health follows real readiness, reflection v1 and v1alpha list what is
//! served, every RPC is counted, and shutdown flips health first and lets in-flight calls end.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{StreamExt, future::BoxFuture};
use skillup_kit::{
    Readiness, Shutdown,
    grpc::{GrpcServer, LocalSlot, ServiceChannel, grpc_timeout},
    ops,
};
use tonic::{
    Request, Response, Status,
    body::Body,
    codegen::http,
    server::{NamedService, UnaryService},
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A hand-rolled service (`test.Slow/Wait`) that takes 600 ms, built the way tonic's
/// generated servers are, so shutdown can be watched with a call in flight.
#[derive(Clone)]
struct Slow;

impl NamedService for Slow {
    const NAME: &'static str = "test.Slow";
}

struct Wait;

impl UnaryService<()> for Wait {
    type Response = ();
    type Future = BoxFuture<'static, Result<Response<()>, Status>>;
    fn call(&mut self, _: Request<()>) -> Self::Future {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok(Response::new(()))
        })
    }
}

impl tower::Service<http::Request<Body>> for Slow {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), ()>::default());
            Ok(grpc.unary(Wait, req).await)
        })
    }
}

async fn call_slow(channel: Channel) -> Result<(), Status> {
    call_slow_within(ServiceChannel::Network(channel), None).await
}

async fn call_slow_within(
    channel: ServiceChannel,
    timeout: Option<Duration>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/test.Slow/Wait");
    let mut req = Request::new(());
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    grpc.unary::<(), (), _>(req, path, tonic_prost::ProstCodec::default()).await.map(|_| ())
}

struct Running {
    addr: std::net::SocketAddr,
    ready: Arc<AtomicBool>,
    shutdown: Shutdown,
    handle: tokio::task::JoinHandle<skillup_kit::Result<()>>,
}

async fn start() -> Running {
    let ready = Arc::new(AtomicBool::new(false));
    let flag = ready.clone();
    let readiness = Readiness::new().with("switch", move || {
        let ok = flag.load(Ordering::SeqCst);
        async move { if ok { Ok(()) } else { Err("switched off".into()) } }
    });
    let server = GrpcServer::builder()
        .mesh_tls(skillup_testkit::mesh_tls("edge"))
        .add_service(Slow)
        .readiness(readiness, Duration::from_millis(100))
        .shutdown_timings(Duration::from_millis(300), Duration::from_secs(5))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.local_addr();
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(server.run(shutdown.clone()));
    Running { addr, ready, shutdown, handle }
}

/// A channel calling as the edge (its certificate of the test mesh; the server shows one too).
async fn channel(addr: std::net::SocketAddr) -> Channel {
    skillup_testkit::channel_as(addr, Some("edge"))
}

async fn health(ch: Channel, service: &str) -> ServingStatus {
    let res =
        HealthClient::new(ch).check(HealthCheckRequest { service: service.into() }).await.unwrap();
    res.into_inner().status()
}

async fn wait_for(ch: &Channel, service: &str, want: ServingStatus) {
    for _ in 0..50 {
        if health(ch.clone(), service).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{service} never became {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_readiness() {
    let s = start().await;
    let ch = channel(s.addr).await;
    assert_eq!(
        health(ch.clone(), "test.Slow").await,
        ServingStatus::NotServing,
        "not ready until probes pass"
    );
    assert_eq!(
        health(ch.clone(), skillup_kit::grpc::LIVENESS).await,
        ServingStatus::Serving,
        "alive while not ready: liveness probes must not restart it"
    );
    s.ready.store(true, Ordering::SeqCst);
    wait_for(&ch, "test.Slow", ServingStatus::Serving).await;
    wait_for(&ch, "", ServingStatus::Serving).await;
    s.ready.store(false, Ordering::SeqCst);
    wait_for(&ch, "test.Slow", ServingStatus::NotServing).await;
    assert_eq!(health(ch.clone(), skillup_kit::grpc::LIVENESS).await, ServingStatus::Serving);
    s.shutdown.trigger();
    s.handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_what_is_served() {
    use tonic_reflection::pb::{v1, v1alpha};
    let s = start().await;
    let ch = channel(s.addr).await;

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream =
        client.server_reflection_info(futures::stream::iter([req])).await.unwrap().into_inner();
    let Some(Ok(res)) = stream.next().await else { panic!("no v1alpha answer") };
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        res.message_response
    else {
        panic!("not a list")
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "test.Slow"
        ]
    );

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(ch);
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::FileContainingSymbol(
            "grpc.health.v1.Health".into(),
        )),
    };
    let mut stream =
        client.server_reflection_info(futures::stream::iter([req])).await.unwrap().into_inner();
    let Some(Ok(res)) = stream.next().await else { panic!("no v1 answer") };
    assert!(matches!(
        res.message_response,
        Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
    s.shutdown.trigger();
    s.handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_is_counted_by_code() {
    let handle = ops::metrics_handle();
    let s = start().await;
    s.ready.store(true, Ordering::SeqCst);
    let ch = channel(s.addr).await;
    call_slow(ch.clone()).await.unwrap();
    let _ =
        HealthClient::new(ch).check(HealthCheckRequest { service: "no.such.Service".into() }).await;
    let text = handle.render();
    assert!(
        text.lines().any(|l| l.starts_with("grpc_server_handled_total")
            && l.contains(r#"service="test.Slow""#)
            && l.contains(r#"method="Wait""#)
            && l.contains(r#"code="OK""#)),
        "{text}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("grpc_server_handled_total") && l.contains(r#"code="NOT_FOUND""#)
        ),
        "trailers-only errors are counted: {text}"
    );
    assert!(text.contains("grpc_server_handling_seconds_bucket"), "{text}");
    s.shutdown.trigger();
    s.handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flips_health_then_lets_in_flight_calls_finish() {
    let s = start().await;
    s.ready.store(true, Ordering::SeqCst);
    let ch = channel(s.addr).await;
    wait_for(&ch, "", ServingStatus::Serving).await;

    let in_flight = tokio::spawn(call_slow(ch.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.shutdown.trigger();
    // During the drain health already says NOT_SERVING, on the same connection.
    wait_for(&ch, "test.Slow", ServingStatus::NotServing).await;
    in_flight.await.unwrap().expect("the call in flight finished normally");
    s.handle.await.unwrap().unwrap();
    // And the listener is gone.
    assert!(Endpoint::from_shared(format!("http://{}", s.addr)).unwrap().connect().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_channel_reaches_the_services_of_its_process_once_its_slot_is_filled() {
    let server = GrpcServer::builder()
        .mesh_tls(skillup_testkit::mesh_tls("edge"))
        .add_service(Slow)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let slot = LocalSlot::new();
    let channel = ServiceChannel::InProcess(slot.as_component("edge"));

    // Built before the server exists (as `skillup up` builds its services): UNAVAILABLE until
    // the slot is filled, never a panic or a hang.
    let err = call_slow_within(channel.clone(), None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    slot.fill(server.local_channel());
    assert!(slot.is_filled());
    let started = std::time::Instant::now();
    call_slow_within(channel.clone(), Some(Duration::from_secs(5))).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600), "the call really ran");

    // The caller's deadline holds in-process too (the listener's timeout layer is not there).
    let started = std::time::Instant::now();
    let err = call_slow_within(channel, Some(Duration::from_millis(100))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
}

#[test]
fn grpc_timeouts_are_read_in_every_unit() {
    let t = |v: &str| {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-timeout", v.parse().unwrap());
        grpc_timeout(&h)
    };
    assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
    assert_eq!(t("3M"), Some(Duration::from_secs(180)));
    assert_eq!(t("5S"), Some(Duration::from_secs(5)));
    assert_eq!(t("250m"), Some(Duration::from_millis(250)));
    assert_eq!(t("7u"), Some(Duration::from_micros(7)));
    assert_eq!(t("9n"), Some(Duration::from_nanos(9)));
    assert_eq!(t("12345678S"), Some(Duration::from_secs(12_345_678)));
    for bad in ["", "S", "5", "5x", "-5S", "123456789S", "1.5S"] {
        assert_eq!(t(bad), None, "{bad:?}");
    }
    assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
}

/// A service (`test.Gated/Wait`) whose calls wait until the test opens the gate, counting the
/// calls that reached it: what a server does while it is full is then seen without timing.
#[derive(Clone)]
struct Gated {
    gate: Arc<tokio::sync::Semaphore>,
    entered: Arc<std::sync::atomic::AtomicUsize>,
}

impl NamedService for Gated {
    const NAME: &'static str = "test.Gated";
}

struct GatedWait(Gated);

impl UnaryService<()> for GatedWait {
    type Response = ();
    type Future = BoxFuture<'static, Result<Response<()>, Status>>;
    fn call(&mut self, _: Request<()>) -> Self::Future {
        let g = self.0.clone();
        Box::pin(async move {
            g.entered.fetch_add(1, Ordering::SeqCst);
            let _pass = g.gate.acquire().await.expect("gate open");
            Ok(Response::new(()))
        })
    }
}

impl tower::Service<http::Request<Body>> for Gated {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), ()>::default());
            Ok(grpc.unary(GatedWait(this), req).await)
        })
    }
}

async fn call_gated(channel: ServiceChannel) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/test.Gated/Wait");
    grpc.unary::<(), (), _>(Request::new(()), path, tonic_prost::ProstCodec::default())
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_sheds_calls_at_once_and_its_deadline_ends_calls_that_hang() {
    let gated =
        Gated { gate: Arc::new(tokio::sync::Semaphore::new(0)), entered: Default::default() };
    let server = GrpcServer::builder()
        .mesh_tls(skillup_testkit::mesh_tls("edge"))
        .add_service(gated.clone())
        .limits(4, Duration::from_secs(300))
        .shutdown_timings(Duration::ZERO, Duration::from_secs(5))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let local = server.local_channel();
    let addr = server.local_addr();
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(server.run(shutdown.clone()));
    let network = ServiceChannel::Network(channel(addr).await);

    // Four calls take the four slots and wait at the gate.
    let held: Vec<_> = (0..4).map(|_| tokio::spawn(call_gated(network.clone()))).collect();
    while gated.entered.load(Ordering::SeqCst) < 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every further call, over the network or in-process, is refused while the gate is still
    // shut: answered at once, not queued behind the four.
    let slot = LocalSlot::new();
    slot.fill(local);
    let in_process = ServiceChannel::InProcess(slot.as_component("edge"));
    let extra: Vec<_> = (0..40)
        .map(|i| {
            let ch = if i % 2 == 0 { network.clone() } else { in_process.clone() };
            tokio::spawn(call_gated(ch))
        })
        .collect();
    for call in extra {
        // (The bound only keeps a broken server from hanging the suite.)
        let answer = tokio::time::timeout(Duration::from_secs(10), call).await;
        let err =
            answer.expect("answered, not queued").unwrap().expect_err("a full server refuses");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(err.message().contains("limit of concurrent calls"), "{err:?}");
    }
    assert_eq!(gated.entered.load(Ordering::SeqCst), 4, "no refused call reached the service");
    assert!(held.iter().all(|h| !h.is_finished()), "the four are still waiting at the gate");

    // Open the gate: the four finish, and their slots serve new calls.
    gated.gate.add_permits(1_000);
    for h in held {
        h.await.unwrap().expect("a call that got a slot completes");
    }
    call_gated(network.clone()).await.expect("slots are given back");
    call_gated(in_process).await.expect("in-process too");
    shutdown.trigger();
    handle.await.unwrap().unwrap();

    // A call that hangs ends at the server's deadline, without a deadline from the caller.
    let gated =
        Gated { gate: Arc::new(tokio::sync::Semaphore::new(0)), entered: Default::default() };
    let server = GrpcServer::builder()
        .mesh_tls(skillup_testkit::mesh_tls("edge"))
        .add_service(gated.clone())
        .limits(4, Duration::from_millis(200))
        .shutdown_timings(Duration::ZERO, Duration::from_secs(5))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.local_addr();
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(server.run(shutdown.clone()));
    let err = call_gated(ServiceChannel::Network(channel(addr).await)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("server's deadline of 200 ms"), "{err:?}");
    assert_eq!(gated.entered.load(Ordering::SeqCst), 1);
    shutdown.trigger();
    handle.await.unwrap().unwrap();
}
