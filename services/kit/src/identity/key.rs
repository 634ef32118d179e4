//! The assertion keys: the edge's private file an operator rotates (one secret per line; the
//! first signs, all verify), loaded into the [`IdentityKey`] that signs, and the public file
//! every service reads, loaded into the [`IdentityVerifier`] that only verifies.
//!
//! Each line of `identity.key` is a secret of at least 32 bytes (64 hex digits as written by
//! `skillup keys init`); the Ed25519 key pair is derived from it (its seed is the SHA-256 of a
//! fixed label and the line), so key files written before the assertion became asymmetric
//! keep working. `identity.pub` holds the matching public keys, one per line in the same order
//! (64 hex digits each), and is written beside the key file whenever that is.

use aws_lc_rs::signature::{self as sig, KeyPair as _};

use super::*;

/// Public keys that verify assertions: what every service holds. It cannot sign, so a
/// compromised service cannot mint a user.
///
/// An Ed25519 verification costs about 24 µs (`examples/identity_cost.rs`) and one request's
/// assertion is verified at every hop (ai, then subscribe and prompt with the forwarded
/// assertion, several times each), so the assertions this process verified are remembered
/// (whole assertion → claims, [`VERIFIED_CACHE`] of them): a repeat skips the signature check
/// and is still refused once expired. Only an assertion byte for byte identical to one whose
/// signature checked can hit, so the answer is the one the signature check would give.
pub struct IdentityVerifier {
    /// The signing key's public half first, then the ones it replaced.
    keys: Vec<[u8; 32]>,
    verified: quick_cache::sync::Cache<String, Caller>,
}

/// How many verified assertions a process remembers (a few hundred bytes each).
pub const VERIFIED_CACHE: usize = 4096;

impl std::fmt::Debug for IdentityVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityVerifier({} keys)", self.keys.len())
    }
}

impl IdentityVerifier {
    /// The public-key file's contents: one key per line (64 hex digits; blank lines ignored).
    pub fn from_lines(text: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(text)
            .map_err(|_| Error::Keys("the identity public key file is not text".into()))?;
        let mut keys = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            keys.push(parse_hex32(line).ok_or_else(|| {
                Error::Keys(format!(
                    "an identity public key is 64 hex digits, got {} characters",
                    line.len()
                ))
            })?);
        }
        if keys.is_empty() {
            return Err(Error::Keys("the identity public key file is empty".into()));
        }
        Ok(Self::of_keys(keys))
    }

    fn of_keys(keys: Vec<[u8; 32]>) -> Self {
        Self { keys, verified: quick_cache::sync::Cache::new(VERIFIED_CACHE) }
    }

    /// Reads the public-key file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Keys(format!("reading the identity public key {}: {e}", path.display()))
        })?;
        Self::from_lines(&bytes)
    }

    /// The file's text: one key per line, the signing one first.
    pub fn to_lines(&self) -> String {
        self.keys.iter().map(|k| format!("{}\n", hex(k))).collect()
    }

    /// Checks signature and expiry; `now` in Unix seconds. An assertion verified before is
    /// answered from memory (see the type's docs), with the same answer.
    pub fn verify(&self, assertion: &str, now: u64) -> std::result::Result<Caller, AssertionError> {
        if let Some(mut id) = self.verified.get(assertion) {
            if id.exp <= now {
                return Err(AssertionError::Expired);
            }
            id.assertion = assertion.to_owned();
            return Ok(id);
        }
        let id = self.verify_signature(assertion, now)?;
        self.verified
            .insert(assertion.to_owned(), Caller { assertion: String::new(), ..id.clone() });
        Ok(id)
    }

    /// [`IdentityVerifier::verify`] without the memory: the signature checked every time.
    pub fn verify_signature(
        &self,
        assertion: &str,
        now: u64,
    ) -> std::result::Result<Caller, AssertionError> {
        if assertion.len() > 4096 {
            return Err(AssertionError::Malformed);
        }
        let (body, signature) = assertion.rsplit_once('.').ok_or(AssertionError::Malformed)?;
        let claims = body.strip_prefix("v3.").ok_or(AssertionError::Malformed)?;
        let mut raw = [0u8; 64];
        match URL_SAFE_NO_PAD.decode_slice(signature, &mut raw) {
            Ok(64) => {}
            _ => return Err(AssertionError::Malformed),
        }
        self.keys
            .iter()
            .find(|k| {
                sig::UnparsedPublicKey::new(&sig::ED25519, k).verify(body.as_bytes(), &raw).is_ok()
            })
            .ok_or(AssertionError::BadSignature)?;
        let bytes = URL_SAFE_NO_PAD.decode(claims).map_err(|_| AssertionError::Malformed)?;
        let mut id: Caller = <Claims as prost::Message>::decode(bytes.as_slice())
            .map_err(|_| AssertionError::Malformed)?
            .into();
        if id.exp <= now {
            return Err(AssertionError::Expired);
        }
        id.assertion = assertion.to_owned();
        Ok(id)
    }
}

