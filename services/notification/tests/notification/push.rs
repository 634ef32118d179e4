//! Web Push through the stand-in push service: what reaches a browser (decrypted with its own
//! key, under a VAPID JWT the stand-in verified), what happens to devices that are gone or
//! busy, and which subscriptions are taken.

use std::time::Duration;

use skillup_notification::push::{PushSettings, Reach, VapidKey};
use skillup_testkit::providers::push::{Answer, Browser, PushStandIn};

use super::*;

fn settings(loopback: bool) -> PushSettings {
    PushSettings {
        key: VapidKey::generate(),
        subject: "mailto:ops@skillup.test".into(),
        reach: Reach { loopback },
    }
}

fn subscription(b: &Browser) -> pb::PushSubscription {
    pb::PushSubscription {
        endpoint: b.endpoint.clone(),
        expiration_time: None,
        keys: Some(pb::PushSubscriptionKeys { p256dh: b.p256dh.clone(), auth: b.auth.clone() }),
    }
}

async fn add(
    h: &Harness,
    user: Uuid,
    s: pb::PushSubscription,
) -> Result<pb::PushDevice, tonic::Status> {
    let mut c = h.replicas[0].0.clone();
    c.add_push_subscription(as_user(h, user, s)).await.map(|r| r.into_inner())
}

async fn devices(h: &Harness, user: Uuid) -> Vec<pb::PushDevice> {
    let mut c = h.replicas[0].0.clone();
    let req = as_user(h, user, pb::ListPushSubscriptionsRequest {});
    c.list_push_subscriptions(req).await.unwrap().into_inner().devices
}

/// Publishes `generation.completed` for a new task of `user`; the task's id.
async fn finished(h: &Harness, user: Uuid, topic: &str) -> Uuid {
    completed(h, user, &Uuid::now_v7().to_string(), topic).await
}

pub async fn a_finished_task_is_pushed_to_every_device_in_the_readers_language(kind: Kind) {
    let push = PushStandIn::start().await;
    let h = harness_with(kind, 2, Some(settings(true))).await;
    let user = Uuid::now_v7();
    let mut c = h.replicas[1].0.clone();
    let ru = pb::Preferences { locale: "ru".into(), ..Default::default() };
    c.update_preferences(as_user(&h, user, ru)).await.unwrap();
    let (phone, laptop) = (push.browser(), push.browser());
    for b in [&phone, &laptop] {
        add(&h, user, subscription(b)).await.unwrap();
    }
    // The key browsers subscribe with, to anyone.
    let key = c.get_push_key(pb::GetPushKeyRequest {}).await.unwrap().into_inner().public_key;
    assert_eq!(key.len(), 87);

    let task = finished(&h, user, "дроби").await;
    for b in [&phone, &laptop] {
        let got = push.wait_for(b, 1, Duration::from_secs(20)).await;
        let m = &got[0];
        let p = &m.payload;
        assert!(p["title"].as_str().unwrap().contains("дроби"), "{p}");
        assert!(p["title"].as_str().unwrap().contains("готов"), "in Russian: {p}");
        assert_eq!(p["url"], format!("https://skillup.test/library/{task}"));
        assert_eq!(p["kind"], "generation_completed");
        assert_eq!(p["body"], "the text");
        assert_eq!(m.ttl, 86_400);
        assert_eq!(m.urgency.as_deref(), Some("normal"));
        assert_eq!(m.topic.as_deref(), Some(task.simple().to_string().as_str()));
        assert_eq!(m.claims["aud"], push.server.base_url);
        assert_eq!(m.claims["sub"], "mailto:ops@skillup.test");
    }
    assert!(push.refused().is_empty(), "{:?}", push.refused());
    // Each device once, though two replicas run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((push.hits(&phone), push.hits(&laptop)), (1, 1));
    // A push reached each: the devices say when.
    assert!(devices(&h, user).await.iter().all(|d| d.last_delivered_at.is_some()));
}

