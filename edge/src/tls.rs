//! TLS for the edge's listener (rustls; HTTP/2 by ALPN, HTTP/1.1 otherwise).

use std::sync::Arc;

pub(crate) fn tls_acceptor(
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
