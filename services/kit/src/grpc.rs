//! The gRPC server bootstrap every service uses: tonic-health driven by real readiness,
//! reflection v1 and v1alpha (grpcurl 1.8 only speaks v1alpha), request tracing, per-RPC
//! metrics, and graceful shutdown (health NOT_SERVING first, then in-flight calls finish).

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response};
use skillup_proto::local;
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

/// A generated tonic server, as [`GrpcServerBuilder`] takes it.
pub trait TonicService:
    Service<Request<Body>, Error = Infallible, Response = Response<Body>, Future: Send + 'static>
    + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> TonicService for S where
    S: Service<
            Request<Body>,
            Error = Infallible,
            Response = Response<Body>,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Collects the services one listener serves.
pub struct GrpcServerBuilder {
    routes: RoutesBuilder,
    names: Vec<String>,
    readiness: Readiness,
    readiness_interval: Duration,
    drain: Duration,
    grace: Duration,
    identity: Option<Arc<IdentityKey>>,
    direct: Vec<(&'static str, local::Handler)>,
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
            direct: Vec::new(),
        }
    }
}

impl GrpcServerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a generated tonic service; its name appears in health and reflection.
    pub fn add_service<S: TonicService>(mut self, svc: S) -> Self {
        self.names.push(S::NAME.to_owned());
        self.routes.add_service(svc);
        self
    }

    /// Adds a generated tonic service with its unary methods for direct in-process calls
    /// (`<service>_local::handlers` of the same service: see [`LocalChannel::unary`]).
    pub fn add_local_service<S: TonicService>(
        mut self,
        (svc, handlers): (S, local::Handlers),
    ) -> Self {
        self.direct.extend(handlers);
        self.add_service(svc)
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
            direct: self.direct.into_iter().collect(),
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
        .layer(
            TraceLayer::new(tower_http::classify::SharedClassifier::new(classifier()))
                .make_span_with(request_span as fn(&Request<Body>) -> _),
        )
        .layer(MetricsLayer)
        .layer(IdentityLayer::new(identity))
}

/// What counts as a failed RPC in the logs (ERROR, and so a Sentry report): the server's
/// and its dependencies' faults. The codes that are the caller's doing — a bad argument, a
/// missing thing, no permission, no quota, a call it cancelled — are answers, not failures.
pub fn classifier() -> tower_http::classify::GrpcErrorsAsFailures {
    use tower_http::classify::GrpcCode::*;
    [
        Cancelled,
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unauthenticated,
    ]
    .into_iter()
    .fold(tower_http::classify::GrpcErrorsAsFailures::new(), |c, code| c.with_success(code))
}

/// Whether [`classifier`] counts `code` as a failure.
pub fn is_failure(code: tonic::Code) -> bool {
    use tower_http::classify::{ClassifiedResponse, ClassifyResponse};
    let res = http::Response::builder()
        .header("grpc-status", (code as i32).to_string())
        .body(())
        .expect("a status header is valid");
    matches!(classifier().classify_response(&res), ClassifiedResponse::Ready(Err(_)))
}

type RpcTrace = TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::GrpcErrorsAsFailures>,
    fn(&Request<Body>) -> tracing::Span,
>;
type RpcLayers =
    Stack<IdentityLayer, Stack<MetricsLayer, Stack<RpcTrace, tower::layer::util::Identity>>>;

fn request_span(req: &Request<Body>) -> tracing::Span {
    rpc_span(req.uri().path(), req.headers())
}

