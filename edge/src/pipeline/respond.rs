//! Stage 6: a unary answer back to JSON — the status the service set (`x-http-status`, 2xx
//! only) or the route's, the message transcoded (`response_body` applied), and the rate-limit
//! headers; a failed call as the edge's error shape (a 429 keeps its own limit headers).

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};

use super::Call;

/// A response message the edge answers with as it is, not as JSON.
pub(super) const HTTP_BODY: &str = "google.api.HttpBody";
use crate::{
    Inner,
    errors::ApiError,
    session::{self, Carried},
    transcode,
    upstream::CallError,
};

pub(super) fn unary(
    inner: &Inner,
    call: &Call,
    answer: Result<tonic::Response<bytes::Bytes>, CallError>,
    session: Option<Carried>,
) -> Result<Response, ApiError> {
    let rule = &call.route.rpc.rule;
    let r = match answer {
        Ok(r) => r,
        Err(e) => {
            let mut e = inner.call_error(e);
            if let Some(v) = call.verdict
                && e.status != StatusCode::TOO_MANY_REQUESTS
            {
                v.write(&mut e.headers);
            }
            if let Some(carried) = session {
                session::finish_error(carried, &inner.cookie_paths, &mut e);
            }
            return Err(e);
        }
    };
    let status = r
        .metadata()
        .get("x-http-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .filter(|s| (200..300).contains(s))
        .unwrap_or(match rule.success_status {
            0 => 200,
            s => s,
        });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut res = if status == StatusCode::NO_CONTENT {
        let mut res = status.into_response();
        if let Some(carried) = session {
            session::finish_answer(carried, &inner.cookie_paths, Vec::new(), res.headers_mut());
        }
        res
    } else if call.route.rpc.output.full_name() == HTTP_BODY {
        let mut res = raw_body(r.metadata(), r.get_ref())?;
        *res.status_mut() = status;
        res
    } else {
        let json = transcode::response_json(
            &call.route.rpc.output,
            r.get_ref(),
            call.route.response_body.as_deref(),
        )?;
        let mut cookies = http::HeaderMap::new();
        let json = match session {
            Some(carried) => {
                session::finish_answer(carried, &inner.cookie_paths, json, &mut cookies)
            }
            None => json,
        };
        let mut res = Response::new(Body::from(json));
        res.headers_mut().extend(cookies);
        *res.status_mut() = status;
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res
    };
    // The answer to an idempotency key sent again is the first answer; the service says it is
    // a replay (`Idempotent-Replayed: true`, as Stripe answers).
    if let Some(v) = r.metadata().get("idempotent-replayed").and_then(|v| v.to_str().ok())
        && let Ok(v) = HeaderValue::from_str(v)
    {
        res.headers_mut().insert(header::HeaderName::from_static("idempotent-replayed"), v);
    }
    if let Some(v) = call.verdict {
        v.write(res.headers_mut());
    }
    Ok(res)
}

/// A `google.api.HttpBody` answer: its bytes as the body under its content type, a download
/// name the service gave (`content-disposition` metadata), and headers that keep a browser from
/// sniffing or running it in our origin.
fn raw_body(md: &tonic::metadata::MetadataMap, bytes: &[u8]) -> Result<Response, ApiError> {
    let body = decode_body(bytes)?;
    let mut res = Response::new(Body::from(body.data));
    download_headers(res.headers_mut(), md, &body.content_type);
    Ok(res)
}

/// A server stream of `google.api.HttpBody` as one download (grpc-gateway's convention): the
/// first message's content type, the service's `content-disposition`, and each message's bytes
/// sent on as they arrive, so a large file never sits whole in the edge. A failure before the
/// first bytes is the usual error answer; one midway cuts the body short (the client sees an
/// incomplete download, never a silently shorter file).
pub(super) async fn streamed_body(
    opened: tonic::Response<tonic::Streaming<bytes::Bytes>>,
) -> Result<Response, ApiError> {
    use futures::StreamExt as _;
    let (md, mut stream, _) = opened.into_parts();
    let first = match stream.next().await {
        Some(Ok(bytes)) => decode_body(&bytes)?,
        Some(Err(status)) => return Err(ApiError::from_status(&status)),
        None => skillup_proto::google::api::HttpBody::default(),
    };
    let rest = stream.map(|r| {
        let bytes = r.map_err(|s| std::io::Error::other(s.message().to_owned()))?;
        let body = decode_body(&bytes).map_err(|_| std::io::Error::other("unreadable message"))?;
        Ok::<_, std::io::Error>(bytes::Bytes::from(body.data))
    });
    let head = futures::stream::once(async move { Ok(bytes::Bytes::from(first.data)) });
    let mut res = Response::new(Body::from_stream(head.chain(rest)));
    download_headers(res.headers_mut(), &md, &first.content_type);
    Ok(res)
}

fn decode_body(bytes: &[u8]) -> Result<skillup_proto::google::api::HttpBody, ApiError> {
    use prost::Message as _;
    skillup_proto::google::api::HttpBody::decode(bytes).map_err(|e| {
        tracing::error!(error = %e, "undecodable upstream HttpBody");
        ApiError::new(502, "INTERNAL", "the service answered with an unreadable message")
    })
}

fn download_headers(
    h: &mut http::HeaderMap,
    md: &tonic::metadata::MetadataMap,
    content_type: &str,
) {
    let content_type = HeaderValue::from_str(content_type)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, content_type);
    if let Some(v) =
        md.get("content-disposition").and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
}
