//! Server-streaming RPCs at the edge: as Server-Sent Events (`Accept: text/event-stream`) or as
//! a WebSocket. Each upstream message is sent as soon as it arrives (no buffering); a stream
//! that fails midway ends with an `error` event (SSE) or a close frame carrying the JSON error
//! (WebSocket) — never a silent cut.

use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::ws::{CloseFrame, Message, WebSocket},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use bytes::Bytes;
use futures::StreamExt;
use tonic::Streaming;

use crate::{Inner, authn::Decision, errors::ApiError, routes::Route, transcode};

/// Close code for "your token is no longer good" (4000–4999 are the application's).
pub const CLOSE_UNAUTHORIZED: u16 = 4401;

/// The SSE response for an opened upstream stream.
pub fn sse(
    stream: Streaming<Bytes>,
    route: &Route,
    keep_alive: Duration,
    request_id: String,
) -> Response {
    let output = route.rpc.output.clone();
    let response_body = route.response_body.clone();
    let events = futures::stream::unfold(Some(stream), move |state| {
        let output = output.clone();
        let response_body = response_body.clone();
        let request_id = request_id.clone();
        async move {
            let mut stream = state?;
            match stream.next().await {
                Some(Ok(bytes)) => {
                    let event =
                        match transcode::response_json(&output, &bytes, response_body.as_deref()) {
                            Ok(json) => Event::default().data(String::from_utf8_lossy(&json)),
                            Err(e) => {
                                return Some((
                                    Ok::<_, Infallible>(error_event(&e, &request_id)),
                                    None,
                                ));
                            }
                        };
                    Some((Ok(event), Some(stream)))
                }
                Some(Err(status)) => {
                    let e = ApiError::from_status(&status);
                    Some((Ok(error_event(&e, &request_id)), None))
                }
                None => None,
            }
        }
    });
    let mut res = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
        .into_response();
    // Proxies (Nginx) must not buffer the stream.
    res.headers_mut().insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    res.headers_mut()
        .insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    res
}

fn error_event(e: &ApiError, request_id: &str) -> Event {
    let body = e.body(request_id);
    Event::default().event("error").data(body.to_string())
}

/// How a WebSocket caller is known.
pub enum WsAuth {
    /// Already validated (token in `Sec-WebSocket-Protocol`), with the token.
    Ready(Box<Decision>, String),
    /// Public route: no token needed.
    Public,
    /// The first message must carry the token.
    FirstMessage,
}

/// What the bridge needs from the request.
pub struct WsCall {
    pub route: Arc<Route>,
    pub vars: Vec<(String, String)>,
    pub query: Option<String>,
    pub request_id: String,
    pub metadata: tonic::metadata::MetadataMap,
    /// The client's address (it goes into the identity assertion).
    pub client: std::net::IpAddr,
}

