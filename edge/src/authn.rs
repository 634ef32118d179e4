//! Auth delegation. Every protected request's bearer token goes to auth's `ValidateToken`
//! (signature, expiry, blacklist, active user, scopes). A success may be reused for a few
//! seconds — keyed by a hash of the whole token, never past its expiry, and only while the
//! account's identity stamp in the shared cache (`auth:ver:{user}`) is the one auth returned —
//! so a logout or revocation takes effect on the very next request at every edge instance.
//! Revocation events on the bus also evict decisions at once (memory, and the stamp read).
//! Fail closed: if auth or the cache cannot answer, the request is refused with 503.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use skillup_kit::{
    Shutdown,
    bus::{SharedBus, SubscriptionSpec},
    cache::SharedCache,
    identity::{CACHE_EPOCH_KEY, Caller, IdentityKey, VERSION_KEY_PREFIX, now_secs},
};
use skillup_proto::{
    auth::v1::{
        EmailVerified, PasswordChanged, TokensRevoked, ValidateTokenRequest, ValidateTokenResponse,
        auth_service_client::AuthServiceClient,
    },
    common::v1::EventEnvelope,
    events::Event as _,
    subscribe::v1::SubscriptionChanged,
};
use tonic::Code;

use crate::{errors::ApiError, upstream::Upstream};

/// A token's validation, as the edge keeps it: the caller auth vouched for, and until when it
/// is used without asking again.
#[derive(Debug, Clone)]
pub struct Decision {
    pub caller: Caller,
    reuse_until: Instant,
}

impl Decision {
    /// The caller to assert to services for one call: this request's id and client, and an
    /// expiry that never outlives the token.
    pub fn identity(&self, request_id: &str, ttl: Duration, client: &str) -> Caller {
        let exp = (now_secs() + ttl.as_secs()).min(self.caller.token_exp.max(0) as u64 + 1);
        Caller {
            request_id: request_id.to_owned(),
            exp,
            ip: client.to_owned(),
            ..self.caller.clone()
        }
    }
}

/// Asks auth, remembers briefly, forgets on revocation.
#[derive(Clone)]
pub struct Authenticator {
    auth: Arc<Upstream>,
    cache: SharedCache,
    decisions: Arc<RwLock<HashMap<[u8; 32], Decision>>>,
    reuse: Duration,
    max: usize,
    pub key: Arc<IdentityKey>,
    pub assertion_ttl: Duration,
}

impl Authenticator {
    pub fn new(
        auth: Arc<Upstream>,
        cache: SharedCache,
        key: Arc<IdentityKey>,
        reuse: Duration,
        max: usize,
        assertion_ttl: Duration,
    ) -> Self {
        Self { auth, cache, decisions: Arc::default(), reuse, max, key, assertion_ttl }
    }

