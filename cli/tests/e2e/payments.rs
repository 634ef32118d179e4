//! Real money's path end to end on the real servers, every component its own process, the
//! payment service configured for a real provider against its local stand-in: a checkout
//! through the edge, the person pays on the provider's hosted page and is sent back, the
//! provider's notification reaches the public route as raw bytes (Stripe's with its
//! `Stripe-Signature` header), and the wallet is credited once.

use super::*;
use skillup_testkit::providers::{stripe::StripeStandIn, stripe::sign, yookassa::YooKassaStandIn};

const WHSEC: &str = "whsec_e2e";

/// A verified account on the mesh, and its access token.
async fn signed_in(mesh: &Mesh, rest: &reqwest::Client) -> String {
    let base = mesh.edge();
    let account = json!({"email": format!("pay-{}@example.com", testing::unique()), "password": "correct horse battery"});
    register_verified(rest, &base, &mesh.dir.join("outbox"), &account).await;
    let auth =
        ok(rest.post(format!("{base}/api/auth/login")).json(&account).send().await.unwrap(), 200)
            .await;
    auth["access_token"].as_str().unwrap().to_owned()
}

/// The person on the provider's page: it shows, they pay, they are sent back to the site.
async fn pay_on_the_hosted_page(url: &str, checkout: &str) {
    let browser =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    assert_eq!(browser.get(url).send().await.unwrap().status(), 200);
    let paid = browser.post(url).send().await.unwrap();
    assert_eq!(paid.status(), 303, "{}", paid.text().await.unwrap());
    let back = paid.headers()["location"].to_str().unwrap();
    assert!(back.ends_with(&format!("/billing?checkout={checkout}")), "{back}");
}