fn close(code: u16, reason: &str) -> Message {
    // A close reason is at most 123 bytes.
    let mut reason = reason.to_owned();
    while reason.len() > 123 {
        reason.pop();
    }
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

async fn first_token(socket: &mut WebSocket, wait: Duration) -> Option<String> {
    let msg = tokio::time::timeout(wait, socket.recv()).await.ok()??.ok()?;
    let Message::Text(text) = msg else { return None };
    let v: serde_json::Value = serde_json::from_str(text.as_str()).ok()?;
    v.get("token").and_then(|t| t.as_str()).map(str::to_owned)
}

/// Bridges the socket to the server stream until either side ends.
pub async fn ws_bridge(mut socket: WebSocket, inner: Arc<Inner>, auth: WsAuth, call: WsCall) {
    let started = Instant::now();
    let (decision, token) = match auth {
        WsAuth::Ready(d, t) => (Some(*d), Some(t)),
        WsAuth::Public => (None, None),
        WsAuth::FirstMessage => {
            let wait = Duration::from_millis(inner.cfg.ws_auth_timeout_ms);
            let Some(token) = Box::pin(first_token(&mut socket, wait)).await else {
                let _ = socket
                    .send(close(CLOSE_UNAUTHORIZED, "send {\"token\":\"<access token>\"} first"))
                    .await;
                return;
            };
            // Boxed, here and below: a future awaited inline is laid out inside this one, which
            // every open socket holds for its whole life; boxed, it costs memory only while it
            // runs.
            match Box::pin(inner.authn.authenticate(&token, &call.route.rpc.rule.scopes)).await {
                Ok(d) => (Some(d), Some(token)),
                Err(e) => {
                    let code = if e.status == 503 { 1013 } else { CLOSE_UNAUTHORIZED };
                    let _ = socket.send(close(code, &e.body(&call.request_id).to_string())).await;
                    return;
                }
            }
        }
    };
    let msg = match transcode::request_message(&call.route, &call.vars, call.query.as_deref(), b"")
    {
        Ok(m) => m,
        Err(e) => {
            let _ = socket.send(close(1008, &e.body(&call.request_id).to_string())).await;
            return;
        }
    };
    let mut md = call.metadata;
    inner.put_identity(&mut md, decision.as_ref(), &call.request_id, call.client);
    let Some(upstream) = inner.upstreams.get(&call.route.rpc.upstream) else {
        let _ = socket.send(close(1011, "no upstream")).await;
        return;
    };
    let timeout = match call.route.rpc.rule.timeout_ms {
        0 => Duration::from_secs(24 * 3600),
        ms => Duration::from_millis(u64::from(ms)),
    };
    // A subscription only reads: safe to open again.
    let opened = Box::pin(upstream.server_streaming(
        &call.route.rpc.grpc_path,
        transcode::encode(&msg),
        md,
        timeout,
        true,
    ))
    .await;
    drop(msg);
    let mut stream = match opened {
        Ok(r) => r.into_inner(),
        Err(e) => {
            let e = inner.call_error(e);
            let code = if e.status.is_server_error() { 1011 } else { 1008 };
            let _ = socket.send(close(code, &e.body(&call.request_id).to_string())).await;
            return;
        }
    };
    metrics::gauge!("edge_websockets_open").increment(1.0);
    let ping_every = Duration::from_millis(inner.cfg.ws_ping_ms.max(100));
    let mut ticker = tokio::time::interval(ping_every);
    ticker.tick().await;
    let mut last_seen = Instant::now();
    let output = call.route.rpc.output.clone();
    let end: Option<Message> = loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(bytes)) => {
                    match transcode::response_json(&output, &bytes, call.route.response_body.as_deref()) {
                        Ok(json) => {
                            let text = String::from_utf8_lossy(&json).into_owned();
                            if socket.send(Message::Text(text.into())).await.is_err() {
                                break None;
                            }
                        }
                        Err(e) => break Some(close(1011, &e.body(&call.request_id).to_string())),
                    }
                }
                Some(Err(status)) => {
                    let e = ApiError::from_status(&status);
                    break Some(close(1011, &e.body(&call.request_id).to_string()));
                }
                None => break Some(close(1000, "stream ended")),
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => last_seen = Instant::now(),
            },
            _ = ticker.tick() => {
                if last_seen.elapsed() > ping_every * 2 + Duration::from_millis(500) {
                    break Some(close(1001, "no pong: connection considered dead"));
                }
                if let (Some(d), Some(token)) = (&decision, &token) {
                    if d.caller.token_exp <= skillup_kit::identity::now_secs() as i64 {
                        break Some(close(CLOSE_UNAUTHORIZED, "the access token expired"));
                    }
                    // Cheap while nothing changed (cached decision + one stamp read); a
                    // logout or revocation anywhere closes the socket at the next tick.
                    if let Err(e) = Box::pin(inner.authn.authenticate(token, &call.route.rpc.rule.scopes)).await {
                        let code = if e.status == 503 { 1013 } else { CLOSE_UNAUTHORIZED };
                        break Some(close(code, &e.body(&call.request_id).to_string()));
                    }
                }
                if socket.send(Message::Ping(Bytes::from_static(b"skillup"))).await.is_err() {
                    break None;
                }
            }
        }
    };
    if let Some(m) = end {
        let _ = socket.send(m).await;
    }
    metrics::gauge!("edge_websockets_open").decrement(1.0);
    tracing::debug!(secs = started.elapsed().as_secs(), "websocket closed");
}
