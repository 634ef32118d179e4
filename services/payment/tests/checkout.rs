//! Paying in on a provider's hosted page, against local stand-ins of Stripe and YooKassa that
//! speak their wire formats (testkit's `providers`), on real PostgreSQL and on SQLite: a
//! payment credits its wallet once whatever the deliveries, forged notifications credit
//! nothing, provider failures are retried with the same key, reconciliation settles what no
//! notification did. The ledger's audit holds after every test.

use std::{sync::Arc, time::Duration};

use skillup_payment::{
    Checkouts, Ledger, PaymentConfig, SandboxProvider,
    checkout::Request,
    config::ProviderKind,
    domain::{CheckoutStatus, Currency, IdempotencyKey},
    error::PaymentError,
    providers::{http::Headers, sandbox::Outcome},
};
use skillup_testkit::{
    Kind, TestInfra,
    providers::{
        stripe::StripeStandIn,
        yookassa::{self, YooKassaStandIn},
    },
};
use uuid::Uuid;

#[path = "checkout/refunds.rs"]
mod refunds;

const PUBLIC: &str = "https://skillup.test";
const WHSEC: &str = "whsec_test_secret";

struct Setup {
    checkouts: Checkouts,
    ledger: Ledger,
    config: PaymentConfig,
    _t: TestInfra,
}

impl Setup {
    async fn new(kind: Kind, config: PaymentConfig) -> Self {
        let t = kind.infra().await;
        skillup_payment::migrate(&t.infra.db).await.unwrap();
        let ledger =
            Ledger::new(t.infra.db.clone(), t.infra.bus.clone(), Arc::new(SandboxProvider));
        let checkouts = skillup_payment::checkouts(&ledger, &config, PUBLIC).unwrap();
        Self { checkouts, ledger, config, _t: t }
    }

    /// Another replica of the service on the same database.
    fn replica(&self) -> Checkouts {
        skillup_payment::checkouts(&self.ledger, &self.config, PUBLIC).unwrap()
    }

    async fn balance(&self, user: Uuid) -> i64 {
        let rub = Currency::parse("c", &self.config.currency).unwrap();
        self.ledger.balance(user, Some(rub)).await.unwrap().available_minor
    }

    async fn audit(&self) {
        assert_eq!(self.ledger.audit().await.unwrap(), Vec::<String>::new());
    }
}

fn stripe_config(s: &StripeStandIn) -> PaymentConfig {
    let mut c = PaymentConfig {
        provider: ProviderKind::Stripe,
        request_timeout_ms: 2_000,
        ..Default::default()
    };
    c.stripe.api_base = s.base_url().to_owned();
    c.stripe.secret_key = Some(s.state.secret_key.clone().into());
    c.stripe.webhook_secrets = Some(format!("whsec_old_one,{WHSEC}").into());
    c
}

fn yookassa_config(y: &YooKassaStandIn) -> PaymentConfig {
    let mut c = PaymentConfig {
        provider: ProviderKind::Yookassa,
        currency: "RUB".into(),
        request_timeout_ms: 2_000,
        ..Default::default()
    };
    c.yookassa.api_base = y.base_url().to_owned();
    c.yookassa.shop_id = y.state.shop_id.clone();
    c.yookassa.secret_key = Some(y.state.secret_key.clone().into());
    c.yookassa.receipt = true;
    c
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(k).unwrap()
}

fn pay_in(amount: i64) -> Request<'static> {
    Request { amount_minor: amount, ..Default::default() }
}

fn stripe_headers(signature: &str) -> Headers {
    Headers::new([("Stripe-Signature", signature)])
}

skillup_testkit::both_adapters!(
    a_stripe_payment_credits_once_whatever_the_deliveries,
    the_sandbox_runs_the_same_flow,
);

