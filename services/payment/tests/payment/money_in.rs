//! Money coming in over the contract: only in the selling currency, and provider webhooks
//! judged by the address the edge vouched for.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_comes_in_only_in_the_selling_currency() {
    let mut h = harness(Kind::Real).await;
    let user = Uuid::now_v7();
    let mut euro = top_up(500, "eur-1", "");
    euro.currency = "EUR".into();
    let err = h.client.top_up(as_user(&h, user, euro)).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::InvalidArgument);
    assert!(err.message().contains("RUB"), "{}", err.message());
    let mut adjust = adjust(user, 500, "eur-2", "goodwill");
    adjust.currency = "EUR".into();
    let err = h.client.adjust_balance(as_admin(&h, Uuid::now_v7(), adjust)).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::InvalidArgument);
    h.client.top_up(as_user(&h, user, top_up(500, "rub-1", ""))).await.unwrap();
    // A wallet an earlier version let in (the harness's own ledger takes any currency) is
    // reported, never converted.
    let (eur, key) = (Currency::parse("c", "EUR").unwrap(), IdempotencyKey::parse("old").unwrap());
    let amount = MinorUnits::parse("a", 700).unwrap();
    h.ledger.top_up(user, amount, eur, key, "").await.unwrap();
    assert_eq!(h.ledger.wallets_outside("RUB").await.unwrap(), vec![("EUR".to_owned(), 1, 700)]);
    assert_eq!(h.ledger.audit().await.unwrap(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_judged_by_the_address_the_edge_vouched_for() {
    let t = Kind::Embedded.infra().await;
    let key = Arc::new(IdentityKey::random());
    let config = skillup_payment::PaymentConfig {
        webhook_networks: "185.71.76.0/27".into(),
        ..Default::default()
    };
    let svc =
        skillup_payment::build(&t.infra, &config, "", skillup_kit::Shutdown::new()).await.unwrap();
    let server = TestServer::start(
        GrpcServer::builder().add_service(svc.into_server()).identity_key(key.clone()),
    )
    .await;
    let mut client = PaymentServiceClient::new(server.channel());
    let call = |ip: &str| {
        let mut req = Request::new(pb::ProviderWebhookRequest {
            provider: "sandbox".into(),
            body: Some(skillup_proto::google::api::HttpBody {
                content_type: "application/json".into(),
                data: br#"{"object":{"id":"sbx_unknown"}}"#.to_vec(),
                ..Default::default()
            }),
        });
        // An anonymous assertion (a public route) vouches for the client's address only.
        let id = Caller { ip: ip.into(), exp: now_secs() + 60, ..Default::default() };
        req.metadata_mut().insert("x-skillup-identity", key.sign(&id).parse().unwrap());
        req
    };
    let outside = client.handle_provider_webhook(call("10.1.2.3")).await.unwrap_err();
    assert_eq!(code_of(&outside), ErrorCode::PermissionDenied, "{outside:?}");
    // From inside the networks it is read (and this one names no payment: a 400).
    let inside = client.handle_provider_webhook(call("185.71.76.9")).await.unwrap_err();
    assert_eq!(code_of(&inside), ErrorCode::InvalidArgument, "{inside:?}");
}

/// Issue 21's service credits (subscribe issues them when a plan misses its service level):
/// in the selling currency only, with a reason, once per key — a repeat answers the first
/// entry, another amount under the key is refused — and in the ledger as what they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_credit_is_issued_once_in_the_selling_currency() {
    let mut h = harness(Kind::Real).await;
    let user = Uuid::now_v7();
    let credit = |minor: i64, currency: &str, description: &str| pb::IssueCreditRequest {
        user_id: user.to_string(),
        amount: Some(Money { amount_minor: minor, currency: currency.into() }),
        idempotency_key: "sla:basic:2026-11:x".into(),
        description: description.into(),
    };
    let why = "service credit: the Basic plan missed its service level in 2026-11";
    let euro = h.client.issue_credit(credit(7_900, "EUR", why)).await.unwrap_err();
    assert_eq!(code_of(&euro), ErrorCode::InvalidArgument);
    let silent = h.client.issue_credit(credit(7_900, "RUB", " ")).await.unwrap_err();
    assert_eq!(code_of(&silent), ErrorCode::InvalidArgument, "a credit says why");
    let first = h.client.issue_credit(credit(7_900, "RUB", why)).await.unwrap().into_inner();
    assert_eq!(first.kind(), pb::TransactionKind::ServiceCredit);
    assert_eq!(first.description, why);
    let again = h.client.issue_credit(credit(7_900, "RUB", why)).await.unwrap().into_inner();
    assert_eq!(again.id, first.id, "the same credit");
    let other = h.client.issue_credit(credit(8_000, "RUB", why)).await.unwrap_err();
    assert_eq!(code_of(&other), ErrorCode::IdempotencyKeyReused);
    assert_eq!(balance(&mut h, user).await, 7_900);
    assert_eq!(h.ledger.audit().await.unwrap(), Vec::<String>::new());
}
