//! SkillUp's test support (a dev-dependency only: the production binary carries neither these
//! helpers nor the test signing key). Every test gets its own PostgreSQL database (or SQLite file), Redis key
//! prefix and RabbitMQ exchange + queue prefix, so tests run in parallel against the one real
//! server of each kind. A missing server is a failure that names the variable to set — never a
//! silent skip.

pub mod providers;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use sea_orm::{ConnectionTrait, DatabaseConnection};

use skillup_kit::{
    Readiness, Shutdown,
    bus::{AmqpBus, MemoryBus, SharedBus},
    cache::{MemoryCache, RedisCache, SharedCache},
    db,
    grpc::GrpcServerBuilder,
    infra::Infra,
};

/// One 4096-bit RSA key shared by every test (generating one per test is far too slow).
pub const TEST_RSA_PRIVATE_PEM: &str = include_str!("../testdata/test-rsa-4096.pem");

/// The server URLs tests use: the environment, or this machine's defaults.
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A loopback port free now, for a server (a child process, a replica) to bind later. Chosen below the kernel's ephemeral
/// range (32768–60999 by default): a port the kernel hands out (`bind(0)`) is also what it hands
/// to outgoing connections, so one of those could take it before the child binds.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    // Never the same port twice in one test process: a port is only checked free here, and
    // bound later by the process it is handed to — a Mesh takes sixteen at once, and two of
    // them alike (about one Mesh in a hundred) left one component answering on another's
    // address (the e2e takeout test once registered against auth's ops port: 404).
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if GIVEN.lock().unwrap().contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            GIVEN.lock().unwrap().insert(port);
            return port;
        }
    }
}

/// A short unique name part.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A database of this test's own; PostgreSQL ones are dropped when this is dropped.
pub struct TestDb {
    pub url: String,
    pub conn: DatabaseConnection,
    cleanup: Option<(String, String)>,
}

