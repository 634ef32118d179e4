//! Browser sessions whose tokens travel as cookies. A client that sends
//! `X-Session-Transport: cookie` (the web console) never sees its refresh and device tokens:
//! on a route with a session step (`skillup.common.v1.SessionStep` in the contract) the edge
//! moves the answer's `refresh_token` and `device_token` into `HttpOnly; SameSite=Strict`
//! cookies (`Secure` over TLS) whose paths cover only the routes that read them, and puts them
//! back into a request that leaves them out — after checking that the request's `Origin` is the
//! edge's own or an allowed CORS origin. API clients keep the JSON body form.
//!
//! Which paths a cookie covers comes from the route table: the literal paths of the routes whose
//! request has the field and whose step reads it, so nothing here names a service.

use http::{HeaderMap, HeaderValue, header, request::Parts};
use serde_json::{Map, Value};
use skillup_proto::common::v1::SessionStep;

use crate::{Inner, errors::ApiError, net, routes::RouteTable};

/// The request header by which a client asks for cookie transport.
pub const TRANSPORT_HEADER: &str = "x-session-transport";

/// The refresh token's cookie.
pub const REFRESH_COOKIE: &str = "skillup_refresh";
/// The device token's cookie.
pub const DEVICE_COOKIE: &str = "skillup_device";
const REFRESH_FIELD: &str = "refresh_token";
const DEVICE_FIELD: &str = "device_token";
/// How long a device token is good for (the contract's `AuthResponse.device_token`).
const DEVICE_MAX_AGE: u64 = 90 * 24 * 3600;

/// Where each cookie is sent.
#[derive(Debug, Default, Clone)]
pub struct CookiePaths {
    refresh: Vec<String>,
    device: Vec<String>,
}

impl CookiePaths {
    /// The literal paths of the routes that read each token from a cookie.
    pub fn of(table: &RouteTable) -> Self {
        let mut paths = Self::default();
        for route in &table.routes {
            let source = &route.template.source;
            if source.contains('{') {
                continue;
            }
            let input = &route.rpc.input;
            let step = route.rpc.rule.session;
            let has = |f: &str| input.get_field_by_name(f).is_some();
            if matches!(step, SessionStep::Rotate | SessionStep::End) && has(REFRESH_FIELD) {
                paths.refresh.push(source.clone());
            }
            if step == SessionStep::Start && has(DEVICE_FIELD) {
                paths.device.push(source.clone());
            }
        }
        for list in [&mut paths.refresh, &mut paths.device] {
            list.sort();
            list.dedup();
        }
        paths
    }
}

/// A request that asked for cookie transport on a route with a session step: whether its
/// cookies are marked `Secure`.
#[derive(Debug, Clone, Copy)]
pub struct Carried {
    pub step: SessionStep,
    pub secure: bool,
}

/// Whether this request carries its session in cookies (`None`: in the bodies). A request
/// that asks for it must come from the edge's own origin (or an allowed CORS origin).
pub(crate) fn carried(
    inner: &Inner,
    parts: &Parts,
    peer: std::net::SocketAddr,
    step: SessionStep,
) -> Result<Option<Carried>, ApiError> {
    let asked = parts
        .headers
        .get(TRANSPORT_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("cookie"));
    if !asked || step == SessionStep::Unspecified {
        return Ok(None);
    }
    let secure = secure(inner, parts, peer);
    let origin = parts.headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let own = own_origin(parts, secure);
    let allowed = origin.is_some_and(|o| {
        own.as_deref() == Some(o) || inner.cfg.cors_origins.iter().any(|c| c == o)
    });
    if !allowed {
        return Err(ApiError::new(
            403,
            "PERMISSION_DENIED",
            "a session kept in cookies is used only from this site's own pages",
        ));
    }
    Ok(Some(Carried { step, secure }))
}

/// Over TLS here, or behind a trusted proxy that says the client spoke HTTPS.
fn secure(inner: &Inner, parts: &Parts, peer: std::net::SocketAddr) -> bool {
    if inner.cfg.tls_cert_file.is_some() {
        return true;
    }
    net::contains(&inner.trusted, peer.ip())
        && parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// `scheme://host[:port]` as the browser addressed us.
fn own_origin(parts: &Parts, secure: bool) -> Option<String> {
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| parts.headers.get(header::HOST)?.to_str().ok().map(str::to_owned))?;
    Some(format!("{}://{host}", if secure { "https" } else { "http" }))
}

