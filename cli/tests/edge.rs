//! The edge end to end: REST/JSON in, gRPC to the real auth service and the testing echo
//! service, on real PostgreSQL, Redis and RabbitMQ (a few cases also on the embedded adapters).

mod edge_support;
use edge_support as support;

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use skillup_kit::identity::Caller;
use skillup_testkit::Kind;
use support::{code, stack};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

#[path = "edge/auth_delegation.rs"]
mod auth_delegation;
#[path = "edge/console.rs"]
mod console;
#[path = "edge/resilience.rs"]
mod resilience;
#[path = "edge/revocation.rs"]
mod revocation;
#[path = "edge/streaming.rs"]
mod streaming;
#[path = "edge/wording.rs"]
mod wording;

use streaming::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

// ---------- transcoding ----------

#[test]
fn path_and_query_parameters_of_every_kind() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let (tok, _, _) = s.register().await;
        let (st, v, _) = s
            .get(
                "/v1/echo/a%20b?big=-9007199254740993&flag=true&kind=KIND_BETA&tags=x&tags=y&inner.note=hi&at=2026-01-02T03:04:05Z&small=7",
                Some(&tok),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        let r = &v["request"];
        assert_eq!(r["id"], "a b", "percent-decoded path variable");
        assert_eq!(r["big"], "-9007199254740993", "64-bit integers are strings, exact");
        assert_eq!(r["flag"], true);
        assert_eq!(r["kind"], "KIND_BETA", "enums by name");
        assert_eq!(r["tags"], json!(["x", "y"]));
        assert_eq!(r["inner"]["note"], "hi");
        assert_eq!(r["at"], "2026-01-02T03:04:05Z");
        assert_eq!(r["small"], 7);
        assert!(v.get("email_verified").is_some(), "proto field names, defaults included");
    });
}

#[test]
fn whole_body_and_body_field_bindings() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let (tok, _, _) = s.register().await;
        let (st, v, _) = s
            .post(
                "/v1/echo",
                Some(&tok),
                json!({"id": "b1", "big": 12, "kind": 2, "innerNote": null}),
            )
            .await;
        assert_eq!(st, 400, "unknown fields are refused: {v}");
        let (st, v, _) =
            s.post("/v1/echo", Some(&tok), json!({"id": "b1", "big": 12, "kind": 2})).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["request"]["big"], "12", "numbers accepted for 64-bit fields");
        assert_eq!(v["request"]["kind"], "KIND_BETA", "enum numbers accepted");
        let res = s
            .http
            .put(s.url("/v1/shelves/s1/books/b2"))
            .bearer_auth(&tok)
            .json(&json!({"title": "Dune"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v, json!({"name": "shelves/s1/books/b2", "title": "Dune"}));
    });
}

#[test]
fn every_bad_input_gets_a_clear_4xx() {
    mt().block_on(async {
        let s = stack(Kind::Real, |c| c.edge.max_body_bytes = 1024).await;
        let (tok, _, _) = s.register().await;
        let send = |req: reqwest::RequestBuilder| async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            let v: Value = res.json().await.unwrap_or(Value::Null);
            (status, v, headers)
        };
        let h = &s.http;
        let (st, v, _) = send(h.get(s.url("/api/nope"))).await;
        assert_eq!((st, code(&v)), (404, "NOT_FOUND"));
        assert!(!v["error"]["request_id"].as_str().unwrap().is_empty());
        let (st, v, hd) = send(h.delete(s.url("/api/auth/login"))).await;
        assert_eq!((st, code(&v)), (405, "METHOD_NOT_ALLOWED"));
        assert_eq!(hd["allow"], "POST");
        let (st, v, _) =
            send(h.post(s.url("/api/auth/login")).body("{}").header("content-type", "text/plain"))
                .await;
        assert_eq!((st, code(&v)), (415, "UNSUPPORTED_MEDIA_TYPE"));
        let big = json!({"email": "x".repeat(2000), "password": "p"});
        let (st, v, _) = send(h.post(s.url("/api/auth/login")).json(&big)).await;
        assert_eq!((st, code(&v)), (413, "PAYLOAD_TOO_LARGE"));
        let (st, v, _) = send(
            h.post(s.url("/api/auth/login"))
                .header("content-type", "application/json")
                .body("{\"email\":"),
        )
        .await;
        assert_eq!((st, code(&v)), (400, "INVALID_ARGUMENT"));
        assert!(v["error"]["message"].as_str().unwrap().contains("not valid JSON"), "{v}");
        let (st, v, _) = send(
            h.post(s.url("/api/auth/login")).header("content-type", "application/json").body("[1]"),
        )
        .await;
        assert_eq!((st, code(&v)), (400, "INVALID_ARGUMENT"));
        let (st, v, _) =
            send(h.post(s.url("/api/auth/login")).json(&json!({"email": 5, "password": "x"})))
                .await;
        assert_eq!((st, code(&v)), (400, "INVALID_ARGUMENT"));
        assert!(v["error"]["message"].as_str().unwrap().contains("expected a string"), "{v}");
        let (st, v, _) =
            send(h.post(s.url("/api/auth/login")).json(&json!({"email": "a@b.co"}))).await;
        assert_eq!(
            (st, code(&v), v["error"]["field"].as_str()),
            (400, "INVALID_ARGUMENT", Some("password"))
        );
        let (st, v, _) = send(h.get(s.url("/v1/echo/x?small=-1")).bearer_auth(&tok)).await;
        assert_eq!((st, v["error"]["field"].as_str()), (400, Some("small")), "{v}");
        let (st, v, _) = send(h.get(s.url("/v1/echo/x?nonsense=1")).bearer_auth(&tok)).await;
        assert_eq!((st, v["error"]["field"].as_str()), (400, Some("nonsense")), "{v}");
        let (st, v, _) = send(h.get(s.url("/v1/count?count=1")).bearer_auth(&tok)).await;
        assert_eq!((st, code(&v)), (406, "NOT_ACCEPTABLE"), "a stream needs SSE or a WebSocket");
        let (st, v, _) =
            send(h.get(s.url("/v1/echo/x")).bearer_auth(&tok).header("x-junk", "j".repeat(20_000)))
                .await;
        assert!(st == 431, "oversize headers: {st} {v}");
        // The hidden RPC has no route at all.
        let hidden = h.post(s.url("/skillup.testing.v1.EchoService/Hidden")).json(&json!({}));
        let (st, v, _) = send(hidden).await;
        assert_eq!((st, code(&v)), (404, "NOT_FOUND"));
    });
}

