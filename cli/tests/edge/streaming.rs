//! Server-sent events and WebSockets: streams, keep-alives, credentials, revocation.

use super::*;

// ---------- streaming ----------

pub(super) async fn sse_events(res: reqwest::Response) -> Vec<(String, String)> {
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
pub(super) fn sse_streams_each_message_and_ends_with_an_error_event_on_failure() {
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
pub(super) fn sse_keeps_idle_streams_alive_with_comments() {
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

pub(super) async fn ws_connect(
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
pub(super) fn a_websocket_takes_one_credential_and_answers_a_protocol_it_was_offered() {
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
pub(super) fn websockets_bridge_a_stream_with_the_token_as_a_subprotocol_or_first_message() {
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
pub(super) fn a_revoked_token_closes_its_websocket() {
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
pub(super) fn an_admin_deactivates_a_user_over_rest() {
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
