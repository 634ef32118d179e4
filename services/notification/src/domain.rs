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

/// What a preference is about: a notification's event, as people choose how it reaches them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    GenerationCompleted,
    GenerationFailed,
    /// Money in (a top-up) or back to the card.
    PaymentReceived,
    PaymentFailed,
    /// Subscribed, renewed, ending, ended.
    Subscription,
    /// A plan's missed service level, credited.
    ServiceCredit,
}

impl Event {
    pub const ALL: [Event; 6] = [
        Event::GenerationCompleted,
        Event::GenerationFailed,
        Event::PaymentReceived,
        Event::PaymentFailed,
        Event::Subscription,
        Event::ServiceCredit,
    ];

    /// Its name in stored preferences.
    pub fn name(self) -> &'static str {
        match self {
            Event::GenerationCompleted => "generation_completed",
            Event::GenerationFailed => "generation_failed",
            Event::PaymentReceived => "payment_received",
            Event::PaymentFailed => "payment_failed",
            Event::Subscription => "subscription",
            Event::ServiceCredit => "service_credit",
        }
    }

    pub fn parse(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The event a notification is (a payment notification's `data.what` tells a credit).
    pub fn of(kind: NotificationKind, data: &std::collections::HashMap<String, String>) -> Event {
        match kind {
            NotificationKind::GenerationCompleted => Event::GenerationCompleted,
            NotificationKind::GenerationFailed => Event::GenerationFailed,
            NotificationKind::PaymentSucceeded
                if data.get("what").map(String::as_str) == Some("credit") =>
            {
                Event::ServiceCredit
            }
            NotificationKind::PaymentSucceeded => Event::PaymentReceived,
            NotificationKind::PaymentFailed => Event::PaymentFailed,
            NotificationKind::SubscriptionChanged => Event::Subscription,
        }
    }

    /// A generation's outcome: its email waits while a console is open to show it live.
    pub fn about_generation(self) -> bool {
        matches!(self, Event::GenerationCompleted | Event::GenerationFailed)
    }
}

/// When a channel delivers an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Immediate,
    /// In the next digest (email only).
    Digest,
    Off,
}

impl Delivery {
    pub fn name(self) -> &'static str {
        match self {
            Delivery::Immediate => "immediate",
            Delivery::Digest => "digest",
            Delivery::Off => "off",
        }
    }

    pub fn parse(name: &str) -> Option<Delivery> {
        [Delivery::Immediate, Delivery::Digest, Delivery::Off]
            .into_iter()
            .find(|d| d.name() == name)
    }
}

/// How one event reaches a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channels {
    pub email: Delivery,
    /// `Immediate` or `Off`.
    pub push: Delivery,
}

/// Every event's default: an email at once (a generation's only while no console shows it
/// live) and a push to every device that subscribed.
pub const DEFAULT_CHANNELS: Channels =
    Channels { email: Delivery::Immediate, push: Delivery::Immediate };

/// How a person wants to hear of things, and in which language.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Preferences {
    /// BCP 47; empty: the account's.
    pub locale: String,
    /// The choices made; events not here take [`DEFAULT_CHANNELS`].
    pub events: std::collections::BTreeMap<Event, Channels>,
}

impl Preferences {
    /// How `event` reaches the person.
    pub fn channels(&self, event: Event) -> Channels {
        self.events.get(&event).copied().unwrap_or(DEFAULT_CHANNELS)
    }

    /// Whether any of `events` is emailed (the older switches' reading).
    pub fn emails_any(&self, events: &[Event]) -> bool {
        events.iter().any(|e| self.channels(*e).email != Delivery::Off)
    }
}

/// The events the older `email_on_generation` switch stands for.
pub const GENERATION_EVENTS: [Event; 2] = [Event::GenerationCompleted, Event::GenerationFailed];

/// The events the older `email_on_payment` switch stands for.
pub const MONEY_EVENTS: [Event; 4] =
    [Event::PaymentReceived, Event::PaymentFailed, Event::Subscription, Event::ServiceCredit];
