//! A Stripe stand-in: `POST /v1/checkout/sessions` (form-encoded, Bearer secret key,
//! `Idempotency-Key` honoured as Stripe does: the same key and parameters replay the first
//! answer, other parameters are an `idempotency_error`), `GET /v1/checkout/sessions/{id}`, a
//! hosted page at `/pay/{id}`, and `checkout.session.*` events signed as Stripe signs them
//! (`Stripe-Signature: t=…,v1=HMAC-SHA256(secret, "t.body")`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use aws_lc_rs::hmac;
use axum::{
    Form, Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

use super::{Faults, Keys, Running, Seen, remember, seen, serve};

/// The stand-in's state.
pub struct Stripe {
    pub secret_key: String,
    pub webhook_secret: String,
    sessions: Mutex<HashMap<String, Value>>,
    refunds: Mutex<HashMap<String, Value>>,
    /// The status new refunds get (`succeeded`, or `pending` to finish them later).
    pub refund_status: Mutex<String>,
    keys: Keys,
    pub faults: Faults,
    base_url: Mutex<String>,
    /// Where the hosted page delivers its events (the platform's webhook route), when set.
    pub webhook_url: Mutex<Option<String>>,
}

/// A running Stripe stand-in.
pub struct StripeStandIn {
    pub state: Arc<Stripe>,
    pub server: Running,
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"type": kind, "message": message}}))).into_response()
}

impl StripeStandIn {
    pub async fn start(secret_key: &str, webhook_secret: &str) -> Self {
        let state = Arc::new(Stripe {
            secret_key: secret_key.to_owned(),
            webhook_secret: webhook_secret.to_owned(),
            sessions: Mutex::default(),
            refunds: Mutex::default(),
            refund_status: Mutex::new("succeeded".into()),
            keys: Keys::default(),
            faults: Faults::default(),
            base_url: Mutex::default(),
            webhook_url: Mutex::default(),
        });
        let router = Router::new()
            .route("/pay/{id}", get(page).post(page_paid))
            .route("/v1/checkout/sessions", post(create))
            .route("/v1/checkout/sessions/{id}", get(fetch))
            .route("/v1/refunds", post(refund))
            .route("/v1/refunds/{id}", get(fetch_refund))
            .with_state(state.clone());
        let server = serve(router).await;
        *state.base_url.lock().unwrap() = server.base_url.clone();
        Self { state, server }
    }

    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }

    /// A session as Stripe holds it now.
    pub fn session(&self, id: &str) -> Option<Value> {
        self.state.sessions.lock().unwrap().get(id).cloned()
    }

    /// Every session made.
    pub fn sessions(&self) -> Vec<Value> {
        self.state.sessions.lock().unwrap().values().cloned().collect()
    }

    /// Delivers the hosted page's events to `url` (the platform's webhook route).
    pub fn deliver_to(&self, url: &str) {
        *self.state.webhook_url.lock().unwrap() = Some(url.to_owned());
    }

    /// The person pays on the hosted page: the session completes, and the
    /// `checkout.session.completed` event Stripe would send is returned (body, signature
    /// header) for the test to deliver as it likes.
    pub fn pay(&self, id: &str) -> (Vec<u8>, String) {
        let session = {
            let mut all = self.state.sessions.lock().unwrap();
            let s = all.get_mut(id).expect("a session of this stand-in");
            s["status"] = json!("complete");
            s["payment_status"] = json!("paid");
            s["payment_intent"] = json!(format!("pi_{}", &id[3..]));
            s.clone()
        };
        self.event("checkout.session.completed", session)
    }

    /// The session expires unpaid; the `checkout.session.expired` event.
    pub fn expire(&self, id: &str) -> (Vec<u8>, String) {
        let session = {
            let mut all = self.state.sessions.lock().unwrap();
            let s = all.get_mut(id).expect("a session of this stand-in");
            s["status"] = json!("expired");
            s.clone()
        };
        self.event("checkout.session.expired", session)
    }

    /// Every refund made.
    pub fn refunds(&self) -> Vec<Value> {
        self.state.refunds.lock().unwrap().values().cloned().collect()
    }

    /// A pending refund ends (`succeeded` or `failed`); the `refund.updated` event.
    pub fn finish_refund(&self, id: &str, status: &str) -> (Vec<u8>, String) {
        let refund = {
            let mut all = self.state.refunds.lock().unwrap();
            let r = all.get_mut(id).expect("a refund of this stand-in");
            r["status"] = json!(status);
            if status == "failed" {
                r["failure_reason"] = json!("expired_or_canceled_card");
            }
            r.clone()
        };
        self.event("refund.updated", refund)
    }

    /// An event of `kind` about `object`, signed now with the webhook secret.
    pub fn event(&self, kind: &str, object: Value) -> (Vec<u8>, String) {
        let now = chrono::Utc::now().timestamp();
        let body = json!({
            "id": format!("evt_{}", uuid::Uuid::new_v4().simple()),
            "object": "event",
            "api_version": "2024-06-20",
            "created": now,
            "livemode": false,
            "type": kind,
            "data": {"object": object},
        })
        .to_string()
        .into_bytes();
        let header = sign(&self.state.webhook_secret, now, &body);
        (body, header)
    }
}

