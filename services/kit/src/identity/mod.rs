//! The caller's identity inside the cluster. The edge validates the access token (through
//! auth's `ValidateToken`), then forwards the identity as gRPC metadata (`x-user-id`,
//! `x-scopes`, `x-subscription-tier`, `x-email-verified`) together with a short-lived assertion
//! it signs with Ed25519 under a private key only the edge holds (`identity.key_file`, a
//! Kubernetes Secret). Every service's server runs [`IdentityLayer`] with the public key alone
//! (`identity.public_key_file`): plain identity headers are dropped, a valid assertion puts
//! them back from its own claims and adds a [`Caller`] to the request's extensions, a bad or
//! expired one is refused. So a pod that reaches a service directly cannot act as a user by
//! setting headers, and a compromised service cannot mint one either.
//!
//! Format: `v3.<base64url(protobuf claims)>.<base64url(Ed25519 signature over "v3.<claims>")>`
//! (the claims as [`Claims`]). The HMAC-signed `v1.`/`v2.` forms are no longer accepted: a
//! service holding the shared secret could mint them.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderValue, Request, Response};
use serde::{Deserialize, Serialize};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::{Error, Result};

mod key;
mod layer;

pub use self::{
    key::{IdentityKey, IdentityVerifier, KeyFile, default_key_path, public_key_path},
    layer::{IdentityLayer, IdentityService, admit},
};

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

/// Cache key that is there for as long as the cache holds auth's revocation markers (no
/// expiry): auth writes it once it has put them in. Missing, the cache lost its data (flushed,
/// replaced, evicted): auth answers from PostgreSQL while it puts the markers back, and the
/// edge trusts no decision it cached before (`skillup_auth`'s `recovery`).
pub const CACHE_EPOCH_KEY: &str = "auth:epoch";

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

