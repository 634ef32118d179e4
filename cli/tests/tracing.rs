//! One trace from the browser to the worker, across processes: every component runs as its own
//! `skillup serve` process on the real servers, exporting spans over OTLP/HTTP to a local
//! receiver. A queued generation sent with a `traceparent` header shows up under that trace id
//! in the edge, in the ai service (gRPC metadata), in the prompt service (ai's own call) and in
//! the worker (RabbitMQ message headers) — and the worker's JSON log lines carry the trace and
//! request ids.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use common::mesh::Mesh;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value::Value as AnyValue,
};
use prost::Message;
use serde_json::{Value, json};

/// (service.name, span name, trace id hex) of every span received.
type Spans = Arc<Mutex<Vec<(String, String, String)>>>;

async fn traces(
    State(spans): State<Spans>,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], Vec<u8>) {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut seen = spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                AnyValue::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                seen.push((service.clone(), span.name, trace));
            }
        }
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

async fn ok(res: reqwest::Response) -> Value {
    let status = res.status();
    let text = res.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_generation_is_one_trace_from_the_edge_through_rabbitmq_to_the_worker() {
    let spans: Spans = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/v1/traces", post(traces)).with_state(spans.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mesh = Mesh::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        // Quiet logs (but the worker's completion line): traces have a filter of their own,
        // and stay whole.
        ("RUST_LOG", "warn,skillup_ai=info"),
        ("SKILLUP_LOG_FORMAT", "json"),
    ])
    .await;
    let base = mesh.edge();
    let rest = reqwest::Client::new();
    let token = mesh.user("traced@example.com").await;

    let trace = "0af7651916cd43dd8448eb211c80319c";
    let task = ok(rest
        .post(format!("{base}/api/generate/tasks"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .header("x-request-id", "traced-request-1")
        .json(&json!({"topic": "tracing", "function": "quiz"}))
        .send()
        .await
        .unwrap())
    .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let mut status = String::new();
    for _ in 0..200 {
        let t = ok(rest
            .get(format!("{base}/api/generate/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap())
        .await;
        status = t["status"].as_str().unwrap_or_default().to_owned();
        if status == "TASK_STATUS_COMPLETED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "TASK_STATUS_COMPLETED");

    let want = [
        ("skillup-edge", "http"),
        ("skillup-ai", "grpc"),
        ("skillup-prompt", "grpc"),
        ("skillup-worker", "task"),
    ];
    let mut in_trace = Vec::new();
    for _ in 0..100 {
        in_trace = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, t)| t == trace)
            .map(|(s, n, _)| (s.clone(), n.clone()))
            .collect::<Vec<_>>();
        if want.iter().all(|(s, n)| in_trace.iter().any(|(a, b)| a == s && b == n)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (service, name) in want {
        assert!(
            in_trace.iter().any(|(s, n)| s == service && n == name),
            "no `{name}` span from {service} in trace {trace}: {in_trace:?}"
        );
    }

    // The worker's log line for the task carries both ids.
    let log = mesh.log("worker");
    let line = log
        .lines()
        .find(|l| l.contains("task completed"))
        .unwrap_or_else(|| panic!("no completion line in the worker's log:\n{log}"));
    let v: Value = serde_json::from_str(line).expect("JSON logs");
    assert_eq!(v["span"]["trace_id"], trace, "{line}");
    assert_eq!(v["span"]["request_id"], "traced-request-1", "{line}");
}
