//! The payment service's errors, each with the machine code the edge shows.

use skillup_kit::error::{invalid_field, status};
use skillup_proto::common::v1::ErrorCode;
use tonic::Status;

pub type Result<T, E = PaymentError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("the balance does not cover {0}")]
    InsufficientFunds(String),
    #[error("the payment was declined: {0}")]
    Declined(String),
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("the payment provider refused: {0}")]
    Provider(String),
    #[error("payments are unavailable right now, retry later")]
    Unavailable(String),
}

impl From<sea_orm::DbErr> for PaymentError {
    fn from(e: sea_orm::DbErr) -> Self {
        PaymentError::Unavailable(format!("database: {e}"))
    }
}

impl From<PaymentError> for Status {
    fn from(e: PaymentError) -> Self {
        let msg = e.to_string();
        match e {
            PaymentError::Invalid(field, m) => invalid_field(field, m),
            PaymentError::InsufficientFunds(_) => status(ErrorCode::InsufficientFunds, msg),
            PaymentError::Declined(_) => status(ErrorCode::InsufficientFunds, msg),
            PaymentError::KeyReused => status(ErrorCode::IdempotencyKeyReused, msg),
            PaymentError::NotFound(_) => status(ErrorCode::NotFound, msg),
            PaymentError::Conflict(_) => status(ErrorCode::Conflict, msg),
            PaymentError::Forbidden(_) => status(ErrorCode::PermissionDenied, msg),
            PaymentError::Provider(_) => status(ErrorCode::ProviderError, msg),
            PaymentError::Unauthenticated(_) => status(ErrorCode::Unauthenticated, msg),
            PaymentError::Unavailable(detail) => {
                tracing::error!(error = %detail, "payment dependency failed");
                status(ErrorCode::Unavailable, msg)
            }
        }
    }
}
