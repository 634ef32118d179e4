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
use skillup_testkit::Channel;
use skillup_testkit::{Kind, TestInfra, TestServer};
use tonic::{Code, Request};
use uuid::Uuid;

struct Harness {
    client: SubscriptionServiceClient<Channel>,
    payments: PaymentServiceClient<Channel>,
    key: Arc<IdentityKey>,
    t: TestInfra,
    _server: TestServer,
    _payment: TestServer,
}

async fn harness(kind: Kind) -> Harness {
    let t = kind.infra().await;
    let key = Arc::new(IdentityKey::random());
    // The subscribe service charges through the payment service's gRPC API.
    let shutdown = skillup_kit::Shutdown::new();
    // This suite sells in dollars (the default plans' USD prices); the rouble default is
    // exercised through `skillup up` and the generation suites.
    let config = skillup_payment::PaymentConfig { currency: "USD".into(), ..Default::default() };
    let payment = skillup_payment::build(&t.infra, &config, "", shutdown.clone()).await.unwrap();
    let pay_server = TestServer::start(
        GrpcServer::builder().add_service(payment.into_server()).identity_key(key.clone()),
    )
    .await;
    let billing = Arc::new(PaymentBilling::new(pay_server.channel_as("subscribe")));
    let subscribe =
        skillup_subscribe::build(&t.infra, billing, "USD", Duration::from_secs(3600), shutdown)
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
        t,
        _server: server,
        _payment: pay_server,
    }
}

#[path = "subscribe/currency.rs"]
mod currency;
#[path = "subscribe/plans.rs"]
mod plans;
#[path = "subscribe/quota.rs"]
mod quota;
#[path = "subscribe/service_levels.rs"]
mod service_levels;

use currency::*;
use plans::*;
use quota::*;
use service_levels::*;

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
    admins_edit_plans_and_subscribers_keep_their_terms_until_renewal,
    a_new_selling_currency_reprices_the_default_plans_and_no_others,
    a_missed_month_credits_each_subscriber_of_the_plan_once,
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
        Arc::new(PaymentBilling::new(h._payment.channel_as("subscribe"))),
    )
    .selling_in("USD")
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
