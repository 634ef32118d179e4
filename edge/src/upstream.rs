//! The services behind the edge: one lazily connected HTTP/2 channel per upstream, calls made
//! with already-encoded bytes (the transcoder owns the message types), a deadline on every
//! call, retries of UNAVAILABLE where that is safe (see [`RetryConfig`]), and a circuit breaker
//! per upstream that counts a call once, by its final outcome.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use skillup_kit::config::BreakerConfig;

use crate::config::{EdgeConfig, RetryConfig};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataMap,
    transport::Endpoint,
};

use skillup_kit::{
    breaker::Breaker,
    grpc::{BalanceSettings, Balanced, BoxError, LocalChannel, ServiceChannel},
};

/// Passes encoded messages through untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }

    /// As the services' codec (`skillup_proto::codec`): 1 KiB to start, grown as needed.
    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        skillup_proto::codec::buffers()
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }

    /// A 1 KiB starting buffer (tonic's default is 8 KiB): a WebSocket holds its stream's
    /// buffer for as long as it is open, mostly idle; the buffer grows for large messages.
    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        tonic::codec::BufferSettings::new(1024, 32 * 1024)
    }
}

/// One upstream service: its replicas balanced call by call, a few HTTP/2 connections to each
/// (one connection's lock and flow control become the bottleneck under many concurrent calls;
/// see `skillup_kit::grpc::balance`), and one breaker, which counts failures only while at
/// most one replica is in — a bad replica is the balancer's to eject, not a reason to stop
/// calling the others.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub url: String,
    channel: ServiceChannel,
    pub breaker: Breaker,
    retry: RetryConfig,
}

/// Every upstream, by short name (`auth`, `ai`, …).
#[derive(Debug, Clone)]
pub struct Upstreams {
    by_name: Arc<HashMap<String, Arc<Upstream>>>,
    default_url: String,
    breaker: BreakerConfig,
}

impl Upstreams {
    /// Channels for `names` (connected on first use). An upstream with no address of its own
    /// in `edge.upstreams` is called in-process when `local` is given.
    pub fn new(
        cfg: &EdgeConfig,
        default_url: String,
        names: impl IntoIterator<Item = String>,
        local: Option<LocalChannel>,
        mesh: Option<Arc<skillup_kit::mesh::MeshTls>>,
        resolve_every: Duration,
    ) -> Result<Self, String> {
        let mut by_name = HashMap::new();
        for name in names {
            let up = match (cfg.upstreams.get(&name), &local) {
                (None, Some(local)) => {
                    Upstream::new(&name, "in-process", ServiceChannel::from(local.clone()), cfg)
                }
                (url, _) => {
                    Self::connect(&name, url.unwrap_or(&default_url), cfg, &mesh, resolve_every)?
                }
            };
            by_name.insert(name, Arc::new(up));
        }
        Ok(Self { by_name: Arc::new(by_name), default_url, breaker: cfg.breaker.clone() })
    }

    fn connect(
        name: &str,
        url: &str,
        cfg: &EdgeConfig,
        mesh: &Option<Arc<skillup_kit::mesh::MeshTls>>,
        resolve_every: Duration,
    ) -> Result<Upstream, String> {
        let settings = BalanceSettings {
            resolve_every,
            connections_per_backend: cfg.upstream_connections.max(1) as usize,
            endpoint: |e: Endpoint| {
                e.connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(10))
            },
            mesh: mesh.clone(),
        };
        let channel = Balanced::new(name, url, settings)
            .map_err(|e| format!("upstream {name}: bad address {url}: {e}"))?;
        Ok(Upstream::new(name, url, channel.into(), cfg))
    }

    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.by_name.get(name).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.by_name.values()
    }

    pub fn default_url(&self) -> &str {
        &self.default_url
    }

    pub fn breaker_config(&self) -> &BreakerConfig {
        &self.breaker
    }
}

/// Why a call did not happen or failed.
#[derive(Debug)]
pub enum CallError {
    /// The breaker is open; retry after this long.
    Open(Duration),
    /// The upstream answered with (or the transport produced) this status.
    Status(Status),
}

fn request(body: Bytes, md: MetadataMap, timeout: Duration) -> tonic::Request<Bytes> {
    let mut req = tonic::Request::new(body);
    *req.metadata_mut() = md;
    // tonic sends it as `grpc-timeout`, so the service sees the same deadline.
    req.set_timeout(timeout);
    req
}

