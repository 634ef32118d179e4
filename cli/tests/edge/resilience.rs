//! Rate budgets, breakers, retries of safe calls, waiting for restarting upstreams, in-process calls, cancellation.

use super::*;

// ---------- limits ----------

#[test]
pub(super) fn the_per_ip_budget_is_exact() {
    mt().block_on(async {
        // Low enough that eight clients exhaust it even on a machine busy elsewhere.
        let (rate, burst) = (50u32, 10u32);
        let s = stack(Kind::Embedded, |c| {
            c.edge.rate.ip_per_sec = rate;
            c.edge.rate.ip_burst = burst;
        })
        .await;
        per_ip_budget_holds(&s, &s.url("/v1/public/echo?id=1"), rate, burst).await;
    });
}

/// Two edges on one Redis spend one budget: together they let through what one edge would
/// (each keeping its own, they let through twice as much). The sign-in budget of 200 comes back
/// at one a minute, so what the clocks of the edges, Redis and this test say cannot blur it:
/// exactly 200 of 400 requests pass.
#[test]
pub(super) fn two_edges_spend_one_budget_exactly() {
    mt().block_on(async {
        let s = stack(Kind::Real, |c| {
            c.edge.rate.ip_per_sec = 0;
            c.edge.rate.auth_per_min = 1;
            c.edge.rate.auth_burst = 200;
        })
        .await;
        let other = s.start_edge(s.config.clone()).await;
        let urls = [s.url("/v1/public/echo?id=1"), format!("{other}/v1/public/echo?id=1")];
        let mut tasks = Vec::new();
        for t in 0..8 {
            let (http, urls) = (s.http.clone(), urls.clone());
            tasks.push(tokio::spawn(async move {
                let mut passed = 0;
                for n in 0..50 {
                    let res = http.get(&urls[(t + n) % 2]).send().await.unwrap();
                    match res.status().as_u16() {
                        200 => passed += 1,
                        429 => assert!(res.headers().contains_key("retry-after")),
                        other => panic!("unexpected {other}"),
                    }
                }
                passed
            }));
        }
        let mut passed = 0;
        for t in tasks {
            passed += t.await.unwrap();
        }
        assert_eq!(passed, 200, "one budget of 200 between the two edges");
    });
}

