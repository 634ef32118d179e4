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
        let (st, v, _) = send(h.get(s.url("/nope"))).await;
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
        let (st, _, _) = send(h.get(s.url("/skillup.testing.v1.EchoService/Hidden"))).await;
        assert_eq!(st, 404);
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
        let res = s.http.get(s.url("/nope")).send().await.unwrap();
        let minted = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["request_id"], minted);
    });
}

// ---------- auth delegation ----------

#[test]
fn protected_routes_need_a_valid_token_and_the_right_scope() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let (tok, _, user_id) = s.register().await;
        let (st, v, h) = s.get("/v1/echo/x", None).await;
        assert_eq!((st, code(&v)), (401, "UNAUTHENTICATED"));
        assert!(h["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        let (st, v, _) = s.get("/v1/echo/x", Some("not.a.token")).await;
        assert_eq!((st, code(&v)), (401, "UNAUTHENTICATED"));
        let (st, v, _) = s.get("/v1/admin/echo?id=1", Some(&tok)).await;
        assert_eq!((st, code(&v)), (403, "PERMISSION_DENIED"));
        let (st, v, _) = s.get("/v1/echo/x", Some(&tok)).await;
        assert_eq!(st, 200);
        assert_eq!(v["user_id"], user_id.as_str());
        assert_eq!(v["tier"], "free");
        assert_eq!(v["scopes"], json!(["user"]));
        let (st, v, _) = s.get("/v1/public/echo?id=1", None).await;
        assert_eq!((st, v["user_id"].as_str()), (200, Some("")), "public: anonymous");
    });
}

#[test]
fn client_sent_identity_headers_are_replaced_by_the_validated_identity() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let (tok, _, user_id) = s.register().await;
        let res = s
            .http
            .get(s.url("/v1/echo/x"))
            .bearer_auth(&tok)
            .header("x-user-id", "00000000-0000-0000-0000-000000000001")
            .header("x-scopes", "admin")
            .header("x-subscription-tier", "premium")
            .header("x-email-verified", "true")
            .header("x-skillup-identity", "v1.forged.sig")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["user_id"], user_id.as_str());
        let md: Vec<String> = serde_json::from_value(v["metadata"].clone()).unwrap();
        assert!(md.contains(&format!("x-user-id={user_id}")), "{md:?}");
        assert!(md.contains(&"x-scopes=user".to_owned()), "{md:?}");
        assert!(md.contains(&"x-subscription-tier=free".to_owned()), "{md:?}");
        assert!(md.contains(&"x-email-verified=false".to_owned()), "{md:?}");
        assert!(md.iter().any(|m| m.starts_with("x-skillup-identity=v2.")), "{md:?}");
        // A public route: the spoofed headers are dropped, nobody is asserted.
        let res = s
            .http
            .get(s.url("/v1/public/echo?id=1"))
            .header("x-user-id", "00000000-0000-0000-0000-000000000001")
            .send()
            .await
            .unwrap();
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["user_id"], "");
        let md: Vec<String> = serde_json::from_value(v["metadata"].clone()).unwrap();
        assert!(!md.iter().any(|m| m.starts_with("x-user-id")), "{md:?}");
    });
}