fn rpc_span(path: &str, headers: &http::HeaderMap) -> tracing::Span {
    let rid = headers.get(crate::identity::REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    let span = tracing::info_span!(
        "grpc",
        path = %path,
        request_id = %rid,
        trace_id = tracing::field::Empty,
    );
    // A child of the caller's trace (`traceparent` in the metadata).
    crate::telemetry::adopt(&span, headers);
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
pub type LocalHttp = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// The services of this process: every RPC through [`LocalHttp`] (a tower service, which this
/// is too), and unary methods also directly ([`LocalChannel::unary`]): the service's own
/// method called with the encoded message and its metadata, inside the same span, metrics and
/// identity check the layers give a call over gRPC, without the gRPC framing, body streams and
/// header conversions on both sides. The edge calls its in-process upstreams this way.
#[derive(Clone)]
pub struct LocalChannel {
    http: LocalHttp,
    direct: Arc<Direct>,
}

struct Direct {
    handlers: std::collections::HashMap<&'static str, (local::Handler, Arc<RpcMetrics>)>,
    identity: Option<Arc<IdentityKey>>,
}

impl LocalChannel {
    /// Calls the unary method at `path` (`/skillup.auth.v1.AuthService/GetMe`) directly; the
    /// request comes back when it has no direct handler (streams, health, reflection: use the
    /// channel).
    ///
    /// As over gRPC: the call runs in a `grpc` span (a child of the `traceparent` in the
    /// metadata), is counted in the RPC metrics by its final code (CANCELLED when dropped),
    /// and the identity headers are dropped and put back only from a valid assertion (a bad
    /// one is UNAUTHENTICATED before the service sees the call). The caller enforces its
    /// deadline by dropping the future; `grpc-timeout` reaches the service in the metadata.
    // The request comes back as it was given (boxing it would cost every call an allocation).
    #[allow(clippy::result_large_err)]
    pub fn unary(
        &self,
        path: &str,
        req: tonic::Request<Bytes>,
    ) -> std::result::Result<
        impl Future<Output = std::result::Result<tonic::Response<Bytes>, tonic::Status>> + Send + use<>,
        tonic::Request<Bytes>,
    > {
        let Some((&path, (handler, metrics))) = self.direct.handlers.get_key_value(path) else {
            return Err(req);
        };
        let handler = handler.clone();
        let (metadata, mut extensions, message) = req.into_parts();
        let mut headers = metadata.into_headers();
        let span = rpc_span(path, &headers);
        let admitted = {
            let _entered = span.enter();
            let key = self.direct.identity.as_deref();
            crate::identity::admit(key, &mut headers, &mut extensions, path)
        };
        let mut rec = Recorder::new(metrics.clone());
        let req = tonic::Request::from_parts(
            tonic::metadata::MetadataMap::from_headers(headers),
            extensions,
            message,
        );
        let call = async move {
            let res = match admitted {
                Ok(()) => handler(req).await.map_err(without_source),
                Err(status) => Err(status),
            };
            let code = res.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
            if code != tonic::Code::Ok && is_failure(code) {
                // As the listener's trace layer reports a failed RPC.
                tracing::error!(classification = %format!("Code: {}", code as i32), latency = %format!("{} ms", rec.start.elapsed().as_millis()), "response failed");
            }
            rec.finish_code(code);
            res
        };
        Ok(tracing::Instrument::instrument(call, span))
    }

    /// Whether [`LocalChannel::unary`] can call `path`.
    pub fn has_unary(&self, path: &str) -> bool {
        self.direct.handlers.contains_key(path)
    }
}

/// A status as a caller over gRPC would read it: code, message, details and metadata, without
/// the in-process error it may carry as its source (callers tell transport failures by it).
fn without_source(s: tonic::Status) -> tonic::Status {
    if std::error::Error::source(&s).is_none() {
        return s;
    }
    tonic::Status::with_details_and_metadata(
        s.code(),
        s.message().to_owned(),
        s.details().to_vec().into(),
        s.metadata().clone(),
    )
}

impl Service<Request<Body>> for LocalChannel {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = <LocalHttp as Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.http.call(req)
    }
}

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

    /// The channel, once filled.
    pub fn get(&self) -> Option<&LocalChannel> {
        self.0.get()
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
    direct: std::collections::HashMap<&'static str, local::Handler>,
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
        let http = tower::util::BoxCloneSyncService::new(
            tower::ServiceBuilder::new()
                .map_err(|e: Infallible| -> BoxError { match e {} })
                .map_response(|r: Response<_>| r.map(Body::new))
                .service(svc),
        );
        // The handles are made on first use: the recorder must be there by then.
        let _ = crate::ops::metrics_handle();
        let handlers = self
            .direct
            .iter()
            .map(|(&path, h)| (path, (h.clone(), Arc::new(RpcMetrics::new(path)))))
            .collect();
        let direct = Arc::new(Direct { handlers, identity: self.identity.clone() });
        LocalChannel { http, direct }
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
            direct: _,
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
        let mut rec = Recorder::new(Arc::new(RpcMetrics::new(req.uri().path())));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            // A trailers-only response (most errors) carries grpc-status in the headers.
            let header_code =
                res.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned);
            if let Some(code) = header_code {
                rec.finish(&code);
            }
            Ok(res.map(|body| MetricsBody { inner: body, rec }))
        })
    }
}

/// The `/package.Service/Method` paths of the contracts, health and reflection. A path outside
/// them is labelled as sent only when a service answered it (a test's own service); one that
/// nothing serves (UNIMPLEMENTED) is counted as `other`, so a client sending arbitrary paths
/// cannot grow the series without bound.
fn known_rpc(path: &str) -> bool {
    static KNOWN: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        use prost::Message as _;
        let mut known = std::collections::HashSet::new();
        for set in [skillup_proto::FILE_DESCRIPTOR_SET, skillup_proto::TESTING_FILE_DESCRIPTOR_SET]
        {
            let Ok(fds) = prost_types::FileDescriptorSet::decode(set) else { continue };
            for file in fds.file {
                for service in &file.service {
                    for method in &service.method {
                        known.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.health.v1.Health/List",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            known.insert(path.to_owned());
        }
        known
    });
    known.contains(path)
}

fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default().to_owned();
    let method = parts.next().unwrap_or_default().to_owned();
    (service, method)
}

