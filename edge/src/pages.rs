//! The pages our emails link to — `/verify-email`, `/reset-password`, `/confirm-email` — until
//! the web console serves them, so a link is never a 404. A `GET` only shows a form (mail
//! scanners open links; nothing may happen then); its `POST` goes through the edge's own
//! pipeline as the JSON call of the same step (rate limits, the identity assertion, the same
//! auth RPC), and the answer is a page in the reader's language. No script: the policy allows
//! none, and the token never leaves in a `Referer`.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Form, Router,
    body::Body,
    extract::{Query, State},
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header, request::Parts};
use serde_json::{Value, json};
use skillup_kit::{
    fluent_args,
    i18n::{FluentArgs, Locale},
};

use crate::{Inner, pipeline};

skillup_kit::catalogue!();

/// One of the steps a link leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Verify,
    Reset,
    Confirm,
}

impl Step {
    fn of(path: &str) -> Option<Self> {
        match path {
            "/verify-email" => Some(Step::Verify),
            "/reset-password" => Some(Step::Reset),
            "/confirm-email" => Some(Step::Confirm),
            _ => None,
        }
    }

    /// The message group of its texts.
    fn key(self) -> &'static str {
        match self {
            Step::Verify => "verify",
            Step::Reset => "reset",
            Step::Confirm => "confirm",
        }
    }

    /// The JSON route that does it.
    fn api(self) -> &'static str {
        match self {
            Step::Verify => "/api/auth/verify-email",
            Step::Reset => "/api/auth/password/reset/confirm",
            Step::Confirm => "/api/auth/me/email/confirm",
        }
    }
}

/// The three pages.
pub(crate) fn routes() -> Router<Arc<Inner>> {
    Router::new()
        .route("/verify-email", get(show).post(submit))
        .route("/reset-password", get(show).post(submit))
        .route("/confirm-email", get(show).post(submit))
}

