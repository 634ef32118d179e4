//! A YooKassa stand-in (API v3): `POST /v3/payments` (Basic auth shop id : secret key, an
//! `Idempotence-Key` required and honoured, the body checked: amount as a decimal string,
//! `capture`, a `redirect` confirmation, a receipt's customer and items when sent),
//! `GET /v3/payments/{id}`, and the notifications it sends (`payment.succeeded`,
//! `payment.canceled`), which carry the payment object but no signature.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{Faults, Keys, Running, Seen, remember, seen, serve};

/// YooKassa's notification events.
pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
pub const PAYMENT_CANCELED: &str = "payment.canceled";
pub const REFUND_SUCCEEDED: &str = "refund.succeeded";

pub struct YooKassa {
    pub shop_id: String,
    pub secret_key: String,
    payments: Mutex<HashMap<String, Value>>,
    refunds: Mutex<HashMap<String, Value>>,
    /// The status new refunds get (`succeeded`, or `pending` to finish them later).
    pub refund_status: Mutex<String>,
    keys: Keys,
    pub faults: Faults,
    base_url: Mutex<String>,
    /// Where the hosted page sends its notifications (the platform's webhook route), when set.
    pub webhook_url: Mutex<Option<String>>,
}

pub struct YooKassaStandIn {
    pub state: Arc<YooKassa>,
    pub server: Running,
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    let body = json!({"type": "error", "id": uuid::Uuid::new_v4().to_string(), "code": code, "description": description});
    (status, Json(body)).into_response()
}

impl YooKassaStandIn {
    pub async fn start(shop_id: &str, secret_key: &str) -> Self {
        let state = Arc::new(YooKassa {
            shop_id: shop_id.to_owned(),
            secret_key: secret_key.to_owned(),
            payments: Mutex::default(),
            refunds: Mutex::default(),
            refund_status: Mutex::new("succeeded".into()),
            keys: Keys::default(),
            faults: Faults::default(),
            base_url: Mutex::default(),
            webhook_url: Mutex::default(),
        });
        let router = Router::new()
            .route("/checkout/{id}", get(page).post(page_paid))
            .route("/v3/payments", post(create))
            .route("/v3/payments/{id}", get(fetch))
            .route("/v3/refunds", post(refund))
            .route("/v3/refunds/{id}", get(fetch_refund))
            .with_state(state.clone());
        let server = serve(router).await;
        *state.base_url.lock().unwrap() = server.base_url.clone();
        Self { state, server }
    }

    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }

    pub fn payment(&self, id: &str) -> Option<Value> {
        self.state.payments.lock().unwrap().get(id).cloned()
    }

    pub fn payments(&self) -> Vec<Value> {
        self.state.payments.lock().unwrap().values().cloned().collect()
    }

    /// Sends the hosted page's notifications to `url` (the platform's webhook route).
    pub fn deliver_to(&self, url: &str) {
        *self.state.webhook_url.lock().unwrap() = Some(url.to_owned());
    }

    /// The payer pays: the payment succeeds; the notification YooKassa would send.
    pub fn pay(&self, id: &str) -> Vec<u8> {
        self.set(id, |p| {
            p["status"] = json!("succeeded");
            p["paid"] = json!(true);
        });
        self.notification(PAYMENT_SUCCEEDED, id)
    }

    /// The payment is canceled (`reason` as YooKassa's `cancellation_details.reason`).
    pub fn cancel(&self, id: &str, reason: &str) -> Vec<u8> {
        self.set(id, |p| {
            p["status"] = json!("canceled");
            p["cancellation_details"] = json!({"party": "payment_network", "reason": reason});
        });
        self.notification(PAYMENT_CANCELED, id)
    }

    pub fn refunds(&self) -> Vec<Value> {
        self.state.refunds.lock().unwrap().values().cloned().collect()
    }

    /// A pending refund ends (`succeeded` or `canceled`); the notification YooKassa sends.
    pub fn finish_refund(&self, id: &str, status: &str) -> Vec<u8> {
        let refund = {
            let mut all = self.state.refunds.lock().unwrap();
            let r = all.get_mut(id).expect("a refund of this stand-in");
            r["status"] = json!(status);
            if status == "canceled" {
                r["cancellation_details"] =
                    json!({"party": "yoo_money", "reason": "rejected_by_payee"});
            }
            r.clone()
        };
        let event = if status == "succeeded" { REFUND_SUCCEEDED } else { "refund.canceled" };
        json!({"type": "notification", "event": event, "object": refund}).to_string().into_bytes()
    }

    /// A notification of `event` carrying the payment as it is now.
    pub fn notification(&self, event: &str, id: &str) -> Vec<u8> {
        let object = self.payment(id).unwrap_or_else(|| json!({"id": id}));
        json!({"type": "notification", "event": event, "object": object}).to_string().into_bytes()
    }

    fn set(&self, id: &str, f: impl FnOnce(&mut Value)) {
        let mut all = self.state.payments.lock().unwrap();
        f(all.get_mut(id).expect("a payment of this stand-in"));
    }
}

