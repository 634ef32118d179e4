//! The user's notifications: the list, marking read, and preferences.

use uuid::Uuid;

use crate::{
    domain::Preferences,
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
        Ok(match self.store.prefs(user).await? {
            Some(p) => Preferences {
                email_on_generation: p.email_on_generation,
                email_on_payment: p.email_on_payment,
                locale: p.locale,
            },
            None => Preferences::default(),
        })
    }

    pub async fn set_preferences(&self, user: Uuid, p: Preferences) -> Result<Preferences> {
        let locale = p.locale.trim().to_owned();
        if locale.len() > 16 || !locale.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(NotificationError::Invalid(
                "locale",
                skillup_kit::invalid::language("locale"),
            ));
        }
        let row = prefs::Model {
            user_id: user,
            email_on_generation: p.email_on_generation,
            email_on_payment: p.email_on_payment,
            locale,
        };
        self.store.set_prefs(row).await?;
        self.preferences(user).await
    }
}