async fn a_stripe_payment_credits_once_whatever_the_deliveries(kind: Kind) {
    let stripe = StripeStandIn::start("sk_test_standin", WHSEC).await;
    let s = Setup::new(kind, stripe_config(&stripe)).await;
    let user = Uuid::now_v7();
    let (c, new) = s.checkouts.create(user, pay_in(1_500), key("co-1")).await.unwrap();
    assert!(new);
    assert_eq!(c.status, CheckoutStatus::Pending);
    let session_id = c.provider_payment_id.clone().expect("the session's id");
    assert_eq!(c.confirmation_url, format!("{}/pay/{session_id}", stripe.base_url()));
    let session = stripe.session(&session_id).unwrap();
    assert_eq!(session["amount_total"], 1_500);
    assert_eq!(session["currency"], "rub");
    assert_eq!(session["client_reference_id"], c.id.to_string());
    assert_eq!(session["success_url"], format!("{PUBLIC}/billing?checkout={}", c.id));

    // Paid: the event delivered three times in a row, then twice at once.
    let (body, sig) = stripe.pay(&session_id);
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(s.checkouts.notify("stripe", &stripe_headers(&sig), &body).await.unwrap());
    }
    let replica = s.replica();
    let headers = stripe_headers(&sig);
    let (a, b) = tokio::join!(
        s.checkouts.notify("stripe", &headers, &body),
        replica.notify("stripe", &headers, &body),
    );
    outcomes.extend([a.unwrap(), b.unwrap()]);
    assert_eq!(outcomes.iter().filter(|o| **o == "credited").count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == "already-credited").count(), 4, "{outcomes:?}");
    assert_eq!(s.balance(user).await, 1_500);
    let done = s.checkouts.get(user, c.id).await.unwrap();
    assert_eq!(done.status, CheckoutStatus::Succeeded);
    assert!(done.transaction_id.is_some());
    // An expiry event arriving after the payment changes nothing.
    let (late, late_sig) = stripe.event(
        "checkout.session.expired",
        serde_json::json!({
        "id": session_id, "status": "expired", "payment_status": "unpaid",
        "client_reference_id": c.id.to_string(), "amount_total": 1_500, "currency": "rub"}),
    );
    s.checkouts.notify("stripe", &stripe_headers(&late_sig), &late).await.unwrap();
    assert_eq!(s.checkouts.get(user, c.id).await.unwrap().status, CheckoutStatus::Succeeded);
    // Someone else's checkout is not found.
    assert!(matches!(s.checkouts.get(Uuid::now_v7(), c.id).await, Err(PaymentError::NotFound(_))));
    s.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stale_stripe_signatures_credit_nothing() {
    let stripe = StripeStandIn::start("sk_test_standin", WHSEC).await;
    let s = Setup::new(Kind::Real, stripe_config(&stripe)).await;
    let user = Uuid::now_v7();
    let (c, _) = s.checkouts.create(user, pay_in(700), key("co-forged")).await.unwrap();
    let session_id = c.provider_payment_id.clone().unwrap();
    let (body, good) = stripe.pay(&session_id);
    let now = chrono::Utc::now().timestamp();
    let forged = [
        // Another secret.
        skillup_testkit::providers::stripe::sign("whsec_attacker", now, &body),
        // Ten minutes old.
        skillup_testkit::providers::stripe::sign(WHSEC, now - 600, &body),
        // No signature at all.
        String::new(),
    ];
    for sig in &forged {
        let err = s.checkouts.notify("stripe", &stripe_headers(sig), &body).await.unwrap_err();
        assert!(matches!(err, PaymentError::Invalid("body", _)), "{err:?}");
    }
    // A genuine signature over another body.
    let mut tampered = body.clone();
    let at = tampered.windows(4).position(|w| w == b"1500" || w == b"\"700").unwrap_or(0);
    tampered[at + 1] = b'9';
    assert!(s.checkouts.notify("stripe", &stripe_headers(&good), &tampered).await.is_err());
    // Not this deployment's provider.
    let err = s.checkouts.notify("yookassa", &Headers::default(), &body).await.unwrap_err();
    assert!(matches!(err, PaymentError::NotFound(_)), "{err:?}");
    assert_eq!(s.balance(user).await, 0);
    assert_eq!(s.checkouts.get(user, c.id).await.unwrap().status, CheckoutStatus::Pending);
    // The genuine one still credits.
    assert_eq!(
        s.checkouts.notify("stripe", &stripe_headers(&good), &body).await.unwrap(),
        "credited"
    );
    assert_eq!(s.balance(user).await, 700);
    s.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_before_the_create_answer_credits_once() {
    let stripe = StripeStandIn::start("sk_test_standin", WHSEC).await;
    let s = Setup::new(Kind::Real, stripe_config(&stripe)).await;
    let user = Uuid::now_v7();
    // The session is made, then Stripe's answer takes a second.
    stripe.state.faults.stall_ms.store(1_000, std::sync::atomic::Ordering::SeqCst);
    stripe.state.faults.stall_creates.store(1, std::sync::atomic::Ordering::SeqCst);
    let creating = {
        let checkouts = s.checkouts.clone();
        tokio::spawn(async move { checkouts.create(user, pay_in(2_000), key("co-early")).await })
    };
    let session_id = loop {
        if let Some(s) = stripe.sessions().first() {
            break s["id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (body, sig) = stripe.pay(&session_id);
    assert_eq!(
        s.checkouts.notify("stripe", &stripe_headers(&sig), &body).await.unwrap(),
        "credited"
    );
    let (c, _) = creating.await.unwrap().unwrap();
    assert_eq!(c.status, CheckoutStatus::Succeeded, "the create's answer did not undo the payment");
    assert_eq!(c.provider_payment_id.as_deref(), Some(session_id.as_str()));
    assert_eq!(
        s.checkouts.notify("stripe", &stripe_headers(&sig), &body).await.unwrap(),
        "already-credited"
    );
    assert_eq!(s.balance(user).await, 2_000);
    s.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_are_retried_with_the_same_key_into_one_payment() {
    let stripe = StripeStandIn::start("sk_test_standin", WHSEC).await;
    let mut config = stripe_config(&stripe);
    config.request_timeout_ms = 300;
    let s = Setup::new(Kind::Real, config).await;
    let user = Uuid::now_v7();
    let faults = &stripe.state.faults;
    use std::sync::atomic::Ordering::SeqCst;
    // Two 500s, then a success: one session.
    faults.fail_creates.store(2, SeqCst);
    let (c, _) = s.checkouts.create(user, pay_in(100), key("co-500")).await.unwrap();
    assert_eq!(faults.creates_seen.load(SeqCst), 3);
    assert_eq!(stripe.sessions().len(), 1);
    assert!(c.provider_payment_id.is_some());
    // A timeout after Stripe made the session: the retry gets the same session.
    faults.stall_ms.store(1_000, SeqCst);
    faults.stall_creates.store(1, SeqCst);
    let (c2, _) = s.checkouts.create(user, pay_in(200), key("co-timeout")).await.unwrap();
    assert_eq!(stripe.sessions().len(), 2);
    assert_eq!(
        stripe.session(c2.provider_payment_id.as_deref().unwrap()).unwrap()["amount_total"],
        200
    );
    // Down for good: the caller hears it is unavailable; the same key later finishes the job.
    faults.fail_creates.store(100, SeqCst);
    let err = s.checkouts.create(user, pay_in(300), key("co-down")).await.unwrap_err();
    assert!(matches!(err, PaymentError::Unavailable(_)), "{err:?}");
    faults.fail_creates.store(0, SeqCst);
    let (c3, new) = s.checkouts.create(user, pay_in(300), key("co-down")).await.unwrap();
    assert!(!new);
    assert!(c3.provider_payment_id.is_some());
    assert_eq!(stripe.sessions().len(), 3);
    // The same key with another request is refused; a wrong secret key is a refusal.
    let err = s.checkouts.create(user, pay_in(301), key("co-down")).await.unwrap_err();
    assert!(matches!(err, PaymentError::KeyReused), "{err:?}");
    s.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yookassa_notification_is_believed_only_after_fetching_the_payment_back() {
    let yoo = YooKassaStandIn::start("123456", "test_secret").await;
    let s = Setup::new(Kind::Real, yookassa_config(&yoo)).await;
    let user = Uuid::now_v7();
    // Receipts are on: the email is required.
    let err = s.checkouts.create(user, pay_in(15_000), key("yk-0")).await.unwrap_err();
    assert!(matches!(err, PaymentError::Invalid("receipt_email", _)), "{err:?}");
    let asked =
        Request { amount_minor: 15_000, receipt_email: "payer@example.com", ..Default::default() };
    let (c, _) = s.checkouts.create(user, asked, key("yk-1")).await.unwrap();
    let id = c.provider_payment_id.clone().unwrap();
    let p = yoo.payment(&id).unwrap();
    assert_eq!(p["amount"]["value"], "150.00");
    assert_eq!(p["amount"]["currency"], "RUB");
    assert_eq!(p["metadata"]["payment_id"], c.id.to_string());
    assert_eq!(p["receipt"]["customer"]["email"], "payer@example.com");
    assert_eq!(c.confirmation_url, format!("{}/checkout/{id}", yoo.base_url()));
    // A notification that says "succeeded" while YooKassa says pending: nothing credited.
    let mut forged: serde_json::Value =
        serde_json::from_slice(&yoo.notification(yookassa::PAYMENT_SUCCEEDED, &id)).unwrap();
    forged["object"]["status"] = "succeeded".into();
    forged["object"]["paid"] = true.into();
    let outcome = s
        .checkouts
        .notify("yookassa", &Headers::default(), forged.to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(outcome, "pending");
    assert_eq!(s.balance(user).await, 0);
    // One naming a payment YooKassa does not have is refused.
    let unknown = serde_json::json!({"type": "notification", "event": yookassa::PAYMENT_SUCCEEDED, "object": {"id": "2f00-unknown"}});
    assert!(
        s.checkouts
            .notify("yookassa", &Headers::default(), unknown.to_string().as_bytes())
            .await
            .is_err()
    );
    // Paid for real: credited once.
    let body = yoo.pay(&id);
    assert_eq!(
        s.checkouts.notify("yookassa", &Headers::default(), &body).await.unwrap(),
        "credited"
    );
    assert_eq!(
        s.checkouts.notify("yookassa", &Headers::default(), &body).await.unwrap(),
        "already-credited"
    );
    assert_eq!(s.balance(user).await, 15_000);
    // Another checkout, canceled by the bank.
    let asked =
        Request { amount_minor: 500, receipt_email: "payer@example.com", ..Default::default() };
    let (c2, _) = s.checkouts.create(user, asked, key("yk-2")).await.unwrap();
    let body = yoo.cancel(c2.provider_payment_id.as_deref().unwrap(), "insufficient_funds");
    assert_eq!(
        s.checkouts.notify("yookassa", &Headers::default(), &body).await.unwrap(),
        "canceled"
    );
    let c2 = s.checkouts.get(user, c2.id).await.unwrap();
    assert_eq!(
        (c2.status, c2.failure_reason.as_str()),
        (CheckoutStatus::Canceled, "insufficient_funds")
    );
    assert_eq!(s.balance(user).await, 15_000);
    s.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_settles_lost_webhooks_reopens_failed_creates_and_expires_the_rest() {
    let stripe = StripeStandIn::start("sk_test_standin", WHSEC).await;
    let s = Setup::new(Kind::Real, stripe_config(&stripe)).await;
    let user = Uuid::now_v7();
    let (paid, _) = s.checkouts.create(user, pay_in(900), key("rc-paid")).await.unwrap();
    let _ = stripe.pay(paid.provider_payment_id.as_deref().unwrap()); // its webhook is lost
    let (abandoned, _) = s.checkouts.create(user, pay_in(50), key("rc-abandoned")).await.unwrap();
    stripe.state.faults.fail_creates.store(100, std::sync::atomic::Ordering::SeqCst);
    assert!(s.checkouts.create(user, pay_in(70), key("rc-failed")).await.is_err());
    stripe.state.faults.fail_creates.store(0, std::sync::atomic::Ordering::SeqCst);

    // Not due yet: nothing asked.
    let now = chrono::Utc::now();
    assert_eq!(s.checkouts.reconcile(now).await.unwrap().checked, 0);
    // Due: two replicas run at once; each checkout is asked about once.
    let due = now + chrono::Duration::seconds(s.config.reconcile_after_secs as i64 + 1);
    let replica = s.replica();
    let (a, b) = tokio::join!(s.checkouts.reconcile(due), replica.reconcile(due));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.checked + b.checked, 3, "{a:?} {b:?}");
    assert_eq!(a.credited + b.credited, 1, "{a:?} {b:?}");
    assert_eq!(s.balance(user).await, 900);
    assert_eq!(s.checkouts.get(user, paid.id).await.unwrap().status, CheckoutStatus::Succeeded);
    assert_eq!(stripe.sessions().len(), 3, "the failed create reopened at Stripe");
    // A day later the unpaid ones expire; a payment reported after that still credits.
    let later = now + chrono::Duration::seconds(s.config.checkout_ttl_secs as i64 + 1);
    let tally = s.checkouts.reconcile(later).await.unwrap();
    assert_eq!(tally.expired, 2, "{tally:?}");
    assert_eq!(s.checkouts.get(user, abandoned.id).await.unwrap().status, CheckoutStatus::Expired);
    let (body, sig) = stripe.pay(abandoned.provider_payment_id.as_deref().unwrap());
    assert_eq!(
        s.checkouts.notify("stripe", &stripe_headers(&sig), &body).await.unwrap(),
        "credited"
    );
    assert_eq!(s.balance(user).await, 950);
    s.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_selling_currency_and_return_addresses_on_the_site() {
    let s = Setup::new(Kind::Real, PaymentConfig::default()).await;
    let user = Uuid::now_v7();
    let euro = Request { amount_minor: 100, currency: "EUR", ..Default::default() };
    match s.checkouts.create(user, euro, key("cur-1")).await {
        Err(PaymentError::Invalid("currency", why)) => assert!(why.contains("RUB"), "{why}"),
        other => panic!("{other:?}"),
    }
    for bad in ["https://evil.example/billing", "//evil.example/x", "javascript:alert(1)", "/x y"] {
        let r = Request { amount_minor: 100, return_url: bad, ..Default::default() };
        let err = s.checkouts.create(user, r, key("cur-2")).await.unwrap_err();
        assert!(matches!(err, PaymentError::Invalid("return_url", _)), "{bad}: {err:?}");
    }
    let own = format!("{PUBLIC}/billing?tab=1");
    for good in ["/library", own.as_str()] {
        let r =
            Request { amount_minor: 100, currency: "RUB", return_url: good, ..Default::default() };
        s.checkouts.create(user, r, key(&format!("cur-{}", good.len()))).await.unwrap();
    }
    let r = Request { amount_minor: 0, ..Default::default() };
    assert!(matches!(
        s.checkouts.create(user, r, key("cur-3")).await,
        Err(PaymentError::Invalid("amount_minor", _))
    ));
}

async fn the_sandbox_runs_the_same_flow(kind: Kind) {
    let s = Setup::new(kind, PaymentConfig::default()).await;
    let user = Uuid::now_v7();
    let (c, _) = s.checkouts.create(user, pay_in(2_500), key("sb-1")).await.unwrap();
    assert_eq!(c.confirmation_url, format!("/pay/sandbox/{}", c.id));
    assert!(c.provider_payment_id.as_deref().unwrap().starts_with("sbx_"));
    // Replayed: the same checkout.
    let (again, new) = s.checkouts.create(user, pay_in(2_500), key("sb-1")).await.unwrap();
    assert_eq!((again.id, new), (c.id, false));
    // Not someone else's to pay.
    assert!(s.checkouts.complete_sandbox(Uuid::now_v7(), c.id, Outcome::Paid).await.is_err());
    let done = s.checkouts.complete_sandbox(user, c.id, Outcome::Paid).await.unwrap();
    assert_eq!(done.status, CheckoutStatus::Succeeded);
    // Paying twice, or giving up after paying, changes nothing.
    s.checkouts.complete_sandbox(user, c.id, Outcome::Paid).await.unwrap();
    let after = s.checkouts.complete_sandbox(user, c.id, Outcome::Canceled).await.unwrap();
    assert_eq!(after.status, CheckoutStatus::Succeeded);
    assert_eq!(s.balance(user).await, 2_500);
    // A notification anyone can post only makes the service ask the sandbox.
    let forged = serde_json::json!({"type": "notification", "event": yookassa::PAYMENT_SUCCEEDED, "object": {"id": "sbx_nope"}});
    assert!(
        s.checkouts
            .notify("sandbox", &Headers::default(), forged.to_string().as_bytes())
            .await
            .is_err()
    );
    let (declined, _) = s.checkouts.create(user, pay_in(10), key("sb-2")).await.unwrap();
    let declined =
        s.checkouts.complete_sandbox(user, declined.id, Outcome::Declined).await.unwrap();
    assert_eq!(declined.status, CheckoutStatus::Canceled);
    assert!(declined.failure_reason.contains("declined"));
    assert_eq!(s.balance(user).await, 2_500);
    s.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_taken_only_from_the_configured_networks() {
    let yoo = YooKassaStandIn::start("123456", "test_secret").await;
    let mut config = yookassa_config(&yoo);
    config.yookassa.receipt = false;
    config.webhook_networks = "185.71.76.0/27, 2a02:5180::/32".into();
    let s = Setup::new(Kind::Real, config).await;
    let user = Uuid::now_v7();
    let (c, _) = s.checkouts.create(user, pay_in(1_000), key("net-1")).await.unwrap();
    let body = yoo.pay(c.provider_payment_id.as_deref().unwrap());
    let from = |ip: &'static str| Headers::new([(skillup_payment::checkout::FROM, ip)]);
    for outside in ["10.0.0.7", "185.71.77.1", "unknown"] {
        let err = s.checkouts.notify("yookassa", &from(outside), &body).await.unwrap_err();
        assert!(matches!(err, PaymentError::Forbidden(_)), "{outside}: {err:?}");
    }
    let err = s.checkouts.notify("yookassa", &Headers::default(), &body).await.unwrap_err();
    assert!(matches!(err, PaymentError::Forbidden(_)), "{err:?}");
    assert_eq!(s.balance(user).await, 0);
    assert_eq!(
        s.checkouts.notify("yookassa", &from("185.71.76.9"), &body).await.unwrap(),
        "credited"
    );
    assert_eq!(
        s.checkouts.notify("yookassa", &from("2a02:5180::1"), &body).await.unwrap(),
        "already-credited"
    );
    s.audit().await;
}