impl TestDb {
    /// A fresh PostgreSQL database on the server at `DATABASE_URL`.
    pub async fn postgres() -> Self {
        skillup_kit::install_crypto_provider();
        let admin_url = postgres_url();
        let admin = db::connect(&admin_url, 1).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is required for this test: set DATABASE_URL (tried {admin_url}): {e}"
            )
        });
        let name = format!("skillup_test_{}", unique());
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let url = replace_db_name(&admin_url, &name);
        let conn = db::connect(&url, 5).await.expect("connect to the test database");
        Self { url, conn, cleanup: Some((admin_url, name)) }
    }

    /// A fresh SQLite file in the temp directory.
    pub async fn sqlite() -> Self {
        let path = std::env::temp_dir().join(format!("skillup-test-{}.db", unique()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let conn = db::connect(&url, 4).await.expect("open SQLite");
        Self { url, conn, cleanup: None }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.cleanup.take() {
            // Drop runs outside async: a short-lived thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(admin) = db::connect(&admin_url, 1).await {
                            let _ = admin
                                .execute_unprepared(&format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                ))
                                .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A Redis cache whose keys live under a prefix of this test's own.
pub async fn redis_cache() -> RedisCache {
    skillup_kit::install_crypto_provider();
    let url = redis_url();
    RedisCache::connect(&url, format!("test:{}:", unique())).await.unwrap_or_else(|e| {
        panic!("Redis is required for this test: set REDIS_URL (tried {url}): {e}")
    })
}

/// A RabbitMQ bus with an exchange and queue prefix of this test's own.
pub async fn amqp_bus() -> AmqpBus {
    skillup_kit::install_crypto_provider();
    let url = amqp_url();
    let id = unique();
    AmqpBus::connect(
        &url,
        format!("test.{id}.events"),
        format!("test.{id}."),
        Duration::from_secs(20),
    )
    .await
    .unwrap_or_else(|e| {
        panic!("RabbitMQ is required for this test: set AMQP_URL (tried {url}): {e}")
    })
    // Every test's queues have names of their own: the broker deletes them once idle.
    .expire_idle_queues(Duration::from_secs(600))
}

/// Infrastructure of a test's own: a fresh PostgreSQL database, a Redis prefix and a RabbitMQ
/// exchange + queue prefix ([`TestInfra::real`]), or SQLite + the in-process adapters
/// ([`TestInfra::embedded`]). Hand `infra` to the service under test.
pub struct TestInfra {
    pub infra: Infra,
    /// Keeps the test database alive (dropped with it).
    pub db: TestDb,
}

impl TestInfra {
    pub async fn real() -> Self {
        let db = TestDb::postgres().await;
        let cache: SharedCache = std::sync::Arc::new(redis_cache().await);
        let bus: SharedBus = std::sync::Arc::new(amqp_bus().await);
        Self::assemble(db, cache, bus, ("PostgreSQL", "Redis", "RabbitMQ"))
    }

    pub async fn embedded() -> Self {
        let db = TestDb::sqlite().await;
        let cache: SharedCache = std::sync::Arc::new(MemoryCache::new());
        let bus: SharedBus = std::sync::Arc::new(MemoryBus::new());
        Self::assemble(db, cache, bus, ("SQLite", "in-process", "in-process"))
    }

    fn assemble(
        db: TestDb,
        cache: SharedCache,
        bus: SharedBus,
        kinds: (&'static str, &'static str, &'static str),
    ) -> Self {
        let readiness = Readiness::new()
            .merge(&db::probe(db.conn.clone()))
            .merge(&skillup_kit::cache::probe(cache.clone()))
            .merge(&skillup_kit::bus::probe(bus.clone()));
        let infra = Infra {
            db: db.conn.clone(),
            cache,
            bus,
            readiness,
            database_kind: kinds.0,
            cache_kind: kinds.1,
            bus_kind: kinds.2,
        };
        Self { infra, db }
    }
}

/// Per-caller results of a load run: (successes, failures, latencies in µs).
pub type CallerTally = (u64, u64, Vec<u32>);

/// Sums the callers' tallies and renders the one JSON line the load generators print:
/// `{"scenario","ok","errors","per_second","p50_ms","p99_ms"}`.
pub async fn load_report(
    scenario: &str,
    callers: Vec<tokio::task::JoinHandle<CallerTally>>,
    start: std::time::Instant,
) -> String {
    let (mut ok, mut errors, mut micros) = (0u64, 0u64, Vec::new());
    for c in callers {
        let (o, e, m) = c.await.expect("a load caller panicked");
        ok += o;
        errors += e;
        micros.extend(m);
    }
    let secs = start.elapsed().as_secs_f64();
    micros.sort_unstable();
    let pct = |p: f64| {
        let i = ((micros.len().max(1) - 1) as f64 * p) as usize;
        f64::from(micros.get(i).copied().unwrap_or(0)) / 1000.0
    };
    format!(
        "{{\"scenario\":\"{scenario}\",\"ok\":{ok},\"errors\":{errors},\"per_second\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
        ok as f64 / secs,
        pct(0.5),
        pct(0.99)
    )
}

/// Which adapters a behaviour test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// PostgreSQL, Redis and RabbitMQ.
    Real,
    /// SQLite and the in-process cache and bus.
    Embedded,
}

impl Kind {
    pub async fn infra(self) -> TestInfra {
        match self {
            Kind::Real => TestInfra::real().await,
            Kind::Embedded => TestInfra::embedded().await,
        }
    }
}

/// Declares each listed `async fn case(kind: Kind)` as two tests: `real_servers::case` and
/// `embedded::case`, so one behaviour suite runs on both adapters.
#[macro_export]
macro_rules! both_adapters {
    ($($case:ident),* $(,)?) => {
        mod real_servers {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case($crate::Kind::Real).await })*
        }
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case($crate::Kind::Embedded).await })*
        }
    };
}

/// This test process's mesh: a CA, every component's certificate and an operator's
/// (`operator/tester`), made once in a directory of its own.
pub fn mesh_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        use skillup_kit::mesh::{Peer, issue};
        let dir = std::env::temp_dir().join(format!("skillup-test-mesh-{}", unique()));
        issue::init(&dir, &[], false).expect("a test mesh");
        issue::MeshCa::load(&dir)
            .and_then(|ca| ca.issue(&Peer::operator(TEST_OPERATOR), &[], issue::OPERATOR_VALIDITY))
            .and_then(|issued| issued.write(&dir, TEST_OPERATOR))
            .expect("a test operator certificate");
        dir
    })
}

/// The name of the test mesh's operator.
pub const TEST_OPERATOR: &str = "tester";

/// `component`'s mesh certificate in the test mesh ([`mesh_dir`]); `operator` is the test
/// operator's.
pub fn mesh_tls(component: &str) -> Arc<skillup_kit::mesh::MeshTls> {
    let file = if component == skillup_kit::mesh::OPERATOR { TEST_OPERATOR } else { component };
    skillup_kit::install_crypto_provider();
    skillup_kit::mesh::MeshTls::load(skillup_kit::mesh::MeshFiles::in_dir(mesh_dir(), file))
        .expect("a test mesh certificate")
}

