//! The ai service and worker through their gRPC API, with the real prompt, subscribe and
//! payment services, on real PostgreSQL, Redis and RabbitMQ and on the embedded adapters. The
//! providers are the local fake speaking OpenAI's and Anthropic's wire formats.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use skillup_ai::{
    config::{AiConfig, ProviderConfig, ProviderKind},
    fake::{Behavior, FakeProvider},
};
use skillup_kit::{
    Shutdown,
    grpc::GrpcServer,
    identity::{Caller, IdentityKey, now_secs},
};
use skillup_proto::{
    ai::v1::{
        self as pb, TaskStatus, generate_response::Outcome, generate_stream_event::Event,
        generation_admin_service_client::GenerationAdminServiceClient,
        generation_service_client::GenerationServiceClient,
    },
    common::v1::ErrorCode,
    payment::v1::{TopUpRequest, payment_service_client::PaymentServiceClient},
    subscribe::v1::{self as subpb, subscription_service_client::SubscriptionServiceClient},
};
use skillup_testkit::Channel;
use skillup_testkit::{Kind, TestInfra, TestServer};
use tonic::Request;
use uuid::Uuid;

#[path = "ai/inline.rs"]
mod inline;
#[path = "ai/library.rs"]
mod library;
#[path = "ai/queued.rs"]
mod queued;
#[path = "ai/resilience.rs"]
mod resilience;

use inline::*;
use library::*;
use queued::*;
use resilience::*;

struct Harness {
    ai: GenerationServiceClient<Channel>,
    admin: GenerationAdminServiceClient<Channel>,
    subs: SubscriptionServiceClient<Channel>,
    key: Arc<IdentityKey>,
    t: TestInfra,
    fake: FakeProvider,
    shutdown: Shutdown,
    generator: skillup_ai::Generator,
    payments: PaymentServiceClient<Channel>,
    _core: TestServer,
    _ai: TestServer,
}

fn provider(kind: ProviderKind, url: String) -> ProviderConfig {
    ProviderConfig {
        kind,
        base_url: url,
        api_key: Some("sk-test-SECRET-1234567890".to_owned().into()),
        model: match kind {
            ProviderKind::Anthropic => "claude-test".into(),
            _ => "gpt-test".into(),
        },
        timeout_ms: 10_000,
        first_token_ms: 5_000,
        ..Default::default()
    }
}

/// The config the tests run with: one OpenAI provider on the fake, fast retries.
fn config(fake: &FakeProvider) -> AiConfig {
    let mut cfg = AiConfig::default();
    cfg.providers.clear();
    cfg.providers.insert("openai".into(), provider(ProviderKind::Openai, fake.openai_url()));
    cfg.chain = vec!["openai".into()];
    cfg.retry_base_ms = 100;
    cfg.max_retries = 2;
    cfg.worker_concurrency = 8;
    cfg
}

async fn harness(kind: Kind) -> Harness {
    harness_with(kind, Behavior::quick(40), config, true).await
}

async fn harness_with(
    kind: Kind,
    default: Behavior,
    cfg: impl FnOnce(&FakeProvider) -> AiConfig,
    worker: bool,
) -> Harness {
    let t = kind.infra().await;
    let key = Arc::new(IdentityKey::random());
    let fake = FakeProvider::start(default).await;
    let cfg = cfg(&fake);
    let shutdown = Shutdown::new();
    let payment =
        skillup_payment::build(&t.infra, &Default::default(), "", shutdown.clone()).await.unwrap();
    let prompt = skillup_prompt::build(&t.infra).await.unwrap();
    let pay_server = TestServer::start(
        GrpcServer::builder().add_service(payment.into_server()).identity_key(key.clone()),
    )
    .await;
    let billing =
        Arc::new(skillup_subscribe::PaymentBilling::new(pay_server.channel_as("subscribe")));
    let subscribe = skillup_subscribe::build(
        &t.infra,
        billing,
        "RUB",
        Duration::from_secs(3600),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let core = TestServer::start(
        GrpcServer::builder()
            .add_service(prompt.into_server())
            .add_service(subscribe.into_server())
            .identity_key(key.clone()),
    )
    .await;
    let payments = PaymentServiceClient::new(pay_server.channel());
    std::mem::forget(pay_server); // lives as long as the test process
    let generator =
        skillup_ai::generator(&t.infra, &cfg, core.channel_as("ai"), core.channel_as("ai"))
            .await
            .unwrap();
    if worker {
        let w = skillup_ai::Worker::new(generator.clone());
        tokio::spawn(w.run(shutdown.clone(), Duration::from_secs(5)));
    }
    let ai = TestServer::start(
        GrpcServer::builder()
            .add_service(skillup_ai::AiGrpc::new(generator.clone()).into_server())
            .add_service(skillup_ai::AdminGrpc::new(generator.clone()).into_server())
            .identity_key(key.clone()),
    )
    .await;
    Harness {
        ai: GenerationServiceClient::new(ai.channel()),
        admin: GenerationAdminServiceClient::new(ai.channel()),
        subs: SubscriptionServiceClient::new(core.channel()),
        key,
        t,
        fake,
        shutdown,
        generator,
        payments,
        _core: core,
        _ai: ai,
    }
}

skillup_testkit::both_adapters!(
    inline_answers_settle_the_hold_by_usage_and_repeat_from_the_cache,
    streams_charge_what_was_generated_and_replay_from_the_cache,
    a_client_leaving_mid_stream_cancels_the_provider_and_pays_for_what_was_produced,
    queued_tasks_complete_through_the_worker_once,
    provider_failures_retry_with_backoff_then_succeed,
    exhausted_retries_fail_the_task_release_the_hold_and_dead_letter,
    operators_read_and_requeue_dead_letters,
    fifty_concurrent_generations_with_quota_for_ten,
    cancelling_stops_queued_and_running_tasks_and_returns_the_quota,
    a_task_cancelled_while_queued_is_skipped_by_the_worker,
    a_stopping_worker_hands_unfinished_tasks_back_to_the_queue,
    premium_tasks_jump_the_queue,
    retries_with_the_same_idempotency_key_get_the_first_answer,
    an_idempotency_key_binds_to_one_request_and_never_buys_a_free_generation,
    the_result_cache_is_per_user,
    task_rows_are_written_in_batches_each_with_its_own_outcome,
    services_that_are_restarting_are_asked_again,
    every_generation_is_a_document_of_the_library,
    the_library_finds_words_and_filters,
    owners_title_star_and_delete_their_documents_others_get_not_found,
    a_stream_its_client_left_is_kept_with_what_was_generated,
    the_search_can_use_its_index,
    regenerating_makes_a_new_linked_document_never_from_the_cache,
    a_document_downloads_as_markdown_text_or_html,
    a_deleted_users_library_and_cached_answers_are_forgotten,
);

mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn filings_commit_without_the_wal_flush_queued_tasks_with_it() {
        super::filings_commit_without_the_wal_flush_queued_tasks_with_it().await
    }
}

