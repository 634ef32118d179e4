//! The ops HTTP endpoints every process serves: `/healthz` (alive), `/readyz` (dependencies
//! answer), `/metrics` (Prometheus text). The edge merges these into its own router.

use std::sync::{Mutex, OnceLock};

use futures::future::BoxFuture;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::Readiness;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), &buckets)
                .expect("static bucket list is valid")
                .build_recorder();
            let handle = recorder.handle();
            // A recorder may already be installed (another test in this process): then ours
            // still renders, it only sees what is recorded through it.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Something sampled when `/metrics` is scraped (a pool's size, a queue's depth): gauges that
/// are only worth reading when someone asks, with no timer of their own.
pub type Collector = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

static COLLECTORS: Mutex<Vec<Collector>> = Mutex::new(Vec::new());

/// Registers a collector for every later scrape (for the life of the process).
pub fn on_scrape(collector: Collector) {
    COLLECTORS.lock().unwrap_or_else(|p| p.into_inner()).push(collector);
}

/// Runs every collector (at most 2 s in all, so a slow broker cannot stall a scrape).
pub async fn collect() {
    let runs: Vec<_> =
        COLLECTORS.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|c| c()).collect();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(2), futures::future::join_all(runs))
            .await;
}

#[derive(Clone)]
struct OpsState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn router(readiness: Readiness) -> Router {
    let state = OpsState { readiness, metrics: metrics_handle() };
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let checks = state.readiness.check().await;
    let ready = checks.iter().all(|c| c.ok);
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(serde_json::json!({ "ready": ready, "checks": checks })))
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    collect().await;
    state.metrics.run_upkeep();
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// Serves `router` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: crate::Shutdown,
) -> crate::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await?;
    Ok(())
}