async fn status_of(rest: &reqwest::Client, base: &str, token: &str, id: &str) -> Value {
    let res = rest
        .get(format!("{base}/api/payments/checkouts/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    ok(res, 200).await
}

async fn balance(rest: &reqwest::Client, base: &str, token: &str) -> Value {
    let res = rest.get(format!("{base}/api/payments/balance")).bearer_auth(token).send().await;
    ok(res.unwrap(), 200).await["available"]["amount_minor"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_comes_in_through_stripe_checkout_and_its_signed_webhook() {
    let stripe = StripeStandIn::start("sk_test_e2e", WHSEC).await;
    let mesh = Mesh::start(&[
        ("SKILLUP_PAYMENT__PROVIDER", "stripe"),
        ("SKILLUP_PAYMENT__STRIPE__API_BASE", stripe.base_url()),
        ("SKILLUP_PAYMENT__STRIPE__SECRET_KEY", "sk_test_e2e"),
        ("SKILLUP_PAYMENT__STRIPE__WEBHOOK_SECRETS", WHSEC),
    ])
    .await;
    let base = mesh.edge();
    stripe.deliver_to(&format!("{base}/api/payments/webhooks/stripe"));
    let rest = reqwest::Client::new();
    let token = signed_in(&mesh, &rest).await;

    // The sandbox's instant top-up is not for real money.
    let res = rest
        .post(format!("{base}/api/payments/top-up"))
        .bearer_auth(&token)
        .header("idempotency-key", "direct-1")
        .json(&json!({"amount_minor": 500, "currency": "RUB"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409, "{}", res.text().await.unwrap());

    // A checkout: 201, Stripe's page to go to; the same key again is the same checkout.
    let open = || {
        rest.post(format!("{base}/api/payments/checkouts"))
            .bearer_auth(&token)
            .header("idempotency-key", "checkout-1")
            .json(&json!({"amount_minor": 4200, "return_url": "/billing"}))
            .send()
    };
    let checkout = ok(open().await.unwrap(), 201).await;
    assert_eq!(checkout["status"], "CHECKOUT_STATUS_PENDING");
    let id = checkout["id"].as_str().unwrap().to_owned();
    let session = checkout["provider_payment_id"].as_str().unwrap().to_owned();
    let url = checkout["confirmation_url"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("{}/pay/{session}", stripe.base_url()));
    let again = open().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(ok(again, 201).await["id"], checkout["id"]);
    let euro = rest
        .post(format!("{base}/api/payments/checkouts"))
        .bearer_auth(&token)
        .header("idempotency-key", "checkout-eur")
        .json(&json!({"amount_minor": 100, "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    let euro = ok(euro, 400).await;
    assert_eq!(euro["error"]["field"], "currency", "{euro}");

    // A forged event first: refused, nothing credited.
    let deliver = |body: Vec<u8>, signature: String| {
        rest.post(format!("{base}/api/payments/webhooks/stripe"))
            .header("content-type", "application/json; charset=utf-8")
            .header("stripe-signature", signature)
            .body(body)
            .send()
    };
    let mut paid_session = stripe.session(&session).unwrap();
    paid_session["payment_status"] = "paid".into();
    let (forged_body, _) = stripe.event("checkout.session.completed", paid_session);
    let forged = sign("whsec_attacker", chrono::Utc::now().timestamp(), &forged_body);
    let refused = ok(deliver(forged_body, forged).await.unwrap(), 400).await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("signature"), "{refused}");
    assert_eq!(balance(&rest, &base, &token).await, "0");

    // Paid on Stripe's page: its webhook reaches the edge; the person is back on /billing.
    pay_on_the_hosted_page(&url, &id).await;
    assert_eq!(status_of(&rest, &base, &token, &id).await["status"], "CHECKOUT_STATUS_SUCCEEDED");
    assert_eq!(balance(&rest, &base, &token).await, "4200");
    // Stripe delivers again: nothing more.
    let (body, signature) = stripe.pay(&session);
    let second = ok(deliver(body.clone(), signature).await.unwrap(), 200).await;
    assert_eq!(second["outcome"], "already-credited");
    assert_eq!(balance(&rest, &base, &token).await, "4200");
    // A webhook for a provider this deployment does not use.
    let other = rest
        .post(format!("{base}/api/payments/webhooks/yookassa"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_comes_in_through_yookassa_and_a_notification_checked_with_its_api() {
    let yoo = YooKassaStandIn::start("54321", "test_e2e").await;
    let mesh = Mesh::start(&[
        ("SKILLUP_PAYMENT__PROVIDER", "yookassa"),
        ("SKILLUP_PAYMENT__CURRENCY", "RUB"),
        ("SKILLUP_PAYMENT__YOOKASSA__API_BASE", yoo.base_url()),
        ("SKILLUP_PAYMENT__YOOKASSA__SHOP_ID", "54321"),
        ("SKILLUP_PAYMENT__YOOKASSA__SECRET_KEY", "test_e2e"),
        // The stand-in posts from loopback: the address the edge saw reaches the service.
        ("SKILLUP_PAYMENT__WEBHOOK_NETWORKS", "127.0.0.0/8, ::1/128"),
    ])
    .await;
    let base = mesh.edge();
    yoo.deliver_to(&format!("{base}/api/payments/webhooks/yookassa"));
    let rest = reqwest::Client::new();
    let token = signed_in(&mesh, &rest).await;
    let checkout = rest
        .post(format!("{base}/api/payments/checkouts"))
        .bearer_auth(&token)
        .header("idempotency-key", "yk-1")
        .json(&json!({"amount_minor": 99000}))
        .send()
        .await
        .unwrap();
    let checkout = ok(checkout, 201).await;
    let id = checkout["id"].as_str().unwrap().to_owned();
    let payment = checkout["provider_payment_id"].as_str().unwrap().to_owned();
    assert_eq!(yoo.payment(&payment).unwrap()["amount"]["value"], "990.00");
    // A notification that claims success before anything was paid: YooKassa says pending.
    let early = rest
        .post(format!("{base}/api/payments/webhooks/yookassa"))
        .header("content-type", "application/json")
        .body(yoo.notification(skillup_testkit::providers::yookassa::PAYMENT_SUCCEEDED, &payment))
        .send()
        .await
        .unwrap();
    assert_eq!(ok(early, 200).await["outcome"], "pending");
    assert_eq!(balance(&rest, &base, &token).await, "0");
    pay_on_the_hosted_page(checkout["confirmation_url"].as_str().unwrap(), &id).await;
    assert_eq!(status_of(&rest, &base, &token, &id).await["status"], "CHECKOUT_STATUS_SUCCEEDED");
    // The balance asked for without a currency is the selling currency's.
    let res =
        rest.get(format!("{base}/api/payments/balance")).bearer_auth(&token).send().await.unwrap();
    let available = ok(res, 200).await["available"].clone();
    assert_eq!(
        (available["amount_minor"].as_str(), available["currency"].as_str()),
        (Some("99000"), Some("RUB"))
    );
}
