//! One backend of a [`Balanced`](super::Balanced) channel: what its connections share (failures,
//! ejection, probation, the first call back), each connection as the balancer sees it, and what
//! a call's outcome says about the backend.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{FutureExt, future::BoxFuture};
use http::{Request, Response};
use tonic::body::Body;
use tower::Service;

use super::{EJECT_AFTER, EJECT_BASE, Shared, never_sent, refused};
use crate::grpc::in_process::{BoxError, grpc_timeout};

/// What the connections to one address share: its failures and ejection.
pub(super) struct BackendState {
    addr: SocketAddr,
    failures: AtomicU32,
    ejections: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
    /// Its channel failed for good: the next resolution replaces it.
    pub(super) dead: AtomicBool,
    /// Back from an ejection, not yet answered well: no call goes to it until a health check
    /// (`probe`, running) says it serves.
    probation: AtomicBool,
    probe: AtomicBool,
    /// Back and its health check passed, but no call answered well yet: one call at a time
    /// (`trial_busy` while it runs) — a replica whose health passes while its calls hang costs
    /// one call each time it returns, not every call the balancer would give it meanwhile.
    trial: AtomicBool,
    trial_busy: AtomicBool,
    calls: metrics::Counter,
    ejected_total: metrics::Counter,
}

impl BackendState {
    pub(super) fn new(
        addr: SocketAddr,
        calls: metrics::Counter,
        ejected_total: metrics::Counter,
    ) -> Self {
        BackendState {
            addr,
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
            dead: AtomicBool::new(false),
            probation: AtomicBool::new(false),
            probe: AtomicBool::new(false),
            trial: AtomicBool::new(false),
            trial_busy: AtomicBool::new(false),
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
    pub(super) fn readmit(&self, shared: &Shared) {
        if self.ejected_until.lock().unwrap_or_else(|e| e.into_inner()).take().is_some() {
            shared.ejected.fetch_sub(1, Ordering::AcqRel);
            self.probation.store(true, Ordering::Release);
        }
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
        self.probation.store(false, Ordering::Release);
        self.trial.store(false, Ordering::Release);
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

/// One connection to one backend, ready unless its backend is ejected or on probation.
pub(super) struct Backend {
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
        state.trial.store(true, Ordering::Release);
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
    pub(super) fn new(
        channel: tonic::transport::Channel,
        state: Arc<BackendState>,
        shared: Arc<Shared>,
    ) -> Self {
        Backend { channel, state, shared, sleep: None }
    }

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
            let hold = if self.state.probation.load(Ordering::Acquire) {
                // On probation: a health check decides (one per backend).
                if !self.state.probe.swap(true, Ordering::AcqRel) {
                    let (channel, state) = (self.channel.clone(), self.state.clone());
                    tokio::spawn(probe(channel, state, self.shared.clone()));
                }
                true
            } else {
                // Its first call back still running: the next waits for its answer.
                self.state.trial.load(Ordering::Acquire)
                    && self.state.trial_busy.load(Ordering::Acquire)
            };
            if !hold {
                break;
            }
            // Look again shortly.
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
        let trial = self.state.trial.load(Ordering::Acquire)
            && !self.state.trial_busy.swap(true, Ordering::AcqRel);
        let outcome = Outcome {
            state: self.state.clone(),
            shared: self.shared.clone(),
            started: Instant::now(),
            deadline: grpc_timeout(req.headers()),
            settled: false,
            trial,
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
    /// The one call let through after a return (see `BackendState::trial`).
    trial: bool,
}

impl Outcome {
    /// The call ran (about) as long as its deadline allowed.
    fn at_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| self.started.elapsed() >= d.mul_f64(0.9))
    }

    fn settle(&mut self, res: &Result<Response<Body>, BoxError>) {
        self.settled = true;
        match res {
            // UNAVAILABLE or DEADLINE_EXCEEDED in the headers: a server refusing calls
            // (draining, over its limit) or too slow to answer in time.
            Ok(r) if r.headers().get("grpc-status").is_some_and(|s| s == "14" || s == "4") => {
                self.state.failed(&self.shared)
            }
            // CANCELLED at the deadline: how a tonic server answers a call it cut off there.
            // (Read as a success, a hung replica's calls racing their own timer kept resetting
            // its ejections.)
            Ok(r)
                if r.headers().get("grpc-status").is_some_and(|s| s == "1")
                    && self.at_deadline() =>
            {
                self.state.failed(&self.shared)
            }
            Ok(_) => self.state.succeeded(),
            // Nobody listens there (any more): out at once, and look again who is there.
            Err(e) if refused(&**e) => {
                self.state.eject(&self.shared);
                self.shared.resolve_now.notify_one();
            }
            // A connection closing gracefully (the server ageing it out, or draining) says
            // nothing bad of the backend: the call goes again, the channel reconnects.
            Err(e) if never_sent(&**e) => {}
            Err(_) => self.state.failed(&self.shared),
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.settled && self.at_deadline() {
            self.state.failed(&self.shared);
        }
        if self.trial {
            self.state.trial_busy.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests;
