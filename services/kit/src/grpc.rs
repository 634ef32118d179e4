//! The gRPC server bootstrap every service uses: tonic-health driven by real readiness,
//! reflection v1 and v1alpha (grpcurl 1.8 only speaks v1alpha), request tracing, per-RPC
//! metrics, and graceful shutdown (health NOT_SERVING first, then in-flight calls finish).

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{Request, Response};
use tokio::net::TcpListener;
use tonic::{
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder},
    transport::Server,
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{Layer, Service, ServiceBuilder, layer::util::Stack};
use tower_http::trace::TraceLayer;

use crate::{
    Readiness, Result, Shutdown,
    identity::{IdentityKey, IdentityLayer},
};

const HEALTH: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// Collects the services one listener serves.
pub struct GrpcServerBuilder {
    routes: RoutesBuilder,
    names: Vec<String>,
    readiness: Readiness,
    readiness_interval: Duration,
    drain: Duration,
    grace: Duration,
    identity: Option<Arc<IdentityKey>>,
}

impl Default for GrpcServerBuilder {
    fn default() -> Self {
        Self {
            routes: RoutesBuilder::default(),
            names: Vec::new(),
            readiness: Readiness::new(),
            readiness_interval: Duration::from_secs(2),
            drain: Duration::from_secs(2),
            grace: Duration::from_secs(30),
            identity: None,
        }
    }
}

impl GrpcServerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a generated tonic service; its name appears in health and reflection.
    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: Service<Request<Body>, Error = Infallible, Response = Response<Body>>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME.to_owned());
        self.routes.add_service(svc);
        self
    }

    /// The probes health follows; every registered service reads SERVING only while all pass.
    pub fn readiness(mut self, readiness: Readiness, interval: Duration) -> Self {
        self.readiness = readiness;
        self.readiness_interval = interval;
        self
    }

    /// Shutdown timings: `drain` with health NOT_SERVING before the listener closes, then at
    /// most `grace` for in-flight calls.
    pub fn shutdown_timings(mut self, drain: Duration, grace: Duration) -> Self {
        self.drain = drain;
        self.grace = grace;
        self
    }

    /// The key the edge's identity assertions are verified with. Without it every identity
    /// header is dropped and every assertion refused (see [`crate::identity`]).
    pub fn identity_key(mut self, key: Arc<IdentityKey>) -> Self {
        self.identity = Some(key);
        self
    }

    /// Binds the listener (port 0 picks a free one) and wires health and reflection.
    pub async fn bind(self, addr: SocketAddr) -> Result<GrpcServer> {
        self.bind_to(TcpListener::bind(addr).await?).await
    }

    /// Like [`GrpcServerBuilder::bind`], on a listener bound already (so the address is known
    /// before the services are built: `skillup up` hands it to services that call each other).
    pub async fn bind_to(self, listener: TcpListener) -> Result<GrpcServer> {
        let local_addr = listener.local_addr()?;
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = |names: &[String]| {
            let mut b = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(skillup_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
            for name in
                names.iter().map(String::as_str).chain([HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA])
            {
                b = b.with_service_name(name);
            }
            b
        };
        let refl_err =
            |e: tonic_reflection::server::Error| crate::Error::Config(format!("reflection: {e}"));
        let v1 = reflection(&self.names).build_v1().map_err(refl_err)?;
        let v1alpha = reflection(&self.names).build_v1alpha().map_err(refl_err)?;
        let mut routes = self.routes;
        routes.add_service(health_service).add_service(v1).add_service(v1alpha);
        // Start NOT_SERVING; the readiness loop flips it once the probes pass.
        for name in self.names.iter().map(String::as_str).chain([""]) {
            health.set_service_status(name, ServingStatus::NotServing).await;
        }
        // Liveness: SERVING for as long as the process serves at all — a database outage makes
        // it unready, never restarted (Kubernetes' liveness probe asks for this name).
        health.set_service_status(LIVENESS, ServingStatus::Serving).await;
        Ok(GrpcServer {
            listener,
            local_addr,
            routes: routes.routes(),
            health,
            names: self.names,
            readiness: self.readiness,
            readiness_interval: self.readiness_interval,
            drain: self.drain,
            grace: self.grace,
            identity: self.identity,
        })
    }
}

/// Every RPC's layers, outermost first — on the listener and in-process alike:
/// - trace: one span per RPC, so everything below logs inside it;
/// - metrics: counts and times every RPC by its final grpc-status;
/// - identity: plain identity headers out, the verified assertion's claims in, before any
///   service code reads them.
fn layers(identity: Option<Arc<IdentityKey>>) -> ServiceBuilder<RpcLayers> {
    ServiceBuilder::new()
        .layer(TraceLayer::new_for_grpc().make_span_with(rpc_span as fn(&Request<Body>) -> _))
        .layer(MetricsLayer)
        .layer(IdentityLayer::new(identity))
}

type RpcTrace = TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::GrpcErrorsAsFailures>,
    fn(&Request<Body>) -> tracing::Span,
