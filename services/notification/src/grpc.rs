//! The tonic adapter: every RPC acts for the caller the edge asserted.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use skillup_kit::{db::timestamp as ts, i18n::Locale, identity::Caller};
use skillup_proto::notification::v1::{
    self as pb, notification_service_server::NotificationServiceServer,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{
        Channels, Delivery, Event, GENERATION_EVENTS, MONEY_EVENTS, Notification, NotificationKind,
        Preferences, PushDevice, PushSubscriptionInput,
    },
    error::NotificationError,
    notifier::Notifier,
    texts,
};

fn kind_pb(k: NotificationKind) -> pb::NotificationKind {
    match k {
        NotificationKind::GenerationCompleted => pb::NotificationKind::GenerationCompleted,
        NotificationKind::GenerationFailed => pb::NotificationKind::GenerationFailed,
        NotificationKind::PaymentSucceeded => pb::NotificationKind::PaymentSucceeded,
        NotificationKind::PaymentFailed => pb::NotificationKind::PaymentFailed,
        NotificationKind::SubscriptionChanged => pb::NotificationKind::SubscriptionChanged,
    }
}

impl From<Notification> for pb::Notification {
    fn from(n: Notification) -> Self {
        pb::Notification {
            id: n.id.to_string(),
            kind: kind_pb(n.kind) as i32,
            title: n.title,
            body: n.body,
            data: n.data,
            created_at: Some(ts(n.created_at)),
            read_at: n.read_at.map(ts),
        }
    }
}

/// A notification another replica fanned out (`Err`: not one this version knows).
impl TryFrom<pb::Notification> for Notification {
    type Error = ();

    fn try_from(n: pb::Notification) -> Result<Self, ()> {
        let kind = match pb::NotificationKind::try_from(n.kind).map_err(drop)? {
            pb::NotificationKind::GenerationCompleted => NotificationKind::GenerationCompleted,
            pb::NotificationKind::GenerationFailed => NotificationKind::GenerationFailed,
            pb::NotificationKind::PaymentSucceeded => NotificationKind::PaymentSucceeded,
            pb::NotificationKind::PaymentFailed => NotificationKind::PaymentFailed,
            pb::NotificationKind::SubscriptionChanged => NotificationKind::SubscriptionChanged,
            pb::NotificationKind::Unspecified => return Err(()),
        };
        let time = |t: prost_types::Timestamp| {
            chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        };
        Ok(Notification {
            id: Uuid::parse_str(&n.id).map_err(drop)?,
            kind,
            title: n.title,
            body: n.body,
            data: n.data,
            created_at: n.created_at.and_then(time).ok_or(())?,
            read_at: n.read_at.and_then(time),
        })
    }
}

fn event_pb(e: Event) -> pb::NotificationEvent {
    match e {
        Event::GenerationCompleted => pb::NotificationEvent::GenerationCompleted,
        Event::GenerationFailed => pb::NotificationEvent::GenerationFailed,
        Event::PaymentReceived => pb::NotificationEvent::PaymentReceived,
        Event::PaymentFailed => pb::NotificationEvent::PaymentFailed,
        Event::Subscription => pb::NotificationEvent::Subscription,
        Event::ServiceCredit => pb::NotificationEvent::ServiceCredit,
    }
}

fn event_of(e: i32) -> Option<Event> {
    Some(match pb::NotificationEvent::try_from(e).ok()? {
        pb::NotificationEvent::GenerationCompleted => Event::GenerationCompleted,
        pb::NotificationEvent::GenerationFailed => Event::GenerationFailed,
        pb::NotificationEvent::PaymentReceived => Event::PaymentReceived,
        pb::NotificationEvent::PaymentFailed => Event::PaymentFailed,
        pb::NotificationEvent::Subscription => Event::Subscription,
        pb::NotificationEvent::ServiceCredit => Event::ServiceCredit,
        pb::NotificationEvent::Unspecified => return None,
    })
}

