//! Auth, mail and identity assertion settings.

use super::*;

/// Auth service settings (`SKILLUP_AUTH__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `iss` of every token.
    pub issuer: String,
    /// `aud` of every token.
    pub audience: String,
    /// Access-token life, seconds.
    pub access_ttl_secs: u64,
    /// Refresh-token life, seconds.
    pub refresh_ttl_secs: u64,
    /// A retried refresh within this many seconds gets the same successor pair.
    pub refresh_grace_secs: u64,
    /// bcrypt cost (4..=31).
    pub bcrypt_cost: u32,
    /// Least password length in characters.
    pub password_min_chars: usize,
    /// Email-verification token life, seconds.
    pub verification_ttl_secs: u64,
    /// Password-reset token life, seconds.
    pub reset_ttl_secs: u64,
    /// Seconds between two verification emails to one account.
    pub resend_interval_secs: u64,
    /// Failed logins of one account from one client address (or one known device) before
    /// that pair is locked out.
    pub max_failures_per_account: u32,
    /// Failed logins of one account from anywhere before it is locked out for devices that
    /// never signed in to it (known devices still get in: nobody can lock an owner out).
    pub max_failures_per_account_total: u32,
    /// Failed logins per client IP before a lockout.
    pub max_failures_per_ip: u32,
    /// Window the failure counters count in, seconds.
    pub failure_window_secs: u64,
    /// First lockout, seconds; doubles with every further failure.
    pub lockout_base_secs: u64,
    /// Longest lockout, seconds.
    pub lockout_max_secs: u64,
    /// Where the signing keys are; empty = `<data_dir>/keys`.
    pub keys_dir: Option<PathBuf>,
    /// Public base URL for links in emails.
    pub public_url: String,
}

/// Outgoing email (`SKILLUP_MAIL__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// Sender address.
    pub from: String,
    /// Outbox directory for the file mailer; empty = `<data_dir>/outbox`.
    pub outbox_dir: Option<PathBuf>,
    /// SMTP server (`smtp://host:25?tls=required`, `smtps://user:pass@host:465`); unset = outbox.
    #[serde(serialize_with = "ser_secret_opt")]
    pub smtp_url: Option<SecretString>,
}

/// Identity assertion settings (`SKILLUP_IDENTITY__…`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// File holding the HMAC key (at least 32 bytes; a Kubernetes Secret). Unset =
    /// `<keys_dir>/identity.key`, created on first start when it is missing.
    pub key_file: Option<PathBuf>,
    /// Life of an assertion the edge mints, seconds.
    pub ttl_secs: u64,
}
