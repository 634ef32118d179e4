//! The notification service's settings (`[notification]`, `SKILLUP_NOTIFICATION__…`).

use serde::{Deserialize, Serialize};
use skillup_kit::config::{Needs, Section, invalid};

/// Notification settings (`SKILLUP_NOTIFICATION__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// How often finished generations are emailed, seconds: one email per user per run, a
    /// digest when several finished.
    pub digest_secs: u64,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self { digest_secs: 60 }
    }
}

impl Section for NotificationConfig {
    const KEY: &'static str = "notification";

    fn check(&self, _needs: Needs) -> skillup_kit::Result<()> {
        if self.digest_secs == 0 {
            return Err(invalid("notification.digest_secs", "must be at least 1"));
        }
        Ok(())
    }
}