    /// Validates `token` for a route needing `scopes`.
    pub async fn authenticate(&self, token: &str, scopes: &[String]) -> Result<Decision, ApiError> {
        if token.is_empty() || token.len() > 8192 {
            return Err(ApiError::unauthenticated(
                "UNAUTHENTICATED",
                "the access token is not valid",
            ));
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if !self.reuse.is_zero() {
            let cached = self.decisions.read().expect("decisions lock").get(&key).cloned();
            if let Some(d) = cached {
                let fresh =
                    d.reuse_until > Instant::now() && d.caller.token_exp > now_secs() as i64;
                if fresh && self.stamp_matches(&d).await? {
                    if !d.caller.has_scopes(scopes) {
                        return Err(ApiError::new(
                            403,
                            "PERMISSION_DENIED",
                            "this action needs a scope the token does not have",
                        ));
                    }
                    metrics::counter!("edge_auth_decisions_total", "source" => "cache")
                        .increment(1);
                    return Ok(d);
                }
                self.decisions.write().expect("decisions lock").remove(&key);
            }
        }
        let d = self.ask(token, scopes).await?;
        metrics::counter!("edge_auth_decisions_total", "source" => "auth").increment(1);
        if !self.reuse.is_zero() {
            let mut map = self.decisions.write().expect("decisions lock");
            if map.len() >= self.max {
                let now = Instant::now();
                map.retain(|_, d| d.reuse_until > now);
                if map.len() >= self.max {
                    map.clear();
                }
            }
            map.insert(key, d.clone());
        }
        Ok(d)
    }

    /// The account's identity stamp still equals the one seen at validation, and the cache
    /// still holds auth's revocation marks (its sentinel is there: a cache that lost its data
    /// lost the stamps too, and only auth can say what is still valid).
    async fn stamp_matches(&self, d: &Decision) -> Result<bool, ApiError> {
        let key = format!("{VERSION_KEY_PREFIX}{}", d.caller.user_id);
        match self.cache.get_many(&[&key, CACHE_EPOCH_KEY]).await {
            Ok(v) => {
                Ok(v[1].is_some() && v[0].as_deref().unwrap_or_default() == d.caller.ver.as_bytes())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cache unavailable: refusing instead of trusting a cached decision");
                Err(ApiError::unavailable("authentication is unavailable, retry later", Some(1)))
            }
        }
    }

    async fn ask(&self, token: &str, scopes: &[String]) -> Result<Decision, ApiError> {
        // A question, never a change: safe to ask again when auth is restarting.
        let res = self
            .auth
            .call(Duration::from_secs(3), true, |channel, left| {
                let mut req = tonic::Request::new(ValidateTokenRequest {
                    token: token.to_owned(),
                    required_scopes: scopes.to_vec(),
                });
                req.set_timeout(left);
                async move { AuthServiceClient::new(channel).validate_token(req).await }
            })
            .await;
        let res = match res {
            Ok(r) => Ok(r),
            Err(crate::upstream::CallError::Open(wait)) => {
                return Err(ApiError::unavailable(
                    "authentication is unavailable, retry later",
                    Some(wait.as_secs().max(1)),
                ));
            }
            Err(crate::upstream::CallError::Status(s)) => Err(s),
        };
        match res {
            Ok(r) => Ok(self.decision(r.into_inner())),
            Err(s) => Err(match s.code() {
                Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument => {
                    let mut e = ApiError::from_status(&s);
                    if s.code() == Code::InvalidArgument {
                        e = ApiError::unauthenticated(
                            "UNAUTHENTICATED",
                            "the access token is not valid",
                        );
                    }
                    e
                }
                _ => {
                    tracing::warn!(code = ?s.code(), message = s.message(), "auth cannot validate tokens right now");
                    ApiError::unavailable("authentication is unavailable, retry later", Some(1))
                }
            }),
        }
    }

    fn decision(&self, r: ValidateTokenResponse) -> Decision {
        let caller = Caller {
            user_id: r.user_id,
            scopes: r.scopes,
            tier: r.tier,
            email_verified: r.email_verified,
            jti: r.jti,
            sid: r.session_id,
            token_exp: r.expires_at.map_or(0, |t| t.seconds),
            ver: r.identity_version,
            locale: r.locale,
            api_key: r.api_key_id,
            ..Caller::default()
        };
        Decision { caller, reuse_until: Instant::now() + self.reuse }
    }

    /// How many decisions are kept (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.decisions.read().expect("decisions lock").len()
    }

    /// Forgets every decision about `user_id`.
    pub fn evict_user(&self, user_id: &str) -> usize {
        let mut map = self.decisions.write().expect("decisions lock");
        let before = map.len();
        map.retain(|_, d| d.caller.user_id != user_id);
        before - map.len()
    }

    /// Forgets the decision about one token.
    pub fn evict_token(&self, token: &str) {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.decisions.write().expect("decisions lock").remove(&key);
    }

    /// Listens for revocations and identity changes, on this instance's own queue (every edge
    /// replica hears every event), until `shutdown`.
    pub fn spawn_listener(
        &self,
        bus: SharedBus,
        shutdown: Shutdown,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let spec = SubscriptionSpec::new(
                "edge.revocations",
                &[
                    TokensRevoked::KIND,
                    SubscriptionChanged::KIND,
                    EmailVerified::KIND,
                    PasswordChanged::KIND,
                ],
            )
            .per_instance();
            loop {
                let mut consumer = match bus.subscribe(&spec, 64).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "edge cannot subscribe to revocations yet; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = shutdown.wait() => return,
                        }
                    }
                };
                loop {
                    let delivery = tokio::select! {
                        d = consumer.next() => match d { Some(d) => d, None => break },
                        _ = shutdown.wait() => return,
                    };
                    if let Ok(env) =
                        <EventEnvelope as prost::Message>::decode(delivery.message.payload.as_ref())
                        && !env.user_id.is_empty()
                    {
                        let n = this.evict_user(&env.user_id);
                        tracing::debug!(event = %env.r#type, user_id = %env.user_id, evicted = n, "decisions evicted");
                    }
                    let _ = delivery.ack().await;
                }
            }
        })
    }
}
