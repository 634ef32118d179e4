//! What the ai service tells people, in the caller's language (`locales/{en,ru}.ftl`; the
//! language is the one of the call being served, see `skillup_kit::i18n::current`).

use skillup_kit::i18n;

skillup_kit::catalogue!();

/// Message `key` in the language of the call being served.
pub(crate) fn text(key: &str) -> String {
    MESSAGES.text(i18n::current(), key, None)
}

/// Message `key` about a document in state `status` (`queued`, `running`, …).
pub(crate) fn about(key: &str, status: impl std::fmt::Display) -> String {
    let args = skillup_kit::fluent_args![("status", status.to_string())];
    MESSAGES.text(i18n::current(), key, Some(&args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_and_russian_say_the_same_things() {
        assert_eq!(i18n::parity(&SOURCES), Vec::<String>::new());
    }
}
