//! API keys: long-lived secrets a person creates for programs (the OpenAI-compatible `/v1`,
//! scripts, plugins). `sk-skillup-` and 256 random bits; only the SHA-256 is kept (the input has
//! all that entropy, so a fast hash is right, as for refresh tokens), with a short prefix the
//! owner recognises it by.

use chrono::{DateTime, Duration, Utc};

use super::secrets;

/// What every key starts with, so people, secret scanners and ValidateToken tell it from a JWT.
pub const PREFIX: &str = "sk-skillup-";

/// How much of a key is kept to show: the prefix and 6 characters of the secret.
const SHOWN: usize = PREFIX.len() + 6;

/// The longest a name may be, in characters.
pub const NAME_MAX_CHARS: usize = 100;

/// The furthest ahead a key may expire.
pub const LONGEST_LIFE_DAYS: i64 = 3 * 366;

/// A new key: the secret (shown once), the hash to store and the prefix to show.
pub struct NewKey {
    pub secret: String,
    pub hash: String,
    pub shown: String,
}

impl NewKey {
    pub fn generate() -> Self {
        let secret = format!("{PREFIX}{}", secrets::new_token());
        Self { hash: secrets::hash(&secret), shown: secret[..SHOWN].to_owned(), secret }
    }
}

/// Whether `token` is an API key by its form (then it is never parsed as a JWT).
pub fn is_key(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// The hash to look a presented key up by, or `None` when it cannot be one of ours.
pub fn lookup_hash(token: &str) -> Option<String> {
    let rest = token.strip_prefix(PREFIX)?;
    secrets::looks_like_token(rest).then(|| secrets::hash(token))
}

/// A key's name: trimmed, 1–100 characters, one line. Errors are messages of `locales/*.ftl`.
pub fn name(raw: &str) -> Result<String, &'static str> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("key-name-required");
    }
    if name.chars().count() > NAME_MAX_CHARS {
        return Err("key-name-too-long");
    }
    if name.chars().any(char::is_control) {
        return Err("key-name-control");
    }
    Ok(name.to_owned())
}

/// When a key stops working: in the future, at most [`LONGEST_LIFE_DAYS`] ahead.
pub fn expiry(at: DateTime<Utc>, now: DateTime<Utc>) -> Result<DateTime<Utc>, &'static str> {
    if at <= now {
        return Err("key-expiry-past");
    }
    if at > now + Duration::days(LONGEST_LIFE_DAYS) {
        return Err("key-expiry-far");
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_recognisable_and_only_their_hash_is_kept() {
        let k = NewKey::generate();
        assert!(is_key(&k.secret));
        assert_eq!(k.secret.len(), PREFIX.len() + 43);
        assert!(k.secret.starts_with(&k.shown) && k.shown.len() == PREFIX.len() + 6);
        assert_eq!(lookup_hash(&k.secret).as_deref(), Some(k.hash.as_str()));
        assert_ne!(k.hash, k.secret);
        assert_ne!(NewKey::generate().secret, k.secret);
        // Anything else with the prefix is no key: never looked up.
        assert_eq!(lookup_hash("sk-skillup-short"), None);
        assert_eq!(lookup_hash(&format!("{}!", &k.secret[..k.secret.len() - 1])), None);
        assert!(!is_key("eyJhbGciOi.x.y"));
    }

    #[test]
    fn names_and_expiries_are_checked() {
        assert_eq!(name("  CI bot ").unwrap(), "CI bot");
        assert_eq!(name("   "), Err("key-name-required"));
        assert_eq!(name(&"я".repeat(101)), Err("key-name-too-long"));
        assert!(name(&"я".repeat(100)).is_ok());
        assert_eq!(name("a\nb"), Err("key-name-control"));
        let now = Utc::now();
        assert_eq!(expiry(now, now), Err("key-expiry-past"));
        assert!(expiry(now + Duration::days(30), now).is_ok());
        assert_eq!(expiry(now + Duration::days(4 * 365), now), Err("key-expiry-far"));
    }
}