fn authorized(y: &YooKassa, headers: &HeaderMap) -> bool {
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", y.shop_id, y.secret_key));
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Basic {expected}"))
}

fn decimal_ok(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let (w, f) = s.split_once('.').unwrap_or((s, ""));
        !w.is_empty()
            && w.bytes().all(|b| b.is_ascii_digit())
            && f.len() <= 2
            && f.bytes().all(|b| b.is_ascii_digit())
    })
}

async fn create(
    State(y): State<Arc<YooKassa>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if y.faults.fail_now() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "Internal server error (stand-in)",
        );
    }
    if !authorized(&y, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "Authentication by given credentials failed",
        );
    }
    let Some(key) = headers.get("idempotence-key").and_then(|v| v.to_str().ok()).map(str::to_owned)
    else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "Idempotence key is missing");
    };
    let fingerprint = body.to_string();
    match seen(&y.keys, &key, &fingerprint) {
        Seen::New => {}
        Seen::Replay(answer) => return Json(answer).into_response(),
        Seen::Conflict => {
            let why = "Idempotence key duplicated with another request";
            return error(StatusCode::BAD_REQUEST, "invalid_request", why);
        }
    }
    let amount = &body["amount"];
    let return_url = body["confirmation"]["return_url"].as_str().unwrap_or_default();
    if !decimal_ok(&amount["value"])
        || amount["currency"].as_str().is_none_or(|c| c.len() != 3)
        || body["confirmation"]["type"] != "redirect"
        || !return_url.starts_with("http")
    {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "Invalid request parameters");
    }
    if let Some(receipt) = body.get("receipt") {
        let items_ok = receipt["items"].as_array().is_some_and(|items| {
            !items.is_empty()
                && items.iter().all(|i| {
                    i["description"].is_string()
                        && decimal_ok(&i["amount"]["value"])
                        && i["vat_code"].is_u64()
                })
        });
        if receipt["customer"]["email"].as_str().is_none_or(str::is_empty) || !items_ok {
            return error(StatusCode::BAD_REQUEST, "invalid_request", "Receipt is invalid");
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let base = y.base_url.lock().unwrap().clone();
    let payment = json!({
        "id": id,
        "status": "pending",
        "paid": false,
        "amount": amount,
        "confirmation": {"type": "redirect", "return_url": return_url, "confirmation_url": format!("{base}/checkout/{id}")},
        "created_at": chrono::Utc::now().to_rfc3339(),
        "description": body["description"],
        "metadata": body["metadata"],
        "receipt": body.get("receipt"),
        "recipient": {"account_id": y.shop_id, "gateway_id": "1"},
        "refundable": false,
        "test": true,
    });
    y.payments.lock().unwrap().insert(id, payment.clone());
    remember(&y.keys, key, fingerprint, &payment);
    y.faults.maybe_stall().await;
    Json(payment).into_response()
}

async fn fetch(
    State(y): State<Arc<YooKassa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&y, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "Authentication by given credentials failed",
        );
    }
    match y.payments.lock().unwrap().get(&id) {
        Some(p) => Json(p.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "Payment doesn't exist or access denied"),
    }
}

