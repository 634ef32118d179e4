//! What happens to a notification once it is stored, by the person's choice for its event
//! (`Preferences::channels`): a push to every device, and an email of its own at once — a
//! finished or failed generation's only while no console is open to show it live (replicas
//! note open consoles in the cache, [`PRESENCE_TTL`]). Emails chosen for the digest wait for
//! it (`digest.rs`). An email goes once: it is sent by whoever flips the notification's mail
//! state first; one that cannot be sent is handed back and the event tried again.
//!
//! Every email carries its unsubscribe link: the one-click `List-Unsubscribe` a mail client
//! posts to (RFC 8058), and the console's page in its text; both name the person by a secret
//! of theirs (`unsubscribe_key`) and the event whose emails stop.

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use uuid::Uuid;

use crate::{
    digest::{Unsubscribe, digest},
    domain::{Delivery, Event, Notification, Preferences},
    error::{NotificationError, Result},
    store::{contact, item, push_subscription},
    texts,
};

use crate::notifier::*;

/// How long a console counts as open after a replica last said so; replicas say it every
/// third of that for every user with a live stream.
pub const PRESENCE_TTL: Duration = Duration::from_secs(20);

fn presence_key(user: Uuid) -> String {
    format!("notification:live:{}", user.simple())
}

/// What delivering a batch reads once for all its people.
struct Reads {
    prefs: HashMap<Uuid, Preferences>,
    contacts: HashMap<Uuid, contact::Model>,
    devices: HashMap<Uuid, Vec<push_subscription::Model>>,
    present: HashMap<Uuid, bool>,
}

impl Notifier {
    /// Pushes and emails each of `ns` as its person chose; one outcome per notification, in
    /// order. The batch's preferences, contacts, devices and open consoles are read once for
    /// all of it. `Err`: that email could not go now (its event is tried again; the push is not
    /// repeated unless the event is redelivered).
    pub(crate) async fn deliver_all(&self, ns: &[item::Model]) -> Vec<Result<()>> {
        // Each notification's message and event, made once for the reads and the delivery.
        let made: Vec<(Notification, Event)> = ns
            .iter()
            .map(|n| {
                let notification = Notification::from(n);
                let event = Event::of(n.kind, &notification.data);
                (notification, event)
            })
            .collect();
        match self.reads(ns, &made).await {
            Ok(reads) => {
                let one = ns.iter().zip(made).map(|(n, (notification, event))| {
                    self.deliver_one(n, notification, event, &reads)
                });
                futures::future::join_all(one).await
            }
            Err(e) => {
                let why = e.to_string();
                ns.iter().map(|_| Err(NotificationError::Unavailable(why.clone()))).collect()
            }
        }
    }

    async fn reads(&self, ns: &[item::Model], made: &[(Notification, Event)]) -> Result<Reads> {
        let users: Vec<Uuid> =
            ns.iter().map(|n| n.user_id).collect::<BTreeSet<_>>().into_iter().collect();
        let (prefs, contacts) =
            tokio::try_join!(self.store.prefs_of(&users), self.store.contacts_of(&users))?;
        let prefs: HashMap<Uuid, Preferences> =
            prefs.into_iter().map(|p| (p.user_id, Preferences::from(p))).collect();
        let contacts: HashMap<Uuid, contact::Model> =
            contacts.into_iter().map(|c| (c.user_id, c)).collect();
        let devices = match &self.pusher {
            Some(pusher) => pusher.devices_of(&users).await,
            None => HashMap::new(),
        };
        // Asked only for those a generation's email waits on: one read per such person.
        let none = Preferences::default();
        let waiting: BTreeSet<Uuid> = ns
            .iter()
            .zip(made)
            .filter(|(n, (_, event))| {
                let prefs = prefs.get(&n.user_id).unwrap_or(&none);
                event.about_generation()
                    && prefs.channels(*event).email == Delivery::Immediate
                    && contacts.contains_key(&n.user_id)
            })
            .map(|(n, _)| n.user_id)
            .collect();
        let present = futures::future::join_all(
            waiting.into_iter().map(|u| async move { (u, self.present(u).await) }),
        )
        .await
        .into_iter()
        .collect();
        Ok(Reads { prefs, contacts, devices, present })
    }

