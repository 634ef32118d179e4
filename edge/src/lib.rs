//! The one door for browsers: REST/JSON in, gRPC to the services out.
//!
//! Routes are not written here: [`routes::RouteTable`] reads every `google.api.http` rule of
//! the contracts, and one handler ([`dispatch`]) serves them all — match the route, check the
//! access rule (auth's `ValidateToken`, scopes, internal networks), spend the rate budgets,
//! transcode the JSON into the request message, call the service with the validated identity
//! (and the signed assertion) as metadata under a deadline and a circuit breaker, and transcode
//! the answer back (or stream it as SSE / WebSocket). Only the Nginx `auth_request` endpoint,
//! the OpenAPI document and the ops endpoints have handlers of their own.

pub mod authn;
pub mod conn;
pub mod errors;
pub mod json;
pub mod limits;
pub mod net;
pub mod openapi;
pub mod routes;
pub mod stream;
pub mod transcode;
pub mod upstream;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, FromRequestParts, State, ws::WebSocketUpgrade},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header, request::Parts};
use ipnet::IpNet;
use prost_reflect::DescriptorPool;
use skillup_kit::{
    Readiness, Shutdown,
    bus::SharedBus,
    cache::SharedCache,
    config::{Config, EdgeConfig},
    identity::{self, IdentityKey},
};
use skillup_proto::common::v1::RateClass;
use tonic::metadata::{MetadataMap, MetadataValue};
use tower::ServiceBuilder;
use tower_http::{
    compression::CompressionLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{
    authn::{Authenticator, Decision},
    errors::ApiError,
    limits::{Limits, Verdict},
    routes::{Lookup, Route, RouteTable},
    stream::{WsAuth, WsCall},
    upstream::{CallError, Upstreams},
};

/// The Nginx `auth_request` endpoint.
pub const NGINX_VALIDATE: &str = "/api/auth/internal/jwt/validate";

const X_REQUEST_ID: &str = "x-request-id";

/// The WebSocket subprotocol of the edge's sockets. Browsers, which cannot set headers on a
/// WebSocket, offer it together with `bearer.<access token>`.
pub const WS_PROTOCOL: &str = "skillup.v1";

/// What the edge is built from.
pub struct EdgeParts {
    pub config: Config,
    /// The contracts (normally `skillup_proto::FILE_DESCRIPTOR_SET`).
    pub descriptors: DescriptorPool,
    pub cache: SharedCache,
    pub bus: SharedBus,
    pub identity_key: Arc<IdentityKey>,
    /// Readiness of this process's own infrastructure (cache, bus); upstream health is added.
    pub readiness: Readiness,
    /// Route only these services (full names); `None` = every service in `descriptors`.
    pub services: Option<Vec<String>>,
    /// The services of this very process (`skillup up`), called in-process by every upstream
    /// without an address of its own in `edge.upstreams`, unless `edge.in_process` is off.
    pub local: Option<skillup_kit::grpc::LocalChannel>,
}

/// Shared state of every request.
pub struct Inner {
    pub cfg: EdgeConfig,
    pub table: RouteTable,
    pub upstreams: Upstreams,
    pub authn: Authenticator,
    limits: Limits,
    internal: Vec<IpNet>,
    trusted: Vec<IpNet>,
    openapi: Bytes,
    readiness: Readiness,
    /// After SIGTERM: how long /readyz reads 503 while connections are still accepted, then
    /// how long in-flight requests may take.
    drain: Duration,
    grace: Duration,
}

/// A built edge.
#[derive(Clone)]
pub struct Edge {
    inner: Arc<Inner>,
}

impl Edge {
    /// Reads the routes, prepares upstream channels (connected on first use), and starts the
    /// revocation listener and the rate-limit janitor; both stop with `shutdown`.
    pub fn build(parts: EdgeParts, shutdown: Shutdown) -> Result<Self, String> {
        let cfg = parts.config.edge.clone();
        let table = RouteTable::from_pool(&parts.descriptors, parts.services.as_deref())?;
        let mut names: Vec<String> = table.routes.iter().map(|r| r.rpc.upstream.clone()).collect();
        names.push("auth".into());
        names.sort();
        names.dedup();
        let default_url = cfg
            .upstream_default
            .clone()
            .unwrap_or_else(|| format!("http://{}", parts.config.grpc_addr));
        let local = parts.local.filter(|_| cfg.in_process);
        let upstreams = Upstreams::new(&cfg, default_url, names, local)?;
        let auth = upstreams.get("auth").expect("auth upstream is always configured");
        let authn = Authenticator::new(
            auth,
            parts.cache.clone(),
            parts.identity_key,
            Duration::from_millis(cfg.decision_cache_ms),
            cfg.decision_cache_max as usize,
            Duration::from_secs(parts.config.identity.ttl_secs),
        );
        let doc = openapi::document(&table, "SkillUp API", env!("CARGO_PKG_VERSION"));
        // Draining (after SIGTERM) reads as not ready, so load balancers stop sending first.
        let stopping = shutdown.clone();
        let mut readiness = parts.readiness.clone().with("accepting", move || {
            let draining = stopping.is_triggered();
            async move { if draining { Err("draining".to_owned()) } else { Ok(()) } }
        });
        for up in upstreams.all() {
            let up = up.clone();
            readiness = readiness.with(format!("upstream:{}", up.name), move || {
                let channel = up.channel();
                async move {
                    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
                    let res = client
                        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                        .await
                        .map_err(|e| format!("{:?}", e.code()))?;
                    match res.into_inner().status() {
                        tonic_health::pb::health_check_response::ServingStatus::Serving => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                }
            });
        }
        let limits = Limits::new(&cfg.rate);
        let inner = Arc::new(Inner {
            internal: net::nets(&cfg.internal_cidrs),
            trusted: net::nets(&cfg.trusted_proxies),
            cfg,
            table,
            upstreams,
            authn,
            limits,
            openapi: Bytes::from(doc.to_string()),
            readiness,
            drain: Duration::from_millis(parts.config.shutdown.drain_ms),
            grace: Duration::from_millis(parts.config.shutdown.grace_ms),
        });
        inner.authn.spawn_listener(parts.bus, shutdown.clone());
        let janitor = inner.limits.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => janitor.forget_idle(),
                    _ = shutdown.wait() => return,
                }
            }
        });
        Ok(Self { inner })
    }

    pub fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// The whole HTTP surface: transcoded routes, Nginx endpoint, OpenAPI, ops endpoints.
    pub fn router(&self) -> Router {
        let inner = self.inner.clone();
        // Operations endpoints: on their own listener when `edge.ops_addr` is set (the public
        // one keeps only liveness); else here, but `/readyz` and `/metrics` only for peers in
        // `edge.internal_cidrs` — to anyone else they do not exist.
        let ops = if inner.cfg.ops_addr.is_some() {
            Router::new().route("/healthz", get(|| async { "ok" }))
        } else {
            let internal = inner.internal.clone();
            skillup_kit::ops::router(inner.readiness.clone()).layer(axum::middleware::from_fn(
                move |req: Request<Body>, next: axum::middleware::Next| {
                    let internal = internal.clone();
                    async move {
                        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
                        let inside = req.uri().path() == "/healthz"
                            || peer.is_some_and(|p| net::contains(&internal, p.ip()));
                        if inside {
                            next.run(req).await
                        } else {
                            ApiError::not_found().into_response_with(&request_id(req.headers()))
                        }
                    }
                },
            ))
        };
        let cors = cors(&inner.cfg.cors_origins);
        let app = Router::new()
            .route(NGINX_VALIDATE, get(nginx_validate))
            .route("/api/openapi.json", get(openapi_json))
            .fallback(dispatch)
            .with_state(inner)
            .merge(ops);
        // Layers, outermost first:
        let stack = ServiceBuilder::new()
            // request id: accept the caller's X-Request-Id or mint one, before anything logs;
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            // trace: one span per request, carrying the request id;
            .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                let rid = req.headers().get(X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %rid, trace_id = tracing::field::Empty);
                // Continue the client's trace when it sent a `traceparent`, else start one.
                skillup_kit::telemetry::adopt(&span, req.headers());
                span
            }))
            // propagate: the same id on the answer;
            .layer(PropagateRequestIdLayer::x_request_id())
            // CORS: preflights answered before any auth or limit;
            .option_layer(cors)
            // gzip: compresses JSON answers (never SSE streams) for clients that ask.
            .layer(CompressionLayer::new());
        app.layer(stack)
    }

    /// Serves on `listener` (HTTPS when a certificate is configured) until `shutdown`, then
    /// lets in-flight requests finish.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: Shutdown,
    ) -> std::io::Result<()> {
        let tls = match (&self.inner.cfg.tls_cert_file, &self.inner.cfg.tls_key_file) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        if let Some(addr) = self.inner.cfg.ops_addr {
            let ops = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(ops = %ops.local_addr()?, "edge operations endpoints");
            let router = skillup_kit::ops::router(self.inner.readiness.clone());
            let stop = shutdown.clone();
            tokio::spawn(async move {
                if let Err(e) = skillup_kit::ops::serve(ops, router, stop).await {
                    tracing::error!(error = %e, "the operations listener stopped");
                }
            });
        }
        let settings = conn::ConnSettings::new(&self.inner.cfg, self.inner.drain, self.inner.grace);
        conn::serve(listener, self.router(), tls, settings, shutdown).await
    }
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse::<HeaderValue>().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::HeaderName::from_static("idempotency-key"),
                header::HeaderName::from_static(X_REQUEST_ID),
            ])
            .expose_headers([
                header::HeaderName::from_static(X_REQUEST_ID),
                header::RETRY_AFTER,
                header::HeaderName::from_static("ratelimit-limit"),
                header::HeaderName::from_static("ratelimit-remaining"),
                header::HeaderName::from_static("ratelimit-reset"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

fn request_id(headers: &HeaderMap) -> String {
    headers.get(X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn peer(parts: &Parts) -> SocketAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
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

impl Inner {
    /// Puts the validated identity on an upstream call: its signed assertion, from whose claims
    /// the service's identity layer sets `x-user-id`, `x-scopes`, `x-subscription-tier` and
    /// `x-email-verified` (it drops any such header that came without one).
    ///
    /// Without a caller (a public route) the assertion is anonymous: it vouches only for the
    /// client's address, which services take from assertions alone (a header could be set by
    /// anyone calling them directly).
    pub fn put_identity(
        &self,
        md: &mut MetadataMap,
        d: Option<&Decision>,
        request_id: &str,
        client: IpAddr,
    ) {
        let client = client.to_string();
        let id = match d {
            Some(d) => d.identity(request_id, self.authn.assertion_ttl, &client),
            None => identity::Identity {
                request_id: request_id.to_owned(),
                exp: identity::now_secs() + self.authn.assertion_ttl.as_secs(),
                ip: client,
                ..Default::default()
            },
        };
        if let Ok(v) = MetadataValue::try_from(self.authn.key.sign(&id)) {
            md.insert(identity::ASSERTION, v);
        }
    }

    /// Maps a failed call.
    pub fn call_error(&self, e: CallError) -> ApiError {
        match e {
            CallError::Open(wait) => ApiError::unavailable(
                "the service is failing; the edge is giving it a moment",
                Some(wait.as_secs().max(1)),
            ),
            CallError::Status(s) => ApiError::from_status(&s),
        }
    }

    /// The metadata every upstream call carries: request id, user agent, and the few headers
    /// services read (the client's address goes in the signed assertion instead). The bearer token stays here: services get the validated
    /// identity (and its assertion) instead.
    fn base_metadata(&self, headers: &HeaderMap, request_id: &str) -> MetadataMap {
        let mut md = MetadataMap::new();
        let mut put = |k: &'static str, v: &str| {
            if let Ok(v) = MetadataValue::try_from(v) {
                md.insert(k, v);
            }
        };
        put(X_REQUEST_ID, request_id);
        for (from, to) in [
            (header::USER_AGENT.as_str(), "x-user-agent"),
            ("idempotency-key", "idempotency-key"),
            (header::ACCEPT_LANGUAGE.as_str(), "accept-language"),
        ] {
            if let Some(v) = headers.get(from).and_then(|v| v.to_str().ok()) {
                put(to, v);
            }
        }
        // The trace goes on: the service's span is a child of this request's.
        skillup_kit::telemetry::inject_metadata(&mut md);
        md
    }
}

/// Every transcoded route.
async fn dispatch(State(inner): State<Arc<Inner>>, req: Request<Body>) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let rid = request_id(&parts.headers);
    let method = parts.method.clone();
    let (route, result) = handle(&inner, parts, body, &rid).await;
    let res = match result {
        Ok(r) => r,
        Err(e) => e.into_response_with(&rid),
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

async fn handle(inner: &Arc<Inner>, mut parts: Parts, body: Body, rid: &str) -> Handled {
    let header_bytes: usize =
        parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > inner.cfg.max_header_bytes {
        return (
            None,
            Err(ApiError::new(431, "PAYLOAD_TOO_LARGE", "the request headers are too large")),
        );
    }
    let client = net::client_ip(peer(&parts), &parts.headers, &inner.trusted);
    // Every request spends the per-IP budget before anything else is looked at: unknown paths
    // and methods too, so they cannot be sent faster than real ones.
    let mut verdict: Option<Verdict> = match inner.limits.check_ip(client) {
        Ok(v) => v,
        Err(e) => return (None, Err(e)),
    };
    let path = parts.uri.path().to_owned();
    let candidates = match inner.table.lookup(&parts.method, &path) {
        Lookup::Found(c) => c,
        Lookup::MethodNotAllowed(allowed) => {
            let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            let e = ApiError::new(405, "METHOD_NOT_ALLOWED", format!("use {}", allow.join(", ")))
                .header(header::ALLOW, &allow.join(", "));
            return (None, Err(e));
        }
        Lookup::NotFound => return (None, Err(ApiError::not_found())),
    };
    let is_ws = parts
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
    let streaming = is_ws || wants_sse;
    let chosen = candidates
        .iter()
        .find(|(r, _)| r.rpc.server_streaming == streaming)
        .or_else(|| candidates.first())
        .expect("lookup found at least one");
    let (route, vars) = (chosen.0, chosen.1.clone());
    let label = Some(Arc::clone(route));
    let rule = &route.rpc.rule;
    if rule.internal && !net::contains(&inner.internal, client) {
        return (label, Err(ApiError::new(403, "PERMISSION_DENIED", "this route is internal")));
    }

    // The sign-in family spends a budget of its own as well.
    if rule.rate_class == RateClass::Auth {
        match inner.limits.check_auth(client) {
            Ok(v) => verdict = v.map(|v| v.tighter(verdict)).or(verdict),
            Err(e) => return (label, Err(e)),
        }
    }

    // Who is calling.
    let header_token = bearer(&parts.headers).map(str::to_owned);
    let ws_token = if is_ws { ws_protocol_token(&parts.headers) } else { None };
    // One credential per request: a socket is its token's, and re-checked by that very token.
    if header_token.is_some() && ws_token.is_some() {
        return (
            label,
            Err(ApiError::invalid(
                "send one credential: either Authorization or the bearer.<token> subprotocol",
            )),
        );
    }
    let offered_protocol = ws_token.as_ref().map(|t| format!("bearer.{t}"));
    let token = header_token.or(ws_token);
    let mut decision: Option<Decision> = None;
    if !rule.public {
        match token.as_deref() {
            Some(t) => match inner.authn.authenticate(t, &rule.scopes).await {
                Ok(d) => decision = Some(d),
                Err(e) => return (label, Err(e)),
            },
            None if is_ws => {}
            None => {
                return (
                    label,
                    Err(ApiError::unauthenticated(
                        "UNAUTHENTICATED",
                        "sign in first: send Authorization: Bearer <access token>",
                    )),
                );
            }
        }
    }
    // Only a caller who may call it learns how (401 before 406).
    if route.rpc.server_streaming && !streaming {
        return (
            label,
            Err(ApiError::new(
                406,
                "NOT_ACCEPTABLE",
                "this route streams: send Accept: text/event-stream, or open a WebSocket",
            )),
        );
    }
    if rule.rate_class == RateClass::Generate {
        let res = match &decision {
            Some(d) => inner.limits.check_generate(&d.tier, &d.user_id),
            None => inner.limits.check_generate("free", &client.to_string()),
        };
        match res {
            Ok(v) => verdict = v.map(|v| v.tighter(verdict)).or(verdict),
            Err(e) => return (label, Err(e)),
        }
    }

    let md = inner.base_metadata(&parts.headers, rid);
    let route_arc = Arc::clone(route);

    if is_ws {
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(u) => u,
            Err(rej) => return (label, Err(ApiError::invalid(format!("websocket: {rej}")))),
        };
        let auth = match (decision, token) {
            (Some(d), Some(t)) => WsAuth::Ready(d, t),
            _ if rule.public => WsAuth::Public,
            _ => WsAuth::FirstMessage,
        };
        let call = WsCall {
            route: route_arc,
            vars,
            query: parts.uri.query().map(str::to_owned),
            request_id: rid.to_owned(),
            metadata: md,
            client,
        };
        let inner = inner.clone();
        // Small buffers: most sockets idle (notifications), and tungstenite's 128 KiB read
        // buffer per socket would make ten thousand of them cost over a gigabyte. Clients send
        // only a token and pongs (the buffer grows for anything larger); writes go out at once
        // (the bridge flushes each message anyway).
        // The answer names a protocol the client offered (browsers fail a handshake that
        // answers none): `skillup.v1` when offered — the console offers it with its token —
        // else the `bearer.<token>` protocol itself.
        let offers_ours = parts
            .headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == WS_PROTOCOL);
        let protocols: Vec<String> = match offered_protocol {
            Some(p) if !offers_ours => vec![p],
            _ => vec![WS_PROTOCOL.to_owned()],
        };
        let res = upgrade
            .protocols(protocols)
            .read_buffer_size(1024)
            .write_buffer_size(0)
            .max_message_size(64 * 1024)
            .on_upgrade(move |socket| stream::ws_bridge(socket, inner, auth, call));
        return (label, Ok(res));
    }

    // The request message.
    let body_bytes = match read_body(inner, &parts, body, route).await {
        Ok(b) => b,
        Err(e) => return (label, Err(e)),
    };
    let msg = match transcode::request_message(route, &vars, parts.uri.query(), &body_bytes) {
        Ok(m) => m,
        Err(e) => return (label, Err(e)),
    };
    let mut md = md;
    inner.put_identity(&mut md, decision.as_ref(), rid, client);
    let Some(upstream) = inner.upstreams.get(&route.rpc.upstream) else {
        return (label, Err(ApiError::new(502, "UNAVAILABLE", "no upstream for this route")));
    };
    let timeout = match rule.timeout_ms {
        0 if route.rpc.server_streaming => Duration::from_secs(24 * 3600),
        0 => Duration::from_millis(inner.cfg.timeout_ms),
        ms => Duration::from_millis(u64::from(ms)),
    };

    // Safe to repeat after UNAVAILABLE: reads, and writes the client made idempotent.
    let idempotent = matches!(parts.method, Method::GET | Method::HEAD)
        || parts.headers.contains_key("idempotency-key");
    if route.rpc.server_streaming {
        let opened = upstream
            .server_streaming(
                &route.rpc.grpc_path,
                transcode::encode(&msg),
                md,
                timeout,
                idempotent,
            )
            .await;
        return match opened {
            Ok(r) => {
                let keep = Duration::from_millis(inner.cfg.sse_keepalive_ms.max(100));
                let mut res = stream::sse(r.into_inner(), route, keep, rid.to_owned());
                if let Some(v) = verdict {
                    v.write(res.headers_mut());
                }
                (label, Ok(res))
            }
            Err(e) => (label, Err(inner.call_error(e))),
        };
    }

    let answer = upstream
        .unary(&route.rpc.grpc_path, transcode::encode(&msg), md, timeout, idempotent)
        .await;
    let res = match answer {
        Ok(r) => {
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
                match transcode::response_json(
                    &route.rpc.output,
                    r.get_ref(),
                    route.response_body.as_deref(),
                ) {
                    Ok(json) => {
                        let mut res = Response::new(Body::from(json));
                        *res.status_mut() = status;
                        res.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        res
                    }
                    Err(e) => return (label, Err(e)),
                }
            };
            if let Some(v) = verdict {
                v.write(res.headers_mut());
            }
            Ok(res)
        }
        Err(e) => {
            let mut e = inner.call_error(e);
            if let Some(v) = verdict
                && e.status != StatusCode::TOO_MANY_REQUESTS
            {
                v.write(&mut e.headers);
            }
            Err(e)
        }
    };
    (label, res)
}

async fn read_body(
    inner: &Inner,
    parts: &Parts,
    body: Body,
    route: &Route,
) -> Result<Bytes, ApiError> {
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
        ApiError::invalid("the body could not be read")
    })?;
    if route.body != routes::BodyRule::None && !bytes.iter().all(u8::is_ascii_whitespace) {
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

/// `GET /api/auth/internal/jwt/validate` for Nginx `auth_request`: 204 with the identity
/// headers, or 401 / 403. Only from `edge.internal_cidrs`.
async fn nginx_validate(State(inner): State<Arc<Inner>>, req: Request<Body>) -> Response {
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
            put("x-user-id", &d.user_id);
            put("x-scopes", &d.scopes.join(" "));
            put("x-subscription-tier", &d.tier);
            put("x-email-verified", if d.email_verified { "true" } else { "false" });
            res
        }
        Err(e) => e.into_response_with(&rid),
    }
}

async fn openapi_json(State(inner): State<Arc<Inner>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], inner.openapi.clone()).into_response()
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {e}"))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("edge.tls_cert_file", &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("edge.tls_cert_file", &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("edge.tls_key_file", &e))?;
    skillup_kit::install_crypto_provider();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("edge TLS", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