async fn refund(
    State(y): State<Arc<YooKassa>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&y, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "Authentication by given credentials failed",
        );
    }
    let Some(key) =
        headers.get("idempotence-key").and_then(|v| v.to_str().ok()).map(|k| format!("refund:{k}"))
    else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "Idempotence key is missing");
    };
    let fingerprint = body.to_string();
    match seen(&y.keys, &key, &fingerprint) {
        Seen::New => {}
        Seen::Replay(answer) => return Json(answer).into_response(),
        Seen::Conflict => {
            let why = "Idempotence key duplicated with another request";
            return error(StatusCode::BAD_REQUEST, "invalid_request", why);
        }
    }
    let payment_id = body["payment_id"].as_str().unwrap_or_default().to_owned();
    let Some(payment) = y.payments.lock().unwrap().get(&payment_id).cloned() else {
        return error(StatusCode::NOT_FOUND, "not_found", "Payment doesn't exist or access denied");
    };
    if payment["status"] != "succeeded" || !decimal_ok(&body["amount"]["value"]) {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "Payment can't be refunded");
    }
    let cents = |v: &Value| {
        let s = v.as_str().unwrap_or("0");
        let (w, f) = s.split_once('.').unwrap_or((s, ""));
        w.parse::<i64>().unwrap_or(0) * 100 + format!("{f:0<2}").parse::<i64>().unwrap_or(0)
    };
    let paid = cents(&payment["amount"]["value"]);
    let asked = cents(&body["amount"]["value"]);
    let already: i64 = y
        .refunds
        .lock()
        .unwrap()
        .values()
        .filter(|r| r["payment_id"] == json!(payment_id) && r["status"] != "canceled")
        .map(|r| cents(&r["amount"]["value"]))
        .sum();
    if asked <= 0 || already + asked > paid {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Refund amount exceeds the payment amount",
        );
    }
    let id = uuid::Uuid::new_v4().to_string();
    let refund = json!({
        "id": id,
        "payment_id": payment_id,
        "status": y.refund_status.lock().unwrap().clone(),
        "amount": body["amount"],
        "created_at": chrono::Utc::now().to_rfc3339(),
    });
    y.refunds.lock().unwrap().insert(id, refund.clone());
    remember(&y.keys, key, fingerprint, &refund);
    Json(refund).into_response()
}

async fn fetch_refund(
    State(y): State<Arc<YooKassa>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&y, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "Authentication by given credentials failed",
        );
    }
    match y.refunds.lock().unwrap().get(&id) {
        Some(r) => Json(r.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "Refund doesn't exist"),
    }
}

/// The hosted page: what is paid, and a button.
async fn page(State(y): State<Arc<YooKassa>>, Path(id): Path<String>) -> Response {
    match y.payments.lock().unwrap().get(&id) {
        Some(p) => axum::response::Html(format!(
            "<!doctype html><title>YooKassa (stand-in)</title><form method=post>\
             <p>Оплатить {} {}</p><button>Оплатить</button></form>",
            p["amount"]["value"], p["amount"]["currency"]
        ))
        .into_response(),
        None => (StatusCode::NOT_FOUND, "no such payment").into_response(),
    }
}

/// The payer paid: the payment succeeds, the notification goes to the webhook URL (when set),
/// and the payer is sent back to `return_url`.
async fn page_paid(State(y): State<Arc<YooKassa>>, Path(id): Path<String>) -> Response {
    let stand_in = YooKassaStandIn { state: y.clone(), server: Running::detached() };
    let Some(payment) = stand_in.payment(&id) else {
        return (StatusCode::NOT_FOUND, "no such payment").into_response();
    };
    let body = stand_in.pay(&id);
    let target = y.webhook_url.lock().unwrap().clone();
    if let Some(url) = target {
        let sent = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        if !sent.is_ok_and(|r| r.status().is_success()) {
            return (StatusCode::BAD_GATEWAY, "the notification was not accepted").into_response();
        }
    }
    let back = payment["confirmation"]["return_url"].as_str().unwrap_or_default().to_owned();
    axum::response::Redirect::to(&back).into_response()
}
