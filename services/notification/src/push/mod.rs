//! Web Push: a user's notifications delivered to the browsers they subscribed, through each
//! browser's push service (RFC 8030), encrypted for that browser (RFC 8291 `aes128gcm`) and
//! signed as this application server (RFC 8292 VAPID).
//!
//! Each request carries `TTL`, `Urgency` and a `Topic` (the task's or payment's id), so a newer
//! state of the same thing replaces an older one still waiting in the push service. 404 and
//! 410 mean the browser unsubscribed: its row goes. 429 and 5xx (and a push service not
//! answering) are tried again with backoff, honouring `Retry-After`. Payloads stay small
//! (title, an excerpt, the page to open; in the reader's language), so 413 never happens.
//! Endpoints are checked twice against [`endpoint::Reach`] (see there).

pub mod endpoint;
pub mod vapid;

use std::{collections::HashMap, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use crate::{
    domain::{Notification, NotificationKind, PushDevice, PushSubscriptionInput},
    error::{NotificationError, Result},
    store::{push::PushStore, push_subscription},
};

pub use endpoint::Reach;
pub use vapid::VapidKey;

/// Most devices a user keeps; adding one more lets the longest unused go.
pub const MAX_DEVICES: usize = 20;

/// How long a push service keeps a message for a browser that is offline, seconds.
pub const TTL_SECS: u64 = 24 * 3600;

/// How long a VAPID JWT is valid; one is signed per push service origin and reused until an
/// hour before it ends.
const JWT_SECS: u64 = 12 * 3600;

/// The longest `Retry-After` waited for; a push service asking for more is given up on for
/// this notification.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How the service pushes: its key, who it says it is, and where it may call.
#[derive(Clone, Debug)]
pub struct PushSettings {
    pub key: VapidKey,
    /// The VAPID `sub` (`mailto:` or `https:`).
    pub subject: String,
    pub reach: Reach,
}

/// What became of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The push service took it.
    Delivered,
    /// The browser is gone (404/410): its subscription was deleted.
    Gone,
    /// The push service refused it (a 4xx other than 404/410/429), or kept failing.
    Failed,
}

/// The push client.
#[derive(Clone)]
pub struct Pusher {
    settings: Arc<PushSettings>,
    client: reqwest::Client,
    store: PushStore,
    /// Base of the links notifications open.
    public_url: String,
    /// Signed VAPID JWTs by origin, with when they stop being reused (Unix seconds).
    tokens: Arc<quick_cache::sync::Cache<String, (String, u64)>>,
}

/// What a browser is sent (the console's service worker shows it).
#[derive(Serialize)]
struct Payload<'a> {
    title: &'a str,
    body: String,
    /// The page to open on a click.
    url: String,
    /// Replaces an earlier notification about the same thing.
    tag: &'a str,
    kind: &'a str,
    id: String,
}

#[derive(Debug)]
enum Attempt {
    Retry(Option<Duration>, String),
    Done(Outcome),
}

