//! Issue 21: money moved is emailed with its receipt — by the person's choice for payments,
//! whatever they chose for generations — once, whichever replica takes the event.

use super::*;

/// Publishes `payment.succeeded` for a top-up of `minor` kopecks to `user`.
async fn paid(h: &Harness, user: Uuid, transaction: &str, minor: i64) {
    let t = skillup_proto::payment::v1::Transaction {
        id: transaction.into(),
        user_id: user.to_string(),
        kind: skillup_proto::payment::v1::TransactionKind::TopUp as i32,
        amount: Some(skillup_proto::common::v1::Money {
            amount_minor: minor,
            currency: "RUB".into(),
        }),
        description: "top-up (yookassa)".into(),
        ..Default::default()
    };
    let ev = skillup_proto::payment::v1::PaymentSucceeded { transaction: Some(t) };
    let id = format!("payment:{transaction}");
    skillup_kit::events::publish_with_id(&h.t.infra.bus, &id, &user.to_string(), &ev)
        .await
        .unwrap();
}

pub(crate) async fn a_payment_is_emailed_with_its_receipt_by_its_own_preference(kind: Kind) {
    let h = harness(kind, 2).await;
    let user = Uuid::now_v7();
    registered(&h, user, "bea@example.com").await;
    for _ in 0..400 {
        if h.notifiers[0].contact(user).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Generation emails off; payment emails on (the default).
    let mut c = h.replicas[0].0.clone();
    let prefs = pb::Preferences {
        email_on_generation: false,
        email_on_payment: true,
        locale: String::new(),
        events: vec![],
    };
    c.update_preferences(as_user(&h, user, prefs)).await.unwrap();
    paid(&h, user, "0193-tx-1", 79_000).await;
    completed(&h, user, "r-1", "not emailed").await;
    stored(&h, user, 2).await;
    // At once (the default for payments), by one replica; the digests have nothing left.
    let mails = mails_to(&h, "bea@example.com", 1).await;
    let (a, b) = tokio::join!(h.notifiers[0].send_digests(), h.notifiers[1].send_digests());
    assert_eq!(a.unwrap() + b.unwrap(), 0, "emailed once");
    assert_eq!(mails[0].subject, "Payment of ₽790.00 went through");
    assert!(mails[0].body.contains("Receipt: transaction 0193-tx-1, "), "{}", mails[0].body);
    assert!(mails[0].body.contains("top-up (yookassa)"), "{}", mails[0].body);
    assert!(!mails[0].body.contains("not emailed"), "generation emails are off");
    // Payment emails off too: nothing.
    let prefs = pb::Preferences {
        email_on_generation: false,
        email_on_payment: false,
        locale: String::new(),
        events: vec![],
    };
    c.update_preferences(as_user(&h, user, prefs)).await.unwrap();
    paid(&h, user, "0193-tx-2", 1_000).await;
    stored(&h, user, 3).await;
    assert_eq!(h.notifiers[0].send_digests().await.unwrap(), 0);
    mails_to(&h, "bea@example.com", 1).await;
}
