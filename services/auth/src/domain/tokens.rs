//! RS256 access tokens. Verification pins the algorithm to RS256 and the key to one of ours by
//! `kid`; `jku`, `x5u` and `jwk` headers are never read, so nothing a token says can make us
//! fetch or trust a key. The key set reloads from disk, so `skillup keys generate` (rotation)
//! takes effect without a restart while earlier keys keep verifying.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use crate::keys::KeyStore;
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

/// Largest token we look at.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// Clock skew tolerated on `nbf` (auth replicas' clocks). Not on `exp`: expiry is decided
/// here alone, and every path (REST, Nginx's validate, WebSocket re-checks) must agree that an
/// expired token is expired — the edge's assertions never outlive the token either.
pub const LEEWAY_SECS: u64 = 60;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// User id.
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// Always "access".
    pub typ: String,
    /// Space-separated scopes.
    pub scope: String,
    pub tier: String,
    pub email_verified: bool,
    /// Session (refresh family) id.
    pub sid: String,
    pub email: String,
    /// The account's language when the token was minted (a newer one is in the cache).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub loc: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(&'static str),
}

/// One public key as a JWK.
#[derive(Debug, Clone)]
pub struct PublicJwk {
    pub kid: String,
    pub n: String,
    pub e: String,
}

struct KeySet {
    signing_kid: String,
    signing: EncodingKey,
    verifying: HashMap<String, ParsedPublicKey>,
    public: Vec<PublicJwk>,
}

/// Tokens whose signature already verified, by SHA-256 of their exact bytes (as Envoy's
/// `jwt_authn` cache does). Only the signature check and the parse are skipped on a hit: the
/// time claims are checked on every call, and revocation is never cached.
const VERIFIED_CACHE_MAX: usize = 50_000;

type VerifiedCache = std::sync::Mutex<HashMap<[u8; 32], Arc<AccessClaims>>>;

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    keys: Arc<RwLock<Arc<KeySet>>>,
    verified: Arc<VerifiedCache>,
    dir: PathBuf,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Loads every key in the directory; the one named by `current` signs.
    pub fn load(dir: impl Into<PathBuf>, issuer: &str, audience: &str) -> Result<Self, String> {
        let dir = dir.into();
        let set = load_set(&dir)?;
        Ok(Self {
            keys: Arc::new(RwLock::new(Arc::new(set))),
            verified: Arc::new(std::sync::Mutex::new(HashMap::new())),
            dir,
            issuer: issuer.into(),
            audience: audience.into(),
        })
    }

    /// Re-reads the key directory (rotation); keeps the old set if the new one is broken.
    pub fn reload(&self) -> Result<(), String> {
        let set = load_set(&self.dir)?;
        let mut current = self.keys.write().unwrap_or_else(|p| p.into_inner());
        // A key that left the set must take its tokens with it, cached or not.
        if current.verifying.keys().any(|kid| !set.verifying.contains_key(kid)) {
            self.verified.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        *current = Arc::new(set);
        Ok(())
    }

    /// Reloads every `every` until the task is dropped.
    pub fn spawn_reloader(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                // File reads and RSA key parsing: off the async threads.
                let keys = me.clone();
                match tokio::task::spawn_blocking(move || keys.reload()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "signing keys not reloaded"),
                    Err(e) => tracing::warn!(error = %e, "key reload task failed"),
                }
            }
        })
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn jwks(&self) -> Vec<PublicJwk> {
        self.current().public.clone()
    }

    /// Signs (RSA-4096: milliseconds of CPU, so on the blocking pool).
    pub async fn sign(&self, claims: AccessClaims) -> Result<String, String> {
        let set = self.current();
        tokio::task::spawn_blocking(move || {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(set.signing_kid.clone());
            header.typ = Some("JWT".into());
            jsonwebtoken::encode(&header, &claims, &set.signing).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Verifies signature, algorithm, `kid`, `exp`/`nbf` (± leeway), `iss`, `aud` and `typ`.
    ///
    /// Done directly on aws-lc-rs with keys parsed once: jsonwebtoken rebuilds the RSA key from
    /// its components on every verify, which cost three times the signature check itself.
    /// The order is the safe one: header → our key by `kid` → signature → claims, so nothing
    /// of the payload is trusted before the signature holds.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid("malformed"));
        }
        let digest: [u8; 32] =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
                .as_ref()
                .try_into()
                .map_err(|_| TokenError::Invalid("malformed"))?;
        let cached = self.verified.lock().unwrap_or_else(|p| p.into_inner()).get(&digest).cloned();
        let claims = match cached {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verify_signature(token)?);
                let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= VERIFIED_CACHE_MAX {
                    // Bounded: drop what has expired, and everything if that was not enough.
                    let now = unix_now();
                    cache.retain(|_, c| c.exp + LEEWAY_SECS as i64 >= now);
                    if cache.len() >= VERIFIED_CACHE_MAX {
                        cache.clear();
                    }
                }
                cache.insert(digest, claims.clone());
                claims
            }
        };
        self.check_claims(&claims)?;
        Ok((*claims).clone())
    }

    /// Header, key and signature; then the claims parse.
    fn verify_signature(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid("malformed"));
        };
        let header: JwsHeader = decode_json(h64).ok_or(TokenError::Invalid("malformed header"))?;
        // Exactly RS256: `none` in any casing, HS*, PS*, ES* are all refused here.
        if header.alg != "RS256" {
            return Err(TokenError::Invalid("algorithm not allowed"));
        }
        if header.crit.is_some() {
            return Err(TokenError::Invalid("critical header extensions are not supported"));
        }
        let set = self.current();
        let kid = header.kid.as_deref().ok_or(TokenError::Invalid("no key id"))?;
        let key = set.verifying.get(kid).ok_or(TokenError::Invalid("unknown key id"))?;
        let signature = B64.decode(s64).map_err(|_| TokenError::Invalid("malformed signature"))?;
        let signed = &token[..h64.len() + 1 + p64.len()];
        key.verify_sig(signed.as_bytes(), &signature)
            .map_err(|_| TokenError::Invalid("bad signature"))?;

        decode_json(p64).ok_or(TokenError::Invalid("missing or malformed claims"))
    }

    /// What can change with time or config: checked on every call, cached or not.
    fn check_claims(&self, claims: &AccessClaims) -> Result<(), TokenError> {
        let now = unix_now();
        let leeway = LEEWAY_SECS as i64;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf - leeway > now {
            return Err(TokenError::Invalid("not valid yet"));
        }
        if claims.iss != self.issuer {
            return Err(TokenError::Invalid("wrong issuer"));
        }
        if claims.aud != self.audience {
            return Err(TokenError::Invalid("wrong audience"));
        }
        if claims.typ != "access" {
            return Err(TokenError::Invalid("not an access token"));
        }
        Ok(())
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }
}