#[test]
fn a_pod_calling_a_service_directly_cannot_act_as_a_user() {
    mt().block_on(async {
        use skillup_proto::testing::v1::{EchoRequest, echo_service_client::EchoServiceClient};
        let s = stack(Kind::Embedded, |_| {}).await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = EchoServiceClient::new(channel);
        // Plain headers are dropped.
        let mut req = tonic::Request::new(EchoRequest { id: "1".into(), ..Default::default() });
        req.metadata_mut().insert("x-user-id", "victim".parse().unwrap());
        req.metadata_mut().insert("x-scopes", "admin".parse().unwrap());
        let r = client.echo(req).await.unwrap().into_inner();
        assert_eq!(r.user_id, "");
        assert!(!r.metadata.iter().any(|m| m.starts_with("x-user-id")), "{:?}", r.metadata);
        // An assertion signed with another key, or expired, is refused.
        let forged = skillup_kit::identity::IdentityKey::random().sign(&Caller {
            user_id: "victim".into(),
            scopes: vec!["admin".into()],
            tier: "premium".into(),
            email_verified: true,
            request_id: String::new(),
            exp: skillup_kit::identity::now_secs() + 60,
            assertion: String::new(),
            ..Default::default()
        });
        let mut req = tonic::Request::new(EchoRequest { id: "1".into(), ..Default::default() });
        req.metadata_mut().insert("x-skillup-identity", forged.parse().unwrap());
        let err = client.echo(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let expired = s.key.sign(&Caller {
            user_id: "victim".into(),
            scopes: vec![],
            tier: "free".into(),
            email_verified: false,
            request_id: String::new(),
            exp: skillup_kit::identity::now_secs() - 1,
            assertion: String::new(),
            ..Default::default()
        });
        let mut req = tonic::Request::new(EchoRequest { id: "1".into(), ..Default::default() });
        req.metadata_mut().insert("x-skillup-identity", expired.parse().unwrap());
        assert_eq!(client.echo(req).await.unwrap_err().code(), tonic::Code::Unauthenticated);
        // A valid one (as a service forwarding what it received) is believed.
        let good = s.key.sign(&Caller {
            user_id: "u-7".into(),
            scopes: vec!["user".into()],
            tier: "basic".into(),
            email_verified: true,
            request_id: "r".into(),
            exp: skillup_kit::identity::now_secs() + 30,
            assertion: String::new(),
            ..Default::default()
        });
        let mut req = tonic::Request::new(EchoRequest { id: "1".into(), ..Default::default() });
        req.metadata_mut().insert("x-skillup-identity", good.parse().unwrap());
        let r = client.echo(req).await.unwrap().into_inner();
        assert_eq!((r.user_id.as_str(), r.tier.as_str()), ("u-7", "basic"));
    });
}

#[test]
fn a_revoked_token_fails_on_the_next_request_at_every_edge() {
    mt().block_on(async {
        let s = stack(Kind::Real, |c| c.edge.decision_cache_ms = 60_000).await;
        let other = s.start_edge(s.config.clone()).await;
        let (tok, refresh, _) = s.register().await;
        let on_other = |tok: String| {
            let url = format!("{other}/v1/echo/x");
            let http = s.http.clone();
            async move { http.get(url).bearer_auth(tok).send().await.unwrap().status().as_u16() }
        };
        // Both edges validate and cache the decision.
        assert_eq!(s.get("/v1/echo/x", Some(&tok)).await.0, 200);
        assert_eq!(on_other(tok.clone()).await, 200);
        assert_eq!(on_other(tok.clone()).await, 200);
        // Log out through the first edge…
        let (st, v, _) = s.post("/api/auth/logout", Some(&tok), json!({"refresh_token": refresh})).await;
        assert_eq!(st, 204, "{v}");
        // …and the second refuses the very next request.
        assert_eq!(on_other(tok.clone()).await, 401);
        assert_eq!(s.get("/v1/echo/x", Some(&tok)).await.0, 401);
        // Log out everywhere revokes tokens not cached anywhere yet, and cached ones.
        let (tok2, _, _) = s.register().await;
        let login = s
            .post("/api/auth/login", None, json!({"email": s.get("/api/auth/me", Some(&tok2)).await.1["email"], "password": support::PASSWORD}))
            .await;
        let tok3 = login.1["access_token"].as_str().unwrap().to_owned();
        assert_eq!(on_other(tok3.clone()).await, 200);
        assert_eq!(s.post("/api/auth/logout/all", Some(&tok2), json!({})).await.0, 204);
        assert_eq!(on_other(tok3).await, 401);
        assert_eq!(on_other(tok2).await, 401);
    });
}

#[test]
fn revocation_events_evict_cached_decisions_at_every_edge() {
    mt().block_on(async {
        let s = stack(Kind::Real, |c| c.edge.decision_cache_ms = 60_000).await;
        let (other, edge) = s.start_edge_handle(s.config.clone()).await;
        let (tok, _, _) = s.register().await;
        let status = s
            .http
            .get(format!("{other}/v1/echo/x"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        assert_eq!(edge.inner().authn.cached(), 1, "the second edge keeps the decision");
        assert_eq!(s.post("/api/auth/logout/all", Some(&tok), json!({})).await.0, 204);
        // The token.revoked event reaches the second edge's own queue and evicts it.
        let start = Instant::now();
        while edge.inner().authn.cached() != 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "not evicted by the event");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

#[test]
fn auth_unreachable_is_503_never_a_pass_through() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |c| {
            c.edge.upstreams.insert("auth".into(), "http://127.0.0.1:9".into());
        })
        .await;
        let seen_before = s.seen.calls.load(Ordering::SeqCst);
        let (st, v, h) = s.get("/v1/echo/x", Some("eyJhbGciOiJSUzI1NiJ9.e30.sig")).await;
        assert_eq!((st, code(&v)), (503, "UNAVAILABLE"), "{v}");
        assert!(h.contains_key("retry-after"));
        assert_eq!(s.seen.calls.load(Ordering::SeqCst), seen_before, "nothing proxied");
        // Public routes still work.
        assert_eq!(s.get("/v1/public/echo?id=1", None).await.0, 200);
    });
}

#[test]
fn nginx_auth_request_endpoint() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let (tok, _, user_id) = s.register().await;
        let res = s
            .http
            .get(s.url("/api/auth/internal/jwt/validate"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(res.headers()["x-user-id"], user_id.as_str());
        assert_eq!(res.headers()["x-scopes"], "user");
        assert_eq!(res.headers()["x-subscription-tier"], "free");
        assert_eq!(res.headers()["x-email-verified"], "false");
        let res = s
            .http
            .get(s.url("/api/auth/internal/jwt/validate"))
            .bearer_auth("bad")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let res = s
            .http
            .get(s.url("/api/auth/internal/jwt/validate"))
            .bearer_auth(&tok)
            .header("x-required-scopes", "admin")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        // From outside the allow-list (here: loopback is not in it), refused.
        let mut c = s.config.clone();
        c.edge.internal_cidrs = vec!["10.0.0.0/8".into()];
        let outside = s.start_edge(c).await;
        let res = s
            .http
            .get(format!("{outside}/api/auth/internal/jwt/validate"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        let res = s.http.get(format!("{outside}/v1/internal/echo?id=1")).send().await.unwrap();
        assert_eq!(res.status(), 403, "internal routes too");
        assert_eq!(s.get("/v1/internal/echo?id=1", None).await.0, 200, "from loopback it answers");
    });
}

// ---------- limits ----------

#[test]
fn the_per_ip_budget_is_exact_within_one_percent() {
    mt().block_on(async {
        let (rate, burst) = (200u32, 20u32);
        let s = stack(Kind::Embedded, |c| {
            c.edge.rate.ip_per_sec = rate;
            c.edge.rate.ip_burst = burst;
        })
        .await;
        let window = Duration::from_secs(3);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let http = s.http.clone();
            let url = s.url("/v1/public/echo?id=1");
            tasks.push(tokio::spawn(async move {
                // (when the request was sent, whether it was let through)
                let mut seen = Vec::new();
                while start.elapsed() < window {
                    let sent = start.elapsed();
                    let res = http.get(&url).send().await.unwrap();
                    match res.status().as_u16() {
                        200 => {
                            assert!(res.headers().contains_key("ratelimit-remaining"));
                            seen.push((sent, true));
                        }
                        429 => {
                            assert!(res.headers().contains_key("retry-after"));
                            seen.push((sent, false));
                        }
                        other => panic!("unexpected {other}"),
                    }
                }
                seen
            }));
        }
        let mut seen = Vec::new();
        for t in tasks {
            seen.extend(t.await.unwrap());
        }
        let ok = seen.iter().filter(|(_, ok)| *ok).count() as u32;
        let limited = seen.len() as u32 - ok;
        // The budget lets through the burst plus `rate` per second of the time between the
        // first request and the last one it let through (latency to the edge cancels out).
        let first = seen.iter().map(|(t, _)| *t).min().unwrap();
        let last_ok = seen.iter().filter(|(_, ok)| *ok).map(|(t, _)| *t).max().unwrap();
        let elapsed = (last_ok - first).as_secs_f64();
        let expected = f64::from(burst) + f64::from(rate) * elapsed;
        let err = (f64::from(ok) - expected).abs() / expected;
        assert!(limited > 0, "the budget was exceeded: {ok} ok, {limited} limited");
        assert!(
            err <= 0.01,
            "allowed {ok}, expected {expected:.0} over {elapsed:.3} s ({:.2}% off)",
            err * 100.0
        );
    });
}

#[test]
fn sign_in_and_generation_budgets() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |c| {
            c.edge.rate.auth_per_min = 60;
            c.edge.rate.auth_burst = 3;
            c.edge.rate.generate_per_min = [("free".to_owned(), 60)].into_iter().collect();
            c.edge.rate.generate_burst = 2;
        })
        .await;
        let body = json!({"email": "nobody@example.com", "password": "wrong password"});
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(s.post("/api/auth/login", None, body.clone()).await.0);
        }
        assert_eq!(statuses, [401, 401, 401, 429]);
        // A public route of the same client is not in the sign-in budget.
        assert_eq!(s.get("/v1/public/echo?id=1", None).await.0, 429, "public echo spends the auth class too");
        assert_eq!(s.get("/v1/echo/x", None).await.0, 401, "other routes are not limited by it");
        // Generation: per user, by tier.
        let other = s.start_edge({
            let mut c = s.config.clone();
            c.edge.rate.auth_per_min = 0;
            c
        })
        .await;
        let account = json!({"email": format!("g-{}@example.com", skillup_testkit::unique()), "password": support::PASSWORD});
        let reg = s.http.post(format!("{other}/api/auth/register")).json(&account).send().await.unwrap();
        assert_eq!(reg.status(), 201);
        let login = s.http.post(format!("{other}/api/auth/login")).json(&account).send().await.unwrap();
        let tok = login.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let res = s.http.post(format!("{other}/v1/metered")).bearer_auth(&tok).json(&json!({"id": "1"})).send().await.unwrap();
            statuses.push(res.status().as_u16());
        }
        assert_eq!(statuses, [200, 200, 429]);
    });
}

