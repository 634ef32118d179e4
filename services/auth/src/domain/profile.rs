//! What a person may set about themselves: a display name, the language they read, the time
//! zone their days are counted in.

use skillup_kit::i18n::Locale;

/// A change of profile; each field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileEdit {
    pub name: Option<String>,
    pub locale: Option<String>,
    pub time_zone: Option<String>,
}

/// Why a time zone is refused (a message of `locales/*.ftl`).
const TIME_ZONE_REFUSED: &str = "time-zone-unknown";

/// The zone of an account that never chose one.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// A display name: trimmed, at most 100 characters, no control characters; may be empty.
pub fn name(raw: &str) -> Result<String, &'static str> {
    let name = raw.trim();
    if name.chars().count() > 100 {
        return Err("name-too-long");
    }
    if name.chars().any(char::is_control) {
        return Err("name-control");
    }
    Ok(name.to_owned())
}

/// `en` or `ru`.
pub fn locale(raw: &str) -> Result<Locale, &'static str> {
    Locale::parse(raw).ok_or("locale-unknown")
}

/// An IANA time zone name (`Europe/Moscow`, `UTC`), as the tz database spells it.
pub fn time_zone(raw: &str) -> Result<String, &'static str> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 64 {
        return Err(TIME_ZONE_REFUSED);
    }
    raw.parse::<chrono_tz::Tz>().map(|tz| tz.name().to_owned()).map_err(|_| TIME_ZONE_REFUSED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("  Ада Лавлейс "), Ok("Ада Лавлейс".into()));
        assert_eq!(name(""), Ok(String::new()));
        assert!(name(&"я".repeat(101)).is_err());
        assert!(name("a\u{0}b").is_err());
        assert!(name("a\nb").is_err());
    }

    #[test]
    fn only_the_languages_we_speak() {
        assert_eq!(locale("ru"), Ok(Locale::Ru));
        assert_eq!(locale("EN"), Ok(Locale::En));
        assert!(locale("de").is_err());
        assert!(locale("ru-RU").is_err());
    }

    #[test]
    fn time_zones_come_from_the_tz_database() {
        assert_eq!(time_zone("Europe/Moscow"), Ok("Europe/Moscow".into()));
        assert_eq!(time_zone(" UTC "), Ok("UTC".into()));
        assert_eq!(time_zone("Asia/Yekaterinburg"), Ok("Asia/Yekaterinburg".into()));
        assert!(time_zone("Mars/Olympus").is_err());
        assert!(time_zone("").is_err());
        assert!(time_zone("../../etc/passwd").is_err());
    }
}