/// The outcome of a call under `timeout`: the edge's own timer, or a service that gave up at
/// the propagated `grpc-timeout` (tonic answers CANCELLED then), both read DEADLINE_EXCEEDED.
fn deadline<T>(
    timeout: Duration,
    started: std::time::Instant,
    res: Result<Result<T, Status>, tokio::time::error::Elapsed>,
) -> Result<T, Status> {
    match res {
        Err(_) => Err(Status::deadline_exceeded("deadline exceeded at the edge")),
        Ok(Err(s)) if s.code() == Code::Cancelled && started.elapsed() >= timeout.mul_f64(0.95) => {
            Err(Status::deadline_exceeded("deadline exceeded"))
        }
        Ok(r) => r,
    }
}

impl Upstream {
    fn new(name: &str, url: &str, channel: ServiceChannel, cfg: &EdgeConfig) -> Self {
        Upstream {
            name: name.to_owned(),
            url: url.to_owned(),
            channel,
            breaker: Breaker::new(format!("upstream:{name}"), cfg.breaker.clone()),
            retry: cfg.retry.clone(),
        }
    }

    /// The channel calls go on.
    pub fn channel(&self) -> ServiceChannel {
        self.channel.clone()
    }

    /// A unary call. The deadline is enforced here too, in case the upstream ignores it.
    /// `idempotent`: safe to repeat after an UNAVAILABLE.
    pub async fn unary(
        &self,
        path: &str,
        body: Bytes,
        md: MetadataMap,
        timeout: Duration,
        idempotent: bool,
    ) -> Result<tonic::Response<Bytes>, CallError> {
        let grpc_path = grpc_path(path)?;
        self.call(timeout, idempotent, |channel, left| {
            use futures::future::Either;
            let mut req = request(body.clone(), md.clone(), left);
            // A service of this process is called directly (the same layers, no framing).
            if let ServiceChannel::InProcess(slot) = &channel
                && let Some(local) = slot.get()
            {
                match local.unary(path, req) {
                    Ok(call) => return Either::Left(call),
                    Err(back) => req = back,
                }
            }
            let grpc_path = grpc_path.clone();
            Either::Right(async move {
                let mut grpc = tonic::client::Grpc::new(channel);
                grpc.ready().await.map_err(not_ready)?;
                grpc.unary(req, grpc_path, RawCodec).await
            })
        })
        .await
    }

    /// A server-streaming call: the response headers (or the first error) arrive before this
    /// returns; the breaker is told how the stream opened.
    pub async fn server_streaming(
        &self,
        path: &str,
        body: Bytes,
        md: MetadataMap,
        timeout: Duration,
        idempotent: bool,
    ) -> Result<tonic::Response<tonic::Streaming<Bytes>>, CallError> {
        let path = grpc_path(path)?;
        self.call(timeout, idempotent, |channel, left| {
            let (body, md, path) = (body.clone(), md.clone(), path.clone());
            async move {
                let mut grpc = tonic::client::Grpc::new(channel);
                grpc.ready().await.map_err(not_ready)?;
                grpc.server_streaming(request(body, md, left), path, RawCodec).await
            }
        })
        .await
    }

    /// One call through the breaker, under the deadline, with retries where they are safe.
    /// `f` makes one attempt on a connection with the time left; the breaker counts the call
    /// once, by how it finally ended.
    pub async fn call<T, F, Fut>(
        &self,
        timeout: Duration,
        idempotent: bool,
        f: F,
    ) -> Result<T, CallError>
    where
        F: Fn(ServiceChannel, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let permit = self.breaker.try_acquire().map_err(CallError::Open)?;
        let started = std::time::Instant::now();
        let mut attempt = 1;
        let mut backoff = Duration::from_millis(self.retry.initial_backoff_ms.max(1));
        let res = loop {
            let left = timeout.saturating_sub(started.elapsed());
            let res = deadline(
                timeout,
                started,
                tokio::time::timeout(left, f(self.channel(), left)).await,
            );
            let Err(status) = &res else { break res };
            // Full jitter, as gRPC's retry policy: a random wait up to the backoff.
            let wait = backoff.mul_f64(jitter());
            let waited = started.elapsed() + wait;
            let unreachable = Duration::from_millis(self.retry.unreachable_ms);
            let retry = retryable(status, idempotent)
                && (attempt < self.retry.max_attempts
                    || (never_sent(status) && waited < unreachable))
                && waited < timeout;
            if !retry {
                break res;
            }
            metrics::counter!("edge_upstream_retries_total", "upstream" => self.name.clone())
                .increment(1);
            tracing::debug!(upstream = %self.name, attempt, code = ?status.code(), "retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
            backoff = (backoff * 2).min(Duration::from_millis(self.retry.max_backoff_ms.max(1)));
        };
        let failed = res.as_ref().is_err_and(|s| is_failure(s.code()));
        if failed && self.channel.replicas_in() > 1 {
            // With other replicas in, one replica's failures are the balancer's to act on: it
            // ejects that one (see `skillup_kit::grpc::balance`). The breaker counts failures
            // once at most one is left — trouble of the whole upstream, not of a replica.
            drop(permit);
        } else {
            permit.record(!failed);
        }
        res.map_err(CallError::Status)
    }
}

/// A channel that cannot take the call: UNAVAILABLE, keeping the cause (a refused connection
/// says the call was never sent).
fn not_ready(e: BoxError) -> Status {
    let mut status = Status::from_error(e);
    if status.code() != Code::Unavailable {
        status = Status::unavailable(status.message().to_owned());
    }
    status
}

fn grpc_path(path: &str) -> Result<PathAndQuery, CallError> {
    PathAndQuery::try_from(path).map_err(|e| CallError::Status(Status::internal(e.to_string())))
}

/// A random factor in [0.5, 1): never a zero wait, never more than the backoff.
fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0
}

