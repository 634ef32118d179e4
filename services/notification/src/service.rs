//! Events become notifications: one row per bus event (unique by the event id, so a redelivery
//! never notifies twice), then a fan-out event every replica receives, so a user connected to
//! any replica gets it live. A subscriber registers for live notifications first, then reads
//! what it missed after the last id it saw, and drops duplicates by id — nothing falls in the
//! gap between the two.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use chrono::Utc;
use prost::Message as _;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
    sea_query::{Expr, Query},
};
use skillup_kit::{
    Shutdown,
    bus::{Delivery, SharedBus, SubscriptionSpec},
    db::timestamp as ts,
    mailer::{Email, SharedMailer},
};
use skillup_proto::{
    ai::v1 as aipb,
    auth::v1::UserRegistered,
    common::v1::EventEnvelope,
    events::Event as _,
    notification::v1::{self as pb, NotificationKind},
    payment::v1 as paypb,
    subscribe::v1 as subpb,
};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::{
    error::{NotificationError, Result},
    store::{contact, item, prefs},
};

/// The fan-out event (a stored notification, for every replica's live subscribers) is
/// `pb::Notification`. The producers' events this service turns into notifications:
pub const SOURCES: [&str; 5] = [
    aipb::GenerationCompleted::KIND,
    aipb::GenerationFailed::KIND,
    paypb::PaymentSucceeded::KIND,
    paypb::PaymentFailed::KIND,
    subpb::SubscriptionChanged::KIND,
];
/// The notifications the digest emails.
const DIGESTED: [NotificationKind; 2] =
    [NotificationKind::GenerationCompleted, NotificationKind::GenerationFailed];
/// Producer events unsettled at once (the consumer's prefetch).
const EVENTS_IN_FLIGHT: usize = 64;
/// Workers storing events, each for the users that hash to it.
const PARTITIONS: usize = 16;

fn partition(user: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    user.hash(&mut h);
    (h.finish() % PARTITIONS as u64) as usize
}
/// Most notifications a reconnecting client is sent from the backlog.
const MAX_BACKLOG: u64 = 500;

/// A notification with its sequence number, as live subscribers get it.
#[derive(Clone, Debug)]
struct Live {
    seq: i64,
    notification: pb::Notification,
}

/// The fan-out id: the notification id and its sequence number (`{id}/{seq}`), so replicas
/// order it without another read.
fn fanout_id(n: &item::Model) -> String {
    format!("{}/{}", n.id, n.seq)
}

/// A subscriber's notifications, as the gRPC stream answers them.
pub type LiveStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = std::result::Result<pb::Notification, tonic::Status>> + Send>,
>;

/// One subscriber: its live receiver, where it is in the user's sequence, and what it still
/// has to send from the store. Dropping it (the client left) forgets the user's channel on
/// this replica when nobody else listens.
struct Subscriber {
    live: broadcast::Receiver<Live>,
    notifier: Notifier,
    user: Uuid,
    last: i64,
    pending: std::collections::VecDeque<pb::Notification>,
}

impl Subscriber {
    /// Queues the stored notifications after `last` (up to `upto`), advancing `last`.
    async fn catch_up(&mut self, upto: Option<i64>) -> Result<()> {
        for n in self.notifier.after(self.user, self.last, upto).await? {
            self.last = n.seq;
            self.pending.push_back(to_pb(&n));
        }
        Ok(())
    }

