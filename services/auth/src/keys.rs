//! RS256 signing keys on disk: `<dir>/<kid>.pem` (PKCS#8 private key, mode 0600) and
//! `<dir>/current` naming the signing key. Every `*.pem` stays valid for verification until
//! removed, so a rotation keeps old tokens working. The `kid` is the key's RFC 7638 JWK
//! thumbprint (SHA-256, base64url), so it is derived from the key itself, never guessed.

use std::path::{Path, PathBuf};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rsa::{
    PrivateKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding},
    traits::PublicKeyParts,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use skillup_kit::{Error, Result, files};

/// Key size the platform signs with.
pub const RSA_BITS: usize = 4096;

/// One key pair as loaded from disk.
pub struct SigningKey {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// PKCS#8 PEM of the private key.
    pub private_pem: SecretString,
    /// Modulus, big-endian, base64url without padding (JWK `n`).
    pub n: String,
    /// Public exponent, base64url without padding (JWK `e`).
    pub e: String,
    /// The public key as DER SubjectPublicKeyInfo (RFC 5280), for verifiers.
    pub public_der: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parses a PKCS#8 PEM private key and derives its kid and public parts.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let key = PrivateKey::from_pkcs8_pem(pem)
            .map_err(|e| Error::Keys(format!("not a PKCS#8 RSA key: {e}")))?;
        let public = key.to_public_key();
        let n = URL_SAFE_NO_PAD.encode(public.n().as_ref().to_be_bytes_trimmed_vartime());
        let e = URL_SAFE_NO_PAD.encode(public.e().to_be_bytes_trimmed_vartime());
        let public_der =
            public.to_public_key_der().map_err(|e| Error::Keys(e.to_string()))?.as_bytes().to_vec();
        Ok(Self {
            kid: thumbprint(&n, &e),
            private_pem: SecretString::from(pem.to_owned()),
            n,
            e,
            public_der,
        })
    }

    /// Generates a new 4096-bit key (CPU-heavy: seconds; run it off the async threads).
    pub fn generate() -> Result<Self> {
        Self::generate_bits(RSA_BITS)
    }

    /// Generates a key of another size. Only tests want this (a small throwaway key is
    /// quick); the platform signs with [`RSA_BITS`].
    pub fn generate_bits(bits: usize) -> Result<Self> {
        let key = PrivateKey::new(&mut getrandom::SysRng, bits)
            .map_err(|e| Error::Keys(e.to_string()))?;
        let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| Error::Keys(e.to_string()))?;
        Self::from_pem(pem.as_str())
    }
}

/// RFC 7638 §3: SHA-256 over `{"e":…,"kty":"RSA","n":…}` with members in that order.
pub fn thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The key directory: every key, and which one signs.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a key as `<kid>.pem` (0600); makes it the signing key when `make_current`.
    pub fn store(&self, key: &SigningKey, make_current: bool) -> Result<PathBuf> {
        files::private_dir(&self.dir)?;
        let path = self.dir.join(format!("{}.pem", key.kid));
        write_private(&path, key.private_pem.expose_secret().as_bytes())?;
        if make_current {
            self.set_current(&key.kid)?;
        }
        Ok(path)
    }

    /// Makes a stored key the signing key (`skillup keys promote`, the second step of a staged
    /// rotation). The key must be in the directory.
    pub fn promote(&self, kid: &str) -> Result<()> {
        let known = self.load_all()?.into_iter().any(|k| k.kid == kid);
        if !known {
            return Err(Error::Keys(format!("no key {kid} in {}", self.dir.display())));
        }
        self.set_current(kid)
    }

    fn set_current(&self, kid: &str) -> Result<()> {
        write_private(&self.dir.join("current"), format!("{kid}\n").as_bytes())
    }

    /// Generates and stores a new key (off the async threads).
    pub async fn generate(&self, make_current: bool) -> Result<SigningKey> {
        let key = tokio::task::spawn_blocking(SigningKey::generate)
            .await
            .map_err(|e| Error::Keys(format!("key generation task: {e}")))??;
        self.store(&key, make_current)?;
        Ok(key)
    }

    /// The signing key's kid, if one is set.
    pub fn current_kid(&self) -> Result<Option<String>> {
        match std::fs::read_to_string(self.dir.join("current")) {
            Ok(s) => Ok(Some(s.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every key in the directory (signing and verification-only), sorted by kid.
    pub fn load_all(&self) -> Result<Vec<SigningKey>> {
        let mut keys = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "pem") {
                let pem = std::fs::read_to_string(&path)?;
                let key = SigningKey::from_pem(&pem)
                    .map_err(|e| Error::Keys(format!("{}: {e}", path.display())))?;
                keys.push(key);
            }
        }
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        Ok(keys)
    }

    /// Makes sure a signing key exists, generating one on first start (`skillup up`).
    /// Returns its kid and whether it was generated now.
    pub async fn ensure_signing_key(&self) -> Result<(String, bool)> {
        if let Some(kid) = self.current_kid()? {
            if self.dir.join(format!("{kid}.pem")).exists() {
                return Ok((kid, false));
            }
            return Err(Error::Keys(format!(
                "{}/current names {kid}, but {kid}.pem is missing",
                self.dir.display()
            )));
        }
        let key = self.generate(true).await?;
        Ok((key.kid, true))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(files::replace_private(path, bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // The worked example of RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(thumbprint(n, "AQAB"), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn the_shared_test_key_loads_with_a_stable_kid() {
        let key =
            SigningKey::from_pem(skillup_testkit::TEST_RSA_PRIVATE_PEM).expect("test key loads");
        assert_eq!(key.e, "AQAB");
        assert_eq!(key.n.len(), 683, "4096-bit modulus");
        assert_eq!(key.kid, thumbprint(&key.n, &key.e));
    }

    #[tokio::test]
    async fn store_load_and_current() {
        let dir = std::env::temp_dir().join(format!("skillup-keys-{}", uuid::Uuid::new_v4()));
        let store = KeyStore::new(&dir);
        assert!(store.current_kid().unwrap().is_none());
        let key = SigningKey::from_pem(skillup_testkit::TEST_RSA_PRIVATE_PEM).unwrap();
        store.store(&key, true).unwrap();
        assert_eq!(store.current_kid().unwrap().as_deref(), Some(key.kid.as_str()));
        assert_eq!(store.ensure_signing_key().await.unwrap(), (key.kid.clone(), false));
        let all = store.load_all().unwrap();
        assert_eq!(all.len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(format!("{}.pem", key.kid)))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_small_generated_key_round_trips() {
        // Generation itself, at a size that is quick in a debug build.
        let key = SigningKey::generate_bits(1024).expect("generates");
        let again = SigningKey::from_pem(key.private_pem.expose_secret()).unwrap();
        assert_eq!(key.kid, again.kid);
    }
}