/// `builder` with the test mesh's certificate of the component it serves (by its first
/// `skillup.<component>.v1` service; the edge's for anything else), as its own process would.
pub fn with_mesh(builder: GrpcServerBuilder) -> GrpcServerBuilder {
    let component = builder
        .service_names()
        .iter()
        .filter_map(|n| n.strip_prefix("skillup.")?.split('.').next())
        .find(|c| skillup_kit::mesh::COMPONENTS.contains(c))
        .unwrap_or("edge")
        .to_owned();
    builder.mesh_tls(mesh_tls(&component))
}

/// A channel to `addr` calling as `component` (its certificate of the test mesh), connected on
/// first use; `None` calls as nobody (plaintext).
pub fn channel_as(
    addr: std::net::SocketAddr,
    component: Option<&str>,
) -> tonic::transport::Channel {
    channel_with(&addr.to_string(), component.map(mesh_tls))
}

/// A channel to `addr` calling as `component` of the mesh in `keys_dir/mesh` (a data
/// directory's, as `skillup up` or `skillup keys init` made it).
pub fn channel_in(keys_dir: &Path, addr: &str, component: &str) -> tonic::transport::Channel {
    skillup_kit::mesh::channel_in(Some(&keys_dir.join("mesh")), addr, component)
        .expect("the data directory's mesh")
}

/// A channel to `addr` (`host:port`) with `tls` (or plaintext), connected on first use.
pub fn channel_with(
    addr: &str,
    tls: Option<Arc<skillup_kit::mesh::MeshTls>>,
) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(skillup_kit::mesh::MeshConnector::new(tls))
}

/// A test's channel that makes every call as a component the RPC's contract lets call it (the
/// first it names; `edge` for a path no contract declares), each on a connection with that
/// component's certificate: tests of a service's behaviour call it as its real callers do.
/// (Who may call what is tested on its own, with [`channel_as`].)
#[derive(Clone)]
pub struct Channel {
    addr: std::net::SocketAddr,
    by_caller:
        Arc<std::sync::Mutex<std::collections::HashMap<&'static str, tonic::transport::Channel>>>,
}

impl Channel {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self { addr, by_caller: Default::default() }
    }

    fn for_path(&self, path: &str) -> tonic::transport::Channel {
        let caller =
            skillup_proto::callers::of(path).and_then(|c| c.first().copied()).unwrap_or("edge");
        let mut by = self.by_caller.lock().unwrap_or_else(|e| e.into_inner());
        by.entry(caller).or_insert_with(|| channel_as(self.addr, Some(caller))).clone()
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let channel = self.for_path(req.uri().path());
        Box::pin(tower::ServiceExt::oneshot(channel, req))
    }
}

/// A gRPC server running in this test on `127.0.0.1:0` with the test mesh's TLS, and a
/// channel to it. Wrap the channel in the generated client:
/// `AuthServiceClient::new(server.channel())` (calls as the RPC's callers: see [`Channel`]),
/// or `server.channel_as("subscribe")` for a service's own client.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    channel: Channel,
    shutdown: Shutdown,
    handle: Option<tokio::task::JoinHandle<skillup_kit::Result<()>>>,
}

impl TestServer {
    /// Binds the services in `builder` and connects to them.
    pub async fn start(builder: GrpcServerBuilder) -> Self {
        let server = with_mesh(builder)
            .shutdown_timings(Duration::ZERO, Duration::from_secs(5))
            .bind(([127, 0, 0, 1], 0).into())
            .await
            .expect("bind a test gRPC server");
        let addr = server.local_addr();
        let shutdown = Shutdown::new();
        let handle = tokio::spawn(server.run(shutdown.clone()));
        Self { addr, channel: Channel::new(addr), shutdown, handle: Some(handle) }
    }

    /// Calls every RPC as a caller its contract allows (see [`Channel`]).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Calls as `component` (a service's own client: `PaymentBilling::new(pay.channel_as("subscribe"))`).
    pub fn channel_as(&self, component: &str) -> tonic::transport::Channel {
        channel_as(self.addr, Some(component))
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server stopped cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(replace_db_name("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            replace_db_name("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(replace_db_name("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
    }
}
