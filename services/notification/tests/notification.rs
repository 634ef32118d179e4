//! The notification service through its gRPC API, fed by events on the bus, on real
//! PostgreSQL and RabbitMQ and on the embedded adapters.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use skillup_kit::{
    Shutdown,
    grpc::GrpcServer,
    identity::{Caller, IdentityKey, now_secs},
    mailer::OutboxMailer,
};
use skillup_proto::{
    ai::v1 as aipb,
    notification::v1::{
        self as pb, NotificationKind, notification_service_client::NotificationServiceClient,
    },
};
use skillup_testkit::Channel;
use skillup_testkit::{Kind, TestInfra, TestServer};
use tonic::{Request, Streaming};
use uuid::Uuid;

struct Harness {
    key: Arc<IdentityKey>,
    t: TestInfra,
    replicas: Vec<(NotificationServiceClient<Channel>, TestServer)>,
    notifiers: Vec<skillup_notification::Notifier>,
    outbox: OutboxMailer,
    _shutdown: Shutdown,
}

async fn harness(kind: Kind, replicas: usize) -> Harness {
    harness_with(kind, replicas, None).await
}

/// [`harness`] whose replicas push with `push`.
async fn harness_with(
    kind: Kind,
    replicas: usize,
    push: Option<skillup_notification::push::PushSettings>,
) -> Harness {
    let t = kind.infra().await;
    let bus = t.infra.bus.clone();
    harness_on(t, bus, replicas, push).await
}

/// [`harness_with`] on `t` whose replicas publish and consume through `bus`.
async fn harness_on(
    t: TestInfra,
    bus: skillup_kit::bus::SharedBus,
    replicas: usize,
    push: Option<skillup_notification::push::PushSettings>,
) -> Harness {
    let key = Arc::new(IdentityKey::random());
    let shutdown = Shutdown::new();
    let mut out = Vec::new();
    let mut notifiers = Vec::new();
    let outbox = OutboxMailer::new(
        std::env::temp_dir().join(format!("skillup-notify-{}", skillup_testkit::unique())),
        "SkillUp <no-reply@skillup.test>",
    );
    for _ in 0..replicas {
        // The digest job runs only when a test calls it.
        let mut notifier = skillup_notification::Notifier::new(
            t.infra.db.clone(),
            bus.clone(),
            Arc::new(outbox.clone()),
            "https://skillup.test",
        );
        if let Some(p) = &push {
            notifier = notifier.with_push(p.clone());
        }
        let svc = skillup_notification::start(
            &t.infra,
            notifier,
            Duration::from_secs(3600),
            shutdown.clone(),
        )
        .await
        .unwrap();
        notifiers.push(svc.notifier().clone());
        let server = TestServer::start(
            GrpcServer::builder().add_service(svc.into_server()).identity_key(key.clone()),
        )
        .await;
        out.push((NotificationServiceClient::new(server.channel()), server));
    }
    Harness { key, t, replicas: out, notifiers, outbox, _shutdown: shutdown }
}

#[path = "notification/batches.rs"]
mod batches;
#[path = "notification/choices.rs"]
mod choices;
#[path = "notification/push.rs"]
mod push;
#[path = "notification/receipts.rs"]
mod receipts;
#[path = "notification/sequence.rs"]
mod sequence;

use batches::*;
use choices::*;
use push::*;
use receipts::*;
use sequence::*;

skillup_testkit::both_adapters!(
    a_completion_reaches_an_open_stream_once_even_when_redelivered,
    a_reconnecting_client_gets_what_it_missed_in_order,
    a_user_on_either_replica_gets_every_event,
    lists_unread_counts_read_marks_and_preferences,
    a_burst_of_finished_tasks_sends_one_digest_email,
    people_read_notifications_and_emails_in_their_language_until_they_are_deleted,
    a_payment_is_emailed_with_its_receipt_by_its_own_preference,
    a_burst_on_two_replicas_numbers_each_event_once_without_gaps,
    a_finished_task_is_pushed_to_every_device_in_the_readers_language,
    gone_devices_are_deleted_and_busy_push_services_are_tried_again,
    devices_are_checked_listed_replaced_bounded_and_deleted,
    without_a_vapid_key_push_is_off,
    every_event_reaches_each_channel_as_chosen,
    an_emails_unsubscribe_link_stops_that_events_emails,
    a_finished_generation_is_not_emailed_while_a_console_shows_it,
    a_batch_numbers_each_users_events_in_order_and_skips_what_is_stored,
    a_burst_for_many_people_reaches_every_open_stream_once_in_order,
    a_client_back_after_more_than_a_page_gets_everything_it_missed_in_order,
    a_replica_hands_what_it_stored_to_its_own_streams_at_once,
);

