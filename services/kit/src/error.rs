//! The kit's error type, and the one error-code table every service and the edge share.

use prost::Message;
use skillup_proto::common::v1::{ErrorCode, ErrorDetail};
use tonic::{Code, Status};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures of the shared infrastructure (config, connections, ports).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing or invalid; the message names the key.
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("cache: {0}")]
    Cache(String),
    #[error("bus: {0}")]
    Bus(String),
    #[error("keys: {0}")]
    Keys(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl From<fred::error::Error> for Error {
    fn from(e: fred::error::Error) -> Self {
        Error::Cache(e.to_string())
    }
}

impl From<lapin::Error> for Error {
    fn from(e: lapin::Error) -> Self {
        Error::Bus(e.to_string())
    }
}

/// What a machine code means on each transport. One table, so the edge never guesses.
pub trait ErrorCodeExt {
    /// The gRPC status code a service answers with.
    fn grpc_code(self) -> Code;
    /// The HTTP status the edge answers with.
    fn http_status(self) -> u16;
    /// The stable text form used in JSON (`"SUBSCRIPTION_REQUIRED"`).
    fn code_text(self) -> &'static str;
}

impl ErrorCodeExt for ErrorCode {
    fn grpc_code(self) -> Code {
        use ErrorCode::*;
        match self {
            Unspecified | Internal => Code::Internal,
            InvalidArgument => Code::InvalidArgument,
            Unauthenticated | TokenRevoked | TokenExpired | InvalidCredentials => {
                Code::Unauthenticated
            }
            PermissionDenied | EmailNotVerified => Code::PermissionDenied,
            NotFound => Code::NotFound,
            AlreadyExists | Conflict | IdempotencyKeyReused => Code::AlreadyExists,
            RateLimited | QuotaExceeded | PayloadTooLarge => Code::ResourceExhausted,
            SubscriptionRequired | InsufficientFunds | ContentPolicy => Code::FailedPrecondition,
            Unavailable | ProviderError => Code::Unavailable,
            DeadlineExceeded => Code::DeadlineExceeded,
        }
    }

    fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            Unspecified | Internal => 500,
            InvalidArgument => 400,
            Unauthenticated | TokenRevoked | TokenExpired | InvalidCredentials => 401,
            SubscriptionRequired | InsufficientFunds => 402,
            PermissionDenied | EmailNotVerified => 403,
            NotFound => 404,
            AlreadyExists | Conflict | IdempotencyKeyReused => 409,
            PayloadTooLarge => 413,
            ContentPolicy => 422,
            RateLimited | QuotaExceeded => 429,
            ProviderError => 502,
            Unavailable => 503,
            DeadlineExceeded => 504,
        }
    }

    fn code_text(self) -> &'static str {
        self.as_str_name()
    }
}

/// The HTTP status for a bare gRPC code (no detail attached), per grpc-gateway's table.
pub fn http_status_for_code(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::FailedPrecondition => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::Unauthenticated => 401,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
    }
}

/// A status carrying our machine code in its details; `message` must be safe for end users.
pub fn status(code: ErrorCode, message: impl Into<String>) -> Status {
    let message = message.into();
    let detail = ErrorDetail { code: code as i32, message: message.clone(), ..Default::default() };
    Status::with_details(code.grpc_code(), message, detail.encode_to_vec().into())
}

/// A status for a bad field (`INVALID_ARGUMENT`, naming the field).
pub fn invalid_field(field: &str, message: impl Into<String>) -> Status {
    let message = message.into();
    let detail = ErrorDetail {
        code: ErrorCode::InvalidArgument as i32,
        message: message.clone(),
        field: field.to_owned(),
        ..Default::default()
    };
    Status::with_details(Code::InvalidArgument, message, detail.encode_to_vec().into())
}

/// Reads our detail back from a status (the edge uses it); `None` if the peer attached none.
pub fn detail_of(status: &Status) -> Option<ErrorDetail> {
    if status.details().is_empty() {
        return None;
    }
    ErrorDetail::decode(status.details()).ok()
}

/// Infrastructure failures never leak their detail: log it, answer a generic status.
impl From<Error> for Status {
    fn from(e: Error) -> Self {
        tracing::error!(error = %e, "infrastructure failure");
        match e {
            Error::Cache(_) | Error::Bus(_) | Error::Transport(_) => {
                status(ErrorCode::Unavailable, "a dependency is unavailable, retry later")
            }
            _ => status(ErrorCode::Internal, "internal error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_a_status() {
        for n in 0..=21 {
            let code = ErrorCode::try_from(n).expect("known code");
            let s = status(code, "msg");
            assert_eq!(s.code(), code.grpc_code());
            let d = detail_of(&s).expect("detail attached");
            assert_eq!(d.code(), code);
            assert_eq!(http_status_for_code(s.code()) / 100, code.http_status() / 100, "{code:?}");
        }
    }

    #[test]
    fn subscription_required_is_402() {
        assert_eq!(ErrorCode::SubscriptionRequired.http_status(), 402);
        assert_eq!(ErrorCode::SubscriptionRequired.code_text(), "SUBSCRIPTION_REQUIRED");
    }
}
