//! A whole edge in the test: the real auth service and the testing echo service on one gRPC
//! server (with the identity interceptor), the edge in front on a free port, on the real
//! PostgreSQL, Redis and RabbitMQ (or the embedded adapters).

#![allow(dead_code)]

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::Stream;
use prost_reflect::DescriptorPool;
use serde_json::{Value, json};
use skillup_auth::keys::{KeyStore, SigningKey};
use skillup_edge::{Edge, EdgeParts};
use skillup_kit::{
    Shutdown,
    grpc::GrpcServer,
    identity::{Caller, IdentityKey},
    mailer::OutboxMailer,
};
use skillup_proto::{
    common::v1::{ErrorCode, ErrorDetail},
    testing::v1::{
        self as pb,
        echo_service_server::{EchoService, EchoServiceServer},
    },
};
use skillup_testkit::{self as testing, Kind, TestInfra, TestServer};
use tonic::{Request, Response, Status};

/// Counts what the echo service saw.
#[derive(Default)]
pub struct Seen {
    pub calls: AtomicUsize,
    pub cancelled: AtomicUsize,
    pub finished: AtomicUsize,
    pub last_metadata: Mutex<Vec<String>>,
    /// Every metadata key of the last `Echo` call (`content-type` and `te` only over gRPC).
    pub last_keys: Mutex<Vec<String>>,
}

#[derive(Clone)]
pub struct Echo {
    pub seen: Arc<Seen>,
}

fn echo_of(req: &Request<pb::EchoRequest>) -> pb::EchoResponse {
    let id = Caller::of(req).cloned();
    let mut metadata: Vec<String> = req
        .metadata()
        .iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) if k.as_str().starts_with("x-") => {
                Some(format!("{}={}", k.as_str(), v.to_str().unwrap_or("?")))
            }
            _ => None,
        })
        .collect();
    metadata.sort();
    pb::EchoResponse {
        request: Some(req.get_ref().clone()),
        user_id: id.as_ref().map(|i| i.user_id.clone()).unwrap_or_default(),
        scopes: id.as_ref().map(|i| i.scopes.clone()).unwrap_or_default(),
        tier: id.as_ref().map(|i| i.tier.clone()).unwrap_or_default(),
        email_verified: id.as_ref().is_some_and(|i| i.email_verified),
        locale: skillup_kit::i18n::Locale::of(req).tag().to_owned(),
        request_id: req
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        metadata,
    }
}

