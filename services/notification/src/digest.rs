//! The email digest: what finished since the last one, one email per user per run, claimed so
//! that no two replicas send it.

use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, Query},
};
use skillup_kit::mailer::Email;

use crate::{
    error::Result,
    store::{contact, item},
};

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
        let pending = contact::Entity::find()
            .filter(contact::Column::MailPending.eq(true))
            .limit(200)
            .all(&self.db)
            .await?;
        let mut sent = 0;
        for c in pending {
            let items = item::Entity::find()
                .filter(item::Column::UserId.eq(c.user_id))
                .filter(item::Column::Seq.gt(c.emailed_seq))
                .filter(item::Column::Kind.is_in(DIGESTED))
                .order_by_asc(item::Column::Seq)
                .limit(50)
                .all(&self.db)
                .await?;
            let upto = items.last().map_or(c.emailed_seq, |n| n.seq);
            // Still pending if something newer than this digest is stored by now: decided in
            // the claiming statement itself, so a notification stored while this digest was
            // being read is never marked as sent (its insert holds the contact row until its
            // commit, and the claim waits for it).
            let newer = Query::select()
                .expr(Expr::value(1))
                .from(item::Entity)
                .and_where(item::Column::UserId.eq(c.user_id))
                .and_where(item::Column::Seq.gt(upto))
                .and_where(item::Column::Kind.is_in(DIGESTED))
                .to_owned();
            let claimed = contact::Entity::update_many()
                .col_expr(contact::Column::EmailedSeq, Expr::value(upto))
                .col_expr(contact::Column::MailPending, Expr::exists(newer))
                .filter(contact::Column::UserId.eq(c.user_id))
                .filter(contact::Column::EmailedSeq.eq(c.emailed_seq))
                .filter(contact::Column::MailPending.eq(true))
                .exec(&self.db)
                .await?
                .rows_affected
                == 1;
            if !claimed
                || items.is_empty()
                || !self.preferences(c.user_id).await?.email_on_generation
            {
                continue;
            }
            let email = digest(&c.email, &items, &self.public_url);
            if let Err(e) = self.mailer.send(email).await {
                tracing::warn!(error = %e, "digest email failed; it is retried next run");
                contact::Entity::update_many()
                    .col_expr(contact::Column::EmailedSeq, Expr::value(c.emailed_seq))
                    .col_expr(contact::Column::MailPending, Expr::value(true))
                    .filter(contact::Column::UserId.eq(c.user_id))
                    .filter(contact::Column::EmailedSeq.eq(upto))
                    .exec(&self.db)
                    .await?;
                continue;
            }
            metrics::counter!("notification_emails_total").increment(1);
            sent += 1;
        }
        Ok(sent)
    }
}
