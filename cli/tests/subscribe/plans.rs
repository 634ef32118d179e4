//! Plans: the free start, subscribing, switching with proration, renewal and expiry, each
//! charged exactly once.

use super::*;

pub(crate) async fn everyone_starts_on_free_with_its_functions_and_quota(kind: Kind) {
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

pub(crate) async fn subscribing_charges_once_per_period_and_switching_is_prorated(kind: Kind) {
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

pub(crate) async fn renewal_on_two_replicas_charges_once_and_unpaid_expires_to_free(kind: Kind) {
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

/// Issue 26.2: basic ↔ premium cycles reset the usage to 0 while the switch charge was
/// replayed (same key per plan and day) instead of charged; a third switch failed with 503.
pub(crate) async fn switching_plans_keeps_the_usage_and_charges_every_switch(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    let subs = replica(&h);
    fund(&mut h, user, 20_000).await;
    h.client.subscribe(as_user(&h, user, plan("basic"))).await.unwrap();
    let hold = subs.reserve(user, "quiz", 5_000, "", 60).await.unwrap();
    subs.commit(&hold.id.to_string(), 4_000, None).await.unwrap();
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
    subs.commit(&held.id.to_string(), 500, None).await.unwrap();
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
pub(crate) async fn concurrent_subscribes_charge_once(kind: Kind) {
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

/// An administrator's call (the edge's assertion of an admin signed in).
pub(crate) fn as_admin<T>(h: &Harness, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    let id = Caller {
        user_id: Uuid::now_v7().to_string(),
        scopes: vec!["user".into(), "admin".into()],
        sid: Uuid::now_v7().to_string(),
        exp: now_secs() + 60,
        ..Default::default()
    };
    req.metadata_mut().insert("x-skillup-identity", h.key.sign(&id).parse().unwrap());
    req
}

fn team(price: i64, tokens: u64) -> pb::Plan {
    pb::Plan {
        id: "team".into(),
        title: "Team".into(),
        price: Some(skillup_proto::common::v1::Money {
            amount_minor: price,
            currency: "USD".into(),
        }),
        period_days: 30,
        functions: vec!["quiz".into(), "summary".into()],
        token_quota: tokens,
        generation_quota: 50,
        rate_limit_tier: "basic".into(),
        priority: 5,
        archived: false,
        service_level: None,
    }
}

/// Issue 24: operators create and edit plans and archive them; a subscriber keeps the terms
/// bought until the period ends, a renewal takes the terms of the day, an archived plan is
/// neither sold nor renewed; every change is audited; nobody else may.
pub(crate) async fn admins_edit_plans_and_subscribers_keep_their_terms_until_renewal(kind: Kind) {
    let mut h = harness(kind).await;
    let mut audit = skillup_kit::events::subscribe::<skillup_proto::common::v1::AuditEntry>(
        &h.t.infra.bus,
        &format!("audit-plans-{}", Uuid::now_v7()),
    )
    .await
    .unwrap();
    let save = |p: pb::Plan, id: &str| pb::SavePlanRequest {
        plan: Some(p),
        reason: "pricing review".into(),
        plan_id: id.into(),
    };
    // Nobody but an admin.
    let user = Uuid::now_v7();
    let err = h.client.create_plan(as_user(&h, user, save(team(500, 1_000), ""))).await;
    assert_eq!(err.unwrap_err().code(), Code::PermissionDenied);
    // Bad terms are refused, naming the field; the free plan stays free and on offer.
    for (p, field) in [
        (pb::Plan { id: "Team!".into(), ..team(500, 1_000) }, "plan.id"),
        (pb::Plan { period_days: 0, ..team(500, 1_000) }, "plan.period_days"),
        (pb::Plan { functions: vec![], ..team(500, 1_000) }, "plan.functions"),
        (pb::Plan { priority: 10, ..team(500, 1_000) }, "plan.priority"),
    ] {
        let err = h.client.create_plan(as_admin(&h, save(p, ""))).await.unwrap_err();
        let d = skillup_kit::error::detail_of(&err).unwrap();
        assert_eq!((d.code(), d.field.as_str()), (ErrorCode::InvalidArgument, field), "{err:?}");
    }
    let free = h.client.admin_list_plans(as_admin(&h, pb::AdminListPlansRequest {})).await;
    let free = free.unwrap().into_inner().plans.into_iter().find(|p| p.id == "free").unwrap();
    let priced = pb::Plan { price: team(100, 1).price, ..free.clone() };
    let err = h.client.update_plan(as_admin(&h, save(priced, "free"))).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::InvalidArgument);
    let archive = |id: &str, archived: bool| pb::ArchivePlanRequest {
        plan_id: id.into(),
        archived,
        reason: "retired".into(),
    };
    let err = h.client.archive_plan(as_admin(&h, archive("free", true))).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::InvalidArgument);

    // Created: on offer at once; a second with the same code is a conflict.
    let made = h.client.create_plan(as_admin(&h, save(team(500, 1_000), ""))).await.unwrap();
    assert_eq!(made.metadata().get("x-http-status").unwrap(), "201");
    let err = h.client.create_plan(as_admin(&h, save(team(500, 1_000), ""))).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Conflict);
    let listed = h.client.list_plans(pb::ListPlansRequest {}).await.unwrap().into_inner().plans;
    assert!(listed.iter().any(|p| p.id == "team"));

    // Ann buys it at 500 for 1,000 tokens; then the plan becomes 800 for 5,000.
    let (ann, bob, cy) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for u in [ann, bob, cy] {
        fund(&mut h, u, 2_000).await;
    }
    h.client.subscribe(as_user(&h, ann, plan("team"))).await.unwrap();
    assert_eq!(balance(&mut h, ann).await, 1_500);
    let edited = h.client.update_plan(as_admin(&h, save(team(800, 5_000), "team"))).await;
    assert_eq!(edited.unwrap().into_inner().token_quota, 5_000);
    let mismatch = pb::Plan { id: "other".into(), ..team(800, 5_000) };
    let err = h.client.update_plan(as_admin(&h, save(mismatch, "team"))).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::InvalidArgument, "the code cannot change");
    // Ann keeps what she bought; Bob, subscribing now, gets the new terms.
    let me = mine(&mut h, ann).await;
    assert_eq!(me.plan.as_ref().unwrap().price.as_ref().unwrap().amount_minor, 500);
    assert_eq!(me.usage.unwrap().token_quota, 1_000, "the quota Ann paid for");
    h.client.subscribe(as_user(&h, bob, plan("team"))).await.unwrap();
    assert_eq!(balance(&mut h, bob).await, 1_200);
    assert_eq!(mine(&mut h, bob).await.usage.unwrap().token_quota, 5_000);

    // Ann's renewal: the terms of the day, charged at the new price.
    let renewer = replica(&h);
    renewer.set_period_end(ann, chrono::Utc::now() - chrono::Duration::seconds(1)).await.unwrap();
    renewer.renew_due().await.unwrap();
    assert_eq!(balance(&mut h, ann).await, 700);
    let me = mine(&mut h, ann).await;
    assert_eq!(me.usage.unwrap().token_quota, 5_000);
    assert_eq!(me.plan.unwrap().price.unwrap().amount_minor, 800);

    // Archived: off the public list (admins still see it), not sold, not renewed.
    let archived = h.client.archive_plan(as_admin(&h, archive("team", true))).await.unwrap();
    assert!(archived.into_inner().archived);
    let listed = h.client.list_plans(pb::ListPlansRequest {}).await.unwrap().into_inner().plans;
    assert!(!listed.iter().any(|p| p.id == "team"));
    let all = h.client.admin_list_plans(as_admin(&h, pb::AdminListPlansRequest {})).await;
    assert!(all.unwrap().into_inner().plans.iter().any(|p| p.id == "team" && p.archived));
    let err = h.client.subscribe(as_user(&h, cy, plan("team"))).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound);
    assert_eq!(mine(&mut h, bob).await.plan.unwrap().id, "team", "Bob keeps his period");
    let renewer = replica(&h);
    renewer.set_period_end(bob, chrono::Utc::now() - chrono::Duration::seconds(1)).await.unwrap();
    renewer.renew_due().await.unwrap();
    assert_eq!(mine(&mut h, bob).await.plan.unwrap().id, "free");
    assert_eq!(balance(&mut h, bob).await, 1_200, "an archived plan is not renewed");
    // Archiving twice changes nothing (and writes no entry).
    h.client.archive_plan(as_admin(&h, archive("team", true))).await.unwrap();

    // Three entries: create, update, archive — each with the plan before and after.
    let mut actions = Vec::new();
    while actions.len() < 3 {
        let d = tokio::time::timeout(Duration::from_secs(10), audit.next()).await.unwrap().unwrap();
        let (_, e) = skillup_kit::events::decode::<skillup_proto::common::v1::AuditEntry>(
            &d.message.payload,
        )
        .unwrap();
        d.ack().await.unwrap();
        assert_eq!((e.component.as_str(), e.target_id.as_str()), ("subscribe", "team"));
        assert_eq!(e.reason, if e.action == "plan.archive" { "retired" } else { "pricing review" });
        if e.action == "plan.update" {
            let before: serde_json::Value = serde_json::from_str(&e.before).unwrap();
            let after: serde_json::Value = serde_json::from_str(&e.after).unwrap();
            assert_eq!(
                (before["price_minor"].clone(), after["price_minor"].clone()),
                (500.into(), 800.into())
            );
        }
        actions.push(e.action);
    }
    assert_eq!(actions, ["plan.create", "plan.update", "plan.archive"]);
    let quiet = tokio::time::timeout(Duration::from_millis(500), audit.next()).await;
    assert!(quiet.is_err(), "nothing for a change that changed nothing");
}
