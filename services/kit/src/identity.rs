//! The caller's identity inside the cluster. The edge validates the access token (through
//! auth's `ValidateToken`), then forwards the identity as gRPC metadata (`x-user-id`,
//! `x-scopes`, `x-subscription-tier`, `x-email-verified`) together with a short-lived assertion
//! it signs with HMAC-SHA256 under a key only the mesh holds (`identity.key_file`, a Kubernetes
//! Secret). Every service's server runs [`IdentityLayer`]: plain identity headers are dropped,
//! a valid assertion puts them back from its own claims and adds an [`Identity`] to the
//! request's extensions, a bad or expired one is refused. So a pod that reaches a service
//! directly cannot act as a user by setting headers.
//!
//! Format: `v2.<base64url(protobuf claims)>.<base64url(HMAC-SHA256 over "v2.<claims>")>`
//! (the claims as [`Claims`]). `v1.` assertions (JSON claims, as signed before) still verify, so
//! services can be upgraded before the edge; the edge signs v2: a fifth of the JSON's cost to
//! write and to read, on every call.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::hmac;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderValue, Request, Response};
use serde::{Deserialize, Serialize};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::{Error, Result};

/// `x-user-id`: the validated account id.
pub const USER_ID: &str = "x-user-id";
/// `x-scopes`: space-separated scopes.
pub const SCOPES: &str = "x-scopes";
/// `x-subscription-tier`: the tier code.
pub const TIER: &str = "x-subscription-tier";
/// `x-email-verified`: "true" or "false".
pub const EMAIL_VERIFIED: &str = "x-email-verified";
/// `x-skillup-identity`: the signed assertion of the four above.
pub const ASSERTION: &str = "x-skillup-identity";
/// `x-request-id`: the request id the edge accepted or minted.
pub const REQUEST_ID: &str = "x-request-id";

/// Cache key prefix of an account's identity stamp (`auth:ver:{user_id}`): auth rewrites it on
/// every revocation and identity change; the edge compares it before reusing a decision.
pub const VERSION_KEY_PREFIX: &str = "auth:ver:";

/// The identity headers a client must never be able to set.
/// (Names parsed once: a `&str` key is parsed and hashed on every lookup.)
pub const IDENTITY_HEADERS: [http::HeaderName; 5] = [
    http::HeaderName::from_static(USER_ID),
    http::HeaderName::from_static(SCOPES),
    http::HeaderName::from_static(TIER),
    http::HeaderName::from_static(EMAIL_VERIFIED),
    http::HeaderName::from_static(ASSERTION),
];