// ---------- resilience ----------

#[test]
fn the_breaker_opens_fails_fast_probes_and_closes() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |c| {
            c.edge.breaker.consecutive_failures = 3;
            c.edge.breaker.failure_rate_percent = 0;
            c.edge.breaker.open_ms = 500;
            c.edge.breaker.half_open_probes = 1;
        })
        .await;
        let unavailable = json!({"code": 14, "message": "down"});
        for _ in 0..3 {
            assert_eq!(s.post("/v1/fail", None, unavailable.clone()).await.0, 503);
        }
        let calls = s.seen.calls.load(Ordering::SeqCst);
        let (st, v, h) = s.post("/v1/fail", None, json!({"code": 0})).await;
        assert_eq!(st, 503, "open: fails fast {v}");
        assert!(h.contains_key("retry-after"));
        assert_eq!(s.seen.calls.load(Ordering::SeqCst), calls, "the upstream was not called");
        tokio::time::sleep(Duration::from_millis(600)).await;
        // Half-open: the probe fails, so it opens again.
        assert_eq!(s.post("/v1/fail", None, unavailable.clone()).await.0, 503);
        assert_eq!(s.post("/v1/fail", None, json!({"code": 0})).await.0, 503);
        assert_eq!(s.seen.calls.load(Ordering::SeqCst), calls + 1);
        tokio::time::sleep(Duration::from_millis(600)).await;
        // A good probe closes it.
        assert_eq!(s.post("/v1/fail", None, json!({"code": 0})).await.0, 200);
        for _ in 0..5 {
            assert_eq!(s.post("/v1/fail", None, json!({"code": 0})).await.0, 200);
        }
    });
}

