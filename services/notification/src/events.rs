//! Events become notifications: one row per bus event (unique by the event id, so a redelivery
//! never notifies twice), then a fan-out event every replica receives, so a user connected to
//! any replica gets it live.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use prost::Message as _;
use skillup_kit::{
    Shutdown,
    bus::{Delivery, SubscriptionSpec},
};
use skillup_proto::{
    ai::v1 as aipb,
    auth::v1::{UserDeleted, UserRegistered, UserUpdated},
    common::v1::EventEnvelope,
    events::Event as _,
    notification::v1 as pb,
    payment::v1 as paypb,
    subscribe::v1 as subpb,
};
use uuid::Uuid;

use crate::{
    error::{NotificationError, Result},
    store::{item, notifications::Stored},
};

use crate::notifier::*;

/// The fan-out event (a stored notification, for every replica's live subscribers) is
/// `pb::Notification`. The producers' events this service turns into notifications:
pub const SOURCES: [&str; 5] = [
    aipb::GenerationCompleted::KIND,
    aipb::GenerationFailed::KIND,
    paypb::PaymentSucceeded::KIND,
    paypb::PaymentFailed::KIND,
    subpb::SubscriptionChanged::KIND,
];

/// A person's own events: their contact follows them, and goes with them.
const PEOPLE: [&str; 3] = [UserRegistered::KIND, UserUpdated::KIND, UserDeleted::KIND];

/// The notification an event means, not yet numbered; `None` for an event that concerns no
/// user (or that cannot be read).
fn row_of(bytes: &[u8]) -> Option<item::Model> {
    let Ok(env) = EventEnvelope::decode(bytes) else {
        tracing::warn!("undecodable event dropped");
        return None;
    };
    let (kind, title, body, data) = describe(&env)?;
    let user = Uuid::parse_str(&env.user_id).ok()?;
    Some(item::Model {
        id: Uuid::now_v7(),
        user_id: user,
        // Taken from the user's counter in the insert's transaction.
        seq: 0,
        kind,
        title,
        body,
        data: serde_json::to_string(&data).unwrap_or_else(|_| "{}".into()),
        event_id: env.id,
        created_at: Utc::now(),
        read_at: None,
        mail_state: 0,
    })
}

/// Producer events unsettled at once (the consumer's prefetch): the bound on the work in
/// flight — stored, fanned out, being pushed or emailed. When pushes or emails are slow, intake
/// waits (back-pressure) instead of a queue growing in memory.
pub(crate) const EVENTS_IN_FLIGHT: usize = 512;

/// Workers storing events, each for the users that hash to it.
pub(crate) const PARTITIONS: usize = 8;

/// Most events a worker stores in one transaction and fans out in one message.
pub(crate) const BATCH: usize = 128;

pub(crate) fn partition(user: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    user.hash(&mut h);
    (h.finish() % PARTITIONS as u64) as usize
}