>;
type RpcLayers =
    Stack<IdentityLayer, Stack<MetricsLayer, Stack<RpcTrace, tower::layer::util::Identity>>>;

fn rpc_span(req: &Request<Body>) -> tracing::Span {
    let rid =
        req.headers().get(crate::identity::REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    let span = tracing::info_span!(
        "grpc",
        path = %req.uri().path(),
        request_id = %rid,
        trace_id = tracing::field::Empty,
    );
    // A child of the caller's trace (`traceparent` in the metadata).
    crate::telemetry::adopt(&span, req.headers());
    span
}

/// The errors of an in-process call (there are none of its own: a service answers with a
/// status, and the layers pass it on).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A server's services, callable in the same process: the same routes behind the same layers
/// (trace, metrics, identity assertion), with no socket and no HTTP/2 framing in between —
/// what grpc-java's in-process transport is. Messages are still protobuf on gRPC framing,
/// metadata still headers, so a caller cannot tell it from the listener but by speed. The
/// caller enforces its deadline by dropping the call, which cancels the service's future.
pub type LocalChannel = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// A [`LocalChannel`] filled in once the server exists: services are built before the server
/// that serves them, and some call each other (ai → subscribe, prompt; subscribe → payment).
#[derive(Clone, Default)]
pub struct LocalSlot(Arc<std::sync::OnceLock<LocalChannel>>);

impl LocalSlot {
    pub fn new() -> Self {
        Self::default()
    }

    /// A slot that already holds `channel`.
    pub fn filled(channel: LocalChannel) -> Self {
        let slot = Self::new();
        slot.fill(channel);
        slot
    }

    /// Points every channel made from this slot at `channel` (the first fill wins).
    pub fn fill(&self, channel: LocalChannel) {
        let _ = self.0.set(channel);
    }

    pub fn is_filled(&self) -> bool {
        self.0.get().is_some()
    }
}

/// How one service reaches another: an HTTP/2 connection, or — when both run in this process
/// (`skillup up`) — the other service's routes through a [`LocalChannel`]. Either way a tonic
/// client takes it as its transport, and the called service sees the same metadata, layers and
/// deadline (`grpc-timeout` is enforced in-process too: the call is dropped when it passes).
#[derive(Clone)]
pub enum ServiceChannel {
    Network(tonic::transport::Channel),
    InProcess(LocalSlot),
}

impl From<tonic::transport::Channel> for ServiceChannel {
    fn from(c: tonic::transport::Channel) -> Self {
        Self::Network(c)
    }
}

impl From<LocalChannel> for ServiceChannel {
    fn from(c: LocalChannel) -> Self {
        Self::InProcess(LocalSlot::filled(c))
    }
}

impl std::fmt::Debug for ServiceChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Network(c) => c.fmt(f),
            Self::InProcess(_) => f.write_str("InProcess"),
        }
    }
}

type ServiceChannelFuture = futures::future::Either<
    futures::future::MapErr<
        <tonic::transport::Channel as Service<Request<Body>>>::Future,
        fn(tonic::transport::Error) -> BoxError,
    >,
    Pin<
        Box<dyn std::future::Future<Output = std::result::Result<Response<Body>, BoxError>> + Send>,
    >,
>;

impl Service<Request<Body>> for ServiceChannel {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ServiceChannelFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        match self {
            Self::Network(c) => c.poll_ready(cx).map_err(Into::into),
            // Readiness is checked on the call itself (`oneshot`), on a clone of the slot's
            // channel: the slot is shared, so it cannot be held ready here.
            Self::InProcess(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        use futures::{FutureExt, TryFutureExt};
        match self {
            Self::Network(c) => c.call(req).map_err(Into::into as fn(_) -> _).left_future(),
            Self::InProcess(slot) => {
                let local = slot.0.get().cloned();
                let timeout = grpc_timeout(req.headers());
                async move {
                    let Some(local) = local else {
                        return Err(Box::new(tonic::Status::unavailable(
                            "the in-process service is not started yet",
                        )) as BoxError);
                    };
                    let call = tower::ServiceExt::oneshot(local, req);
                    match timeout {
                        None => call.await,
                        Some(t) => tokio::time::timeout(t, call).await.unwrap_or_else(|_| {
                            Err(Box::new(tonic::Status::deadline_exceeded("deadline exceeded")))
                        }),
                    }
                }
                .boxed()
                .right_future()
            }
        }
    }
}

/// The deadline a caller sent as `grpc-timeout` (digits and a unit: H M S m u n).
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The health-check service name that reads SERVING while the process is alive, whatever its
/// readiness (`grpc: {port: 50051, service: liveness}` in a Kubernetes liveness probe).
pub const LIVENESS: &str = "liveness";

/// A bound, not yet running, gRPC server.
pub struct GrpcServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    routes: Routes,
    health: HealthReporter,
    names: Vec<String>,
    readiness: Readiness,
    readiness_interval: Duration,
    drain: Duration,
    grace: Duration,
    identity: Option<Arc<IdentityKey>>,
}