fn as_user<T>(h: &Harness, user: Uuid, msg: T) -> Request<T> {
    let id = Caller { user_id: user.to_string(), exp: now_secs() + 300, ..Default::default() };
    let mut req = Request::new(msg);
    req.metadata_mut().insert("x-skillup-identity", h.key.sign(&id).parse().unwrap());
    req
}

/// Publishes `generation.completed` for a task of `user` under event id `event`; the task's id.
async fn completed(h: &Harness, user: Uuid, event: &str, topic: &str) -> Uuid {
    let id = Uuid::now_v7();
    let task = aipb::Task {
        id: id.to_string(),
        status: aipb::TaskStatus::Completed as i32,
        topic: topic.into(),
        function: "lesson_plan".into(),
        text: "the text".into(),
        ..Default::default()
    };
    skillup_kit::events::publish_with_id(
        &h.t.infra.bus,
        event,
        &user.to_string(),
        &aipb::GenerationCompleted { task: Some(task) },
    )
    .await
    .unwrap();
    id
}

async fn stream(
    h: &Harness,
    replica: usize,
    user: Uuid,
    after: &str,
) -> Streaming<pb::Notification> {
    let mut c = h.replicas[replica].0.clone();
    let req = as_user(h, user, pb::SubscribeRequest { after_id: after.into() });
    c.subscribe(req).await.unwrap().into_inner()
}

async fn next(s: &mut Streaming<pb::Notification>) -> pb::Notification {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("a notification in time")
        .expect("the stream is open")
        .unwrap()
}

async fn nothing_more(s: &mut Streaming<pb::Notification>) {
    if let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(500), s.next()).await {
        panic!("unexpected notification: {n:?}");
    }
}

async fn list(h: &Harness, user: Uuid, unread_only: bool) -> pb::ListNotificationsResponse {
    let mut c = h.replicas[0].0.clone();
    let req = as_user(h, user, pb::ListNotificationsRequest { page: None, unread_only });
    c.list_notifications(req).await.unwrap().into_inner()
}

async fn a_completion_reaches_an_open_stream_once_even_when_redelivered(kind: Kind) {
    let h = harness(kind, 1).await;
    let user = Uuid::now_v7();
    let mut s = stream(&h, 0, user, "").await;
    completed(&h, user, "evt-1", "rust").await;
    let n = next(&mut s).await;
    assert_eq!(n.kind(), NotificationKind::GenerationCompleted);
    assert_eq!(n.title, "Your lesson plan about «rust» is ready");
    assert_eq!(n.body, "the text");
    assert!(n.data.contains_key("task_id"));
    // The same event again (a producer's retry, a broker redelivery): no second notification.
    completed(&h, user, "evt-1", "rust").await;
    nothing_more(&mut s).await;
    assert_eq!(list(&h, user, false).await.notifications.len(), 1);
    // Someone else's event does not reach this stream.
    completed(&h, Uuid::now_v7(), "evt-2", "other").await;
    nothing_more(&mut s).await;
}

