//! A stand-in push service (RFC 8030) with browsers subscribed to it, checking what a real
//! push service and a real browser check: the VAPID JWT (RFC 8292: ES256 under the `k` the
//! request carries, `aud` = this service's origin, `exp` in the future and at most 24 hours
//! away, `sub` a `mailto:` or `https:` URL), then the message decrypted with the subscriber's
//! private key (RFC 8291 `aes128gcm`), implemented here on aws-lc-rs — independently of the
//! sender's crate. It can answer 201, 404, 410, 429 with `Retry-After`, or 500, per browser.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_lc_rs::{
    aead, agreement,
    hkdf::{self, HKDF_SHA256},
};
use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{Running, serve};

/// How the push service answers a browser's next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 201: taken (the message is received).
    Created,
    /// 404 or 410: the subscription is gone.
    Gone(u16),
    /// 429 with `Retry-After` seconds.
    TooMany(u64),
    /// 500.
    Broken,
}

/// A message a browser received and decrypted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The browser (its subscription id).
    pub browser: String,
    pub ttl: u64,
    pub urgency: Option<String>,
    pub topic: Option<String>,
    /// The verified VAPID JWT's claims.
    pub claims: serde_json::Value,
    /// The public key it was verified with (`k=`).
    pub key: String,
    /// The decrypted payload, as JSON.
    pub payload: serde_json::Value,
}

/// A browser subscribed to the stand-in: what `PushSubscription.toJSON()` gives, and its
/// private key.
pub struct Browser {
    pub id: String,
    pub endpoint: String,
    /// base64url of the uncompressed P-256 public key.
    pub p256dh: String,
    /// base64url of the 16-byte secret.
    pub auth: String,
}

struct Keys {
    private: agreement::PrivateKey,
    public: Vec<u8>,
    auth: [u8; 16],
}

#[derive(Default)]
struct Service {
    origin: Mutex<String>,
    browsers: Mutex<HashMap<String, Arc<Keys>>>,
    answers: Mutex<HashMap<String, VecDeque<Answer>>>,
    received: Mutex<Vec<Received>>,
    /// Requests refused for what they carried (bad JWT, undecryptable), with the reason.
    refused: Mutex<Vec<String>>,
    /// Requests per browser, answered however.
    hits: Mutex<HashMap<String, u32>>,
    changed: tokio::sync::Notify,
}

pub struct PushStandIn {
    state: Arc<Service>,
    pub server: Running,
}

impl PushStandIn {
    pub async fn start() -> Self {
        let state = Arc::new(Service::default());
        let router = Router::new().route("/push/{id}", post(push)).with_state(state.clone());
        let server = serve(router).await;
        *state.origin.lock().unwrap() = server.base_url.clone();
        Self { state, server }
    }

    /// A new browser subscribed here.
    pub fn browser(&self) -> Browser {
        let private = agreement::PrivateKey::generate(&agreement::ECDH_P256).expect("a key");
        let public = private.compute_public_key().expect("its public key").as_ref().to_vec();
        let mut auth = [0u8; 16];
        aws_lc_rs::rand::fill(&mut auth).expect("random");
        let id = uuid::Uuid::now_v7().simple().to_string();
        let b = Browser {
            endpoint: format!("{}/push/{id}", self.server.base_url),
            p256dh: URL_SAFE_NO_PAD.encode(&public),
            auth: URL_SAFE_NO_PAD.encode(auth),
            id: id.clone(),
        };
        self.state.browsers.lock().unwrap().insert(id, Arc::new(Keys { private, public, auth }));
        b
    }

    /// How the next messages to `browser` are answered, in order (then 201).
    pub fn answer(&self, browser: &Browser, answers: &[Answer]) {
        self.state.answers.lock().unwrap().entry(browser.id.clone()).or_default().extend(answers);
    }

    /// Requests `browser` got so far, however answered.
    pub fn hits(&self, browser: &Browser) -> u32 {
        self.state.hits.lock().unwrap().get(&browser.id).copied().unwrap_or(0)
    }

    /// What was refused for its content, with the reasons.
    pub fn refused(&self) -> Vec<String> {
        self.state.refused.lock().unwrap().clone()
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until `browser` has received `n` messages (panics after `within`).
    pub async fn wait_for(&self, browser: &Browser, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.state.changed.notified();
            let got: Vec<Received> =
                self.received().into_iter().filter(|r| r.browser == browser.id).collect();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "{} of {n} push messages reached the browser in {within:?}; refused: {:?}",
                    got.len(),
                    self.refused()
                );
            }
        }
    }
}