#[test]
fn unavailable_is_retried_only_where_repeating_is_safe() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |c| {
            c.edge.breaker.consecutive_failures = 0;
            c.edge.breaker.failure_rate_percent = 0;
            c.edge.retry.max_attempts = 3;
            c.edge.retry.initial_backoff_ms = 10;
        })
        .await;
        let calls = || s.seen.calls.load(Ordering::SeqCst);
        let unavailable = json!({"code": 14, "message": "restarting"});
        // A plain POST may have been processed: never repeated.
        let before = calls();
        assert_eq!(s.post("/v1/fail", None, unavailable.clone()).await.0, 503);
        assert_eq!(calls(), before + 1, "a POST without an idempotency key is sent once");
        // With an Idempotency-Key the client made it safe: tried max_attempts times.
        let keyed = |body: serde_json::Value| {
            reqwest::Client::new()
                .post(s.url("/v1/fail"))
                .header("idempotency-key", "k-1")
                .json(&body)
                .send()
        };
        let before = calls();
        assert_eq!(keyed(unavailable.clone()).await.unwrap().status(), 503);
        assert_eq!(calls(), before + 3, "retried up to max_attempts");
        // INTERNAL is an answer, never retried.
        let before = calls();
        assert_eq!(keyed(json!({"code": 13})).await.unwrap().status(), 500);
        assert_eq!(calls(), before + 1);
        // CANCELLED (a connection closed under the call) is retried only when safe to repeat.
        let before = calls();
        assert_eq!(keyed(json!({"code": 1})).await.unwrap().status(), 499);
        assert_eq!(calls(), before + 3);
        let before = calls();
        assert_eq!(s.post("/v1/fail", None, json!({"code": 1})).await.0, 499);
        assert_eq!(calls(), before + 1);
        let metrics = reqwest::get(s.url("/metrics")).await.unwrap().text().await.unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("edge_upstream_retries_total") && l.ends_with(" 4")),
            "{metrics}"
        );
    });
}

