//! Checked money values and the card-processor port.

use crate::error::{PaymentError, Result};

/// Largest single amount, minor units.
pub const MAX_AMOUNT: i64 = 100_000_000;

/// An ISO 4217 code: three upper-case letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    /// `c` as a currency; `field` names it in the refusal.
    pub fn parse(field: &'static str, c: &str) -> Result<Self> {
        if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(c.to_owned()))
        } else {
            Err(PaymentError::Invalid(field, skillup_kit::invalid::currency(field)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount of 1..=100,000,000 minor units (cents, kopecks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MinorUnits(i64);

impl MinorUnits {
    /// `a` as an amount; `field` names it in the refusal.
    pub fn parse(field: &'static str, a: i64) -> Result<Self> {
        if (1..=MAX_AMOUNT).contains(&a) {
            Ok(Self(a))
        } else {
            Err(PaymentError::Invalid(field, skillup_kit::invalid::between(field, 1, MAX_AMOUNT)))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// An idempotency key: 1..=128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(k: &str) -> Result<Self> {
        if (1..=128).contains(&k.len()) && k.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            Ok(Self(k.to_owned()))
        } else {
            Err(PaymentError::Invalid("idempotency_key", skillup_kit::invalid::idempotency_key()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A page of newest-first rows keyed by UUIDv7: how many (default 20, at most 100) and the
/// last id the previous page ended at.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub size: u64,
    pub before: Option<uuid::Uuid>,
}

impl Page {
    pub fn parse(page_size: u32, page_token: &str) -> Result<Self> {
        let size = match page_size {
            0 => 20,
            n => n.min(100),
        } as u64;
        let before = match page_token {
            "" => None,
            t => Some(uuid::Uuid::parse_str(t).map_err(|_| {
                PaymentError::Invalid(
                    "page.page_token",
                    skillup_kit::invalid::page_token("page.page_token"),
                )
            })?),
        };
        Ok(Self { size, before })
    }

    /// `rows` (fetched `size + 1` of them) cut to the page, and the next page's token.
    pub fn cut<T>(self, mut rows: Vec<T>, id: impl Fn(&T) -> uuid::Uuid) -> (Vec<T>, String) {
        if rows.len() as u64 > self.size {
            rows.truncate(self.size as usize);
            let next = rows.last().map(|r| id(r).to_string()).unwrap_or_default();
            (rows, next)
        } else {
            (rows, String::new())
        }
    }
}

/// Free text on a ledger entry.
pub fn description(d: &str) -> Result<String> {
    let d = d.trim();
    if d.chars().count() > 200 || d.chars().any(char::is_control) {
        return Err(PaymentError::Invalid(
            "description",
            skillup_kit::invalid::one_line("description", 200),
        ));
    }
    Ok(d.to_owned())
}

/// What a processor said about a card payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    Approved { reference: String },
    Declined { reason: String },
}

/// A card processor. Implementations must deduplicate by `idempotency_key`, as real
/// processors do, so a retried top-up never takes the money twice.
#[async_trait::async_trait]
pub trait PaymentProvider: Send + Sync {
    /// A name shown on ledger entries (`sandbox`, `stripe`, …).
    fn name(&self) -> &'static str;
    async fn capture(
        &self,
        amount_minor: i64,
        currency: &str,
        payment_method: &str,
        idempotency_key: &str,
    ) -> Result<Authorization>;
}

/// The sandbox processor for `skillup up` and tests: no real money. `pm_card_declined` and
/// `pm_card_insufficient_funds` are declined; any other method (or none) is approved.
#[derive(Debug, Default, Clone, Copy)]
pub struct SandboxProvider;

#[async_trait::async_trait]
impl PaymentProvider for SandboxProvider {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn capture(
        &self,
        _amount_minor: i64,
        _currency: &str,
        payment_method: &str,
        idempotency_key: &str,
    ) -> Result<Authorization> {
        Ok(match payment_method {
            "pm_card_declined" => {
                Authorization::Declined { reason: "the card was declined (sandbox)".into() }
            }
            "pm_card_insufficient_funds" => Authorization::Declined {
                reason: "the card has insufficient funds (sandbox)".into(),
            },
            _ => Authorization::Approved { reference: format!("sandbox_{idempotency_key}") },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked() {
        assert_eq!(Currency::parse("c", "USD").unwrap().as_str(), "USD");
        assert!(Currency::parse("c", "usd").is_err());
        assert!(Currency::parse("c", "US").is_err());
        assert_eq!(MinorUnits::parse("a", 1).unwrap().get(), 1);
        assert!(MinorUnits::parse("a", 0).is_err());
        assert!(MinorUnits::parse("a", MAX_AMOUNT + 1).is_err());
        assert_eq!(IdempotencyKey::parse("k-1").unwrap().as_str(), "k-1");
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_err());
        match MinorUnits::parse("amount.amount_minor", -5) {
            Err(PaymentError::Invalid(field, _)) => assert_eq!(field, "amount.amount_minor"),
            other => panic!("{other:?}"),
        }
    }
}

/// What a ledger entry moved. Stored as its name in `payment_transactions.kind` (migration
/// m0003 turned the protobuf numbers stored before into names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(sea_orm::sea_query::StringLen::N(32))")]
pub enum TransactionKind {
    /// Money in from the card processor.
    #[sea_orm(string_value = "top_up")]
    TopUp,
    /// Money out for a subscription or usage.
    #[sea_orm(string_value = "charge")]
    Charge,
    /// Money back for a charge.
    #[sea_orm(string_value = "refund")]
    Refund,
    /// Money an operator added.
    #[sea_orm(string_value = "adjustment_credit")]
    AdjustmentCredit,
    /// Money an operator took back.
    #[sea_orm(string_value = "adjustment_debit")]
    AdjustmentDebit,
    /// Money returned to the card it was paid in with (pending until the provider confirms).
    #[sea_orm(string_value = "refund_to_card")]
    RefundToCard,
    /// Money the platform credits by its own rules (a plan's missed service level).
    #[sea_orm(string_value = "service_credit")]
    ServiceCredit,
}

impl TransactionKind {
    /// The number an entry's idempotency scope (`{n}:{user}`) was first written with: kept, so
    /// a key sent again after the change finds the entry it made before.
    pub fn scope_number(self) -> i32 {
        match self {
            TransactionKind::TopUp => 1,
            TransactionKind::Charge => 2,
            TransactionKind::Refund => 3,
            // One scope for both directions: a key sent again with the other sign is a
            // reused key, not a second adjustment.
            TransactionKind::AdjustmentCredit | TransactionKind::AdjustmentDebit => 4,
            TransactionKind::RefundToCard => 6,
            TransactionKind::ServiceCredit => 7,
        }
    }
}

/// Where a ledger entry is. Stored as its name in `payment_transactions.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(sea_orm::sea_query::StringLen::N(32))")]
pub enum TransactionStatus {
    /// Waiting for the processor.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Applied to the balance.
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    /// Refused; the balance did not change.
    #[sea_orm(string_value = "failed")]
    Failed,
}

/// A wallet's balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Balance {
    pub user: uuid::Uuid,
    /// Minor units of `currency`.
    pub available_minor: i64,
    pub currency: String,
    /// `None`: the wallet has never moved.
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Where a checkout is. Stored as its name in `payment_checkouts.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(sea_orm::sea_query::StringLen::N(16))")]
pub enum CheckoutStatus {
    /// Waiting for the person (or the provider's word).
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Paid and credited.
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    /// Given up or refused at the provider.
    #[sea_orm(string_value = "canceled")]
    Canceled,
    /// Not paid in time.
    #[sea_orm(string_value = "expired")]
    Expired,
}

/// Where a refund to the card is. Stored as its name in `payment_refunds.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(sea_orm::sea_query::StringLen::N(16))")]
pub enum RefundStatus {
    /// Asked of the provider; the money is held.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Returned to the card.
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    /// Refused by the provider; the money is back in the wallet.
    #[sea_orm(string_value = "failed")]
    Failed,
}
