//! The subscribe service's own values. `grpc.rs` converts them into the contract's messages;
//! nothing below it sees a protobuf type.

use chrono::{DateTime, Utc};
use sea_orm::{DeriveActiveEnum, EnumIter, sea_query::StringLen};
use uuid::Uuid;

/// An amount in a currency's minor units (cents, kopecks).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Money {
    pub minor: i64,
    /// ISO 4217, upper case.
    pub currency: String,
}

/// A plan as sold.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub id: String,
    pub title: String,
    pub price: Money,
    pub period_days: u32,
    /// Function slugs the plan includes (`*`: all).
    pub functions: Vec<String>,
    pub token_quota: u64,
    pub generation_quota: u32,
    pub rate_limit_tier: String,
    /// Queue priority of its tasks, 0..=9.
    pub priority: u32,
    /// No longer sold.
    pub archived: bool,
    pub service_level: ServiceLevel,
}

/// What a plan promises each calendar month (UTC); a zero field promises nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServiceLevel {
    /// 95 % of queued generations start within this many ms of their 202.
    pub queue_start_p95_ms: u32,
    /// At least this share of generations succeed, basis points.
    pub availability_bp: u32,
    /// A missed month's credit, percent of the price.
    pub credit_percent: u32,
}

impl ServiceLevel {
    /// Promises anything.
    pub fn promises(&self) -> bool {
        self.queue_start_p95_ms > 0 || self.availability_bp > 0
    }
}

/// One plan's service in one month, as measured.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServiceRecord {
    pub plan: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// Generations counted: succeeded, or failed by the platform.
    pub generations: u64,
    pub failed: u64,
    /// 10_000 when nothing was counted.
    pub availability_bp: u32,
    /// Queued generations that started.
    pub queued: u64,
    /// Nearest-rank 95th percentile of their 202 → start, ms; 0 when none.
    pub queue_start_p95_ms: u64,
    pub promised: ServiceLevel,
    pub met: bool,
    pub closed: bool,
    pub credits: u32,
}

/// A period's quota and what was used and is held of it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub tokens_used: u64,
    pub tokens_held: u64,
    pub token_quota: u64,
    pub generations_used: u32,
    pub generations_held: u32,
    pub generation_quota: u32,
}

/// A user's subscription as they see it: the free plan has no id.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Subscription {
    pub id: Option<Uuid>,
    pub user: Uuid,
    pub plan: Plan,
    pub status: SubscriptionStatus,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub cancel_at_period_end: bool,
    pub usage: Usage,
}

/// Why a generation is not allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    FunctionNotInPlan,
    QuotaExhausted,
}

/// Whether the user's plan allows a function now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entitlement {
    /// `None`: allowed; else why not, in words for the user.
    pub denied: Option<(DenyReason, String)>,
    /// The user's plan.
    pub plan: String,
    pub priority: u32,
}

/// Quota held for one generation until it settles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaHold {
    pub id: Uuid,
    pub tokens: u64,
    pub expires_at: DateTime<Utc>,
    /// The period's usage with this hold in it.
    pub usage: Usage,
    pub priority: u32,
}

/// Where a paid subscription is. Stored as its name in `subscribe_subscriptions.status`
/// (migration m0004 turned the protobuf numbers stored before into names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum SubscriptionStatus {
    /// Paid and in its period.
    #[sea_orm(string_value = "active")]
    Active,
    /// Active until the period's end, then free.
    #[sea_orm(string_value = "canceled")]
    Canceled,
    /// Its renewal could not be paid: back on free.
    #[sea_orm(string_value = "expired")]
    Expired,
}

impl SubscriptionStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Canceled => "canceled",
            SubscriptionStatus::Expired => "expired",
        }
    }

    /// The stored name back (`None`: not one).
    pub fn parse(s: &str) -> Option<Self> {
        <Self as sea_orm::ActiveEnum>::try_from_value(&s.to_owned()).ok()
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ActiveEnum, Iterable};

    use super::SubscriptionStatus;

    #[test]
    fn every_status_is_stored_under_its_name() {
        for s in SubscriptionStatus::iter() {
            assert_eq!(s.to_value(), s.as_str());
            assert_eq!(SubscriptionStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(SubscriptionStatus::parse("1"), None);
    }
}

/// What one function used.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FunctionUsage {
    /// `""` for generations settled before holds named their function.
    pub function: String,
    pub tokens: u64,
    pub generations: u32,
}

/// One period's settled usage.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeriodUsage {
    pub period_start: DateTime<Utc>,
    /// The current period's end; for a past one, when the next period began.
    pub period_end: DateTime<Utc>,
    pub tokens_used: u64,
    pub generations_used: u32,
    /// Most tokens first.
    pub by_function: Vec<FunctionUsage>,
    pub current: bool,
}

/// One day of the current period, in the asked time zone.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DayUsage {
    pub date: chrono::NaiveDate,
    pub tokens: u64,
    pub generations: u32,
    /// Most tokens first.
    pub by_function: Vec<FunctionUsage>,
}

/// A user's usage over time: periods newest first, the current period day by day.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UsageHistory {
    pub time_zone: String,
    pub periods: Vec<PeriodUsage>,
    pub days: Vec<DayUsage>,
}
