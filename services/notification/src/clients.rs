//! The gRPC adapter of [`crate::ports::Directory`]: auth's `GetContact` over a
//! [`ServiceChannel`] (a connection, or in-process under `skillup up`).

use async_trait::async_trait;
use skillup_kit::grpc::ServiceChannel;
use skillup_proto::auth::v1::{GetContactRequest, auth_service_client::AuthServiceClient};
use tonic::Code;
use uuid::Uuid;

use crate::{
    error::{NotificationError, Result},
    ports::{Contact, Directory},
};

/// [`Directory`] at the auth service.
#[derive(Clone)]
pub struct GrpcDirectory(AuthServiceClient<ServiceChannel>);

impl GrpcDirectory {
    pub fn new(channel: impl Into<ServiceChannel>) -> Self {
        Self(AuthServiceClient::new(channel.into()))
    }
}

#[async_trait]
impl Directory for GrpcDirectory {
    async fn contact(&self, user: Uuid) -> Result<Option<Contact>> {
        let mut req = tonic::Request::new(GetContactRequest { user_id: user.to_string() });
        skillup_kit::telemetry::inject_metadata(req.metadata_mut());
        match self.0.clone().get_contact(req).await {
            Ok(c) => {
                let c = c.into_inner();
                Ok(Some(Contact { email: c.email, locale: c.locale }))
            }
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => {
                Err(NotificationError::Unavailable(format!("auth: {:?} {}", s.code(), s.message())))
            }
        }
    }
}
