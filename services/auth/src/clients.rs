//! The gRPC adapters of [`crate::ports`]: each data-holding service's `ExportUserData` over a
//! [`ServiceChannel`] (a connection, or in-process under `skillup up`), with the reader's
//! language carried along.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use skillup_kit::{export::Piece, grpc::ServiceChannel};
use skillup_proto::{
    ai::v1::generation_service_client::GenerationServiceClient,
    common::v1::{ExportChunk, ExportUserDataRequest},
    notification::v1::notification_service_client::NotificationServiceClient,
    payment::v1::payment_service_client::PaymentServiceClient,
    subscribe::v1::subscription_service_client::SubscriptionServiceClient,
};
use tonic::{Response, Status, Streaming};
use uuid::Uuid;

use crate::ports::{DataHolder, Part};

#[derive(Clone)]
enum Client {
    Ai(GenerationServiceClient<ServiceChannel>),
    Subscribe(SubscriptionServiceClient<ServiceChannel>),
    Payment(PaymentServiceClient<ServiceChannel>),
    Notification(NotificationServiceClient<ServiceChannel>),
}

/// [`DataHolder`] at one service.
pub struct GrpcHolder {
    name: &'static str,
    client: Client,
}

impl GrpcHolder {
    /// Every service holding people's data, reached through `channel(name)`.
    pub fn all<E>(
        mut channel: impl FnMut(&'static str) -> Result<ServiceChannel, E>,
    ) -> Result<Vec<Arc<dyn DataHolder>>, E> {
        let holders = [
            ("ai", Client::Ai(GenerationServiceClient::new(channel("ai")?))),
            ("subscribe", Client::Subscribe(SubscriptionServiceClient::new(channel("subscribe")?))),
            ("payment", Client::Payment(PaymentServiceClient::new(channel("payment")?))),
            (
                "notification",
                Client::Notification(NotificationServiceClient::new(channel("notification")?)),
            ),
        ];
        Ok(holders
            .into_iter()
            .map(|(name, client)| Arc::new(GrpcHolder { name, client }) as Arc<dyn DataHolder>)
            .collect())
    }

    async fn open(&self, user: Uuid) -> Result<Response<Streaming<ExportChunk>>, Status> {
        let mut req = tonic::Request::new(ExportUserDataRequest { user_id: user.to_string() });
        skillup_kit::i18n::forward(req.metadata_mut());
        match self.client.clone() {
            Client::Ai(mut c) => c.export_user_data(req).await,
            Client::Subscribe(mut c) => c.export_user_data(req).await,
            Client::Payment(mut c) => c.export_user_data(req).await,
            Client::Notification(mut c) => c.export_user_data(req).await,
        }
    }
}

#[async_trait]
impl DataHolder for GrpcHolder {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn export(&self, user: Uuid) -> Result<Part, String> {
        let name = self.name;
        let opened = self.open(user).await.map_err(|s| format!("{name}: {}", s.message()))?;
        Ok(opened
            .into_inner()
            .map(move |r| match r {
                Ok(c) => Ok(Piece { path: c.path, data: c.data.into() }),
                Err(s) => Err(format!("{name}: {}", s.message())),
            })
            .boxed())
    }
}
