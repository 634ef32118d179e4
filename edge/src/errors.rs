//! Every failure the edge answers, as `{"error":{"code","message","request_id"}}` with the
//! right HTTP status. Upstream statuses map through the kit's one error-code table (or, for a
//! bare gRPC code, grpc-gateway's table); internal detail never reaches the client.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::json;
use skillup_kit::error::{ErrorCodeExt, detail_of, http_status_for_code};
use skillup_proto::common::v1::ErrorCode;
use tonic::{Code, Status};

/// An error answer (boxed: it travels in `Result`s on the hot path).
#[derive(Debug, Clone)]
pub struct ApiError(Box<ErrorParts>);

/// What an error answer is made of.
#[derive(Debug, Clone)]
pub struct ErrorParts {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    pub headers: HeaderMap,
    /// Worded by a service for the person already (see [`ApiError::worded`]).
    pub from_service: bool,
    /// For bad input the edge refused itself: the message (of `edge/locales`) that says it in
    /// other languages, and its arguments (see [`ApiError::invalid_as`]).
    pub words: Option<(&'static str, Vec<(&'static str, String)>)>,
}

impl std::ops::Deref for ApiError {
    type Target = ErrorParts;
    fn deref(&self) -> &ErrorParts {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorParts {
        &mut self.0
    }
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self(Box::new(ErrorParts {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: code.to_owned(),
            message: message.into(),
            field: None,
            headers: HeaderMap::new(),
            from_service: false,
            words: None,
        }))
    }

    /// The edge's own error in `locale`: a sentence by its code (`error-{CODE}` in
    /// `edge/locales`) for a reader of another language than the English the edge writes in.
    /// A service's error is worded by the service; the edge's own bad-input answers (400) by
    /// the message they were made with ([`ApiError::invalid_as`]), the detail a parser gave kept
    /// as it is.
    pub fn worded(mut self, locale: skillup_kit::i18n::Locale) -> Self {
        if self.from_service || locale == skillup_kit::i18n::Locale::En {
            return self;
        }
        if self.status == StatusCode::BAD_REQUEST {
            if let Some((key, args)) = &self.words {
                let mut fluent = skillup_kit::i18n::FluentArgs::new();
                for (k, v) in args {
                    fluent.set(*k, v.clone());
                }
                if let Some(text) = crate::pages::word(locale, key, &fluent) {
                    self.message = text;
                }
            }
            return self;
        }
        let seconds = self
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1);
        let args = skillup_kit::fluent_args![("seconds", seconds)];
        if let Some(text) = crate::pages::word(locale, &format!("error-{}", self.code), &args) {
            self.message = text;
        }
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "INVALID_ARGUMENT", message)
    }

    /// Bad input in English (`message`), and the message `key` of `edge/locales` with `args`
    /// that says it in the reader's language.
    pub fn invalid_as(
        message: impl Into<String>,
        key: &'static str,
        args: &[(&'static str, &str)],
    ) -> Self {
        let mut e = Self::invalid(message);
        e.words = Some((key, args.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()));
        e
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn unauthenticated(code: &str, message: impl Into<String>) -> Self {
        Self::new(401, code, message).header(header::WWW_AUTHENTICATE, "Bearer realm=\"skillup\"")
    }

    pub fn unavailable(message: impl Into<String>, retry_after: Option<u64>) -> Self {
        let e = Self::new(503, "UNAVAILABLE", message);
        match retry_after {
            Some(s) => e.header(header::RETRY_AFTER, &s.max(1).to_string()),
            None => e,
        }
    }

    pub fn not_found() -> Self {
        Self::new(404, "NOT_FOUND", "no such route")
    }

    pub fn header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }

    /// An upstream status, mapped.
    pub fn from_status(status: &Status) -> Self {
        let detail = detail_of(status);
        let code = detail.as_ref().map(|d| d.code()).unwrap_or(ErrorCode::Unspecified);
        let (http, text) = if code != ErrorCode::Unspecified {
            (code.http_status(), code.code_text().to_owned())
        } else {
            (http_status_for_code(status.code()), code_name(status.code()).to_owned())
        };
        // What a service says in a status is meant for users; what the transport or a crash
        // says is not.
        let message = match status.code() {
            Code::Internal | Code::Unknown | Code::DataLoss if detail.is_none() => {
                "internal error".to_owned()
            }
            Code::Unavailable if detail.is_none() => {
                "the service is unavailable, retry later".to_owned()
            }
            Code::DeadlineExceeded if detail.is_none() => {
                "the service did not answer in time".to_owned()
            }
            Code::Cancelled if detail.is_none() => "the request was cancelled".to_owned(),
            Code::Unimplemented if detail.is_none() => {
                "this operation is not available on this deployment".to_owned()
            }
            _ => status.message().to_owned(),
        };
        let mut e = Self::new(http, &text, message);
        // A coded status is the service's own answer, worded for the person; a bare one (a
        // transport failure, a crash) is the edge's to word.
        e.from_service = detail.is_some();
        if let Some(d) = &detail {
            if !d.field.is_empty() {
                e.field = Some(d.field.clone());
            }
            if d.retry_after_seconds > 0 {
                e = e.header(header::RETRY_AFTER, &d.retry_after_seconds.to_string());
            }
        }
        if http == 401 {
            e = e.header(header::WWW_AUTHENTICATE, "Bearer realm=\"skillup\"");
        }
        if http == 503 && !e.headers.contains_key(header::RETRY_AFTER) {
            e = e.header(header::RETRY_AFTER, "1");
        }
        e
    }

    /// The JSON body.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        let mut error = json!({
            "code": self.code,
            "message": self.message,
            "request_id": request_id,
        });
        if let Some(f) = &self.field {
            error["field"] = json!(f);
        }
        json!({ "error": error })
    }

    pub fn into_response_with(self, request_id: &str) -> Response {
        let body = self.body(request_id);
        let parts = *self.0;
        let mut res = (parts.status, axum::Json(body)).into_response();
        res.headers_mut().extend(parts.headers);
        res
    }
}

/// The upper-case name of a gRPC code (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use skillup_kit::error::status;

    use super::*;

    #[test]
    fn coded_statuses_use_the_code_table() {
        let e = ApiError::from_status(&status(ErrorCode::SubscriptionRequired, "subscribe"));
        assert_eq!(e.status, 402);
        assert_eq!(e.code, "SUBSCRIPTION_REQUIRED");
        assert_eq!(e.message, "subscribe");
        let e = ApiError::from_status(&status(ErrorCode::TokenExpired, "expired"));
        assert_eq!(e.status, 401);
        assert!(e.headers.contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn bare_codes_follow_grpc_gateway_and_hide_internals() {
        let e = ApiError::from_status(&Status::internal("db password is hunter2"));
        assert_eq!(e.status, 500);
        assert_eq!(e.code, "INTERNAL");
        assert_eq!(e.message, "internal error");
        let e = ApiError::from_status(&Status::not_found("no such task"));
        assert_eq!((e.status.as_u16(), e.code.as_str()), (404, "NOT_FOUND"));
        let e = ApiError::from_status(&Status::unavailable("tcp connect error 10.0.0.1"));
        assert_eq!(e.status, 503);
        assert!(!e.message.contains("10.0.0.1"));
        assert_eq!(ApiError::from_status(&Status::failed_precondition("x")).status, 400);
        assert_eq!(ApiError::from_status(&Status::aborted("x")).status, 409);
        assert_eq!(ApiError::from_status(&Status::unimplemented("x")).status, 501);
        assert_eq!(ApiError::from_status(&Status::deadline_exceeded("x")).status, 504);
    }
}
