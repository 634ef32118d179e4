//! The hosted-payment provider port and its adapters: Stripe Checkout ([`stripe`]), YooKassa
//! ([`yookassa`]) and the sandbox ([`sandbox`], no real money). A provider creates a payment
//! on its hosted page, tells where a payment is when asked, and reads its notifications —
//! which are believed only when signed (Stripe) or once the payment is fetched back from its
//! API (YooKassa, the sandbox).

pub mod http;
pub mod sandbox;
pub mod stripe;
pub mod yookassa;

use uuid::Uuid;

/// A payment to create on the provider's page.
#[derive(Debug, Clone)]
pub struct Order {
    /// Our checkout id (in the provider payment's metadata).
    pub checkout_id: Uuid,
    pub amount_minor: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    /// Where the provider sends the person back.
    pub return_url: String,
    /// Where the fiscal receipt goes (YooKassa with receipts on).
    pub receipt_email: Option<String>,
    /// The provider's idempotency key: the same for every attempt to create this checkout.
    pub idempotency_key: String,
}

/// The provider's payment, made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosted {
    pub provider_payment_id: String,
    /// Where to send the person to pay.
    pub confirmation_url: String,
}

/// Where a provider says a payment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not paid yet (or still being processed).
    Pending,
    /// Paid: `amount_minor` of `currency` taken.
    Paid,
    /// Given up, refused or expired at the provider; `reason` says which.
    Canceled { reason: String },
}

/// A provider's payment as its API (or a signed notification) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub provider_payment_id: String,
    /// Our checkout id, from the payment's metadata (`None`: not one of ours).
    pub checkout_id: Option<Uuid>,
    pub state: State,
    pub amount_minor: i64,
    pub currency: String,
}

/// A refund to ask the provider for.
#[derive(Debug, Clone)]
pub struct RefundOrder {
    /// Our refund id (in the refund's metadata where the provider keeps one).
    pub refund_id: Uuid,
    pub provider_payment_id: String,
    pub amount_minor: i64,
    pub currency: String,
    /// The same for every attempt to ask for this refund.
    pub idempotency_key: String,
}

/// Where a provider says a refund is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundState {
    Pending,
    Succeeded,
    Failed { reason: String },
}

/// A provider's refund as its API (or a signed notification) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub provider_refund_id: String,
    /// Our refund id, from the refund's metadata when the provider keeps it.
    pub refund_id: Option<Uuid>,
    pub state: RefundState,
}

/// What a notification says, once read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// About a payment, believed as it is (a verified signature covered it).
    Verified(Payment),
    /// About a payment, to be believed only after fetching it back from the provider.
    Unverified { provider_payment_id: String },
    /// About refunds, believed as they are (a verified signature covered them).
    Refunds(Vec<Refund>),
    /// About a refund, to be believed only after fetching it back.
    UnverifiedRefund { provider_refund_id: String },
    /// A kind of event this service does not act on.
    Ignored { event: String },
}

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Worth repeating with the same idempotency key: a timeout, a refused connection, 5xx, 429.
    #[error("the payment provider is unavailable: {0}")]
    Transient(String),
    /// The provider refused the request (a 4xx): repeating it would not help.
    #[error("the payment provider refused the request: {0}")]
    Refused(String),
    /// A notification that is forged, stale or unreadable.
    #[error("the notification is not genuine: {0}")]
    NotGenuine(String),
}

/// A hosted-payment provider.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The name on checkouts and routes: `sandbox`, `stripe`, `yookassa`.
    fn name(&self) -> &'static str;

    /// Creates the payment on the provider's page. Repeating it with the same
    /// `order.idempotency_key` gives the same payment.
    async fn create(&self, order: &Order) -> Result<Hosted, ProviderError>;

    /// The payment as the provider's API reports it now.
    async fn fetch(&self, provider_payment_id: &str) -> Result<Payment, ProviderError>;

    /// Asks for (part of) a paid payment back to the card. Repeating it with the same
    /// `order.idempotency_key` gives the same refund.
    async fn refund(&self, order: &RefundOrder) -> Result<Refund, ProviderError>;

    /// The refund as the provider's API reports it now.
    async fn fetch_refund(&self, provider_refund_id: &str) -> Result<Refund, ProviderError>;

    /// Reads a notification: its headers (those the edge forwards) and body as sent.
    fn read_notice(
        &self,
        headers: &http::Headers,
        body: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Notice, ProviderError>;
}

/// `minor` units as a decimal string of `currency` ("1050" RUB → "10.50").
pub fn decimal(minor: i64, currency: &str) -> String {
    match exponent(currency) {
        0 => minor.to_string(),
        e => {
            let div = 10i64.pow(e);
            format!("{}.{:0width$}", minor / div, minor % div, width = e as usize)
        }
    }
}

/// A decimal string of `currency` as minor units (`None`: not an exact amount).
pub fn minor(value: &str, currency: &str) -> Option<i64> {
    let e = exponent(currency) as usize;
    let (whole, frac) = value.split_once('.').unwrap_or((value, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > e
    {
        return None;
    }
    let frac = format!("{frac:0<e$}");
    format!("{whole}{frac}").parse().ok()
}

/// Digits after the point (ISO 4217): 0 for the currencies without minor units.
fn exponent(currency: &str) -> u32 {
    match currency {
        "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "UGX" | "XAF" | "XOF" | "PYG" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_convert_both_ways_exactly() {
        assert_eq!(decimal(1050, "RUB"), "10.50");
        assert_eq!(decimal(5, "USD"), "0.05");
        assert_eq!(decimal(500, "JPY"), "500");
        assert_eq!(minor("10.50", "RUB"), Some(1050));
        assert_eq!(minor("10.5", "RUB"), Some(1050));
        assert_eq!(minor("10", "RUB"), Some(1000));
        assert_eq!(minor("0.05", "USD"), Some(5));
        assert_eq!(minor("10.505", "RUB"), None);
        assert_eq!(minor("-1.00", "RUB"), None);
        assert_eq!(minor("", "RUB"), None);
        for m in [1, 99, 100, 12345, 100_000_000] {
            assert_eq!(minor(&decimal(m, "RUB"), "RUB"), Some(m));
        }
    }
}