/// Marks a call cancelled if it is dropped before it finishes.
struct Guard(Arc<Seen>, bool);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.1 {
            self.0.finished.fetch_add(1, Ordering::SeqCst);
        } else {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

type TickStream = Pin<Box<dyn Stream<Item = Result<pb::Tick, Status>> + Send>>;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(
        &self,
        req: Request<pb::EchoRequest>,
    ) -> Result<Response<pb::EchoResponse>, Status> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        let r = echo_of(&req);
        *self.seen.last_metadata.lock().unwrap() = r.metadata.clone();
        *self.seen.last_keys.lock().unwrap() = req
            .metadata()
            .keys()
            .map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => k.as_str().to_owned(),
                tonic::metadata::KeyRef::Binary(k) => k.as_str().to_owned(),
            })
            .collect();
        Ok(Response::new(r))
    }
    async fn put_book(
        &self,
        req: Request<pb::PutBookRequest>,
    ) -> Result<Response<pb::Book>, Status> {
        Ok(Response::new(req.into_inner().book.unwrap_or_default()))
    }
    async fn public_echo(
        &self,
        req: Request<pb::EchoRequest>,
    ) -> Result<Response<pb::EchoResponse>, Status> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(echo_of(&req)))
    }
    async fn admin_echo(
        &self,
        req: Request<pb::EchoRequest>,
    ) -> Result<Response<pb::EchoResponse>, Status> {
        Ok(Response::new(echo_of(&req)))
    }
    async fn metered_echo(
        &self,
        req: Request<pb::EchoRequest>,
    ) -> Result<Response<pb::EchoResponse>, Status> {
        Ok(Response::new(echo_of(&req)))
    }
    async fn internal_echo(
        &self,
        req: Request<pb::EchoRequest>,
    ) -> Result<Response<pb::EchoResponse>, Status> {
        Ok(Response::new(echo_of(&req)))
    }
    async fn hidden(
        &self,
        req: Request<pb::EchoRequest>,
    ) -> Result<Response<pb::EchoResponse>, Status> {
        Ok(Response::new(echo_of(&req)))
    }
    async fn fail(
        &self,
        req: Request<pb::FailRequest>,
    ) -> Result<Response<pb::EchoResponse>, Status> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        let mut guard = Guard(self.seen.clone(), false);
        let r = req.into_inner();
        if r.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(r.delay_ms))).await;
        }
        guard.1 = true;
        if r.code != 0 {
            let code = tonic::Code::from_i32(r.code);
            if r.error_code != 0 {
                let detail = ErrorDetail {
                    code: r.error_code,
                    message: r.message.clone(),
                    ..Default::default()
                };
                return Err(Status::with_details(
                    code,
                    r.message,
                    prost::Message::encode_to_vec(&detail).into(),
                ));
            }
            return Err(Status::new(code, r.message));
        }
        let mut res = Response::new(pb::EchoResponse::default());
        if r.http_status != 0 {
            res.metadata_mut().insert("x-http-status", r.http_status.to_string().parse().unwrap());
        }
        Ok(res)
    }

    type CountStream = TickStream;

    async fn count(&self, req: Request<pb::CountRequest>) -> Result<Response<TickStream>, Status> {
        let r = req.into_inner();
        let seen = self.seen.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut guard = Guard(seen, false);
            for n in 1..=r.count {
                if r.fail_after > 0 && n > r.fail_after {
                    let detail = ErrorDetail {
                        code: ErrorCode::ProviderError as i32,
                        message: "the provider went away".into(),
                        ..Default::default()
                    };
                    let status = Status::with_details(
                        tonic::Code::from_i32(r.fail_code),
                        "the provider went away",
                        prost::Message::encode_to_vec(&detail).into(),
                    );
                    let _ = tx.send(Err(status)).await;
                    guard.1 = true;
                    return;
                }
                if tx.send(Ok(pb::Tick { n })).await.is_err() {
                    return; // the caller went away
                }
                tokio::time::sleep(Duration::from_millis(u64::from(r.interval_ms))).await;
            }
            guard.1 = true;
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

pub const PASSWORD: &str = "correct horse battery";

/// One running stack.
pub struct Stack {
    pub base: String,
    pub http: reqwest::Client,
    pub t: Arc<TestInfra>,
    pub grpc_addr: std::net::SocketAddr,
    pub seen: Arc<Seen>,
    pub key: Arc<IdentityKey>,
    pub outbox: OutboxMailer,
    pub config: Config,
    pub shutdown: Shutdown,
    _server: Arc<TestServer>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub fn testing_pool() -> DescriptorPool {
    DescriptorPool::decode(skillup_proto::TESTING_FILE_DESCRIPTOR_SET).unwrap()
}

/// What a test stack runs with: the shared settings and the sections of auth and the edge.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub shared: skillup_kit::Config,
    pub auth: skillup_auth::AuthConfig,
    pub edge: skillup_edge::EdgeConfig,
}

/// Test defaults: generous budgets (tests of limits set their own), quick breaker.
pub fn base_config() -> Config {
    let mut c = Config::default();
    c.auth.bcrypt_cost = 4;
    c.edge.rate.ip_per_sec = 0;
    c.edge.rate.auth_per_min = 0;
    c.edge.rate.generate_per_min.clear();
    c.edge.breaker.open_ms = 300;
    c.edge.sse_keepalive_ms = 200;
    c
}

pub async fn stack(kind: Kind, tweak: impl FnOnce(&mut Config)) -> Stack {
    let t = kind.infra().await;
    let mut config = base_config();
    tweak(&mut config);
    let key = Arc::new(IdentityKey::random());
    let shutdown = Shutdown::new();
    let keys_dir = std::env::temp_dir().join(format!("skillup-edge-keys-{}", testing::unique()));
    KeyStore::new(&keys_dir)
        .store(&SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap(), true)
        .unwrap();
    let outbox = OutboxMailer::new(
        std::env::temp_dir().join(format!("skillup-edge-outbox-{}", testing::unique())),
        "test@skillup",
    );
    let auth = skillup_auth::build(
        config.auth.clone(),
        keys_dir,
        &t.infra,
        Arc::new(outbox.clone()),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let seen = Arc::new(Seen::default());
    let server = TestServer::start(
        GrpcServer::builder()
            .add_service(auth.into_server())
            .add_service(EchoServiceServer::new(Echo { seen: seen.clone() }))
            .identity_key(key.clone()),
    )
    .await;
    if config.edge.upstream_default.is_none() {
        config.edge.upstream_default = Some(format!("http://{}", server.addr));
    }
    let t = Arc::new(t);
    let mut s = Stack {
        base: String::new(),
        http: reqwest::Client::new(),
        t,
        grpc_addr: server.addr,
        seen,
        key,
        outbox,
        config,
        shutdown,
        _server: Arc::new(server),
    };
    s.base = s.start_edge(s.config.clone()).await;
    s
}

impl Stack {
    /// Starts one more edge instance on the same infrastructure; returns its base URL.
    pub async fn start_edge(&self, config: Config) -> String {
        self.start_edge_handle(config).await.0
    }

    /// Like [`Stack::start_edge`], with the edge itself for looking inside.
    pub async fn start_edge_handle(&self, config: Config) -> (String, Edge) {
        self.start_edge_with(config, None).await
    }

    /// An edge that calls `local` in-process for every upstream without an address of its own
    /// (as under `skillup up`).
    pub async fn start_edge_with(
        &self,
        config: Config,
        local: Option<skillup_kit::grpc::LocalChannel>,
    ) -> (String, Edge) {
        let edge = Edge::build(
            EdgeParts {
                config: config.shared.clone(),
                edge: config.edge.clone(),
                descriptors: testing_pool(),
                cache: self.t.infra.cache.clone(),
                bus: self.t.infra.bus.clone(),
                identity_key: self.key.clone(),
                readiness: self.t.infra.readiness.clone(),
                services: None,
                local,
                mesh: Some(testing::mesh_tls("edge")),
            },
            self.shutdown.clone(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(edge.clone().serve(listener, self.shutdown.clone()));
        let scheme = if config.edge.tls_cert_file.is_some() { "https" } else { "http" };
        (format!("{scheme}://localhost:{}", addr.port()), edge)
    }

    /// A gRPC server of one more echo service (same key, same `seen`), bound but not running;
    /// its unary methods can be called directly in-process (`skillup up`'s registration).
    pub async fn echo_server(&self) -> GrpcServer {
        testing::with_mesh(GrpcServer::builder())
            .add_local_service(pb::echo_service_local::serve(Echo { seen: self.seen.clone() }))
            .identity_key(self.key.clone())
            .readiness(skillup_kit::Readiness::new(), Duration::from_millis(50))
            .shutdown_timings(Duration::ZERO, Duration::from_secs(5))
            .bind(([127, 0, 0, 1], 0).into())
            .await
            .expect("bind the echo service")
    }

    /// Serves one more echo service at `addr` (as a replica coming back at its old address)
    /// until the returned handle is triggered.
    pub async fn serve_echo_at(&self, addr: std::net::SocketAddr) -> Shutdown {
        let server = testing::with_mesh(GrpcServer::builder())
            .add_service(EchoServiceServer::new(Echo { seen: self.seen.clone() }))
            .identity_key(self.key.clone())
            .shutdown_timings(Duration::ZERO, Duration::from_secs(5))
            .bind(addr)
            .await
            .expect("bind the echo service");
        let stop = Shutdown::new();
        tokio::spawn(server.run(stop.clone()));
        stop
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Registers an account through the edge; returns (access, refresh, user id).
    pub async fn register(&self) -> (String, String, String) {
        let email = format!("edge-{}@example.com", testing::unique());
        let res = self
            .http
            .post(self.url("/api/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "register");
        // Registration answers no tokens: sign in.
        let res = self
            .http
            .post(self.url("/api/auth/login"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "login");
        let v: Value = res.json().await.unwrap();
        (
            v["access_token"].as_str().unwrap().to_owned(),
            v["refresh_token"].as_str().unwrap().to_owned(),
            v["user"]["id"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn get(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
    }
}

/// The error body's code.
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}
