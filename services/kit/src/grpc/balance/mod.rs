//! Client-side balancing over every replica of a service, as Kubernetes needs it: kube-proxy
//! balances TCP connections when they open, not gRPC calls, so one long-lived HTTP/2 channel
//! to a Service's ClusterIP rides on one replica for as long as it lives. A [`Balanced`]
//! channel instead resolves its target to every address behind it (a headless Service's DNS
//! name; a static list `http://a:50051,http://b:50051` elsewhere), keeps a lazily connected
//! channel per backend, and sends each call to the less loaded of two backends picked at
//! random — tower's power-of-two-choices [`Balance`] over [`PendingRequests`], as Linkerd and
//! Envoy's least-request do.
//!
//! - **Re-resolved** every `grpc.resolve_interval_ms`, and at once when a connection is refused:
//!   new replicas get calls, gone ones are dropped. A failed lookup keeps what was known.
//! - **Outlier ejection per backend** (Envoy's consecutive-failures detection): a refused
//!   connection ejects its backend at once, [`EJECT_AFTER`] failures in a row (transport
//!   errors, UNAVAILABLE, DEADLINE_EXCEEDED, calls cut off at their deadline — a hung replica)
//!   eject it, for a second times the ejections in a row, at most the resolve interval; never
//!   the last one in. Back after a health check says it serves (no caller's call is spent on a
//!   replica still down or hung); then one call at a time until one succeeds (slow start), and
//!   one failure before a success ejects it again. A connection the server closes gracefully
//!   (ageing it out) counts against nobody.
//!   One bad replica is routed around instead of opening the caller's breaker.
//! - **A call that certainly never reached a backend** (refused connection, HTTP/2
//!   REFUSED_STREAM, a stream past a graceful GOAWAY) is sent again to another — safe for any
//!   call, so a replica stopping cost no call. Request bodies here are one message (SkillUp has
//!   no client-streaming RPC), so a call is kept until it is answered.
//! - `grpc_client_calls_total{service, backend}` counts the calls each backend got, and
//!   `grpc_client_ejections_total{service, backend}` its ejections.

use std::{
    collections::{BTreeSet, HashMap},
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{FutureExt, StreamExt, future::BoxFuture};
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::sync::{Notify, mpsc};
use tonic::{body::Body, transport::Endpoint};
use tower::{
    Service, ServiceExt,
    balance::p2c::Balance,
    discover::Change,
    load::{CompleteOnResponse, PendingRequests},
    util::BoxService,
};

use super::in_process::BoxError;

mod backend;

use backend::{Backend, BackendState};

/// Failures in a row that eject a backend (Envoy's `consecutive_5xx` default).
pub const EJECT_AFTER: u32 = 5;
/// The first ejection's length; the n-th in a row lasts n times it (at most the resolve
/// interval, so a replica back at the same address gets calls again within it).
pub const EJECT_BASE: Duration = Duration::from_secs(1);
/// How often a call that never reached a backend is sent to another.
const RESEND: usize = 3;
/// How often a call waiting for a ready backend looks again by itself (the balancer wakes
/// only the last caller that found none; the others would wait on it otherwise).
const REPOLL: Duration = Duration::from_millis(5);

/// How a [`Balanced`] channel finds and connects its backends.
#[derive(Clone)]
pub struct BalanceSettings {
    /// How often the target is resolved again.
    pub resolve_every: Duration,
    /// HTTP/2 connections per backend (more spread one backend's calls over several
    /// connections' locks and flow control).
    pub connections_per_backend: usize,
    /// Sets up each backend's endpoint (timeouts, keep-alive).
    pub endpoint: fn(Endpoint) -> Endpoint,
    /// The mesh certificate the connections present (`None`: plaintext).
    pub mesh: Option<Arc<crate::mesh::MeshTls>>,
}

/// A channel to every replica of one service (see the module's documentation). Cloning is
/// cheap; the clones share backends. Resolution runs while a clone lives.
#[derive(Clone)]
pub struct Balanced {
    /// The balancer, picked from in the caller's own task under a lock held for the pick
    /// only (a queue and a worker task in front of it cost a task hop per call).
    balance: Arc<Mutex<Picker>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Balanced({} → {})", self.shared.service, self.shared.target)
    }
}

/// One `host:port` of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
}