impl GrpcServer {
    pub fn builder() -> GrpcServerBuilder {
        GrpcServerBuilder::new()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The full names of the services registered (health and reflection not counted).
    pub fn services(&self) -> &[String] {
        &self.names
    }

    /// The same services, in-process (see [`LocalChannel`]); health and reflection included.
    pub fn local_channel(&self) -> LocalChannel {
        let svc = layers(self.identity.clone()).service(self.routes.clone());
        tower::util::BoxCloneSyncService::new(
            tower::ServiceBuilder::new()
                .map_err(|e: Infallible| -> BoxError { match e {} })
                .map_response(|r: Response<_>| r.map(Body::new))
                .service(svc),
        )
    }

    /// Serves until `shutdown` fires, then: health NOT_SERVING → wait `drain` → stop accepting →
    /// let in-flight calls finish (at most `grace`).
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let GrpcServer {
            listener,
            local_addr,
            routes,
            health,
            names,
            readiness,
            readiness_interval,
            drain,
            grace,
            identity,
        } = self;
        let statuses: Vec<String> = names.iter().cloned().chain([String::new()]).collect();

        let probe_health = health.clone();
        let probe_names = statuses.clone();
        let probe_stop = shutdown.clone();
        let prober = tokio::spawn(async move {
            let mut last = None;
            loop {
                let results = readiness.check().await;
                let ready = results.iter().all(|r| r.ok);
                if probe_stop.is_triggered() {
                    break;
                }
                if last != Some(ready) {
                    let status =
                        if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
                    for name in &probe_names {
                        probe_health.set_service_status(name, status).await;
                    }
                    if ready {
                        tracing::info!(addr = %local_addr, "grpc ready");
                    } else {
                        let failing: Vec<_> =
                            results.iter().filter(|r| !r.ok).map(|r| r.name.as_str()).collect();
                        tracing::warn!(addr = %local_addr, ?failing, "grpc not ready");
                    }
                    last = Some(ready);
                }
                tokio::select! {
                    _ = tokio::time::sleep(readiness_interval) => {}
                    _ = probe_stop.wait() => break,
                }
            }
        });

        let stop_health = health.clone();
        let deadline = shutdown.clone();
        let signal = async move {
            shutdown.wait().await;
            for name in &statuses {
                stop_health.set_service_status(name, ServingStatus::NotServing).await;
            }
            tracing::info!(drain_ms = drain.as_millis() as u64, "grpc draining");
            tokio::time::sleep(drain).await;
        };

        let server = Server::builder()
            .layer(layers(identity))
            .add_routes(routes)
            // TCP_NODELAY: a unary answer is headers, data and trailers; Nagle would hold the
            // last of them for the peer's delayed ACK (40 ms stalls at low concurrency).
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                signal,
            );
        let mut server = std::pin::pin!(server);
        // The server returns by itself once the drain is over and in-flight calls are done;
        // calls still running `grace` after the drain are cut off.
        let res = tokio::select! {
            res = &mut server => res.map_err(Into::into),
            _ = async {
                deadline.wait().await;
                tokio::time::sleep(drain + grace).await;
            } => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over, closing remaining calls");
                Ok(())
            }
        };
        prober.abort();
        res
    }
}

/// Records `grpc_server_handled_total{service,method,code}` and
/// `grpc_server_handling_seconds{service,method}` for every RPC.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
}

impl<S, B> Service<Request<Body>> for MetricsService<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
{
    type Response = Response<MetricsBody<B>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (service, method) = split_path(req.uri().path());
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            // A trailers-only response (most errors) carries grpc-status in the headers.
            let header_code =
                res.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let mut rec = Recorder { service, method, start, done: false };
            if let Some(code) = header_code {
                rec.finish(&code);
            }
            Ok(res.map(|body| MetricsBody { inner: body, rec }))
        })
    }
}

fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default().to_owned();
    let method = parts.next().unwrap_or_default().to_owned();
    (service, method)
}

#[derive(Debug)]
struct Recorder {
    service: String,
    method: String,
    start: Instant,
    done: bool,
}

impl Recorder {
    fn finish(&mut self, code: &str) {
        if self.done {
            return;
        }
        self.done = true;
        let code = code_name(code);
        metrics::counter!("grpc_server_handled_total", "service" => self.service.clone(), "method" => self.method.clone(), "code" => code)
            .increment(1);
        metrics::histogram!("grpc_server_handling_seconds", "service" => self.service.clone(), "method" => self.method.clone())
            .record(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // The body was dropped before its trailers: the client went away.
        self.finish("1");
    }
}

fn code_name(code: &str) -> &'static str {
    let n: i32 = code.trim().parse().unwrap_or(2);
    match tonic::Code::from_i32(n) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

pin_project_lite::pin_project! {
    /// Watches the response body for its trailers, where a streamed or unary call's final
    /// grpc-status is.
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        rec: Recorder,
    }
}

impl<B: http_body::Body> http_body::Body for MetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame
                    .trailers_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .and_then(|v| v.to_str().ok())
                {
                    this.rec.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.rec.finish("13"),
            Poll::Ready(None) => this.rec.finish("0"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
