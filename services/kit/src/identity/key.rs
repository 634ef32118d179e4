//! The assertion key: the file an operator rotates (one key per line; the first signs, all
//! verify), loaded into the [`IdentityKey`] that signs and verifies.

use super::*;

/// The mesh's assertion key, and the keys it replaced (still accepted while a rotation rolls
/// out). The key file holds one key per line: the first signs, every line verifies.
#[derive(Clone)]
pub struct IdentityKey {
    pub(super) key: hmac::Key,
    previous: Vec<hmac::Key>,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(..)")
    }
}

impl IdentityKey {
    /// A key from raw bytes (at least 32).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(Error::Keys(format!(
                "the identity key must be at least {MIN_KEY_BYTES} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(Self { key: hmac::Key::new(hmac::HMAC_SHA256, bytes), previous: Vec::new() })
    }

    /// A key file's contents: one key per line (blank lines ignored); the first signs.
    pub fn from_lines(text: &[u8]) -> Result<Self> {
        let mut lines = text.split(|b| *b == b'\n').map(trim).filter(|l| !l.is_empty());
        let mut key = Self::from_bytes(
            lines.next().ok_or_else(|| Error::Keys("the identity key file is empty".into()))?,
        )?;
        for line in lines {
            key.previous.push(Self::from_bytes(line)?.key);
        }
        Ok(key)
    }

    /// A fresh random key (tests, and `up` on first start).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        Self::from_bytes(&bytes).expect("32 bytes")
    }

    /// Reads the key file (its trimmed contents are the key). With `create`, a missing file
    /// is created with 32 random bytes (hex, mode 0600) — for `up` and single-machine setups;
    /// in Kubernetes the file comes from a Secret and is never created.
    pub fn load(path: &Path, create: bool) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => Self::from_lines(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut raw = [0u8; 32];
                getrandom::fill(&mut raw).map_err(|e| Error::Keys(e.to_string()))?;
                let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                if let Some(dir) = path.parent() {
                    crate::files::private_dir(dir)?;
                }
                // Newline-terminated: a key appended later starts on a line of its own.
                write_private(path, format!("{hex}\n").as_bytes())?;
                // Another process may have raced us: whatever is on disk now wins.
                Self::from_lines(&std::fs::read(path)?)
            }
            Err(e) => Err(Error::Keys(format!("reading the identity key {}: {e}", path.display()))),
        }
    }

    /// Signs `identity` (its `exp` as given).
    pub fn sign(&self, identity: &Caller) -> String {
        let claims = Claims::encode_from(identity);
        let mut out = String::with_capacity(3 + claims.len() * 4 / 3 + 48);
        out.push_str("v2.");
        URL_SAFE_NO_PAD.encode_string(&claims, &mut out);
        let tag = hmac::sign(&self.key, out.as_bytes());
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut out);
        out
    }

    /// Checks signature and expiry; `now` in Unix seconds.
    pub fn verify(&self, assertion: &str, now: u64) -> std::result::Result<Caller, AssertionError> {
        if assertion.len() > 4096 {
            return Err(AssertionError::Malformed);
        }
        let (body, tag) = assertion.rsplit_once('.').ok_or(AssertionError::Malformed)?;
        let (version, claims) = body.split_once('.').ok_or(AssertionError::Malformed)?;
        if version != "v2" && version != "v1" {
            return Err(AssertionError::Malformed);
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| AssertionError::Malformed)?;
        std::iter::once(&self.key)
            .chain(&self.previous)
            .find(|k| hmac::verify(k, body.as_bytes(), &tag).is_ok())
            .ok_or(AssertionError::BadSignature)?;
        let bytes = URL_SAFE_NO_PAD.decode(claims).map_err(|_| AssertionError::Malformed)?;
        let mut id: Caller = if version == "v2" {
            <Claims as prost::Message>::decode(bytes.as_slice())
                .map_err(|_| AssertionError::Malformed)?
                .into()
        } else {
            serde_json::from_slice(&bytes).map_err(|_| AssertionError::Malformed)?
        };
        if id.exp <= now {
            return Err(AssertionError::Expired);
        }
        id.assertion = assertion.to_owned();
        Ok(id)
    }
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
        IdentityKey::from_lines(text.as_bytes())?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::private_dir(dir)?;
        }
        Ok(crate::files::replace_private(&self.path, text.as_bytes())?)
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
