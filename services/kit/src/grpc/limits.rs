//! Back-pressure on every RPC a server takes: at most `max_concurrent` calls run at once, and a
//! call past that is refused at once with UNAVAILABLE (load shedding: a client retries on
//! another replica or later, instead of the server queueing without bound until every caller
//! times out); and no call runs longer than the server's own deadline (DEADLINE_EXCEEDED), a
//! backstop under the caller's `grpc-timeout`. A server stream counts until its first answer
//! (the response headers), not for as long as it stays open.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tower::{Layer, Service};

/// The limits of one server (shared by its listener and its in-process channel).
#[derive(Clone, Debug)]
pub struct LoadLayer {
    permits: Arc<Semaphore>,
    max: usize,
    timeout: Duration,
}

impl LoadLayer {
    /// At most `max_concurrent` calls at once (at least 1); each for at most `timeout`.
    pub fn new(max_concurrent: usize, timeout: Duration) -> Self {
        let max = max_concurrent.max(1);
        Self { permits: Arc::new(Semaphore::new(max)), max, timeout }
    }

    /// A slot for one call, or `None` when every slot is taken.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// The server's deadline for one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Calls running now.
    pub fn in_flight(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// The answer to a call refused because the server is full.
    pub fn overloaded() -> tonic::Status {
        metrics::counter!("grpc_server_shed_total").increment(1);
        tonic::Status::unavailable("the server is at its limit of concurrent calls; retry shortly")
    }

    /// The answer to a call that ran past the server's deadline.
    pub fn deadline_passed(timeout: Duration) -> tonic::Status {
        tonic::Status::deadline_exceeded(format!(
            "the call ran past the server's deadline of {} ms",
            timeout.as_millis()
        ))
    }
}

impl Default for LoadLayer {
    /// 1,024 concurrent calls of at most 5 minutes (`grpc.max_concurrent_rpcs`,
    /// `grpc.rpc_timeout_ms`).
    fn default() -> Self {
        Self::new(1024, Duration::from_secs(300))
    }
}

impl<S> Layer<S> for LoadLayer {
    type Service = LoadService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadService { inner, limits: self.clone() }
    }
}

/// See [`LoadLayer`].
#[derive(Clone, Debug)]
pub struct LoadService<S> {
    inner: S,
    limits: LoadLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<B>> for LoadService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(permit) = self.limits.admit() else {
            return Box::pin(std::future::ready(Ok(LoadLayer::overloaded().into_http())));
        };
        let timeout = self.limits.timeout;
        let call = self.inner.call(req);
        Box::pin(async move {
            let _permit = permit;
            match tokio::time::timeout(timeout, call).await {
                Ok(res) => res,
                Err(_) => Ok(LoadLayer::deadline_passed(timeout).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_and_given_back() {
        let l = LoadLayer::new(2, Duration::from_secs(1));
        let a = l.admit().expect("first");
        let _b = l.admit().expect("second");
        assert_eq!(l.in_flight(), 2);
        assert!(l.admit().is_none(), "full");
        drop(a);
        assert!(l.admit().is_some(), "a slot came back");
    }

    #[test]
    fn a_limit_of_zero_still_serves_one_call() {
        assert!(LoadLayer::new(0, Duration::from_secs(1)).admit().is_some());
    }
}
