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
    domain::{Notification, NotificationKind, Preferences},
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

impl From<Preferences> for pb::Preferences {
    fn from(p: Preferences) -> Self {
        pb::Preferences {
            email_on_generation: p.email_on_generation,
            email_on_payment: p.email_on_payment,
            locale: p.locale,
        }
    }
}

impl From<pb::Preferences> for Preferences {
    fn from(p: pb::Preferences) -> Self {
        Preferences {
            email_on_generation: p.email_on_generation,
            email_on_payment: p.email_on_payment,
            locale: p.locale,
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
        let p = self.notifier.set_preferences(user, req.into_inner().into()).await?;
        Ok(Response::new(p.into()))
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