/// The service's two subscriptions.
pub struct Consumers {
    events: skillup_kit::bus::Consumer,
    fanout: skillup_kit::bus::Consumer,
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
            data.insert("function".into(), t.function.replace('_', " "));
            data.insert("topic".into(), clip(&t.topic, 200));
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
            data.insert("function".into(), t.function.replace('_', " "));
            data.insert("topic".into(), clip(&t.topic, 200));
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
            data.insert("amount".into(), money.clone());
            // Its parts, for wording it in each reader's format (`texts::money`).
            if let Some(m) = &t.amount {
                data.insert("amount_minor".into(), m.amount_minor.to_string());
                data.insert("currency".into(), m.currency.clone());
            }
            // Money back to the card reads as a refund, a service credit as a credit, not as a
            // payment.
            let refund = t.kind == paypb::TransactionKind::RefundToCard as i32;
            let credit = t.kind == paypb::TransactionKind::ServiceCredit as i32;
            let what = if refund {
                "refund"
            } else if credit {
                "credit"
            } else {
                "payment"
            };
            data.insert("what".into(), what.into());
            let body = if ok { t.description.clone() } else { t.failure_reason.clone() };
            Some((
                if ok {
                    NotificationKind::PaymentSucceeded
                } else {
                    NotificationKind::PaymentFailed
                },
                match (ok, refund) {
                    (true, false) if credit => {
                        format!("{money} credited: your plan missed its service level")
                    }
                    (true, false) => format!("Payment of {money} went through"),
                    (false, false) => format!("Payment of {money} was refused"),
                    (true, true) => format!("{money} went back to your card"),
                    (false, true) => format!(
                        "The refund of {money} to your card failed; the money is back on your balance"
                    ),
                },
                clip(&body, 2_000),
                data,
            ))
        }
        subpb::SubscriptionChanged::KIND => {
            let s = payload::<subpb::SubscriptionChanged>(env)?;
            data.insert("plan".into(), s.plan.clone());
            let end = s
                .current_period_end
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                .map(|t| t.format("%Y-%m-%d").to_string());
            if let Some(end) = &end {
                data.insert("until".into(), end.clone());
            }
            let until = end.map(|e| format!(" until {e}")).unwrap_or_default();
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
    /// Subscribes to the producers' events (one queue shared by the replicas) and to the
    /// fan-out (a queue per replica).
    pub async fn consumers(&self) -> skillup_kit::Result<Consumers> {
        let patterns: Vec<&str> = SOURCES.iter().copied().chain(PEOPLE).collect();
        let events = self
            .bus
            .subscribe(&SubscriptionSpec::new("notification", &patterns), EVENTS_IN_FLIGHT as u16)
            .await?;
        let fanout = self
            .bus
            .subscribe(
                &SubscriptionSpec::new(
                    "notification-live",
                    &[pb::NotificationsStored::KIND, pb::Notification::KIND],
                )
                .per_instance(),
                256,
            )
            .await?;
        Ok(Consumers { events, fanout })
    }

    /// Consumes until `shutdown`. Producer events go to [`PARTITIONS`] workers, each event to
    /// the worker its user hashes to; a worker takes what has arrived (up to [`BATCH`]) and
    /// stores it in one transaction, fans it out in one message and hands it to delivery — one
    /// user's events in the order they arrive, different users' in parallel. The fan-out is
    /// consumed on its own task: live subscribers never wait behind storing.
    pub async fn run(self, c: Consumers, shutdown: Shutdown) {
        let Consumers { mut events, mut fanout } = c;
        let live = {
            let (this, shutdown) = (self.clone(), shutdown.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        d = fanout.next() => match d {
                            Some(d) => this.on_fanout(d).await,
                            None => return,
                        },
                        _ = shutdown.wait() => return,
                    }
                }
            })
        };
        let mut lanes = Vec::with_capacity(PARTITIONS);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..PARTITIONS {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Delivery>(BATCH);
            let this = self.clone();
            workers.spawn(async move {
                let mut batch = Vec::with_capacity(BATCH);
                while rx.recv_many(&mut batch, BATCH).await > 0 {
                    this.on_events(std::mem::take(&mut batch)).await;
                }
            });
            lanes.push(tx);
        }
        loop {
            tokio::select! {
                d = events.next() => match d {
                    Some(d) => {
                        let lane = EventEnvelope::decode(d.message.payload.as_ref())
                            .map(|e| partition(&e.user_id))
                            .unwrap_or(0);
                        if lanes[lane].send(d).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                _ = shutdown.wait() => break,
            }
        }
        live.abort();
    }

    /// One worker's batch, in order: runs of producer events stored together, a person's own
    /// events (registered, updated, deleted) applied one by one between them.
    pub(crate) async fn on_events(&self, batch: Vec<Delivery>) {
        let mut run = Vec::new();
        for d in batch {
            let person = EventEnvelope::decode(d.message.payload.as_ref())
                .is_ok_and(|e| PEOPLE.contains(&e.r#type.as_str()));
            if person {
                if !run.is_empty() {
                    self.on_notifications(std::mem::take(&mut run)).await;
                }
                self.on_person(d).await;
            } else {
                run.push(d);
            }
        }
        if !run.is_empty() {
            self.on_notifications(run).await;
        }
    }

    /// A person's own event: their contact, or forgetting them.
    async fn on_person(&self, d: Delivery) {
        use skillup_kit::events::decode;
        let body = &d.message.payload;
        let done = if let Some((_, reg)) = decode::<UserRegistered>(body) {
            self.remember_contact(&reg).await
        } else if let Some((_, up)) = decode::<UserUpdated>(body) {
            self.update_contact(&up).await
        } else if let Some((_, del)) = decode::<UserDeleted>(body) {
            self.forget_user(&del.user_id).await
        } else {
            Ok(())
        };
        let _ = match done {
            Ok(()) => d.ack().await,
            Err(e) => d.retry(&e.to_string(), None).await.map(drop),
        };
    }

    /// Producer events: stored together, fanned out in one message, then pushed and emailed;
    /// each event settled once its own deliveries are done. Until then it counts against the
    /// consumer's prefetch: a crash meanwhile redelivers it, and the push goes again (its topic
    /// replaces the first) while the email does not (its mail state says it went).
    pub(crate) async fn on_notifications(&self, batch: Vec<Delivery>) {
        let mut rows = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        for d in batch {
            match row_of(&d.message.payload) {
                Some(row) => {
                    waiting.push((row.event_id.clone(), d));
                    rows.push(row);
                }
                None => {
                    let _ = d.ack().await;
                }
            }
        }
        if rows.is_empty() {
            return;
        }
        let stored = match self.store_rows(rows).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, events = waiting.len(), "storing notifications failed; retrying");
                for (_, d) in waiting {
                    let _ = d.retry(&e.to_string(), None).await;
                }
                return;
            }
        };
        // Fanned out even when stored before: a crash between storing and fanning out must not
        // leave live subscribers without it (they drop repeats by sequence number).
        let all: Vec<item::Model> = stored.new.into_iter().chain(stored.existing).collect();
        // This replica's open streams get the batch at once; the fan-out carries it to the
        // others' (and back here, where each stream drops it as a repeat by its number).
        self.to_live(all.iter().map(|n| (n.user_id, n.seq, n)), Notification::from);
        if let Err(e) = self.fan_out(&all).await {
            tracing::warn!(error = %e, "fan-out failed; retrying the events");
            for (_, d) in waiting {
                let _ = d.retry("fan-out failed", None).await;
            }
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let outcomes = this.deliver_all(&all).await;
            let by_event: HashMap<&str, &Result<()>> =
                all.iter().map(|n| n.event_id.as_str()).zip(outcomes.iter()).collect();
            for (event, d) in waiting {
                match by_event.get(event.as_str()) {
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "delivering a notification failed; retrying");
                        let _ = d.retry(&e.to_string(), None).await;
                    }
                    _ => {
                        let _ = d.ack().await;
                    }
                }
            }
        });
    }

    /// One message to every replica with the batch's notifications.
    async fn fan_out(&self, rows: &[item::Model]) -> skillup_kit::Result<()> {
        let batch = pb::NotificationsStored {
            notifications: rows
                .iter()
                .map(|n| pb::StoredNotification {
                    user_id: n.user_id.to_string(),
                    seq: n.seq,
                    notification: Some(Notification::from(n).into()),
                })
                .collect(),
        };
        skillup_kit::events::publish(&self.bus, "", &batch).await.map(drop)
    }

    /// Stores the notification an event means (once per event id); the stored row, new or
    /// already there, or `None` when the event concerns no user.
    pub async fn record(&self, bytes: &[u8]) -> Result<Option<item::Model>> {
        let Some(row) = row_of(bytes) else { return Ok(None) };
        let stored = self.store_rows(vec![row]).await?;
        Ok(stored.new.into_iter().chain(stored.existing).next())
    }

    /// Stores `rows` in one transaction (see [`crate::store::NotificationStore::insert_batch`]),
    /// trying again while another replica stores one of the same events at this moment.
    pub(crate) async fn store_rows(&self, rows: Vec<item::Model>) -> Result<Stored> {
        let flagged: Vec<(item::Model, bool)> = rows
            .into_iter()
            .map(|r| {
                let d = DIGESTED.contains(&r.kind);
                (r, d)
            })
            .collect();
        for attempt in 0..100u64 {
            match self.store.insert_batch(&flagged).await {
                Ok(stored) => {
                    metrics::counter!("notifications_created_total")
                        .increment(stored.new.len() as u64);
                    metrics::counter!("notifications_duplicate_events_total")
                        .increment(stored.existing.len() as u64);
                    for user in &stored.unknown_contacts {
                        self.learn_contact(*user).await;
                    }
                    return Ok(stored);
                }
                // Another replica is storing one of these events (its row shows once it
                // commits), or SQLite is busy, or two batches met the other way round.
                Err(e)
                    if skillup_kit::db::is_unique_violation(&e)
                        || skillup_kit::db::is_busy(&e)
                        || skillup_kit::db::is_deadlock(&e) =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(Ord::min(attempt, 20)))
                        .await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(NotificationError::Unavailable("storing notifications stayed contended".into()))
    }

    /// Hands a fanned-out batch to this replica's live subscribers (one lock for the batch).
    /// Also takes the one-notification fan-out of replicas of an older release.
    pub(crate) async fn on_fanout(&self, d: Delivery) {
        use skillup_kit::events::decode;
        let body = &d.message.payload;
        let mut live = Vec::new();
        if let Some((_, batch)) = decode::<pb::NotificationsStored>(body) {
            for s in batch.notifications {
                if let Ok(user) = Uuid::parse_str(&s.user_id)
                    && let Some(n) = s.notification
                    && let Ok(n) = Notification::try_from(n)
                {
                    live.push((user, s.seq, n));
                }
            }
        } else if let Some((env, n)) = decode::<pb::Notification>(body)
            && let Ok(n) = Notification::try_from(n)
            && let Ok(user) = Uuid::parse_str(&env.user_id)
            && let Some(seq) = env.id.rsplit_once('/').and_then(|(_, s)| s.parse::<i64>().ok())
        {
            live.push((user, seq, n));
        }
        self.to_live(live, |n| n);
        let _ = d.ack().await;
    }

    /// Hands notifications (user, number, what becomes the notification) to this replica's
    /// open streams of their users, under one lock; only those with a stream are made.
    fn to_live<T>(
        &self,
        live: impl IntoIterator<Item = (Uuid, i64, T)>,
        notification: impl Fn(T) -> Notification,
    ) {
        let subscribers = self.live.lock().expect("live");
        if subscribers.is_empty() {
            return;
        }
        for (user, seq, it) in live {
            if let Some(tx) = subscribers.get(&user) {
                let _ = tx.send(Live { seq, notification: notification(it) });
            }
        }
    }

    pub(crate) async fn remember_contact(
        &self,
        reg: &skillup_proto::auth::v1::UserRegistered,
    ) -> Result<()> {
        let Some(u) = &reg.user else { return Ok(()) };
        let Ok(user) = Uuid::parse_str(&u.id) else { return Ok(()) };
        // Pending: events of the same user may have been stored before this one arrived.
        Ok(self.store.add_contact(user, &u.email, &u.locale).await?)
    }

    /// A user with something to email but no contact on file (registered before this service
    /// first ran): asks the directory, and files the contact with the digest flag up. Best
    /// effort: the next such notification asks again.
    pub(crate) async fn learn_contact(&self, user: Uuid) {
        let Some(directory) = &self.directory else { return };
        match directory.contact(user).await {
            Ok(Some(c)) => {
                if let Err(e) = self.store.add_contact(user, &c.email, &c.locale).await {
                    tracing::warn!(error = %e, %user, "a learnt contact was not stored");
                }
            }
            Ok(None) => tracing::debug!(%user, "no account to write to"),
            Err(e) => tracing::warn!(error = %e, %user, "the directory did not answer"),
        }
    }

    /// A changed profile: the address emails go to follows the account's.
    pub(crate) async fn update_contact(
        &self,
        up: &skillup_proto::auth::v1::UserUpdated,
    ) -> Result<()> {
        let Some(u) = &up.user else { return Ok(()) };
        let Ok(user) = Uuid::parse_str(&u.id) else { return Ok(()) };
        Ok(self.store.set_contact(user, &u.email, &u.locale).await?)
    }

    /// A deleted account: its notifications, preferences and contact go.
    pub(crate) async fn forget_user(&self, user_id: &str) -> Result<()> {
        let Ok(user) = Uuid::parse_str(user_id) else { return Ok(()) };
        Ok(self.store.forget_user(user).await?)
    }

    /// The address emails to `user` go to, if one is on file.
    pub async fn contact(&self, user: Uuid) -> Result<Option<String>> {
        Ok(self.store.contact(user).await?.map(|c| c.email))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(t: paypb::Transaction) -> (NotificationKind, String, BTreeMap<String, String>) {
        let bytes = skillup_kit::events::envelope(
            "e-1",
            "u-1",
            &paypb::PaymentSucceeded { transaction: Some(t) },
        );
        let (env, _) = skillup_kit::events::decode::<paypb::PaymentSucceeded>(&bytes).unwrap();
        let (kind, title, _, data) = describe(&env).unwrap();
        (kind, title, data)
    }

    #[test]
    fn a_service_credit_reads_as_a_credit_not_as_a_payment() {
        let money =
            skillup_proto::common::v1::Money { amount_minor: 7_900, currency: "RUB".into() };
        let credit = paypb::Transaction {
            kind: paypb::TransactionKind::ServiceCredit as i32,
            amount: Some(money.clone()),
            ..Default::default()
        };
        let (kind, title, data) = described(credit);
        assert_eq!(kind, NotificationKind::PaymentSucceeded);
        assert_eq!(title, "79.00 RUB credited: your plan missed its service level");
        assert_eq!(data["what"], "credit");
        let top_up = paypb::Transaction {
            kind: paypb::TransactionKind::TopUp as i32,
            amount: Some(money),
            ..Default::default()
        };
        let (_, title, data) = described(top_up);
        assert_eq!(
            (title.as_str(), data["what"].as_str()),
            ("Payment of 79.00 RUB went through", "payment")
        );
    }
}
