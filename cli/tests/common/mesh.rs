//! Every component as its own `skillup serve <name>` process on the real PostgreSQL, Redis and
//! RabbitMQ, on loopback ports — the way Kubernetes runs SkillUp — with the offline provider.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use skillup_auth::keys::{KeyStore, SigningKey};
use skillup_kit::identity::IdentityKey;
use skillup_testkit as testing;

use super::{free_port, skillup};

/// In start order: what the edge and the others call first comes up first.
pub const COMPONENTS: [&str; 8] =
    ["auth", "prompt", "payment", "subscribe", "ai", "notification", "worker", "edge"];

/// The gRPC services the edge routes to.
const SERVICES: [&str; 6] = ["auth", "prompt", "subscribe", "payment", "ai", "notification"];

pub struct Mesh {
    pub dir: PathBuf,
    env: Vec<(String, String)>,
    /// Where each process listens: a component by its name, its further replicas as `auth#2`,
    /// `auth#3`, ….
    places: BTreeMap<String, Place>,
    /// Replicated components' processes in their name's DNS answer now (see [`Mesh::start_scaled`]).
    in_dns: BTreeSet<String>,
    procs: BTreeMap<String, Child>,
    _db: testing::TestDb,
}

/// A process's loopback address, gRPC and HTTP port. The replicas of one component share its
/// ports, each on an address of its own (127.0.0.2, 127.0.0.3, …), as pods share their
/// container port.
#[derive(Clone)]
struct Place {
    ip: String,
    grpc: u16,
    http: u16,
}

/// The name every replica of a replicated component answers to, as a headless Service's.
fn dns_name(component: &str) -> String {
    format!("{component}.mesh.test")
}

/// nss_wrapper, which lets a process resolve names from a hosts file of its own: the test's
/// DNS, with several addresses for one name and answers that change while processes run.
fn nss_wrapper() -> String {
    for dir in ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"]
    {
        let lib = format!("{dir}/libnss_wrapper.so");
        if std::path::Path::new(&lib).exists() {
            return lib;
        }
    }
    panic!(
        "the scale-out tests resolve a name to several replicas through nss_wrapper, which is \
         not installed: apt-get install -y libnss-wrapper (scripts/test installs it)"
    )
}

impl Mesh {
    /// A fresh database, prefixes and keys; `extra` settings for every process.
    pub async fn start(extra: &[(&str, &str)]) -> Mesh {
        Self::start_scaled(extra, &[]).await
    }