/// `grpc_server_handled_total` and `grpc_server_handling_seconds` of one method: the handles
/// are made on first use and kept for as long as this is (a direct handler's lifetime; one
/// call's over the listener, whose paths are whatever clients send).
#[derive(Debug)]
struct RpcMetrics {
    /// One of [`known_rpc`]'s paths.
    known: bool,
    service: String,
    method: String,
    seconds: std::sync::OnceLock<metrics::Histogram>,
    handled: [std::sync::OnceLock<metrics::Counter>; 17],
}

impl RpcMetrics {
    fn new(path: &str) -> Self {
        let (service, method) = split_path(path);
        let known = known_rpc(path);
        RpcMetrics {
            known,
            service,
            method,
            seconds: Default::default(),
            handled: Default::default(),
        }
    }

    fn record(&self, code: tonic::Code, secs: f64) {
        if !self.known && code == tonic::Code::Unimplemented {
            metrics::counter!("grpc_server_handled_total", "service" => "other", "method" => "other", "code" => code_name(code))
                .increment(1);
            metrics::histogram!("grpc_server_handling_seconds", "service" => "other", "method" => "other")
                .record(secs);
            return;
        }
        let handled = self.handled[(code as usize).min(16)].get_or_init(|| {
            metrics::counter!("grpc_server_handled_total", "service" => self.service.clone(), "method" => self.method.clone(), "code" => code_name(code))
        });
        handled.increment(1);
        self.seconds
            .get_or_init(|| {
                metrics::histogram!("grpc_server_handling_seconds", "service" => self.service.clone(), "method" => self.method.clone())
            })
            .record(secs);
    }
}

#[derive(Debug)]
struct Recorder {
    metrics: Arc<RpcMetrics>,
    start: Instant,
    done: bool,
}

impl Recorder {
    fn new(metrics: Arc<RpcMetrics>) -> Self {
        Recorder { metrics, start: Instant::now(), done: false }
    }

    fn finish(&mut self, code: &str) {
        self.finish_code(tonic::Code::from_i32(code.trim().parse().unwrap_or(2)));
    }

    fn finish_code(&mut self, code: tonic::Code) {
        if self.done {
            return;
        }
        self.done = true;
        self.metrics.record(code, self.start.elapsed().as_secs_f64());
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // The body was dropped before its trailers: the client went away.
        self.finish("1");
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
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

#[cfg(test)]
mod classify_tests {
    use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

    /// Issue 26.10: every client-error status was logged at ERROR (and sent to Sentry).
    #[test]
    fn client_errors_are_answers_and_server_errors_failures() {
        let outcome = |code: tonic::Code| {
            let res = http::Response::builder()
                .header("grpc-status", (code as i32).to_string())
                .body(())
                .unwrap();
            let ok = match super::classifier().classify_response(&res) {
                ClassifiedResponse::Ready(r) => r.is_ok(),
                ClassifiedResponse::RequiresEos(_) => panic!("{code:?}: trailers-only is ready"),
            };
            assert_eq!(ok, !super::is_failure(code) || code == Ok);
            ok
        };
        use tonic::Code::*;
        for code in [
            Ok,
            Cancelled,
            InvalidArgument,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unauthenticated,
        ] {
            assert!(outcome(code), "{code:?} is the caller's");
        }
        for code in [Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable, DataLoss] {
            assert!(!outcome(code), "{code:?} is a failure");
        }
    }
}

#[cfg(test)]
mod decode_tests {
    /// Kept from issue 26's attack testing: a message nested deeper than prost's recursion
    /// limit (100) is refused as undecodable, never recursed into until the stack overflows.
    #[test]
    fn protobuf_recursion_is_capped() {
        use prost::Message as _;
        use prost_types::{ListValue, Value, value::Kind};
        let mut v = Value { kind: Some(Kind::NullValue(0)) };
        for _ in 0..150 {
            v = Value { kind: Some(Kind::ListValue(ListValue { values: vec![v] })) };
        }
        let bytes = v.encode_to_vec();
        assert!(Value::decode(bytes.as_slice()).is_err(), "150 levels refused");
        let mut shallow = Value { kind: Some(Kind::NullValue(0)) };
        for _ in 0..40 {
            shallow = Value { kind: Some(Kind::ListValue(ListValue { values: vec![shallow] })) };
        }
        assert!(Value::decode(shallow.encode_to_vec().as_slice()).is_ok(), "40 levels decode");
    }
}
