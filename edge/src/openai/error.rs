//! OpenAI's error shape, and the edge's and services' refusals mapped onto it.

use super::*;

/// An OpenAI-shaped error (boxed: it travels in every `Result` of the adapter).
#[derive(Debug)]
pub(super) struct OpenAiError(Box<Refusal>);

#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) kind: &'static str,
    pub(super) code: Option<&'static str>,
    pub(super) param: Option<String>,
    pub(super) message: String,
    pub(super) headers: HeaderMap,
}

impl std::ops::Deref for OpenAiError {
    type Target = Refusal;
    fn deref(&self) -> &Refusal {
        &self.0
    }
}

impl From<Refusal> for OpenAiError {
    fn from(r: Refusal) -> Self {
        OpenAiError(Box::new(r))
    }
}

impl OpenAiError {
    pub(super) fn invalid(param: &str, message: impl Into<String>) -> Self {
        OpenAiError::from(Refusal {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            param: Some(param.to_owned()),
            message: message.into(),
            headers: HeaderMap::new(),
        })
    }

    /// The edge's or a service's refusal, as OpenAI's clients read it.
    pub(super) fn from_api(e: ApiError, locale: Locale) -> Self {
        let e = e.worded(locale);
        let (status, kind, code): (u16, &'static str, Option<&'static str>) =
            match (e.status.as_u16(), e.code.as_str()) {
                (401, _) => (401, "authentication_error", Some("invalid_api_key")),
                (_, "SUBSCRIPTION_REQUIRED") => {
                    (403, "permission_error", Some("model_not_allowed"))
                }
                (_, "EMAIL_NOT_VERIFIED") => (403, "permission_error", Some("email_not_verified")),
                (403, _) => (403, "permission_error", None),
                (404, _) => (404, "invalid_request_error", Some("model_not_found")),
                (_, "QUOTA_EXCEEDED" | "INSUFFICIENT_FUNDS") => {
                    (429, "insufficient_quota", Some("insufficient_quota"))
                }
                (429, _) => (429, "rate_limit_error", Some("rate_limit_exceeded")),
                (400 | 413 | 415 | 422, _) => (e.status.as_u16(), "invalid_request_error", None),
                (408, _) => (408, "invalid_request_error", Some("timeout")),
                (s, _) if s >= 500 => (s, "api_error", None),
                (s, _) => (s, "invalid_request_error", None),
            };
        let mut headers = e.headers.clone();
        if kind == "insufficient_quota" {
            // The SDKs retry every 429 unless told not to: waiting does not bring quota back.
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        OpenAiError::from(Refusal {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            kind,
            code,
            param: e.field.as_deref().map(param_of),
            message: e.message.clone(),
            headers,
        })
    }

    pub(super) fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }

    pub(super) fn into_response_with(self, request_id: &str) -> Response {
        let body = self.body();
        let parts = *self.0;
        let mut res = (parts.status, axum::Json(body)).into_response();
        res.headers_mut().extend(parts.headers);
        if let Ok(v) = HeaderValue::from_str(request_id) {
            res.headers_mut().insert(X_REQUEST_ID, v);
        }
        res
    }
}

/// The request field a service's refusal names, in the request's terms.
pub(super) fn param_of(field: &str) -> String {
    match field {
        "topic" => "messages".to_owned(),
        "max_tokens" => "max_tokens".to_owned(),
        "locale" => "metadata.locale".to_owned(),
        f if f.starts_with("params") => f.replacen("params", "metadata", 1),
        f => f.to_owned(),
    }
}
