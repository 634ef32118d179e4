//! Stage 6: a unary answer back to JSON — the status the service set (`x-http-status`, 2xx
//! only) or the route's, the message transcoded (`response_body` applied), and the rate-limit
//! headers; a failed call as the edge's error shape (a 429 keeps its own limit headers).

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};

use super::Call;
use crate::{Inner, errors::ApiError, transcode, upstream::CallError};

pub(super) fn unary(
    inner: &Inner,
    call: &Call,
    answer: Result<tonic::Response<bytes::Bytes>, CallError>,
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
        status.into_response()
    } else {
        let json = transcode::response_json(
            &call.route.rpc.output,
            r.get_ref(),
            call.route.response_body.as_deref(),
        )?;
        let mut res = Response::new(Body::from(json));
        *res.status_mut() = status;
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res
    };
    if let Some(v) = call.verdict {
        v.write(res.headers_mut());
    }
    Ok(res)
}