/// The edge's key: signs assertions (and verifies them, with the keys it replaced).
pub struct IdentityKey {
    signer: sig::Ed25519KeyPair,
    verifier: Arc<IdentityVerifier>,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(..)")
    }
}

/// The label the Ed25519 seed is derived under (see the module docs).
const SEED_LABEL: &[u8] = b"skillup identity assertion ed25519 v3\0";

fn key_pair(secret: &[u8]) -> Result<sig::Ed25519KeyPair> {
    if secret.len() < MIN_KEY_BYTES {
        return Err(Error::Keys(format!(
            "the identity key must be at least {MIN_KEY_BYTES} bytes, got {}",
            secret.len()
        )));
    }
    use sha2::Digest as _;
    let seed = sha2::Sha256::new().chain_update(SEED_LABEL).chain_update(secret).finalize();
    sig::Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|e| Error::Keys(format!("deriving the identity key: {e}")))
}

fn public_of(pair: &sig::Ed25519KeyPair) -> [u8; 32] {
    pair.public_key().as_ref().try_into().expect("an Ed25519 public key is 32 bytes")
}

impl IdentityKey {
    /// A key from a secret (at least 32 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let signer = key_pair(bytes)?;
        let verifier = Arc::new(IdentityVerifier::of_keys(vec![public_of(&signer)]));
        Ok(Self { signer, verifier })
    }

    /// A key file's contents: one secret per line (blank lines ignored); the first signs.
    pub fn from_lines(text: &[u8]) -> Result<Self> {
        let mut lines = text.split(|b| *b == b'\n').map(trim).filter(|l| !l.is_empty());
        let first =
            lines.next().ok_or_else(|| Error::Keys("the identity key file is empty".into()))?;
        let signer = key_pair(first)?;
        let mut keys = vec![public_of(&signer)];
        for line in lines {
            keys.push(public_of(&key_pair(line)?));
        }
        Ok(Self { signer, verifier: Arc::new(IdentityVerifier::of_keys(keys)) })
    }

    /// A fresh random key (tests, and `up` on first start).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        Self::from_bytes(&bytes).expect("32 bytes")
    }

    /// Reads the key file. With `create`, a missing file is created with 32 random bytes
    /// (hex, mode 0600) — for `up` and single-machine setups; in Kubernetes the file comes
    /// from a Secret and is never created. Either way the public-key file beside it
    /// ([`public_key_path`]) is written when missing or different, where it can be.
    pub fn load(path: &Path, create: bool) -> Result<Self> {
        let key = match std::fs::read(path) {
            Ok(bytes) => Self::from_lines(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut raw = [0u8; 32];
                getrandom::fill(&mut raw).map_err(|e| Error::Keys(e.to_string()))?;
                if let Some(dir) = path.parent() {
                    crate::files::private_dir(dir)?;
                }
                // Newline-terminated: a key appended later starts on a line of its own.
                write_private(path, format!("{}\n", hex(&raw)).as_bytes())?;
                // Another process may have raced us: whatever is on disk now wins.
                Self::from_lines(&std::fs::read(path)?)?
            }
            Err(e) => {
                return Err(Error::Keys(format!(
                    "reading the identity key {}: {e}",
                    path.display()
                )));
            }
        };
        if create {
            key.write_public(&public_key_path(path))?;
        }
        Ok(key)
    }

    /// Writes the public-key file for this key (the services' half) unless it already says
    /// the same.
    pub fn write_public(&self, path: &Path) -> Result<()> {
        let text = self.verifier.to_lines();
        if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
            return Ok(());
        }
        Ok(crate::files::replace_private(path, text.as_bytes())?)
    }

    /// What services hold: the public keys.
    pub fn verifier(&self) -> Arc<IdentityVerifier> {
        self.verifier.clone()
    }

    /// Signs `identity` (its `exp` as given).
    pub fn sign(&self, identity: &Caller) -> String {
        let claims = Claims::encode_from(identity);
        let mut out = String::with_capacity(3 + claims.len() * 4 / 3 + 90);
        out.push_str("v3.");
        URL_SAFE_NO_PAD.encode_string(&claims, &mut out);
        let signature = self.signer.sign(out.as_bytes());
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut out);
        out
    }

    /// Checks signature and expiry; `now` in Unix seconds.
    pub fn verify(&self, assertion: &str, now: u64) -> std::result::Result<Caller, AssertionError> {
        self.verifier.verify(assertion, now)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut f) => Ok(f.write_all(data)?),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    Ok(std::fs::write(path, data)?)
}