    /// [`Mesh::start`] with `n` replicas of some components (`("auth", 3)`: `auth`, `auth#2`,
    /// `auth#3`), each its own process on its own loopback address. Every caller knows the
    /// component by one name (`auth.mesh.test`) that the system resolver answers with the
    /// address of every replica running — a headless Service's name in Kubernetes, which lists
    /// ready pods: a replica stopped leaves the answer, one started joins it once ready. (The
    /// names come from a hosts file through nss_wrapper, preloaded into every process.)
    pub async fn start_scaled(extra: &[(&str, &str)], scale: &[(&'static str, usize)]) -> Mesh {
        let db = testing::TestDb::postgres().await;
        let dir = std::env::temp_dir().join(format!("skillup-mesh-{}", testing::unique()));
        let keys = dir.join("keys");
        let key = SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap();
        KeyStore::new(&keys).store(&key, true).unwrap();
        IdentityKey::load(&skillup_kit::identity::default_key_path(&keys), true).unwrap();
        skillup_kit::mesh::issue::init(&keys.join("mesh"), &[], false).unwrap();
        let names: Vec<String> = COMPONENTS
            .iter()
            .flat_map(|c| {
                let n = scale.iter().find(|(s, _)| s == c).map_or(1, |(_, n)| *n);
                (1..=n).map(move |i| if i == 1 { c.to_string() } else { format!("{c}#{i}") })
            })
            .collect();
        let mut places: BTreeMap<String, Place> = BTreeMap::new();
        for name in &names {
            let (component, replica) = match name.split_once('#') {
                Some((c, i)) => (c, i.parse::<u8>().unwrap()),
                None => (name.as_str(), 1),
            };
            let place = if scale.iter().any(|(s, n)| *s == component && *n > 1) {
                let first = places.get(component).cloned();
                let (grpc, http) =
                    first.map_or_else(|| (free_port(), free_port()), |p| (p.grpc, p.http));
                Place { ip: format!("127.0.0.{}", replica + 1), grpc, http }
            } else {
                Place { ip: "127.0.0.1".into(), grpc: free_port(), http: free_port() }
            };
            places.insert(name.clone(), place);
        }
        let unique = testing::unique();
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), db.url.clone()),
            ("REDIS_URL".into(), testing::redis_url()),
            ("AMQP_URL".into(), testing::amqp_url()),
            ("SKILLUP_CACHE_PREFIX".into(), format!("test:{unique}:")),
            ("SKILLUP_BUS__EXCHANGE".into(), format!("test.{unique}.events")),
            ("SKILLUP_BUS__QUEUE_PREFIX".into(), format!("test.{unique}.")),
            ("SKILLUP_AUTH__BCRYPT_COST".into(), "4".into()),
            ("SKILLUP_READINESS_INTERVAL_MS".into(), "200".into()),
            ("SKILLUP_SHUTDOWN__DRAIN_MS".into(), "300".into()),
            ("SKILLUP_SHUTDOWN__GRACE_MS".into(), "10000".into()),
        ];
        for s in SERVICES {
            let place = &places[s];
            let url = if places.contains_key(&format!("{s}#2")) {
                format!("http://{}:{}", dns_name(s), place.grpc)
            } else {
                format!("http://{}:{}", place.ip, place.grpc)
            };
            env.push((format!("SKILLUP_EDGE__UPSTREAMS__{}", s.to_uppercase()), url));
        }
        if !scale.is_empty() {
            std::fs::create_dir_all(&dir).unwrap();
            env.push(("LD_PRELOAD".into(), nss_wrapper()));
            env.push(("NSS_WRAPPER_HOSTS".into(), dir.join("hosts").display().to_string()));
        }
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut mesh =
            Mesh { dir, env, places, in_dns: BTreeSet::new(), procs: BTreeMap::new(), _db: db };
        mesh.write_hosts();
        for c in &names {
            mesh.spawn(c);
            mesh.wait_ready(c).await;
            mesh.in_dns(c, true);
        }
        // Each is still running: a component that could not bind its port exits at once, and
        // another process answering on that port must not pass for it.
        for c in &names {
            if let Some(status) = mesh.procs.get_mut(c).unwrap().try_wait().unwrap() {
                panic!("{c} exited ({status}): {}", mesh.log(c));
            }
        }
        mesh
    }

    /// The database every process uses.
    pub fn database_url(&self) -> &str {
        &self._db.url
    }

    /// A setting every process was started with.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A process's gRPC address (`ip:port`).
    pub fn grpc(&self, process: &str) -> String {
        let p = &self.places[process];
        format!("{}:{}", p.ip, p.grpc)
    }

    /// The edge's base URL.
    pub fn edge(&self) -> String {
        self.ops("edge")
    }

    /// A process's HTTP (operations) base URL: `/metrics`, `/readyz`.
    pub fn ops(&self, process: &str) -> String {
        let p = &self.places[process];
        format!("http://{}:{}", p.ip, p.http)
    }

    /// Puts a replica into its component's DNS answer, or takes it out.
    fn in_dns(&mut self, process: &str, is: bool) {
        let changed =
            if is { self.in_dns.insert(process.to_owned()) } else { self.in_dns.remove(process) };
        if changed {
            self.write_hosts();
        }
    }

    /// The hosts file the processes resolve from, replaced whole (a reader never sees half).
    fn write_hosts(&self) {
        let mut text = String::new();
        for process in &self.in_dns {
            let component = process.split('#').next().unwrap();
            if self.places.contains_key(&format!("{component}#2")) {
                text.push_str(&format!("{} {}\n", self.places[process].ip, dns_name(component)));
            }
        }
        let (tmp, hosts) = (self.dir.join("hosts.new"), self.dir.join("hosts"));
        if std::fs::write(&tmp, text).is_ok() {
            std::fs::rename(tmp, hosts).unwrap();
        }
    }

    /// A process's id (to signal it).
    pub fn pid(&self, process: &str) -> u32 {
        self.procs[process].id()
    }

    fn spawn(&mut self, process: &str) {
        let Place { ip, grpc, http } = self.places[process].clone();
        let component = process.split('#').next().unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{process}.log")))
            .unwrap();
        let mut cmd = skillup();
        if component != "edge" {
            // As in Kubernetes: services hold only the identity assertion's public key.
            cmd.env("SKILLUP_IDENTITY__PUBLIC_KEY_FILE", self.dir.join("keys/identity.pub"));
        }
        let child = cmd
            .args(["serve", component, "--grpc-addr"])
            .arg(format!("{ip}:{grpc}"))
            .arg("--http-addr")
            .arg(format!("{ip}:{http}"))
            .arg("--data-dir")
            .arg(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.insert(process.to_owned(), child);
    }

    /// Waits until the component's /readyz answers 200 (at most 30 s).
    pub async fn wait_ready(&mut self, component: &str) {
        let url = format!("{}/readyz", self.ops(component));
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(&url).send().await
                && r.status() == 200
            {
                return;
            }
            if let Some(status) = self.procs.get_mut(component).unwrap().try_wait().unwrap() {
                panic!("{component} exited ({status}): {}", self.log(component));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{component} never got ready: {}", self.log(component));
    }

    /// SIGTERM, and the exit status once it has drained and stopped.
    pub async fn stop(&mut self, component: &str) -> std::process::ExitStatus {
        // Terminating, it leaves its Service's answer (Kubernetes takes a terminating pod out
        // of the endpoints as it is signalled).
        self.in_dns(component, false);
        let mut child = self.procs.remove(component).unwrap();
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap()
    }

    /// SIGKILL: no drain, no goodbye — as a node dying or the OOM killer.
    pub async fn kill(&mut self, component: &str) {
        self.in_dns(component, false);
        let mut child = self.procs.remove(component).unwrap();
        child.kill().unwrap();
        tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    }

    /// A rolling restart of one replica: stop it (drain included), start it again, wait ready.
    pub async fn restart(&mut self, component: &str) -> Duration {
        let started = Instant::now();
        let status = self.stop(component).await;
        assert!(
            status.success(),
            "{component} stopped uncleanly: {status}: {}",
            self.log(component)
        );
        self.spawn(component);
        self.wait_ready(component).await;
        self.in_dns(component, true);
        started.elapsed()
    }

    /// A new verified account through the edge; its access token.
    pub async fn user(&self, email: &str) -> String {
        let rest = reqwest::Client::new();
        let account = serde_json::json!({"email": email, "password": "correct horse battery"});
        let res = rest
            .post(format!("{}/api/auth/register", self.edge()))
            .json(&account)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let res = rest.post(format!("{}/api/auth/login", self.edge())).json(&account).send().await;
        let body: serde_json::Value = res.unwrap().json().await.unwrap();
        let token = body["access_token"].as_str().unwrap().to_owned();
        let verify = super::mailed_token(&self.dir.join("outbox"), email);
        let res = rest
            .post(format!("{}/api/auth/verify-email", self.edge()))
            .json(&serde_json::json!({"token": verify}))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "verify: {}", res.text().await.unwrap());
        token
    }

    /// True while every component process still runs (none crashed or was restarted).
    pub fn all_running(&mut self) -> bool {
        self.procs.values_mut().all(|c| c.try_wait().unwrap().is_none())
    }

    /// Starts a component stopped with [`Mesh::stop`] and waits until it is ready.
    pub async fn start_again(&mut self, component: &str) {
        self.spawn(component);
        self.wait_ready(component).await;
        self.in_dns(component, true);
    }

    pub fn log(&self, component: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{component}.log"))).unwrap_or_default()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for child in self.procs.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