    async fn deliver_one(
        &self,
        n: &item::Model,
        notification: Notification,
        event: Event,
        reads: &Reads,
    ) -> Result<()> {
        let none = Preferences::default();
        let prefs = reads.prefs.get(&n.user_id).unwrap_or(&none);
        let channels = prefs.channels(event);
        let contact = reads.contacts.get(&n.user_id);
        let locale =
            reader_locale(&prefs.locale, contact.map(|c| c.locale.as_str()).unwrap_or_default());
        if channels.push == Delivery::Immediate
            && let Some(pusher) = &self.pusher
            && let Some(devices) = reads.devices.get(&n.user_id)
        {
            pusher.deliver_to(devices, &texts::localize(notification, locale)).await;
        }
        if channels.email != Delivery::Immediate {
            return Ok(());
        }
        if event.about_generation() && reads.present.get(&n.user_id).copied().unwrap_or(false) {
            tracing::debug!(user = %n.user_id, "a console is open: no email");
            return Ok(());
        }
        let Some(contact) = contact else { return Ok(()) };
        if !self.store.claim_mail(n.id).await? {
            return Ok(()); // emailed already (a redelivered event)
        }
        let link = self.unsubscribe_link(n.user_id, Some(event)).await?;
        let email = digest(
            &contact.email,
            locale,
            std::slice::from_ref(n),
            &self.public_url,
            link.as_ref(),
        );
        if let Err(e) = self.mailer.send(email).await {
            self.store.unclaim_mail(vec![n.id]).await?;
            return Err(NotificationError::Unavailable(format!("sending an email: {e}")));
        }
        metrics::counter!("notification_emails_total").increment(1);
        Ok(())
    }

    /// Whether `user` has a console open on any replica, as far as the cache says.
    pub(crate) async fn present(&self, user: Uuid) -> bool {
        let Some(cache) = &self.presence else { return false };
        match cache.get(&presence_key(user)).await {
            Ok(v) => v.is_some(),
            Err(e) => {
                tracing::debug!(error = %e, "presence unknown: taken as absent");
                false
            }
        }
    }

    /// Notes that `user` has a console open here.
    pub(crate) async fn note_present(&self, user: Uuid) {
        if let Some(cache) = &self.presence
            && let Err(e) = cache
                .set(&presence_key(user), bytes::Bytes::from_static(b"1"), Some(PRESENCE_TTL))
                .await
        {
            tracing::debug!(error = %e, "presence not noted");
        }
    }

    /// Says again that every user with a live stream here is present.
    pub(crate) async fn refresh_presence(&self) {
        let users: Vec<Uuid> = self.live.lock().expect("live").keys().copied().collect();
        for user in users {
            self.note_present(user).await;
        }
    }

    /// The links that stop `event`'s emails (every email: `None`) for `user`; `None` without a
    /// contact on file.
    pub(crate) async fn unsubscribe_link(
        &self,
        user: Uuid,
        event: Option<Event>,
    ) -> Result<Option<Unsubscribe>> {
        let mut fresh = [0u8; 24];
        aws_lc_rs::rand::fill(&mut fresh).map_err(|_| {
            NotificationError::Unavailable("no randomness for an unsubscribe key".into())
        })?;
        let Some(key) = self.store.unsubscribe_key(user, &URL_SAFE_NO_PAD.encode(fresh)).await?
        else {
            return Ok(None);
        };
        let token = format!("{}.{key}", user.simple());
        let event = event
            .map(|e| format!("&event=NOTIFICATION_EVENT_{}", e.name().to_ascii_uppercase()))
            .unwrap_or_default();
        let base = self.public_url.trim_end_matches('/');
        Ok(Some(Unsubscribe {
            one_click: format!("{base}/api/notifications/unsubscribe?token={token}{event}"),
            page: format!("{base}/unsubscribe?token={token}{event}"),
        }))
    }

    /// Stops `event`'s emails (every email: `None`) for the person `token` names.
    pub async fn unsubscribe(&self, token: &str, event: Option<Event>) -> Result<Preferences> {
        let not_found =
            || NotificationError::NotFound(skillup_kit::invalid::not_found("unsubscribe link"));
        let (user, key) = token.split_once('.').ok_or_else(not_found)?;
        let user = Uuid::parse_str(user).map_err(|_| not_found())?;
        let stored = self.store.contact(user).await?.and_then(|c| c.unsubscribe_key);
        let matches = stored.is_some_and(|s| {
            aws_lc_rs::constant_time::verify_slices_are_equal(s.as_bytes(), key.as_bytes()).is_ok()
        });
        if !matches {
            return Err(not_found());
        }
        let current = self.preferences(user).await?;
        let events: Vec<Event> = event.map_or_else(|| Event::ALL.to_vec(), |e| vec![e]);
        let changes = events
            .into_iter()
            .map(|e| {
                let mut c = current.channels(e);
                c.email = Delivery::Off;
                (e, c)
            })
            .collect();
        tracing::info!(%user, event = ?event, "unsubscribed from an email link");
        self.set_preferences(user, &current.locale, changes, None).await
    }
}
