//! The subscribe service through its gRPC client, charging through the real payment service,
//! on real PostgreSQL and RabbitMQ and on SQLite.

use std::{sync::Arc, time::Duration};

use skillup_kit::{
    grpc::GrpcServer,
    identity::{Caller, IdentityKey, now_secs},
};
use skillup_proto::{
    common::v1::ErrorCode,
    payment::v1::{self as paypb, payment_service_client::PaymentServiceClient},
    subscribe::v1::{self as pb, subscription_service_client::SubscriptionServiceClient},
};
use skillup_subscribe::{PaymentBilling, Subscriptions};
use skillup_testkit::{Kind, TestInfra, TestServer};
use tonic::{Code, Request, transport::Channel};
use uuid::Uuid;

struct Harness {
    client: SubscriptionServiceClient<Channel>,
    payments: PaymentServiceClient<Channel>,
    key: Arc<IdentityKey>,
    channel: Channel,
    t: TestInfra,
    _server: TestServer,
    _payment: TestServer,
}

async fn harness(kind: Kind) -> Harness {
    let t = kind.infra().await;
    let key = Arc::new(IdentityKey::random());
    // The subscribe service charges through the payment service's gRPC API.
    let shutdown = skillup_kit::Shutdown::new();
    let payment = skillup_payment::build(&t.infra, shutdown.clone()).await.unwrap();
    let pay_server = TestServer::start(
        GrpcServer::builder().add_service(payment.into_server()).identity_key(key.clone()),
    )
    .await;
    let billing = Arc::new(PaymentBilling::new(pay_server.channel()));
    let subscribe =
        skillup_subscribe::build(&t.infra, billing, Duration::from_secs(3600), shutdown)
            .await
            .unwrap();
    let server = TestServer::start(
        GrpcServer::builder().add_service(subscribe.into_server()).identity_key(key.clone()),
    )
    .await;
    let channel = pay_server.channel();
    Harness {
        client: SubscriptionServiceClient::new(server.channel()),
        payments: PaymentServiceClient::new(channel.clone()),
        key,
        channel,
        t,
        _server: server,
        _payment: pay_server,
    }
}

skillup_testkit::both_adapters!(
    everyone_starts_on_free_with_its_functions_and_quota,
    subscribing_charges_once_per_period_and_switching_is_prorated,
    fifty_concurrent_reserves_against_ten_holds_worth_of_quota,
    the_first_concurrent_reserves_of_a_period_are_never_refused_falsely,
    holds_commit_release_and_expire_exactly_once,
    renewal_on_two_replicas_charges_once_and_unpaid_expires_to_free,
    a_paid_period_is_one_usage_row_and_every_replica_reserves_on_the_plan_of_now,
    switching_plans_keeps_the_usage_and_charges_every_switch,
    concurrent_subscribes_charge_once,
    a_settled_hold_is_never_taken_again_by_its_key,
    usage_history_tells_periods_days_and_functions,
);

fn as_user<T>(h: &Harness, user: Uuid, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    let id = Caller { user_id: user.to_string(), exp: now_secs() + 60, ..Default::default() };
    req.metadata_mut().insert("x-skillup-identity", h.key.sign(&id).parse().unwrap());
    req
}

async fn fund(h: &mut Harness, user: Uuid, amount: i64) {
    let req = as_user(
        h,
        user,
        paypb::TopUpRequest {
            amount_minor: amount,
            currency: "USD".into(),
            idempotency_key: format!("fund-{}", Uuid::now_v7()),
            payment_method: String::new(),
        },
    );
    h.payments.top_up(req).await.unwrap();
}

async fn balance(h: &mut Harness, user: Uuid) -> i64 {
    let req = as_user(h, user, paypb::GetBalanceRequest { currency: "USD".into() });
    h.payments.get_balance(req).await.unwrap().into_inner().available.unwrap().amount_minor
}

/// Another replica of the service, on the same database, bus and cache.
fn replica(h: &Harness) -> Subscriptions {
    Subscriptions::new(
        h.t.infra.db.clone(),
        h.t.infra.bus.clone(),
        h.t.infra.cache.clone(),
        Arc::new(PaymentBilling::new(h.channel.clone())),
    )
}

async fn mine(h: &mut Harness, user: Uuid) -> pb::Subscription {
    let req = as_user(h, user, pb::GetMySubscriptionRequest {});
    h.client.get_my_subscription(req).await.unwrap().into_inner()
}

fn plan(id: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest { plan: id.into(), idempotency_key: String::new() }
}

fn code_of(s: &tonic::Status) -> ErrorCode {
    skillup_kit::error::detail_of(s).map(|d| d.code()).unwrap_or(ErrorCode::Unspecified)
}