#[test]
fn upstream_statuses_map_to_http_without_internal_detail() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |_| {}).await;
        let cases = [
            (json!({"code": 5, "message": "no such task"}), 404, "NOT_FOUND", Some("no such task")),
            (
                json!({"code": 9, "message": "subscribe", "error_code": 8}),
                402,
                "SUBSCRIPTION_REQUIRED",
                Some("subscribe"),
            ),
            (
                json!({"code": 7, "message": "verify", "error_code": 10}),
                403,
                "EMAIL_NOT_VERIFIED",
                Some("verify"),
            ),
            (
                json!({"code": 13, "message": "panic at db.rs:12 password=hunter2"}),
                500,
                "INTERNAL",
                Some("internal error"),
            ),
            (json!({"code": 10, "message": "conflict"}), 409, "ABORTED", Some("conflict")),
            (json!({"code": 0, "http_status": 202}), 202, "", None),
            (json!({"code": 0}), 200, "", None),
            (json!({"delay_ms": 1000}), 504, "DEADLINE_EXCEEDED", None),
        ];
        for (body, status, want, msg) in cases {
            let (st, v, _) = s.post("/v1/fail", None, body.clone()).await;
            assert_eq!(st, status, "{body} → {v}");
            if !want.is_empty() {
                assert_eq!(code(&v), want, "{body}");
            }
            if let Some(m) = msg {
                assert_eq!(v["error"]["message"], m, "{body}");
            }
        }
    });
}

#[test]
fn request_ids_are_accepted_or_minted_and_passed_on() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |_| {}).await;
        let res = s
            .http
            .get(s.url("/v1/public/echo?id=1"))
            .header("x-request-id", "req-42")
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["x-request-id"], "req-42");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["request_id"], "req-42", "the service sees the same id");
        let res = s.http.get(s.url("/api/nope")).send().await.unwrap();
        let minted = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["request_id"], minted);
    });
}

// ---------- the rest of the HTTP surface ----------

#[test]
fn openapi_cors_gzip_metrics_and_health() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |c| c.edge.cors_origins = vec!["https://app.example".into()])
            .await;
        let (st, doc, _) = s.get("/api/openapi.json", None).await;
        assert_eq!(st, 200);
        assert_eq!(doc["openapi"], "3.0.3");
        assert!(doc["paths"]["/v1/echo/{id}"]["get"].is_object());
        assert!(doc["paths"]["/api/auth/login"]["post"].is_object());
        let res = s
            .http
            .request(reqwest::Method::OPTIONS, s.url("/api/auth/me"))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example");
        let res = s
            .http
            .get(s.url("/api/openapi.json"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert!(!res.headers().contains_key("access-control-allow-origin"));
        let res = s
            .http
            .get(s.url("/api/openapi.json"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["content-encoding"], "gzip");
        assert_eq!(s.get("/healthz", None).await.0, 200);
        let (st, v, _) = s.get("/readyz", None).await;
        assert_eq!(st, 200, "{v}");
        assert!(v["checks"].as_array().unwrap().iter().any(|c| c["name"] == "upstream:testing"));
        s.get("/v1/public/echo?id=1", None).await;
        let (_, text, _) = s.get("/metrics", None).await;
        let text = text.as_str().unwrap();
        assert!(text.contains("http_requests_total"), "{text}");
        assert!(text.contains("route=\"/v1/public/echo\""));
    });
}

#[test]
fn tls_with_http2_by_alpn() {
    mt().block_on(async {
        skillup_kit::install_crypto_provider();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = std::env::temp_dir().join(format!("edge-tls-{}", skillup_testkit::unique()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let s = stack(Kind::Embedded, |c| {
            c.edge.tls_cert_file = Some(dir.join("cert.pem"));
            c.edge.tls_key_file = Some(dir.join("key.pem"));
        })
        .await;
        assert!(s.base.starts_with("https://"));
        let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
        let client = reqwest::Client::builder().add_root_certificate(root).build().unwrap();
        let res = client.get(s.url("/v1/public/echo?id=1")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), reqwest::Version::HTTP_2, "h2 negotiated by ALPN");
        let plain =
            reqwest::Client::new().get(s.url("/healthz").replacen("https", "http", 1)).send().await;
        assert!(
            plain.is_err() || !plain.unwrap().status().is_success(),
            "no plain HTTP on a TLS edge"
        );
    });
}
