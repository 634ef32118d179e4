//! The prompt service's errors, each with the machine code the edge shows.

use skillup_kit::error::{invalid_field, status};
use skillup_proto::common::v1::ErrorCode;
use tonic::Status;

pub type Result<T, E = PromptError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("the catalog is unavailable right now, retry later")]
    Unavailable(String),
}

impl From<sea_orm::DbErr> for PromptError {
    fn from(e: sea_orm::DbErr) -> Self {
        PromptError::Unavailable(format!("database: {e}"))
    }
}

impl From<PromptError> for Status {
    fn from(e: PromptError) -> Self {
        let msg = e.to_string();
        match e {
            PromptError::Invalid(field, m) => invalid_field(field, m),
            PromptError::NotFound(_) => status(ErrorCode::NotFound, msg),
            PromptError::Exists(_) => status(ErrorCode::AlreadyExists, msg),
            PromptError::Unauthenticated(_) => status(ErrorCode::Unauthenticated, msg),
            PromptError::Forbidden(_) => status(ErrorCode::PermissionDenied, msg),
            PromptError::Unavailable(detail) => {
                tracing::error!(error = %detail, "prompt service dependency failed");
                status(ErrorCode::Unavailable, msg)
            }
        }
    }
}