/// Who is calling: the one type for it everywhere. Auth builds it from a validated token, the
/// edge caches it per token and asserts it (signed) on every upstream call, and services read
/// it from the request; an anonymous assertion (a public route) carries only the client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
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
    /// The language to answer in (`en`, `ru`): the account's, else the request's
    /// `Accept-Language` as the edge negotiated it (see [`crate::i18n::Locale::of`]).
    #[serde(rename = "loc", default, skip_serializing_if = "String::is_empty")]
    pub locale: String,
    /// The API key's id when the caller came with one instead of a session's access token
    /// (then `sid` and `jti` are empty).
    #[serde(rename = "key", default, skip_serializing_if = "String::is_empty")]
    pub api_key: String,
    /// The signed form, for forwarding on service-to-service calls.
    #[serde(skip)]
    pub assertion: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Caller {
    /// The account, when the caller is one.
    pub fn user(&self) -> Option<uuid::Uuid> {
        uuid::Uuid::parse_str(&self.user_id).ok()
    }

    /// The token's session, when the caller came with one.
    pub fn session(&self) -> Option<uuid::Uuid> {
        uuid::Uuid::parse_str(&self.sid).ok()
    }

    /// Whether a person signed in (a session's access token), not a program with an API key.
    pub fn signed_in(&self) -> bool {
        self.session().is_some() && self.api_key.is_empty()
    }

    /// Whether the caller holds every scope of `required`.
    pub fn has_scopes(&self, required: &[String]) -> bool {
        required.iter().all(|r| self.scopes.contains(r))
    }

    /// Whether the caller holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The identity the kit's interceptor verified for this request, if any.
    pub fn of<T>(req: &tonic::Request<T>) -> Option<&Caller> {
        req.extensions().get::<Caller>()
    }

    /// Like [`Caller::of`], or UNAUTHENTICATED.
    pub fn require<T>(req: &tonic::Request<T>) -> std::result::Result<&Caller, tonic::Status> {
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

/// The claims of an assertion, as protobuf (the fields of [`Caller`] but the assertion).
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
    #[prost(string, tag = "12")]
    pub loc: String,
    #[prost(string, tag = "13")]
    pub key: String,
}

impl Claims {
    /// `identity`'s claims, encoded as [`Claims`] without copying its strings first.
    fn encode_from(id: &Caller) -> Vec<u8> {
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
        text(12, &id.locale, &mut buf);
        text(13, &id.api_key, &mut buf);
        buf
    }
}

impl From<Claims> for Caller {
    fn from(c: Claims) -> Self {
        Caller {
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
            locale: c.loc,
            api_key: c.key,
            assertion: String::new(),
        }
    }
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
            .or_else(|| {
                req.extensions()
                    .get::<crate::mesh::MeshConnectInfo>()
                    .and_then(|i| i.remote)
                    .or_else(|| req.remote_addr())
                    .map(|a| a.ip().to_string())
            })
            .unwrap_or_else(|| "unknown".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(exp: u64) -> Caller {
        Caller {
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
            ext.insert(crate::mesh::Peer::component("edge"));
            admit(Some(&key.verifier()), &mut headers, &mut ext, "/x").unwrap();
            (headers, ext)
        };
        let (headers, ext) = admitted(None);
        assert!(ext.get::<ClientAddr>().is_none() && ext.get::<Caller>().is_none());
        assert!(!headers.contains_key(USER_ID));
        let anonymous =
            Caller { exp: now_secs() + 60, ip: "203.0.113.7".into(), ..Default::default() };
        let (headers, ext) = admitted(Some(key.sign(&anonymous)));
        assert_eq!(ext.get::<ClientAddr>(), Some(&ClientAddr("203.0.113.7".into())));
        assert!(ext.get::<Caller>().is_none(), "no account");
        assert!(!headers.contains_key(USER_ID) && !headers.contains_key(ASSERTION));
        let user = Caller { ip: "203.0.113.8".into(), ..id(now_secs() + 60) };
        let (headers, ext) = admitted(Some(key.sign(&user)));
        assert_eq!(ext.get::<ClientAddr>(), Some(&ClientAddr("203.0.113.8".into())));
        assert_eq!(ext.get::<Caller>().unwrap().user_id, "u1");
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
    fn claims_are_protobuf_signed_with_ed25519_and_hmac_forms_are_refused() {
        let key = IdentityKey::random();
        let full = Caller {
            scopes: vec!["user".into(), "admin".into()],
            email_verified: true,
            jti: "j".into(),
            sid: "s".into(),
            ver: "7".into(),
            token_exp: 123,
            ..id(100)
        };
        let a = key.sign(&full);
        assert!(a.starts_with("v3."));
        let (body, signature) = a.rsplit_once('.').unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(signature).unwrap().len(), 64, "an Ed25519 signature");
        let bytes = URL_SAFE_NO_PAD.decode(&body[3..]).unwrap();
        let claims = <Claims as prost::Message>::decode(bytes.as_slice()).unwrap();
        assert_eq!(Caller::from(claims), full, "every claim round-trips");
        assert_eq!(key.verify(&a, 99).unwrap(), Caller { assertion: a.clone(), ..full.clone() });
        // The public half alone verifies the same.
        let public = IdentityVerifier::from_lines(key.verifier().to_lines().as_bytes()).unwrap();
        assert_eq!(public.verify(&a, 99), key.verify(&a, 99));
        // A program's API key round-trips too, and is never a signed-in person.
        let program =
            Caller { api_key: "k1".into(), sid: String::new(), jti: String::new(), ..full.clone() };
        let back = key.verify(&key.sign(&program), 99).unwrap();
        assert_eq!(back.api_key, "k1");
        assert!(!back.signed_in());
        let person = Caller { sid: uuid::Uuid::now_v7().to_string(), ..full.clone() };
        assert!(person.signed_in());
        // The symmetric forms are gone: whoever held their secret could mint any user.
        let secret = b"0123456789abcdef0123456789abcdef";
        for (version, claims) in
            [("v1", serde_json::to_vec(&full).unwrap()), ("v2", Claims::encode_from(&full))]
        {
            let body = format!("{version}.{}", URL_SAFE_NO_PAD.encode(claims));
            let tag = aws_lc_rs::hmac::sign(
                &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret),
                body.as_bytes(),
            );
            let old = format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
            assert_eq!(public.verify(&old, 1), Err(AssertionError::Malformed), "{version}");
        }
        // The v3 body with another signature's length is malformed, not a panic.
        assert_eq!(public.verify(&format!("{body}.AAAA"), 1), Err(AssertionError::Malformed));
    }

    /// The verified-assertion memory answers exactly as the signature check: a repeat of a
    /// valid assertion, the same one once expired, and near-copies of it (another body under
    /// its signature, its body under another signature, a truncation) alike.
    #[test]
    fn a_remembered_assertion_gets_the_answer_the_signature_check_gives() {
        let key = IdentityKey::random();
        let v = key.verifier();
        let a = key.sign(&id(100));
        let other = key.sign(&Caller { user_id: "u2".into(), ..id(100) });
        let (body, signature) = a.rsplit_once('.').unwrap();
        let (other_body, other_signature) = other.rsplit_once('.').unwrap();
        let near = [
            format!("{other_body}.{signature}"),
            format!("{body}.{other_signature}"),
            a[..a.len() - 1].to_owned(),
            format!("{a}A"),
            a.replacen("v3.", "v2.", 1),
        ];
        for now in [1, 99, 1, 100, 101, 99] {
            // First call fills the memory; repeats come from it.
            for _ in 0..3 {
                assert_eq!(v.verify(&a, now), v.verify_signature(&a, now), "at {now}");
                for n in &near {
                    assert_eq!(v.verify(n, now), v.verify_signature(n, now), "{n} at {now}");
                    assert!(v.verify(n, now).is_err());
                }
            }
        }
        assert_eq!(v.verify(&a, 99).unwrap().assertion, a, "the assertion itself comes back");
        assert_eq!(v.verify(&a, 100), Err(AssertionError::Expired));
        // Another process's verifier (no memory of it) agrees.
        let fresh = IdentityVerifier::from_lines(v.to_lines().as_bytes()).unwrap();
        assert_eq!(fresh.verify(&a, 99), v.verify(&a, 99));
    }

    #[test]
    fn the_public_file_holds_the_keys_in_order_and_refuses_junk() {
        let old = "a".repeat(64);
        let new = "b".repeat(64);
        let both = IdentityKey::from_lines(format!("{new}\n{old}\n").as_bytes()).unwrap();
        let lines = both.verifier().to_lines();
        assert_eq!(lines.lines().count(), 2);
        let first = IdentityKey::from_lines(new.as_bytes()).unwrap().verifier().to_lines();
        assert!(lines.starts_with(&first), "the signing key's public half first");
        assert!(IdentityVerifier::from_lines(b"").is_err());
        assert!(IdentityVerifier::from_lines(b"abcd\n").is_err());
        assert!(IdentityVerifier::from_lines(old.as_bytes()).is_ok(), "any 32 bytes parse");
        let forged = IdentityKey::from_lines(old.as_bytes()).unwrap();
        let only_new = IdentityVerifier::from_lines(first.as_bytes()).unwrap();
        assert_eq!(only_new.verify(&forged.sign(&id(100)), 1), Err(AssertionError::BadSignature));
    }

    #[test]
    fn another_key_or_a_changed_claim_is_refused() {
        let key = IdentityKey::random();
        let a = key.sign(&id(100));
        assert_eq!(IdentityKey::random().verify(&a, 1), Err(AssertionError::BadSignature));
        let forged = key.sign(&Caller { user_id: "u2".into(), ..id(100) });
        let (forged_body, _) = forged.rsplit_once('.').unwrap();
        let (_, tag) = a.rsplit_once('.').unwrap();
        assert_eq!(
            key.verify(&format!("{forged_body}.{tag}"), 1),
            Err(AssertionError::BadSignature)
        );
        assert_eq!(key.verify("v3.e30", 1), Err(AssertionError::Malformed));
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
        let public = IdentityVerifier::load(&public_key_path(&path)).unwrap();
        assert!(public.verify(&a, 1).is_ok(), "the public file is written beside it");
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
