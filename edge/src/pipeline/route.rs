//! Stage 2: the route from the contracts' table (404, or 405 with `Allow`), and the form of the
//! answer: when a unary and a server-streaming RPC share a route, `Accept: text/event-stream`
//! or a WebSocket upgrade picks the stream.

use std::sync::Arc;

use http::{Method, header, request::Parts};

use crate::{
    Inner,
    errors::ApiError,
    routes::{Lookup, Route},
};

pub(super) struct Matched {
    pub route: Arc<Route>,
    pub vars: Vec<(String, String)>,
    pub ws: bool,
    pub streaming: bool,
}

pub(super) fn route(inner: &Inner, parts: &Parts) -> Result<Matched, ApiError> {
    let path = parts.uri.path();
    let candidates = match inner.table.lookup(&parts.method, path) {
        Lookup::Found(c) => c,
        Lookup::MethodNotAllowed(allowed) => {
            let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            let e = ApiError::new(405, "METHOD_NOT_ALLOWED", format!("use {}", allow.join(", ")))
                .header(header::ALLOW, &allow.join(", "));
            return Err(e);
        }
        Lookup::NotFound => return Err(ApiError::not_found()),
    };
    let ws = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let wants_sse = parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    let streaming = ws || wants_sse;
    let (route, vars) = candidates
        .iter()
        .find(|(r, _)| r.rpc.server_streaming == streaming)
        .or_else(|| candidates.first())
        .expect("lookup found at least one");
    Ok(Matched { route: Arc::clone(route), vars: vars.clone(), ws, streaming })
}
