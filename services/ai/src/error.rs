//! The ai service's errors, each with the machine code the edge shows.

use skillup_kit::error::{invalid_field, status};
use skillup_proto::common::v1::ErrorCode;
use tonic::{Code, Status};

use crate::providers::ProviderError;

pub type Result<T, E = AiError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AiError {
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("confirm your email address first: generation needs a verified account")]
    EmailNotVerified,
    #[error("{0}")]
    NotFound(String),
    /// A model of the OpenAI-compatible API that does not exist.
    #[error("no model {0}")]
    UnknownModel(String),
    #[error("{0}")]
    Conflict(String),
    /// An idempotency key sent again with another request.
    #[error("{0}")]
    KeyReused(String),
    /// No plan of the caller includes the function.
    #[error("{0}")]
    NotSubscribed(String),
    /// The plan includes it, but the period's quota is used up.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A refusal from the prompt or subscribe service, passed on as it came.
    #[error("{}", .0.message())]
    Upstream(Status),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("generation is unavailable right now, retry later")]
    Unavailable(String),
}

impl From<sea_orm::DbErr> for AiError {
    fn from(e: sea_orm::DbErr) -> Self {
        AiError::Unavailable(format!("database: {e}"))
    }
}

impl From<skillup_kit::Error> for AiError {
    fn from(e: skillup_kit::Error) -> Self {
        AiError::Unavailable(e.to_string())
    }
}

impl AiError {
    /// A failed call to another service: its refusals pass through (they carry their own
    /// machine code), its outages become ours.
    pub fn from_call(service: &str, s: Status) -> Self {
        match s.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::PermissionDenied
            | Code::AlreadyExists
            | Code::Unauthenticated => AiError::Upstream(s),
            _ => AiError::Unavailable(format!("{service}: {} {}", s.code(), s.message())),
        }
    }
}

impl From<AiError> for Status {
    fn from(e: AiError) -> Self {
        let msg = e.to_string();
        match e {
            AiError::Invalid(field, m) => invalid_field(field, m),
            AiError::EmailNotVerified => {
                status(ErrorCode::EmailNotVerified, crate::texts::text("email-not-verified"))
            }
            AiError::NotFound(_) => status(ErrorCode::NotFound, crate::texts::text("not-found")),
            AiError::UnknownModel(model) => {
                let model: String = model.chars().filter(|c| !c.is_control()).take(100).collect();
                let args = skillup_kit::fluent_args![("model", model)];
                status(
                    ErrorCode::NotFound,
                    crate::texts::MESSAGES.text(
                        skillup_kit::i18n::current(),
                        "unknown-model",
                        Some(&args),
                    ),
                )
            }
            AiError::Conflict(_) => status(ErrorCode::Conflict, msg),
            AiError::KeyReused(_) => status(ErrorCode::IdempotencyKeyReused, msg),
            AiError::NotSubscribed(_) => status(ErrorCode::SubscriptionRequired, msg),
            AiError::QuotaExceeded(_) => status(ErrorCode::QuotaExceeded, msg),
            AiError::Upstream(s) => s,
            AiError::Provider(p) => {
                tracing::warn!(error = %p, "generation failed at the provider");
                match p {
                    ProviderError::ContentPolicy(_) => {
                        status(ErrorCode::ContentPolicy, p.user_reason())
                    }
                    ProviderError::Rejected(_) => {
                        status(ErrorCode::InvalidArgument, p.user_reason())
                    }
                    _ => status(ErrorCode::ProviderError, p.user_reason()),
                }
            }
            AiError::Unavailable(detail) => {
                tracing::error!(error = %detail, "ai dependency failed");
                status(ErrorCode::Unavailable, crate::texts::text("unavailable"))
            }
        }
    }
}
