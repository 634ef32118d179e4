//! Stage 5: the upstream call. The body is read (bounded in size and time, JSON only) and
//! transcoded with the path variables and query into the request message; the call carries the
//! request id, the caller's signed identity assertion and the route's deadline, and is repeated
//! after UNAVAILABLE only when safe (reads, and writes sent with an `Idempotency-Key`).

use std::{sync::Arc, time::Duration};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use http::{Method, header, request::Parts};

use super::{Call, respond};
use crate::{
    Inner,
    errors::ApiError,
    routes::{self, Route},
    session, stream, transcode,
};

pub(super) async fn call(
    inner: &Arc<Inner>,
    parts: Parts,
    body: Body,
    call: Call,
) -> Result<Response, ApiError> {
    let route = &call.route;
    let rule = &route.rpc.rule;
    let mut md = inner.base_metadata(&parts.headers, &call.rid);
    let session = session::carried(inner, &parts, super::peer(&parts), rule.session)?;
    let mut body_bytes = read_body(inner, &parts, body, route).await?;
    if let Some(carried) = session {
        body_bytes = session::fill_request(carried, &route.rpc.input, &parts.headers, body_bytes)?;
    }
    let msg = match &route.body {
        routes::BodyRule::Raw(field) => {
            let ct = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
            let mut msg = transcode::request_message(route, &call.vars, parts.uri.query(), b"")?;
            transcode::put_raw_body(&mut msg, field, ct.unwrap_or_default(), body_bytes);
            msg
        }
        _ => transcode::request_message(route, &call.vars, parts.uri.query(), &body_bytes)?,
    };
    for name in &rule.forward_headers {
        if let Some(v) = parts.headers.get(name).and_then(|v| v.to_str().ok())
            && let Ok(v) = tonic::metadata::MetadataValue::try_from(v)
            && let Ok(key) = tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes())
        {
            md.insert(key, v);
        }
    }
    inner.put_identity(&mut md, call.decision.as_ref(), &call.rid, call.client);
    let Some(upstream) = inner.upstreams.get(&route.rpc.upstream) else {
        return Err(ApiError::new(502, "UNAVAILABLE", "no upstream for this route"));
    };
    let timeout = match rule.timeout_ms {
        0 if route.rpc.server_streaming => Duration::from_secs(24 * 3600),
        0 => Duration::from_millis(inner.cfg.timeout_ms),
        ms => Duration::from_millis(u64::from(ms)),
    };
    let idempotent = matches!(parts.method, Method::GET | Method::HEAD)
        || parts.headers.contains_key("idempotency-key");
    let grpc_path = &route.rpc.grpc_path;
    if route.rpc.server_streaming {
        let opened = upstream
            .server_streaming(grpc_path, transcode::encode(&msg), md, timeout, idempotent)
            .await
            .map_err(|e| inner.call_error(e))?;
        let mut res = if route.rpc.output.full_name() == respond::HTTP_BODY {
            respond::streamed_body(opened).await?
        } else {
            let keep = Duration::from_millis(inner.cfg.sse_keepalive_ms.max(100));
            stream::sse(opened.into_inner(), route, keep, call.rid.clone())
        };
        if let Some(v) = call.verdict {
            v.write(res.headers_mut());
        }
        return Ok(res);
    }
    let answer = upstream.unary(grpc_path, transcode::encode(&msg), md, timeout, idempotent).await;
    respond::unary(inner, &call, answer, session)
}

/// The body: at most `edge.max_body_bytes`, within `edge.body_timeout_ms` (408 otherwise), and
/// JSON whenever the route takes one.
async fn read_body(
    inner: &Inner,
    parts: &Parts,
    body: Body,
    route: &Route,
) -> Result<Bytes, ApiError> {
    let json = matches!(route.body, routes::BodyRule::Whole | routes::BodyRule::Field(_));
    read(inner, parts, body, json).await
}

/// [`read_body`] for a route of the edge's own that takes JSON (the OpenAI-compatible API).
pub(crate) async fn read_json_body(
    inner: &Inner,
    parts: &Parts,
    body: Body,
) -> Result<Bytes, ApiError> {
    read(inner, parts, body, true).await
}

async fn read(inner: &Inner, parts: &Parts, body: Body, json: bool) -> Result<Bytes, ApiError> {
    let max = inner.cfg.max_body_bytes;
    let too_large =
        || ApiError::new(413, "PAYLOAD_TOO_LARGE", format!("the body is larger than {max} bytes"));
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > max
    {
        return Err(too_large());
    }
    let deadline = Duration::from_millis(inner.cfg.body_timeout_ms.max(1));
    let read = tokio::time::timeout(deadline, axum::body::to_bytes(body, max)).await;
    let Ok(read) = read else {
        return Err(ApiError::new(
            408,
            "DEADLINE_EXCEEDED",
            format!("the body did not arrive within {} ms", deadline.as_millis()),
        ));
    };
    let bytes = read.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = s.source();
        }
        ApiError::invalid_as("the body could not be read", "bad-body-unread", &[])
    })?;
    if json && !bytes.iter().all(u8::is_ascii_whitespace) {
        let ct =
            parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !(mime.eq_ignore_ascii_case("application/json")
            || mime.to_ascii_lowercase().ends_with("+json"))
        {
            return Err(ApiError::new(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as JSON (Content-Type: application/json)",
            ));
        }
    }
    Ok(bytes)
}
