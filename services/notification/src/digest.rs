//! The email digest: what finished since the last one, one email per user per run, claimed so
//! that no two replicas send it.

use skillup_kit::mailer::Email;

use crate::{error::Result, store::item};

use crate::notifier::*;

/// One email for one finished task; a digest for several.
pub(crate) fn digest(to: &str, items: &[item::Model], public_url: &str) -> Email {
    let subject = match items {
        [one] => one.title.clone(),
        many => format!("{} of your generations have finished", many.len()),
    };
    let mut body = String::from("Hello,\n\n");
    for n in items {
        body.push_str(&format!("• {}\n", n.title));
        let excerpt = clip(&n.body, 200);
        if !excerpt.is_empty() {
            body.push_str(&format!("  {excerpt}\n"));
        }
    }
    body.push_str(&format!(
        "\nRead them in SkillUp: {}/api/generate\n\nYou can turn these emails off in your notification preferences.\n",
        public_url.trim_end_matches('/')
    ));
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
            if !claimed
                || items.is_empty()
                || !self.preferences(c.user_id).await?.email_on_generation
            {
                continue;
            }
            let email = digest(&c.email, &items, &self.public_url);
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
