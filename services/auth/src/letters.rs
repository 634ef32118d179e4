//! The emails auth sends, and the errors people read, in the reader's language: the texts are Fluent messages in
//! `locales/{en,ru}.ftl` (a test keeps the two in step), filled in here.

use skillup_kit::{
    fluent_args,
    i18n::{FluentArgs, Locale},
    mailer::Email as Mail,
};

use crate::store::entities::user;

skillup_kit::catalogue!();

/// Message `key` in the language of the call being served (errors people read).
pub(crate) fn said(key: &str, args: Option<&FluentArgs<'_>>) -> String {
    MESSAGES.text(skillup_kit::i18n::current(), key, args)
}

/// The language an account reads.
pub(crate) fn locale_of(user: &user::Model) -> Locale {
    Locale::or_default(&user.locale)
}

/// The email's first line — the name only once the address is confirmed: until then the name
/// is whatever someone typed next to an address that may not be theirs, and our mail must not
/// carry a stranger's text to it.
fn greeting(user: &user::Model, locale: Locale) -> String {
    if user.name.is_empty() || !user.email_verified {
        MESSAGES.text(locale, "greeting", None)
    } else {
        MESSAGES.text(locale, "greeting-named", Some(&fluent_args![("name", user.name.as_str())]))
    }
}

/// Letter `key` (a message with `.subject` and `.body`) to `user`, with `args` and the
/// greeting filled in.
pub(crate) fn letter(user: &user::Model, key: &str, mut args: FluentArgs<'_>) -> Mail {
    let locale = locale_of(user);
    args.set("greeting", greeting(user, locale));
    Mail {
        to: user.email.clone(),
        subject: MESSAGES.text(locale, &format!("{key}.subject"), Some(&args)),
        body: format!("{}\n", MESSAGES.text(locale, &format!("{key}.body"), Some(&args))),
        // Account letters (verification, reset, security) are not a list to leave.
        unsubscribe: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(locale: &str, name: &str, verified: bool) -> user::Model {
        let t = chrono::Utc::now();
        user::Model {
            id: uuid::Uuid::nil(),
            email: "a@example.com".into(),
            name: name.into(),
            password_hash: String::new(),
            email_verified: verified,
            tier: "free".into(),
            scopes: "user".into(),
            is_active: true,
            created_at: t,
            updated_at: t,
            locale: locale.into(),
            time_zone: "UTC".into(),
        }
    }

    #[test]
    fn english_and_russian_say_the_same_things() {
        assert_eq!(skillup_kit::i18n::parity(&SOURCES), Vec::<String>::new());
    }

    #[test]
    fn every_refusal_of_the_rules_is_a_message() {
        use crate::domain::{email::Email, password, profile};
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long = format!("a@{}.com", "b".repeat(260));
        let mut keys: Vec<&str> =
            ["", "no-at", "a@b@c", "a b@example.com", "a@-", &long_local, &long]
                .iter()
                .filter_map(|raw| Email::parse(raw).err())
                .collect();
        keys.extend(profile::name(&"я".repeat(101)).err());
        keys.extend(profile::name("a\u{0}").err());
        keys.extend(profile::locale("de").err());
        keys.extend(profile::time_zone("Mars/Olympus").err());
        for pw in ["short", &"é".repeat(37), "          ", "abc\u{0}defgh"] {
            keys.extend(password::check_policy(pw, 8).err().map(|(k, _)| k));
        }
        assert!(keys.len() >= 12, "{keys:?}");
        for key in keys {
            assert!(MESSAGES.has(key), "no message `{key}` in locales/*.ftl");
        }
    }

    #[test]
    fn a_letter_is_in_the_readers_language_with_plurals_right() {
        let args = || {
            fluent_args![("link", "https://x/verify-email?token=T"), ("token", "T"), ("hours", 24)]
        };
        let ru = letter(&user("ru", "Ада", true), "verify-email", args());
        assert_eq!(ru.subject, "Подтвердите email для SkillUp");
        assert!(ru.body.starts_with("Здравствуйте, Ада!\n\nПодтвердите адрес"), "{}", ru.body);
        assert!(ru.body.contains("https://x/verify-email?token=T"), "{}", ru.body);
        assert!(ru.body.ends_with("Ссылка действует 24 часа.\n"), "{}", ru.body);
        let en = letter(&user("en", "Ada", false), "verify-email", args());
        assert_eq!(en.subject, "Confirm your email for SkillUp");
        assert!(
            en.body.starts_with("Hello,\n\nconfirm your email"),
            "no unconfirmed name: {}",
            en.body
        );
        assert!(en.body.ends_with("The link expires in 24 hours.\n"), "{}", en.body);
        let reset = |minutes: u64| {
            let args = fluent_args![("link", "L"), ("token", "T"), ("minutes", minutes)];
            letter(&user("ru", "", true), "reset-password", args).body
        };
        assert!(reset(1).contains("действует 1 минуту."));
        assert!(reset(3).contains("действует 3 минуты."));
        assert!(reset(60).contains("действует 60 минут."));
        assert_eq!(
            letter(&user("de", "", false), "account-taken", FluentArgs::new()).subject,
            "Your SkillUp account",
            "a tag we do not speak reads English"
        );
    }
}
