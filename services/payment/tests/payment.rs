//! The payment service through its gRPC client, on real PostgreSQL and RabbitMQ and on SQLite.

use std::sync::Arc;

use proptest::prelude::*;
use skillup_kit::{
    grpc::GrpcServer,
    identity::{Caller, IdentityKey, now_secs},
};
use skillup_payment::{
    Ledger, SandboxProvider,
    domain::{Currency, IdempotencyKey, MinorUnits},
};
use skillup_proto::{
    common::v1::{ErrorCode, Money, PageRequest},
    payment::v1::{self as pb, payment_service_client::PaymentServiceClient},
};
use skillup_testkit::Channel;
use skillup_testkit::{Kind, TestInfra, TestServer};
use tonic::{Code, Request};
use uuid::Uuid;

#[path = "payment/money_in.rs"]
mod money_in;

struct Harness {
    client: PaymentServiceClient<Channel>,
    key: Arc<IdentityKey>,
    ledger: Ledger,
    _server: TestServer,
    _t: TestInfra,
}

async fn harness(kind: Kind) -> Harness {
    let t = kind.infra().await;
    let key = Arc::new(IdentityKey::random());
    let svc =
        skillup_payment::build(&t.infra, &Default::default(), "", skillup_kit::Shutdown::new())
            .await
            .unwrap();
    let ledger = Ledger::new(t.infra.db.clone(), t.infra.bus.clone(), Arc::new(SandboxProvider));
    let server = TestServer::start(
        GrpcServer::builder().add_service(svc.into_server()).identity_key(key.clone()),
    )
    .await;
    Harness {
        client: PaymentServiceClient::new(server.channel()),
        key,
        ledger,
        _server: server,
        _t: t,
    }
}

skillup_testkit::both_adapters!(
    top_up_charge_refund_and_the_ledger,
    a_declined_top_up_moves_nothing_and_replays_its_answer,
    a_hundred_concurrent_debits_of_one_against_fifty,
    concurrent_duplicates_execute_once,
    every_new_entry_has_its_event_once,
    an_admin_adjusts_a_balance_once_per_key_with_its_audit_entry,
);

/// An administrator's call (the edge's assertion of an admin signed in).
fn as_admin<T>(h: &Harness, admin: Uuid, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    let id = Caller {
        user_id: admin.to_string(),
        scopes: vec!["user".into(), "admin".into()],
        sid: Uuid::now_v7().to_string(),
        request_id: "req-adjust".into(),
        exp: now_secs() + 60,
        ..Default::default()
    };
    req.metadata_mut().insert("x-skillup-identity", h.key.sign(&id).parse().unwrap());
    req
}

fn adjust(user: Uuid, amount: i64, key: &str, reason: &str) -> pb::AdjustBalanceRequest {
    pb::AdjustBalanceRequest {
        user_id: user.to_string(),
        amount_minor: amount,
        currency: "RUB".into(),
        reason: reason.into(),
        idempotency_key: key.into(),
    }
}

fn as_user<T>(h: &Harness, user: Uuid, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    let id = Caller {
        user_id: user.to_string(),
        scopes: vec!["user".into()],
        tier: "free".into(),
        exp: now_secs() + 60,
        ..Default::default()
    };
    req.metadata_mut().insert("x-skillup-identity", h.key.sign(&id).parse().unwrap());
    req
}

fn top_up(amount: i64, key: &str, method: &str) -> pb::TopUpRequest {
    pb::TopUpRequest {
        amount_minor: amount,
        currency: "RUB".into(),
        idempotency_key: key.into(),
        payment_method: method.into(),
    }
}

fn charge(user: Uuid, amount: i64, key: &str) -> pb::ChargeRequest {
    pb::ChargeRequest {
        user_id: user.to_string(),
        amount: Some(Money { amount_minor: amount, currency: "RUB".into() }),
        idempotency_key: key.into(),
        description: "subscription:basic:2026-11".into(),
    }
}