    /// The next notification in sequence; `None` ends the stream.
    async fn next(&mut self) -> Option<pb::Notification> {
        loop {
            if let Some(n) = self.pending.pop_front() {
                return Some(n);
            }
            match self.live.recv().await {
                Ok(Live { seq, notification }) => {
                    if seq <= self.last {
                        continue; // sent already (from the store, or a repeat)
                    }
                    // A gap: another replica's notification whose fan-out is still on its
                    // way; it is stored already, so it goes first, from the store.
                    if seq > self.last + 1 && self.catch_up(Some(seq - 1)).await.is_err() {
                        return None;
                    }
                    self.last = seq;
                    self.pending.push_back(notification);
                }
                // Too slow for the live feed: catch up from the store.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if self.catch_up(None).await.is_err() {
                        return None;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // Leave the receiver count first (swap in a receiver of a throwaway channel).
        drop(std::mem::replace(&mut self.live, broadcast::channel(1).1));
        self.notifier.forget_idle(self.user);
    }
}

/// The service's two subscriptions.
pub struct Consumers {
    events: skillup_kit::bus::Consumer,
    fanout: skillup_kit::bus::Consumer,
}

#[derive(Clone)]
pub struct Notifier {
    db: DatabaseConnection,
    bus: SharedBus,
    mailer: SharedMailer,
    /// Base of the link in emails.
    public_url: String,
    /// Live subscribers of this replica, by user.
    live: Arc<Mutex<HashMap<Uuid, broadcast::Sender<Live>>>>,
}

fn to_pb(n: &item::Model) -> pb::Notification {
    pb::Notification {
        id: n.id.to_string(),
        kind: n.kind,
        title: n.title.clone(),
        body: n.body.clone(),
        data: serde_json::from_str(&n.data).unwrap_or_default(),
        created_at: Some(ts(n.created_at)),
        read_at: n.read_at.map(ts),
    }
}

fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// What an event says to its user: kind, title, body, related ids. `None` for events that do
/// not concern a user.
pub fn describe(
    env: &EventEnvelope,
) -> Option<(NotificationKind, String, String, BTreeMap<String, String>)> {
    use skillup_kit::events::payload;
    let mut data = BTreeMap::new();
    let task_line =
        |t: &aipb::Task| format!("{} about «{}»", t.function.replace('_', " "), t.topic);
    match env.r#type.as_str() {
        aipb::GenerationCompleted::KIND => {
            let t = payload::<aipb::GenerationCompleted>(env)?.task?;
            data.insert("task_id".into(), t.id.clone());
            Some((
                NotificationKind::GenerationCompleted,
                clip(&format!("Your {} is ready", task_line(&t)), 200),
                clip(&t.text, 280),
                data,
            ))
        }
        aipb::GenerationFailed::KIND => {
            let t = payload::<aipb::GenerationFailed>(env)?.task?;
            data.insert("task_id".into(), t.id.clone());
            Some((
                NotificationKind::GenerationFailed,
                clip(&format!("Your {} could not be written", task_line(&t)), 200),
                clip(&t.error, 2_000),
                data,
            ))
        }
        paypb::PaymentSucceeded::KIND | paypb::PaymentFailed::KIND => {
            let ok = env.r#type == paypb::PaymentSucceeded::KIND;
            let t = if ok {
                payload::<paypb::PaymentSucceeded>(env)?.transaction?
            } else {
                payload::<paypb::PaymentFailed>(env)?.transaction?
            };
            data.insert("transaction_id".into(), t.id.clone());
            let money = t
                .amount
                .as_ref()
                .map(|m| {
                    format!(
                        "{}.{:02} {}",
                        m.amount_minor / 100,
                        (m.amount_minor % 100).abs(),
                        m.currency
                    )
                })
                .unwrap_or_default();
            let body = if ok { t.description.clone() } else { t.failure_reason.clone() };
            Some((
                if ok {
                    NotificationKind::PaymentSucceeded
                } else {
                    NotificationKind::PaymentFailed
                },
                if ok {
                    format!("Payment of {money} went through")
                } else {
                    format!("Payment of {money} was refused")
                },
                clip(&body, 2_000),
                data,
            ))
        }
        subpb::SubscriptionChanged::KIND => {
            let s = payload::<subpb::SubscriptionChanged>(env)?;
            data.insert("plan".into(), s.plan.clone());
            let until = s
                .current_period_end
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                .map(|t| format!(" until {}", t.format("%Y-%m-%d")))
                .unwrap_or_default();
            Some((
                NotificationKind::SubscriptionChanged,
                clip(&format!("Your plan is now {}", s.plan), 200),
                format!("The {} plan is in force{until}.", s.plan),
                data,
            ))
        }
        _ => None,
    }
}

impl Notifier {
    pub fn new(
        db: DatabaseConnection,
        bus: SharedBus,
        mailer: SharedMailer,
        public_url: impl Into<String>,
    ) -> Self {
        Self { db, bus, mailer, public_url: public_url.into(), live: Default::default() }
    }

    /// Subscribes to the producers' events (one queue shared by the replicas) and to the
    /// fan-out (a queue per replica).
    pub async fn consumers(&self) -> skillup_kit::Result<Consumers> {
        let patterns: Vec<&str> = SOURCES.iter().copied().chain([UserRegistered::KIND]).collect();
        let events = self
            .bus
            .subscribe(&SubscriptionSpec::new("notification", &patterns), EVENTS_IN_FLIGHT as u16)
            .await?;
        let fanout = self
            .bus
            .subscribe(
                &SubscriptionSpec::new("notification-live", &[pb::Notification::KIND])
                    .per_instance(),
                256,
            )
            .await?;
        Ok(Consumers { events, fanout })
    }

