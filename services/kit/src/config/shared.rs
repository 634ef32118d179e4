//! Settings more than one component reads: outgoing email (auth and notification send it) and
//! the identity assertion (the edge signs it, every service verifies it), and the mesh's
//! mutual TLS (every component).

use super::*;

/// Outgoing email (`SKILLUP_MAIL__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// Sender address.
    pub from: String,
    /// Outbox directory for the file mailer; empty = `<data_dir>/outbox`.
    pub outbox_dir: Option<PathBuf>,
    /// SMTP server (`smtp://host:25?tls=required`, `smtps://user:pass@host:465`); unset = outbox.
    #[serde(serialize_with = "ser_secret_opt")]
    pub smtp_url: Option<SecretString>,
}

/// Identity assertion settings (`SKILLUP_IDENTITY__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The edge's private key file (one secret of at least 32 bytes per line, the first
    /// signs; a Kubernetes Secret only the edge mounts). Unset = `<keys_dir>/identity.key`,
    /// created on first start when it is missing (with `identity.pub` beside it).
    pub key_file: Option<PathBuf>,
    /// The public keys services verify assertions with (`identity.pub`, one per line). Unset
    /// = the `.pub` file beside the key file, else derived from the key file.
    pub public_key_file: Option<PathBuf>,
    /// Life of an assertion the edge mints, seconds.
    pub ttl_secs: u64,
}

/// The component's mesh certificate (`SKILLUP_MESH__…`; see `skillup_kit::mesh`). Unset files
/// are `<keys_dir>/mesh/ca.pem`, `<component>.pem` and `<component>.key`, as
/// `skillup keys init` writes them; in Kubernetes each component mounts its own Secret.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// The mesh CA's certificate (PEM) this component trusts.
    pub ca_file: Option<PathBuf>,
    /// This component's certificate (PEM, chain).
    pub cert_file: Option<PathBuf>,
    /// This component's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// How often the files are checked for a rotated certificate, milliseconds.
    pub reload_interval_ms: u64,
}
