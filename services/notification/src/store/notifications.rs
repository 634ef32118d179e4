//! Every statement on the notification service's tables: `notification_items` (each user's
//! notifications in sequence), `notification_contacts` (where the digest goes, and what it
//! covered) and `notification_prefs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
    sea_query::{Alias, Expr, ExprTrait, OnConflict, Query},
};
use uuid::Uuid;

use super::{contact, item, prefs, push_subscription, sequence};
use crate::domain::NotificationKind;

/// What [`NotificationStore::insert_batch`] did.
#[derive(Debug, Default)]
pub struct Stored {
    /// Stored now, numbered, in the order given.
    pub new: Vec<item::Model>,
    /// Stored before (redelivered events), as stored.
    pub existing: Vec<item::Model>,
    /// Users with something to email but no contact on file.
    pub unknown_contacts: Vec<Uuid>,
}

#[derive(Clone)]
pub struct NotificationStore {
    db: DatabaseConnection,
}

impl NotificationStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The user's newest sequence number (0 before the first notification).
    pub async fn newest_seq(&self, user: Uuid) -> Result<i64, DbErr> {
        Ok(item::Entity::find()
            .select_only()
            .column_as(item::Column::Seq.max(), "max")
            .filter(item::Column::UserId.eq(user))
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?
            .flatten()
            .unwrap_or(0))
    }

    /// The user's notifications with sequence numbers after `after`, in order, at most
    /// `limit`.
    pub async fn after(
        &self,
        user: Uuid,
        after: i64,
        limit: u64,
    ) -> Result<Vec<item::Model>, DbErr> {
        item::Entity::find()
            .filter(item::Column::UserId.eq(user))
            .filter(item::Column::Seq.gt(after))
            .order_by_asc(item::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// The sequence number of the user's notification `id` (`None`: not one of theirs).
    pub async fn seq_of(&self, user: Uuid, id: Uuid) -> Result<Option<i64>, DbErr> {
        Ok(item::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .filter(|n| n.user_id == user)
            .map(|n| n.seq))
    }

    /// Up to `limit` of the user's notifications before sequence `before`, newest first.
    pub async fn page(
        &self,
        user: Uuid,
        unread_only: bool,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<item::Model>, DbErr> {
        let mut q = item::Entity::find().filter(item::Column::UserId.eq(user));
        if unread_only {
            q = q.filter(item::Column::ReadAt.is_null());
        }
        if let Some(before) = before {
            q = q.filter(item::Column::Seq.lt(before));
        }
        q.order_by_desc(item::Column::Seq).limit(limit).all(&self.db).await
    }

    pub async fn unread(&self, user: Uuid) -> Result<u64, DbErr> {
        item::Entity::find()
            .filter(item::Column::UserId.eq(user))
            .filter(item::Column::ReadAt.is_null())
            .count(&self.db)
            .await
    }

    /// Marks the user's unread notifications read (those in `ids`, or all); how many changed.
    pub async fn mark_read(&self, user: Uuid, ids: Option<Vec<Uuid>>) -> Result<u64, DbErr> {
        let mut q = item::Entity::update_many()
            .col_expr(item::Column::ReadAt, Expr::value(Utc::now()))
            .filter(item::Column::UserId.eq(user))
            .filter(item::Column::ReadAt.is_null());
        if let Some(ids) = ids {
            q = q.filter(item::Column::Id.is_in(ids));
        }
        Ok(q.exec(&self.db).await?.rows_affected)
    }

    pub async fn prefs(&self, user: Uuid) -> Result<Option<prefs::Model>, DbErr> {
        prefs::Entity::find_by_id(user).one(&self.db).await
    }

    pub async fn set_prefs(&self, p: prefs::Model) -> Result<(), DbErr> {
        prefs::Entity::insert(prefs::ActiveModel::from(p))
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(prefs::Column::UserId)
                    .update_columns([
                        prefs::Column::EmailOnGeneration,
                        prefs::Column::EmailOnPayment,
                        prefs::Column::Locale,
                        prefs::Column::Events,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// Stores a batch of notifications in one transaction: each under its user's next sequence
    /// number, in the order given (one upsert numbers every user of the batch, users taken in
    /// id order so concurrent batches lock their counters in one order), with one multi-row
    /// insert, and the contacts of those `digested` marked pending in one statement — so a digest
    /// claiming a contact sees a notification and its flag together or neither. Events stored
    /// already (a redelivery), and repeats inside the batch, are not stored again: they come back
    /// as [`Stored::existing`]. A unique violation means another replica is storing one of these
    /// events at this moment: the caller tries again and then finds it stored.
    pub async fn insert_batch(&self, rows: &[(item::Model, bool)]) -> Result<Stored, DbErr> {
        let txn = self.db.begin().await?;
        match Self::insert_batch_in(&txn, rows).await {
            Ok(stored) => {
                txn.commit().await?;
                Ok(stored)
            }
            Err(e) => {
                txn.rollback().await?;
                Err(e)
            }
        }
    }

    async fn insert_batch_in(
        txn: &sea_orm::DatabaseTransaction,
        rows: &[(item::Model, bool)],
    ) -> Result<Stored, DbErr> {
        let events: Vec<String> = rows.iter().map(|(r, _)| r.event_id.clone()).collect();
        let existing =
            item::Entity::find().filter(item::Column::EventId.is_in(events)).all(txn).await?;
        let mut seen: HashSet<String> = existing.iter().map(|r| r.event_id.clone()).collect();
        let fresh: Vec<&(item::Model, bool)> =
            rows.iter().filter(|(r, _)| seen.insert(r.event_id.clone())).collect();
        if fresh.is_empty() {
            return Ok(Stored { new: Vec::new(), existing, unknown_contacts: Vec::new() });
        }
        let mut counts = BTreeMap::<Uuid, i64>::new();
        for (r, _) in &fresh {
            *counts.entry(r.user_id).or_default() += 1;
        }
        let mut next = Query::insert();
        next.into_table(sequence::Entity)
            .columns([sequence::Column::UserId, sequence::Column::Last])
            .on_conflict(
                OnConflict::column(sequence::Column::UserId)
                    .value(
                        sequence::Column::Last,
                        Expr::col((sequence::Entity, sequence::Column::Last))
                            .add(Expr::col((Alias::new("excluded"), sequence::Column::Last))),
                    )
                    .to_owned(),
            )
            .returning(
                Query::returning().columns([sequence::Column::UserId, sequence::Column::Last]),
            );
        for (user, k) in &counts {
            next.values_panic([(*user).into(), (*k).into()]);
        }
        // Each user's numbers run up to the counter's new value: `last - k + 1 ..= last`.
        let mut first = HashMap::<Uuid, i64>::new();
        for r in txn.query_all(&next).await? {
            let user: Uuid = r.try_get("", "user_id")?;
            let last: i64 = r.try_get("", "last")?;
            first.insert(user, last - counts.get(&user).copied().unwrap_or(1) + 1);
        }
        let mut new = Vec::with_capacity(fresh.len());
        let mut flagged = BTreeSet::new();
        for (r, digested) in fresh {
            let mut r = r.clone();
            let seq = first
                .get_mut(&r.user_id)
                .ok_or_else(|| DbErr::Custom("the sequence upsert did not number a user".into()))?;
            r.seq = *seq;
            *seq += 1;
            if *digested {
                flagged.insert(r.user_id);
            }
            new.push(r);
        }
        item::Entity::insert_many(new.iter().cloned().map(item::ActiveModel::from))
            .exec_without_returning(txn)
            .await?;
        let mut unknown_contacts = Vec::new();
        if !flagged.is_empty() {
            let found: HashSet<Uuid> = contact::Entity::update_many()
                .col_expr(contact::Column::MailPending, Expr::value(true))
                .filter(contact::Column::UserId.is_in(flagged.iter().copied()))
                .exec_with_returning(txn)
                .await?
                .into_iter()
                .map(|c| c.user_id)
                .collect();
            unknown_contacts = flagged.into_iter().filter(|u| !found.contains(u)).collect();
        }
        Ok(Stored { new, existing, unknown_contacts })
    }

    /// The preferences of each of `users` who has chosen any.
    pub async fn prefs_of(&self, users: &[Uuid]) -> Result<Vec<prefs::Model>, DbErr> {
        prefs::Entity::find()
            .filter(prefs::Column::UserId.is_in(users.iter().copied()))
            .all(&self.db)
            .await
    }

    /// The contact of each of `users` on file.
    pub async fn contacts_of(&self, users: &[Uuid]) -> Result<Vec<contact::Model>, DbErr> {
        contact::Entity::find()
            .filter(contact::Column::UserId.is_in(users.iter().copied()))
            .all(&self.db)
            .await
    }

    /// Takes notification `id` for an email: true for the one caller that flips it from not
    /// emailed.
    pub async fn claim_mail(&self, id: Uuid) -> Result<bool, DbErr> {
        let n = item::Entity::update_many()
            .col_expr(item::Column::MailState, Expr::value(1i16))
            .filter(item::Column::Id.eq(id))
            .filter(item::Column::MailState.eq(0i16))
            .exec(&self.db)
            .await?;
        Ok(n.rows_affected == 1)
    }

    /// Hands notifications back (their email could not be sent).
    pub async fn unclaim_mail(&self, ids: Vec<Uuid>) -> Result<(), DbErr> {
        item::Entity::update_many()
            .col_expr(item::Column::MailState, Expr::value(0i16))
            .filter(item::Column::Id.is_in(ids))
            .exec(&self.db)
            .await
            .map(drop)
    }

    /// The secret of the person's unsubscribe links, made now (`fresh`) if they have none
    /// (`None`: no contact on file).
    pub async fn unsubscribe_key(&self, user: Uuid, fresh: &str) -> Result<Option<String>, DbErr> {
        contact::Entity::update_many()
            .col_expr(contact::Column::UnsubscribeKey, Expr::value(fresh))
            .filter(contact::Column::UserId.eq(user))
            .filter(contact::Column::UnsubscribeKey.is_null())
            .exec(&self.db)
            .await?;
        Ok(self.contact(user).await?.and_then(|c| c.unsubscribe_key))
    }

    /// Keeps the user's address (first one wins), pending: events of the user may be stored
    /// already.
    pub async fn add_contact(&self, user: Uuid, email: &str, locale: &str) -> Result<(), DbErr> {
        contact::Entity::insert(contact::ActiveModel {
            user_id: Set(user),
            email: Set(email.to_owned()),
            emailed_seq: Set(0),
            mail_pending: Set(true),
            locale: Set(locale.to_owned()),
            unsubscribe_key: Set(None),
        })
        .on_conflict_do_nothing_on([contact::Column::UserId])
        .exec(&self.db)
        .await
        .map(drop)
    }

    /// The user's address and language now (a changed profile), the contact made if missing.
    pub async fn set_contact(&self, user: Uuid, email: &str, locale: &str) -> Result<(), DbErr> {
        contact::Entity::insert(contact::ActiveModel {
            user_id: Set(user),
            email: Set(email.to_owned()),
            emailed_seq: Set(0),
            mail_pending: Set(true),
            locale: Set(locale.to_owned()),
            unsubscribe_key: Set(None),
        })
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(contact::Column::UserId)
                .update_columns([contact::Column::Email, contact::Column::Locale])
                .to_owned(),
        )
        .exec(&self.db)
        .await
        .map(drop)
    }

    /// Everything of a deleted user: notifications, preferences, contact, push devices.
    pub async fn forget_user(&self, user: Uuid) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        item::Entity::delete_many().filter(item::Column::UserId.eq(user)).exec(&txn).await?;
        prefs::Entity::delete_many().filter(prefs::Column::UserId.eq(user)).exec(&txn).await?;
        contact::Entity::delete_many().filter(contact::Column::UserId.eq(user)).exec(&txn).await?;
        sequence::Entity::delete_many()
            .filter(sequence::Column::UserId.eq(user))
            .exec(&txn)
            .await?;
        push_subscription::Entity::delete_many()
            .filter(push_subscription::Column::UserId.eq(user))
            .exec(&txn)
            .await?;
        txn.commit().await
    }

    pub async fn contact(&self, user: Uuid) -> Result<Option<contact::Model>, DbErr> {
        contact::Entity::find_by_id(user).one(&self.db).await
    }

    /// Up to `limit` contacts with mail pending.
    pub async fn pending_contacts(&self, limit: u64) -> Result<Vec<contact::Model>, DbErr> {
        contact::Entity::find()
            .filter(contact::Column::MailPending.eq(true))
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Up to `limit` of the user's notifications of `kinds` after sequence `after`, in order.
    pub async fn of_kinds_after(
        &self,
        user: Uuid,
        kinds: &[NotificationKind],
        after: i64,
        limit: u64,
    ) -> Result<Vec<item::Model>, DbErr> {
        item::Entity::find()
            .filter(item::Column::UserId.eq(user))
            .filter(item::Column::Seq.gt(after))
            .filter(item::Column::Kind.is_in(kinds.iter().copied()))
            .order_by_asc(item::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Claims a digest of the user's notifications `(from, upto]`: only if the contact still
    /// says `from` and pending. It stays pending if something of `kinds` newer than `upto` is
    /// stored by now — decided in the claiming statement itself, so a notification stored
    /// while the digest was being read is never marked as sent (its insert holds the contact
    /// row until its commit, and the claim waits for it). Whether this call has it.
    pub async fn claim_digest(
        &self,
        user: Uuid,
        kinds: &[NotificationKind],
        from: i64,
        upto: i64,
    ) -> Result<bool, DbErr> {
        let newer = Query::select()
            .expr(Expr::value(1))
            .from(item::Entity)
            .and_where(item::Column::UserId.eq(user))
            .and_where(item::Column::Seq.gt(upto))
            .and_where(item::Column::Kind.is_in(kinds.iter().copied()))
            .to_owned();
        let n = contact::Entity::update_many()
            .col_expr(contact::Column::EmailedSeq, Expr::value(upto))
            .col_expr(contact::Column::MailPending, Expr::exists(newer))
            .filter(contact::Column::UserId.eq(user))
            .filter(contact::Column::EmailedSeq.eq(from))
            .filter(contact::Column::MailPending.eq(true))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(n == 1)
    }

    /// Hands a claimed digest back (its email could not be sent).
    pub async fn unclaim_digest(&self, user: Uuid, from: i64, upto: i64) -> Result<(), DbErr> {
        contact::Entity::update_many()
            .col_expr(contact::Column::EmailedSeq, Expr::value(from))
            .col_expr(contact::Column::MailPending, Expr::value(true))
            .filter(contact::Column::UserId.eq(user))
            .filter(contact::Column::EmailedSeq.eq(upto))
            .exec(&self.db)
            .await
            .map(drop)
    }
}