/// The JOSE header fields we look at. Anything else (`jku`, `x5u`, `jwk`, …) is ignored:
/// keys come only from our key directory.
#[derive(Deserialize)]
struct JwsHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    serde_json::from_slice(&B64.decode(part).ok()?).ok()
}

fn load_set(dir: &std::path::Path) -> Result<KeySet, String> {
    let store = KeyStore::new(dir);
    let keys = store.load_all().map_err(|e| e.to_string())?;
    let current = store.current_kid().map_err(|e| e.to_string())?.ok_or_else(|| {
        format!("no signing key in {} (run `skillup keys generate`)", dir.display())
    })?;
    let mut verifying = HashMap::new();
    let mut public = Vec::new();
    let mut signing = None;
    let mut seen = HashSet::new();
    for key in keys {
        if !seen.insert(key.kid.clone()) {
            continue;
        }
        let dk = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &key.public_der)
            .map_err(|e| format!("key {}: {e}", key.kid))?;
        if key.kid == current {
            signing = Some(
                EncodingKey::from_rsa_pem(key.private_pem.expose_secret().as_bytes())
                    .map_err(|e| format!("key {}: {e}", key.kid))?,
            );
        }
        verifying.insert(key.kid.clone(), dk);
        public.push(PublicJwk { kid: key.kid, n: key.n, e: key.e });
    }
    let signing =
        signing.ok_or_else(|| format!("signing key {current} not found in {}", dir.display()))?;
    Ok(KeySet { signing_kid: current, signing, verifying, public })
}

#[cfg(test)]
mod tests {
    use crate::keys::{KeyStore, SigningKey};

    use super::*;

    fn claims(now: i64) -> AccessClaims {
        AccessClaims {
            iss: "skillup".into(),
            aud: "skillup-api".into(),
            sub: uuid::Uuid::now_v7().to_string(),
            iat: now,
            nbf: now,
            exp: now + 600,
            jti: uuid::Uuid::now_v7().to_string(),
            typ: "access".into(),
            scope: "user".into(),
            tier: "free".into(),
            email_verified: false,
            sid: uuid::Uuid::now_v7().to_string(),
            email: "a@example.com".into(),
            loc: "ru".into(),
        }
    }

    #[tokio::test]
    async fn a_cached_token_dies_with_its_key() {
        let dir = std::env::temp_dir().join(format!("skillup-tok-{}", uuid::Uuid::new_v4()));
        let store = KeyStore::new(&dir);
        let old = SigningKey::from_pem(skillup_testkit::TEST_RSA_PRIVATE_PEM).unwrap();
        store.store(&old, true).unwrap();
        let keys = TokenKeys::load(&dir, "skillup", "skillup-api").unwrap();
        let token = keys.sign(claims(unix_now())).await.unwrap();
        assert!(keys.verify(&token).is_ok());
        assert!(keys.verify(&token).is_ok(), "second call is served from the cache");
        assert_eq!(keys.verified.lock().unwrap().len(), 1);

        // Rotation alone keeps the old key for verification…
        let new = SigningKey::generate_bits(2048).unwrap();
        store.store(&new, true).unwrap();
        keys.reload().unwrap();
        assert!(keys.verify(&token).is_ok(), "old tokens verify until the old key is removed");
        // …removing it revokes every token it signed, cached ones included.
        std::fs::remove_file(dir.join(format!("{}.pem", old.kid))).unwrap();
        keys.reload().unwrap();
        assert_eq!(keys.verify(&token), Err(TokenError::Invalid("unknown key id")));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn time_claims_are_checked_on_cache_hits_too() {
        let dir = std::env::temp_dir().join(format!("skillup-tok-{}", uuid::Uuid::new_v4()));
        KeyStore::new(&dir)
            .store(&SigningKey::from_pem(skillup_testkit::TEST_RSA_PRIVATE_PEM).unwrap(), true)
            .unwrap();
        let keys = TokenKeys::load(&dir, "skillup", "skillup-api").unwrap();
        // Already past exp + leeway: refused on the first call and on a (forced) cache hit.
        let mut c = claims(unix_now() - 1000);
        c.exp = unix_now() - 120;
        let token = keys.sign(c.clone()).await.unwrap();
        assert_eq!(keys.verify(&token), Err(TokenError::Expired));
        let digest: [u8; 32] =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
                .as_ref()
                .try_into()
                .unwrap();
        keys.verified.lock().unwrap().insert(digest, Arc::new(c));
        assert_eq!(keys.verify(&token), Err(TokenError::Expired));
        let _ = std::fs::remove_dir_all(dir);
    }
}
