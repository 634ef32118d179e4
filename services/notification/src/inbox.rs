//! The user's notifications: the list, marking read, and preferences.

use uuid::Uuid;

use std::collections::BTreeMap;

use crate::{
    domain::{
        Channels, DEFAULT_CHANNELS, Delivery, Event, GENERATION_EVENTS, MONEY_EVENTS, Preferences,
    },
    error::{NotificationError, Result},
    store::prefs,
};

use crate::notifier::*;

impl Notifier {
    /// The user's notifications, newest first, with the unread count.
    pub async fn list(
        &self,
        user: Uuid,
        page_size: u32,
        page_token: &str,
        unread_only: bool,
    ) -> Result<(Vec<Notification>, String, u32)> {
        let size = match page_size {
            0 => 20,
            n => n.min(100),
        } as u64;
        let before = match page_token {
            "" => None,
            t => {
                let id = Uuid::parse_str(t).map_err(|_| {
                    NotificationError::Invalid(
                        "page.page_token",
                        skillup_kit::invalid::page_token("page.page_token"),
                    )
                })?;
                Some(self.store.seq_of(user, id).await?.unwrap_or(0))
            }
        };
        let mut rows = self.store.page(user, unread_only, before, size + 1).await?;
        let next = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last().map(|n| n.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        let unread = self.store.unread(user).await?;
        Ok((rows.iter().map(Notification::from).collect(), next, unread as u32))
    }

    /// Marks the given notifications (or all) read; how many changed.
    pub async fn mark_read(&self, user: Uuid, ids: &[String], all: bool) -> Result<u32> {
        if !all && ids.len() > 100 {
            return Err(NotificationError::Invalid(
                "ids",
                skillup_kit::invalid::at_most_items("ids", 100),
            ));
        }
        let ids: Vec<Uuid> =
            ids.iter().map(|s| Uuid::parse_str(s)).collect::<std::result::Result<_, _>>().map_err(
                |_| NotificationError::Invalid("ids", skillup_kit::invalid::not_yours("ids")),
            )?;
        Ok(self.store.mark_read(user, (!all).then_some(ids)).await? as u32)
    }

    pub async fn preferences(&self, user: Uuid) -> Result<Preferences> {
        Ok(self.store.prefs(user).await?.map(Preferences::from).unwrap_or_default())
    }

    /// Changes the person's preferences: the language, and the channels of the events in
    /// `changes` (the others keep theirs). An older client's switches (`switches`: email on
    /// generation, on payment — when it sends no events) turn those events' emails off, or
    /// back on at once.
    pub async fn set_preferences(
        &self,
        user: Uuid,
        locale: &str,
        changes: Vec<(Event, Channels)>,
        switches: Option<(bool, bool)>,
    ) -> Result<Preferences> {
        let locale = locale.trim().to_owned();
        if locale.len() > 16 || !locale.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(NotificationError::Invalid(
                "locale",
                skillup_kit::invalid::language("locale"),
            ));
        }
        if changes.iter().any(|(_, c)| c.push == Delivery::Digest) {
            return Err(NotificationError::Invalid(
                "events.push",
                skillup_kit::invalid::one_of("events.push", &["IMMEDIATE", "OFF"]),
            ));
        }
        let mut prefs = self.preferences(user).await?;
        prefs.locale = locale;
        for (event, channels) in changes {
            prefs.events.insert(event, channels);
        }
        if let Some((generation, money)) = switches {
            for (events, on) in [(&GENERATION_EVENTS[..], generation), (&MONEY_EVENTS[..], money)] {
                for e in events {
                    let mut c = prefs.channels(*e);
                    c.email = match (on, c.email) {
                        (false, _) => Delivery::Off,
                        (true, Delivery::Off) => Delivery::Immediate,
                        (true, kept) => kept,
                    };
                    prefs.events.insert(*e, c);
                }
            }
        }
        let row = prefs::Model {
            user_id: user,
            email_on_generation: prefs.emails_any(&GENERATION_EVENTS),
            email_on_payment: prefs.emails_any(&MONEY_EVENTS),
            locale: prefs.locale.clone(),
            events: Some(choices_to_json(&prefs.events)),
        };
        self.store.set_prefs(row).await?;
        Ok(prefs)
    }
}

/// The stored preferences: the choices made, defaults for the rest.
impl From<prefs::Model> for Preferences {
    fn from(p: prefs::Model) -> Self {
        Preferences {
            locale: p.locale,
            events: p.events.as_deref().map(choices_from_json).unwrap_or_default(),
        }
    }
}

/// The stored choices (unknown names, from a newer version, are skipped).
fn choices_from_json(text: &str) -> BTreeMap<Event, Channels> {
    let raw: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_str(text).unwrap_or_default();
    raw.into_iter()
        .filter_map(|(event, c)| {
            let event = Event::parse(&event)?;
            let pick =
                |k: &str, d: Delivery| c.get(k).and_then(|v| Delivery::parse(v)).unwrap_or(d);
            let channels = Channels {
                email: pick("email", DEFAULT_CHANNELS.email),
                push: pick("push", DEFAULT_CHANNELS.push),
            };
            Some((event, channels))
        })
        .collect()
}

fn choices_to_json(events: &BTreeMap<Event, Channels>) -> String {
    let raw: BTreeMap<&str, BTreeMap<&str, &str>> = events
        .iter()
        .map(|(e, c)| (e.name(), [("email", c.email.name()), ("push", c.push.name())].into()))
        .collect();
    serde_json::to_string(&raw).expect("choices serialize")
}
