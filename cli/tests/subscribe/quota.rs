//! Quota: holds taken, settled and expired exactly once under concurrency, one usage row per
//! period, and the usage history.

use super::*;

pub(crate) async fn fifty_concurrent_reserves_against_ten_holds_worth_of_quota(kind: Kind) {
    let h = harness(kind).await;
    let user = Uuid::now_v7();
    // Free: 20,000 tokens per period; each reserve asks for 2,000.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let mut c = h.client.clone();
            tokio::spawn(async move {
                c.reserve_quota(pb::ReserveQuotaRequest {
                    user_id: user.to_string(),
                    function_id: "quiz".into(),
                    tokens: 2_000,
                    idempotency_key: String::new(),
                    ttl_seconds: 60,
                })
                .await
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(code_of(&e), ErrorCode::QuotaExceeded, "{e:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (10, 40));
    let mut c = h.client.clone();
    let usage = c.get_usage(as_user(&h, user, pb::GetUsageRequest {})).await.unwrap().into_inner();
    assert_eq!((usage.tokens_held, usage.generations_held), (20_000, 10));
    let mut h = h;
    let no = entitled(&mut h, user, "quiz").await;
    assert_eq!(no.reason(), pb::DenyReason::QuotaExhausted);
}

pub(crate) async fn the_first_concurrent_reserves_of_a_period_are_never_refused_falsely(
    kind: Kind,
) {
    let h = harness(kind).await;
    // A fresh user has no usage row yet: twenty first reserves race to create it, and every
    // one of them fits the quota (20 × 100 of 20,000 tokens, 20 of 30 generations).
    for _ in 0..3 {
        let user = Uuid::now_v7();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let mut c = h.client.clone();
                tokio::spawn(async move {
                    c.reserve_quota(pb::ReserveQuotaRequest {
                        user_id: user.to_string(),
                        function_id: "quiz".into(),
                        tokens: 100,
                        idempotency_key: String::new(),
                        ttl_seconds: 60,
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().expect("a reserve well inside the quota");
        }
    }
}

pub(crate) async fn holds_commit_release_and_expire_exactly_once(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    let reserve = |tokens, key: &str, ttl| pb::ReserveQuotaRequest {
        user_id: user.to_string(),
        function_id: "summary".into(),
        tokens,
        idempotency_key: key.into(),
        ttl_seconds: ttl,
    };
    let a = h.client.reserve_quota(reserve(1_000, "a", 60)).await.unwrap().into_inner();
    let again = h.client.reserve_quota(reserve(1_000, "a", 60)).await.unwrap().into_inner();
    assert_eq!(a.hold_id, again.hold_id, "a retried reserve gets the same hold");
    // Commit charges the actual use, never more than was held; twice is once.
    let u = h
        .client
        .commit_quota(pb::CommitQuotaRequest {
            hold_id: a.hold_id.clone(),
            actual_tokens: 600,
            queue_wait: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((u.tokens_used, u.tokens_held, u.generations_used), (600, 0, 1));
    let u = h
        .client
        .commit_quota(pb::CommitQuotaRequest {
            hold_id: a.hold_id.clone(),
            actual_tokens: 600,
            queue_wait: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.tokens_used, 600);
    let err = h
        .client
        .release_quota(pb::ReleaseQuotaRequest { hold_id: a.hold_id.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "a committed hold cannot be released: {err:?}");
    let b = h.client.reserve_quota(reserve(5_000, "b", 60)).await.unwrap().into_inner();
    let u = h
        .client
        .commit_quota(pb::CommitQuotaRequest {
            hold_id: b.hold_id,
            actual_tokens: 9_999,
            queue_wait: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.tokens_used, 5_600, "capped at the hold");
    let c = h.client.reserve_quota(reserve(1_000, "c", 60)).await.unwrap().into_inner();
    let u = h
        .client
        .release_quota(pb::ReleaseQuotaRequest { hold_id: c.hold_id, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((u.tokens_used, u.tokens_held, u.generations_used), (5_600, 0, 2));
    // A hold never settled comes back when it expires.
    let d = h.client.reserve_quota(reserve(3_000, "d", 1)).await.unwrap().into_inner();
    assert_eq!(d.usage.unwrap().tokens_held, 3_000);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let subs = Subscriptions::new(
        h.t.infra.db.clone(),
        h.t.infra.bus.clone(),
        h.t.infra.cache.clone(),
        Arc::new(PaymentBilling::new(h._payment.channel_as("subscribe"))),
    );
    assert_eq!(subs.expire_due(None).await.unwrap(), 1);
    assert_eq!(subs.expire_due(None).await.unwrap(), 0);
    let usage =
        h.client.get_usage(as_user(&h, user, pb::GetUsageRequest {})).await.unwrap().into_inner();
    assert_eq!((usage.tokens_used, usage.tokens_held, usage.generations_held), (5_600, 0, 0));
    let err = h
        .client
        .commit_quota(pb::CommitQuotaRequest {
            hold_id: d.hold_id,
            actual_tokens: 1,
            queue_wait: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "an expired hold cannot be committed");
    // Settling by id alone still tells an unknown hold (404) and a malformed id (400).
    let unknown = Uuid::now_v7().to_string();
    let err = h
        .client
        .commit_quota(pb::CommitQuotaRequest {
            hold_id: unknown.clone(),
            actual_tokens: 1,
            queue_wait: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = h
        .client
        .release_quota(pb::ReleaseQuotaRequest { hold_id: unknown, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = h
        .client
        .commit_quota(pb::CommitQuotaRequest {
            hold_id: "not-a-hold".into(),
            actual_tokens: 1,
            queue_wait: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let usage =
        h.client.get_usage(as_user(&h, user, pb::GetUsageRequest {})).await.unwrap().into_inner();
    assert_eq!((usage.tokens_used, usage.generations_used), (5_600, 2), "nothing moved");
}

pub(crate) async fn a_paid_period_is_one_usage_row_and_every_replica_reserves_on_the_plan_of_now(
    kind: Kind,
) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    let (a, b) = (replica(&h), replica(&h));
    let held = |r: &skillup_subscribe::domain::QuotaHold| (r.usage.token_quota, r.priority);
    // Free: `lesson_plan` is not in it.
    let r = a.reserve(user, "quiz", 100, "free-1", 60).await.unwrap();
    assert_eq!(held(&r), (20_000, 1));
    let e = a.reserve(user, "lesson_plan", 100, "free-2", 60).await.unwrap_err();
    assert!(e.to_string().contains("not in the Free plan"), "{e}");

    // Basic, bought through the other replica: `a` reserves on it at once, `lesson_plan` too.
    fund(&mut h, user, 10_000).await;
    b.subscribe(user, "basic", "").await.unwrap();
    let r = a.reserve(user, "lesson_plan", 100, "basic-1", 60).await.unwrap();
    assert_eq!(held(&r), (200_000, 5), "the plan of now, not the one `a` saw last");
    // However each replica reads the subscription (the table, the shared cache, its own copy),
    // a period is one usage row: every hold of the period shows in it.
    a.reserve(user, "quiz", 100, "basic-2", 60).await.unwrap();
    // (Moving the period's end drops the cached row: the next read is from the table.)
    b.set_period_end(user, chrono::Utc::now() + chrono::Duration::days(20)).await.unwrap();
    for n in 3..=4 {
        a.reserve(user, "quiz", 100, &format!("basic-{n}"), 60).await.unwrap();
    }
    b.reserve(user, "quiz", 100, "basic-5", 60).await.unwrap();
    let usage =
        h.client.get_usage(as_user(&h, user, pb::GetUsageRequest {})).await.unwrap().into_inner();
    assert_eq!((usage.token_quota, usage.tokens_held, usage.generations_held), (200_000, 500, 5));

    // Premium through `b`, then cancelled and its period over: back on free, `a` at once.
    b.subscribe(user, "premium", "").await.unwrap();
    let r = a.reserve(user, "quiz", 100, "premium-1", 60).await.unwrap();
    assert_eq!(held(&r), (1_000_000, 9));
    b.cancel(user).await.unwrap();
    b.set_period_end(user, chrono::Utc::now() - chrono::Duration::seconds(1)).await.unwrap();
    b.renew_due().await.unwrap();
    let e = a.reserve(user, "lesson_plan", 100, "free-3", 60).await.unwrap_err();
    assert!(e.to_string().contains("not in the Free plan"), "{e}");
    let r = a.reserve(user, "quiz", 100, "free-4", 60).await.unwrap();
    assert_eq!(held(&r), (20_000, 1));
    assert_eq!(r.usage.tokens_held, 200, "this month's free holds: `free-1` and `free-4`");
}

/// Issue 26.1 (the quota side): a reserve whose key's hold was settled took it again.
pub(crate) async fn a_settled_hold_is_never_taken_again_by_its_key(kind: Kind) {
    let h = harness(kind).await;
    let user = Uuid::now_v7();
    let subs = replica(&h);
    let first = subs.reserve(user, "quiz", 100, "key-1", 60).await.unwrap();
    let again = subs.reserve(user, "quiz", 100, "key-1", 60).await.unwrap();
    assert_eq!(first.id, again.id, "a retry while held finds the same hold");
    subs.commit(&first.id.to_string(), 100, None).await.unwrap();
    let err = subs.reserve(user, "quiz", 100, "key-1", 60).await.unwrap_err();
    assert!(matches!(err, skillup_subscribe::error::SubscribeError::KeyReused(_)), "{err:?}");
    let status: tonic::Status = err.into();
    assert_eq!(code_of(&status), ErrorCode::IdempotencyKeyReused);
}

pub(crate) async fn usage_history_tells_periods_days_and_functions(kind: Kind) {
    use sea_orm::{ActiveModelTrait, Set};
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    for (function, held, used) in [
        ("summary", 1_000, Some(600)),
        ("quiz", 500, Some(200)),
        ("quiz", 500, Some(100)),
        ("quiz", 500, None),
    ] {
        let hold = h
            .client
            .reserve_quota(pb::ReserveQuotaRequest {
                user_id: user.to_string(),
                function_id: function.into(),
                tokens: held,
                idempotency_key: String::new(),
                ttl_seconds: 0,
            })
            .await
            .unwrap()
            .into_inner();
        match used {
            Some(actual_tokens) => {
                let commit = pb::CommitQuotaRequest {
                    hold_id: hold.hold_id,
                    actual_tokens,
                    queue_wait: None,
                };
                h.client.commit_quota(commit).await.unwrap();
            }
            None => {
                h.client
                    .release_quota(pb::ReleaseQuotaRequest {
                        hold_id: hold.hold_id,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }
    }
    // A past period, as its usage row stands.
    let now =
        h.client.get_usage(as_user(&h, user, pb::GetUsageRequest {})).await.unwrap().into_inner();
    let current_start =
        chrono::DateTime::from_timestamp(now.period_start.unwrap().seconds, 0).unwrap();
    let past_start = current_start - chrono::Duration::days(31);
    skillup_subscribe::store::entities::usage::ActiveModel {
        user_id: Set(user),
        period_start: Set(past_start),
        tokens_used: Set(7_000),
        tokens_held: Set(0),
        generations_used: Set(7),
        generations_held: Set(0),
    }
    .insert(&h.t.infra.db)
    .await
    .unwrap();

    let key = h.key.clone();
    let history = |tz: &str, periods| {
        let mut req = Request::new(pb::GetUsageHistoryRequest { time_zone: tz.into(), periods });
        let id = Caller { user_id: user.to_string(), exp: now_secs() + 60, ..Default::default() };
        req.metadata_mut().insert("x-skillup-identity", key.sign(&id).parse().unwrap());
        req
    };
    let got = h.client.get_usage_history(history("", 0)).await.unwrap().into_inner();
    assert_eq!(got.time_zone, "UTC");
    assert_eq!(got.periods.len(), 2, "{got:?}");
    let cur = &got.periods[0];
    assert!(cur.current);
    assert_eq!((cur.tokens_used, cur.generations_used), (900, 3), "a released hold is no use");
    let by: Vec<(&str, u64, u32)> =
        cur.by_function.iter().map(|f| (f.function_id.as_str(), f.tokens, f.generations)).collect();
    assert_eq!(by, [("summary", 600, 1), ("quiz", 300, 2)], "most tokens first");
    let past = &got.periods[1];
    assert!(!past.current);
    assert_eq!((past.tokens_used, past.generations_used), (7_000, 7));
    assert_eq!(past.period_end, cur.period_start, "a past period ends where the next began");
    let today = chrono::Utc::now().date_naive();
    let first = current_start.date_naive();
    assert_eq!(got.days.len() as i64, (today - first).num_days() + 1, "every day so far");
    assert_eq!(got.days.first().unwrap().date, first.to_string());
    let last = got.days.last().unwrap();
    assert_eq!((last.date.clone(), last.tokens, last.generations), (today.to_string(), 900, 3));

    // Another zone moves days, never totals.
    let far =
        h.client.get_usage_history(history("Pacific/Kiritimati", 1)).await.unwrap().into_inner();
    assert_eq!(far.periods.len(), 1);
    assert_eq!(far.days.iter().map(|d| d.tokens).sum::<u64>(), 900);

    for (tz, periods, field) in [("Nowhere/City", 0, "time_zone"), ("", 37, "periods")] {
        let err = h.client.get_usage_history(history(tz, periods)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, field);
    }
    let err = h.client.get_usage_history(pb::GetUsageHistoryRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}