async fn balance(h: &mut Harness, user: Uuid) -> i64 {
    h.client
        .get_balance(as_user(h, user, pb::GetBalanceRequest { currency: "RUB".into() }))
        .await
        .unwrap()
        .into_inner()
        .available
        .unwrap()
        .amount_minor
}

fn code_of(s: &tonic::Status) -> ErrorCode {
    skillup_kit::error::detail_of(s).map(|d| d.code()).unwrap_or(ErrorCode::Unspecified)
}

async fn top_up_charge_refund_and_the_ledger(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    let err = h.client.get_balance(pb::GetBalanceRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "the caller's own balance needs a caller");
    assert_eq!(balance(&mut h, user).await, 0);

    let res =
        h.client.top_up(as_user(&h, user, top_up(1_000, "t-1", "pm_card_visa"))).await.unwrap();
    assert_eq!(res.metadata().get("x-http-status").unwrap(), "201");
    let first = res.into_inner();
    assert_eq!(first.status(), pb::TransactionStatus::Succeeded);
    assert_eq!(first.balance_after.as_ref().unwrap().amount_minor, 1_000);
    assert!(first.description.contains("sandbox"), "the sandbox says so: {}", first.description);
    // The same key and body: the first answer again, money moved once.
    let res =
        h.client.top_up(as_user(&h, user, top_up(1_000, "t-1", "pm_card_visa"))).await.unwrap();
    assert_eq!(res.metadata().get("x-http-status").unwrap(), "201", "the first answer's status");
    assert_eq!(res.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(res.into_inner(), first, "the first answer");
    // The same key with another body: refused.
    let err =
        h.client.top_up(as_user(&h, user, top_up(2_000, "t-1", "pm_card_visa"))).await.unwrap_err();
    assert_eq!((err.code(), code_of(&err)), (Code::AlreadyExists, ErrorCode::IdempotencyKeyReused));
    // The key may also come as the Idempotency-Key header (metadata).
    let mut req = as_user(&h, user, top_up(5, "", ""));
    req.metadata_mut().insert("idempotency-key", "t-2".parse().unwrap());
    assert_eq!(h.client.top_up(req).await.unwrap().into_inner().idempotency_key, "t-2");
    let err = h.client.top_up(as_user(&h, user, top_up(5, "", ""))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "a top-up needs a key");
    assert_eq!(balance(&mut h, user).await, 1_005);

    let c = h.client.charge(charge(user, 300, "c-1")).await.unwrap().into_inner();
    assert_eq!(c.balance_after.unwrap().amount_minor, 705);
    let r = h
        .client
        .refund(pb::RefundRequest {
            transaction_id: c.id.clone(),
            amount_minor: 100,
            idempotency_key: "r-1".into(),
            description: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.balance_after.unwrap().amount_minor, r.refunded_transaction_id.as_str()),
        (805, c.id.as_str())
    );
    let err = h
        .client
        .refund(pb::RefundRequest {
            transaction_id: c.id.clone(),
            amount_minor: 201,
            idempotency_key: "r-2".into(),
            description: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "never more than what is left of the charge");
    let rest = h
        .client
        .refund(pb::RefundRequest {
            transaction_id: c.id.clone(),
            amount_minor: 0,
            idempotency_key: "r-3".into(),
            description: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.amount.unwrap().amount_minor, 200, "0 = the whole rest");
    assert_eq!(balance(&mut h, user).await, 1_005);

    // The ledger, newest first, by pages.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .client
            .list_transactions(as_user(
                &h,
                user,
                pb::ListTransactionsRequest {
                    page: Some(PageRequest { page_size: 2, page_token: token.clone() }),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.transactions.into_iter().map(|t| t.kind()));
        token = page.page.unwrap().next_page_token;
        if token.is_empty() {
            break;
        }
    }
    use pb::TransactionKind::*;
    assert_eq!(seen, [Refund, Refund, Charge, TopUp, TopUp]);
    assert!(h.ledger.audit().await.unwrap().is_empty());
}

async fn a_declined_top_up_moves_nothing_and_replays_its_answer(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    let err = h
        .client
        .top_up(as_user(&h, user, top_up(500, "d-1", "pm_card_declined")))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::InsufficientFunds);
    assert!(err.message().contains("declined"), "{}", err.message());
    let again = h
        .client
        .top_up(as_user(&h, user, top_up(500, "d-1", "pm_card_declined")))
        .await
        .unwrap_err();
    assert_eq!(again.message(), err.message());
    assert_eq!(balance(&mut h, user).await, 0);
    let err = h.client.charge(charge(user, 1, "c-1")).await.unwrap_err();
    assert_eq!(
        (err.code(), code_of(&err)),
        (Code::FailedPrecondition, ErrorCode::InsufficientFunds)
    );
    // A charge refused for want of funds moved nothing: once funded, the same request goes
    // through, and from then on that is the key's answer.
    h.client.top_up(as_user(&h, user, top_up(10, "t-ok", ""))).await.unwrap();
    let ok = h.client.charge(charge(user, 1, "c-1")).await.unwrap().into_inner();
    assert_eq!(ok.balance_after.unwrap().amount_minor, 9);
    let again = h.client.charge(charge(user, 1, "c-1")).await.unwrap().into_inner();
    assert_eq!(again.id, ok.id);
    assert_eq!(balance(&mut h, user).await, 9);
    for bad in [0, -5, 100_000_001] {
        let err = h.client.charge(charge(user, bad, "c-bad")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
    }
    assert!(h.ledger.audit().await.unwrap().is_empty());
}

async fn a_hundred_concurrent_debits_of_one_against_fifty(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    h.client.top_up(as_user(&h, user, top_up(50, "seed", ""))).await.unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let mut c = h.client.clone();
            tokio::spawn(async move { c.charge(charge(user, 1, &format!("d-{i}"))).await })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(code_of(&e), ErrorCode::InsufficientFunds, "{e:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (50, 50));
    assert_eq!(balance(&mut h, user).await, 0);
    assert!(h.ledger.audit().await.unwrap().is_empty());
}

async fn concurrent_duplicates_execute_once(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    h.client.top_up(as_user(&h, user, top_up(100, "seed", ""))).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let mut c = h.client.clone();
            tokio::spawn(async move {
                c.charge(charge(user, 30, "same-key")).await.map(|r| r.into_inner().id)
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().expect("every duplicate gets the first answer"));
    }
    assert_eq!(ids.len(), 1, "one charge");
    assert_eq!(balance(&mut h, user).await, 70);
    assert!(h.ledger.audit().await.unwrap().is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    TopUp(i64),
    Charge(i64),
    Refund(usize, i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1i64..500).prop_map(Op::TopUp),
        (1i64..400).prop_map(Op::Charge),
        (0usize..8, 0i64..300).prop_map(|(i, a)| Op::Refund(i, a)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Whatever mix of top-ups, charges and refunds runs, the wallet matches a simple model,
    /// never goes negative, every transaction's postings sum to zero and every balance equals
    /// the sum of its postings.
    #[test]
    fn random_movements_keep_the_ledger_balanced(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let t = TestInfra::embedded().await;
            skillup_payment::migrate(&t.infra.db).await.unwrap();
            let ledger = Ledger::new(t.infra.db.clone(), t.infra.bus.clone(), Arc::new(SandboxProvider));
            let user = Uuid::now_v7();
            let mut model: i64 = 0;
            let mut charges: Vec<(String, i64, i64)> = Vec::new(); // (id, amount, refunded)
            for (n, op) in ops.iter().enumerate() {
                let key = IdempotencyKey::parse(&format!("k-{n}")).unwrap();
                let rub = || Currency::parse("currency", "RUB").unwrap();
                let units = |a: i64| MinorUnits::parse("amount", a).unwrap();
                match op {
                    Op::TopUp(a) => {
                        ledger.top_up(user, units(*a), rub(), key, "").await.unwrap();
                        model += a;
                    }
                    Op::Charge(a) => match ledger.charge(user, units(*a), rub(), key, "usage").await {
                        Ok((t, _)) => {
                            assert!(model >= *a);
                            model -= a;
                            charges.push((t.id.to_string(), *a, 0));
                        }
                        Err(_) => assert!(model < *a, "refused with {model} ≥ {a}"),
                    },
                    Op::Refund(i, a) if !charges.is_empty() => {
                        let len = charges.len();
                        let c = &mut charges[*i % len];
                        let asked = if *a == 0 { c.1 - c.2 } else { *a };
                        let id = Uuid::parse_str(&c.0).unwrap();
                        match ledger.refund(id, *a, key, "").await {
                            Ok((t, _)) => {
                                assert_eq!(t.amount_minor, asked);
                                assert!(c.2 + asked <= c.1);
                                c.2 += asked;
                                model += asked;
                            }
                            Err(_) => assert!(asked == 0 || c.2 + asked > c.1),
                        }
                    }
                    Op::Refund(..) => {}
                }
            }
            let b = ledger.balance(user, None).await.unwrap().available_minor;
            assert_eq!(b, model);
            assert!(ledger.audit().await.unwrap().is_empty());
        });
    }
}

async fn every_new_entry_has_its_event_once(kind: Kind) {
    let mut h = harness(kind).await;
    let spec = skillup_kit::bus::SubscriptionSpec::new("payment-events-test", &["payment.*"]);
    let mut events = h._t.infra.bus.subscribe(&spec, 8).await.unwrap();
    let mut next = async || {
        let d = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
            .await
            .expect("an event in time")
            .expect("consumer open");
        let env = <skillup_proto::common::v1::EventEnvelope as prost::Message>::decode(
            d.message.payload.as_ref(),
        )
        .expect("an event");
        d.ack().await.unwrap();
        (env.id, env.r#type)
    };
    let user = Uuid::now_v7();
    let paid = h
        .client
        .top_up(as_user(&h, user, top_up(1_000, "e-1", "pm_card_visa")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next().await,
        (
            format!("payment:{}", paid.id),
            <pb::PaymentSucceeded as skillup_proto::events::Event>::KIND.into()
        )
    );
    // A replay is the same entry: no second event.
    h.client.top_up(as_user(&h, user, top_up(1_000, "e-1", "pm_card_visa"))).await.unwrap();
    // A refusal is an entry of its own, with its event.
    let err = h.client.charge(charge(user, 5_000, "e-2")).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::InsufficientFunds);
    let (id, kind) = next().await;
    assert_eq!(kind, <pb::PaymentFailed as skillup_proto::events::Event>::KIND);
    assert_ne!(id, format!("payment:{}", paid.id));
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(500), events.next()).await;
    assert!(quiet.is_err(), "one event per entry, none for the replay");
}

/// Issue 24: an operator credits or debits a wallet with a reason — a ledger entry of its own
/// kind, once per key, never below zero, refused to anyone but an admin signed in — and the
/// audit entry commits with it (one `audit.recorded` per applied adjustment).
async fn an_admin_adjusts_a_balance_once_per_key_with_its_audit_entry(kind: Kind) {
    let mut h = harness(kind).await;
    let audit = skillup_kit::events::subscribe::<skillup_proto::common::v1::AuditEntry>(
        &h._t.infra.bus,
        &format!("audit-test-{}", Uuid::now_v7()),
    )
    .await
    .unwrap();
    let mut audit = audit;
    let (admin, user) = (Uuid::now_v7(), Uuid::now_v7());
    // Nobody else: a user, an admin's API key, no identity at all.
    let err = h.client.adjust_balance(as_user(&h, user, adjust(user, 500, "a-0", "x"))).await;
    assert_eq!(err.unwrap_err().code(), Code::PermissionDenied);
    let mut key_call = as_admin(&h, admin, adjust(user, 500, "a-0", "x"));
    let with_key = Caller {
        user_id: admin.to_string(),
        scopes: vec!["admin".into()],
        api_key: "k1".into(),
        exp: now_secs() + 60,
        ..Default::default()
    };
    key_call.metadata_mut().insert("x-skillup-identity", h.key.sign(&with_key).parse().unwrap());
    assert_eq!(h.client.adjust_balance(key_call).await.unwrap_err().code(), Code::PermissionDenied);
    let err = h.client.adjust_balance(adjust(user, 500, "a-0", "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Bad input: no reason, zero, no key.
    for (req, field) in [
        (adjust(user, 500, "a-1", " "), "reason"),
        (adjust(user, 0, "a-1", "x"), "amount_minor"),
        (adjust(user, 500, "", "x"), "idempotency_key"),
    ] {
        let err = h.client.adjust_balance(as_admin(&h, admin, req)).await.unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::InvalidArgument, "{field}: {err:?}");
    }

    let credit = h
        .client
        .adjust_balance(as_admin(&h, admin, adjust(user, 700, "a-1", "goodwill for the outage")))
        .await
        .unwrap();
    assert_eq!(credit.metadata().get("x-http-status").unwrap(), "201");
    let credit = credit.into_inner();
    assert_eq!(credit.kind(), pb::TransactionKind::AdjustmentCredit);
    assert_eq!(credit.balance_after.as_ref().unwrap().amount_minor, 700);
    assert!(credit.description.contains("goodwill"), "{credit:?}");
    // The same key again: the same entry, nothing moved twice; with another sign: reused.
    let again = h
        .client
        .adjust_balance(as_admin(&h, admin, adjust(user, 700, "a-1", "goodwill for the outage")))
        .await
        .unwrap();
    assert_eq!(again.metadata().get("x-http-status").unwrap(), "201", "the same answer");
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.into_inner().id, credit.id);
    let err = h
        .client
        .adjust_balance(as_admin(&h, admin, adjust(user, -700, "a-1", "goodwill for the outage")))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::IdempotencyKeyReused);
    // A debit: never below zero.
    let err = h
        .client
        .adjust_balance(as_admin(&h, admin, adjust(user, -701, "a-2", "correction")))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::InsufficientFunds);
    let debit = h
        .client
        .adjust_balance(as_admin(&h, admin, adjust(user, -200, "a-3", "correction")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(debit.kind(), pb::TransactionKind::AdjustmentDebit);
    assert_eq!(debit.amount.as_ref().unwrap().amount_minor, 200);
    assert_eq!(debit.balance_after.as_ref().unwrap().amount_minor, 500);
    assert!(h.ledger.audit().await.unwrap().is_empty(), "postings balance");

    // Two audit entries, one per applied adjustment: who, what, the wallet before and after.
    let mut entries = Vec::new();
    while entries.len() < 2 {
        let d = tokio::time::timeout(std::time::Duration::from_secs(10), audit.next())
            .await
            .expect("an audit entry in time")
            .unwrap();
        let (_, entry) = skillup_kit::events::decode::<skillup_proto::common::v1::AuditEntry>(
            &d.message.payload,
        )
        .unwrap();
        d.ack().await.unwrap();
        entries.push(entry);
    }
    let (c, d) = (&entries[0], &entries[1]);
    assert_eq!((c.action.as_str(), d.action.as_str()), ("balance.credit", "balance.debit"));
    assert_eq!(c.actor_id, admin.to_string());
    assert_eq!((c.component.as_str(), c.request_id.as_str()), ("payment", "req-adjust"));
    assert_eq!(c.target_id, format!("{user}:RUB"));
    assert_eq!(c.reason, "goodwill for the outage");
    let json = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
    assert_eq!(json(&c.before)["balance_minor"], 0);
    assert_eq!(json(&c.after)["balance_minor"], 700);
    assert_eq!(json(&c.after)["transaction_id"], credit.id.as_str());
    assert_eq!(
        (json(&d.before)["balance_minor"].clone(), json(&d.after)["balance_minor"].clone()),
        (700.into(), 500.into())
    );
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(500), audit.next()).await;
    assert!(quiet.is_err(), "no entry for a replay or a refusal");
}
