//! Checked values: what a request may carry into a prompt.

use std::collections::BTreeMap;

use crate::error::{PromptError, Result};

/// Locales with templates; anything else falls back to English.
pub const LOCALES: [&str; 2] = ["en", "ru"];
/// The fallback locale.
pub const DEFAULT_LOCALE: &str = "en";
/// Most output tokens anyone may ask for.
pub const MAX_TOKENS: u32 = 32_000;
/// Longest topic, in characters.
pub const MAX_TOPIC_CHARS: usize = 200;
/// Longest parameter value, in characters (one line: a parameter is a setting — an audience,
/// a level — not a second prompt).
pub const MAX_PARAM_CHARS: usize = 200;
/// Largest number a numeric parameter may hold (questions, cards, minutes, points).
pub const MAX_PARAM_NUMBER: u32 = 1_000;
/// Most parameters per request.
pub const MAX_PARAMS: usize = 16;
/// Longest template text, in characters.
pub const MAX_TEMPLATE_CHARS: usize = 16_000;

/// A catalog slug: 1..=64 of `a-z`, `0-9`, `_`, `-`.
pub fn slug(field: &'static str, s: &str) -> Result<String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(PromptError::Invalid(field, skillup_kit::invalid::slug(field)))
    }
}

/// The primary language of a BCP 47 tag (`ru-RU` → `ru`), lower-cased; empty → English.
pub fn locale(tag: &str) -> Result<String> {
    let tag = tag.trim();
    if tag.is_empty() {
        return Ok(DEFAULT_LOCALE.to_owned());
    }
    let primary = tag.split(['-', '_']).next().unwrap_or_default().to_ascii_lowercase();
    if !(2..=3).contains(&primary.len()) || !primary.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(PromptError::Invalid("locale", skillup_kit::invalid::language("locale")));
    }
    Ok(primary)
}

/// User text: trimmed, no control characters except newlines and tabs, within `max` characters.
pub fn user_text(field: &'static str, s: &str, max: usize, allow_newlines: bool) -> Result<String> {
    let s = s.trim();
    if s.chars().count() > max {
        return Err(PromptError::Invalid(field, skillup_kit::invalid::at_most_chars(field, max)));
    }
    let bad = s.chars().any(|c| c.is_control() && !(allow_newlines && (c == '\n' || c == '\t')));
    if bad {
        return Err(PromptError::Invalid(field, skillup_kit::invalid::control(field)));
    }
    Ok(s.to_owned())
}

/// A topic: 1..=200 characters of text on one line, guarded (see [`guarded`]).
pub fn topic(s: &str) -> Result<String> {
    let t = user_text("topic", s, MAX_TOPIC_CHARS, false)?;
    if t.is_empty() {
        return Err(PromptError::Invalid("topic", skillup_kit::invalid::required("topic")));
    }
    Ok(guarded(&t))
}

/// User text with the prompt's data delimiters «» turned into ‹› — the same marks to a reader
/// (Russian titles keep their quotes), but they cannot close the «» the text is set in and
/// speak as instructions.
pub fn guarded(s: &str) -> String {
    s.replace('«', "‹").replace('»', "›")
}

/// A numeric parameter's value: a whole number 1..=[`MAX_PARAM_NUMBER`], as the number.
pub fn number(name: &str, s: &str) -> Result<String> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_PARAM_NUMBER).contains(&n) => Ok(n.to_string()),
        _ => {
            let field = format!("params.{}", name.chars().take(32).collect::<String>());
            let why = skillup_kit::invalid::between(&field, 1, i64::from(MAX_PARAM_NUMBER));
            Err(PromptError::Invalid("params", why))
        }
    }
}

/// Parameters: only declared names, values within limits.
pub fn params(
    given: &std::collections::HashMap<String, String>,
    declared: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    if given.len() > MAX_PARAMS {
        let why = skillup_kit::invalid::at_most_items("params", MAX_PARAMS);
        return Err(PromptError::Invalid("params", why));
    }
    let mut out = BTreeMap::new();
    for (k, v) in given {
        if !declared.contains_key(k) {
            let known: Vec<&str> = declared.keys().map(String::as_str).collect();
            return Err(PromptError::Invalid(
                "params",
                format!(
                    "unknown parameter `{}`; this function takes: {}",
                    k.chars().take(32).collect::<String>(),
                    known.join(", ")
                ),
            ));
        }
        out.insert(k.clone(), guarded(&user_text("params", v, MAX_PARAM_CHARS, false)?));
    }
    Ok(out)
}

/// The output length: 0 → the default; at most [`MAX_TOKENS`].
pub fn max_tokens(asked: u32, default: u32) -> Result<u32> {
    match asked {
        0 => Ok(default),
        n if n > MAX_TOKENS => {
            Err(PromptError::Invalid("max_tokens", format!("`max_tokens` is at most {MAX_TOKENS}")))
        }
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_take_their_primary_language() {
        assert_eq!(locale("").unwrap(), "en");
        assert_eq!(locale("ru-RU").unwrap(), "ru");
        assert_eq!(locale("EN_us").unwrap(), "en");
        assert!(locale("1234").is_err());
    }

    #[test]
    fn topics_are_one_line_of_bounded_text() {
        assert_eq!(topic("  The French Revolution ").unwrap(), "The French Revolution");
        assert!(topic("").is_err());
        assert!(topic("a\nb").is_err());
        assert!(topic("a\u{0}b").is_err());
        assert!(topic(&"я".repeat(200)).is_ok(), "characters, not bytes");
        assert!(topic(&"я".repeat(201)).is_err());
    }

    #[test]
    fn max_tokens_defaults_and_caps() {
        assert_eq!(max_tokens(0, 800).unwrap(), 800);
        assert_eq!(max_tokens(32_000, 800).unwrap(), 32_000);
        assert!(max_tokens(32_001, 800).is_err());
    }
}
