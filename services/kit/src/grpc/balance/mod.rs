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
//!   replica still down or hung); then one failure before a success ejects it again.
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
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
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

use super::in_process::{BoxError, grpc_timeout};

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

/// What the connections to one address share: its failures and ejection.
struct BackendState {
    addr: SocketAddr,
    failures: AtomicU32,
    ejections: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
    /// Its channel failed for good: the next resolution replaces it.
    dead: AtomicBool,
    /// Back from an ejection, not yet answered well: no call goes to it until a health check
    /// (`probe`, running) says it serves.
    probation: AtomicBool,
    probe: AtomicBool,
    calls: metrics::Counter,
    ejected_total: metrics::Counter,
}

impl BackendState {
    fn new(addr: SocketAddr, calls: metrics::Counter, ejected_total: metrics::Counter) -> Self {
        BackendState {
            addr,
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
            dead: AtomicBool::new(false),
            probation: AtomicBool::new(false),
            probe: AtomicBool::new(false),
            calls,
            ejected_total,
        }
    }

    fn ejected_until(&self) -> Option<Instant> {
        *self.ejected_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes it back in (once, whoever sees the ejection over first), on probation: calls go
    /// to it once a health check passes (a failed check ejects it again, for longer), and
    /// until one of them succeeds one failure does too.
    fn readmit(&self, shared: &Shared) {
        if self.ejected_until.lock().unwrap_or_else(|e| e.into_inner()).take().is_some() {
            shared.ejected.fetch_sub(1, Ordering::AcqRel);
            self.probation.store(true, Ordering::Release);
        }
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
        self.probation.store(false, Ordering::Release);
    }

    fn failed(&self, shared: &Shared) {
        // Back from an ejection, one failure before a success sends it out again.
        if self.failures.fetch_add(1, Ordering::AcqRel) + 1 >= EJECT_AFTER
            || self.ejections.load(Ordering::Acquire) > 0
        {
            self.eject(shared);
        }
    }

    /// Out for a while — unless it is the last one in, or out already.
    fn eject(&self, shared: &Shared) {
        let mut until = self.ejected_until.lock().unwrap_or_else(|e| e.into_inner());
        if until.is_some() {
            return;
        }
        let known = shared.backends.load(Ordering::Acquire);
        if shared
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| (e + 1 < known).then_some(e + 1))
            .is_err()
        {
            return;
        }
        let times = self.ejections.fetch_add(1, Ordering::AcqRel) + 1;
        let period = (EJECT_BASE * times).min(shared.resolve_every.max(EJECT_BASE));
        *until = Some(Instant::now() + period);
        self.failures.store(0, Ordering::Relaxed);
        self.probation.store(false, Ordering::Release);
        self.ejected_total.increment(1);
        tracing::info!(service = %shared.service, backend = %self.addr, ms = period.as_millis() as u64, "backend ejected");
    }
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
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && (h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR)))
        {
            return true;
        }
        next = e.source();
    }
    false
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
                let backend =
                    Backend { channel, state: state.clone(), shared: shared.clone(), sleep: None };
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

/// One connection to one backend, ready unless its backend is ejected or on probation.
struct Backend {
    channel: tonic::transport::Channel,
    state: Arc<BackendState>,
    shared: Arc<Shared>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long a probation health check may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Asks the backend's health service whether it serves (gRPC health, the whole server): no
/// caller's call is spent finding out whether a replica is back.
async fn probe(channel: tonic::transport::Channel, state: Arc<BackendState>, shared: Arc<Shared>) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let mut req = tonic::Request::new(HealthCheckRequest { service: String::new() });
    req.set_timeout(PROBE_TIMEOUT);
    let mut client = HealthClient::new(channel);
    let check = client.check(req);
    let serving = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, check).await,
        Ok(Ok(r)) if r.get_ref().status() == ServingStatus::Serving
    );
    if serving {
        state.probation.store(false, Ordering::Release);
    } else {
        state.eject(&shared);
        // Not ejected (the last one in): take calls again rather than none.
        if state.ejected_until().is_none() {
            state.probation.store(false, Ordering::Release);
        }
    }
    state.probe.store(false, Ordering::Release);
}

impl Backend {
    /// Waits until `until` (and is polled again then).
    fn wait(&mut self, cx: &mut Context<'_>, until: Instant) -> Poll<()> {
        let until = tokio::time::Instant::from_std(until);
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if sleep.deadline() != until {
            sleep.as_mut().reset(until);
        }
        sleep.as_mut().poll(cx)
    }
}

impl Service<Request<Body>> for Backend {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            if let Some(until) = self.state.ejected_until() {
                if Instant::now() < until {
                    if self.wait(cx, until).is_pending() {
                        return Poll::Pending;
                    }
                    continue;
                }
                self.state.readmit(&self.shared);
            }
            if !self.state.probation.load(Ordering::Acquire) {
                break;
            }
            // On probation: a health check decides (one per backend); look again shortly.
            if !self.state.probe.swap(true, Ordering::AcqRel) {
                tokio::spawn(probe(self.channel.clone(), self.state.clone(), self.shared.clone()));
            }
            if self.wait(cx, Instant::now() + Duration::from_millis(10)).is_pending() {
                return Poll::Pending;
            }
        }
        self.sleep = None;
        match self.channel.poll_ready(cx) {
            Poll::Ready(Err(e)) => {
                // The channel is gone for good (it never is but by a bug): the balancer drops
                // it, and the next resolution makes a new one.
                self.state.dead.store(true, Ordering::Release);
                self.shared.resolve_now.notify_one();
                Poll::Ready(Err(e.into()))
            }
            other => other.map_err(Into::into),
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.state.calls.increment(1);
        let outcome = Outcome {
            state: self.state.clone(),
            shared: self.shared.clone(),
            started: Instant::now(),
            deadline: grpc_timeout(req.headers()),
            settled: false,
        };
        let call = self.channel.call(req);
        async move {
            let mut outcome = outcome;
            let res = call.await.map_err(BoxError::from);
            outcome.settle(&res);
            res
        }
        .boxed()
    }
}

/// What a call says about its backend; a call dropped at its deadline (the caller gave up on a
/// backend that does not answer) counts as a failure.
struct Outcome {
    state: Arc<BackendState>,
    shared: Arc<Shared>,
    started: Instant,
    deadline: Option<Duration>,
    settled: bool,
}

impl Outcome {
    fn settle(&mut self, res: &Result<Response<Body>, BoxError>) {
        self.settled = true;
        match res {
            // UNAVAILABLE or DEADLINE_EXCEEDED in the headers: a server refusing calls
            // (draining, over its limit) or too slow to answer in time.
            Ok(r) if r.headers().get("grpc-status").is_some_and(|s| s == "14" || s == "4") => {
                self.state.failed(&self.shared)
            }
            Ok(_) => self.state.succeeded(),
            Err(e) if never_sent(&**e) => {
                self.state.eject(&self.shared);
                self.shared.resolve_now.notify_one();
            }
            Err(_) => self.state.failed(&self.shared),
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.settled && self.deadline.is_some_and(|d| self.started.elapsed() >= d.mul_f64(0.9))
        {
            self.state.failed(&self.shared);
        }
    }
}

#[cfg(test)]
mod tests;
