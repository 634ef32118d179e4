//! Refunds of paid checkouts to the card: never more than what is left, the money held until
//! the provider answers, taken for good on its confirmation, back in the wallet on its refusal.

use skillup_kit::audit::Actor;
use skillup_payment::domain::{MinorUnits, RefundStatus};

use super::*;

fn admin() -> Actor {
    Actor::cli("tester")
}

/// A checkout of `amount` paid through Stripe (its webhook delivered).
async fn paid_stripe(s: &Setup, stripe: &StripeStandIn, user: Uuid, amount: i64, k: &str) -> Uuid {
    let (c, _) = s.checkouts.create(user, pay_in(amount), key(k)).await.unwrap();
    let (body, sig) = stripe.pay(c.provider_payment_id.as_deref().unwrap());
    s.checkouts.notify("stripe", &stripe_headers(&sig), &body).await.unwrap();
    c.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_checkout_goes_back_to_the_card_never_more_than_was_paid() {
    let stripe = StripeStandIn::start("sk_test_standin", WHSEC).await;
    let s = Setup::new(Kind::Real, stripe_config(&stripe)).await;
    let user = Uuid::now_v7();
    let id = paid_stripe(&s, &stripe, user, 1_000, "rf-1").await;
    assert_eq!(s.balance(user).await, 1_000);

    let (r, new) =
        s.checkouts.refund(&admin(), id, 300, "duplicate charge", key("a-1")).await.unwrap();
    assert!(new);
    assert_eq!((r.status, r.amount_minor), (RefundStatus::Succeeded, 300));
    assert_eq!(s.balance(user).await, 700);
    let at_stripe = stripe.refunds();
    assert_eq!(at_stripe.len(), 1);
    assert_eq!(at_stripe[0]["amount"], 300);
    assert_eq!(at_stripe[0]["metadata"]["refund_id"], r.id.to_string());
    // The same key: the same refund; with another request: refused.
    let (again, new) =
        s.checkouts.refund(&admin(), id, 300, "duplicate charge", key("a-1")).await.unwrap();
    assert_eq!((again.id, new), (r.id, false));
    let err =
        s.checkouts.refund(&admin(), id, 301, "duplicate charge", key("a-1")).await.unwrap_err();
    assert!(matches!(err, PaymentError::KeyReused), "{err:?}");
    // More than is left: refused, nothing moved.
    let err = s.checkouts.refund(&admin(), id, 701, "too much", key("a-2")).await.unwrap_err();
    assert!(matches!(err, PaymentError::Invalid("amount_minor", _)), "{err:?}");
    assert_eq!(s.balance(user).await, 700);
    // All that is left (0), then nothing is.
    let (rest, _) =
        s.checkouts.refund(&admin(), id, 0, "closing the account", key("a-3")).await.unwrap();
    assert_eq!((rest.status, rest.amount_minor), (RefundStatus::Succeeded, 700));
    assert_eq!(s.balance(user).await, 0);
    let err = s.checkouts.refund(&admin(), id, 0, "again", key("a-4")).await.unwrap_err();
    assert!(matches!(err, PaymentError::Invalid("amount_minor", _)), "{err:?}");
    // Concurrent refunds of one checkout never add up to more than it.
    let id = paid_stripe(&s, &stripe, user, 500, "rf-2").await;
    let a = admin();
    let attempts = (0..4).map(|i| s.checkouts.refund(&a, id, 200, "split", key(&format!("c-{i}"))));
    let done = futures::future::join_all(attempts).await;
    assert_eq!(done.iter().filter(|r| r.is_ok()).count(), 2, "{done:?}");
    assert_eq!(s.balance(user).await, 100);
    // Not paid: nothing to refund.
    let (unpaid, _) = s.checkouts.create(user, pay_in(50), key("rf-3")).await.unwrap();
    let err = s.checkouts.refund(&admin(), unpaid.id, 0, "x", key("a-5")).await.unwrap_err();
    assert!(matches!(err, PaymentError::Conflict(_)), "{err:?}");
    s.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_refund_holds_the_money_until_the_provider_answers() {
    let stripe = StripeStandIn::start("sk_test_standin", WHSEC).await;
    let s = Setup::new(Kind::Real, stripe_config(&stripe)).await;
    let user = Uuid::now_v7();
    let id = paid_stripe(&s, &stripe, user, 1_000, "ph-1").await;
    *stripe.state.refund_status.lock().unwrap() = "pending".into();
    let (r, _) =
        s.checkouts.refund(&admin(), id, 400, "asked by the customer", key("p-1")).await.unwrap();
    assert_eq!(r.status, RefundStatus::Pending);
    // Held: not spendable meanwhile.
    assert_eq!(s.balance(user).await, 600);
    let rub = Currency::parse("c", "RUB").unwrap();
    let spend = s
        .ledger
        .charge(user, MinorUnits::parse("a", 700).unwrap(), rub.clone(), key("spend-1"), "plan")
        .await;
    assert!(matches!(spend, Err(PaymentError::InsufficientFunds(_))), "{spend:?}");
    // The card refused: the money is back, and may be refunded again.
    let provider_id =
        s.checkouts.refunds_of(id).await.unwrap()[0].provider_refund_id.clone().unwrap();
    let (body, sig) = stripe.finish_refund(&provider_id, "failed");
    assert_eq!(
        s.checkouts.notify("stripe", &stripe_headers(&sig), &body).await.unwrap(),
        "refunded"
    );
    assert_eq!(
        s.checkouts.notify("stripe", &stripe_headers(&sig), &body).await.unwrap(),
        "pending"
    );
    let failed = s.checkouts.refunds_of(id).await.unwrap().remove(0);
    assert_eq!(failed.status, RefundStatus::Failed);
    assert_eq!(failed.failure_reason, "expired_or_canceled_card");
    assert_eq!(s.balance(user).await, 1_000);
    // Another, confirmed without a webhook: the job asks.
    let (r2, _) = s.checkouts.refund(&admin(), id, 1_000, "asked again", key("p-2")).await.unwrap();
    assert_eq!(s.balance(user).await, 0);
    let _lost = stripe.finish_refund(r2.provider_refund_id.as_deref().unwrap(), "succeeded");
    let due =
        chrono::Utc::now() + chrono::Duration::seconds(s.config.reconcile_after_secs as i64 + 1);
    let tally = s.checkouts.reconcile(due).await.unwrap();
    assert_eq!(tally.refunds_ended, 1, "{tally:?}");
    let all = s.checkouts.refunds_of(id).await.unwrap();
    assert_eq!(all[1].status, RefundStatus::Succeeded);
    assert_eq!(s.balance(user).await, 0);
    s.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yookassa_refund_is_believed_after_fetching_it_back_and_spent_money_stays() {
    let yoo = YooKassaStandIn::start("123456", "test_secret").await;
    let s = Setup::new(Kind::Real, yookassa_config(&yoo)).await;
    let user = Uuid::now_v7();
    let asked =
        Request { amount_minor: 10_000, receipt_email: "payer@example.com", ..Default::default() };
    let (c, _) = s.checkouts.create(user, asked, key("yr-1")).await.unwrap();
    let body = yoo.pay(c.provider_payment_id.as_deref().unwrap());
    s.checkouts.notify("yookassa", &Headers::default(), &body).await.unwrap();
    // 6,000 of it spent: only 4,000 can go back.
    let rub = Currency::parse("c", "RUB").unwrap();
    s.ledger
        .charge(user, MinorUnits::parse("a", 6_000).unwrap(), rub, key("spent"), "plan")
        .await
        .unwrap();
    let err = s.checkouts.refund(&admin(), c.id, 0, "everything", key("y-1")).await.unwrap_err();
    assert!(matches!(err, PaymentError::InsufficientFunds(_)), "{err:?}");
    *yoo.state.refund_status.lock().unwrap() = "pending".into();
    let (r, _) = s.checkouts.refund(&admin(), c.id, 4_000, "the rest", key("y-2")).await.unwrap();
    assert_eq!(r.status, RefundStatus::Pending);
    let provider_id = r.provider_refund_id.clone().unwrap();
    assert_eq!(yoo.refunds()[0]["amount"]["value"], "40.00");
    // A notification claiming success while YooKassa says pending changes nothing.
    let mut forged: serde_json::Value =
        serde_json::from_slice(&yoo.finish_refund(&provider_id, "pending")).unwrap();
    forged["event"] = yookassa::REFUND_SUCCEEDED.into();
    forged["object"]["status"] = "succeeded".into();
    let outcome = s
        .checkouts
        .notify("yookassa", &Headers::default(), forged.to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(outcome, "pending");
    assert_eq!(s.checkouts.refunds_of(c.id).await.unwrap()[0].status, RefundStatus::Pending);
    let body = yoo.finish_refund(&provider_id, "succeeded");
    assert_eq!(
        s.checkouts.notify("yookassa", &Headers::default(), &body).await.unwrap(),
        "refunded"
    );
    assert_eq!(s.checkouts.refunds_of(c.id).await.unwrap()[0].status, RefundStatus::Succeeded);
    assert_eq!(s.balance(user).await, 0);
    s.audit().await;
}

async fn the_sandbox_refunds_at_once(kind: Kind) {
    let s = Setup::new(kind, PaymentConfig::default()).await;
    let user = Uuid::now_v7();
    let (c, _) = s.checkouts.create(user, pay_in(900), key("sr-1")).await.unwrap();
    s.checkouts.complete_sandbox(user, c.id, Outcome::Paid).await.unwrap();
    let (r, _) = s.checkouts.refund(&admin(), c.id, 0, "test", key("s-1")).await.unwrap();
    assert_eq!((r.status, r.amount_minor), (RefundStatus::Succeeded, 900));
    assert_eq!(s.balance(user).await, 0);
    let (rows, next) = s.checkouts.of_user(user, 0, "").await.unwrap();
    assert_eq!((rows.len(), next.as_str()), (1, ""));
    assert_eq!(rows[0].1.len(), 1);
    s.audit().await;
}

skillup_testkit::both_adapters!(the_sandbox_refunds_at_once);
