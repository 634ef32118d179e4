//! Auth's errors, each with the machine code the edge shows and a message a frontend can show.

use skillup_kit::error::{invalid_field, status};
use skillup_proto::common::v1::ErrorCode;
use tonic::Status;

pub type Result<T, E = AuthError> = std::result::Result<T, E>;

/// A data export nobody may download (unknown, another's, expired, failed).
pub(crate) const NO_EXPORT: &str = "error-export-gone";
/// A data export still being prepared.
pub(crate) const NOT_READY: &str = "error-export-not-ready";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("email or password is wrong")]
    InvalidCredentials,
    #[error("too many attempts; try again in {0} seconds")]
    Throttled(u64),
    /// The payload of this variant and of `Forbidden`, `NotFound` and `Conflict` is the message
    /// (of `locales/*.ftl`) people read; logs show its English.
    #[error("{}", english(.0))]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Expired(&'static str),
    #[error("{0}")]
    Revoked(&'static str),
    #[error("{}", english(.0))]
    Forbidden(&'static str),
    #[error("{}", english(.0))]
    NotFound(&'static str),
    #[error("{}", english(.0))]
    Conflict(&'static str),
    /// A dependency did not answer: fail closed.
    #[error("authentication is unavailable right now, retry later")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

/// A message of `locales/en.ftl`, for logs.
fn english(key: &str) -> String {
    crate::letters::MESSAGES.text(skillup_kit::i18n::Locale::En, key, None)
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
                    message: msg,
                    retry_after_seconds: secs.min(u32::MAX as u64) as u32,
                    ..Default::default()
                };
                let mut s = skillup_kit::error::status_of(detail);
                if let Ok(v) = secs.to_string().parse() {
                    s.metadata_mut().insert("retry-after", v);
                }
                s
            }
            AuthError::Unauthenticated(key) => status(ErrorCode::Unauthenticated, said(key, None)),
            AuthError::Expired(_) => {
                status(ErrorCode::TokenExpired, said("error-token-expired", None))
            }
            AuthError::Revoked(_) => {
                status(ErrorCode::TokenRevoked, said("error-token-revoked", None))
            }
            AuthError::Forbidden(key) => status(ErrorCode::PermissionDenied, said(key, None)),
            AuthError::NotFound(key) => status(ErrorCode::NotFound, said(key, None)),
            AuthError::Conflict(key) => status(ErrorCode::Conflict, said(key, None)),
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
