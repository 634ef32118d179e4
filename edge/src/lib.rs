//! The one door for browsers: REST/JSON in, gRPC to the services out.
//!
//! Routes are not written here: [`routes::RouteTable`] reads every `google.api.http` rule of
//! the contracts, and one handler (the stages of [`pipeline`]) serves them all — match the route, check the
//! access rule (auth's `ValidateToken`, scopes, internal networks), spend the rate budgets,
//! transcode the JSON into the request message, call the service with the validated identity
//! (and the signed assertion) as metadata under a deadline and a circuit breaker, and transcode
//! the answer back (or stream it as SSE / WebSocket). Only the Nginx `auth_request` endpoint,
//! the OpenAPI document and the ops endpoints have handlers of their own.

pub mod authn;
pub mod config;
pub mod conn;
pub mod console;
pub mod errors;
pub mod json;
pub mod limits;
pub mod net;
mod nginx;
pub mod openai;
pub mod openapi;
mod pages;
mod pipeline;
pub mod routes;
pub mod session;
pub mod stream;
mod tls;
pub mod transcode;
pub mod upstream;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, State},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, header};
use ipnet::IpNet;
use prost_reflect::DescriptorPool;
use skillup_kit::{
    Readiness, Shutdown,
    bus::SharedBus,
    cache::SharedCache,
    config::Config,
    i18n::Locale,
    identity::{self, IdentityKey},
};
use tonic::metadata::{MetadataMap, MetadataValue};
use tower::ServiceBuilder;
use tower_http::{
    compression::CompressionLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

pub use crate::config::EdgeConfig;
use crate::{
    authn::{Authenticator, Decision},
    errors::ApiError,
    limits::Limits,
    routes::RouteTable,
    upstream::{CallError, Upstreams},
};

/// The Nginx `auth_request` endpoint.
pub const NGINX_VALIDATE: &str = "/api/auth/internal/jwt/validate";

pub(crate) const X_REQUEST_ID: &str = "x-request-id";

/// The WebSocket subprotocol of the edge's sockets. Browsers, which cannot set headers on a
/// WebSocket, offer it together with `bearer.<access token>`.
pub const WS_PROTOCOL: &str = "skillup.v1";

/// What the edge is built from.
pub struct EdgeParts {
    /// The shared settings.
    pub config: Config,
    /// The edge's own section.
    pub edge: EdgeConfig,
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
    /// The edge's mesh certificate, which its calls to other processes present (without it
    /// they are anonymous, and the services refuse them).
    pub mesh: Option<Arc<skillup_kit::mesh::MeshTls>>,
}

/// Shared state of every request.
pub struct Inner {
    pub cfg: EdgeConfig,
    pub table: RouteTable,
    pub upstreams: Upstreams,
    pub authn: Authenticator,
    pub(crate) limits: Limits,
    pub(crate) internal: Vec<IpNet>,
    pub(crate) trusted: Vec<IpNet>,
    openapi: Bytes,
    /// The web console, when served.
    pub(crate) console: Option<console::Console>,
    /// Where the session cookies are sent.
    pub(crate) cookie_paths: session::CookiePaths,
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
        let cfg = parts.edge.clone();
        let table = RouteTable::from_pool(&parts.descriptors, parts.services.as_deref())?;
        let mut names: Vec<String> = table.routes.iter().map(|r| r.rpc.upstream.clone()).collect();
        names.push("auth".into());
        names.sort();
        names.dedup();
        let default_url = cfg
            .upstream_default
            .clone()
            .unwrap_or_else(|| format!("http://{}", parts.config.grpc_addr));
        // In-process calls are the edge's as its certificate's are across processes.
        let local = parts.local.filter(|_| cfg.in_process).map(|l| l.as_component("edge"));
        let resolve_every = Duration::from_millis(parts.config.grpc.resolve_interval_ms);
        let upstreams =
            Upstreams::new(&cfg, default_url, names, local, parts.mesh.clone(), resolve_every)?;
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
        let limits = Limits::new(&cfg.rate, parts.cache.clone());
        let cookie_paths = session::CookiePaths::of(&table);
        let cfg_console = if cfg.console { console::Console::load() } else { None };
        let inner = Arc::new(Inner {
            internal: net::nets(&cfg.internal_cidrs),
            trusted: net::nets(&cfg.trusted_proxies),
            cfg,
            table,
            upstreams,
            authn,
            limits,
            openapi: Bytes::from(doc.to_string()),
            cookie_paths,
            console: cfg_console,
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
                _ = shutdown.wait() => return}
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
                            ApiError::not_found()
                                .into_response_with(&pipeline::request_id(req.headers()))
                        }
                    }
                },
            ))
        };
        let cors = cors(&inner.cfg.cors_origins);
        let mut app = Router::new()
            .route(NGINX_VALIDATE, get(nginx::nginx_validate))
            .route("/api/openapi.json", get(openapi_json))
            .merge(openai::routes());
        // The pages our emails link to are the console's; without it, the edge's own.
        if inner.console.is_none() {
            app = app.merge(pages::routes());
        }
        let app = app.fallback(front).with_state(inner.clone()).merge(ops);
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
        let app = app.layer(stack);
        if inner.cfg.tls_cert_file.is_some() {
            // Over TLS, browsers are told to come back only that way.
            app.layer(axum::middleware::map_response(|mut res: Response| async move {
                res.headers_mut().insert(
                    header::STRICT_TRANSPORT_SECURITY,
                    HeaderValue::from_static("max-age=63072000; includeSubDomains"),
                );
                res
            }))
        } else {
            app
        }
    }

    /// Whether this edge serves the web console.
    pub fn has_console(&self) -> bool {
        self.inner.console.is_some()
    }

    /// Serves on `listener` (HTTPS when a certificate is configured) until `shutdown`, then
    /// lets in-flight requests finish.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: Shutdown,
    ) -> std::io::Result<()> {
        let tls = match (&self.inner.cfg.tls_cert_file, &self.inner.cfg.tls_key_file) {
            (Some(cert), Some(key)) => Some(tls::tls_acceptor(cert, key)?),
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
        let mut id = match d {
            Some(d) => d.identity(request_id, self.authn.assertion_ttl, &client),
            None => identity::Caller {
                request_id: request_id.to_owned(),
                exp: identity::now_secs() + self.authn.assertion_ttl.as_secs(),
                ip: client,
                ..Default::default()
            },
        };
        // The account's language; for anyone else, the best of their Accept-Language.
        if id.locale.is_empty() {
            id.locale = md
                .get("accept-language")
                .and_then(|v| v.to_str().ok())
                .and_then(Locale::negotiate)
                .unwrap_or_default()
                .tag()
                .to_owned();
        }
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
    pub(crate) fn base_metadata(&self, headers: &HeaderMap, request_id: &str) -> MetadataMap {
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

/// Every request no route of its own took: the web console's reads (paths no contract route
/// claims, outside `/api/`), else the transcoding pipeline (which answers an unknown path as
/// a JSON 404).
async fn front(State(inner): State<Arc<Inner>>, req: Request<Body>) -> Response {
    if let Some(console) = &inner.console
        && console::Console::claims(req.method(), req.uri().path())
        && matches!(inner.table.lookup(req.method(), req.uri().path()), routes::Lookup::NotFound)
    {
        let started = std::time::Instant::now();
        let (parts, _) = req.into_parts();
        // Like every request, before anything is looked up: the header limits and the per-IP
        // budget (a flood of deep links costs what a flood of API calls does).
        let res = match pipeline::admit_only(&inner, &parts).await {
            Ok(()) => console.serve(&parts),
            Err(e) => e.into_response_with(&pipeline::request_id(&parts.headers)),
        };
        routes::RouteMetrics::record_other(
            "console",
            &parts.method,
            res.status(),
            started.elapsed().as_secs_f64(),
        );
        return res;
    }
    pipeline::dispatch(State(inner), req).await
}

async fn openapi_json(State(inner): State<Arc<Inner>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], inner.openapi.clone()).into_response()
}