    /// Consumes until `shutdown`. Producer events are handled by [`PARTITIONS`] workers, each
    /// event by the worker its user hashes to: one user's events are stored in the order they
    /// arrive, different users' in parallel. Fan-out deliveries are handed over as they come.
    pub async fn run(self, mut c: Consumers, shutdown: Shutdown) {
        let mut lanes = Vec::with_capacity(PARTITIONS);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..PARTITIONS {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Delivery>(EVENTS_IN_FLIGHT);
            let this = self.clone();
            workers.spawn(async move {
                while let Some(d) = rx.recv().await {
                    this.on_event(d).await;
                }
            });
            lanes.push(tx);
        }
        loop {
            tokio::select! {
                d = c.events.next() => match d {
                    Some(d) => {
                        let lane = EventEnvelope::decode(d.message.payload.as_ref())
                            .map(|e| partition(&e.user_id))
                            .unwrap_or(0);
                        if lanes[lane].send(d).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                d = c.fanout.next() => match d {
                    Some(d) => self.on_fanout(d).await,
                    None => return,
                },
                _ = shutdown.wait() => return,
            }
        }
    }

    async fn on_event(&self, d: Delivery) {
        if let Some((_, reg)) = skillup_kit::events::decode::<UserRegistered>(&d.message.payload) {
            match self.remember_contact(&reg).await {
                Ok(()) => {
                    let _ = d.ack().await;
                }
                Err(e) => {
                    let _ = d.retry(&e.to_string(), None).await;
                }
            }
            return;
        }
        match self.record(&d.message.payload).await {
            Ok(Some(n)) => {
                let user = n.user_id;
                let pbn = to_pb(&n);
                // Fanned out even for a duplicate: a crash between storing and fanning out
                // must not leave live subscribers without it (they drop repeats by id).
                let (id, user) = (fanout_id(&n), user.to_string());
                if let Err(e) =
                    skillup_kit::events::publish_with_id(&self.bus, &id, &user, &pbn).await
                {
                    tracing::warn!(error = %e, "fan-out failed; retrying the event");
                    let _ = d.retry("fan-out failed", None).await;
                    return;
                }
                let _ = d.ack().await;
            }
            Ok(None) => {
                let _ = d.ack().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "storing a notification failed; retrying");
                let _ = d.retry(&e.to_string(), None).await;
            }
        }
    }

    /// Stores the notification an event means (once per event id); the stored row, new or
    /// already there, or `None` when the event concerns no user.
    pub async fn record(&self, bytes: &[u8]) -> Result<Option<item::Model>> {
        let Ok(env) = EventEnvelope::decode(bytes) else {
            tracing::warn!("undecodable event dropped");
            return Ok(None);
        };
        let Some((kind, title, body, data)) = describe(&env) else { return Ok(None) };
        let Ok(user) = Uuid::parse_str(&env.user_id) else { return Ok(None) };
        let data = serde_json::to_string(&data).unwrap_or_else(|_| "{}".into());
        for attempt in 0..100u64 {
            let row = item::ActiveModel {
                id: Set(Uuid::now_v7()),
                user_id: Set(user),
                seq: Set(self.newest_seq(user).await? + 1),
                kind: Set(kind as i32),
                title: Set(title.clone()),
                body: Set(body.clone()),
                data: Set(data.clone()),
                event_id: Set(env.id.clone()),
                created_at: Set(Utc::now()),
                read_at: Set(None),
            };
            // The row and the digest's flag together: a digest that claims the contact sees
            // either both or neither (see `send_digests`).
            let txn = self.db.begin().await?;
            match row.insert(&txn).await {
                Ok(n) => {
                    if DIGESTED.contains(&kind) {
                        // The next digest emails it (when the user has an address on file).
                        contact::Entity::update_many()
                            .col_expr(contact::Column::MailPending, Expr::value(true))
                            .filter(contact::Column::UserId.eq(user))
                            .exec(&txn)
                            .await?;
                    }
                    txn.commit().await?;
                    metrics::counter!("notifications_created_total").increment(1);
                    return Ok(Some(n));
                }
                // This very event is stored already (a redelivery): the stored one. Otherwise
                // another event took this sequence number: the next.
                Err(e) if skillup_kit::db::is_unique_violation(&e) => {
                    txn.rollback().await?;
                    let existing = item::Entity::find()
                        .filter(item::Column::EventId.eq(env.id.clone()))
                        .one(&self.db)
                        .await?;
                    if existing.is_some() {
                        metrics::counter!("notifications_duplicate_events_total").increment(1);
                        return Ok(existing);
                    }
                }
                Err(e) if skillup_kit::db::is_busy(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(Ord::min(attempt, 20)))
                        .await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(NotificationError::Unavailable("notification sequence stayed contended".into()))
    }

    async fn on_fanout(&self, d: Delivery) {
        if let Some((env, n)) = skillup_kit::events::decode::<pb::Notification>(&d.message.payload)
            && let Ok(user) = Uuid::parse_str(&env.user_id)
            && let Some(seq) = env.id.rsplit_once('/').and_then(|(_, s)| s.parse::<i64>().ok())
            && let Some(tx) = self.live.lock().expect("live").get(&user)
        {
            let _ = tx.send(Live { seq, notification: n });
        }
        let _ = d.ack().await;
    }

    /// The user's live stream: what came after `after_id` first, in order, then each new one.
    /// A plain stream over the user's broadcast receiver (no task and no channel per
    /// subscriber: ten thousand idle sockets are ten thousand small states).
    pub async fn subscribe(&self, user: Uuid, after_id: &str) -> Result<LiveStream> {
        let invalid = || {
            NotificationError::Invalid(
                "after_id",
                "`after_id` is not one of your notifications".into(),
            )
        };
        let after_seq = match after_id {
            "" => None,
            s => {
                let id = Uuid::parse_str(s).map_err(|_| invalid())?;
                let n = item::Entity::find_by_id(id)
                    .one(&self.db)
                    .await?
                    .filter(|n| n.user_id == user)
                    .ok_or_else(invalid)?;
                Some(n.seq)
            }
        };
        // Live first, then the backlog: nothing can fall between the two.
        let live = {
            let mut map = self.live.lock().expect("live");
            map.entry(user).or_insert_with(|| broadcast::channel(64).0).subscribe()
        };
        metrics::gauge!("notification_streams").increment(1.0);
        let mut state = Subscriber {
            live,
            notifier: self.clone(),
            user,
            last: 0,
            pending: std::collections::VecDeque::new(),
        };
        match after_seq {
            Some(s) => {
                state.last = s;
                state.catch_up(None).await?;
            }
            None => state.last = self.newest_seq(user).await?,
        }
        Ok(Box::pin(futures::stream::unfold(state, |mut st| async move {
            st.next().await.map(|n| (Ok(n), st))
        })))
    }

    /// The user's newest sequence number (0 before the first notification).
    async fn newest_seq(&self, user: Uuid) -> Result<i64> {
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

    /// Drops the user's live channel once nobody listens on this replica.
    fn forget_idle(&self, user: Uuid) {
        metrics::gauge!("notification_streams").decrement(1.0);
        let mut map = self.live.lock().expect("live");
        if map.get(&user).is_some_and(|tx| tx.receiver_count() == 0) {
            map.remove(&user);
        }
    }

    /// Stored notifications with sequence numbers in `(after, upto]`, in order.
    async fn after(&self, user: Uuid, after: i64, upto: Option<i64>) -> Result<Vec<item::Model>> {
        let mut q = item::Entity::find()
            .filter(item::Column::UserId.eq(user))
            .filter(item::Column::Seq.gt(after));
        if let Some(u) = upto {
            q = q.filter(item::Column::Seq.lte(u));
        }
        Ok(q.order_by_asc(item::Column::Seq).limit(MAX_BACKLOG).all(&self.db).await?)
    }

    /// The user's notifications, newest first, with the unread count.
    pub async fn list(
        &self,
        user: Uuid,
        page_size: u32,
        page_token: &str,
        unread_only: bool,
    ) -> Result<(Vec<pb::Notification>, String, u32)> {
        let size = match page_size {
            0 => 20,
            n => n.min(100),
        } as u64;
        let mut q = item::Entity::find().filter(item::Column::UserId.eq(user));
        if unread_only {
            q = q.filter(item::Column::ReadAt.is_null());
        }
        if !page_token.is_empty() {
            let before = Uuid::parse_str(page_token).map_err(|_| {
                NotificationError::Invalid(
                    "page.page_token",
                    "`page_token` is not one this API gave".into(),
                )
            })?;
            let before = item::Entity::find_by_id(before)
                .one(&self.db)
                .await?
                .filter(|n| n.user_id == user)
                .map(|n| n.seq)
                .unwrap_or(0);
            q = q.filter(item::Column::Seq.lt(before));
        }
        let mut rows = q.order_by_desc(item::Column::Seq).limit(size + 1).all(&self.db).await?;
        let next = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last().map(|n| n.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        let unread = item::Entity::find()
            .filter(item::Column::UserId.eq(user))
            .filter(item::Column::ReadAt.is_null())
            .count(&self.db)
            .await?;
        Ok((rows.iter().map(to_pb).collect(), next, unread as u32))
    }

    /// Marks the given notifications (or all) read; how many changed.
    pub async fn mark_read(&self, user: Uuid, ids: &[String], all: bool) -> Result<u32> {
        if !all && ids.len() > 100 {
            return Err(NotificationError::Invalid("ids", "at most 100 `ids`".into()));
        }
        let ids: Vec<Uuid> =
            ids.iter().map(|s| Uuid::parse_str(s)).collect::<std::result::Result<_, _>>().map_err(
                |_| NotificationError::Invalid("ids", "`ids` must be notification ids".into()),
            )?;
        let mut q = item::Entity::update_many()
            .col_expr(item::Column::ReadAt, Expr::value(Utc::now()))
            .filter(item::Column::UserId.eq(user))
            .filter(item::Column::ReadAt.is_null());
        if !all {
            q = q.filter(item::Column::Id.is_in(ids));
        }
        Ok(q.exec(&self.db).await?.rows_affected as u32)
    }

    async fn remember_contact(&self, reg: &skillup_proto::auth::v1::UserRegistered) -> Result<()> {
        let Some(u) = &reg.user else { return Ok(()) };
        let Ok(user) = Uuid::parse_str(&u.id) else { return Ok(()) };
        contact::Entity::insert(contact::ActiveModel {
            user_id: Set(user),
            email: Set(u.email.clone()),
            emailed_seq: Set(0),
            // Events of the same user may have been stored before this one arrived.
            mail_pending: Set(true),
        })
        .on_conflict_do_nothing_on([contact::Column::UserId])
        .exec(&self.db)
        .await?;
        Ok(())
    }

    /// The address emails to `user` go to, if one is on file.
    pub async fn contact(&self, user: Uuid) -> Result<Option<String>> {
        Ok(contact::Entity::find_by_id(user).one(&self.db).await?.map(|c| c.email))
    }

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
                .filter(item::Column::Kind.is_in(DIGESTED.map(|k| k as i32)))
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
                .and_where(item::Column::Kind.is_in(DIGESTED.map(|k| k as i32)))
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

    pub async fn preferences(&self, user: Uuid) -> Result<pb::Preferences> {
        Ok(match prefs::Entity::find_by_id(user).one(&self.db).await? {
            Some(p) => pb::Preferences {
                email_on_generation: p.email_on_generation,
                email_on_payment: p.email_on_payment,
                locale: p.locale,
            },
            None => pb::Preferences {
                email_on_generation: true,
                email_on_payment: true,
                locale: String::new(),
            },
        })
    }

    pub async fn set_preferences(&self, user: Uuid, p: pb::Preferences) -> Result<pb::Preferences> {
        let locale = p.locale.trim().to_owned();
        if locale.len() > 16 || !locale.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(NotificationError::Invalid(
                "locale",
                "`locale` must be a BCP 47 tag such as \"en\"".into(),
            ));
        }
        let row = prefs::ActiveModel {
            user_id: Set(user),
            email_on_generation: Set(p.email_on_generation),
            email_on_payment: Set(p.email_on_payment),
            locale: Set(locale),
        };
        prefs::Entity::insert(row)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(prefs::Column::UserId)
                    .update_columns([
                        prefs::Column::EmailOnGeneration,
                        prefs::Column::EmailOnPayment,
                        prefs::Column::Locale,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await?;
        self.preferences(user).await
    }
}

/// One email for one finished task; a digest for several.
fn digest(to: &str, items: &[item::Model], public_url: &str) -> Email {
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
