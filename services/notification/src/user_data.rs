//! What the notification service holds about one person, for their data export:
//! `notifications.json` (every notification, worded in the caller's language, newest first,
//! read page by page), `notification-preferences.json` and `notification-contact.json` (the
//! address mail goes to, and its language).

use chrono::{DateTime, Utc};
use sea_orm::ActiveEnum;
use serde::Serialize;
use skillup_kit::{
    export::{ExportError, Sink},
    i18n,
};
use uuid::Uuid;

use crate::{
    error::{NotificationError, Result},
    notifier::{Notification, Notifier},
    texts,
};

/// Notifications read at a time.
const PAGE: u64 = 500;

#[derive(Serialize)]
struct Item {
    id: Uuid,
    kind: String,
    title: String,
    body: String,
    data: std::collections::BTreeMap<String, String>,
    created_at: DateTime<Utc>,
    read_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct Prefs {
    locale: String,
    /// Each event's channels: `{"email": "immediate|digest|off", "push": "immediate|off"}`.
    events: std::collections::BTreeMap<
        &'static str,
        std::collections::BTreeMap<&'static str, &'static str>,
    >,
}

#[derive(Serialize)]
struct Contact {
    email: String,
    locale: String,
}

impl Notifier {
    /// Writes the user's notifications, preferences and contact into `sink`.
    pub async fn export_user(&self, user: Uuid, sink: &Sink) -> Result<()> {
        let locale = i18n::current();
        let mut list = sink.json_array("notifications.json");
        let mut before = None;
        loop {
            let rows = self.store.page(user, false, before, PAGE).await?;
            for row in &rows {
                let n = texts::localize(Notification::from(row), locale);
                let item = Item {
                    id: n.id,
                    kind: n.kind.to_value(),
                    title: n.title,
                    body: n.body,
                    data: n.data.into_iter().collect(),
                    created_at: n.created_at,
                    read_at: n.read_at,
                };
                list.push(&item).await.map_err(abandoned)?;
            }
            match rows.last() {
                Some(last) if rows.len() as u64 == PAGE => before = Some(last.seq),
                _ => break,
            }
        }
        list.finish().await.map_err(abandoned)?;
        let p = self.preferences(user).await?;
        let events = crate::domain::Event::ALL
            .into_iter()
            .map(|e| {
                let c = p.channels(e);
                (e.name(), [("email", c.email.name()), ("push", c.push.name())].into())
            })
            .collect();
        let prefs = Prefs { locale: p.locale, events };
        sink.json("notification-preferences.json", &prefs).await.map_err(abandoned)?;
        let contact =
            (self.store.contact(user).await?).map(|c| Contact { email: c.email, locale: c.locale });
        sink.json("notification-contact.json", &contact).await.map_err(abandoned)
    }
}

fn abandoned(e: ExportError) -> NotificationError {
    NotificationError::Unavailable(e.to_string())
}
