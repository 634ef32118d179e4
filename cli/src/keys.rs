//! `skillup keys`: the signing keys, the identity assertion key, the VAPID key and the mesh
//! certificates an operator makes, rotates and lists.

use std::{path::PathBuf, time::Duration};

use clap::Subcommand;
use skillup_auth::keys::KeyStore;

use crate::{say, settings::Settings};

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Generate a 4096-bit RSA key pair, store it as `<kid>.pem` (mode 0600) in the key
    /// directory and print its kid (the key's RFC 7638 thumbprint). Makes it the signing key
    /// unless --verify-only; older keys stay valid for verification until removed.
    Generate {
        /// Key directory [default: <data dir>/keys].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Store the key for verification only; keep the current signing key.
        #[arg(long)]
        verify_only: bool,
    },
    /// Rotate: generate a new signing key; the previous keys keep verifying tokens they signed
    /// until you remove their files. Running services pick the new key up within 30 s.
    Rotate {
        /// Key directory [default: <data dir>/keys].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Create what a deployment needs and does not have yet: a signing key (when the directory
    /// has none), the identity assertion key `identity.key` (the edge's; its public half
    /// `identity.pub` for the services), and the mesh (`mesh/`: a CA and a
    /// certificate per component, for mutual TLS between them). Safe to run again: existing
    /// keys are kept. `--dir ./secret` then `kubectl create secret generic … --from-file=./secret`.
    Init {
        /// Key directory [default: <data dir>/keys].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// More names the components' certificates carry (each component's own is
        /// `<component>`, `<component>.<DNS_SUFFIX>` for every suffix given).
        #[arg(long = "dns-suffix", value_name = "DNS_SUFFIX")]
        dns_suffixes: Vec<String>,
    },
    /// Issue a mesh certificate from the CA in `<keys dir>/mesh`: a component's (rotation:
    /// write it where the component reads it; it is picked up without a restart), or a
    /// short-lived one for a person at the controls (`operator --name alice`), for grpcurl:
    /// `grpcurl -cacert mesh/ca.pem -cert alice.pem -key alice.key …`.
    Issue {
        /// `edge`, `auth`, `prompt`, `subscribe`, `payment`, `ai`, `worker`, `notification`,
        /// or `operator`.
        identity: String,
        /// The operator's name (a-z, 0-9, `.`, `_`, `-`).
        #[arg(long)]
        name: Option<String>,
        /// Validity in hours [default: 8 for an operator (at most 168), 8760 for a component].
        #[arg(long)]
        hours: Option<u64>,
        /// Where to write `<name>.pem` and `<name>.key` [default: <keys dir>/mesh].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Key directory holding `mesh/ca.key` [default: <data dir>/keys].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// More names a component's certificate carries (as `keys init --dns-suffix`).
        #[arg(long = "dns-suffix", value_name = "DNS_SUFFIX")]
        dns_suffixes: Vec<String>,
    },
    /// List the keys in the key directory, marking the signing key.
    List {
        /// Key directory [default: <data dir>/keys].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Make a stored key the signing key: the second step of a staged rotation (after
    /// `generate --verify-only` has reached every auth replica).
    Promote {
        /// The key's kid (as `keys list` prints it; base64url, so it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Key directory [default: <data dir>/keys].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// The identity assertion key (`identity.key`, the edge's: one secret per line, the first
    /// signs, all verify; every change rewrites `identity.pub`, the services' public keys, in
    /// the same order). Rotate with `add`, roll out; `promote`, roll out; `retire` the old
    /// one, roll out — no request fails at any step.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
        /// The key file [default: identity.key_file, else <keys dir>/identity.key].
        #[arg(long, value_name = "FILE", global = true)]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum IdentityCommand {
    /// Add a new key; it verifies at once and signs once promoted. Prints its fingerprint.
    Add,
    /// Make a key (by fingerprint, or its first 6+ digits) the signing one.
    Promote {
        /// (It may start with `-`: fingerprints are base64url.)
        #[arg(allow_hyphen_values = true)]
        fingerprint: String,
    },
    /// Remove a key that no longer signs.
    Retire {
        #[arg(allow_hyphen_values = true)]
        fingerprint: String,
    },
    /// The keys' fingerprints, the signing one marked.
    List,
}

pub(crate) async fn keys(command: KeysCommand, config: &Settings) -> anyhow::Result<()> {
    let default_dir = config.keys_dir();
    match command {
        KeysCommand::Generate { dir, verify_only } => {
            let store = KeyStore::new(dir.unwrap_or(default_dir));
            let key = store.generate(!verify_only).await?;
            say(&format!("generated RS256 key {} in {}", key.kid, store.dir().display()));
            if !verify_only {
                say("it is now the signing key; older keys still verify until you remove them");
            }
        }
        KeysCommand::Rotate { dir } => {
            let store = KeyStore::new(dir.unwrap_or(default_dir));
            let previous = store.current_kid()?;
            let key = store.generate(true).await?;
            say(&format!(
                "signing key is now {} (was {})",
                key.kid,
                previous.as_deref().unwrap_or("none")
            ));
        }
        KeysCommand::Init { dir, dns_suffixes } => {
            let dir = dir.unwrap_or(default_dir);
            let store = KeyStore::new(dir.clone());
            let (kid, generated) = store.ensure_signing_key().await?;
            say(&format!(
                "signing key {kid} ({})",
                if generated { "generated now" } else { "kept" }
            ));
            let path = skillup_kit::identity::default_key_path(&dir);
            let existed = path.exists();
            skillup_kit::identity::IdentityKey::load(&path, true)?;
            say(&format!(
                "identity key {} ({}; its public half in {})",
                path.display(),
                if existed { "kept" } else { "generated now" },
                skillup_kit::identity::public_key_path(&path).display()
            ));
            let vapid = config.notification.vapid_key_path(&dir);
            let (_, made) = skillup_notification::push::VapidKey::ensure(&vapid)?;
            say(&format!(
                "Web Push (VAPID) key {} ({})",
                vapid.display(),
                if made { "generated now" } else { "kept" }
            ));
            let mesh = dir.join("mesh");
            let report = skillup_kit::mesh::issue::init(&mesh, &dns_suffixes, false)?;
            say(&format!(
                "mesh CA {} ({})",
                mesh.join("ca.pem").display(),
                if report.ca_created { "generated now" } else { "kept" }
            ));
            say(&format!(
                "mesh certificates: {}",
                if report.issued.is_empty() {
                    "all kept".to_owned()
                } else {
                    format!("issued for {}", report.issued.join(", "))
                }
            ));
        }
        KeysCommand::Issue { identity, name, hours, out, dir, dns_suffixes } => {
            use skillup_kit::mesh::{self, Peer, issue};
            let mesh_dir = dir.unwrap_or(default_dir).join("mesh");
            let ca = issue::MeshCa::load(&mesh_dir)?;
            let (peer, valid) = if identity == mesh::OPERATOR {
                let name = name.ok_or_else(|| {
                    anyhow::anyhow!("an operator certificate names its holder: --name alice")
                })?;
                anyhow::ensure!(
                    mesh::valid_name(&name),
                    "--name: 1 to 64 of a-z, 0-9, '.', '_' and '-'"
                );
                let valid = hours.map_or(issue::OPERATOR_VALIDITY, |h| {
                    Duration::from_secs(h.saturating_mul(3600))
                });
                anyhow::ensure!(
                    valid <= issue::OPERATOR_MAX_VALIDITY && !valid.is_zero(),
                    "--hours: an operator certificate lives 1 to 168 hours"
                );
                (Peer::operator(&name), valid)
            } else {
                anyhow::ensure!(
                    mesh::COMPONENTS.contains(&identity.as_str()),
                    "no component {identity}: one of {} or operator",
                    mesh::COMPONENTS.join(", ")
                );
                anyhow::ensure!(name.is_none(), "--name is for operator certificates");
                let valid = hours.map_or(issue::COMPONENT_VALIDITY, |h| {
                    Duration::from_secs(h.saturating_mul(3600))
                });
                anyhow::ensure!(!valid.is_zero(), "--hours: at least 1");
                (Peer::component(&identity), valid)
            };
            let names = issue::server_names(&peer.component, &dns_suffixes);
            let issued = ca.issue(&peer, &names, valid)?;
            let out = out.unwrap_or(mesh_dir.clone());
            skillup_kit::files::private_dir(&out)?;
            let file_name = if peer.name.is_empty() { &peer.component } else { &peer.name };
            let files = issued.write(&out, file_name)?;
            let until = chrono::DateTime::<chrono::Utc>::from(issued.not_after);
            say(&format!(
                "{} until {} UTC: {} and {}",
                peer.spiffe_id(),
                until.format("%Y-%m-%d %H:%M"),
                files.cert.display(),
                files.key.display()
            ));
        }
        KeysCommand::Promote { kid, dir } => {
            let store = KeyStore::new(dir.unwrap_or(default_dir));
            store.promote(&kid)?;
            say(&format!("signing key is now {kid}; services pick it up within 30 s"));
        }
        KeysCommand::Identity { command, file } => {
            use skillup_kit::identity::KeyFile;
            let path = file
                .or_else(|| config.shared.identity.key_file.clone())
                .unwrap_or_else(|| skillup_kit::identity::default_key_path(&default_dir));
            let mut keys = KeyFile::read(&path)?;
            match command {
                IdentityCommand::Add => {
                    let fp = keys.add()?;
                    keys.write()?;
                    say(&format!(
                        "added identity key {fp} to {} (verifies; not signing)",
                        path.display()
                    ));
                }
                IdentityCommand::Promote { fingerprint } => {
                    keys.promote(&fingerprint)?;
                    keys.write()?;
                    say(&format!("identity key {} now signs", keys.fingerprints()[0]));
                }
                IdentityCommand::Retire { fingerprint } => {
                    keys.retire(&fingerprint)?;
                    keys.write()?;
                    say(&format!("retired identity key {fingerprint}"));
                }
                IdentityCommand::List => {
                    for (i, fp) in keys.fingerprints().iter().enumerate() {
                        say(&format!("{fp}{}", if i == 0 { "  (signing)" } else { "" }));
                    }
                }
            }
        }
        KeysCommand::List { dir } => {
            let store = KeyStore::new(dir.unwrap_or(default_dir));
            let current = store.current_kid()?;
            for key in store.load_all()? {
                let mark =
                    if current.as_deref() == Some(key.kid.as_str()) { "  (signing)" } else { "" };
                say(&format!("{}{mark}", key.kid));
            }
        }
    }
    Ok(())
}