async fn a_reconnecting_client_gets_what_it_missed_in_order(kind: Kind) {
    let h = harness(kind, 1).await;
    let user = Uuid::now_v7();
    let mut s = stream(&h, 0, user, "").await;
    completed(&h, user, "m-1", "one").await;
    let seen = next(&mut s).await;
    drop(s);
    for (i, topic) in ["two", "three", "four"].iter().enumerate() {
        completed(&h, user, &format!("m-{}", i + 2), topic).await;
    }
    // Wait until they are stored (the client is away).
    for _ in 0..200 {
        if list(&h, user, false).await.notifications.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut s = stream(&h, 0, user, &seen.id).await;
    let mut titles = Vec::new();
    for _ in 0..3 {
        titles.push(next(&mut s).await.title);
    }
    assert_eq!(
        titles,
        [
            "Your lesson plan about «two» is ready",
            "Your lesson plan about «three» is ready",
            "Your lesson plan about «four» is ready"
        ]
    );
    // …then live ones on the same stream, without repeats.
    completed(&h, user, "m-5", "five").await;
    assert_eq!(next(&mut s).await.title, "Your lesson plan about «five» is ready");
    nothing_more(&mut s).await;
    let mut c = h.replicas[0].0.clone();
    let bad =
        c.subscribe(as_user(&h, user, pb::SubscribeRequest { after_id: "nope".into() })).await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
}

async fn a_user_on_either_replica_gets_every_event(kind: Kind) {
    let h = harness(kind, 2).await;
    let user = Uuid::now_v7();
    let mut on_a = stream(&h, 0, user, "").await;
    let mut on_b = stream(&h, 1, user, "").await;
    for i in 0..6 {
        completed(&h, user, &format!("r-{i}"), &format!("topic {i}")).await;
    }
    // The events are consumed by either replica; both streams see all six, in order.
    for s in [&mut on_a, &mut on_b] {
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(next(s).await.title);
        }
        let want: Vec<String> =
            (0..6).map(|i| format!("Your lesson plan about «topic {i}» is ready")).collect();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, want, "every event once");
        nothing_more(s).await;
    }
    assert_eq!(list(&h, user, false).await.notifications.len(), 6, "stored once each");
}