/// A `Stripe-Signature` header for `body` at time `t`, as Stripe makes it.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    let v1: String = hmac::sign(&key, &msg).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={v1}")
}

fn idempotency_error() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "idempotency_error",
        "Keys for idempotent requests can only be used with the same parameters they were first used with.",
    )
}

fn authorized(s: &Stripe, headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {}", s.secret_key))
}

async fn create(
    State(s): State<Arc<Stripe>>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if s.faults.fail_now() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "an error occurred (stand-in)",
        );
    }
    if !authorized(&s, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Invalid API Key provided",
        );
    }
    let params: BTreeMap<String, String> = form.into_iter().collect();
    let fingerprint = serde_json::to_string(&params).unwrap_or_default();
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(k) = &key {
        match seen(&s.keys, k, &fingerprint) {
            Seen::New => {}
            Seen::Replay(answer) => return Json(answer).into_response(),
            Seen::Conflict => return idempotency_error(),
        }
    }
    let need = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
    let (Some(mode), Some(amount), Some(currency), Some(success)) = (
        need("mode"),
        need("line_items[0][price_data][unit_amount]"),
        need("line_items[0][price_data][currency]"),
        need("success_url"),
    ) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "Missing required param.");
    };
    let Ok(amount) = amount.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Invalid integer: unit_amount",
        );
    };
    if mode != "payment"
        || currency != currency.to_ascii_lowercase()
        || !success.starts_with("http")
    {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "Invalid parameters.");
    }
    let id = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
    let base = s.base_url.lock().unwrap().clone();
    let session = json!({
        "id": id,
        "object": "checkout.session",
        "mode": "payment",
        "status": "open",
        "payment_status": "unpaid",
        "amount_total": amount,
        "currency": currency,
        "client_reference_id": params.get("client_reference_id"),
        "metadata": {"payment_id": params.get("metadata[payment_id]")},
        "payment_intent": null,
        "success_url": success,
        "cancel_url": params.get("cancel_url"),
        "url": format!("{base}/pay/{id}"),
    });
    s.sessions.lock().unwrap().insert(id, session.clone());
    if let Some(k) = key {
        remember(&s.keys, k, fingerprint, &session);
    }
    s.faults.maybe_stall().await;
    Json(session).into_response()
}

async fn fetch(
    State(s): State<Arc<Stripe>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&s, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Invalid API Key provided",
        );
    }
    match s.sessions.lock().unwrap().get(&id) {
        Some(session) => Json(session.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "invalid_request_error", "No such checkout.session"),
    }
}