async fn push(
    State(state): State<Arc<Service>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    *state.hits.lock().unwrap().entry(id.clone()).or_default() += 1;
    state.changed.notify_waiters();
    let Some(keys) = state.browsers.lock().unwrap().get(&id).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let next = state.answers.lock().unwrap().get_mut(&id).and_then(VecDeque::pop_front);
    match next {
        Some(Answer::Gone(code)) => {
            state.browsers.lock().unwrap().remove(&id);
            return StatusCode::from_u16(code).unwrap().into_response();
        }
        Some(Answer::TooMany(secs)) => {
            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", secs.to_string())])
                .into_response();
        }
        Some(Answer::Broken) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Some(Answer::Created) | None => {}
    }
    let origin = state.origin.lock().unwrap().clone();
    let checked = check(&origin, &headers).and_then(|(claims, key, ttl)| {
        let plain = decrypt(&keys, &body)?;
        let payload = serde_json::from_slice(&plain).map_err(|e| format!("payload: {e}"))?;
        Ok(Received {
            browser: id.clone(),
            ttl,
            urgency: header(&headers, "urgency"),
            topic: header(&headers, "topic"),
            claims,
            key,
            payload,
        })
    });
    let answer = match checked {
        Ok(r) => {
            state.received.lock().unwrap().push(r);
            (StatusCode::CREATED, [("location", format!("{origin}/message/{id}"))]).into_response()
        }
        Err(why) => {
            state.refused.lock().unwrap().push(why.clone());
            (StatusCode::FORBIDDEN, why).into_response()
        }
    };
    state.changed.notify_waiters();
    answer
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The VAPID authorization and the request's headers, as a push service checks them: the
/// JWT's claims and the TTL.
fn check(origin: &str, h: &HeaderMap) -> Result<(serde_json::Value, String, u64), String> {
    let ttl = header(h, "ttl").and_then(|t| t.parse::<u64>().ok()).ok_or("no TTL")?;
    if header(h, "content-encoding").as_deref() != Some("aes128gcm") {
        return Err("not aes128gcm".into());
    }
    let auth = header(h, "authorization").ok_or("no Authorization")?;
    let rest = auth.strip_prefix("vapid ").ok_or("not a vapid authorization")?;
    let mut t = None;
    let mut k = None;
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.to_owned()),
            Some(("k", v)) => k = Some(v.to_owned()),
            _ => {}
        }
    }
    let (t, k) = (t.ok_or("no t=")?, k.ok_or("no k=")?);
    let point = URL_SAFE_NO_PAD.decode(&k).map_err(|_| "k is not base64url")?;
    if point.len() != 65 || point[0] != 4 {
        return Err("k is not an uncompressed P-256 point".into());
    }
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&point[1..33]),
        &URL_SAFE_NO_PAD.encode(&point[33..]),
    )
    .map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[origin]);
    v.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&t, &key, &v)
        .map_err(|e| format!("the VAPID JWT: {e}"))?
        .claims;
    let now = chrono::Utc::now().timestamp();
    let exp = claims["exp"].as_i64().ok_or("exp is not a number")?;
    if exp > now + 24 * 3600 {
        return Err("exp is more than 24 hours away".into());
    }
    let sub = claims["sub"].as_str().unwrap_or_default();
    if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
        return Err(format!("sub {sub:?} is not a mailto: or https: URL"));
    }
    Ok((claims, k, ttl))
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, info: &[&[u8]], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    prk.expand(info, Len(len)).expect("a short expand").fill(&mut out).expect("fill");
    out
}

/// RFC 8291 on RFC 8188: the one record of a push message, as a browser opens it.
fn decrypt(keys: &Keys, body: &[u8]) -> Result<Vec<u8>, String> {
    if body.len() < 21 {
        return Err("shorter than its header".into());
    }
    let salt = &body[..16];
    let rs = u32::from_be_bytes(body[16..20].try_into().unwrap()) as usize;
    let idlen = body[20] as usize;
    if idlen != 65 || body.len() < 21 + idlen {
        return Err("the key id is not the sender's public key".into());
    }
    let sender = &body[21..21 + idlen];
    let mut record = body[21 + idlen..].to_vec();
    if record.len() > rs || record.len() < 17 {
        return Err("not exactly one record".into());
    }
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, sender);
    let ecdh = agreement::agree(&keys.private, peer, "ecdh", |s| Ok(s.to_vec()))
        .map_err(|_| "the sender's key does not agree")?;
    // IKM = HKDF(auth, ecdh, "WebPush: info" 0 ua_public as_public, 32)
    let prk_key = hkdf::Salt::new(HKDF_SHA256, &keys.auth).extract(&ecdh);
    let ikm = expand(&prk_key, &[b"WebPush: info\0", &keys.public, sender], 32);
    let prk = hkdf::Salt::new(HKDF_SHA256, salt).extract(&ikm);
    let cek = expand(&prk, &[b"Content-Encoding: aes128gcm\0"], 16);
    let nonce: [u8; 12] =
        expand(&prk, &[b"Content-Encoding: nonce\0"], 12).try_into().expect("12 bytes");
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_128_GCM, &cek).expect("a 16-byte key"),
    );
    let plain = key
        .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::empty(), &mut record)
        .map_err(|_| "the message does not decrypt")?;
    // The last record: the text, the delimiter 2, then zero padding.
    let end = plain.iter().rposition(|b| *b != 0).ok_or("no delimiter")?;
    if plain[end] != 2 {
        return Err("not the last record's delimiter".into());
    }
    Ok(plain[..end].to_vec())
}
