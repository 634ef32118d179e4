//! Events become notifications: one row per bus event (unique by the event id, so a redelivery
//! never notifies twice), then a fan-out event every replica receives, so a user connected to
//! any replica gets it live.

use std::collections::BTreeMap;

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
    store::item,
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

/// Producer events unsettled at once (the consumer's prefetch).
pub(crate) const EVENTS_IN_FLIGHT: usize = 64;

/// Workers storing events, each for the users that hash to it.
pub(crate) const PARTITIONS: usize = 16;

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
        let people = [UserRegistered::KIND, UserUpdated::KIND, UserDeleted::KIND];
        let patterns: Vec<&str> = SOURCES.iter().copied().chain(people).collect();
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
                None => return},
            d = c.fanout.next() => match d {
                Some(d) => self.on_fanout(d).await,
                None => return},
            _ = shutdown.wait() => return}
        }
    }

    pub(crate) async fn on_event(&self, d: Delivery) {
        use skillup_kit::events::decode;
        let body = &d.message.payload;
        // The person's own events: their contact, or forgetting them.
        let person = if let Some((_, reg)) = decode::<UserRegistered>(body) {
            Some(self.remember_contact(&reg).await)
        } else if let Some((_, up)) = decode::<UserUpdated>(body) {
            Some(self.update_contact(&up).await)
        } else if let Some((_, del)) = decode::<UserDeleted>(body) {
            Some(self.forget_user(&del.user_id).await)
        } else {
            None
        };
        if let Some(done) = person {
            let _ = match done {
                Ok(()) => d.ack().await,
                Err(e) => d.retry(&e.to_string(), None).await.map(drop),
            };
            return;
        }
        match self.record(&d.message.payload).await {
            Ok(Some(n)) => {
                let user = n.user_id;
                let pbn = pb::Notification::from(Notification::from(&n));
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
                // Pushed and emailed before the event is settled: a crash meanwhile
                // redelivers it, and the push goes again (its topic replaces the first) while
                // the email does not (its mail state says it went). The consumer's prefetch
                // bounds the deliveries in flight, so a slow push service or mail server slows
                // intake instead of piling up work.
                let this = self.clone();
                tokio::spawn(async move {
                    match this.deliver(&n).await {
                        Ok(()) => {
                            let _ = d.ack().await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "delivering a notification failed; retrying");
                            let _ = d.retry(&e.to_string(), None).await;
                        }
                    }
                });
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
            let row = item::Model {
                id: Uuid::now_v7(),
                user_id: user,
                // Taken from the user's counter in the insert's transaction.
                seq: 0,
                kind,
                title: title.clone(),
                body: body.clone(),
                data: data.clone(),
                event_id: env.id.clone(),
                created_at: Utc::now(),
                read_at: None,
                mail_state: 0,
            };
            // The row and the digest's flag together (see `send_digests`); the next digest
            // emails it when the user has an address on file.
            match self.store.insert(row, DIGESTED.contains(&kind)).await {
                Ok((n, unknown)) => {
                    metrics::counter!("notifications_created_total").increment(1);
                    if unknown {
                        self.learn_contact(user).await;
                    }
                    return Ok(Some(n));
                }
                // This very event is stored already (a redelivery): the stored one. (Another
                // replica storing it at this moment: its row shows once that one commits.)
                Err(e) if skillup_kit::db::is_unique_violation(&e) => {
                    let existing = self.store.by_event(&env.id).await?;
                    if existing.is_some() {
                        metrics::counter!("notifications_duplicate_events_total").increment(1);
                        return Ok(existing);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(Ord::min(attempt, 20)))
                        .await;
                }
                Err(e) if skillup_kit::db::is_busy(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(Ord::min(attempt, 20)))
                        .await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(NotificationError::Unavailable("storing the notification stayed contended".into()))
    }

    pub(crate) async fn on_fanout(&self, d: Delivery) {
        if let Some((env, n)) = skillup_kit::events::decode::<pb::Notification>(&d.message.payload)
            && let Ok(n) = Notification::try_from(n)
            && let Ok(user) = Uuid::parse_str(&env.user_id)
            && let Some(seq) = env.id.rsplit_once('/').and_then(|(_, s)| s.parse::<i64>().ok())
            && let Some(tx) = self.live.lock().expect("live").get(&user)
        {
            let _ = tx.send(Live { seq, notification: n });
        }
        let _ = d.ack().await;
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
