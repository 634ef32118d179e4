//! Real money's path end to end on the real servers, every component its own process, the
//! payment service configured for Stripe against the local stand-in: a checkout through the
//! edge, the person pays on Stripe's page, Stripe's signed webhook reaches the public route as
//! raw bytes with its `Stripe-Signature` header, and the wallet is credited once.

use super::*;
use skillup_testkit::providers::stripe::{StripeStandIn, sign};

const WHSEC: &str = "whsec_e2e";

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
    let rest = reqwest::Client::new();
    let account = json!({"email": format!("pay-{}@example.com", testing::unique()), "password": "correct horse battery"});
    register_verified(&rest, &base, &mesh.dir.join("outbox"), &account).await;
    let auth =
        ok(rest.post(format!("{base}/api/auth/login")).json(&account).send().await.unwrap(), 200)
            .await;
    let token = auth["access_token"].as_str().unwrap().to_owned();

    // The sandbox's instant top-up is not for real money.
    let res = rest
        .post(format!("{base}/api/payments/top-up"))
        .bearer_auth(&token)
        .header("idempotency-key", "direct-1")
        .json(&json!({"amount_minor": 500, "currency": "USD"}))
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
    let session = checkout["provider_payment_id"].as_str().unwrap().to_owned();
    assert_eq!(checkout["confirmation_url"], format!("{}/pay/{session}", stripe.base_url()));
    let again = open().await.unwrap();
    assert_eq!(again.status(), 201);
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

    // Paid on Stripe's page; the webhook, as Stripe sends it, through the public route.
    let (body, signature) = stripe.pay(&session);
    let deliver = |body: Vec<u8>, signature: String| {
        rest.post(format!("{base}/api/payments/webhooks/stripe"))
            .header("content-type", "application/json; charset=utf-8")
            .header("stripe-signature", signature)
            .body(body)
            .send()
    };
    let forged = sign("whsec_attacker", chrono::Utc::now().timestamp(), &body);
    let refused = ok(deliver(body.clone(), forged).await.unwrap(), 400).await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("signature"), "{refused}");
    let first = ok(deliver(body.clone(), signature.clone()).await.unwrap(), 200).await;
    assert_eq!(first["outcome"], "credited");
    let second = ok(deliver(body.clone(), signature.clone()).await.unwrap(), 200).await;
    assert_eq!(second["outcome"], "already-credited");
    // A webhook for a provider this deployment does not use.
    let other = rest
        .post(format!("{base}/api/payments/webhooks/yookassa"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);

    let id = checkout["id"].as_str().unwrap();
    let done = rest
        .get(format!("{base}/api/payments/checkouts/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let done = ok(done, 200).await;
    assert_eq!(done["status"], "CHECKOUT_STATUS_SUCCEEDED");
    let balance =
        rest.get(format!("{base}/api/payments/balance")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok(balance, 200).await["available"]["amount_minor"], "4200");
}