/// Sends requests from 8 tasks for 3 s and checks the per-IP budget let through exactly its
/// burst plus `rate` a second of the time it was drained. The edge decided each request at some
/// moment between its sending and its answer, so the count must lie between what the budget
/// allows over the shortest and the longest window those moments permit (plus one token each
/// way for rounding): exact on an idle machine, and never a flake on a busy one, where requests
/// wait to be read.
async fn per_ip_budget_holds(s: &crate::edge_support::Stack, url: &str, rate: u32, burst: u32) {
    let window = Duration::from_secs(3);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, url) = (s.http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            // (when the request was sent, when its answer came, whether it was let through)
            let mut seen = Vec::new();
            while start.elapsed() < window {
                let sent = start.elapsed();
                let res = http.get(&url).send().await.unwrap();
                let answered = start.elapsed();
                match res.status().as_u16() {
                    200 => {
                        assert!(res.headers().contains_key("ratelimit-remaining"));
                        seen.push((sent, answered, true));
                    }
                    429 => {
                        assert!(res.headers().contains_key("retry-after"));
                        seen.push((sent, answered, false));
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
    let ok = seen.iter().filter(|(_, _, ok)| *ok).count() as u32;
    let limited = seen.len() as u32 - ok;
    assert!(limited > 0, "the budget was never exhausted: {ok} ok");
    // The first request the edge saw, and the last it let through, each somewhere between
    // sending and answer.
    let first_sent = seen.iter().map(|(t, _, _)| *t).min().unwrap();
    let first_answered = seen.iter().map(|(_, a, _)| *a).min().unwrap();
    let last_ok_sent = seen.iter().filter(|(_, _, ok)| *ok).map(|(t, _, _)| *t).max().unwrap();
    let last_ok_answered = seen.iter().filter(|(_, _, ok)| *ok).map(|(_, a, _)| *a).max().unwrap();
    // The bucket starts full, so until its burst is spent a pause loses what refills: the
    // shortest window counts from the moment `burst` answers were in (every one of those first
    // decisions was let through), not from the first.
    let mut answers: Vec<Duration> = seen.iter().map(|(_, a, _)| *a).collect();
    answers.sort();
    let burst_spent = answers[(burst as usize).min(answers.len()) - 1].max(first_answered);
    let shortest = last_ok_sent.saturating_sub(burst_spent).as_secs_f64();
    let longest = (last_ok_answered - first_sent).as_secs_f64();
    // A bucket refills only up to its burst: when the edge decides nothing for longer than
    // burst/rate (a machine busy elsewhere stalls it, or no request is at it), what comes back
    // beyond the burst is lost. Such stretches show as requests waiting longer than that for
    // their answer, or as moments with no request out at all; the lower bound gives them up.
    let refill = Duration::from_secs_f64(f64::from(burst) / f64::from(rate));
    let waited: Vec<(Duration, Duration)> =
        seen.iter().map(|(t, a, _)| (*t + refill, *a)).filter(|(t, a)| t < a).collect();
    let out: Vec<(Duration, Duration)> = seen.iter().map(|(t, a, _)| (*t, *a)).collect();
    let span = (burst_spent, last_ok_sent.max(burst_spent));
    let (waiting, stretches) = covered(&waited, span);
    let stalled = waiting + (span.1 - span.0).as_secs_f64() - covered(&out, span).0;
    // A stall starts with the bucket not quite empty (up to one token back since the last
    // decision), so each stalled stretch may lose up to one token more than its length says:
    // the clean-clone CI once saw 518 let through against a bound of 518.x.
    let (low, high) = (
        f64::from(burst) + f64::from(rate) * (shortest - stalled).max(0.0) - 1.0 - stretches as f64,
        f64::from(burst) + f64::from(rate) * longest + 1.0,
    );
    assert!(
        (low..=high).contains(&f64::from(ok)),
        "allowed {ok}; the budget allows {low:.1}..={high:.1} ({limited} limited; stalled {stalled:.3} s in {stretches})"
    );
    // How wide the range was (a few requests when the machine is idle).
    eprintln!(
        "per-IP budget: {ok} let through, {limited} limited; allowed range {low:.1}..={high:.1} (stalled {stalled:.3} s in {stretches})"
    );
}

/// Seconds of `span` that the `intervals` cover (their union), and in how many separate stretches.
fn covered(intervals: &[(Duration, Duration)], span: (Duration, Duration)) -> (f64, usize) {
    let mut parts: Vec<(Duration, Duration)> = intervals
        .iter()
        .map(|(a, b)| ((*a).max(span.0), (*b).min(span.1)))
        .filter(|(a, b)| a < b)
        .collect();
    parts.sort();
    let (mut total, mut end, mut stretches) = (Duration::ZERO, span.0, 0);
    for (a, b) in parts {
        if stretches == 0 || a > end {
            stretches += 1;
        }
        let a = a.max(end);
        if b > a {
            total += b - a;
            end = b;
        }
    }
    (total.as_secs_f64(), stretches)
}

#[test]
pub(super) fn sign_in_and_generation_budgets() {
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
pub(super) fn the_breaker_opens_fails_fast_probes_and_closes() {
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
pub(super) fn unavailable_is_retried_only_where_repeating_is_safe() {
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
pub(super) fn an_upstream_that_refuses_connections_is_waited_for_within_the_unreachable_budget() {
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
pub(super) fn services_of_the_same_process_are_called_in_process_with_the_same_layers() {
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
        assert!(md.iter().any(|m| m.starts_with("x-skillup-identity=v3.")), "{md:?}");
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
        // And the caller check: an in-process call as nobody is refused like a network one
        // without a certificate; the edge's calls carry its name.
        let refused = local.unary(echo, message(&[])).expect("a unary method").await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        let refused = local
            .as_component("ai")
            .unary(echo, message(&[]))
            .expect("a unary method")
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        let local = local.as_component("edge");
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
pub(super) fn a_client_that_goes_away_cancels_the_upstream_call() {
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
