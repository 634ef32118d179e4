//! What the subscribe service tells people, in the caller's language (`locales/{en,ru}.ftl`;
//! the language is the one of the call being served, see `skillup_kit::i18n::current`).

use skillup_kit::i18n::{self, FluentArgs};

skillup_kit::catalogue!();

/// Message `key` in the language of the call being served.
pub(crate) fn text(key: &str, args: Option<&FluentArgs<'_>>) -> String {
    MESSAGES.text(i18n::current(), key, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skillup_kit::i18n::Locale;

    #[test]
    fn english_and_russian_say_the_same_things() {
        assert_eq!(i18n::parity(&SOURCES), Vec::<String>::new());
    }

    #[tokio::test]
    async fn the_refusal_reads_as_the_seed_says_in_the_callers_language() {
        let args = skillup_kit::fluent_args![("function", "lesson_plan"), ("plan", "Free")];
        let ru = i18n::scope(Locale::Ru, async { text("not-in-plan", Some(&args)) }).await;
        assert!(ru.starts_with("Недоступно — оформите подписку"), "{ru}");
        let en = i18n::scope(Locale::En, async { text("not-in-plan", Some(&args)) }).await;
        assert!(en.starts_with("Unavailable — subscribe to a plan"), "{en}");
        assert!(
            text("quota-used-up", None).starts_with("This period's quota"),
            "English outside a call"
        );
    }
}
