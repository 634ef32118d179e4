//! Issue 22: each event reaches a person by email and by push as they chose (at once, in the
//! digest, or not at all), a finished generation is not emailed while a console shows it live,
//! and every email's unsubscribe link stops that event's emails without signing in.

use skillup_proto::{payment::v1 as paypb, subscribe::v1 as subpb};
use skillup_testkit::providers::push::PushStandIn;

use super::*;

fn transaction(user: Uuid, kind: paypb::TransactionKind, minor: i64) -> paypb::Transaction {
    paypb::Transaction {
        id: Uuid::now_v7().to_string(),
        user_id: user.to_string(),
        kind: kind as i32,
        amount: Some(skillup_proto::common::v1::Money {
            amount_minor: minor,
            currency: "RUB".into(),
        }),
        description: "sandbox".into(),
        failure_reason: "card declined".into(),
        ..Default::default()
    }
}

/// Publishes one event of each of the six kinds a person chooses for, for `user`.
async fn one_of_each(h: &Harness, user: Uuid) {
    let bus = &h.t.infra.bus;
    let u = user.to_string();
    completed(h, user, &Uuid::now_v7().to_string(), "done topic").await;
    let failed = aipb::Task {
        id: Uuid::now_v7().to_string(),
        topic: "failed topic".into(),
        function: "quiz".into(),
        error: "every provider refused".into(),
        ..Default::default()
    };
    let ev = aipb::GenerationFailed { task: Some(failed) };
    skillup_kit::events::publish(bus, &u, &ev).await.unwrap();
    let t = transaction(user, paypb::TransactionKind::TopUp, 79_000);
    let ev = paypb::PaymentSucceeded { transaction: Some(t) };
    skillup_kit::events::publish(bus, &u, &ev).await.unwrap();
    let t = transaction(user, paypb::TransactionKind::TopUp, 1_000);
    let ev = paypb::PaymentFailed { transaction: Some(t) };
    skillup_kit::events::publish(bus, &u, &ev).await.unwrap();
    let ev = subpb::SubscriptionChanged {
        user_id: u.clone(),
        plan: "premium".into(),
        ..Default::default()
    };
    skillup_kit::events::publish(bus, &u, &ev).await.unwrap();
    let t = transaction(user, paypb::TransactionKind::ServiceCredit, 7_900);
    let ev = paypb::PaymentSucceeded { transaction: Some(t) };
    skillup_kit::events::publish(bus, &u, &ev).await.unwrap();
}