async fn lists_unread_counts_read_marks_and_preferences(kind: Kind) {
    let h = harness(kind, 1).await;
    let user = Uuid::now_v7();
    for i in 0..3 {
        completed(&h, user, &format!("l-{i}"), &format!("t{i}")).await;
    }
    let mut all = list(&h, user, false).await;
    for _ in 0..200 {
        if all.notifications.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        all = list(&h, user, false).await;
    }
    assert_eq!(all.unread_count, 3);
    assert_eq!(all.notifications[0].title, "Your lesson plan about «t2» is ready", "newest first");
    let mut c = h.replicas[0].0.clone();
    let first = all.notifications[2].id.clone();
    // Another account neither sees them nor can mark them (issue 26's cross-user checks).
    let stranger = Uuid::now_v7();
    assert!(list(&h, stranger, false).await.notifications.is_empty());
    let r = c
        .mark_read(as_user(
            &h,
            stranger,
            pb::MarkReadRequest { ids: vec![first.clone()], all: false },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.updated, 0, "a stranger marks nothing");
    assert_eq!(list(&h, user, true).await.unread_count, 3);
    let r = c
        .mark_read(as_user(&h, user, pb::MarkReadRequest { ids: vec![first.clone()], all: false }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.updated, 1);
    let unread = list(&h, user, true).await;
    assert_eq!((unread.notifications.len(), unread.unread_count), (2, 2));
    let r = c
        .mark_read(as_user(&h, user, pb::MarkReadRequest { ids: vec![], all: true }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.updated, 2);
    assert_eq!(list(&h, user, false).await.unread_count, 0);

    let p = c
        .get_preferences(as_user(&h, user, pb::GetPreferencesRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(p.email_on_generation && p.email_on_payment, "email on by default");
    assert_eq!(p.events.len(), 6, "every event, defaults included");
    let immediate = pb::Delivery::Immediate as i32;
    assert!(p.events.iter().all(|e| e.email == immediate && e.push == immediate), "{p:?}");
    // An older client's switches: generation emails off, the rest as they were.
    let want = pb::Preferences {
        email_on_generation: false,
        email_on_payment: true,
        locale: "ru".into(),
        events: vec![],
    };
    let got = c.update_preferences(as_user(&h, user, want.clone())).await.unwrap().into_inner();
    assert_eq!(
        (got.email_on_generation, got.email_on_payment, got.locale.as_str()),
        (false, true, "ru")
    );
    let email_of = |p: &pb::Preferences, e: pb::NotificationEvent| {
        p.events.iter().find(|x| x.event == e as i32).map(|x| (x.email, x.push)).unwrap()
    };
    let off = pb::Delivery::Off as i32;
    assert_eq!(email_of(&got, pb::NotificationEvent::GenerationFailed), (off, immediate));
    assert_eq!(email_of(&got, pb::NotificationEvent::PaymentReceived), (immediate, immediate));
    // One event's channel changed; every other choice kept.
    let one = pb::Preferences {
        locale: "ru".into(),
        events: vec![pb::EventPreference {
            event: pb::NotificationEvent::PaymentReceived as i32,
            email: pb::Delivery::Digest as i32,
            push: 0,
        }],
        ..Default::default()
    };
    let got = c.update_preferences(as_user(&h, user, one.clone())).await.unwrap().into_inner();
    let digest = pb::Delivery::Digest as i32;
    assert_eq!(email_of(&got, pb::NotificationEvent::PaymentReceived), (digest, immediate));
    assert_eq!(email_of(&got, pb::NotificationEvent::GenerationFailed), (off, immediate));
    let read = c.get_preferences(as_user(&h, user, pb::GetPreferencesRequest {})).await;
    assert_eq!(read.unwrap().into_inner(), got, "as stored");
    // Refused: a digest of pushes, an event left unnamed, a language that is not one.
    let mut bad = one.clone();
    bad.events[0].push = digest;
    let e = c.update_preferences(as_user(&h, user, bad)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let mut bad = one.clone();
    bad.events[0].event = 0;
    let e = c.update_preferences(as_user(&h, user, bad)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let bad = pb::Preferences { locale: "<script>".into(), ..want };
    assert_eq!(
        c.update_preferences(as_user(&h, user, bad)).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
}

/// Sets how `event` is emailed to `user` (push as it was).
async fn choose(h: &Harness, user: Uuid, event: pb::NotificationEvent, email: pb::Delivery) {
    let mut c = h.replicas[0].0.clone();
    let p = pb::Preferences {
        events: vec![pb::EventPreference { event: event as i32, email: email as i32, push: 0 }],
        ..Default::default()
    };
    c.update_preferences(as_user(h, user, p)).await.unwrap();
}

/// The emails to `to`, once there are `n` (and a moment more, to see no more come).
async fn mails_to(h: &Harness, to: &str, n: usize) -> Vec<skillup_kit::mailer::Email> {
    let of =
        || -> Vec<_> { h.outbox.read_all().unwrap().into_iter().filter(|m| m.to == to).collect() };
    for _ in 0..400 {
        if of().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = of();
    assert_eq!(got.len(), n, "{:?}", got.iter().map(|m| &m.subject).collect::<Vec<_>>());
    got
}

async fn registered(h: &Harness, user: Uuid, email: &str) {
    let reg = skillup_proto::auth::v1::UserRegistered {
        user: Some(skillup_proto::auth::v1::User {
            id: user.to_string(),
            email: email.into(),
            ..Default::default()
        }),
    };
    skillup_kit::events::publish(&h.t.infra.bus, &user.to_string(), &reg).await.unwrap();
}

async fn stored(h: &Harness, user: Uuid, n: usize) {
    for _ in 0..400 {
        if list(h, user, false).await.notifications.len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{n} notifications never stored");
}

async fn a_burst_of_finished_tasks_sends_one_digest_email(kind: Kind) {
    let h = harness(kind, 2).await;
    let user = Uuid::now_v7();
    registered(&h, user, "ada@example.com").await;
    for _ in 0..400 {
        if h.notifiers[0].contact(user).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(h.notifiers[0].contact(user).await.unwrap().as_deref(), Some("ada@example.com"));
    choose(&h, user, pb::NotificationEvent::GenerationCompleted, pb::Delivery::Digest).await;
    for i in 0..5 {
        completed(&h, user, &format!("d-{i}"), &format!("burst {i}")).await;
    }
    stored(&h, user, 5).await;
    // Both replicas run the job at once: one digest, not two, and not five emails.
    let (a, b) = tokio::join!(h.notifiers[0].send_digests(), h.notifiers[1].send_digests());
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    let mails = h.outbox.read_all().unwrap();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, "ada@example.com");
    assert_eq!(mails[0].subject, "5 of your generations have finished");
    for i in 0..5 {
        assert!(mails[0].body.contains(&format!("«burst {i}»")), "{}", mails[0].body);
    }
    assert_eq!(h.notifiers[0].send_digests().await.unwrap(), 0, "nothing new");
    // A single one gets its own subject.
    completed(&h, user, "d-5", "single").await;
    stored(&h, user, 6).await;
    assert_eq!(h.notifiers[1].send_digests().await.unwrap(), 1);
    let mails = h.outbox.read_all().unwrap();
    assert!(mails.iter().any(|m| m.subject == "Your lesson plan about «single» is ready"));
    // Turned off: no email.
    let mut c = h.replicas[0].0.clone();
    let off = pb::Preferences {
        email_on_generation: false,
        email_on_payment: true,
        locale: String::new(),
        events: vec![],
    };
    c.update_preferences(as_user(&h, user, off)).await.unwrap();
    completed(&h, user, "d-6", "quiet").await;
    stored(&h, user, 7).await;
    assert_eq!(h.notifiers[0].send_digests().await.unwrap(), 0);
    assert_eq!(h.outbox.read_all().unwrap().len(), 2);
}

async fn people_read_notifications_and_emails_in_their_language_until_they_are_deleted(kind: Kind) {
    use skillup_proto::auth::v1 as authpb;
    let h = harness(kind, 1).await;
    let user = Uuid::now_v7();
    let account = |email: &str, locale: &str| authpb::User {
        id: user.to_string(),
        email: email.into(),
        locale: locale.into(),
        ..Default::default()
    };
    let bus = &h.t.infra.bus;
    let reg = authpb::UserRegistered { user: Some(account("ivan@example.com", "ru")) };
    skillup_kit::events::publish(bus, &user.to_string(), &reg).await.unwrap();
    choose(&h, user, pb::NotificationEvent::GenerationCompleted, pb::Delivery::Digest).await;
    for i in 0..3 {
        completed(&h, user, &format!("ru-{user}-{i}"), &format!("тема {i}")).await;
    }
    stored(&h, user, 3).await;
    let mut sent = 0;
    for _ in 0..400 {
        sent += h.notifiers[0].send_digests().await.unwrap();
        if sent > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mails = h.outbox.read_all().unwrap();
    let mail = mails.iter().find(|m| m.to == "ivan@example.com").expect("a digest");
    assert_eq!(mail.subject, "Готовы 3 генерации");
    assert!(mail.body.starts_with("Здравствуйте!\n\n• Текст «тема 0» готов"), "{}", mail.body);
    assert!(
        mail.body.contains("Отписаться от этих писем: https://skillup.test/unsubscribe?token="),
        "{}",
        mail.body
    );
    assert!(
        mail.unsubscribe
            .as_deref()
            .unwrap()
            .starts_with("https://skillup.test/api/notifications/unsubscribe?token=")
    );

    // The list speaks the reader's language, whatever the email's.
    let in_lang = |locale: &str| {
        let id = Caller {
            user_id: user.to_string(),
            exp: now_secs() + 300,
            locale: locale.into(),
            ..Default::default()
        };
        let mut req = Request::new(pb::ListNotificationsRequest::default());
        req.metadata_mut().insert("x-skillup-identity", h.key.sign(&id).parse().unwrap());
        req
    };
    let mut c = h.replicas[0].0.clone();
    let ru = c.list_notifications(in_lang("ru")).await.unwrap().into_inner().notifications;
    assert_eq!(ru[0].title, "Текст «тема 2» готов");
    let en = c.list_notifications(in_lang("en")).await.unwrap().into_inner().notifications;
    assert_eq!(en[0].title, "Your lesson plan about «тема 2» is ready");

    // A new address and language: the next email follows both.
    let up = authpb::UserUpdated { user: Some(account("ivan@new.example.com", "en")) };
    skillup_kit::events::publish(bus, &user.to_string(), &up).await.unwrap();
    for _ in 0..400 {
        if h.notifiers[0].contact(user).await.unwrap().as_deref() == Some("ivan@new.example.com") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    completed(&h, user, &format!("en-{user}"), "topic").await;
    stored(&h, user, 4).await;
    assert_eq!(h.notifiers[0].send_digests().await.unwrap(), 1);
    let mails = h.outbox.read_all().unwrap();
    let mail = mails.iter().find(|m| m.to == "ivan@new.example.com").expect("to the new address");
    assert_eq!(mail.subject, "Your lesson plan about «topic» is ready");

    // Deleted: nothing of the person is left here.
    let del = authpb::UserDeleted { user_id: user.to_string() };
    skillup_kit::events::publish(bus, &user.to_string(), &del).await.unwrap();
    for _ in 0..400 {
        if h.notifiers[0].contact(user).await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(h.notifiers[0].contact(user).await.unwrap(), None);
    assert!(list(&h, user, false).await.notifications.is_empty());
}
