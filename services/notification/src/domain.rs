//! The notification service's own values.

use sea_orm::{DeriveActiveEnum, EnumIter, sea_query::StringLen};

/// What a notification is about. Stored as its name in `notification_items.kind` (migration
/// m0003 turned the protobuf numbers stored before into names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
pub enum NotificationKind {
    /// A queued generation finished.
    #[sea_orm(string_value = "generation_completed")]
    GenerationCompleted,
    /// A queued generation failed.
    #[sea_orm(string_value = "generation_failed")]
    GenerationFailed,
    /// A payment went through.
    #[sea_orm(string_value = "payment_succeeded")]
    PaymentSucceeded,
    /// A payment was refused.
    #[sea_orm(string_value = "payment_failed")]
    PaymentFailed,
    /// The subscription changed (subscribed, renewed, expired).
    #[sea_orm(string_value = "subscription_changed")]
    SubscriptionChanged,
}

/// A notification as its user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub id: uuid::Uuid,
    pub kind: NotificationKind,
    pub title: String,
    pub body: String,
    /// Related ids (`task_id`, `transaction_id`, …).
    pub data: std::collections::HashMap<String, String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub read_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A browser that receives a user's notifications by Web Push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushDevice {
    pub id: uuid::Uuid,
    pub endpoint: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_delivered_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A browser's push subscription as it hands it in (`PushSubscription.toJSON()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSubscriptionInput {
    pub endpoint: String,
    /// base64url of the browser's P-256 public key.
    pub p256dh: String,
    /// base64url of its 16-byte authentication secret.
    pub auth: String,
    /// When it lapses, milliseconds since the epoch.
    pub expiration_ms: Option<i64>,
}

/// What a user wants emailed, and in which language.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preferences {
    pub email_on_generation: bool,
    pub email_on_payment: bool,
    /// BCP 47; empty: the account's.
    pub locale: String,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences { email_on_generation: true, email_on_payment: true, locale: String::new() }
    }
}
