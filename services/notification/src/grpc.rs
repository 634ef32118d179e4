//! The tonic adapter: every RPC acts for the caller the edge asserted.

use skillup_kit::identity::Identity;
use skillup_proto::notification::v1::{
    self as pb, notification_service_server::NotificationServiceServer,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::notifier::Notifier;

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
    Identity::account(req)
}

#[tonic::async_trait]
impl pb::notification_service_server::NotificationService for NotificationGrpc {
    async fn list_notifications(
        &self,
        req: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let user = caller(&req)?;
        let r = req.into_inner();
        let page = r.page.unwrap_or_default();
        let (notifications, next, unread_count) =
            self.notifier.list(user, page.page_size, &page.page_token, r.unread_only).await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications,
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

    type SubscribeStream = crate::live::LiveStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let user = caller(&req)?;
        Ok(Response::new(self.notifier.subscribe(user, &req.get_ref().after_id).await?))
    }

    async fn get_preferences(
        &self,
        req: Request<pb::GetPreferencesRequest>,
    ) -> Result<Response<pb::Preferences>, Status> {
        let user = caller(&req)?;
        Ok(Response::new(self.notifier.preferences(user).await?))
    }

    async fn update_preferences(
        &self,
        req: Request<pb::Preferences>,
    ) -> Result<Response<pb::Preferences>, Status> {
        let user = caller(&req)?;
        Ok(Response::new(self.notifier.set_preferences(user, req.into_inner()).await?))
    }
}
