//! What the prompt service tells people, in the caller's language (`locales/{en,ru}.ftl`; the
//! language is the one of the call being served, see `skillup_kit::i18n::current`).

use skillup_kit::i18n;

skillup_kit::catalogue!();

/// Message `key` about `field` and `what` it holds, in the language of the call being served.
pub(crate) fn said(key: &str, field: &str, what: &str) -> String {
    let args = skillup_kit::fluent_args![("field", field), ("what", what)];
    MESSAGES.text(i18n::current(), key, Some(&args))
}

/// Message `key` about function `function`, in the language of the call being served.
pub(crate) fn about(key: &str, function: &str) -> String {
    let args = skillup_kit::fluent_args![("function", function)];
    MESSAGES.text(i18n::current(), key, Some(&args))
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
    async fn a_missing_function_is_named_in_the_callers_language() {
        assert_eq!(about("no-function", "poem"), "no function `poem`");
        let ru = i18n::scope(Locale::Ru, async { about("no-function", "poem") }).await;
        assert_eq!(ru, "Функции «poem» нет.");
    }

    #[tokio::test]
    async fn an_editors_template_mistake_keeps_its_braces() {
        assert_eq!(
            said("template-unclosed", "template.user", "7"),
            "`template.user`: `{{` at byte 7 is never closed with `}}`"
        );
        assert_eq!(
            said("template-needs-topic", "template.user", ""),
            "`template.user` must use {{topic}}"
        );
        let ru =
            i18n::scope(Locale::Ru, async { said("template-needs-topic", "template.user", "") });
        assert_eq!(ru.await, "В поле «template.user» должен быть {{topic}}.");
    }
}