/// Least key length, bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// A validated caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Account id (UUID text).
    #[serde(rename = "sub")]
    pub user_id: String,
    /// Scopes.
    #[serde(rename = "scp")]
    pub scopes: Vec<String>,
    /// Subscription tier code.
    pub tier: String,
    /// Whether the email address is confirmed.
    #[serde(rename = "ev")]
    pub email_verified: bool,
    /// Request id of the call that minted it.
    #[serde(rename = "rid", default)]
    pub request_id: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// The access token's id, when the identity came from one (auth uses it for logout).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// The token's session (refresh family) id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sid: String,
    /// The account's identity stamp the edge checked (see [`VERSION_KEY_PREFIX`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ver: String,
    /// The token's own expiry, Unix seconds (0 when not from a token).
    #[serde(rename = "texp", default, skip_serializing_if = "is_zero")]
    pub token_exp: i64,
    /// The client's address as the edge saw it (after its trusted proxies). Services take the
    /// address from here (see [`ClientAddr`]), never from a header a caller could set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// The signed form, for forwarding on service-to-service calls.
    #[serde(skip)]
    pub assertion: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Identity {
    /// Whether the caller holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The identity the kit's interceptor verified for this request, if any.
    pub fn of<T>(req: &tonic::Request<T>) -> Option<&Identity> {
        req.extensions().get::<Identity>()
    }

    /// Like [`Identity::of`], or UNAUTHENTICATED.
    pub fn require<T>(req: &tonic::Request<T>) -> std::result::Result<&Identity, tonic::Status> {
        Self::of(req).ok_or_else(|| {
            crate::error::status(
                skillup_proto::common::v1::ErrorCode::Unauthenticated,
                "sign in first: this call needs a validated caller",
            )
        })
    }

    /// The caller's account id, or UNAUTHENTICATED when the call carries no validated
    /// identity of an account.
    pub fn account<T>(req: &tonic::Request<T>) -> std::result::Result<uuid::Uuid, tonic::Status> {
        uuid::Uuid::parse_str(&Self::require(req)?.user_id).map_err(|_| {
            crate::error::status(
                skillup_proto::common::v1::ErrorCode::Unauthenticated,
                "the caller's identity is not an account",
            )
        })
    }

    /// Puts the assertion (and the plain headers) on an outgoing service-to-service call, so
    /// the next service sees the same caller.
    pub fn forward<T>(&self, req: &mut tonic::Request<T>) {
        let md = req.metadata_mut();
        let mut put = |k: &'static str, v: &str| {
            if let Ok(v) = v.parse() {
                md.insert(k, v);
            }
        };
        put(ASSERTION, &self.assertion);
        put(USER_ID, &self.user_id);
        put(SCOPES, &self.scopes.join(" "));
        put(TIER, &self.tier);
        put(EMAIL_VERIFIED, if self.email_verified { "true" } else { "false" });
        if !self.request_id.is_empty() {
            put(REQUEST_ID, &self.request_id);
        }
        // And the trace: the next service's span is a child of this one.
        crate::telemetry::inject_metadata(md);
    }
}

/// Why an assertion was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("the identity assertion is malformed")]
    Malformed,
    #[error("the identity assertion's signature does not match")]
    BadSignature,
    #[error("the identity assertion has expired")]
    Expired,
}