async fn refund(
    State(s): State<Arc<Stripe>>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !authorized(&s, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Invalid API Key provided",
        );
    }
    let params: BTreeMap<String, String> = form.into_iter().collect();
    let fingerprint = serde_json::to_string(&params).unwrap_or_default();
    let key =
        headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(|k| format!("refund:{k}"));
    if let Some(k) = &key {
        match seen(&s.keys, k, &fingerprint) {
            Seen::New => {}
            Seen::Replay(answer) => return Json(answer).into_response(),
            Seen::Conflict => return idempotency_error(),
        }
    }
    let intent = params.get("payment_intent").cloned().unwrap_or_default();
    let paid = s
        .sessions
        .lock()
        .unwrap()
        .values()
        .find(|v| v["payment_intent"] == json!(intent) && v["payment_status"] == "paid")
        .cloned();
    let Some(session) = paid else {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "No such payment_intent");
    };
    let total = session["amount_total"].as_i64().unwrap_or(0);
    let amount = params.get("amount").and_then(|a| a.parse::<i64>().ok()).unwrap_or(total);
    let already: i64 = s
        .refunds
        .lock()
        .unwrap()
        .values()
        .filter(|r| r["payment_intent"] == json!(intent) && r["status"] != "failed")
        .map(|r| r["amount"].as_i64().unwrap_or(0))
        .sum();
    if amount <= 0 || already + amount > total {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Refund amount is greater than unrefunded amount on charge",
        );
    }
    let id = format!("re_{}", uuid::Uuid::new_v4().simple());
    let refund = json!({
        "id": id,
        "object": "refund",
        "amount": amount,
        "currency": session["currency"],
        "payment_intent": intent,
        "status": s.refund_status.lock().unwrap().clone(),
        "metadata": {"refund_id": params.get("metadata[refund_id]")},
    });
    s.refunds.lock().unwrap().insert(id, refund.clone());
    if let Some(k) = key {
        remember(&s.keys, k, fingerprint, &refund);
    }
    Json(refund).into_response()
}

async fn fetch_refund(
    State(s): State<Arc<Stripe>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&s, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Invalid API Key provided",
        );
    }
    match s.refunds.lock().unwrap().get(&id) {
        Some(r) => Json(r.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "invalid_request_error", "No such refund"),
    }
}

/// The hosted page: what is paid, and a button.
async fn page(State(s): State<Arc<Stripe>>, Path(id): Path<String>) -> Response {
    match s.sessions.lock().unwrap().get(&id) {
        Some(session) => axum::response::Html(format!(
            "<!doctype html><title>Stripe Checkout (stand-in)</title><form method=post>\
             <p>Pay {} {}</p><button>Pay</button></form>",
            session["amount_total"], session["currency"]
        ))
        .into_response(),
        None => (StatusCode::NOT_FOUND, "no such session").into_response(),
    }
}

/// The person paid: the session completes, the signed `checkout.session.completed` event goes
/// to the webhook URL (when set), and the person is sent back to `success_url`.
async fn page_paid(State(s): State<Arc<Stripe>>, Path(id): Path<String>) -> Response {
    let stand_in = StripeStandIn { state: s.clone(), server: Running::detached() };
    if stand_in.session(&id).is_none() {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    }
    let (body, signature) = stand_in.pay(&id);
    let target = s.webhook_url.lock().unwrap().clone();
    if let Some(url) = target {
        let sent = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json; charset=utf-8")
            .header("stripe-signature", signature)
            .body(body)
            .send()
            .await;
        if !sent.is_ok_and(|r| r.status().is_success()) {
            return (StatusCode::BAD_GATEWAY, "the webhook was not accepted").into_response();
        }
    }
    let back = stand_in.session(&id).and_then(|v| v["success_url"].as_str().map(str::to_owned));
    axum::response::Redirect::to(&back.unwrap_or_default()).into_response()
}