fn delivery_pb(d: Delivery) -> pb::Delivery {
    match d {
        Delivery::Immediate => pb::Delivery::Immediate,
        Delivery::Digest => pb::Delivery::Digest,
        Delivery::Off => pb::Delivery::Off,
    }
}

/// A channel's choice; unset keeps `current`.
fn delivery_of(d: i32, current: Delivery) -> Delivery {
    match pb::Delivery::try_from(d) {
        Ok(pb::Delivery::Immediate) => Delivery::Immediate,
        Ok(pb::Delivery::Digest) => Delivery::Digest,
        Ok(pb::Delivery::Off) => Delivery::Off,
        _ => current,
    }
}

impl From<Preferences> for pb::Preferences {
    fn from(p: Preferences) -> Self {
        pb::Preferences {
            email_on_generation: p.emails_any(&GENERATION_EVENTS),
            email_on_payment: p.emails_any(&MONEY_EVENTS),
            events: Event::ALL
                .into_iter()
                .map(|e| {
                    let c = p.channels(e);
                    pb::EventPreference {
                        event: event_pb(e) as i32,
                        email: delivery_pb(c.email) as i32,
                        push: delivery_pb(c.push) as i32,
                    }
                })
                .collect(),
            locale: p.locale,
        }
    }
}

/// An update's changes (each event's unset channel keeps `current`'s), or the refused field.
fn changes_of(
    events: &[pb::EventPreference],
    current: &Preferences,
) -> Result<Vec<(Event, Channels)>, Status> {
    events
        .iter()
        .map(|e| {
            let event = event_of(e.event).ok_or_else(|| {
                NotificationError::Invalid(
                    "events.event",
                    skillup_kit::invalid::required("events.event"),
                )
            })?;
            let now = current.channels(event);
            let channels = Channels {
                email: delivery_of(e.email, now.email),
                push: delivery_of(e.push, now.push),
            };
            Ok((event, channels))
        })
        .collect::<Result<_, NotificationError>>()
        .map_err(Status::from)
}

impl From<PushDevice> for pb::PushDevice {
    fn from(d: PushDevice) -> Self {
        pb::PushDevice {
            id: d.id.to_string(),
            endpoint: d.endpoint,
            created_at: Some(ts(d.created_at)),
            last_delivered_at: d.last_delivered_at.map(ts),
        }
    }
}

impl From<pb::PushSubscription> for PushSubscriptionInput {
    fn from(s: pb::PushSubscription) -> Self {
        let keys = s.keys.unwrap_or_default();
        PushSubscriptionInput {
            endpoint: s.endpoint,
            p256dh: keys.p256dh,
            auth: keys.auth,
            expiration_ms: s.expiration_time,
        }
    }
}

#[derive(Clone)]
pub struct NotificationGrpc {
    notifier: Notifier,
}

impl NotificationGrpc {
    pub fn new(notifier: Notifier) -> Self {
        Self { notifier }
    }

    /// The service behind the adapter (the digest job, tests).
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    pub fn into_server(self) -> NotificationServiceServer<Self> {
        NotificationServiceServer::new(self)
    }

    /// [`Self::into_server`], and its unary methods for direct calls from this process
    /// (`skillup up`: see `skillup_kit::grpc::LocalChannel`).
    pub fn into_local_server(
        self,
    ) -> (NotificationServiceServer<Self>, skillup_proto::local::Handlers) {
        pb::notification_service_local::serve(self)
    }
}

fn caller<T>(req: &Request<T>) -> Result<Uuid, Status> {
    Caller::account(req)
}

