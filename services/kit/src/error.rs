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

/// The type URL our [`ErrorDetail`] carries inside a `google.rpc.Status`'s details.
pub const DETAIL_TYPE_URL: &str = "type.googleapis.com/skillup.common.v1.ErrorDetail";
/// The `domain` of the `google.rpc.ErrorInfo` every status carries (its `reason` is the code).
pub const ERROR_DOMAIN: &str = "skillup";

/// A status carrying our machine code in its details; `message` must be safe for end users.
pub fn status(code: ErrorCode, message: impl Into<String>) -> Status {
    status_of(ErrorDetail { code: code as i32, message: message.into(), ..Default::default() })
}

/// A status for a bad field (`INVALID_ARGUMENT`, naming the field).
pub fn invalid_field(field: &str, message: impl Into<String>) -> Status {
    status_of(ErrorDetail {
        code: ErrorCode::InvalidArgument as i32,
        message: message.into(),
        field: field.to_owned(),
        ..Default::default()
    })
}

/// The one way a service's error becomes a status: gRPC's richer error model, as grpcurl,
/// grpc-go and grpcio-status read it — `grpc-status-details-bin` holds a `google.rpc.Status`
/// with the status's own code and message, our [`ErrorDetail`] packed as an `Any`, and beside it
/// the standard messages where they fit: `ErrorInfo` (reason = the code's name) always,
/// `BadRequest` naming the field, `RetryInfo` when a retry is worth it after a wait.
pub fn status_of(detail: ErrorDetail) -> Status {
    use tonic_types::pb;
    let code = detail.code().grpc_code();
    let any = |type_url: &str, value: Vec<u8>| prost_types::Any {
        type_url: format!("type.googleapis.com/{type_url}"),
        value,
    };
    let mut details = vec![
        prost_types::Any { type_url: DETAIL_TYPE_URL.to_owned(), value: detail.encode_to_vec() },
        any(
            "google.rpc.ErrorInfo",
            pb::ErrorInfo {
                reason: detail.code().code_text().to_owned(),
                domain: ERROR_DOMAIN.to_owned(),
                metadata: Default::default(),
            }
            .encode_to_vec(),
        ),
    ];
    if !detail.field.is_empty() {
        let violation = pb::bad_request::FieldViolation {
            field: detail.field.clone(),
            description: detail.message.clone(),
            ..Default::default()
        };
        let bad = pb::BadRequest { field_violations: vec![violation] };
        details.push(any("google.rpc.BadRequest", bad.encode_to_vec()));
    }
    if detail.retry_after_seconds > 0 {
        let delay = prost_types::Duration { seconds: detail.retry_after_seconds.into(), nanos: 0 };
        let retry = pb::RetryInfo { retry_delay: Some(delay) };
        details.push(any("google.rpc.RetryInfo", retry.encode_to_vec()));
    }
    let rich = pb::Status { code: code as i32, message: detail.message.clone(), details };
    Status::with_details(code, detail.message, rich.encode_to_vec().into())
}

/// Reads our detail back from a status (the edge uses it); `None` if the peer attached none.
/// A peer from before the richer error model (a rolling upgrade) sent the bare [`ErrorDetail`]:
/// read too.
pub fn detail_of(status: &Status) -> Option<ErrorDetail> {
    let bytes = status.details();
    if bytes.is_empty() {
        return None;
    }
    if let Ok(rich) = tonic_types::pb::Status::decode(bytes)
        && let Some(ours) = rich.details.iter().find(|a| a.type_url == DETAIL_TYPE_URL)
    {
        return ErrorDetail::decode(ours.value.as_slice()).ok();
    }
    ErrorDetail::decode(bytes).ok()
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

    /// What a client of gRPC's richer error model reads: a `google.rpc.Status` with the same
    /// code and message, our detail, and the standard messages that fit.
    #[test]
    fn the_details_are_a_google_rpc_status() {
        use tonic_types::{ErrorDetails, StatusExt};
        let s = status_of(ErrorDetail {
            code: ErrorCode::RateLimited as i32,
            message: "wait".into(),
            field: "email".into(),
            retry_after_seconds: 7,
        });
        let rich = tonic_types::pb::Status::decode(s.details()).expect("a google.rpc.Status");
        assert_eq!((rich.code, rich.message.as_str()), (Code::ResourceExhausted as i32, "wait"));
        assert_eq!(rich.details[0].type_url, DETAIL_TYPE_URL);
        let std: ErrorDetails = s.get_error_details();
        let info = std.error_info().expect("ErrorInfo");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("RATE_LIMITED", ERROR_DOMAIN));
        let bad = std.bad_request().expect("BadRequest");
        assert_eq!(bad.field_violations[0].field, "email");
        assert_eq!(bad.field_violations[0].description, "wait");
        let retry = std.retry_info().expect("RetryInfo").retry_delay.expect("delay");
        assert_eq!(retry.as_secs(), 7);
        assert_eq!(detail_of(&s).expect("ours").retry_after_seconds, 7);

        let plain = status(ErrorCode::NotFound, "no such thing").get_error_details();
        assert!(plain.bad_request().is_none() && plain.retry_info().is_none());
    }

    #[test]
    fn a_bare_detail_from_an_older_peer_is_still_read() {
        let old = ErrorDetail {
            code: ErrorCode::NotFound as i32,
            message: "gone".into(),
            field: "id".into(),
            ..Default::default()
        };
        let s = Status::with_details(Code::NotFound, "gone", old.encode_to_vec().into());
        assert_eq!(detail_of(&s), Some(old));
        assert_eq!(detail_of(&Status::not_found("bare")), None);
    }

    #[test]
    fn subscription_required_is_402() {
        assert_eq!(ErrorCode::SubscriptionRequired.http_status(), 402);
        assert_eq!(ErrorCode::SubscriptionRequired.code_text(), "SUBSCRIPTION_REQUIRED");
    }
}