impl Pusher {
    pub fn new(db: sea_orm::DatabaseConnection, settings: PushSettings, public_url: &str) -> Self {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(endpoint::Resolver(settings.reach)))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("the push client builds");
        Self {
            settings: Arc::new(settings),
            client,
            store: PushStore::new(db),
            public_url: public_url.trim_end_matches('/').to_owned(),
            tokens: Arc::new(quick_cache::sync::Cache::new(256)),
        }
    }

    /// The application server key browsers subscribe with.
    pub fn public_key(&self) -> &str {
        self.settings.key.public_key()
    }

    /// Files a browser's subscription for `user` (see the RPC's rules); the longest unused of
    /// more than [`MAX_DEVICES`] go.
    pub async fn add(&self, user: Uuid, s: PushSubscriptionInput) -> Result<PushDevice> {
        use skillup_kit::invalid;
        let refused = |field: &'static str, why: String| NotificationError::Invalid(field, why);
        let endpoint = s.endpoint.trim().to_owned();
        if let Err(why) = self.settings.reach.check(&endpoint) {
            tracing::debug!(%why, "a push endpoint was refused");
            return Err(refused("endpoint", invalid::push_endpoint("endpoint")));
        }
        if let Some(host) =
            reqwest::Url::parse(&endpoint).ok().and_then(|u| u.host_str().map(str::to_owned))
            && endpoint::resolves_within(self.settings.reach, &host).await == Some(false)
        {
            return Err(refused("endpoint", invalid::push_endpoint("endpoint")));
        }
        let p256dh = decoded(&s.p256dh)
            .filter(|k| {
                k.len() == 65 && web_push_native::p256::PublicKey::from_sec1_bytes(k).is_ok()
            })
            .ok_or_else(|| refused("keys.p256dh", invalid::push_key("keys.p256dh")))?;
        let auth = decoded(&s.auth)
            .filter(|a| a.len() == 16)
            .ok_or_else(|| refused("keys.auth", invalid::push_key("keys.auth")))?;
        let expires_at = match s.expiration_ms {
            None => None,
            Some(ms) => Some(
                chrono::DateTime::from_timestamp_millis(ms)
                    .ok_or_else(|| refused("expiration_time", invalid::uuid("expiration_time")))?,
            ),
        };
        let row = push_subscription::Model {
            id: Uuid::now_v7(),
            user_id: user,
            endpoint,
            p256dh: URL_SAFE_NO_PAD.encode(p256dh),
            auth: URL_SAFE_NO_PAD.encode(auth),
            created_at: Utc::now(),
            expires_at,
            last_delivered_at: None,
        };
        let stored = self.store.upsert(row).await?;
        let mut all = self.store.of_user(user).await?;
        if all.len() > MAX_DEVICES {
            all.sort_by_key(|d| std::cmp::Reverse(d.last_delivered_at.unwrap_or(d.created_at)));
            let extra: Vec<Uuid> =
                all[MAX_DEVICES..].iter().map(|d| d.id).filter(|id| *id != stored.id).collect();
            self.store.delete_ids(extra).await?;
        }
        Ok(device(&stored))
    }

    /// The user's devices, newest first.
    pub async fn devices(&self, user: Uuid) -> Result<Vec<PushDevice>> {
        Ok(self.store.of_user(user).await?.iter().map(device).collect())
    }

    /// Stops pushing to one of the user's devices.
    pub async fn remove(&self, user: Uuid, id: &str) -> Result<()> {
        let not_found =
            || NotificationError::NotFound(skillup_kit::invalid::not_found("push subscription"));
        let id = Uuid::parse_str(id).map_err(|_| not_found())?;
        if self.store.delete(user, id).await? { Ok(()) } else { Err(not_found()) }
    }

    /// Pushes `n` (worded for its reader already) to every device of `user`, at once; what
    /// became of each. Never fails: each device's trouble is its own.
    pub async fn deliver(&self, user: Uuid, n: &Notification) -> Vec<Outcome> {
        match self.store.of_user(user).await {
            Ok(devices) => self.deliver_to(&devices, n).await,
            Err(e) => {
                tracing::warn!(error = %e, %user, "the push devices could not be read");
                Vec::new()
            }
        }
    }

    /// The devices of each of `users` who has any, read at once (none when they cannot be
    /// read: the push is skipped, the rest of the delivery goes on).
    pub(crate) async fn devices_of(
        &self,
        users: &[Uuid],
    ) -> HashMap<Uuid, Vec<push_subscription::Model>> {
        match self.store.of_users(users).await {
            Ok(devices) => {
                let mut by_user: HashMap<Uuid, Vec<push_subscription::Model>> = HashMap::new();
                for d in devices {
                    by_user.entry(d.user_id).or_default().push(d);
                }
                by_user
            }
            Err(e) => {
                tracing::warn!(error = %e, "the push devices could not be read");
                HashMap::new()
            }
        }
    }

    /// [`Pusher::deliver`] to devices already read.
    pub(crate) async fn deliver_to(
        &self,
        devices: &[push_subscription::Model],
        n: &Notification,
    ) -> Vec<Outcome> {
        if devices.is_empty() {
            return Vec::new();
        }
        let topic = topic(n);
        let body = self.payload(n, &topic);
        let sends = devices.iter().map(|d| self.send(d, &body, &topic, urgency(n.kind)));
        futures::future::join_all(sends).await
    }

    fn payload(&self, n: &Notification, topic: &str) -> Vec<u8> {
        let page = match n.kind {
            NotificationKind::GenerationCompleted | NotificationKind::GenerationFailed => n
                .data
                .get("task_id")
                .map_or_else(|| "/library".to_owned(), |t| format!("/library/{t}")),
            NotificationKind::PaymentSucceeded
            | NotificationKind::PaymentFailed
            | NotificationKind::SubscriptionChanged => "/billing".to_owned(),
        };
        let p = Payload {
            title: &n.title,
            body: n.body.chars().take(200).collect(),
            url: format!("{}{page}", self.public_url),
            tag: topic,
            kind: kind_name(n.kind),
            id: n.id.to_string(),
        };
        serde_json::to_vec(&p).expect("a payload serializes")
    }

    async fn send(
        &self,
        d: &push_subscription::Model,
        body: &[u8],
        topic: &str,
        urgency: &str,
    ) -> Outcome {
        use backon::Retryable as _;
        let outcome = (|| self.attempt(d, body, topic, urgency))
            .retry(
                backon::ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(250))
                    .with_max_delay(Duration::from_secs(10))
                    .with_max_times(4)
                    .with_jitter(),
            )
            .when(|e| matches!(e, Attempt::Retry(after, _) if after.is_none_or(|a| a <= MAX_RETRY_AFTER)))
            .adjust(|e, backoff| match e {
                Attempt::Retry(Some(after), _) => Some(*after),
                _ => backoff,
            })
            .await;
        let outcome = match outcome {
            Ok(o) | Err(Attempt::Done(o)) => o,
            Err(Attempt::Retry(_, why)) => {
                tracing::warn!(device = %d.id, %why, "a push was given up on");
                Outcome::Failed
            }
        };
        match outcome {
            Outcome::Delivered => {
                if let Err(e) = self.store.delivered(d.id, Utc::now()).await {
                    tracing::debug!(error = %e, "the delivery time was not noted");
                }
            }
            Outcome::Gone => {
                if let Err(e) = self.store.delete_ids(vec![d.id]).await {
                    tracing::warn!(error = %e, "a gone push subscription was not deleted");
                }
            }
            Outcome::Failed => {}
        }
        let label = match outcome {
            Outcome::Delivered => "delivered",
            Outcome::Gone => "gone",
            Outcome::Failed => "failed",
        };
        metrics::counter!("notification_pushes_total", "outcome" => label).increment(1);
        outcome
    }

    /// One request; `Err` to try again (or give up, for `Done`).
    async fn attempt(
        &self,
        d: &push_subscription::Model,
        body: &[u8],
        topic: &str,
        urgency: &str,
    ) -> std::result::Result<Outcome, Attempt> {
        let request = self.request(d, body, topic, urgency).map_err(|why| {
            tracing::warn!(device = %d.id, %why, "a push could not be made");
            Attempt::Done(Outcome::Failed)
        })?;
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(Attempt::Retry(None, transport(&e))),
        };
        let status = response.status().as_u16();
        match status {
            200..=299 => Ok(Outcome::Delivered),
            404 | 410 => Err(Attempt::Done(Outcome::Gone)),
            429 | 500..=599 => {
                Err(Attempt::Retry(retry_after(response.headers()), format!("HTTP {status}")))
            }
            _ => {
                let said: String =
                    response.text().await.unwrap_or_default().chars().take(200).collect();
                tracing::warn!(device = %d.id, status, %said, "the push service refused a push");
                Err(Attempt::Done(Outcome::Failed))
            }
        }
    }

    fn request(
        &self,
        d: &push_subscription::Model,
        body: &[u8],
        topic: &str,
        urgency: &str,
    ) -> std::result::Result<reqwest::RequestBuilder, String> {
        let origin =
            self.settings.reach.check(&d.endpoint).map_err(|why| format!("endpoint {why}"))?;
        let key = decoded(&d.p256dh)
            .and_then(|k| web_push_native::p256::PublicKey::from_sec1_bytes(&k).ok())
            .ok_or("a stored key does not parse")?;
        let auth: [u8; 16] = decoded(&d.auth)
            .and_then(|a| a.try_into().ok())
            .ok_or("a stored secret is not 16 bytes")?;
        let uri: http::Uri = d.endpoint.parse().map_err(|_| "the endpoint is not a URI")?;
        let mut request =
            web_push_native::WebPushBuilder::new(uri, key, web_push_native::Auth::from(auth))
                .with_valid_duration(Duration::from_secs(TTL_SECS))
                .build(body.to_vec())
                .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        let value = |v: &str| http::HeaderValue::from_str(v).map_err(|e| e.to_string());
        headers.insert(http::header::AUTHORIZATION, value(&self.authorization(&origin))?);
        headers.insert("urgency", value(urgency)?);
        headers.insert("topic", value(topic)?);
        let (parts, body) = request.into_parts();
        Ok(self.client.post(parts.uri.to_string()).headers(parts.headers).body(body))
    }

    /// The VAPID header for `origin`: a JWT signed once and reused until an hour before it
    /// ends.
    fn authorization(&self, origin: &str) -> String {
        let now = skillup_kit::identity::now_secs();
        if let Some((header, until)) = self.tokens.get(origin)
            && now < until
        {
            return header;
        }
        let header = self.settings.key.authorization(origin, &self.settings.subject, now, JWT_SECS);
        self.tokens.insert(origin.to_owned(), (header.clone(), now + JWT_SECS - 3600));
        header
    }
}