/// The `host:port`s of `url`: one URL, or several separated by commas.
fn targets(url: &str) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    for one in url.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let uri: http::Uri = one.parse().map_err(|e| format!("{one}: {e}"))?;
        let host = uri.host().ok_or_else(|| format!("{one}: no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        out.push(Target { host, port });
    }
    if out.is_empty() {
        return Err("no address".into());
    }
    Ok(out)
}

struct Shared {
    service: String,
    target: String,
    resolve_every: Duration,
    /// Asks for a resolution now (a connection was refused).
    resolve_now: Notify,
    /// Backends known, and how many of them are ejected now.
    backends: AtomicUsize,
    ejected: AtomicUsize,
}

impl Balanced {
    /// A channel to every address `url` resolves to (`url`: one URL or a comma-separated
    /// list), for calls to `service`. Connects lazily; needs a Tokio runtime.
    pub fn new(service: &str, url: &str, settings: BalanceSettings) -> Result<Self, String> {
        let targets = targets(url)?;
        // The per-backend counters are made as backends come: the recorder must be there.
        let _ = crate::ops::metrics_handle();
        let shared = Arc::new(Shared {
            service: service.to_owned(),
            target: url.to_owned(),
            resolve_every: settings.resolve_every.max(Duration::from_millis(100)),
            resolve_now: Notify::new(),
            backends: AtomicUsize::new(0),
            ejected: AtomicUsize::new(0),
        });
        let (tx, mut rx) = mpsc::channel::<Change<(SocketAddr, usize), Backend>>(64);
        tokio::spawn(discover(shared.clone(), targets, settings, tx));
        let discover = futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
            .map(|change| Ok::<_, std::convert::Infallible>(with_load(change)));
        let balance = Balance::new(discover);
        let balance = Arc::new(Mutex::new(BoxService::new(balance.map_err(BoxError::from))));
        Ok(Self { balance, shared })
    }

    /// Backends known now, and how many of them are ejected.
    pub fn backends(&self) -> (usize, usize) {
        (self.shared.backends.load(Ordering::Acquire), self.shared.ejected.load(Ordering::Acquire))
    }
}

type Loaded = PendingRequests<Backend, CompleteOnResponse>;

type Picker = BoxService<Request<Body>, Response<Body>, BoxError>;

/// Waits for a ready backend and starts the call on it; the answer is awaited outside the lock.
async fn pick(
    balance: &Mutex<Picker>,
    req: Request<Body>,
) -> Result<BoxFuture<'static, Result<Response<Body>, BoxError>>, BoxError> {
    let mut req = Some(req);
    let mut again = Box::pin(tokio::time::sleep(REPOLL));
    std::future::poll_fn(|cx| {
        let mut b = balance.lock().unwrap_or_else(|e| e.into_inner());
        match b.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                let req = req.take().expect("picked once");
                Poll::Ready(Ok(b.call(req)))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                drop(b);
                while again.as_mut().poll(cx).is_ready() {
                    again.as_mut().reset(tokio::time::Instant::now() + REPOLL);
                }
                Poll::Pending
            }
        }
    })
    .await
}

fn with_load(change: Change<(SocketAddr, usize), Backend>) -> Change<(SocketAddr, usize), Loaded> {
    match change {
        Change::Insert(k, b) => {
            Change::Insert(k, PendingRequests::new(b, CompleteOnResponse::default()))
        }
        Change::Remove(k) => Change::Remove(k),
    }
}

impl Service<Request<Body>> for Balanced {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is waited for in the call, once per attempt.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let balance = self.balance.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map_err(BoxError::from)?.to_bytes();
            let mut sent = 0;
            loop {
                let req = Request::from_parts(
                    parts.clone(),
                    Body::new(http_body_util::Full::new(body.clone())),
                );
                let res = pick(&balance, req).await?.await;
                sent += 1;
                match res {
                    Err(e) if sent < RESEND && never_sent(&*e) => {
                        metrics::counter!("grpc_client_resent_total").increment(1);
                    }
                    res => return res,
                }
            }
        }
        .boxed()
    }
}

