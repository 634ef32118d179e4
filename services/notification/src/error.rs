//! The notification service's errors, each with the machine code the edge shows.

use skillup_kit::error::{invalid_field, status};
use skillup_proto::common::v1::ErrorCode;
use tonic::Status;

pub type Result<T, E = NotificationError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("{1}")]
    Invalid(&'static str, String),
    /// Nothing of the caller's by that id (the message names what, in the caller's language).
    #[error("{0}")]
    NotFound(String),
    /// Web Push is not set up on this deployment (no VAPID key): 404, as a feature that is
    /// not there.
    #[error("push notifications are not set up on this platform")]
    PushOff,
    #[error("notifications are unavailable right now, retry later")]
    Unavailable(String),
}

impl From<sea_orm::DbErr> for NotificationError {
    fn from(e: sea_orm::DbErr) -> Self {
        NotificationError::Unavailable(format!("database: {e}"))
    }
}

impl From<NotificationError> for Status {
    fn from(e: NotificationError) -> Self {
        let msg = e.to_string();
        match e {
            NotificationError::Invalid(field, m) => invalid_field(field, m),
            NotificationError::NotFound(_) => status(ErrorCode::NotFound, msg),
            NotificationError::PushOff => status(ErrorCode::NotFound, msg),
            NotificationError::Unavailable(detail) => {
                tracing::error!(error = %detail, "notification dependency failed");
                status(ErrorCode::Unavailable, msg)
            }
        }
    }
}
