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
    // Money in the reader's format (rows stored before keep their `12.50 RUB`).
    if let (Some(minor), Some(currency)) =
        (n.data.get("amount_minor").and_then(|m| m.parse::<i64>().ok()), n.data.get("currency"))
    {
        fa.set("amount", money(minor, currency, locale));
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

/// An amount as a reader of `locale` writes it, with the currency's narrow sign as the
/// console's `Intl.NumberFormat` does: `₽1,234.50` / `1 234,50 ₽` (no-break spaces), `$9.90` /
/// `9,90 $`; a currency without a sign keeps its code (`12.50 CHF`, `12,50 CHF`).
pub fn money(minor: i64, currency: &str, locale: Locale) -> String {
    let sign = match currency {
        "RUB" => Some("₽"),
        "USD" => Some("$"),
        "EUR" => Some("€"),
        _ => None,
    };
    let (group, point) = match locale {
        Locale::En => (",", "."),
        Locale::Ru => ("\u{a0}", ","),
    };
    let units = (minor.abs() / 100).to_string();
    let mut grouped = String::new();
    for (i, d) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push_str(group);
        }
        grouped.push(d);
    }
    let number = format!("{grouped}{point}{:02}", minor.abs() % 100);
    let minus = if minor < 0 { "-" } else { "" };
    match (locale, sign) {
        (Locale::En, Some(s)) => format!("{minus}{s}{number}"),
        (Locale::Ru, Some(s)) => format!("{minus}{number}\u{a0}{s}"),
        (_, None) => format!("{minus}{number}\u{a0}{currency}"),
    }
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
    fn money_is_written_as_its_reader_writes_it() {
        assert_eq!(money(79_000, "RUB", Locale::En), "₽790.00");
        assert_eq!(money(79_000, "RUB", Locale::Ru), "790,00\u{a0}₽");
        assert_eq!(money(123_456_789, "RUB", Locale::En), "₽1,234,567.89");
        assert_eq!(money(123_456_789, "RUB", Locale::Ru), "1\u{a0}234\u{a0}567,89\u{a0}₽");
        assert_eq!(money(990, "USD", Locale::En), "$9.90");
        assert_eq!(money(5, "EUR", Locale::Ru), "0,05\u{a0}€");
        assert_eq!(money(-1_250, "USD", Locale::En), "-$12.50");
        assert_eq!(money(1_250, "CHF", Locale::En), "12.50\u{a0}CHF");
        let paid = note(
            NotificationKind::PaymentSucceeded,
            &[("amount", "790.00 RUB"), ("amount_minor", "79000"), ("currency", "RUB")],
        );
        assert_eq!(localize(paid.clone(), Locale::En).title, "Payment of ₽790.00 went through");
        assert!(localize(paid, Locale::Ru).title.contains("790,00\u{a0}₽"));
        // Stored before the amount's parts were kept: as stored.
        let old = note(NotificationKind::PaymentSucceeded, &[("amount", "790.00 RUB")]);
        assert_eq!(localize(old, Locale::En).title, "Payment of 790.00 RUB went through");
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