#[test]
fn an_upstream_that_refuses_connections_is_waited_for_within_the_unreachable_budget() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |_| {}).await;
        // An address where the echo service will come back (a replica restarting).
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let edge_with = |unreachable_ms: u64| {
            let mut c = s.config.clone();
            c.edge.upstreams.insert("testing".into(), format!("http://{addr}"));
            c.edge.breaker.consecutive_failures = 0;
            c.edge.breaker.failure_rate_percent = 0;
            // Two attempts would be over in 20 ms: only the budget can carry the call.
            c.edge.retry.max_attempts = 2;
            c.edge.retry.initial_backoff_ms = 10;
            c.edge.retry.max_backoff_ms = 50;
            c.edge.retry.unreachable_ms = unreachable_ms;
            s.start_edge(c)
        };
        let (without, with) = (edge_with(0).await, edge_with(5_000).await);
        let http = reqwest::Client::new();
        let started = Instant::now();
        let res = http.get(format!("{without}/v1/public/echo?id=1")).send().await.unwrap();
        assert_eq!(res.status(), 503, "no budget: two attempts, then the refusal");
        assert!(started.elapsed() < Duration::from_millis(500));

        // The service comes back 700 ms after the calls start: a GET and a plain POST (never
        // sent, so safe to repeat too) both wait for it.
        let (tok, _, _) = s.register().await;
        let started = Instant::now();
        let get = http.get(format!("{with}/v1/public/echo?id=2")).send();
        let post =
            http.post(format!("{with}/v1/echo")).bearer_auth(&tok).json(&json!({"id": "3"})).send();
        let serve = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            s.serve_echo_at(addr).await
        };
        let (get, post, stop) = tokio::join!(get, post, serve);
        let waited = started.elapsed();
        let (get, post) = (get.unwrap(), post.unwrap());
        assert_eq!(get.status(), 200, "{}", get.text().await.unwrap());
        assert_eq!(post.status(), 200, "{}", post.text().await.unwrap());
        assert!(waited >= Duration::from_millis(700), "answered only once the service was back");
        stop.trigger();
    });
}

