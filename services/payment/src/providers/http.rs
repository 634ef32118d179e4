//! What the HTTP adapters share: a notification's headers, the client, and how an answer (or
//! its absence) becomes a [`ProviderError`].

use std::{collections::BTreeMap, time::Duration};

use super::ProviderError;

/// A notification's headers, names in lower case.
#[derive(Debug, Clone, Default)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned())).collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// A notification's body as JSON.
pub fn json_body(body: &[u8]) -> Result<serde_json::Value, ProviderError> {
    serde_json::from_slice(body)
        .map_err(|_| ProviderError::NotGenuine("the body is not JSON".into()))
}

/// A client for one provider's API: its own timeout, TLS through rustls.
pub fn client(timeout: Duration) -> skillup_kit::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("skillup-payment/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| skillup_kit::Error::Config(format!("the payment provider's client: {e}")))
}

/// The JSON of a successful answer, or the error it is: 429 and 5xx (and no answer at all)
/// are transient, other statuses a refusal carrying the provider's own words.
pub async fn json(
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<serde_json::Value, ProviderError> {
    let res = sent.map_err(|e| ProviderError::Transient(without_url(&e)))?;
    let status = res.status();
    let body = res.bytes().await.map_err(|e| ProviderError::Transient(without_url(&e)))?;
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status.is_success() {
        return Ok(value);
    }
    // Stripe: {"error":{"message"}}; YooKassa: {"description"}.
    let said = value["error"]["message"]
        .as_str()
        .or_else(|| value["description"].as_str())
        .unwrap_or("no description")
        .chars()
        .take(300)
        .collect::<String>();
    let what = format!("HTTP {}: {said}", status.as_u16());
    if status.as_u16() == 429 || status.is_server_error() {
        Err(ProviderError::Transient(what))
    } else {
        Err(ProviderError::Refused(what))
    }
}

/// Repeats `call` on transient failures (three more tries, exponential backoff with jitter);
/// the caller sends the same idempotency key every time, so the provider acts once.
pub async fn retrying<T, F, Fut>(call: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    use backon::Retryable as _;
    call.retry(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(3)
            .with_jitter(),
    )
    .when(|e| matches!(e, ProviderError::Transient(_)))
    .await
}

/// A client error without the URL (which may carry ids but never belongs in a user's message).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    kind.to_owned()
}
