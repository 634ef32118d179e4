//! The notification service's state, and what its parts share: a stored notification as the
//! API shows it, and reading a user's notifications by sequence.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use sea_orm::DatabaseConnection;
use skillup_kit::{bus::SharedBus, mailer::SharedMailer};

pub use crate::domain::{Notification, NotificationKind};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::{
    error::{NotificationError, Result},
    ports::Directory,
    push::{PushSettings, Pusher},
    store::{NotificationStore, item},
};
use skillup_kit::i18n::Locale;

#[derive(Clone)]
pub struct Notifier {
    pub(crate) store: NotificationStore,
    pub(crate) bus: SharedBus,
    pub(crate) mailer: SharedMailer,
    /// Base of the link in emails.
    pub(crate) public_url: String,
    /// Live subscribers of this replica, by user.
    pub(crate) live: Arc<Mutex<HashMap<Uuid, broadcast::Sender<Live>>>>,
    /// Asked for the contact of a user never heard of (`None`: nobody to ask).
    pub(crate) directory: Option<Arc<dyn Directory>>,
    /// Web Push (`None`: not set up — no VAPID key).
    pub(crate) pusher: Option<Pusher>,
    /// Where replicas note who has a console open (`None`: nobody does, as far as known).
    pub(crate) presence: Option<skillup_kit::cache::SharedCache>,
}

pub(crate) fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

impl Notifier {
    pub fn new(
        db: DatabaseConnection,
        bus: SharedBus,
        mailer: SharedMailer,
        public_url: impl Into<String>,
    ) -> Self {
        let store = NotificationStore::new(db);
        let public_url = public_url.into();
        Self {
            store,
            bus,
            mailer,
            public_url,
            live: Default::default(),
            directory: None,
            pusher: None,
            presence: None,
        }
    }

    /// Pushes notifications to the browsers users subscribe (see [`crate::push`]).
    pub fn with_push(mut self, settings: PushSettings) -> Self {
        self.pusher = Some(Pusher::new(self.store.db().clone(), settings, &self.public_url));
        self
    }

    /// The push client, when push is set up.
    pub fn pusher(&self) -> Result<&Pusher> {
        self.pusher.as_ref().ok_or(NotificationError::PushOff)
    }

    /// Asks `directory` for the contact of users it has not heard of.
    pub fn with_directory(mut self, directory: Arc<dyn Directory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// The user's newest sequence number (0 before the first notification).
    pub(crate) async fn newest_seq(&self, user: Uuid) -> Result<i64> {
        Ok(self.store.newest_seq(user).await?)
    }

    /// Stored notifications with sequence numbers after `after`, in order, at most a [`PAGE`].
    pub(crate) async fn after(&self, user: Uuid, after: i64) -> Result<Vec<item::Model>> {
        Ok(self.store.after(user, after, PAGE).await?)
    }
}

/// The language chosen for notifications (`ru`, `ru-RU`), else the account's.
pub(crate) fn reader_locale(chosen: &str, account: &str) -> Locale {
    Locale::parse(chosen)
        .or_else(|| Locale::parse(chosen.split('-').next().unwrap_or("")))
        .unwrap_or_else(|| Locale::or_default(account))
}

/// The notifications an email can be about (at once or in the digest, by the person's
/// choice for each event): all of them.
pub(crate) const DIGESTED: [NotificationKind; 5] = [
    NotificationKind::GenerationCompleted,
    NotificationKind::GenerationFailed,
    NotificationKind::PaymentSucceeded,
    NotificationKind::PaymentFailed,
    NotificationKind::SubscriptionChanged,
];

/// A notification about money (emailed with its receipt).
pub(crate) fn about_money(kind: NotificationKind) -> bool {
    matches!(kind, NotificationKind::PaymentSucceeded | NotificationKind::PaymentFailed)
}

/// A notification with its sequence number, as live subscribers get it.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    pub(crate) seq: i64,
    pub(crate) notification: Notification,
}

/// Most notifications a live stream reads from the store at once (a reconnecting client's
/// backlog, a gap, a subscriber that lagged), page after page until it has caught up.
pub(crate) const PAGE: u64 = 500;
