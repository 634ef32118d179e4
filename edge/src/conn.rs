//! The accept loop and what keeps it healthy under abuse: caps on connections in total and
//! per client address, a deadline for a new connection's first bytes and for every header
//! section, and an idle timeout for connections with nothing in flight (HTTP/1.1 keep-alive
//! and HTTP/2 alike). A client that opens sockets and says nothing, or trickles, is closed on
//! time instead of holding a file descriptor for ever.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::ConnectInfo};
use bytes::Bytes;
use http::{Request, Response};
use ipnet::IpNet;
use skillup_kit::Shutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::EdgeConfig;

/// Connection settings, from [`EdgeConfig`].
#[derive(Debug, Clone)]
pub struct ConnSettings {
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_per_ip: usize,
    /// Proxies are many clients behind one address: no per-address cap for them.
    pub trusted: Vec<IpNet>,
    /// After SIGTERM: accept this long more (readiness reads 503), then give requests in
    /// flight up to `grace`.
    pub drain: Duration,
    pub grace: Duration,
}

impl ConnSettings {
    pub fn new(cfg: &EdgeConfig, drain: Duration, grace: Duration) -> Self {
        ConnSettings {
            max_header_bytes: cfg.max_header_bytes,
            header_timeout: Duration::from_millis(cfg.header_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(cfg.idle_timeout_ms.max(1)),
            max_connections: cfg.max_connections.max(1),
            max_per_ip: cfg.max_connections_per_ip.max(1),
            trusted: crate::net::nets(&cfg.trusted_proxies),
            drain,
            grace,
        }
    }
}

/// Open connections by client address.
#[derive(Debug, Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// One open connection of an address; the count goes down when it is dropped.
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = self.0.lock().expect("per-ip table");
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot { table: self.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().expect("per-ip table");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a connection is doing: requests in flight (until their answer's body is done) and
/// when it last moved a byte.
#[derive(Debug)]
struct Activity {
    born: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity { born: Instant::now(), last_ms: 0.into(), in_flight: 0.into() })
    }

    fn touch(&self) {
        self.last_ms.store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long it has been idle (zero while a request is in flight).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    /// Resolves once the connection has been idle for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let quiet = self.idle_for();
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    }
}

/// A request in flight; it ends when its answer's body is dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// The socket, noting when bytes move.
    struct Watched<T> {
        #[pin]
        io: T,
        activity: Arc<Activity>,
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

pin_project_lite::pin_project! {
    /// An answer's body, holding its request in flight until it is done (SSE streams and
    /// long answers keep their connection out of the idle timeout).
    struct Tracked {
        #[pin]
        body: Body,
        _in_flight: InFlight,
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves `router` on `listener` (TLS when `tls` is set), HTTP/1.1 and HTTP/2, until
/// `shutdown`; then accepts for `drain` more and gives requests in flight up to `grace`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    settings: ConnSettings,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::{conn::auto::Builder, graceful::GracefulShutdown},
        service::TowerToHyperService,
    };
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(settings.max_header_bytes.max(8192) * 2)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(settings.header_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(settings.max_header_bytes as u32 * 2)
        // A peer that stops answering pings is gone: its connection closes.
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let total = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let settings = Arc::new(settings);
    let stop = async {
        shutdown.wait().await;
        tracing::info!(drain_ms = settings.drain.as_millis() as u64, "edge draining");
        tokio::time::sleep(settings.drain).await;
    };
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            metrics::counter!("edge_connections_refused_total", "reason" => "total").increment(1);
            continue;
        };
        let ip = peer.ip();
        let slot = if crate::net::contains(&settings.trusted, ip) {
            None
        } else {
            match per_ip.enter(ip, settings.max_per_ip) {
                Some(slot) => Some(slot),
                None => {
                    metrics::counter!("edge_connections_refused_total", "reason" => "per_ip")
                        .increment(1);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let svc = tracked(router.clone(), activity.clone(), peer);
        let svc = TowerToHyperService::new(svc);
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        let settings = settings.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            // A connection that says nothing is closed: it must start within the header
            // timeout (a TLS client starts with its hello).
            let mut first = [0u8; 1];
            match tokio::time::timeout(settings.header_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let io = Watched { io: stream, activity: activity.clone() };
            let served = async {
                match tls {
                    Some(acceptor) => {
                        let Ok(Ok(s)) =
                            tokio::time::timeout(settings.header_timeout, acceptor.accept(io))
                                .await
                        else {
                            return Ok(());
                        };
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(s), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                    None => {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                }
            };
            tokio::select! {
                res = served => if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                _ = activity.idle(settings.idle_timeout) => {
                    metrics::counter!("edge_connections_idle_closed_total").increment(1);
                }
            }
        });
    }
    drop(listener);
    // In-flight requests finish; long streams are cut after the grace period.
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(settings.grace) => tracing::warn!(grace_ms = settings.grace.as_millis() as u64, "edge: closing connections still open after the grace period"),
    }
    Ok(())
}

/// The router for one connection: its peer address, and every request counted in flight
/// until its answer's body is done.
fn tracked(
    router: Router,
    activity: Arc<Activity>,
    peer: SocketAddr,
) -> impl tower::Service<
    Request<hyper::body::Incoming>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send {
    use tower::ServiceExt as _;
    let router = router.layer(axum::Extension(ConnectInfo(peer)));
    tower::service_fn(move |req: Request<hyper::body::Incoming>| {
        let in_flight = activity.begin();
        let call = router.clone().oneshot(req);
        async move {
            let res = call.await?;
            Ok(res.map(|body| Body::new(Tracked { body, _in_flight: in_flight })))
        }
    })
}