#[tonic::async_trait]
impl pb::notification_service_server::NotificationService for NotificationGrpc {
    async fn list_notifications(
        &self,
        req: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let user = caller(&req)?;
        let locale = Locale::of(&req);
        let r = req.into_inner();
        let page = r.page.unwrap_or_default();
        let (notifications, next, unread_count) =
            self.notifier.list(user, page.page_size, &page.page_token, r.unread_only).await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: notifications
                .into_iter()
                .map(|n| texts::localize(n, locale).into())
                .collect(),
            page: Some(skillup_proto::common::v1::PageResponse { next_page_token: next }),
            unread_count,
        }))
    }

    async fn mark_read(
        &self,
        req: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        let user = caller(&req)?;
        let r = req.into_inner();
        let updated = self.notifier.mark_read(user, &r.ids, r.all).await?;
        Ok(Response::new(pb::MarkReadResponse { updated }))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::Notification, Status>> + Send>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let user = caller(&req)?;
        let locale = Locale::of(&req);
        let live = self.notifier.subscribe(user, &req.get_ref().after_id).await?;
        Ok(Response::new(Box::pin(live.map(move |n| Ok(texts::localize(n, locale).into())))))
    }

    async fn get_preferences(
        &self,
        req: Request<pb::GetPreferencesRequest>,
    ) -> Result<Response<pb::Preferences>, Status> {
        let user = caller(&req)?;
        Ok(Response::new(self.notifier.preferences(user).await?.into()))
    }

    async fn update_preferences(
        &self,
        req: Request<pb::Preferences>,
    ) -> Result<Response<pb::Preferences>, Status> {
        let user = caller(&req)?;
        let r = req.into_inner();
        let current = self.notifier.preferences(user).await?;
        let changes = changes_of(&r.events, &current)?;
        // An older client, which knows only the two switches.
        let switches = r.events.is_empty().then_some((r.email_on_generation, r.email_on_payment));
        let p = self.notifier.set_preferences(user, &r.locale, changes, switches).await?;
        Ok(Response::new(p.into()))
    }

    async fn get_push_key(
        &self,
        _req: Request<pb::GetPushKeyRequest>,
    ) -> Result<Response<pb::PushKey>, Status> {
        let key = self.notifier.pusher()?.public_key().to_owned();
        Ok(Response::new(pb::PushKey { public_key: key }))
    }

    async fn add_push_subscription(
        &self,
        req: Request<pb::PushSubscription>,
    ) -> Result<Response<pb::PushDevice>, Status> {
        let user = caller(&req)?;
        let device = self.notifier.pusher()?.add(user, req.into_inner().into()).await?;
        Ok(Response::new(device.into()))
    }

    async fn list_push_subscriptions(
        &self,
        req: Request<pb::ListPushSubscriptionsRequest>,
    ) -> Result<Response<pb::ListPushSubscriptionsResponse>, Status> {
        let user = caller(&req)?;
        let devices = self.notifier.pusher()?.devices(user).await?;
        Ok(Response::new(pb::ListPushSubscriptionsResponse {
            devices: devices.into_iter().map(Into::into).collect(),
        }))
    }

    async fn delete_push_subscription(
        &self,
        req: Request<pb::DeletePushSubscriptionRequest>,
    ) -> Result<Response<pb::DeletePushSubscriptionResponse>, Status> {
        let user = caller(&req)?;
        self.notifier.pusher()?.remove(user, &req.get_ref().id).await?;
        Ok(Response::new(pb::DeletePushSubscriptionResponse {}))
    }

    async fn unsubscribe(
        &self,
        req: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::UnsubscribeResponse>, Status> {
        let r = req.get_ref();
        let event = event_of(r.event);
        let p = self.notifier.unsubscribe(&r.token, event).await?;
        Ok(Response::new(pb::UnsubscribeResponse { preferences: Some(p.into()) }))
    }

    type ExportUserDataStream = skillup_kit::grpc::ExportStream;

    async fn export_user_data(
        &self,
        req: Request<skillup_proto::common::v1::ExportUserDataRequest>,
    ) -> Result<Response<Self::ExportUserDataStream>, Status> {
        let (notifier, locale) = (self.notifier.clone(), Locale::of(&req));
        skillup_kit::grpc::export_part(req.get_ref(), move |user, sink| {
            skillup_kit::i18n::scope(locale, async move { notifier.export_user(user, &sink).await })
        })
    }
}
