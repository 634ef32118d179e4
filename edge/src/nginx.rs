//! Nginx's `auth_request`: the edge's validation for a proxy that routes by itself.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, Request, StatusCode};

use crate::{
    Inner,
    errors::ApiError,
    net,
    pipeline::{bearer, peer, request_id},
};

/// `GET /api/auth/internal/jwt/validate` for Nginx `auth_request`: 204 with the identity
/// headers, or 401 / 403. Only from `edge.internal_cidrs`.
pub(crate) async fn nginx_validate(
    State(inner): State<Arc<Inner>>,
    req: Request<Body>,
) -> Response {
    let (parts, _) = req.into_parts();
    let rid = request_id(&parts.headers);
    let client = net::client_ip(peer(&parts), &parts.headers, &inner.trusted);
    // The allow-list applies to the connecting peer: this route is for a proxy next to us.
    if !net::contains(&inner.internal, peer(&parts).ip()) {
        tracing::warn!(%client, "validate endpoint called from outside the internal networks");
        return ApiError::new(403, "PERMISSION_DENIED", "this route is internal")
            .into_response_with(&rid);
    }
    let Some(token) = bearer(&parts.headers) else {
        return ApiError::unauthenticated("UNAUTHENTICATED", "no bearer token")
            .into_response_with(&rid);
    };
    let scopes: Vec<String> = parts
        .headers
        .get("x-required-scopes")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    match inner.authn.authenticate(token, &scopes).await {
        Ok(d) => {
            let mut res = StatusCode::NO_CONTENT.into_response();
            let h = res.headers_mut();
            let mut put = |k: &'static str, v: &str| {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.insert(k, v);
                }
            };
            put("x-user-id", &d.caller.user_id);
            put("x-scopes", &d.caller.scopes.join(" "));
            put("x-subscription-tier", &d.caller.tier);
            put("x-email-verified", if d.caller.email_verified { "true" } else { "false" });
            res
        }
        Err(e) => e.into_response_with(&rid),
    }
}