/// Whether a failed attempt may be made again: UNAVAILABLE when the call is safe to repeat or
/// certainly never reached the service; CANCELLED (not ours: a cancel near the deadline reads
/// DEADLINE_EXCEEDED by then) when the call is safe to repeat — it is what a call gets when the
/// connection it was put on closes under it, as a restarting service's does; INTERNAL or
/// UNKNOWN when the call is safe to repeat and the transport produced them, not the service
/// (tonic reads a GOAWAY racing a new stream, or a connection closed mid-call, as INTERNAL).
pub fn retryable(status: &Status, idempotent: bool) -> bool {
    match status.code() {
        Code::Unavailable => idempotent || never_sent(status),
        Code::Cancelled => idempotent,
        Code::Internal | Code::Unknown => idempotent && broken_transport(status),
        _ => false,
    }
}

/// The status came from the connection (an HTTP/2, hyper or socket error under it), not from
/// an answer of the service: a service's status arrives in trailers with no source.
fn broken_transport(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<h2::Error>() || e.is::<hyper::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The call was not processed: refused connection, REFUSED_STREAM, or a stream past the
/// server's graceful GOAWAY (see `skillup_kit::grpc::balance::never_sent`).
fn never_sent(status: &Status) -> bool {
    skillup_kit::grpc::balance::never_sent(status)
}

/// The codes that say the upstream is in trouble (a caller's mistake is a healthy answer).
pub fn is_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::DataLoss
    )
}

#[cfg(test)]
mod breaker_tests {
    use super::*;

    #[test]
    fn transport_failures_are_retried_only_when_safe_and_answers_never() {
        // What tonic makes of a GOAWAY (reason NO_ERROR) that caught a new stream: INTERNAL,
        // with the HTTP/2 error as its source.
        let goaway = Status::from_error(Box::new(h2::Error::from(h2::Reason::NO_ERROR)));
        assert_eq!(goaway.code(), Code::Internal);
        assert!(retryable(&goaway, true));
        assert!(!retryable(&goaway, false), "it may have been processed");
        let closed =
            Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        assert_eq!(closed.code(), Code::Unknown);
        assert!(retryable(&closed, true));
        // The same codes answered by the service are answers.
        assert!(!retryable(&Status::internal("boom"), true));
        assert!(!retryable(&Status::unknown("boom"), true));
        // REFUSED_STREAM: never processed, so repeated even when not idempotent.
        let refused = Status::from_error(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert_eq!(refused.code(), Code::Unavailable);
        assert!(retryable(&refused, false));
    }

    #[test]
    fn client_errors_never_open_the_breaker() {
        let b = Breaker::new(
            "t",
            BreakerConfig {
                consecutive_failures: 3,
                failure_rate_percent: 50,
                window: 10,
                open_ms: 50,
                half_open_probes: 2,
            },
        );
        for code in [Code::InvalidArgument, Code::NotFound, Code::PermissionDenied] {
            for _ in 0..20 {
                b.try_acquire().unwrap().record(!is_failure(code));
            }
        }
        assert_eq!(b.state(), skillup_kit::breaker::State::Closed);
        for _ in 0..3 {
            b.try_acquire().unwrap().record(!is_failure(Code::Unavailable));
        }
        assert_eq!(b.state(), skillup_kit::breaker::State::Open);
    }
}
