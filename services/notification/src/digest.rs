//! The email digest: what finished and what money moved (with its receipt) since the last one,
//! each by its preference, one email per user per run, claimed so that no two replicas send
//! it.

use skillup_kit::{fluent_args, i18n::Locale, mailer::Email};

use crate::{
    domain::Notification,
    error::Result,
    store::item,
    texts::{MESSAGES, localize},
};

use crate::notifier::*;

/// One email for one notification; a digest for several — in the reader's language. A
/// payment's lines carry its receipt (the ledger entry and when).
pub(crate) fn digest(to: &str, locale: Locale, items: &[item::Model], public_url: &str) -> Email {
    let items: Vec<Notification> =
        items.iter().map(|n| localize(Notification::from(n), locale)).collect();
    let subject = match &items[..] {
        [one] => one.title.clone(),
        many => {
            let args = fluent_args![("count", many.len())];
            let mixed = many.iter().any(|n| about_money(n.kind));
            MESSAGES.text(
                locale,
                if mixed { "digest.mixed" } else { "digest.subject" },
                Some(&args),
            )
        }
    };
    let mut body = format!("{}\n\n", MESSAGES.text(locale, "digest.hello", None));
    for n in &items {
        body.push_str(&format!("• {}\n", n.title));
        let excerpt = clip(&n.body, 200);
        if !excerpt.is_empty() {
            body.push_str(&format!("  {excerpt}\n"));
        }
        if about_money(n.kind)
            && let Some(id) = n.data.get("transaction_id")
        {
            let date = n.created_at.format("%Y-%m-%d %H:%M").to_string();
            let args = fluent_args![("id", id.as_str()), ("date", date)];
            body.push_str(&format!("  {}\n", MESSAGES.text(locale, "digest.receipt", Some(&args))));
        }
    }
    let link = format!("{}/api/generate", public_url.trim_end_matches('/'));
    let read = MESSAGES.text(locale, "digest.read", Some(&fluent_args![("link", link)]));
    let off = MESSAGES.text(locale, "digest.off", None);
    body.push_str(&format!("\n{read}\n\n{off}\n"));
    Email { to: to.to_owned(), subject, body }
}

impl Notifier {
    /// Emails each user with generation notifications not yet emailed: one email for one, a
    /// digest for a burst — at most one email per user per run, however many tasks finished.
    /// Safe on every replica at once: a user's batch is claimed by a conditional update before
    /// it is sent (and handed back if sending fails). Returns how many emails went out.
    pub async fn send_digests(&self) -> Result<usize> {
        let pending = self.store.pending_contacts(200).await?;
        let mut sent = 0;
        for c in pending {
            let items = self.store.of_kinds_after(c.user_id, &DIGESTED, c.emailed_seq, 50).await?;
            let upto = items.last().map_or(c.emailed_seq, |n| n.seq);
            let claimed =
                self.store.claim_digest(c.user_id, &DIGESTED, c.emailed_seq, upto).await?;
            if !claimed || items.is_empty() {
                continue;
            }
            // Each kind by its preference (claimed either way: not sent later).
            let prefs = self.preferences(c.user_id).await?;
            let items: Vec<item::Model> = items
                .into_iter()
                .filter(|n| {
                    if about_money(n.kind) {
                        prefs.email_on_payment
                    } else {
                        prefs.email_on_generation
                    }
                })
                .collect();
            if items.is_empty() {
                continue;
            }
            // The language chosen for emails, else the account's.
            let locale = reader_locale(&prefs.locale, &c.locale);
            let email = digest(&c.email, locale, &items, &self.public_url);
            if let Err(e) = self.mailer.send(email).await {
                tracing::warn!(error = %e, "digest email failed; it is retried next run");
                self.store.unclaim_digest(c.user_id, c.emailed_seq, upto).await?;
                continue;
            }
            metrics::counter!("notification_emails_total").increment(1);
            sent += 1;
        }
        Ok(sent)
    }
}