async fn entitled(h: &mut Harness, user: Uuid, f: &str) -> pb::CheckEntitlementResponse {
    h.client
        .check_entitlement(pb::CheckEntitlementRequest {
            user_id: user.to_string(),
            function_id: f.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn everyone_starts_on_free_with_its_functions_and_quota(kind: Kind) {
    let mut h = harness(kind).await;
    let plans = h.client.list_plans(pb::ListPlansRequest {}).await.unwrap().into_inner().plans;
    let ids: Vec<&str> = plans.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["free", "basic", "premium"]);
    let user = Uuid::now_v7();
    let me = mine(&mut h, user).await;
    assert_eq!(me.plan.unwrap().id, "free");
    let usage = me.usage.unwrap();
    assert_eq!((usage.tokens_used, usage.token_quota), (0, 20_000));
    assert!(entitled(&mut h, user, "quiz").await.allowed);
    let no = entitled(&mut h, user, "lesson_plan").await;
    assert!(!no.allowed);
    assert_eq!(no.reason(), pb::DenyReason::FunctionNotInPlan);
    assert!(no.message.starts_with("Unavailable — subscribe to a plan"), "{}", no.message);
    // Asked on behalf of someone who reads Russian: in Russian.
    let mut req = Request::new(pb::CheckEntitlementRequest {
        user_id: user.to_string(),
        function_id: "lesson_plan".into(),
    });
    req.metadata_mut().insert("accept-language", "ru".parse().unwrap());
    let no = h.client.check_entitlement(req).await.unwrap().into_inner();
    assert!(no.message.starts_with("Недоступно — оформите подписку"), "{}", no.message);
    let err = h
        .client
        .reserve_quota(pb::ReserveQuotaRequest {
            user_id: user.to_string(),
            function_id: "lesson_plan".into(),
            tokens: 10,
            idempotency_key: String::new(),
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), code_of(&err)),
        (Code::FailedPrecondition, ErrorCode::SubscriptionRequired)
    );
}

async fn subscribing_charges_once_per_period_and_switching_is_prorated(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    // No money: refused, still free.
    let err = h.client.subscribe(as_user(&h, user, plan("basic"))).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::InsufficientFunds);
    fund(&mut h, user, 5_000).await;
    let sub = h.client.subscribe(as_user(&h, user, plan("basic"))).await.unwrap().into_inner();
    assert_eq!(sub.plan.unwrap().id, "basic");
    assert_eq!(balance(&mut h, user).await, 5_000 - 990);
    // Again: nothing more is charged.
    h.client.subscribe(as_user(&h, user, plan("basic"))).await.unwrap();
    assert_eq!(balance(&mut h, user).await, 5_000 - 990);
    assert!(entitled(&mut h, user, "lesson_plan").await.allowed);
    // Upgrade: the unused part of basic (almost all of it) is credited.
    h.client.subscribe(as_user(&h, user, plan("premium"))).await.unwrap();
    let left = balance(&mut h, user).await;
    assert!(
        (5_000 - 990 - 2_990 + 985..=5_000 - 990 - 2_990 + 990).contains(&left),
        "prorated: {left}"
    );
    // Cancel: stays premium until the period ends.
    let c = h
        .client
        .cancel_subscription(as_user(&h, user, pb::CancelSubscriptionRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(c.cancel_at_period_end);
    assert_eq!(c.plan.unwrap().id, "premium");
    let err = h.client.subscribe(as_user(&h, user, plan("free"))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn fifty_concurrent_reserves_against_ten_holds_worth_of_quota(kind: Kind) {
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

async fn the_first_concurrent_reserves_of_a_period_are_never_refused_falsely(kind: Kind) {
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

async fn holds_commit_release_and_expire_exactly_once(kind: Kind) {
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
        .commit_quota(pb::CommitQuotaRequest { hold_id: a.hold_id.clone(), actual_tokens: 600 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((u.tokens_used, u.tokens_held, u.generations_used), (600, 0, 1));
    let u = h
        .client
        .commit_quota(pb::CommitQuotaRequest { hold_id: a.hold_id.clone(), actual_tokens: 600 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.tokens_used, 600);
    let err = h
        .client
        .release_quota(pb::ReleaseQuotaRequest { hold_id: a.hold_id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "a committed hold cannot be released: {err:?}");
    let b = h.client.reserve_quota(reserve(5_000, "b", 60)).await.unwrap().into_inner();
    let u = h
        .client
        .commit_quota(pb::CommitQuotaRequest { hold_id: b.hold_id, actual_tokens: 9_999 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.tokens_used, 5_600, "capped at the hold");
    let c = h.client.reserve_quota(reserve(1_000, "c", 60)).await.unwrap().into_inner();
    let u = h
        .client
        .release_quota(pb::ReleaseQuotaRequest { hold_id: c.hold_id })
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
        Arc::new(PaymentBilling::new(h.channel.clone())),
    );
    assert_eq!(subs.expire_due(None).await.unwrap(), 1);
    assert_eq!(subs.expire_due(None).await.unwrap(), 0);
    let usage =
        h.client.get_usage(as_user(&h, user, pb::GetUsageRequest {})).await.unwrap().into_inner();
    assert_eq!((usage.tokens_used, usage.tokens_held, usage.generations_held), (5_600, 0, 0));
    let err = h
        .client
        .commit_quota(pb::CommitQuotaRequest { hold_id: d.hold_id, actual_tokens: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "an expired hold cannot be committed");
    // Settling by id alone still tells an unknown hold (404) and a malformed id (400).
    let unknown = Uuid::now_v7().to_string();
    let err = h
        .client
        .commit_quota(pb::CommitQuotaRequest { hold_id: unknown.clone(), actual_tokens: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err =
        h.client.release_quota(pb::ReleaseQuotaRequest { hold_id: unknown }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = h
        .client
        .commit_quota(pb::CommitQuotaRequest { hold_id: "not-a-hold".into(), actual_tokens: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let usage =
        h.client.get_usage(as_user(&h, user, pb::GetUsageRequest {})).await.unwrap().into_inner();
    assert_eq!((usage.tokens_used, usage.generations_used), (5_600, 2), "nothing moved");
}

async fn renewal_on_two_replicas_charges_once_and_unpaid_expires_to_free(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    fund(&mut h, user, 1_500).await;
    h.client.subscribe(as_user(&h, user, plan("basic"))).await.unwrap();
    assert_eq!(balance(&mut h, user).await, 510);
    fund(&mut h, user, 1_000).await;
    let (a, b) = (replica(&h), replica(&h));
    a.set_period_end(user, chrono::Utc::now() - chrono::Duration::seconds(1)).await.unwrap();
    let (ra, rb) = tokio::join!(a.renew_due(), b.renew_due());
    ra.unwrap();
    rb.unwrap();
    assert_eq!(balance(&mut h, user).await, 1_510 - 990, "charged once for the new period");
    let me = mine(&mut h, user).await;
    assert_eq!(me.plan.unwrap().id, "basic");
    assert!(me.current_period_end.unwrap().seconds > now_secs() as i64, "the period moved on");
    // The next period cannot be paid (520 < 990): back to free.
    a.set_period_end(user, chrono::Utc::now() - chrono::Duration::seconds(1)).await.unwrap();
    a.renew_due().await.unwrap();
    let me = mine(&mut h, user).await;
    assert_eq!(me.plan.unwrap().id, "free");
    assert_eq!(balance(&mut h, user).await, 520, "nothing taken");
}

async fn a_paid_period_is_one_usage_row_and_every_replica_reserves_on_the_plan_of_now(kind: Kind) {
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

/// Issue 26.2: basic ↔ premium cycles reset the usage to 0 while the switch charge was
/// replayed (same key per plan and day) instead of charged; a third switch failed with 503.
async fn switching_plans_keeps_the_usage_and_charges_every_switch(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    let subs = replica(&h);
    fund(&mut h, user, 20_000).await;
    h.client.subscribe(as_user(&h, user, plan("basic"))).await.unwrap();
    let hold = subs.reserve(user, "quiz", 5_000, "", 60).await.unwrap();
    subs.commit(&hold.id.to_string(), 4_000).await.unwrap();
    let held = subs.reserve(user, "quiz", 1_000, "", 60).await.unwrap();
    let mut paid = 990;
    assert_eq!(balance(&mut h, user).await, 20_000 - paid);
    for (n, to) in ["premium", "basic", "premium", "basic", "premium"].iter().enumerate() {
        let before = balance(&mut h, user).await;
        let sub = h.client.subscribe(as_user(&h, user, plan(to))).await.unwrap().into_inner();
        assert_eq!(sub.plan.as_ref().unwrap().id, *to, "switch {n}");
        let u = sub.usage.unwrap();
        assert_eq!(
            (u.tokens_used, u.generations_used, u.tokens_held, u.generations_held),
            (4_000, 1, 1_000, 1),
            "switch {n} to {to} keeps the period's usage and its hold in flight"
        );
        let after = balance(&mut h, user).await;
        if *to == "premium" {
            // Premium less the unused basic (its whole price, give or take a second).
            assert!(
                (2_990 - 990..=2_990 - 985).contains(&(before - after)),
                "{n}: {before} -> {after}"
            );
        } else {
            assert_eq!(before, after, "{n}: the premium credit covers basic");
        }
        paid += before - after;
    }
    assert_eq!(balance(&mut h, user).await, 20_000 - paid);
    // The hold taken before the switches settles into the same period.
    subs.commit(&held.id.to_string(), 500).await.unwrap();
    let u =
        h.client.get_usage(as_user(&h, user, pb::GetUsageRequest {})).await.unwrap().into_inner();
    assert_eq!((u.tokens_used, u.generations_used, u.tokens_held), (4_500, 2, 0));

    // A client's idempotency key binds to one change from one state: sent again with another
    // plan it is a conflict, never a 503; from a later state it is a new change, charged anew.
    let keyed = |p: &str| pb::SubscribeRequest { plan: p.into(), idempotency_key: "k-1".into() };
    let poor = Uuid::now_v7();
    let err = h.client.subscribe(as_user(&h, poor, keyed("basic"))).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::InsufficientFunds);
    let err = h.client.subscribe(as_user(&h, poor, keyed("premium"))).await.unwrap_err();
    assert_eq!((err.code(), code_of(&err)), (Code::AlreadyExists, ErrorCode::IdempotencyKeyReused));
    h.client.subscribe(as_user(&h, user, plan("basic"))).await.unwrap();
    let before = balance(&mut h, user).await;
    h.client.subscribe(as_user(&h, user, keyed("premium"))).await.unwrap();
    h.client.subscribe(as_user(&h, user, keyed("premium"))).await.unwrap();
    h.client.subscribe(as_user(&h, user, plan("basic"))).await.unwrap();
    h.client.subscribe(as_user(&h, user, keyed("premium"))).await.unwrap();
    let spent = before - balance(&mut h, user).await;
    assert!((2 * (2_990 - 990)..=2 * (2_990 - 985)).contains(&spent), "two upgrades paid: {spent}");
}

/// Issue 26.2: two concurrent subscribes from free both charged in full.
async fn concurrent_subscribes_charge_once(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    fund(&mut h, user, 10_000).await;
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (mut c, req) = (h.client.clone(), as_user(&h, user, plan("basic")));
            tokio::spawn(async move { c.subscribe(req).await })
        })
        .collect();
    let mut ok = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(s) => {
                assert_eq!(s.into_inner().plan.unwrap().id, "basic");
                ok += 1;
            }
            Err(e) => assert_eq!(code_of(&e), ErrorCode::Conflict, "{e:?}"),
        }
    }
    assert!(ok >= 1);
    assert_eq!(balance(&mut h, user).await, 10_000 - 990, "charged once");
    let calls: Vec<_> = ["premium", "basic", "premium", "basic"]
        .iter()
        .map(|p| {
            let (mut c, req) = (h.client.clone(), as_user(&h, user, plan(p)));
            tokio::spawn(async move { c.subscribe(req).await })
        })
        .collect();
    for c in calls {
        if let Err(e) = c.await.unwrap() {
            assert_eq!(code_of(&e), ErrorCode::Conflict, "{e:?}");
        }
    }
    // Whatever order they ran in, the money matches the plan held: each switch to premium paid
    // its difference, never more than premium costs in all.
    let me = mine(&mut h, user).await;
    let spent = 10_000 - balance(&mut h, user).await;
    assert!((990..=990 + 2 * 2_000).contains(&spent), "{spent} for {:?}", me.plan);
}

/// Issue 26.1 (the quota side): a reserve whose key's hold was settled took it again.
async fn a_settled_hold_is_never_taken_again_by_its_key(kind: Kind) {
    let h = harness(kind).await;
    let user = Uuid::now_v7();
    let subs = replica(&h);
    let first = subs.reserve(user, "quiz", 100, "key-1", 60).await.unwrap();
    let again = subs.reserve(user, "quiz", 100, "key-1", 60).await.unwrap();
    assert_eq!(first.id, again.id, "a retry while held finds the same hold");
    subs.commit(&first.id.to_string(), 100).await.unwrap();
    let err = subs.reserve(user, "quiz", 100, "key-1", 60).await.unwrap_err();
    assert!(matches!(err, skillup_subscribe::error::SubscribeError::KeyReused(_)), "{err:?}");
    let status: tonic::Status = err.into();
    assert_eq!(code_of(&status), ErrorCode::IdempotencyKeyReused);
}

async fn usage_history_tells_periods_days_and_functions(kind: Kind) {
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
                let commit = pb::CommitQuotaRequest { hold_id: hold.hold_id, actual_tokens };
                h.client.commit_quota(commit).await.unwrap();
            }
            None => {
                h.client
                    .release_quota(pb::ReleaseQuotaRequest { hold_id: hold.hold_id })
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
