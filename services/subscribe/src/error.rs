//! The subscribe service's errors, each with the machine code the edge shows.

use skillup_kit::error::{invalid_field, status};
use skillup_proto::common::v1::ErrorCode;
use tonic::Status;

pub type Result<T, E = SubscribeError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("{0}")]
    NotFound(String),
    /// Worded for the caller (see [`crate::texts`]).
    #[error("{0}")]
    SubscriptionRequired(String),
    #[error("the quota of this period is used up: {0}")]
    QuotaExceeded(String),
    #[error("the balance does not cover the plan; top up first")]
    InsufficientFunds,
    #[error("{0}")]
    Conflict(String),
    /// An idempotency key sent again with another request (or after its work was settled).
    #[error("{0}")]
    KeyReused(String),
    #[error("subscriptions are unavailable right now, retry later")]
    Unavailable(String),
}

impl From<sea_orm::DbErr> for SubscribeError {
    fn from(e: sea_orm::DbErr) -> Self {
        SubscribeError::Unavailable(format!("database: {e}"))
    }
}

impl From<SubscribeError> for Status {
    fn from(e: SubscribeError) -> Self {
        let msg = e.to_string();
        match e {
            SubscribeError::Invalid(field, m) => invalid_field(field, m),
            SubscribeError::NotFound(_) => status(ErrorCode::NotFound, msg),
            SubscribeError::SubscriptionRequired(_) => status(ErrorCode::SubscriptionRequired, msg),
            SubscribeError::QuotaExceeded(_) => status(ErrorCode::QuotaExceeded, msg),
            SubscribeError::InsufficientFunds => {
                status(ErrorCode::InsufficientFunds, crate::texts::text("insufficient-funds", None))
            }
            SubscribeError::Conflict(_) => status(ErrorCode::Conflict, msg),
            SubscribeError::KeyReused(_) => status(ErrorCode::IdempotencyKeyReused, msg),
            SubscribeError::Unavailable(detail) => {
                tracing::error!(error = %detail, "subscribe dependency failed");
                status(ErrorCode::Unavailable, crate::texts::text("unavailable", None))
            }
        }
    }
}
