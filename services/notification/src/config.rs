//! The notification service's settings (`[notification]`, `SKILLUP_NOTIFICATION__…`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use skillup_kit::config::{Needs, Section, invalid};

/// Notification settings (`SKILLUP_NOTIFICATION__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// How often finished generations are emailed, seconds: one email per user per run, a
    /// digest when several finished.
    pub digest_secs: u64,
    /// The Web Push (VAPID) private key, PKCS#8 PEM; unset = `<keys_dir>/vapid.key`, as
    /// `skillup keys init` (and the first `skillup up`) writes it. Without the file the
    /// service runs without push (and says so at start).
    pub vapid_key_file: Option<PathBuf>,
    /// How push services reach the operator (the VAPID `sub`): a `mailto:` or `https:` URL;
    /// empty = `mailto:` and the address of `mail.from`.
    pub push_subject: String,
    /// Push also to loopback addresses, over http too (development: `skillup up` sets it).
    /// Otherwise only https endpoints on public addresses are taken and called.
    pub push_allow_loopback: bool,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self {
            digest_secs: 60,
            vapid_key_file: None,
            push_subject: String::new(),
            push_allow_loopback: false,
        }
    }
}

impl NotificationConfig {
    /// Where the VAPID key is.
    pub fn vapid_key_path(&self, keys_dir: &Path) -> PathBuf {
        self.vapid_key_file.clone().unwrap_or_else(|| keys_dir.join(crate::push::vapid::FILE))
    }

    /// The VAPID subject: `push_subject`, else `mailto:` the sender address of `from` (`Name
    /// <a@b>` or `a@b`).
    pub fn subject(&self, from: &str) -> String {
        if !self.push_subject.is_empty() {
            return self.push_subject.clone();
        }
        let address = match (from.find('<'), from.rfind('>')) {
            (Some(a), Some(b)) if a < b => &from[a + 1..b],
            _ => from,
        };
        format!("mailto:{}", address.trim())
    }
}

impl Section for NotificationConfig {
    const KEY: &'static str = "notification";

    fn check(&self, _needs: Needs) -> skillup_kit::Result<()> {
        if self.digest_secs == 0 {
            return Err(invalid("notification.digest_secs", "must be at least 1"));
        }
        let s = &self.push_subject;
        if !(s.is_empty() || s.starts_with("mailto:") || s.starts_with("https://")) {
            return Err(invalid("notification.push_subject", "must be a mailto: or https: URL"));
        }
        Ok(())
    }
}
