//! Error reports: with `SENTRY_DSN` set, an `error!` inside a request's span reaches Sentry (a
//! local stand-in for sentry.io's envelope endpoint) tagged with the request and trace ids, and
//! nothing below error level does. Its own process: it installs the global subscriber.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use skillup_kit::{config::LogFormat, telemetry};

type Seen = Arc<Mutex<Vec<String>>>;

async fn envelope(State(seen): State<Seen>, body: Bytes) -> &'static str {
    seen.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
    "{}"
}

#[test]
fn error_events_reach_sentry_with_request_and_trace_ids_and_nothing_else() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen: Seen = Arc::default();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let app =
        Router::new().route("/api/{project}/envelope/", post(envelope)).with_state(seen.clone());
    rt.spawn(async move { axum::serve(listener, app).await });

    let exporters = telemetry::Exporters {
        sentry_dsn: Some(format!("http://public@127.0.0.1:{port}/7")),
        otlp_endpoint: None,
    };
    let guard = telemetry::init(LogFormat::Json, "skillup-telemetry-test", exporters);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap());
    let span = tracing::info_span!(
        "grpc",
        path = "/skillup.test.v1.T/Call",
        request_id = "req-123",
        trace_id = tracing::field::Empty
    );
    telemetry::adopt(&span, &headers);
    span.in_scope(|| {
        tracing::warn!("a warning stays in the logs");
        tracing::error!(error = "the database went away", "payment dependency failed");
    });
    drop(guard); // flushes

    let mut envelopes = Vec::new();
    for _ in 0..50 {
        envelopes = seen.lock().unwrap().clone();
        if !envelopes.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(envelopes.len(), 1, "exactly the error, not the warning: {envelopes:#?}");
    let e = &envelopes[0];
    assert!(e.contains("payment dependency failed"), "{e}");
    assert!(e.contains(r#""request_id":"req-123""#), "request id tag: {e}");
    assert!(e.contains(&format!(r#""trace_id":"{trace}""#)), "trace id tag: {e}");
    assert!(e.contains("the database went away"), "the event's own fields: {e}");
    assert!(e.contains(r#""server_name":"skillup-telemetry-test""#), "{e}");
    assert!(!e.contains("a warning stays"), "{e}");
    rt.shutdown_timeout(Duration::from_secs(1));
}