/// The value of cookie `name` in the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// The request body with the tokens its step reads put back from the cookies, where the body
/// leaves them out. A body that is not a JSON object is left for the transcoder to refuse. A
/// refresh with no token anywhere is no session at all: 401, not a malformed request.
pub(crate) fn fill_request(
    carried: Carried,
    input: &prost_reflect::MessageDescriptor,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<bytes::Bytes, ApiError> {
    let wanted: &[(&str, &str)] = match carried.step {
        SessionStep::Start => &[(DEVICE_FIELD, DEVICE_COOKIE)],
        SessionStep::Rotate | SessionStep::End => &[(REFRESH_FIELD, REFRESH_COOKIE)],
        SessionStep::Unspecified => &[],
    };
    let mut object = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(o)) => o,
            _ => return Ok(body),
        }
    };
    let mut changed = false;
    for (field, name) in wanted {
        let missing = object.get(*field).and_then(Value::as_str).is_none_or(str::is_empty);
        if input.get_field_by_name(field).is_some()
            && missing
            && let Some(value) = cookie(headers, name)
        {
            object.insert((*field).to_owned(), Value::String(value.to_owned()));
            changed = true;
        }
    }
    let refresh_missing =
        object.get(REFRESH_FIELD).and_then(Value::as_str).is_none_or(str::is_empty);
    if carried.step == SessionStep::Rotate && refresh_missing {
        return Err(ApiError::unauthenticated(
            "UNAUTHENTICATED",
            "no session: sign in (the refresh cookie is missing or expired)",
        ));
    }
    Ok(if changed { serde_json::to_vec(&object).map(Into::into).unwrap_or(body) } else { body })
}

/// The answer's tokens moved into cookies (start, rotate) or the refresh cookies cleared (end).
/// Returns the body to send.
pub(crate) fn finish_answer(
    carried: Carried,
    paths: &CookiePaths,
    json: Vec<u8>,
    headers: &mut HeaderMap,
) -> Vec<u8> {
    if carried.step == SessionStep::End {
        clear(carried, paths, headers);
        return json;
    }
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&json) else {
        return json;
    };
    let refresh_ttl =
        object.get("refresh_expires_in").and_then(Value::as_u64).filter(|s| *s > 0).unwrap_or(0);
    if let Some(Value::String(token)) = object.remove(REFRESH_FIELD)
        && !token.is_empty()
    {
        for path in &paths.refresh {
            set(headers, REFRESH_COOKIE, &token, path, Some(refresh_ttl), carried.secure);
        }
    }
    if let Some(Value::String(token)) = object.remove(DEVICE_FIELD)
        && !token.is_empty()
    {
        for path in &paths.device {
            set(headers, DEVICE_COOKIE, &token, path, Some(DEVICE_MAX_AGE), carried.secure);
        }
    }
    serde_json::to_vec(&object).unwrap_or(json)
}

/// A refused rotation (the refresh token expired, was revoked or reused): the browser stops
/// sending a dead token.
pub(crate) fn finish_error(carried: Carried, paths: &CookiePaths, e: &mut ApiError) {
    if carried.step == SessionStep::Rotate && e.status == http::StatusCode::UNAUTHORIZED {
        clear(carried, paths, &mut e.headers);
    }
}

fn clear(carried: Carried, paths: &CookiePaths, headers: &mut HeaderMap) {
    for path in &paths.refresh {
        set(headers, REFRESH_COOKIE, "", path, Some(0), carried.secure);
    }
}

fn set(
    headers: &mut HeaderMap,
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<u64>,
    secure: bool,
) {
    let mut cookie = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_read_by_its_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; skillup_refresh_x=no; skillup_refresh=tok"),
        );
        assert_eq!(cookie(&h, REFRESH_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, DEVICE_COOKIE), None);
    }

    #[test]
    fn a_set_cookie_is_http_only_strict_and_secure_over_tls() {
        let mut h = HeaderMap::new();
        set(&mut h, REFRESH_COOKIE, "t", "/api/auth/refresh", Some(60), true);
        set(&mut h, REFRESH_COOKIE, "", "/api/auth/logout", Some(0), false);
        let all: Vec<_> =
            h.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(
            all,
            [
                "skillup_refresh=t; Path=/api/auth/refresh; HttpOnly; SameSite=Strict; Max-Age=60; Secure",
                "skillup_refresh=; Path=/api/auth/logout; HttpOnly; SameSite=Strict; Max-Age=0",
            ]
        );
    }
}
