//! The sentence a person reads about a refused field, in the language of the call being served
//! ([`crate::i18n::current`]): one Fluent message per kind of problem (`locales/{en,ru}.ftl` of
//! the kit), so every service says the same thing the same way and a service's rules only name
//! the field and the limit. The machine-readable part stays the error's `field`.
//!
//! ```
//! use skillup_kit::invalid;
//! assert_eq!(invalid::uuid("task_id"), "`task_id` must be a UUID");
//! ```

use crate::{fluent_args, i18n::FluentArgs};

crate::catalogue!();

fn said(key: &str, args: FluentArgs<'_>) -> String {
    MESSAGES.text(crate::i18n::current(), key, Some(&args))
}

/// A required field left empty.
pub fn required(field: &str) -> String {
    said("field-required", fluent_args![("field", field)])
}

pub fn uuid(field: &str) -> String {
    said("field-uuid", fluent_args![("field", field)])
}

/// A text outside `min..=max` characters.
pub fn chars(field: &str, min: usize, max: usize) -> String {
    said("field-chars", fluent_args![("field", field), ("min", min), ("max", max)])
}

pub fn at_most_chars(field: &str, max: usize) -> String {
    said("field-at-most-chars", fluent_args![("field", field), ("max", max)])
}

/// A list longer than `max` items.
pub fn at_most_items(field: &str, max: usize) -> String {
    said("field-at-most-items", fluent_args![("field", field), ("max", max)])
}

/// A number above `max`.
pub fn at_most(field: &str, max: u64) -> String {
    said("field-at-most", fluent_args![("field", field), ("max", max)])
}

/// A value not among `options` (shown as they are written in the API).
pub fn one_of(field: &str, options: &[&str]) -> String {
    said("field-one-of", fluent_args![("field", field), ("options", options.join(", "))])
}

pub fn time_zone(field: &str) -> String {
    said("field-time-zone", fluent_args![("field", field)])
}

/// Not a code such as a function's (1..=64 of `a-z`, `0-9`, `_`, `-`).
pub fn slug(field: &str) -> String {
    said("field-slug", fluent_args![("field", field)])
}

/// A page token this API did not give.
pub fn page_token(field: &str) -> String {
    said("field-page-token", fluent_args![("field", field)])
}

/// A number outside `min..=max`.
pub fn between(field: &str, min: i64, max: i64) -> String {
    said("field-between", fluent_args![("field", field), ("min", min), ("max", max)])
}

/// A text longer than `max` characters or of more than one line.
pub fn one_line(field: &str, max: usize) -> String {
    said("field-one-line", fluent_args![("field", field), ("max", max)])
}

/// A text holding control characters.
pub fn control(field: &str) -> String {
    said("field-control", fluent_args![("field", field)])
}

/// Not an ISO 4217 currency code.
pub fn currency(field: &str) -> String {
    said("field-currency", fluent_args![("field", field)])
}

/// A currency other than the one the deployment sells in.
pub fn currency_only(field: &str, currency: &str) -> String {
    said("field-currency-only", fluent_args![("field", field), ("currency", currency)])
}

/// A return address off the site.
pub fn return_url(field: &str) -> String {
    said("field-return-url", fluent_args![("field", field)])
}

/// Not an email address.
pub fn email(field: &str) -> String {
    said("field-email", fluent_args![("field", field)])
}

/// Not a push service's address this platform calls (https on a public address).
pub fn push_endpoint(field: &str) -> String {
    said("field-push-endpoint", fluent_args![("field", field)])
}

/// Not a browser's push key or secret.
pub fn push_key(field: &str) -> String {
    said("field-push-key", fluent_args![("field", field)])
}

/// Nothing of the caller's by that id; `what` names it (`push subscription`).
pub fn not_found(what: &str) -> String {
    said("field-not-found", fluent_args![("what", what)])
}

/// Not a BCP 47 language tag.
pub fn language(field: &str) -> String {
    said("field-language", fluent_args![("field", field)])
}

/// A missing or malformed idempotency key.
pub fn idempotency_key() -> String {
    said("field-idempotency-key", FluentArgs::new())
}

/// An id that names nothing of the caller's.
pub fn not_yours(field: &str) -> String {
    said("field-not-yours", fluent_args![("field", field)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::{Locale, scope};

    #[test]
    fn english_and_russian_say_the_same_things() {
        assert_eq!(crate::i18n::parity(&SOURCES), Vec::<String>::new());
    }

    #[tokio::test]
    async fn each_problem_reads_in_the_callers_language_with_plurals_right() {
        assert_eq!(chars("title", 1, 200), "`title` must be 1..=200 characters");
        assert_eq!(at_most_chars("query", 1), "`query` must be at most 1 character");
        assert_eq!(one_of("format", &["md", "txt"]), "`format` must be one of md, txt");
        let ru = scope(Locale::Ru, async {
            [
                required("password"),
                chars("title", 1, 200),
                at_most_chars("query", 1),
                at_most_chars("query", 21),
                uuid("task_id"),
                page_token("page.page_token"),
            ]
        })
        .await;
        assert_eq!(
            ru,
            [
                "Заполните поле «password».",
                "Поле «title»: от 1 до 200 символов.",
                "Поле «query»: не длиннее 1 символа.",
                "Поле «query»: не длиннее 21 символа.",
                "Поле «task_id» должно быть UUID.",
                "Поле «page.page_token»: такую метку страницы этот API не выдавал.",
            ]
        );
    }
}
