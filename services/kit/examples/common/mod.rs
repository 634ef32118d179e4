//! What the kit's latency examples share: a mesh of their own and one `GrpcServer` on it.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use skillup_kit::{
    Readiness, Shutdown,
    grpc::GrpcServer,
    mesh::{self, MeshFiles, MeshTls},
};

/// A fresh mesh in a temporary directory and a server (as `payment`, with the mesh's TLS on its
/// one port) running on loopback; stopped and removed with [`Bench::stop`].
pub struct Bench {
    pub addr: SocketAddr,
    dir: PathBuf,
    stop: Shutdown,
}

impl Bench {
    pub async fn start(name: &str) -> Bench {
        skillup_kit::install_crypto_provider();
        let dir = std::env::temp_dir().join(format!("skillup-{name}-{}", std::process::id()));
        mesh::issue::init(&dir, &[], false).expect("a mesh");
        let bench = Bench { addr: "127.0.0.1:0".parse().unwrap(), dir, stop: Shutdown::new() };
        let server = GrpcServer::builder()
            .mesh_tls(bench.tls("payment"))
            .readiness(Readiness::new(), Duration::from_millis(50))
            .bind(bench.addr)
            .await
            .expect("bind");
        let addr = server.local_addr();
        tokio::spawn(server.run(bench.stop.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        Bench { addr, ..bench }
    }

    /// A component's certificate of this mesh.
    pub fn tls(&self, component: &str) -> Arc<MeshTls> {
        MeshTls::load(MeshFiles::in_dir(&self.dir, component)).expect("a certificate")
    }

    pub fn stop(self) {
        self.stop.trigger();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
