//! Stage 4: who is calling. One credential per request — `Authorization: Bearer`, or for a
//! WebSocket (browsers cannot set headers on one) the `bearer.<token>` subprotocol — checked by
//! auth's `ValidateToken` against the route's scopes. A socket without one may sign in by its
//! first message. A route for signed-in people only refuses an API key (403). Only a caller who
//! may call a streaming route learns how (401 before 406).

use http::{HeaderMap, header, request::Parts};

use super::{Call, bearer};
use crate::{Inner, errors::ApiError};

pub(super) async fn authenticate(
    inner: &Inner,
    parts: &Parts,
    call: &mut Call,
) -> Result<(), ApiError> {
    let header_token = bearer(&parts.headers).map(str::to_owned);
    let ws_token = if call.ws { ws_protocol_token(&parts.headers) } else { None };
    // A socket is its token's, and re-checked by that very token.
    if header_token.is_some() && ws_token.is_some() {
        return Err(ApiError::invalid_as(
            "send one credential: either Authorization or the bearer.<token> subprotocol",
            "bad-two-credentials",
            &[],
        ));
    }
    call.offered_protocol = ws_token.as_ref().map(|t| format!("bearer.{t}"));
    call.token = header_token.or(ws_token);
    let rule = &call.route.rpc.rule;
    if !rule.public {
        match call.token.as_deref() {
            Some(t) => {
                let d = inner.authn.authenticate(t, &rule.scopes).await?;
                if rule.signed_in && !d.caller.signed_in() {
                    return Err(ApiError::new(
                        403,
                        "PERMISSION_DENIED",
                        "an API key cannot do this: sign in to change the account, its sessions, keys, data or money",
                    ));
                }
                call.decision = Some(d);
            }
            None if call.ws => {}
            None => {
                return Err(ApiError::unauthenticated(
                    "UNAUTHENTICATED",
                    "sign in first: send Authorization: Bearer <access token>",
                ));
            }
        }
    }
    // A file the service streams (`google.api.HttpBody`) is a plain download; other streams
    // need a client that reads one.
    let file = call.route.rpc.output.full_name() == super::respond::HTTP_BODY;
    if call.route.rpc.server_streaming && !call.streaming && !file {
        return Err(ApiError::new(
            406,
            "NOT_ACCEPTABLE",
            "this route streams: send Accept: text/event-stream, or open a WebSocket",
        ));
    }
    Ok(())
}

/// A token offered as a WebSocket subprotocol: `bearer.<token>`.
fn ws_protocol_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix("bearer.").map(str::to_owned))
}