#[test]
fn services_of_the_same_process_are_called_in_process_with_the_same_layers() {
    mt().block_on(async {
        let _ = skillup_kit::ops::metrics_handle();
        let s = stack(Kind::Real, |_| {}).await;
        let (tok, _, user_id) = s.register().await;
        let server = s.echo_server().await;
        let local = server.local_channel();
        let stop = skillup_kit::Shutdown::new();
        tokio::spawn(server.run(stop.clone()));
        let mut c = s.config.clone();
        // auth stays where it is (over HTTP/2); the echo service is in this process.
        c.edge.upstreams.insert("auth".into(), format!("http://{}", s.grpc_addr));
        c.edge.upstream_default = Some("http://127.0.0.1:9".into());
        let (base, edge) = s.start_edge_with(c.clone(), Some(local.clone())).await;
        let testing = edge.inner().upstreams.get("testing").unwrap();
        assert_eq!(testing.url, "in-process");
        let http = reqwest::Client::new();

        // The identity assertion is verified by the service's own layer, in-process too.
        let res = http.get(format!("{base}/v1/echo/x")).bearer_auth(&tok).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["user_id"], user_id.as_str());
        let md: Vec<String> = serde_json::from_value(v["metadata"].clone()).unwrap();
        assert!(md.iter().any(|m| m.starts_with("x-skillup-identity=v2.")), "{md:?}");
        // A unary call is made directly: the service's method got the metadata without the
        // gRPC framing's own headers (it is called with them over the network).
        let keys = s.seen.last_keys.lock().unwrap().clone();
        assert!(keys.iter().any(|k| k == "x-request-id"), "{keys:?}");
        assert!(!keys.iter().any(|k| k == "te" || k == "content-type"), "{keys:?}");
        assert!(local.has_unary("/skillup.testing.v1.EchoService/Echo"));
        assert!(!local.has_unary("/skillup.testing.v1.EchoService/Count"), "streams use framing");
        // Statuses, streams and health go the same way.
        let (st, v) = {
            let r = http.post(format!("{base}/v1/fail")).json(&json!({"code": 5})).send();
            let r = r.await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        };
        assert_eq!((st.as_u16(), code(&v)), (404, "NOT_FOUND"), "{v}");
        let res = http
            .get(format!("{base}/v1/count?count=3&interval_ms=5"))
            .bearer_auth(&tok)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        let events = sse_events(res).await;
        assert_eq!(events.len(), 3, "{events:?}");
        let mut ready = false;
        for _ in 0..50 {
            ready = http.get(format!("{base}/readyz")).send().await.unwrap().status() == 200;
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "health answers in-process");
        // The deadline cancels the service's call (the route allows 300 ms).
        let before = s.seen.cancelled.load(Ordering::SeqCst);
        let res = http
            .post(format!("{base}/v1/fail"))
            .json(&json!({"code": 0, "delay_ms": 2000}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 504);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(s.seen.cancelled.load(Ordering::SeqCst), before + 1);
        // Counted as over gRPC: by service, method and final code (the dropped call CANCELLED).
        let metrics = skillup_kit::ops::metrics_handle().render();
        for code in ["OK", "NOT_FOUND", "CANCELLED"] {
            assert!(
                metrics.lines().any(|l| l.starts_with("grpc_server_handled_total{")
                    && l.contains(r#"service="skillup.testing.v1.EchoService""#)
                    && l.contains(&format!(r#"code="{code}""#))),
                "{code}: {metrics}"
            );
        }

        // The service's identity check holds for direct calls too: identity headers without an
        // assertion are dropped, a bad assertion is refused before the service sees the call.
        let echo = "/skillup.testing.v1.EchoService/Echo";
        let message = |md: &[(&'static str, &str)]| {
            let body = prost::Message::encode_to_vec(&skillup_proto::testing::v1::EchoRequest {
                id: "d".into(),
                ..Default::default()
            });
            let mut req = tonic::Request::new(bytes::Bytes::from(body));
            for (k, v) in md {
                req.metadata_mut().insert(*k, v.parse().unwrap());
            }
            req
        };
        let res = local
            .unary(echo, message(&[("x-user-id", "someone-else"), ("x-scopes", "admin")]))
            .expect("a unary method")
            .await
            .unwrap();
        let out: skillup_proto::testing::v1::EchoResponse =
            prost::Message::decode(res.into_inner()).unwrap();
        assert_eq!(out.user_id, "");
        assert!(!out.metadata.iter().any(|m| m.starts_with("x-user-id")), "{:?}", out.metadata);
        let calls = s.seen.calls.load(Ordering::SeqCst);
        let err = local
            .unary(echo, message(&[("x-skillup-identity", "v2.e30.AAAA")]))
            .expect("a unary method")
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        assert_eq!(s.seen.calls.load(Ordering::SeqCst), calls, "the service never saw it");
        assert!(local.unary("/skillup.testing.v1.EchoService/Nothing", message(&[])).is_err());

        // With edge.in_process off the same parts go over the network (here: nowhere).
        c.edge.in_process = false;
        c.edge.retry.unreachable_ms = 0;
        let (base, edge) = s.start_edge_with(c, Some(local)).await;
        assert_ne!(edge.inner().upstreams.get("testing").unwrap().url, "in-process");
        let res = http.get(format!("{base}/v1/public/echo?id=1")).send().await.unwrap();
        assert_eq!(res.status(), 503);
        stop.trigger();
    });
}

#[test]
fn a_client_that_goes_away_cancels_the_upstream_call() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |_| {}).await;
        let client = reqwest::Client::builder().timeout(Duration::from_millis(80)).build().unwrap();
        let err = client.post(s.url("/v1/fail")).json(&json!({"delay_ms": 250})).send().await;
        assert!(err.is_err(), "the client gave up");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(s.seen.cancelled.load(Ordering::SeqCst), 1, "the service call was cancelled");
        assert_eq!(s.seen.finished.load(Ordering::SeqCst), 0);
    });
}

// ---------- streaming ----------

async fn sse_events(res: reqwest::Response) -> Vec<(String, String)> {
    let text = res.text().await.unwrap();
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .filter_map(|block| {
            let mut event = "message".to_owned();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) =
                    line.strip_prefix("event: ").or_else(|| line.strip_prefix("event:"))
                {
                    event = e.trim().to_owned();
                } else if let Some(d) =
                    line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:"))
                {
                    data.push_str(d);
                } else if line.starts_with(':') {
                    return None;
                }
            }
            Some((event, data))
        })
        .collect()
}