/// The error says the request was not processed: the connection was refused, the server
/// refused the stream (HTTP/2 REFUSED_STREAM, or a stream past its graceful GOAWAY's last id),
/// or the connection closed while the request still waited to be written (hyper's
/// "canceled: connection closed", which hyper's own pooled client sends again too).
pub fn never_sent(e: &(dyn std::error::Error + 'static)) -> bool {
    refused(e)
        || causes(e).any(|e| {
            e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled)
                || e.downcast_ref::<h2::Error>().is_some_and(|h2| {
                    h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                        || (h2.is_go_away()
                            && h2.is_remote()
                            && h2.reason() == Some(h2::Reason::NO_ERROR))
                })
        })
}

/// The connection was refused: nothing listens at the backend's address.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    causes(e).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// `e` and its sources, outermost first.
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// Resolves the targets every `resolve_every` (and when asked) and tells the balancer what
/// came and went. Ends when the balancer is gone.
async fn discover(
    shared: Arc<Shared>,
    targets: Vec<Target>,
    settings: BalanceSettings,
    tx: mpsc::Sender<Change<(SocketAddr, usize), Backend>>,
) {
    let mut known: HashMap<SocketAddr, Arc<BackendState>> = HashMap::new();
    let mut last: HashMap<String, Vec<SocketAddr>> = HashMap::new();
    let conns = settings.connections_per_backend.max(1);
    loop {
        let mut addrs = BTreeSet::new();
        for t in &targets {
            match resolve(t).await {
                Ok(found) if !found.is_empty() => {
                    addrs.extend(found.iter().copied());
                    last.insert(t.host.clone(), found);
                }
                res => {
                    // A failed lookup (or none, as a headless Service with no ready pod) keeps
                    // what was known: calls still go where they went.
                    if let Err(e) = res {
                        tracing::warn!(service = %shared.service, host = %t.host, "resolving: {e}");
                    }
                    addrs.extend(last.get(&t.host).into_iter().flatten().copied());
                }
            }
        }
        let gone: Vec<SocketAddr> = known
            .iter()
            .filter(|(a, s)| !addrs.contains(a) || s.dead.load(Ordering::Acquire))
            .map(|(a, _)| *a)
            .collect();
        for addr in gone {
            if let Some(state) = known.remove(&addr) {
                state.readmit(&shared);
            }
            for i in 0..conns {
                if tx.send(Change::Remove((addr, i))).await.is_err() {
                    return;
                }
            }
            tracing::info!(service = %shared.service, backend = %addr, "backend gone");
        }
        for addr in addrs {
            if known.contains_key(&addr) {
                continue;
            }
            let labels = [("service", shared.service.clone()), ("backend", addr.to_string())];
            let state = Arc::new(BackendState::new(
                addr,
                metrics::counter!("grpc_client_calls_total", &labels),
                metrics::counter!("grpc_client_ejections_total", &labels),
            ));
            known.insert(addr, state.clone());
            shared.backends.store(known.len(), Ordering::Release);
            let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
                Ok(e) => (settings.endpoint)(e),
                Err(e) => {
                    tracing::error!(service = %shared.service, backend = %addr, "{e}");
                    continue;
                }
            };
            for i in 0..conns {
                let channel = endpoint.connect_with_connector_lazy(
                    crate::mesh::MeshConnector::new(settings.mesh.clone()),
                );
                let backend = Backend::new(channel, state.clone(), shared.clone());
                if tx.send(Change::Insert((addr, i), backend)).await.is_err() {
                    return;
                }
            }
            tracing::info!(service = %shared.service, backend = %addr, "backend added");
        }
        shared.backends.store(known.len(), Ordering::Release);
        metrics::gauge!("grpc_client_backends", "service" => shared.service.clone())
            .set(known.len() as f64);
        tokio::select! {
            _ = tokio::time::sleep(shared.resolve_every) => {}
            _ = shared.resolve_now.notified() => {
                // Refusals come in bursts: one resolution for them.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ = tx.closed() => return,
        }
    }
}

/// Every address of `t`: an IP as it is, a name through the system resolver (a headless
/// Service's name gives every ready pod).
async fn resolve(t: &Target) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = t.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, t.port)]);
    }
    let mut found: Vec<SocketAddr> =
        tokio::net::lookup_host((t.host.as_str(), t.port)).await?.collect();
    found.sort();
    found.dedup();
    Ok(found)
}

#[cfg(test)]
mod tests;
