//! The mesh CA and the certificates it issues (`skillup keys init`, `skillup keys issue`, and
//! `skillup up` on first start): ECDSA P-256, the identity as a SPIFFE id in a SAN URI;
//! components' certificates serve and call (server and client auth), operators' only call.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

use super::{COMPONENTS, MeshFiles, Peer};
use crate::{Error, Result};

/// How long the CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// A component certificate's validity unless asked otherwise.
pub const COMPONENT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// An operator certificate's validity unless asked otherwise: a working day.
pub const OPERATOR_VALIDITY: Duration = Duration::from_secs(8 * 3600);
/// The longest an operator certificate may be valid.
pub const OPERATOR_MAX_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

const CA_NAME: &str = "SkillUp mesh CA";

fn keys(e: impl std::fmt::Display) -> Error {
    Error::Keys(e.to_string())
}

/// The mesh's certificate authority: its key (`ca.key`, never leaves the machine that runs
/// `skillup keys`) and certificate (`ca.pem`, in every component's Secret).
pub struct MeshCa {
    key: KeyPair,
}

impl MeshCa {
    /// The CA's files in `dir`.
    pub fn paths(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("ca.pem"), dir.join("ca.key"))
    }

    /// Creates a CA in `dir` unless one is there; answers it and whether it is new.
    pub fn ensure(dir: &Path) -> Result<(Self, bool)> {
        let (cert_path, key_path) = Self::paths(dir);
        if key_path.exists() {
            return Ok((Self::load(dir)?, false));
        }
        crate::files::private_dir(dir)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(keys)?;
        let mut params = ca_params();
        let now = SystemTime::now();
        params.not_before = at(now - Duration::from_secs(300));
        params.not_after = at(now + CA_VALIDITY);
        let cert = params.self_signed(&key).map_err(keys)?;
        crate::files::replace_private(&key_path, key.serialize_pem().as_bytes())?;
        crate::files::replace_private(&cert_path, cert.pem().as_bytes())?;
        Ok((Self { key }, true))
    }

    /// The CA in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let (_, key_path) = Self::paths(dir);
        let pem = std::fs::read_to_string(&key_path).map_err(|e| {
            keys(format!(
                "{}: {e} (create the mesh CA with `skillup keys init`)",
                key_path.display()
            ))
        })?;
        Ok(Self { key: KeyPair::from_pem(&pem).map_err(keys)? })
    }

    /// A certificate and key for `peer`, valid from now for `valid_for`; `dns` names (and IP
    /// addresses) the server may be dialled by, for clients that check them (grpcurl, grpcio).
    pub fn issue(&self, peer: &Peer, dns: &[String], valid_for: Duration) -> Result<Issued> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(keys)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "SkillUp");
        dn.push(DnType::CommonName, peer.label());
        params.distinguished_name = dn;
        let uri = peer.spiffe_id().try_into().map_err(keys)?;
        params.subject_alt_names.push(SanType::URI(uri));
        let operator = &*peer.component == super::OPERATOR;
        if !operator {
            for name in dns {
                let san = match name.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(name.clone().try_into().map_err(keys)?),
                };
                params.subject_alt_names.push(san);
            }
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = if operator {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        };
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        // A little slack for clocks a few minutes apart.
        params.not_before = at(now - Duration::from_secs(300));
        let not_after = now + valid_for;
        params.not_after = at(not_after);
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(keys)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), not_after })
    }
}

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

impl Issued {
    /// Writes `<dir>/<name>.pem` and `<dir>/<name>.key` (owner-only, each replaced whole).
    pub fn write(&self, dir: &Path, name: &str) -> Result<MeshFiles> {
        let files = MeshFiles::in_dir(dir, name);
        // The key first: a reloader that sees the new certificate finds its key already there
        // (one that sees the new key with the old certificate fails and tries again).
        crate::files::replace_private(&files.key, self.key_pem.as_bytes())?;
        crate::files::replace_private(&files.cert, self.cert_pem.as_bytes())?;
        Ok(files)
    }
}

/// The names a component's server certificate carries besides its SPIFFE id (for clients
/// that check names: grpcurl, grpcio): its Service name, that name under every DNS suffix
/// given (`payment.skillup.svc`), `localhost` and the loopback addresses.
pub fn server_names(component: &str, dns_suffixes: &[String]) -> Vec<String> {
    let mut names = vec![component.to_owned()];
    names.extend(dns_suffixes.iter().map(|s| format!("{component}.{}", s.trim_start_matches('.'))));
    names.extend(["localhost", "127.0.0.1", "::1"].map(str::to_owned));
    names
}

/// What [`init`] did.
#[derive(Debug, Default)]
pub struct Init {
    pub ca_created: bool,
    /// The components whose certificates were written.
    pub issued: Vec<&'static str>,
}

/// The mesh in `dir`: the CA unless there, and every component's certificate unless there
/// (all of them again with `renew`).
pub fn init(dir: &Path, dns_suffixes: &[String], renew: bool) -> Result<Init> {
    let (ca, ca_created) = MeshCa::ensure(dir)?;
    let mut report = Init { ca_created, issued: Vec::new() };
    for component in COMPONENTS {
        let files = MeshFiles::in_dir(dir, component);
        if !renew && !ca_created && files.cert.exists() && files.key.exists() {
            continue;
        }
        ca.issue(
            &Peer::component(component),
            &server_names(component, dns_suffixes),
            COMPONENT_VALIDITY,
        )?
        .write(dir, component)?;
        report.issued.push(component);
    }
    Ok(report)
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "SkillUp");
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn at(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}