/// A token as we mint them (base64url, 43 characters; at most 128 accepted): anything else is
/// never put on a page.
fn token_of(fields: &HashMap<String, String>) -> Option<&str> {
    fields.get("token").map(String::as_str).filter(|t| {
        (1..=128).contains(&t.len())
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn locale(headers: &HeaderMap) -> Locale {
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(Locale::negotiate)
        .unwrap_or_default()
}

async fn show(parts: Parts, Query(q): Query<HashMap<String, String>>) -> Response {
    let l = locale(&parts.headers);
    let Some(step) = Step::of(parts.uri.path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match token_of(&q) {
        Some(token) => page(StatusCode::OK, l, step, &form(l, step, token, None)),
        None => notice(StatusCode::BAD_REQUEST, l, step, &text(l, "link-invalid", None)),
    }
}

async fn submit(
    State(inner): State<Arc<Inner>>,
    parts: Parts,
    Form(fields): Form<HashMap<String, String>>,
) -> Response {
    let l = locale(&parts.headers);
    let Some(step) = Step::of(parts.uri.path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(token) = token_of(&fields) else {
        return notice(StatusCode::BAD_REQUEST, l, step, &text(l, "link-invalid", None));
    };
    let body = match step {
        Step::Reset => {
            let password = fields.get("password").map(String::as_str).unwrap_or_default();
            if fields.get("repeat").map(String::as_str) != Some(password) {
                let error = text(l, "reset.mismatch", None);
                return page(StatusCode::BAD_REQUEST, l, step, &form(l, step, token, Some(&error)));
            }
            json!({"token": token, "new_password": password})
        }
        Step::Verify | Step::Confirm => json!({"token": token}),
    };
    let (status, answer) = call(&inner, &parts, step.api(), &body).await;
    let error = answer["error"].clone();
    match status.as_u16() {
        200..=299 => {
            let args = fluent_args![("email", answer["email"].as_str().unwrap_or_default())];
            notice(StatusCode::OK, l, step, &text(l, &format!("{}.done", step.key()), Some(&args)))
        }
        400 if error["field"] == "new_password" => {
            // The password rule, as auth words it.
            let why = error["message"].as_str().unwrap_or_default().to_owned();
            page(StatusCode::BAD_REQUEST, l, step, &form(l, step, token, Some(&why)))
        }
        400 | 401 | 404 => notice(status, l, step, &text(l, "link-invalid", None)),
        409 => notice(status, l, step, &text(l, "address-taken", None)),
        429 => notice(status, l, step, &text(l, "too-many", None)),
        _ => notice(status, l, step, &text(l, "try-later", None)),
    }
}

/// The step's JSON call, through the whole pipeline as if the browser had made it.
async fn call(inner: &Arc<Inner>, parts: &Parts, path: &str, body: &Value) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a valid request");
    for name in [
        header::ACCEPT_LANGUAGE,
        header::USER_AGENT,
        http::HeaderName::from_static("x-forwarded-for"),
        http::HeaderName::from_static("x-request-id"),
    ] {
        if let Some(v) = parts.headers.get(&name) {
            req.headers_mut().insert(name, v.clone());
        }
    }
    *req.extensions_mut() = parts.extensions.clone();
    let res = pipeline::dispatch(State(inner.clone()), req).await;
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 64 * 1024).await.unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Message `key` in `l`, if the edge has one.
pub(crate) fn word(l: Locale, key: &str, args: &FluentArgs<'_>) -> Option<String> {
    MESSAGES.has(key).then(|| MESSAGES.text(l, key, Some(args)))
}

fn text(l: Locale, key: &str, args: Option<&FluentArgs<'_>>) -> String {
    MESSAGES.text(l, key, args)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let _ = pulldown_cmark_escape::escape_html(&mut out, s);
    out
}

/// The step's form: the token (hidden), the password twice for a reset.
fn form(l: Locale, step: Step, token: &str, error: Option<&str>) -> String {
    let key = step.key();
    let mut html = format!("<p>{}</p>\n", escape(&text(l, &format!("{key}.lead"), None)));
    if let Some(e) = error {
        html.push_str(&format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(e)));
    }
    html.push_str(&format!(
        "<form method=\"post\">\n<input type=\"hidden\" name=\"token\" value=\"{}\">\n",
        escape(token)
    ));
    if step == Step::Reset {
        for (name, label) in [("password", "reset.password"), ("repeat", "reset.repeat")] {
            html.push_str(&format!(
                "<label>{}<input type=\"password\" name=\"{name}\" autocomplete=\"new-password\" required minlength=\"8\" maxlength=\"72\"></label>\n",
                escape(&text(l, label, None))
            ));
        }
    }
    html.push_str(&format!(
        "<button type=\"submit\">{}</button>\n</form>\n",
        escape(&text(l, &format!("{key}.button"), None))
    ));
    html
}

/// A page that only tells something, with a way home.
fn notice(status: StatusCode, l: Locale, step: Step, message: &str) -> Response {
    let body = format!(
        "<p>{}</p>\n<p><a href=\"/\">{}</a></p>\n",
        escape(message),
        escape(&text(l, "home", None))
    );
    page(status, l, step, &body)
}

fn page(status: StatusCode, l: Locale, step: Step, body: &str) -> Response {
    let title = escape(&text(l, &format!("{}.title", step.key()), None));
    let html = format!(
        "<!doctype html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{title} · SkillUp</title>\n<style>\
         :root{{color-scheme:light dark}}\
         body{{font:1rem/1.5 system-ui,sans-serif;max-width:28rem;margin:12vh auto;padding:0 1.25rem}}\
         h1{{font-size:1.5rem}}label{{display:block;margin:.75rem 0}}\
         input{{display:block;width:100%;box-sizing:border-box;margin-top:.25rem;padding:.5rem;font:inherit}}\
         button{{margin-top:1rem;padding:.6rem 1.2rem;font:inherit;cursor:pointer}}\
         .error{{color:#b3261e}}\
         </style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}</main>\n</body>\n</html>\n",
        lang = l.tag(),
    );
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    // The token is in this page's address: never sent on to another site.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_say_the_same_in_english_and_russian() {
        assert_eq!(skillup_kit::i18n::parity(&SOURCES), Vec::<String>::new());
    }

    #[test]
    fn only_a_token_as_we_mint_them_reaches_a_page() {
        let f = |t: &str| HashMap::from([("token".to_owned(), t.to_owned())]);
        assert!(token_of(&f("abcDEF012-_")).is_some());
        assert!(token_of(&f("\"><script>")).is_none());
        assert!(token_of(&f("")).is_none());
        assert!(token_of(&f(&"a".repeat(129))).is_none());
        assert!(token_of(&HashMap::new()).is_none());
    }

    #[test]
    fn a_form_escapes_what_it_shows() {
        let html = form(Locale::Ru, Step::Reset, "tok", Some("<b>weak</b>"));
        assert!(html.contains("&lt;b&gt;weak&lt;/b&gt;"), "{html}");
        assert!(html.contains("name=\"repeat\""), "{html}");
        assert!(html.contains("Новый пароль"), "{html}");
    }
}
