//! What notifications say, in the reader's language. A notification is stored with the
//! arguments of its sentence (`data`: function, topic, amount, plan, until) beside an English
//! title; it is worded when read — a list, a live stream, an email — in the reader's language
//! (`locales/{en,ru}.ftl`). Rows stored before they kept their arguments read as stored.

use skillup_kit::i18n::{FluentArgs, Locale};

use crate::domain::{Notification, NotificationKind};

skillup_kit::catalogue!();

/// The sentence arguments each kind needs in `data`.
fn needs(kind: NotificationKind) -> (&'static str, &'static [&'static str]) {
    match kind {
        NotificationKind::GenerationCompleted => ("generation-completed", &["function", "topic"]),
        NotificationKind::GenerationFailed => ("generation-failed", &["function", "topic"]),
        NotificationKind::PaymentSucceeded => ("payment-succeeded", &["amount"]),
        NotificationKind::PaymentFailed => ("payment-failed", &["amount"]),
        NotificationKind::SubscriptionChanged => ("subscription-changed", &["plan"]),
    }
}

/// `n` worded in `locale` (its title; for a plan change, its body too).
pub fn localize(mut n: Notification, locale: Locale) -> Notification {
    let (key, args) = needs(n.kind);
    if !args.iter().all(|a| n.data.contains_key(*a)) {
        return n;
    }
    let mut fa = FluentArgs::new();
    for (k, v) in &n.data {
        fa.set(k.as_str(), v.as_str());
    }
    n.title = MESSAGES.text(locale, key, Some(&fa));
    if n.kind == NotificationKind::SubscriptionChanged {
        let body = if n.data.contains_key("until") { "until" } else { "body" };
        n.body = MESSAGES.text(locale, &format!("{key}.{body}"), Some(&fa));
    }
    if n.data.get("what").map(String::as_str) == Some("credit") {
        n.body = MESSAGES.text(locale, &format!("{key}.credit"), Some(&fa));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(kind: NotificationKind, data: &[(&str, &str)]) -> Notification {
        Notification {
            id: uuid::Uuid::nil(),
            kind,
            title: "stored".into(),
            body: "stored body".into(),
            data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            created_at: chrono::Utc::now(),
            read_at: None,
        }
    }

    #[test]
    fn english_and_russian_say_the_same_things() {
        assert_eq!(skillup_kit::i18n::parity(&SOURCES), Vec::<String>::new());
    }

    #[test]
    fn a_notification_is_worded_in_the_readers_language() {
        let done = note(
            NotificationKind::GenerationCompleted,
            &[("function", "quiz"), ("topic", "Фотосинтез"), ("task_id", "t")],
        );
        assert_eq!(localize(done.clone(), Locale::Ru).title, "Текст «Фотосинтез» готов");
        assert_eq!(
            localize(done.clone(), Locale::En).title,
            "Your quiz about «Фотосинтез» is ready"
        );
        assert_eq!(localize(done, Locale::Ru).body, "stored body", "the text's excerpt as it is");
        let plan = note(
            NotificationKind::SubscriptionChanged,
            &[("plan", "basic"), ("until", "2027-01-04")],
        );
        let ru = localize(plan, Locale::Ru);
        assert_eq!(
            (ru.title.as_str(), ru.body.as_str()),
            ("Ваш тариф теперь — basic", "Тариф basic действует до 2027-01-04.")
        );
        // Money back to the card reads as a refund; a payment row stored before `what` was
        // kept reads as a payment.
        let back = note(
            NotificationKind::PaymentSucceeded,
            &[("amount", "12.50 USD"), ("what", "refund")],
        );
        assert_eq!(localize(back, Locale::Ru).title, "12.50 USD возвращено на карту");
        let failed =
            note(NotificationKind::PaymentFailed, &[("amount", "5.00 USD"), ("what", "refund")]);
        assert!(
            localize(failed, Locale::En)
                .title
                .starts_with("The refund of 5.00 USD to your card failed")
        );
        let credit = note(
            NotificationKind::PaymentSucceeded,
            &[("amount", "79.00 RUB"), ("what", "credit")],
        );
        let ru = localize(credit, Locale::Ru);
        assert!(ru.title.starts_with("79.00 RUB начислено"), "{}", ru.title);
        assert!(ru.body.starts_with("Ваш тариф не выдержал"), "{}", ru.body);
        let paid = note(NotificationKind::PaymentSucceeded, &[("amount", "5.00 USD")]);
        assert_eq!(localize(paid, Locale::En).title, "Payment of 5.00 USD went through");
        let old = note(NotificationKind::PaymentSucceeded, &[("transaction_id", "x")]);
        assert_eq!(
            localize(old, Locale::Ru).title,
            "stored",
            "a row without its arguments reads as stored"
        );
    }

    #[test]
    fn a_digest_counts_in_russian() {
        let subject = |n: i64| {
            MESSAGES.text(
                Locale::Ru,
                "digest.subject",
                Some(&skillup_kit::fluent_args![("count", n)]),
            )
        };
        assert_eq!(subject(2), "Готовы 2 генерации");
        assert_eq!(subject(5), "Готовы 5 генераций");
        assert_eq!(subject(21), "Готова 21 генерация");
    }
}