pub async fn gone_devices_are_deleted_and_busy_push_services_are_tried_again(kind: Kind) {
    let push = PushStandIn::start().await;
    let h = harness_with(kind, 1, Some(settings(true))).await;
    let user = Uuid::now_v7();
    let (gone, unsubscribed, busy) = (push.browser(), push.browser(), push.browser());
    for b in [&gone, &unsubscribed, &busy] {
        add(&h, user, subscription(b)).await.unwrap();
    }
    push.answer(&gone, &[Answer::Gone(410)]);
    push.answer(&unsubscribed, &[Answer::Gone(404)]);
    // Asked to come back in a second, then broken once: the third try gets through.
    push.answer(&busy, &[Answer::TooMany(1), Answer::Broken]);
    let started = std::time::Instant::now();
    finished(&h, user, "fractions").await;
    let got = push.wait_for(&busy, 1, Duration::from_secs(30)).await;
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was honoured");
    assert_eq!(push.hits(&busy), 3);
    assert_eq!(got[0].payload["kind"], "generation_completed");
    // The gone ones are deleted (once each was tried).
    for _ in 0..100 {
        if devices(&h, user).await.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = devices(&h, user).await;
    assert_eq!(
        left.iter().map(|d| d.endpoint.as_str()).collect::<Vec<_>>(),
        [busy.endpoint.as_str()]
    );
    assert_eq!((push.hits(&gone), push.hits(&unsubscribed)), (1, 1));

    // The next notification goes to the one left only.
    finished(&h, user, "decimals").await;
    push.wait_for(&busy, 2, Duration::from_secs(20)).await;
    assert_eq!((push.hits(&gone), push.hits(&unsubscribed)), (1, 1));
}

pub async fn devices_are_checked_listed_replaced_bounded_and_deleted(kind: Kind) {
    let push = PushStandIn::start().await;
    // A production platform: https on public addresses only.
    let h = harness_with(kind, 1, Some(settings(false))).await;
    let user = Uuid::now_v7();
    let b = push.browser();
    let code = |r: Result<pb::PushDevice, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(add(&h, user, subscription(&b)).await), tonic::Code::InvalidArgument);
    for endpoint in [
        "https://169.254.169.254/latest/meta-data",
        "https://10.1.2.3/push",
        "https://localhost/push",
        "http://push.example.com/x",
    ] {
        let s = pb::PushSubscription { endpoint: endpoint.into(), ..subscription(&b) };
        assert_eq!(code(add(&h, user, s).await), tonic::Code::InvalidArgument, "{endpoint}");
    }

    // A development platform takes loopback; the keys must be a browser's.
    let h = harness_with(kind, 1, Some(settings(true))).await;
    let bad_keys = [
        ("not base64!", b.auth.as_str()),
        (b.auth.as_str(), b.auth.as_str()),
        (b.p256dh.as_str(), b.p256dh.as_str()),
    ];
    for (p256dh, auth) in bad_keys {
        let s = pb::PushSubscription {
            keys: Some(pb::PushSubscriptionKeys { p256dh: p256dh.into(), auth: auth.into() }),
            ..subscription(&b)
        };
        let e = add(&h, user, s).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("keys."), "{}", e.message());
    }
    let first = add(&h, user, subscription(&b)).await.unwrap();
    // The same browser again (new keys, or another account on it): one device, its new owner.
    let again = push.browser();
    let renewed = pb::PushSubscription {
        endpoint: b.endpoint.clone(),
        expiration_time: Some(chrono::Utc::now().timestamp_millis() + 86_400_000),
        keys: subscription(&again).keys,
    };
    let other = Uuid::now_v7();
    add(&h, other, renewed).await.unwrap();
    assert!(devices(&h, user).await.is_empty());
    assert_eq!(devices(&h, other).await.len(), 1);
    assert_eq!(devices(&h, other).await[0].id, first.id);

    // At most 20 devices: the 21st lets the longest unused go.
    let browsers: Vec<Browser> = (0..21).map(|_| push.browser()).collect();
    for b in &browsers {
        add(&h, user, subscription(b)).await.unwrap();
    }
    let kept = devices(&h, user).await;
    assert_eq!(kept.len(), 20);
    assert!(!kept.iter().any(|d| d.endpoint == browsers[0].endpoint));
    assert_eq!(kept[0].endpoint, browsers[20].endpoint, "newest first");

    // Deleting: one's own only.
    let mut c = h.replicas[0].0.clone();
    let del = |id: &str| pb::DeletePushSubscriptionRequest { id: id.into() };
    let e = c.delete_push_subscription(as_user(&h, other, del(&kept[0].id))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    c.delete_push_subscription(as_user(&h, user, del(&kept[0].id))).await.unwrap();
    assert_eq!(devices(&h, user).await.len(), 19);
    let e = c.delete_push_subscription(as_user(&h, user, del("nope"))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // A deleted account's devices go with it.
    let gone = skillup_proto::auth::v1::UserDeleted { user_id: user.to_string() };
    skillup_kit::events::publish(&h.t.infra.bus, &user.to_string(), &gone).await.unwrap();
    for _ in 0..200 {
        if devices(&h, user).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("a deleted account kept its push devices");
}

pub async fn without_a_vapid_key_push_is_off(kind: Kind) {
    let h = harness(kind, 1).await;
    let mut c = h.replicas[0].0.clone();
    let e = c.get_push_key(pb::GetPushKeyRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let user = Uuid::now_v7();
    let e = c.list_push_subscriptions(as_user(&h, user, pb::ListPushSubscriptionsRequest {})).await;
    assert_eq!(e.unwrap_err().code(), tonic::Code::NotFound);
}