fn device(d: &push_subscription::Model) -> PushDevice {
    PushDevice {
        id: d.id,
        endpoint: d.endpoint.clone(),
        created_at: d.created_at,
        last_delivered_at: d.last_delivered_at,
    }
}

fn decoded(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD.decode(s.replace('+', "-").replace('/', "_")).ok()
}

/// What a newer push about the same thing replaces: the task's or the payment's id (32 hex
/// digits, within the 32 URL-safe characters a `Topic` may have), or the subscription.
fn topic(n: &Notification) -> String {
    let id = n.data.get("task_id").or_else(|| n.data.get("transaction_id"));
    match id.and_then(|id| Uuid::parse_str(id).ok()) {
        Some(id) => id.simple().to_string(),
        None if n.kind == NotificationKind::SubscriptionChanged => "subscription".to_owned(),
        None => n.id.simple().to_string(),
    }
}

fn urgency(kind: NotificationKind) -> &'static str {
    match kind {
        NotificationKind::PaymentFailed => "high",
        _ => "normal",
    }
}

fn kind_name(kind: NotificationKind) -> &'static str {
    match kind {
        NotificationKind::GenerationCompleted => "generation_completed",
        NotificationKind::GenerationFailed => "generation_failed",
        NotificationKind::PaymentSucceeded => "payment_succeeded",
        NotificationKind::PaymentFailed => "payment_failed",
        NotificationKind::SubscriptionChanged => "subscription_changed",
    }
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the push service timed out".into()
    } else if e.is_connect() {
        "the push service could not be reached".into()
    } else {
        "the push request failed".into()
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some((at.with_timezone(&Utc) - Utc::now()).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = (Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        h.insert("retry-after", later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30), "{d:?}");
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn a_topic_is_the_thing_it_is_about_in_at_most_32_url_safe_characters() {
        let task = Uuid::now_v7();
        let mut n = Notification {
            id: Uuid::now_v7(),
            kind: NotificationKind::GenerationCompleted,
            title: String::new(),
            body: String::new(),
            data: [("task_id".to_owned(), task.to_string())].into(),
            created_at: Utc::now(),
            read_at: None,
        };
        assert_eq!(topic(&n), task.simple().to_string());
        assert_eq!(topic(&n).len(), 32);
        n.data.clear();
        n.kind = NotificationKind::SubscriptionChanged;
        assert_eq!(topic(&n), "subscription");
    }
}
