//! Per-RPC metrics: `grpc_server_handled_total` and `grpc_server_handling_seconds`, labelled
//! from closed sets only.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::Result;

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
/// nothing serves (UNIMPLEMENTED), or that the mesh's caller check refused before anything
/// could (UNAUTHENTICATED, PERMISSION_DENIED), is counted as `other`, so a client sending
/// arbitrary paths cannot grow the series without bound.
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
pub(super) struct RpcMetrics {
    /// One of [`known_rpc`]'s paths.
    known: bool,
    service: String,
    method: String,
    seconds: std::sync::OnceLock<metrics::Histogram>,
    handled: [std::sync::OnceLock<metrics::Counter>; 17],
}

impl RpcMetrics {
    pub(super) fn new(path: &str) -> Self {
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
        use tonic::Code::{PermissionDenied, Unauthenticated, Unimplemented};
        if !self.known && matches!(code, Unimplemented | Unauthenticated | PermissionDenied) {
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
pub(super) struct Recorder {
    metrics: Arc<RpcMetrics>,
    pub(super) start: Instant,
    done: bool,
}

impl Recorder {
    pub(super) fn new(metrics: Arc<RpcMetrics>) -> Self {
        Recorder { metrics, start: Instant::now(), done: false }
    }

    fn finish(&mut self, code: &str) {
        self.finish_code(tonic::Code::from_i32(code.trim().parse().unwrap_or(2)));
    }

    pub(super) fn finish_code(&mut self, code: tonic::Code) {
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
