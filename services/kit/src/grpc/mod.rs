//! The gRPC server bootstrap every service uses: tonic-health driven by real readiness,
//! reflection v1 and v1alpha (grpcurl 1.8 only speaks v1alpha), request tracing, per-RPC
//! metrics, and graceful shutdown (health NOT_SERVING first, then in-flight calls finish).

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

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
use tower::{Service, ServiceBuilder, layer::util::Stack};
use tower_http::trace::TraceLayer;

use crate::{
    Readiness, Result, Shutdown,
    identity::{IdentityKey, IdentityLayer, IdentityVerifier},
    mesh::{MeshIncoming, MeshTls},
};

pub mod balance;
mod export;
mod in_process;
mod limits;
mod metrics;

pub use balance::{BalanceSettings, Balanced};
pub use export::{ExportStream, export_part};
use in_process::Direct;
pub use in_process::{BoxError, LocalChannel, LocalHttp, LocalSlot, ServiceChannel, grpc_timeout};
pub use limits::{LoadLayer, LoadService};
use metrics::RpcMetrics;
pub use metrics::{MetricsLayer, MetricsService};

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
    identity: Option<Arc<IdentityVerifier>>,
    mesh: Option<Arc<MeshTls>>,
    load: LoadLayer,
    max_connection_age: Option<Duration>,
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
            mesh: None,
            load: LoadLayer::default(),
            max_connection_age: None,
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

    /// The full names of the services added so far.
    pub fn service_names(&self) -> &[String] {
        &self.names
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

    /// The public key the edge's identity assertions are verified with. Without it every
    /// identity header is dropped and every assertion refused (see [`crate::identity`]).
    pub fn identity_verifier(mut self, key: Arc<IdentityVerifier>) -> Self {
        self.identity = Some(key);
        self
    }

    /// [`GrpcServerBuilder::identity_verifier`] with the public half of `key` (tests, `up`).
    pub fn identity_key(mut self, key: Arc<IdentityKey>) -> Self {
        self.identity = Some(key.verifier());
        self
    }

    /// The listener's side of mutual TLS: callers prove who they are with a certificate of
    /// the mesh CA (see [`crate::mesh`]). Without it every caller over the network is
    /// anonymous, so only health and reflection answer it.
    pub fn mesh_tls(mut self, tls: Arc<MeshTls>) -> Self {
        self.mesh = Some(tls);
        self
    }

    /// At most `max_concurrent` calls at once (more are refused with UNAVAILABLE at once),
    /// each for at most `timeout` (then DEADLINE_EXCEEDED); see [`LoadLayer`].
    pub fn limits(mut self, max_concurrent: usize, timeout: Duration) -> Self {
        self.load = LoadLayer::new(max_concurrent, timeout);
        self
    }

    /// Ends each connection about `age` old (0: never) with a graceful GOAWAY: its calls
    /// finish, the client connects again, and a client that cannot see every replica is
    /// spread over new ones too (grpc-go's `MaxConnectionAge`). ±10 %, drawn once per server:
    /// tonic takes one age for every connection, so replicas started together do not send
    /// their clients away all at once (connections opened at different times age apart).
    pub fn max_connection_age(mut self, age: Duration) -> Self {
        self.max_connection_age = (!age.is_zero()).then(|| age.mul_f64(0.9 + 0.2 * unit_random()));
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
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // `google.rpc.*` (ErrorInfo, BadRequest, RetryInfo): the error details every
                // status carries, so grpcurl prints them rather than their bytes.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET);
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
            mesh: self.mesh,
            load: self.load,
            max_connection_age: self.max_connection_age,
            direct: self.direct.into_iter().collect(),
        })
    }
}

/// Every RPC's layers, outermost first — on the listener and in-process alike:
/// - trace: one span per RPC, so everything below logs inside it;
/// - metrics: counts and times every RPC by its final grpc-status;
/// - load: the server's deadline and its concurrency limit, shedding what is over it at once
///   (inside metrics and trace, so a shed call is counted and logged as UNAVAILABLE);
/// - identity: plain identity headers out, the verified assertion's claims in, before any
///   service code reads them.
fn layers(identity: Option<Arc<IdentityVerifier>>, load: LoadLayer) -> ServiceBuilder<RpcLayers> {
    ServiceBuilder::new()
        .layer(
            TraceLayer::new(tower_http::classify::SharedClassifier::new(classifier()))
                .make_span_with(request_span as fn(&Request<Body>) -> _),
        )
        .layer(MetricsLayer)
        .layer(load)
        .layer(IdentityLayer::new(identity))
}

/// A request's idempotency key: its own field when set, else the `idempotency-key` metadata
/// (the edge passes the `Idempotency-Key` header on as that), else empty.
pub fn idempotency_key<T>(req: &tonic::Request<T>, field: &str) -> String {
    if !field.is_empty() {
        return field.to_owned();
    }
    req.metadata()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
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
type RpcLayers = Stack<
    IdentityLayer,
    Stack<LoadLayer, Stack<MetricsLayer, Stack<RpcTrace, tower::layer::util::Identity>>>,
>;

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

/// A random number in [0, 1).
fn unit_random() -> f64 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
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
    identity: Option<Arc<IdentityVerifier>>,
    mesh: Option<Arc<MeshTls>>,
    load: LoadLayer,
    max_connection_age: Option<Duration>,
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
        let svc = layers(self.identity.clone(), self.load.clone()).service(self.routes.clone());
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
        let direct =
            Arc::new(Direct { handlers, identity: self.identity.clone(), load: self.load.clone() });
        LocalChannel { http, direct, peer: None }
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
            mesh,
            load,
            max_connection_age,
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

        let mut server = Server::builder();
        if let Some(age) = max_connection_age {
            server = server.max_connection_age(age);
        }
        let server = server
            .layer(layers(identity, load))
            .add_routes(routes)
            // Plaintext and mesh TLS on the one port, TCP_NODELAY on each (see MeshIncoming).
            .serve_with_incoming_shutdown(MeshIncoming::new(listener, mesh), signal);
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

#[cfg(test)]
mod idempotency_tests {
    #[test]
    fn the_field_wins_over_the_header_and_either_may_be_missing() {
        let mut req = tonic::Request::new(());
        assert_eq!(super::idempotency_key(&req, ""), "");
        req.metadata_mut().insert("idempotency-key", "from-header".parse().unwrap());
        assert_eq!(super::idempotency_key(&req, ""), "from-header");
        assert_eq!(super::idempotency_key(&req, "from-field"), "from-field");
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