#[test]
fn sse_streams_each_message_and_ends_with_an_error_event_on_failure() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let (tok, _, _) = s.register().await;
        let res = s
            .http
            .get(s.url("/v1/count?count=3&interval_ms=10"))
            .bearer_auth(&tok)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let events = sse_events(res).await;
        let data: Vec<Value> =
            events.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
        assert_eq!(data, [json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]);
        // Failing midway: the ticks so far, then one error event with the JSON error.
        let res = s
            .http
            .post(s.url("/v1/echo"))
            .bearer_auth(&tok)
            .header("accept", "text/event-stream")
            .json(&json!({"count": 5, "fail_after": 2, "fail_code": 14}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "POST /v1/echo streams when SSE is asked for");
        let events = sse_events(res).await;
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[2].0, "error");
        let err: Value = serde_json::from_str(&events[2].1).unwrap();
        assert_eq!(code(&err), "PROVIDER_ERROR");
        assert!(!err["error"]["request_id"].as_str().unwrap().is_empty());
    });
}

#[test]
fn sse_keeps_idle_streams_alive_with_comments() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |c| c.edge.sse_keepalive_ms = 100).await;
        let res = s
            .http
            .get(s.url("/v1/count?count=2&interval_ms=450"))
            .header("accept", "text/event-stream")
            .header("authorization", "Bearer x")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "streams are protected like the rest");
        let (tok, _, _) = s.register().await;
        let res = s
            .http
            .get(s.url("/v1/count?count=2&interval_ms=450"))
            .bearer_auth(&tok)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        let text = res.text().await.unwrap();
        assert!(text.contains(":keep-alive") || text.contains(": keep-alive"), "{text}");
    });
}

async fn ws_connect(
    url: &str,
    protocols: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tungstenite::http::Response<Option<Vec<u8>>>,
    ),
    tungstenite::Error,
> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", protocols.parse().unwrap());
    tokio_tungstenite::connect_async(req).await
}

/// Issue 26.5 and 26.16: a socket opened with a token in `Authorization` and another in the
/// subprotocol belonged to one and was re-checked by the other; one offering only
/// `bearer.<token>` got no protocol back (browsers fail such a handshake).
#[test]
fn a_websocket_takes_one_credential_and_answers_a_protocol_it_was_offered() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |_| {}).await;
        let (tok, _, _) = s.register().await;
        let (other, _, _) = s.register().await;
        let url = format!("{}/v1/count?count=1", s.base.replacen("http", "ws", 1));
        let (_, res) = ws_connect(&url, &format!("bearer.{tok}")).await.unwrap();
        assert_eq!(res.headers()["sec-websocket-protocol"], format!("bearer.{tok}").as_str());

        let with_header = |protocols: String, token: &str| {
            let mut req = url.as_str().into_client_request().unwrap();
            req.headers_mut().insert("sec-websocket-protocol", protocols.parse().unwrap());
            req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            tokio_tungstenite::connect_async(req)
        };
        match with_header(format!("skillup.v1, bearer.{other}"), &tok).await {
            Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 400),
            other => panic!("two credentials must be refused, got {:?}", other.map(|r| r.1)),
        }
        let (mut ws, res) = with_header("skillup.v1".into(), &tok).await.unwrap();
        assert_eq!(res.headers()["sec-websocket-protocol"], "skillup.v1");
        let first = ws.next().await.unwrap().unwrap();
        assert_eq!(first.into_text().unwrap().as_str(), "{\"n\":1}");
    });
}

