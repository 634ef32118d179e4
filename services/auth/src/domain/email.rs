//! An email address that parsed: trimmed, lower-cased, at most 254 characters.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Normalises and validates. Lower-casing the whole address makes uniqueness
    /// case-insensitive (the database's unique index does the rest, even under races).
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let s = raw.trim().to_lowercase();
        if s.is_empty() {
            return Err("email-required");
        }
        if s.len() > 254 {
            return Err("email-too-long");
        }
        let (local, domain) = s.rsplit_once('@').ok_or("email-no-at")?;
        if local.is_empty() || local.len() > 64 {
            return Err("email-local-length");
        }
        if local.contains('@') {
            return Err("email-one-at");
        }
        let local_ok =
            local.chars().all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err("email-local-chars");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
        {
            return Err("email-domain");
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("  Alice@Example.COM ", "alice@example.com")]
    #[case("a.b+tag@sub.example.org", "a.b+tag@sub.example.org")]
    #[case("иван@пример.рф", "иван@пример.рф")]
    fn accepts(#[case] raw: &str, #[case] want: &str) {
        assert_eq!(Email::parse(raw).unwrap().as_str(), want);
    }

    #[rstest]
    #[case("")]
    #[case("plain")]
    #[case("@example.com")]
    #[case("a@b")]
    #[case("a@@b.com")]
    #[case("a b@c.com")]
    #[case(".a@b.com")]
    #[case("a..b@c.com")]
    #[case("a@-b.com")]
    #[case("a@b..com")]
    #[case("a@b.com\r\nBcc: x@y.z")]
    fn refuses(#[case] raw: &str) {
        assert!(Email::parse(raw).is_err(), "{raw:?}");
    }

    #[test]
    fn length_limits() {
        let long_local = format!("{}@a.com", "x".repeat(65));
        assert!(Email::parse(&long_local).is_err());
        let long = format!("a@{}.com", "b".repeat(250));
        assert!(Email::parse(&long).is_err());
    }
}
