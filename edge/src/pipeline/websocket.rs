//! Stage 5 for a WebSocket: the upgrade, then the bridge to the server stream
//! ([`crate::stream::ws_bridge`]) — signed in by the token that opened it, or by the first
//! message.

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, ws::WebSocketUpgrade},
    response::Response,
};
use http::{header, request::Parts};

use super::Call;
use crate::{
    Inner, WS_PROTOCOL,
    errors::ApiError,
    stream::{self, WsAuth, WsCall},
};

pub(super) async fn upgrade(
    inner: &Arc<Inner>,
    mut parts: Parts,
    call: Call,
) -> Result<Response, ApiError> {
    let md = inner.base_metadata(&parts.headers, &call.rid);
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|rej| ApiError::invalid(format!("websocket: {rej}")))?;
    let public = call.route.rpc.rule.public;
    let auth = match (call.decision, call.token) {
        (Some(d), Some(t)) => WsAuth::Ready(Box::new(d), t),
        _ if public => WsAuth::Public,
        _ => WsAuth::FirstMessage,
    };
    let bridged = WsCall {
        route: call.route,
        vars: call.vars,
        query: parts.uri.query().map(str::to_owned),
        request_id: call.rid,
        metadata: md,
        client: call.client,
    };
    let inner = inner.clone();
    // The answer names a protocol the client offered (browsers fail a handshake that answers
    // none): `skillup.v1` when offered — the console offers it with its token — else the
    // `bearer.<token>` protocol itself.
    let offers_ours = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == WS_PROTOCOL);
    let protocols: Vec<String> = match call.offered_protocol {
        Some(p) if !offers_ours => vec![p],
        _ => vec![WS_PROTOCOL.to_owned()],
    };
    // Small buffers: most sockets idle (notifications), and tungstenite's 128 KiB read buffer
    // per socket would make ten thousand of them cost over a gigabyte. Clients send only a
    // token and pongs (the buffer grows for anything larger); writes go out at once (the
    // bridge flushes each message anyway).
    Ok(upgrade
        .protocols(protocols)
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| stream::ws_bridge(socket, inner, auth, bridged)))
}