/// The identity key file as an operator changes it (`skillup keys identity …`): one hex key
/// per line, the first signs, all verify. Keys are named by a fingerprint (the first 12 hex
/// digits of the SHA-256 of the line), so no key is ever printed.
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
    lines: Vec<String>,
}

impl KeyFile {
    /// Reads the file (a missing one is empty).
    pub fn read(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::Keys(format!("reading {}: {e}", path.display()))),
        };
        let lines = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned);
        Ok(Self { path: path.to_owned(), lines: lines.collect() })
    }

    /// The keys' fingerprints, the signing one first.
    pub fn fingerprints(&self) -> Vec<String> {
        self.lines.iter().map(|l| fingerprint(l)).collect()
    }

    /// Adds a new random key as the last line (it verifies; it signs once promoted). Returns
    /// its fingerprint.
    pub fn add(&mut self) -> Result<String> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| Error::Keys(e.to_string()))?;
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let fp = fingerprint(&hex);
        self.lines.push(hex);
        Ok(fp)
    }

    fn position(&self, fp: &str) -> Result<usize> {
        let fp = fp.trim();
        let found: Vec<usize> = (0..self.lines.len())
            .filter(|&i| fp.len() >= 6 && fingerprint(&self.lines[i]).starts_with(fp))
            .collect();
        match found.as_slice() {
            [i] => Ok(*i),
            [] => Err(Error::Keys(format!("no key {fp} in {}", self.path.display()))),
            _ => Err(Error::Keys(format!("{fp} names more than one key; give more of it"))),
        }
    }

    /// Makes a key the signing one (first line); the others keep verifying.
    pub fn promote(&mut self, fp: &str) -> Result<()> {
        let i = self.position(fp)?;
        let line = self.lines.remove(i);
        self.lines.insert(0, line);
        Ok(())
    }

    /// Removes a key that no longer signs.
    pub fn retire(&mut self, fp: &str) -> Result<()> {
        let i = self.position(fp)?;
        if i == 0 {
            return Err(Error::Keys(
                "that key signs: promote another one first, and retire this one after every \
                 component has restarted with it"
                    .into(),
            ));
        }
        self.lines.remove(i);
        Ok(())
    }

    /// Writes the file back atomically, owner-only, every line newline-terminated. Refuses
    /// to write a file no key could be read from.
    pub fn write(&self) -> Result<()> {
        let text: String = self.lines.iter().map(|l| format!("{l}\n")).collect();
        let key = IdentityKey::from_lines(text.as_bytes())?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::private_dir(dir)?;
        }
        crate::files::replace_private(&self.path, text.as_bytes())?;
        key.write_public(&public_key_path(&self.path))
    }
}

fn fingerprint(line: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(line.trim().as_bytes())[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The default key file: `<keys_dir>/identity.key`.
pub fn default_key_path(keys_dir: &Path) -> PathBuf {
    keys_dir.join("identity.key")
}

/// The public-key file beside a key file: `identity.key` → `identity.pub`.
pub fn public_key_path(key_file: &Path) -> PathBuf {
    key_file.with_extension("pub")
}
