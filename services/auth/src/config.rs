//! The auth service's settings (`[auth]`, `SKILLUP_AUTH__…`): tokens, passwords, email links,
//! brute-force limits, where the signing keys are.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use skillup_kit::config::{Needs, Section, invalid};

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
    /// API keys one account may hold (1..=1000).
    pub api_keys_per_user: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "skillup".into(),
            audience: "skillup-api".into(),
            access_ttl_secs: 3_600,
            refresh_ttl_secs: 14 * 24 * 3_600,
            refresh_grace_secs: 10,
            bcrypt_cost: 12,
            password_min_chars: 8,
            verification_ttl_secs: 24 * 3_600,
            reset_ttl_secs: 3_600,
            resend_interval_secs: 60,
            max_failures_per_account: 5,
            max_failures_per_account_total: 50,
            max_failures_per_ip: 50,
            failure_window_secs: 900,
            lockout_base_secs: 30,
            lockout_max_secs: 3_600,
            keys_dir: None,
            public_url: "http://127.0.0.1:8080".into(),
            api_keys_per_user: 20,
        }
    }
}

impl Section for AuthConfig {
    const KEY: &'static str = "auth";

    fn check(&self, _needs: Needs) -> skillup_kit::Result<()> {
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(invalid("auth.bcrypt_cost", "must be 4..=31"));
        }
        if self.password_min_chars < 8 {
            return Err(invalid("auth.password_min_chars", "must be at least 8"));
        }
        if self.access_ttl_secs < 60 || self.refresh_ttl_secs <= self.access_ttl_secs {
            return Err(invalid(
                "auth.access_ttl_secs",
                "must be at least 60 and below auth.refresh_ttl_secs",
            ));
        }
        if !(1..=1000).contains(&self.api_keys_per_user) {
            return Err(invalid("auth.api_keys_per_user", "must be 1..=1000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_password_settings_are_checked() {
        AuthConfig::default().check(Needs::default()).expect("the defaults work");
        let c = AuthConfig { bcrypt_cost: 3, ..AuthConfig::default() };
        let err = c.check(Needs::default()).unwrap_err().to_string();
        assert!(err.contains("`auth.bcrypt_cost` (SKILLUP_AUTH__BCRYPT_COST)"), "{err}");
        let c = AuthConfig { password_min_chars: 6, ..AuthConfig::default() };
        assert!(c.check(Needs::default()).is_err());
        let c = AuthConfig { refresh_ttl_secs: 3_600, ..AuthConfig::default() };
        let err = c.check(Needs::default()).unwrap_err().to_string();
        assert!(err.contains("below auth.refresh_ttl_secs"), "{err}");
    }
}
