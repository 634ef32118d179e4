//! The email digest: what finished and what money moved (with its receipt) since the last one,
//! each by its preference, one email per user per run, claimed so that no two replicas send
//! it.

use skillup_kit::{fluent_args, i18n::Locale, mailer::Email};

use crate::{
    domain::{Delivery, Event, Notification},
    error::Result,
    store::item,
    texts::{MESSAGES, localize},
};

use crate::notifier::*;

/// An email's unsubscribe links.
#[derive(Debug, Clone)]
pub struct Unsubscribe {
    /// The one-click POST (`List-Unsubscribe`).
    pub one_click: String,
    /// The console's page (the link in the text).
    pub page: String,
}

/// One email for one notification; a digest for several — in the reader's language. A
/// payment's lines carry its receipt (the ledger entry and when).
pub(crate) fn digest(
    to: &str,
    locale: Locale,
    items: &[item::Model],
    public_url: &str,
    unsubscribe: Option<&Unsubscribe>,
) -> Email {
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
    let link = format!("{}/notifications", public_url.trim_end_matches('/'));
    let read = MESSAGES.text(locale, "digest.read", Some(&fluent_args![("link", link)]));
    body.push_str(&format!("\n{read}\n"));
    if let Some(u) = unsubscribe {
        let args = fluent_args![("link", u.page.as_str())];
        body.push_str(&format!("\n{}\n", MESSAGES.text(locale, "digest.off", Some(&args))));
    }
    Email {
        to: to.to_owned(),
        subject,
        body,
        unsubscribe: unsubscribe.map(|u| u.one_click.clone()),
    }
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
            // The events the person wants in the digest (the rest are emailed at once, or
            // not at all), each not emailed already — taken one by one, so an email goes once.
            let prefs = self.preferences(c.user_id).await?;
            let mut chosen = Vec::new();
            for n in items {
                let event = Event::of(n.kind, &Notification::from(&n).data);
                if prefs.channels(event).email == Delivery::Digest
                    && self.store.claim_mail(n.id).await?
                {
                    chosen.push(n);
                }
            }
            if chosen.is_empty() {
                continue;
            }
            // The language chosen for emails, else the account's.
            let locale = reader_locale(&prefs.locale, &c.locale);
            let events: Vec<Event> =
                chosen.iter().map(|n| Event::of(n.kind, &Notification::from(n).data)).collect();
            let all_one = events.windows(2).all(|w| w[0] == w[1]);
            let link = self.unsubscribe_link(c.user_id, all_one.then(|| events[0])).await?;
            let email = digest(&c.email, locale, &chosen, &self.public_url, link.as_ref());
            if let Err(e) = self.mailer.send(email).await {
                tracing::warn!(error = %e, "digest email failed; it is retried next run");
                self.store.unclaim_mail(chosen.iter().map(|n| n.id).collect()).await?;
                self.store.unclaim_digest(c.user_id, c.emailed_seq, upto).await?;
                continue;
            }
            metrics::counter!("notification_emails_total").increment(1);
            sent += 1;
        }
        Ok(sent)
    }
}