async fn contact_known(h: &Harness, user: Uuid) {
    for _ in 0..400 {
        if h.notifiers[0].contact(user).await.unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the contact never arrived");
}

pub async fn every_event_reaches_each_channel_as_chosen(kind: Kind) {
    use pb::{Delivery as D, NotificationEvent as E};
    let push = PushStandIn::start().await;
    let settings = skillup_notification::push::PushSettings {
        key: skillup_notification::push::VapidKey::generate(),
        subject: "mailto:ops@skillup.test".into(),
        reach: skillup_notification::push::Reach { loopback: true },
    };
    let h = harness_with(kind, 2, Some(settings)).await;
    let user = Uuid::now_v7();
    registered(&h, user, "cy@example.com").await;
    contact_known(&h, user).await;
    let browser = push.browser();
    let mut c = h.replicas[0].0.clone();
    let sub = pb::PushSubscription {
        endpoint: browser.endpoint.clone(),
        expiration_time: None,
        keys: Some(pb::PushSubscriptionKeys {
            p256dh: browser.p256dh.clone(),
            auth: browser.auth.clone(),
        }),
    };
    c.add_push_subscription(as_user(&h, user, sub)).await.unwrap();
    let choice = |event: E, email: D, push: D| pb::EventPreference {
        event: event as i32,
        email: email as i32,
        push: push as i32,
    };
    let prefs = pb::Preferences {
        events: vec![
            choice(E::GenerationCompleted, D::Immediate, D::Off),
            choice(E::GenerationFailed, D::Off, D::Immediate),
            choice(E::PaymentReceived, D::Digest, D::Immediate),
            choice(E::PaymentFailed, D::Immediate, D::Immediate),
            choice(E::Subscription, D::Off, D::Off),
            choice(E::ServiceCredit, D::Digest, D::Off),
        ],
        ..Default::default()
    };
    c.update_preferences(as_user(&h, user, prefs)).await.unwrap();

    one_of_each(&h, user).await;
    stored(&h, user, 6).await;
    // At once by email: the finished generation and the refused payment.
    let mails = mails_to(&h, "cy@example.com", 2).await;
    let mut subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        ["Payment of ₽10.00 was refused", "Your lesson plan about «done topic» is ready"]
    );
    // Pushed: the failed generation and both payments.
    let got = push.wait_for(&browser, 3, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut kinds: Vec<String> =
        push.received().iter().map(|r| r.payload["kind"].as_str().unwrap().to_owned()).collect();
    kinds.sort();
    assert_eq!(kinds, ["generation_failed", "payment_failed", "payment_succeeded"], "{got:?}");
    // The digest: the top-up (with its receipt) and the credit, nothing else.
    assert_eq!(h.notifiers[1].send_digests().await.unwrap(), 1);
    let mails = mails_to(&h, "cy@example.com", 3).await;
    let digest = mails.iter().find(|m| m.subject == "2 updates from SkillUp").expect("a digest");
    assert!(digest.body.contains("Payment of ₽790.00 went through"), "{}", digest.body);
    assert!(digest.body.contains("₽79.00 credited"), "{}", digest.body);
    assert!(digest.body.contains("Receipt: transaction"), "{}", digest.body);
    for absent in ["premium", "failed topic", "done topic", "refused"] {
        assert!(!digest.body.contains(absent), "{absent}: {}", digest.body);
    }
    assert_eq!(h.notifiers[0].send_digests().await.unwrap(), 0, "nothing twice");
}

pub async fn an_emails_unsubscribe_link_stops_that_events_emails(kind: Kind) {
    let h = harness(kind, 1).await;
    let user = Uuid::now_v7();
    registered(&h, user, "dan@example.com").await;
    contact_known(&h, user).await;
    completed(&h, user, &Uuid::now_v7().to_string(), "first").await;
    let mail = mails_to(&h, "dan@example.com", 1).await.remove(0);
    // The one-click link (RFC 8058) and the console's page, for this event.
    let one_click = mail.unsubscribe.clone().expect("List-Unsubscribe");
    let query = one_click
        .strip_prefix("https://skillup.test/api/notifications/unsubscribe?")
        .expect("the API's address");
    let page = format!("https://skillup.test/unsubscribe?{query}");
    assert!(mail.body.contains(&page), "{}", mail.body);
    let (token, event) = query.split_once("&event=").unwrap();
    let token = token.strip_prefix("token=").unwrap();
    assert_eq!(event, "NOTIFICATION_EVENT_GENERATION_COMPLETED");

    let mut c = h.replicas[0].0.clone();
    let ask = |token: &str| pb::UnsubscribeRequest {
        token: token.into(),
        event: pb::NotificationEvent::GenerationCompleted as i32,
        body: None,
    };
    // Anyone may post it (no sign-in); a wrong token names nobody.
    let forged = format!("{}.{}", user.simple(), "x".repeat(32));
    let e = c.unsubscribe(Request::new(ask(&forged))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(
        c.unsubscribe(Request::new(ask("junk"))).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let now = c.unsubscribe(Request::new(ask(token))).await.unwrap().into_inner();
    let prefs = now.preferences.unwrap();
    let of = |e: pb::NotificationEvent| prefs.events.iter().find(|x| x.event == e as i32).unwrap();
    assert_eq!(of(pb::NotificationEvent::GenerationCompleted).email, pb::Delivery::Off as i32);
    assert_eq!(of(pb::NotificationEvent::GenerationCompleted).push, pb::Delivery::Immediate as i32);
    assert_eq!(of(pb::NotificationEvent::PaymentFailed).email, pb::Delivery::Immediate as i32);
    // That event's emails stop; a refused payment is still emailed.
    completed(&h, user, &Uuid::now_v7().to_string(), "second").await;
    let t = transaction(user, paypb::TransactionKind::TopUp, 1_000);
    let ev = paypb::PaymentFailed { transaction: Some(t) };
    skillup_kit::events::publish(&h.t.infra.bus, &user.to_string(), &ev).await.unwrap();
    stored(&h, user, 3).await;
    let mails = mails_to(&h, "dan@example.com", 2).await;
    assert!(mails.iter().all(|m| !m.subject.contains("second")));
}

pub async fn a_finished_generation_is_not_emailed_while_a_console_shows_it(kind: Kind) {
    let h = harness(kind, 2).await;
    let (watching, away) = (Uuid::now_v7(), Uuid::now_v7());
    registered(&h, watching, "eve@example.com").await;
    registered(&h, away, "fay@example.com").await;
    contact_known(&h, watching).await;
    contact_known(&h, away).await;
    // A console open on the second replica; the event may be taken by either.
    let mut live = stream(&h, 1, watching, "").await;
    completed(&h, watching, &Uuid::now_v7().to_string(), "seen live").await;
    completed(&h, away, &Uuid::now_v7().to_string(), "not seen").await;
    assert_eq!(next(&mut live).await.data["topic"], "seen live");
    stored(&h, away, 1).await;
    mails_to(&h, "fay@example.com", 1).await;
    mails_to(&h, "eve@example.com", 0).await;
    // Money is emailed whether or not a console is open.
    let t = transaction(watching, paypb::TransactionKind::TopUp, 1_000);
    let ev = paypb::PaymentFailed { transaction: Some(t) };
    skillup_kit::events::publish(&h.t.infra.bus, &watching.to_string(), &ev).await.unwrap();
    mails_to(&h, "eve@example.com", 1).await;
}
