//! The request pipeline of every transcoded route, as named stages, each in its own file and
//! run in this order (the first refusal answers):
//!
//! 1. [`admit`]: header size, the client's address, the per-IP budget — before anything is
//!    looked up, so unknown paths cost as much as real ones;
//! 2. [`route`]: the route table, and the answer's form (JSON, SSE or WebSocket);
//! 3. [`rate`] and the network policy: internal routes only from internal networks, the
//!    sign-in family's budget;
//! 4. [`authenticate`]: one credential, checked by auth's `ValidateToken` (cached, fail closed);
//!    then the generation budget, which needs to know who calls;
//! 5. [`call`]: the upstream call — the body read and transcoded, the identity assertion, the
//!    route's deadline, retries where safe — or the WebSocket bridge ([`websocket`]);
//! 6. [`respond`]: the answer transcoded back with its status and rate-limit headers.
//!
//! What a stage decided travels to the next in [`Call`].

mod admit;
mod authenticate;
mod call;
mod rate;
mod respond;
mod route;
mod websocket;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, State},
    response::Response,
};
use http::{HeaderMap, Request, header, request::Parts};

use skillup_kit::i18n::Locale;

use crate::{
    Inner, X_REQUEST_ID,
    authn::Decision,
    errors::ApiError,
    limits::Verdict,
    routes::{self, Route},
};

/// What the stages have decided about one request so far.
pub(crate) struct Call {
    pub rid: String,
    pub client: IpAddr,
    /// The tightest rate-limit verdict met (its headers go on the answer).
    pub verdict: Option<Verdict>,
    pub route: Arc<Route>,
    pub vars: Vec<(String, String)>,
    /// A WebSocket upgrade.
    pub ws: bool,
    /// The client takes a stream (SSE or WebSocket).
    pub streaming: bool,
    /// The validated caller (`None` on a public route, or a socket that signs in by message).
    pub decision: Option<Decision>,
    /// The credential the caller sent, if any.
    pub token: Option<String>,
    /// The `bearer.<token>` subprotocol the client offered, if it signed in that way.
    pub offered_protocol: Option<String>,
}

impl Call {
    /// Tightens the verdict by another budget's.
    fn spend(&mut self, v: Option<Verdict>) {
        self.verdict = v.map(|v| v.tighter(self.verdict)).or(self.verdict);
    }
}

/// Every transcoded route.
pub(crate) async fn dispatch(State(inner): State<Arc<Inner>>, req: Request<Body>) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let rid = request_id(&parts.headers);
    let method = parts.method.clone();
    let locale = Locale::of_parts(&parts.headers, &parts.extensions);
    let (route, result) = handle(&inner, parts, body, rid.clone()).await;
    let res = match result {
        Ok(r) => r,
        Err(e) => e.worded(locale).into_response_with(&rid),
    };
    let elapsed = started.elapsed().as_secs_f64();
    match route {
        Some(route) => route.metrics.record(&route, &method, res.status(), elapsed),
        None => routes::RouteMetrics::record_unmatched(&method, res.status(), elapsed),
    }
    res
}

/// The route a request matched (`None`: unmatched), and the answer.
type Handled = (Option<Arc<Route>>, Result<Response, ApiError>);

async fn handle(inner: &Arc<Inner>, parts: Parts, body: Body, rid: String) -> Handled {
    let (client, verdict) = match admit::admit(inner, &parts).await {
        Ok(a) => a,
        Err(e) => return (None, Err(e)),
    };
    let matched = match route::route(inner, &parts) {
        Ok(m) => m,
        Err(e) => return (None, Err(e)),
    };
    let mut call = Call {
        rid,
        client,
        verdict,
        route: matched.route,
        vars: matched.vars,
        ws: matched.ws,
        streaming: matched.streaming,
        decision: None,
        token: None,
        offered_protocol: None,
    };
    let label = Some(Arc::clone(&call.route));
    let res = async {
        rate::network_policy(inner, &call)?;
        rate::before_authentication(inner, &mut call).await?;
        authenticate::authenticate(inner, &parts, &mut call).await?;
        rate::after_authentication(inner, &mut call).await?;
        if call.ws {
            return websocket::upgrade(inner, parts, call).await;
        }
        call::call(inner, parts, body, call).await
    }
    .await;
    (label, res)
}

/// Stage 1 alone, for answers served outside the pipeline (the web console).
pub(crate) async fn admit_only(inner: &Arc<Inner>, parts: &Parts) -> Result<(), ApiError> {
    admit::admit(inner, parts).await.map(|_| ())
}

/// Stage 1 for the edge's own routes (the OpenAI-compatible API): the client's address and
/// the per-IP budget's verdict.
pub(crate) async fn admit_client(
    inner: &Inner,
    parts: &Parts,
) -> Result<(IpAddr, Option<Verdict>), ApiError> {
    admit::admit(inner, parts).await
}

pub(crate) use call::read_json_body;

pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers.get(X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

pub(crate) fn peer(parts: &Parts) -> SocketAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}