#[test]
fn websockets_bridge_a_stream_with_the_token_as_a_subprotocol_or_first_message() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let (tok, _, _) = s.register().await;
        let ws_base = s.base.replacen("http", "ws", 1);
        let (mut ws, res) = ws_connect(
            &format!("{ws_base}/v1/count?count=2&interval_ms=5"),
            &format!("skillup.v1, bearer.{tok}"),
        )
        .await
        .unwrap();
        assert_eq!(
            res.headers()["sec-websocket-protocol"],
            "skillup.v1",
            "the token is never echoed"
        );
        let mut got = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            match m {
                tungstenite::Message::Text(t) => {
                    got.push(serde_json::from_str::<Value>(&t).unwrap())
                }
                tungstenite::Message::Close(f) => {
                    assert_eq!(
                        f.unwrap().code,
                        tungstenite::protocol::frame::coding::CloseCode::Normal
                    );
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(got, [json!({"n": 1}), json!({"n": 2})]);
        // Token in the first message.
        let (mut ws, _) =
            ws_connect(&format!("{ws_base}/v1/count?count=1"), "skillup.v1").await.unwrap();
        ws.send(tungstenite::Message::Text(json!({"token": tok}).to_string().into()))
            .await
            .unwrap();
        let first = ws.next().await.unwrap().unwrap();
        assert_eq!(first.into_text().unwrap().as_str(), "{\"n\":1}");
        // A bad token in the first message closes with 4401.
        let (mut ws, _) =
            ws_connect(&format!("{ws_base}/v1/count?count=1"), "skillup.v1").await.unwrap();
        ws.send(tungstenite::Message::Text(json!({"token": "bad"}).to_string().into()))
            .await
            .unwrap();
        match ws.next().await.unwrap().unwrap() {
            tungstenite::Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 4401),
            other => panic!("expected a close, got {other:?}"),
        }
        // A bad token as a subprotocol is refused before the upgrade.
        let err = ws_connect(&format!("{ws_base}/v1/count?count=1"), "skillup.v1, bearer.bad")
            .await
            .unwrap_err();
        match err {
            tungstenite::Error::Http(res) => assert_eq!(res.status(), 401),
            other => panic!("expected an HTTP refusal, got {other}"),
        }
    });
}

#[test]
fn a_revoked_token_closes_its_websocket() {
    mt().block_on(async {
        let s = stack(Kind::Real, |c| c.edge.ws_ping_ms = 150).await;
        let (tok, _, _) = s.register().await;
        let ws_base = s.base.replacen("http", "ws", 1);
        let (mut ws, _) = ws_connect(
            &format!("{ws_base}/v1/count?count=1000&interval_ms=50"),
            &format!("skillup.v1, bearer.{tok}"),
        )
        .await
        .unwrap();
        assert!(matches!(ws.next().await, Some(Ok(tungstenite::Message::Text(_)))));
        assert_eq!(s.post("/api/auth/logout", Some(&tok), json!({})).await.0, 204);
        let started = Instant::now();
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(tungstenite::Message::Close(Some(f)))) => break u16::from(f.code),
                Some(Ok(_)) => continue,
                other => panic!("unexpected end {other:?}"),
            }
        };
        assert_eq!(code, 4401);
        assert!(started.elapsed() < Duration::from_secs(2), "closed at the next check");
        // The service's stream was cancelled, not left running.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(s.seen.cancelled.load(Ordering::SeqCst) >= 1);
    });
}

/// Issue 26.11: `POST /api/admin/users/{id}/active` answered 401 "no bearer token" to an
/// admin: the handler ignored the identity the edge asserts.
#[test]
fn an_admin_deactivates_a_user_over_rest() {
    mt().block_on(async {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
        use skillup_auth::store::entities::user;
        let s = stack(Kind::Embedded, |_| {}).await;
        let (_, _, admin_id) = s.register().await;
        let (user_tok, _, user_id) = s.register().await;
        user::Entity::update_many()
            .col_expr(user::Column::Scopes, Expr::value("user admin"))
            .filter(user::Column::Id.eq(uuid::Uuid::parse_str(&admin_id).unwrap()))
            .exec(&s.t.infra.db)
            .await
            .unwrap();
        let email: String = user::Entity::find_by_id(uuid::Uuid::parse_str(&admin_id).unwrap())
            .one(&s.t.infra.db)
            .await
            .unwrap()
            .unwrap()
            .email;
        let (st, v, _) = s
            .post("/api/auth/login", None, json!({"email": email, "password": support::PASSWORD}))
            .await;
        assert_eq!(st, 200, "{v}");
        let admin_tok = v["access_token"].as_str().unwrap().to_owned();
        let path = format!("/api/admin/users/{user_id}/active");
        let (st, v, _) = s.post(&path, Some(&user_tok), json!({"active": false})).await;
        assert_eq!((st, code(&v)), (403, "PERMISSION_DENIED"), "{v}");
        let (st, v, _) = s.post(&path, Some(&admin_tok), json!({"active": false})).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["is_active"], false, "{v}");
        let (st, _, _) = s.get("/api/auth/me", Some(&user_tok)).await;
        assert_eq!(st, 401, "the deactivated account's token stops working");
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
