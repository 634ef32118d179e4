//! Calls to the services of this process: through their routes without a socket, or straight
//! to a unary method ([`LocalChannel::unary`]); and [`ServiceChannel`], which is either that or
//! an HTTP/2 connection.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use skillup_proto::local;
use tonic::body::Body;
use tower::Service;

use crate::{identity::IdentityVerifier, mesh::Peer};

use super::{
    is_failure,
    metrics::{Recorder, RpcMetrics},
    rpc_span,
};

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
    pub(super) http: LocalHttp,
    pub(super) direct: Arc<Direct>,
    /// The calling component: put on every call (the in-process form of its mesh
    /// certificate); `None` calls as nobody, which only health and reflection answer.
    pub(super) peer: Option<Arc<Peer>>,
}

pub(super) struct Direct {
    pub(super) handlers: std::collections::HashMap<&'static str, (local::Handler, Arc<RpcMetrics>)>,
    pub(super) identity: Option<Arc<IdentityVerifier>>,
    pub(super) load: super::LoadLayer,
}

impl LocalChannel {
    /// The same services, called as `component` (see [`crate::mesh`]).
    pub fn as_component(&self, component: &str) -> Self {
        Self { peer: Some(Arc::new(Peer::component(component))), ..self.clone() }
    }

    /// Who calls through this channel.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_deref()
    }

    /// Puts this channel's caller on `extensions`, replacing whatever claimed to be one.
    fn tag(&self, extensions: &mut http::Extensions) {
        match &self.peer {
            Some(p) => {
                extensions.insert(Peer::clone(p));
            }
            None => {
                extensions.remove::<Peer>();
            }
        }
    }

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
        self.tag(&mut extensions);
        let mut headers = metadata.into_headers();
        let span = rpc_span(path, &headers);
        let admitted = {
            let _entered = span.enter();
            let key = self.direct.identity.as_deref();
            crate::identity::admit(key, &mut headers, &mut extensions, path)
        };
        let locale = crate::i18n::Locale::of_parts(&headers, &extensions);
        // Admitted as by the listener's load layer (before the identity check's answer counts).
        let (permit, timeout) = (self.direct.load.admit(), self.direct.load.timeout());
        let mut rec = Recorder::new(metrics.clone());
        let req = tonic::Request::from_parts(
            tonic::metadata::MetadataMap::from_headers(headers),
            extensions,
            message,
        );
        let call = async move {
            let res = match (permit, admitted) {
                (None, _) => Err(super::LoadLayer::overloaded()),
                (Some(_), Err(status)) => Err(status),
                (Some(_permit), Ok(())) => {
                    let served = crate::i18n::scope(locale, handler(req));
                    match tokio::time::timeout(timeout, served).await {
                        Ok(res) => res.map_err(without_source),
                        Err(_) => Err(super::LoadLayer::deadline_passed(timeout)),
                    }
                }
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

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        self.tag(req.extensions_mut());
        self.http.call(req)
    }
}

/// A [`LocalChannel`] filled in once the server exists: services are built before the server
/// that serves them, and some call each other (ai → subscribe, prompt; subscribe → payment).
#[derive(Clone, Default)]
pub struct LocalSlot {
    channel: Arc<std::sync::OnceLock<LocalChannel>>,
    /// Who calls through channels of this slot.
    peer: Option<Arc<Peer>>,
}

impl LocalSlot {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same slot, its calls made as `component` (see [`crate::mesh`]).
    pub fn as_component(&self, component: &str) -> Self {
        Self { channel: self.channel.clone(), peer: Some(Arc::new(Peer::component(component))) }
    }

    /// A slot that already holds `channel`.
    pub fn filled(channel: LocalChannel) -> Self {
        let slot = Self::new();
        slot.fill(channel);
        slot
    }

    /// Points every channel made from this slot at `channel` (the first fill wins).
    pub fn fill(&self, channel: LocalChannel) {
        let _ = self.channel.set(channel);
    }

    pub fn is_filled(&self) -> bool {
        self.channel.get().is_some()
    }

    /// The channel, once filled, calling as this slot's component.
    pub fn get(&self) -> Option<LocalChannel> {
        let channel = self.channel.get()?;
        Some(LocalChannel { peer: self.peer.clone(), ..channel.clone() })
    }
}

/// How one service reaches another: an HTTP/2 connection, or — when both run in this process
/// (`skillup up`) — the other service's routes through a [`LocalChannel`]. Either way a tonic
/// client takes it as its transport, and the called service sees the same metadata, layers and
/// deadline (`grpc-timeout` is enforced in-process too: the call is dropped when it passes).
#[derive(Clone)]
pub enum ServiceChannel {
    Network(tonic::transport::Channel),
    /// Every replica of the service (see [`super::balance`]).
    Balanced(super::Balanced),
    InProcess(LocalSlot),
}

impl ServiceChannel {
    /// Replicas taking calls now: those a balanced channel has not ejected; 1 otherwise.
    pub fn replicas_in(&self) -> usize {
        match self {
            Self::Balanced(b) => {
                let (known, ejected) = b.backends();
                known.saturating_sub(ejected)
            }
            _ => 1,
        }
    }
}

impl From<super::Balanced> for ServiceChannel {
    fn from(c: super::Balanced) -> Self {
        Self::Balanced(c)
    }
}

impl From<tonic::transport::Channel> for ServiceChannel {
    fn from(c: tonic::transport::Channel) -> Self {
        Self::Network(c)
    }
}

impl From<LocalChannel> for ServiceChannel {
    fn from(c: LocalChannel) -> Self {
        let peer = c.peer.clone();
        Self::InProcess(LocalSlot { peer, ..LocalSlot::filled(c) })
    }
}

impl std::fmt::Debug for ServiceChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Network(c) => c.fmt(f),
            Self::Balanced(c) => c.fmt(f),
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
            Self::Balanced(c) => c.poll_ready(cx),
            // Readiness is checked on the call itself (`oneshot`), on a clone of the slot's
            // channel: the slot is shared, so it cannot be held ready here.
            Self::InProcess(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        use futures::{FutureExt, TryFutureExt};
        match self {
            Self::Network(c) => c.call(req).map_err(Into::into as fn(_) -> _).left_future(),
            Self::Balanced(c) => c.call(req).right_future(),
            Self::InProcess(slot) => {
                let local = slot.get();
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
