//! Auth's errors, each with the machine code the edge shows and a message a frontend can show.

use skillup_kit::error::{ErrorCodeExt, invalid_field, status};
use skillup_proto::common::v1::ErrorCode;
use tonic::Status;

pub type Result<T, E = AuthError> = std::result::Result<T, E>;

/// A data export nobody may download (unknown, another's, expired, failed): worded for people.
pub(crate) const NO_EXPORT: &str = "no such export";
/// A data export still being prepared: worded for people.
pub(crate) const NOT_READY: &str = "the export is not ready yet";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("email or password is wrong")]
    InvalidCredentials,
    #[error("too many attempts; try again in {0} seconds")]
    Throttled(u64),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Expired(&'static str),
    #[error("{0}")]
    Revoked(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    /// A dependency did not answer: fail closed.
    #[error("authentication is unavailable right now, retry later")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl From<sea_orm::DbErr> for AuthError {
    fn from(e: sea_orm::DbErr) -> Self {
        AuthError::Unavailable(format!("database: {e}"))
    }
}

impl From<skillup_kit::Error> for AuthError {
    fn from(e: skillup_kit::Error) -> Self {
        AuthError::Unavailable(e.to_string())
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        use crate::letters::said;
        let msg = e.to_string();
        match e {
            AuthError::Invalid(field, m) => invalid_field(field, m),
            AuthError::InvalidCredentials => {
                status(ErrorCode::InvalidCredentials, said("error-invalid-credentials", None))
            }
            AuthError::Throttled(secs) => {
                let msg =
                    said("error-throttled", Some(&skillup_kit::fluent_args![("seconds", secs)]));
                let detail = skillup_proto::common::v1::ErrorDetail {
                    code: ErrorCode::RateLimited as i32,
                    message: msg.clone(),
                    retry_after_seconds: secs.min(u32::MAX as u64) as u32,
                    ..Default::default()
                };
                let mut s = Status::with_details(
                    ErrorCode::RateLimited.grpc_code(),
                    msg,
                    prost::Message::encode_to_vec(&detail).into(),
                );
                if let Ok(v) = secs.to_string().parse() {
                    s.metadata_mut().insert("retry-after", v);
                }
                s
            }
            AuthError::Unauthenticated("sign in first") => {
                status(ErrorCode::Unauthenticated, said("error-sign-in", None))
            }
            AuthError::Unauthenticated(_) => status(ErrorCode::Unauthenticated, msg),
            AuthError::Expired(_) => {
                status(ErrorCode::TokenExpired, said("error-token-expired", None))
            }
            AuthError::Revoked(_) => {
                status(ErrorCode::TokenRevoked, said("error-token-revoked", None))
            }
            AuthError::Forbidden("this account is deactivated") => {
                status(ErrorCode::PermissionDenied, said("error-deactivated", None))
            }
            AuthError::Forbidden(_) => status(ErrorCode::PermissionDenied, msg),
            AuthError::NotFound(NO_EXPORT) => {
                status(ErrorCode::NotFound, said("error-export-gone", None))
            }
            AuthError::NotFound(_) => status(ErrorCode::NotFound, msg),
            AuthError::Conflict(NOT_READY) => {
                status(ErrorCode::Conflict, said("error-export-not-ready", None))
            }
            AuthError::Conflict(_) => status(ErrorCode::Conflict, msg),
            AuthError::Unavailable(detail) => {
                tracing::warn!(%detail, "auth dependency unavailable");
                status(ErrorCode::Unavailable, said("error-unavailable", None))
            }
            AuthError::Internal(detail) => {
                tracing::error!(%detail, "auth internal error");
                status(ErrorCode::Internal, msg)
            }
        }
    }
}