/// The mesh's assertion key, and the keys it replaced (still accepted while a rotation rolls
/// out). The key file holds one key per line: the first signs, every line verifies.
#[derive(Clone)]
pub struct IdentityKey {
    key: hmac::Key,
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
    pub fn sign(&self, identity: &Identity) -> String {
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
    pub fn verify(
        &self,
        assertion: &str,
        now: u64,
    ) -> std::result::Result<Identity, AssertionError> {
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
        let mut id: Identity = if version == "v2" {
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

/// The claims of a v2 assertion, as protobuf (the fields of [`Identity`] but the assertion).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Claims {
    #[prost(string, tag = "1")]
    pub sub: String,
    #[prost(string, repeated, tag = "2")]
    pub scp: Vec<String>,
    #[prost(string, tag = "3")]
    pub tier: String,
    #[prost(bool, tag = "4")]
    pub ev: bool,
    #[prost(string, tag = "5")]
    pub rid: String,
    #[prost(uint64, tag = "6")]
    pub exp: u64,
    #[prost(string, tag = "7")]
    pub jti: String,
    #[prost(string, tag = "8")]
    pub sid: String,
    #[prost(string, tag = "9")]
    pub ver: String,
    #[prost(int64, tag = "10")]
    pub texp: i64,
    #[prost(string, tag = "11")]
    pub ip: String,
}

impl Claims {
    /// `identity`'s claims, encoded as [`Claims`] without copying its strings first.
    fn encode_from(id: &Identity) -> Vec<u8> {
        use prost::encoding::{bool, int64, string, uint64};
        let mut buf = Vec::with_capacity(192);
        let text = |tag: u32, v: &String, buf: &mut Vec<u8>| {
            if !v.is_empty() {
                string::encode(tag, v, buf);
            }
        };
        text(1, &id.user_id, &mut buf);
        for s in &id.scopes {
            string::encode(2, s, &mut buf);
        }
        text(3, &id.tier, &mut buf);
        if id.email_verified {
            bool::encode(4, &true, &mut buf);
        }
        text(5, &id.request_id, &mut buf);
        if id.exp != 0 {
            uint64::encode(6, &id.exp, &mut buf);
        }
        text(7, &id.jti, &mut buf);
        text(8, &id.sid, &mut buf);
        text(9, &id.ver, &mut buf);
        if id.token_exp != 0 {
            int64::encode(10, &id.token_exp, &mut buf);
        }
        text(11, &id.ip, &mut buf);
        buf
    }
}

impl From<Claims> for Identity {
    fn from(c: Claims) -> Self {
        Identity {
            user_id: c.sub,
            scopes: c.scp,
            tier: c.tier,
            email_verified: c.ev,
            request_id: c.rid,
            exp: c.exp,
            jti: c.jti,
            sid: c.sid,
            ver: c.ver,
            token_exp: c.texp,
            ip: c.ip,
            assertion: String::new(),
        }
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

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// The client's address from a verified assertion: the edge signs one on every call it
/// forwards, public routes included (then with no account: an anonymous assertion). A call
/// without one (a direct gRPC caller) has no `ClientAddr`: its address is its peer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr(pub String);

impl ClientAddr {
    /// The address the edge vouched for, else the connection's peer, else `unknown`.
    pub fn of<T>(req: &tonic::Request<T>) -> String {
        req.extensions()
            .get::<ClientAddr>()
            .map(|c| c.0.clone())
            .or_else(|| req.remote_addr().map(|a| a.ip().to_string()))
            .unwrap_or_else(|| "unknown".into())
    }
}

/// The server side of the assertion: see the module docs. Without a key nothing can be
/// verified, so every identity header is dropped and every assertion refused (fail closed).
#[derive(Clone, Debug, Default)]
pub struct IdentityLayer {
    key: Option<Arc<IdentityKey>>,
}

impl IdentityLayer {
    pub fn new(key: Option<Arc<IdentityKey>>) -> Self {
        Self { key }
    }
}

impl<S> Layer<S> for IdentityLayer {
    type Service = IdentityService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        IdentityService { inner, key: self.key.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct IdentityService<S> {
    inner: S,
    key: Option<Arc<IdentityKey>>,
}

type BoxFut<T, E> = Pin<Box<dyn std::future::Future<Output = std::result::Result<T, E>> + Send>>;

impl<S> Service<Request<Body>> for IdentityService<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFut<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let admitted =
            admit(self.key.as_deref(), &mut parts.headers, &mut parts.extensions, parts.uri.path());
        match admitted {
            Ok(()) => Box::pin(self.inner.call(Request::from_parts(parts, body))),
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

/// What [`IdentityLayer`] does to a call (and what an in-process direct call does too):
/// drops every identity header; with a valid assertion, puts them back from its claims and
/// adds the [`Identity`] to `extensions`; a bad or expired assertion is UNAUTHENTICATED.
pub fn admit(
    key: Option<&IdentityKey>,
    headers: &mut http::HeaderMap,
    extensions: &mut http::Extensions,
    path: &str,
) -> std::result::Result<(), tonic::Status> {
    let [user_id, scopes, tier, email_verified, assertion_name] = IDENTITY_HEADERS;
    let assertion = headers.remove(&assertion_name);
    for h in [&user_id, &scopes, &tier, &email_verified] {
        headers.remove(h);
    }
    let Some(assertion) = assertion else { return Ok(()) };
    let verified = match (key, assertion.to_str()) {
        (Some(key), Ok(text)) => key.verify(text, now_secs()),
        _ => Err(AssertionError::BadSignature),
    };
    match verified {
        Ok(id) => {
            if !id.ip.is_empty() {
                extensions.insert(ClientAddr(id.ip.clone()));
            }
            // An anonymous assertion (a public route) vouches for the address only.
            if id.user_id.is_empty() {
                return Ok(());
            }
            let mut put = |k: http::HeaderName, v: &str| {
                if let Ok(v) = HeaderValue::from_str(v) {
                    headers.insert(k, v);
                }
            };
            put(user_id, &id.user_id);
            put(scopes, &id.scopes.join(" "));
            put(tier, &id.tier);
            headers.insert(
                email_verified,
                HeaderValue::from_static(if id.email_verified { "true" } else { "false" }),
            );
            // The assertion goes on as it came (services forward it on their own calls).
            headers.insert(assertion_name, assertion);
            extensions.insert(id);
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, %path, "identity assertion refused");
            Err(crate::error::status(
                skillup_proto::common::v1::ErrorCode::Unauthenticated,
                e.to_string(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(exp: u64) -> Identity {
        Identity {
            user_id: "u1".into(),
            scopes: vec!["user".into()],
            tier: "free".into(),
            email_verified: true,
            request_id: "r1".into(),
            exp,
            assertion: String::new(),
            ..Default::default()
        }
    }

    /// Issue 26.8: the client's address comes from the assertion alone; an anonymous one
    /// (a public route) vouches for the address and for no account.
    #[test]
    fn the_client_address_comes_only_from_an_assertion() {
        let key = IdentityKey::random();
        let admitted = |assertion: Option<String>| {
            let mut headers = http::HeaderMap::new();
            headers.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
            headers.insert(USER_ID, HeaderValue::from_static("forged"));
            if let Some(a) = assertion {
                headers.insert(ASSERTION, a.parse().unwrap());
            }
            let mut ext = http::Extensions::new();
            admit(Some(&key), &mut headers, &mut ext, "/x").unwrap();
            (headers, ext)
        };
        let (headers, ext) = admitted(None);
        assert!(ext.get::<ClientAddr>().is_none() && ext.get::<Identity>().is_none());
        assert!(!headers.contains_key(USER_ID));
        let anonymous =
            Identity { exp: now_secs() + 60, ip: "203.0.113.7".into(), ..Default::default() };
        let (headers, ext) = admitted(Some(key.sign(&anonymous)));
        assert_eq!(ext.get::<ClientAddr>(), Some(&ClientAddr("203.0.113.7".into())));
        assert!(ext.get::<Identity>().is_none(), "no account");
        assert!(!headers.contains_key(USER_ID) && !headers.contains_key(ASSERTION));
        let user = Identity { ip: "203.0.113.8".into(), ..id(now_secs() + 60) };
        let (headers, ext) = admitted(Some(key.sign(&user)));
        assert_eq!(ext.get::<ClientAddr>(), Some(&ClientAddr("203.0.113.8".into())));
        assert_eq!(ext.get::<Identity>().unwrap().user_id, "u1");
        assert_eq!(headers[USER_ID], "u1");
    }

    #[test]
    fn a_signed_identity_verifies_and_round_trips() {
        let key = IdentityKey::random();
        let a = key.sign(&id(100));
        let back = key.verify(&a, 99).unwrap();
        assert_eq!(back.user_id, "u1");
        assert_eq!(back.assertion, a);
        assert_eq!(key.verify(&a, 100), Err(AssertionError::Expired));
    }

    #[test]
    fn v2_claims_are_protobuf_and_v1_json_assertions_still_verify() {
        let key = IdentityKey::random();
        let full = Identity {
            scopes: vec!["user".into(), "admin".into()],
            email_verified: true,
            jti: "j".into(),
            sid: "s".into(),
            ver: "7".into(),
            token_exp: 123,
            ..id(100)
        };
        let a = key.sign(&full);
        assert!(a.starts_with("v2."));
        let (body, _) = a.rsplit_once('.').unwrap();
        let bytes = URL_SAFE_NO_PAD.decode(&body[3..]).unwrap();
        let claims = <Claims as prost::Message>::decode(bytes.as_slice()).unwrap();
        assert_eq!(Identity::from(claims), full, "every claim round-trips");
        assert_eq!(key.verify(&a, 99).unwrap(), Identity { assertion: a.clone(), ..full.clone() });
        // An assertion as the edge signed it before v2.
        let v1_body = format!("v1.{}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&full).unwrap()));
        let tag = hmac::sign(&key.key, v1_body.as_bytes());
        let v1 = format!("{v1_body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        assert_eq!(key.verify(&v1, 99).unwrap(), Identity { assertion: v1.clone(), ..full });
        assert_eq!(key.verify(&v1.replacen("v1.", "v3.", 1), 1), Err(AssertionError::Malformed));
    }

    #[test]
    fn another_key_or_a_changed_claim_is_refused() {
        let key = IdentityKey::random();
        let a = key.sign(&id(100));
        assert_eq!(IdentityKey::random().verify(&a, 1), Err(AssertionError::BadSignature));
        let forged = key.sign(&Identity { user_id: "u2".into(), ..id(100) });
        let (forged_body, _) = forged.rsplit_once('.').unwrap();
        let (_, tag) = a.rsplit_once('.').unwrap();
        assert_eq!(
            key.verify(&format!("{forged_body}.{tag}"), 1),
            Err(AssertionError::BadSignature)
        );
        assert_eq!(key.verify("v1.e30", 1), Err(AssertionError::Malformed));
        assert_eq!(key.verify("garbage", 1), Err(AssertionError::Malformed));
    }

    #[test]
    fn forwarding_puts_the_assertion_on_the_next_call() {
        let key = IdentityKey::random();
        let mut me = id(u64::MAX);
        me.assertion = key.sign(&me);
        let mut next = tonic::Request::new(());
        me.forward(&mut next);
        let md = next.metadata();
        assert_eq!(md.get(ASSERTION).unwrap().to_str().unwrap(), me.assertion);
        assert_eq!(md.get(USER_ID).unwrap(), "u1");
        assert_eq!(md.get(REQUEST_ID).unwrap(), "r1");
        let back = key.verify(md.get(ASSERTION).unwrap().to_str().unwrap(), 1).unwrap();
        assert_eq!(back.user_id, "u1");
    }

    #[test]
    fn short_keys_are_refused_and_files_are_created_once() {
        assert!(IdentityKey::from_bytes(b"short").is_err());
        let dir = std::env::temp_dir().join(format!("idkey-{}", uuid::Uuid::new_v4()));
        let path = default_key_path(&dir);
        assert!(IdentityKey::load(&path, false).is_err(), "no silent creation");
        let k1 = IdentityKey::load(&path, true).unwrap();
        let k2 = IdentityKey::load(&path, false).unwrap();
        let a = k1.sign(&id(100));
        assert!(k2.verify(&a, 1).is_ok(), "the same key comes back from the file");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_rotation_accepts_the_previous_key_until_it_is_removed() {
        let old = "a".repeat(64);
        let new = "b".repeat(64);
        let before = IdentityKey::from_lines(old.as_bytes()).unwrap();
        // Step 1 (every pod): the new key added as a second line — still signing with the old.
        let adding = IdentityKey::from_lines(format!("{old}\n{new}\n").as_bytes()).unwrap();
        // Step 2: the new key first — signs with the new, still accepts the old.
        let swapped = IdentityKey::from_lines(format!("\n{new}\n{old}\n").as_bytes()).unwrap();
        // Step 3: the old key removed.
        let after = IdentityKey::from_lines(new.as_bytes()).unwrap();
        let by_old = before.sign(&id(100));
        let by_new = swapped.sign(&id(100));
        assert_eq!(adding.sign(&id(100)), by_old, "the first line signs");
        for k in [&adding, &swapped] {
            assert!(k.verify(&by_old, 1).is_ok() && k.verify(&by_new, 1).is_ok());
        }
        assert!(before.verify(&by_new, 1).is_err());
        assert_eq!(after.verify(&by_old, 1), Err(AssertionError::BadSignature));
        assert!(after.verify(&by_new, 1).is_ok());
        assert!(IdentityKey::from_lines(b"\n \n").is_err(), "an empty file is no key");
    }
}
