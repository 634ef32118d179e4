//! The application server's VAPID key (RFC 8292): an ECDSA P-256 key pair kept as a PKCS#8 PEM
//! file beside the other keys (`<keys_dir>/vapid.key`, written by `skillup keys init` and on the
//! first `skillup up`), whose public half browsers subscribe with and whose private half signs
//! the short-lived JWT each push request carries.

use std::path::Path;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use serde::Serialize;

/// The key file's name in the keys directory.
pub const FILE: &str = "vapid.key";

const PEM_LABEL: &str = "PRIVATE KEY";

/// The VAPID key pair.
#[derive(Clone)]
pub struct VapidKey {
    signing: jsonwebtoken::EncodingKey,
    /// The uncompressed public point, base64url without padding (`k=` and the browser's
    /// `applicationServerKey`).
    public: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VapidKey({})", self.public)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the VAPID key {path}: {reason}")]
pub struct KeyError {
    path: String,
    reason: String,
}

/// What a VAPID JWT claims.
#[derive(Serialize)]
struct Claims<'a> {
    /// The push service's origin.
    aud: &'a str,
    /// Unix seconds; at most 24 hours ahead.
    exp: u64,
    /// How the push service reaches the sender (`mailto:` or `https:`).
    sub: &'a str,
}

impl VapidKey {
    /// A new random key pair (not written anywhere).
    pub fn generate() -> Self {
        let doc = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .expect("generating a P-256 key");
        Self::from_pkcs8(doc.as_ref()).expect("a generated key parses")
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| format!("not a P-256 private key ({e})"))?;
        let public = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Ok(Self { signing: jsonwebtoken::EncodingKey::from_ec_der(der), public })
    }

    /// Reads the key file (PKCS#8 PEM).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let error = |reason: String| KeyError { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let der = pem_body(&text).ok_or_else(|| error(format!("no {PEM_LABEL} PEM block")))?;
        Self::from_pkcs8(&der).map_err(error)
    }

    /// Reads the key file, first writing a new key there when there is none (owner-only
    /// permissions). `true` when it was generated now.
    pub fn ensure(path: &Path) -> Result<(Self, bool), KeyError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let error = |reason: String| KeyError { path: path.display().to_string(), reason };
        let doc = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .map_err(|_| error("could not generate a key".into()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| error(e.to_string()))?;
        }
        write_private(path, pem(doc.as_ref()).as_bytes()).map_err(|e| error(e.to_string()))?;
        Ok((Self::from_pkcs8(doc.as_ref()).map_err(error)?, true))
    }

    /// The public key, base64url without padding.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The `Authorization` header of a push request to `origin` (the endpoint's scheme, host
    /// and port when not the scheme's default), valid for `valid_secs` from `now` (Unix
    /// seconds): `vapid t=<ES256 JWT>, k=<public key>`.
    pub fn authorization(&self, origin: &str, subject: &str, now: u64, valid_secs: u64) -> String {
        let claims = Claims { aud: origin, exp: now + valid_secs.min(24 * 3600), sub: subject };
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        let jwt = jsonwebtoken::encode(&header, &claims, &self.signing)
            .expect("signing with a parsed P-256 key");
        format!("vapid t={jwt}, k={}", self.public)
    }
}

fn pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {PEM_LABEL}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    out
}

fn pem_body(text: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {PEM_LABEL}-----");
    let end = format!("-----END {PEM_LABEL}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).ok()
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_key_reads_back_as_the_same_key_and_signs_a_verifiable_jwt() {
        let dir = std::env::temp_dir().join(format!("vapid-{}", uuid::Uuid::now_v7()));
        let path = dir.join(FILE);
        let (made, generated) = VapidKey::ensure(&path).unwrap();
        assert!(generated);
        let (again, generated) = VapidKey::ensure(&path).unwrap();
        assert!(!generated);
        assert_eq!(made.public_key(), again.public_key());
        assert_eq!(URL_SAFE_NO_PAD.decode(made.public_key()).unwrap().len(), 65);

        let auth = again.authorization(
            "https://push.example:8443",
            "mailto:ops@example.com",
            1_000,
            90_000,
        );
        let (t, k) = auth.strip_prefix("vapid t=").unwrap().split_once(", k=").unwrap();
        assert_eq!(k, made.public_key());
        let point = URL_SAFE_NO_PAD.decode(k).unwrap();
        let key = jsonwebtoken::DecodingKey::from_ec_components(
            &URL_SAFE_NO_PAD.encode(&point[1..33]),
            &URL_SAFE_NO_PAD.encode(&point[33..]),
        )
        .unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.validate_exp = false;
        v.set_audience(&["https://push.example:8443"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(t, &key, &v).unwrap().claims;
        // Never more than a day ahead, whatever was asked.
        assert_eq!(claims["exp"], 1_000 + 24 * 3600);
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        std::fs::remove_dir_all(dir).ok();
    }
}
