//! Web Push throughput (issue 22): pushes per second from the notification service's real
//! path (`Pusher::deliver`: the devices read, a payload encrypted per browser, a VAPID header,
//! the POST, the delivery noted) to the push service stand-in on this machine, which verifies
//! each JWT and decrypts each message as a browser would (its CPU shares the same 2 cores).
//! The anchor, in the same round: the same number of plain POSTs of the same size through the
//! same kind of client to the same stand-in (answered without any crypto).
//!
//! `cargo run --release -p skillup-notification --example push_rate -- [users] [rounds]`
//! (20 devices per user; the database is PostgreSQL when DATABASE_URL is set, else SQLite).
//! Prints one line per round and the medians with their range.

#![allow(clippy::print_stdout)] // the report is this tool's output

use std::time::{Duration, Instant};

use chrono::Utc;
use skillup_notification::{
    domain::{Notification, NotificationKind, PushSubscriptionInput},
    push::{PushSettings, Pusher, Reach, VapidKey},
};
use skillup_testkit::{Kind, providers::push::PushStandIn};
use uuid::Uuid;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let users: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(50);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let kind = if std::env::var("DATABASE_URL").is_ok() { Kind::Real } else { Kind::Embedded };
    let t = kind.infra().await;
    skillup_notification::migrate(&t.infra.db).await.unwrap();
    let stand_in = PushStandIn::start().await;
    let settings = PushSettings {
        key: VapidKey::generate(),
        subject: "mailto:bench@skillup.test".into(),
        reach: Reach { loopback: true },
    };
    let pusher = Pusher::new(t.infra.db.clone(), settings, "https://skillup.test");
    let mut people = Vec::new();
    for _ in 0..users {
        let user = Uuid::now_v7();
        for _ in 0..skillup_notification::push::MAX_DEVICES {
            let b = stand_in.browser();
            let s = PushSubscriptionInput {
                endpoint: b.endpoint,
                p256dh: b.p256dh,
                auth: b.auth,
                expiration_ms: None,
            };
            pusher.add(user, s).await.unwrap();
        }
        people.push(user);
    }
    let devices = users * skillup_notification::push::MAX_DEVICES;
    let n = Notification {
        id: Uuid::now_v7(),
        kind: NotificationKind::GenerationCompleted,
        title: "Your lesson plan about «Tides» is ready".into(),
        body: "A lesson plan of forty-five minutes: a question to start, three activities, a quiz."
            .into(),
        data: [("task_id".to_owned(), Uuid::now_v7().to_string())].into(),
        created_at: Utc::now(),
        read_at: None,
    };
    let plain = reqwest::Client::new();
    let body = vec![7u8; 300];
    let target = format!("{}/push/unknown", stand_in.server.base_url);
    let (mut rates, mut anchors) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let started = Instant::now();
        let all = futures::future::join_all(people.iter().map(|u| pusher.deliver(*u, &n))).await;
        let took = started.elapsed();
        let delivered = all
            .iter()
            .flatten()
            .filter(|o| **o == skillup_notification::push::Outcome::Delivered)
            .count();
        assert_eq!(delivered, devices, "every push delivered");
        let rate = devices as f64 / took.as_secs_f64();

        let started = Instant::now();
        let sends = (0..devices).map(|_| plain.post(&target).body(body.clone()).send());
        let answers = futures::future::join_all(sends).await;
        assert!(answers.iter().all(|r| r.is_ok()));
        let anchor = devices as f64 / started.elapsed().as_secs_f64();
        println!(
            "round {round}: {rate:.0} pushes/s ({devices} in {took:.2?}); plain POSTs {anchor:.0}/s"
        );
        rates.push(rate);
        anchors.push(anchor);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!("{:.0}/s ({:.0}–{:.0})", v[v.len() / 2], v[0], v[v.len() - 1])
    };
    println!(
        "median of {rounds}: pushes {} against plain POSTs {} ({kind:?} database, {devices} devices)",
        report(&mut rates),
        report(&mut anchors)
    );
}
