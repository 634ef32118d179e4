//! The subscribe service's own values, valid by construction.

use sea_orm::{DeriveActiveEnum, EnumIter, sea_query::StringLen};

/// Where a paid subscription is. Stored as its name in `subscribe_subscriptions.status`
/// (migration m0004 turned the protobuf numbers stored before into names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
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