fn identity(h: &Harness, user: Uuid, verified: bool) -> String {
    let id = Caller {
        user_id: user.to_string(),
        email_verified: verified,
        tier: "free".into(),
        exp: now_secs() + 300,
        ..Default::default()
    };
    h.key.sign(&id)
}

fn as_user<T>(h: &Harness, user: Uuid, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert("x-skillup-identity", identity(h, user, true).parse().unwrap());
    req
}

fn gen_req(topic: &str, function: &str, mode: pb::Mode) -> pb::GenerateRequest {
    pb::GenerateRequest {
        topic: topic.into(),
        function: function.into(),
        mode: mode as i32,
        max_tokens: 200,
        ..Default::default()
    }
}

fn code_of(s: &tonic::Status) -> ErrorCode {
    skillup_kit::error::detail_of(s).map(|d| d.code()).unwrap_or(ErrorCode::Unspecified)
}

async fn usage(h: &mut Harness, user: Uuid) -> subpb::Usage {
    h.subs.get_usage(as_user(h, user, subpb::GetUsageRequest {})).await.unwrap().into_inner()
}

/// How a hold ended: its status, the outcome the ai service reported and queued work's wait.
type Ending = (String, Option<String>, Option<i64>);

/// How the user's holds ended, oldest first — what the plans' service levels measure.
async fn endings(h: &Harness, user: Uuid) -> Vec<Ending> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    use skillup_subscribe::store::entities::hold;
    let rows = hold::Entity::find()
        .filter(hold::Column::UserId.eq(user))
        .order_by_asc(hold::Column::CreatedAt)
        .all(&h.t.infra.db)
        .await
        .unwrap();
    rows.into_iter().map(|r| (r.status, r.outcome, r.queue_wait_ms)).collect()
}

/// Waits until the user's holds ended as `want` says (queued work's wait: `Some(-1)` for any).
async fn ended_as(h: &Harness, user: Uuid, want: &[(&str, Option<&str>, Option<i64>)]) {
    let fits = |got: &[Ending]| {
        got.len() == want.len()
            && got.iter().zip(want).all(|((s, o, w), (ws, wo, ww))| {
                s == ws
                    && o.as_deref() == *wo
                    && match ww {
                        Some(-1) => w.is_some_and(|w| w >= 0),
                        other => w == other,
                    }
            })
    };
    for _ in 0..250 {
        if fits(&endings(h, user).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("holds ended as {:?}, not {want:?}", endings(h, user).await);
}

/// Waits (up to 5 s) until `check` holds; fails naming `what`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..250 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::SeqCst)
}

/// Usage once no hold is outstanding (a worker settles the hold just after storing the result).
async fn settled_usage(h: &mut Harness, user: Uuid) -> subpb::Usage {
    for _ in 0..200 {
        let u = usage(h, user).await;
        if u.tokens_held == 0 {
            return u;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a hold was never settled: {:?}", usage(h, user).await);
}

async fn inline(
    h: &mut Harness,
    user: Uuid,
    req: pb::GenerateRequest,
) -> Result<pb::Completion, tonic::Status> {
    let res = h.ai.generate(as_user(h, user, req)).await?.into_inner();
    match res.outcome {
        Some(Outcome::Completion(c)) => Ok(c),
        other => panic!("expected an inline answer, got {other:?}"),
    }
}

/// Polls a task until it leaves queued/running.
async fn settled(h: &mut Harness, user: Uuid, id: &str) -> pb::Task {
    for _ in 0..300 {
        let t =
            h.ai.get_task(as_user(h, user, pb::GetTaskRequest { task_id: id.into() }))
                .await
                .unwrap()
                .into_inner();
        if !matches!(t.status(), TaskStatus::Queued | TaskStatus::Running) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task {id} never settled");
}
