//! A component's mesh certificate, the CA it trusts, and the rustls configurations built from
//! them — reloaded when the files change (rotation without a restart: new connections use
//! the new certificate, open ones finish on the old).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::WebPkiClientVerifier,
};

use super::Peer;
use crate::{Error, Result};

/// Where a component's mesh material lives: the CA certificate it trusts, its own
/// certificate (chain) and private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl MeshFiles {
    /// `<dir>/ca.pem`, `<dir>/<name>.pem`, `<dir>/<name>.key`: as `skillup keys init` writes
    /// them.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }

    fn stamp(&self) -> Vec<Option<SystemTime>> {
        [&self.ca, &self.cert, &self.key]
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }
}

/// The loaded configurations of one component.
struct Loaded {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    me: Peer,
}

/// This component's side of mutual TLS in the mesh: the server configuration its listener
/// accepts with (a client certificate of the mesh CA asked for, not required: a caller
/// without one is anonymous and refused by the caller check, with a status), and the client
/// configuration its channels connect with (its certificate offered; the server's verified
/// against the mesh CA, its SPIFFE id checked to name a component by the connector).
pub struct MeshTls {
    files: MeshFiles,
    loaded: RwLock<Arc<Loaded>>,
    stamp: Mutex<Vec<Option<SystemTime>>>,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls").field("files", &self.files).field("me", &self.me()).finish()
    }
}

impl MeshTls {
    /// Reads the files; fails when one is missing or unusable, or the certificate names no
    /// identity of this mesh.
    pub fn load(files: MeshFiles) -> Result<Arc<Self>> {
        let stamp = files.stamp();
        let loaded = build(&files)?;
        Ok(Arc::new(Self {
            files,
            loaded: RwLock::new(Arc::new(loaded)),
            stamp: Mutex::new(stamp),
        }))
    }

    /// Who this component's certificate says it is.
    pub fn me(&self) -> Peer {
        self.current().me.clone()
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.current().server.clone()
    }

    pub(super) fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.current().client.clone()
    }

    /// Reloads the files if any changed since the last load. A set that does not load (a
    /// rotation half written) keeps the previous one and is tried again next time.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let stamp = self.files.stamp();
        let mut last = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if *last == stamp {
            return Ok(false);
        }
        let loaded = build(&self.files)?;
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        *last = stamp;
        tracing::info!(cert = %self.files.cert.display(), "mesh certificate reloaded");
        Ok(true)
    }

    /// Checks the files every `every` until `shutdown`, reloading what changed.
    pub fn watch(self: &Arc<Self>, every: Duration, shutdown: &crate::Shutdown) {
        let tls = Arc::downgrade(self);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.wait() => return,
                }
                let Some(tls) = tls.upgrade() else { return };
                if let Err(e) = tls.reload_if_changed() {
                    tracing::warn!(error = %e, "mesh certificate not reloaded; the previous one stays");
                }
            }
        });
    }
}

fn keys_error(what: &Path, e: impl std::fmt::Display) -> Error {
    Error::Keys(format!("{}: {e}", what.display()))
}

fn build(files: &MeshFiles) -> Result<Loaded> {
    crate::install_crypto_provider();
    let read_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>> {
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .map_err(|e| keys_error(path, e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| keys_error(path, e))?;
        if certs.is_empty() {
            return Err(keys_error(path, "no certificate in the file"));
        }
        Ok(certs)
    };
    let ca = read_certs(&files.ca)?;
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| keys_error(&files.key, e))?;
    let me = peer_of(&chain[0])
        .ok_or_else(|| keys_error(&files.cert, "the certificate names no identity of this mesh"))?;
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots.add(c).map_err(|e| keys_error(&files.ca, e))?;
    }
    let roots = Arc::new(roots);
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));

    let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| keys_error(&files.ca, e))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| keys_error(&files.cert, e))?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| keys_error(&files.cert, e))?;
    server.alpn_protocols = vec![b"h2".to_vec()];

    let verifier = Arc::new(MeshServerVerifier { roots, provider: provider.clone() });
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| keys_error(&files.cert, e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| keys_error(&files.cert, e))?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded { server: Arc::new(server), client: Arc::new(client), me })
}

/// Who a (verified) certificate names: the first SPIFFE id of this mesh among its SAN URIs.
pub(super) fn peer_of(cert: &CertificateDer<'_>) -> Option<Peer> {
    use x509_cert::{
        der::{Decode, oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME},
        ext::pkix::{SubjectAltName, name::GeneralName},
    };
    let cert = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    let extensions = cert.tbs_certificate.extensions.as_deref().unwrap_or_default();
    extensions
        .iter()
        .filter(|e| e.extn_id == ID_CE_SUBJECT_ALT_NAME)
        .filter_map(|e| SubjectAltName::from_der(e.extn_value.as_bytes()).ok())
        .flat_map(|san| san.0)
        .find_map(|name| match name {
            GeneralName::UniformResourceIdentifier(uri) => Peer::from_spiffe_id(uri.as_str()),
            _ => None,
        })
}

/// Verifies a server's certificate against the mesh CA, as WebPKI does but without a DNS
/// name: a mesh server is known by its SPIFFE id (SPIFFE's X.509-SVID rule; the connector
/// checks it names a component), so a pod reached by any address or name verifies.
#[derive(Debug)]
struct MeshServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::issue;

    fn fresh_mesh() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("skillup-mesh-unit-{}", uuid::Uuid::new_v4()));
        issue::init(&dir, &[], false).unwrap();
        dir
    }

    #[test]
    fn a_rotated_certificate_is_picked_up_and_a_half_written_one_is_not() {
        let dir = fresh_mesh();
        let tls = MeshTls::load(MeshFiles::in_dir(&dir, "payment")).unwrap();
        assert_eq!(tls.me(), Peer::component("payment"));
        assert!(!tls.reload_if_changed().unwrap(), "nothing changed");
        let before = tls.server_config();
        // Rotation: a new certificate and key for the same component.
        std::thread::sleep(Duration::from_millis(20));
        let ca = issue::MeshCa::load(&dir).unwrap();
        let names = issue::server_names("payment", &[]);
        ca.issue(&Peer::component("payment"), &names, issue::COMPONENT_VALIDITY)
            .unwrap()
            .write(&dir, "payment")
            .unwrap();
        assert!(tls.reload_if_changed().unwrap(), "the new pair is loaded");
        assert!(!Arc::ptr_eq(&before, &tls.server_config()), "new connections use it");
        // A key that is not the certificate's (a rotation caught half-way) keeps the last set.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::copy(dir.join("auth.key"), dir.join("payment.key")).unwrap();
        assert!(tls.reload_if_changed().is_err(), "refused");
        assert_eq!(tls.me(), Peer::component("payment"), "the previous set still serves");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_certificate_of_another_ca_or_no_mesh_identity_is_refused() {
        let (a, b) = (fresh_mesh(), fresh_mesh());
        let mixed = MeshFiles { ca: a.join("ca.pem"), ..MeshFiles::in_dir(&b, "edge") };
        // It loads (the server side trusts `a`), but a peer of `a` never accepts it: the
        // handshake test is the SDK's and the attack matrix's; here, who it names.
        assert_eq!(MeshTls::load(mixed).unwrap().me(), Peer::component("edge"));
        let ca_only = MeshFiles {
            cert: a.join("ca.pem"),
            key: a.join("ca.key"),
            ..MeshFiles::in_dir(&a, "edge")
        };
        let err = MeshTls::load(ca_only).unwrap_err().to_string();
        assert!(err.contains("names no identity of this mesh"), "{err}");
        for d in [a, b] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
