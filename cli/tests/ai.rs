//! The ai service and worker through their gRPC API, with the real prompt, subscribe and
//! payment services, on real PostgreSQL, Redis and RabbitMQ and on the embedded adapters. The
//! providers are the local fake speaking OpenAI's and Anthropic's wire formats.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use skillup_ai::fake::{Behavior, FakeProvider};
use skillup_kit::{
    Shutdown,
    config::{AiConfig, ProviderConfig, ProviderKind},
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
use skillup_testkit::{Kind, TestInfra, TestServer};
use tonic::{Request, transport::Channel};
use uuid::Uuid;

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
    let mut cfg = skillup_kit::Config::default().ai;
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
    let payment = skillup_payment::build(&t.infra, shutdown.clone()).await.unwrap();
    let prompt = skillup_prompt::build(&t.infra).await.unwrap();
    let pay_server = TestServer::start(
        GrpcServer::builder().add_service(payment.into_server()).identity_key(key.clone()),
    )
    .await;
    let billing = Arc::new(skillup_subscribe::PaymentBilling::new(pay_server.channel()));
    let subscribe =
        skillup_subscribe::build(&t.infra, billing, Duration::from_secs(3600), shutdown.clone())
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
        skillup_ai::generator(&t.infra, &cfg, core.channel(), core.channel()).await.unwrap();
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
);

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

async fn inline_answers_settle_the_hold_by_usage_and_repeat_from_the_cache(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    let c = inline(&mut h, user, gen_req("rust ownership", "quiz", pb::Mode::Sync)).await.unwrap();
    assert_eq!(c.provider, "openai");
    assert_eq!(c.model, "gpt-test");
    assert_eq!(c.text.split(' ').count(), 40, "{}", c.text);
    assert!(!c.cached);
    let u = c.usage.unwrap();
    assert_eq!(u.output_tokens, 40);
    assert!(u.input_tokens > 0);
    let body = h.fake.seen().last_body.lock().unwrap().clone().unwrap();
    assert_eq!(body["max_completion_tokens"], 200);
    assert_eq!(body["messages"][0]["role"], "system");
    assert!(body["messages"][1]["content"].as_str().unwrap().contains("rust ownership"));
    assert_eq!(
        h.fake.seen().last_key.lock().unwrap().as_deref(),
        Some("Bearer sk-test-SECRET-1234567890")
    );

    let used = settled_usage(&mut h, user).await;
    assert_eq!(
        (used.tokens_used, used.tokens_held),
        (u.total_tokens as u64, 0),
        "charged by usage, hold settled"
    );

    let again =
        inline(&mut h, user, gen_req("rust ownership", "quiz", pb::Mode::Sync)).await.unwrap();
    assert!(again.cached, "identical request answered from the cache");
    assert_eq!(again.text, c.text);
    assert_eq!(h.fake.requests(), 1, "no second provider call");
    assert_eq!(
        settled_usage(&mut h, user).await.tokens_used,
        u.total_tokens as u64,
        "cache hits are free by default"
    );

    // The plan still decides: the free plan does not include lesson plans, cached or not.
    let err = inline(&mut h, user, gen_req("rust ownership", "lesson_plan", pb::Mode::Sync))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::SubscriptionRequired, "{err:?}");

    // An unverified account is refused before anything is held.
    let mut req = Request::new(gen_req("rust", "quiz", pb::Mode::Sync));
    req.metadata_mut().insert("x-skillup-identity", identity(&h, user, false).parse().unwrap());
    let err = h.ai.generate(req).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::EmailNotVerified);

    // Bad input names its field; unknown functions come back from the catalog.
    let err = inline(&mut h, user, gen_req("", "quiz", pb::Mode::Sync)).await.unwrap_err();
    assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, "topic");
    let err = inline(&mut h, user, gen_req("rust", "no_such_function", pb::Mode::Sync))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert_eq!(h.fake.requests(), 1);
    drop(h.t);
}

async fn collect(h: &mut Harness, user: Uuid, req: pb::GenerateRequest) -> Vec<Event> {
    let mut s = h.ai.generate_stream(as_user(h, user, req)).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(ev) = s.next().await {
        out.push(ev.unwrap().event.unwrap());
    }
    out
}

fn text_of(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Delta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

async fn streams_charge_what_was_generated_and_replay_from_the_cache(kind: Kind) {
    let mut h = harness_with(
        kind,
        Behavior::Answer {
            words: 30,
            first_token: Duration::from_millis(50),
            per_token: Duration::from_millis(2),
        },
        config,
        false,
    )
    .await;
    let user = Uuid::now_v7();
    let events = collect(&mut h, user, gen_req("borrowing", "quiz", pb::Mode::Sync)).await;
    let Event::Started(started) = &events[0] else { panic!("{events:?}") };
    assert_eq!((started.provider.as_str(), started.cached), ("openai", false));
    assert_eq!(text_of(&events).split(' ').count(), 30);
    assert_eq!(
        events.iter().filter(|e| matches!(e, Event::Delta(_))).count(),
        30,
        "one event per token, unbuffered"
    );
    let Some(Event::Finished(fin)) = events.last() else { panic!("{events:?}") };
    let u = fin.usage.unwrap();
    assert_eq!((u.output_tokens, fin.finish_reason.as_str()), (30, "stop"));
    assert_eq!(
        h.fake.seen().last_body.lock().unwrap().as_ref().unwrap()["stream_options"]["include_usage"],
        true
    );
    let used = usage(&mut h, user).await;
    assert_eq!((used.tokens_used, used.tokens_held), (u.total_tokens as u64, 0));

    let replay = collect(&mut h, user, gen_req("borrowing", "quiz", pb::Mode::Sync)).await;
    let Event::Started(s2) = &replay[0] else { panic!() };
    assert!(s2.cached, "a cached answer replays as a stream");
    assert_eq!(text_of(&replay), text_of(&events));
    assert_eq!(h.fake.requests(), 1);

    // A stream cut midway ends with an error (never a silent cut) and charges what came.
    h.fake.script([Behavior::Cut { after: 5 }]);
    let mut s =
        h.ai.generate_stream(as_user(&h, user, gen_req("cut", "quiz", pb::Mode::Sync)))
            .await
            .unwrap()
            .into_inner();
    let mut deltas = 0;
    let mut failed = None;
    while let Some(ev) = s.next().await {
        match ev {
            Ok(pb::GenerateStreamEvent { event: Some(Event::Delta(_)) }) => deltas += 1,
            Ok(_) => {}
            Err(e) => failed = Some(e),
        }
    }
    assert_eq!(deltas, 5);
    assert_eq!(code_of(&failed.expect("the stream ends with an error")), ErrorCode::ProviderError);
    let after = usage(&mut h, user).await;
    assert_eq!(after.tokens_held, 0);
    assert!(after.tokens_used > used.tokens_used, "the cut stream paid for its 5 tokens");
}

async fn a_client_leaving_mid_stream_cancels_the_provider_and_pays_for_what_was_produced(
    kind: Kind,
) {
    let mut h = harness_with(
        kind,
        Behavior::Answer {
            words: 400,
            first_token: Duration::ZERO,
            per_token: Duration::from_millis(20),
        },
        config,
        false,
    )
    .await;
    let user = Uuid::now_v7();
    let mut s =
        h.ai.generate_stream(as_user(&h, user, gen_req("leaving", "quiz", pb::Mode::Sync)))
            .await
            .unwrap()
            .into_inner();
    let mut seen = 0;
    while let Some(ev) = s.next().await {
        if matches!(ev.unwrap().event, Some(Event::Delta(_))) {
            seen += 1;
            if seen == 5 {
                break;
            }
        }
    }
    drop(s);
    eventually("the provider request is cancelled", || async {
        count(&h.fake.seen().abandoned_streams) == 1
    })
    .await;
    let u = settled_usage(&mut h, user).await;
    // Charged the prompt plus the few tokens produced — far below the 400 asked for.
    assert!(u.tokens_used > 0 && u.tokens_used < 150, "charged {}", u.tokens_used);
}

async fn queued_tasks_complete_through_the_worker_once(kind: Kind) {
    let mut h = harness(kind).await;
    let events =
        h.t.infra
            .bus
            .subscribe(
                &skillup_kit::bus::SubscriptionSpec::new("test-completed", &["generation.*"]),
                16,
            )
            .await
            .unwrap();
    let user = Uuid::now_v7();
    // `auto` queues a long function.
    let res =
        h.ai.generate(as_user(&h, user, gen_req("ownership", "article", pb::Mode::Auto)))
            .await
            .unwrap();
    assert_eq!(res.metadata().get("x-http-status").unwrap(), "202");
    let Some(Outcome::Task(r)) = res.into_inner().outcome else { panic!("queued") };
    assert_eq!(r.status_url, format!("/api/generate/{}", r.task_id));
    assert_eq!(r.status(), TaskStatus::Queued);
    let t = settled(&mut h, user, &r.task_id).await;
    assert_eq!(t.status(), TaskStatus::Completed, "{t:?}");
    assert_eq!(t.text.split(' ').count(), 40);
    assert_eq!(t.attempts, 1);
    let u = t.usage.unwrap();
    let used = settled_usage(&mut h, user).await;
    assert_eq!((used.tokens_used, used.tokens_held), (u.total_tokens as u64, 0));

    let mut events = events;
    let d = tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().unwrap();
    assert_eq!(d.message.id, format!("{}:completed", t.id), "event id fixed by task and outcome");
    let (_, ev) =
        skillup_kit::events::decode::<pb::GenerationCompleted>(&d.message.payload).unwrap();
    assert_eq!(ev.task.unwrap().text, t.text);
    d.ack().await.unwrap();

    // A redelivery of the same job (a crash before the ack) neither runs nor charges again.
    let job = pb::GenerationJob {
        task_id: t.id.clone(),
        user_id: user.to_string(),
        hold_id: String::new(),
        request: None,
    };
    let mut msg = skillup_kit::bus::Message::new(prost::Message::encode_to_vec(&job));
    msg.id = t.id.clone();
    h.t.infra.bus.enqueue("generate.long", msg).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().unwrap();
    assert_eq!(d.message.id, format!("{}:completed", t.id), "the event repeats under the same id");
    assert_eq!(h.fake.requests(), 1, "the provider ran once");
    assert_eq!(usage(&mut h, user).await.tokens_used, u.total_tokens as u64, "charged once");

    // History: newest first, text left out, filter by status, pages.
    for i in 0..3 {
        h.ai.submit_task(as_user(
            &h,
            user,
            gen_req(&format!("topic {i}"), "quiz", pb::Mode::Async),
        ))
        .await
        .unwrap();
    }
    let page =
        h.ai.list_tasks(as_user(
            &h,
            user,
            pb::ListTasksRequest {
                page: Some(skillup_proto::common::v1::PageRequest {
                    page_size: 3,
                    page_token: String::new(),
                }),
                status: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.tasks.len(), 3);
    assert_eq!(page.tasks[0].topic, "topic 2");
    assert!(page.tasks.iter().all(|t| t.text.is_empty()));
    let next = page.page.unwrap().next_page_token;
    let rest =
        h.ai.list_tasks(as_user(
            &h,
            user,
            pb::ListTasksRequest {
                page: Some(skillup_proto::common::v1::PageRequest {
                    page_size: 3,
                    page_token: next,
                }),
                status: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.tasks.iter().map(|t| t.topic.as_str()).collect::<Vec<_>>(), ["ownership"]);
    // Another user sees none of it.
    let other = Uuid::now_v7();
    let err =
        h.ai.get_task(as_user(&h, other, pb::GetTaskRequest { task_id: t.id.clone() }))
            .await
            .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    h.shutdown.trigger();
}

async fn provider_failures_retry_with_backoff_then_succeed(kind: Kind) {
    let mut h = harness(kind).await;
    h.fake.script([
        Behavior::Fail { status: 500, retry_after: None },
        Behavior::Fail { status: 429, retry_after: Some(0) },
    ]);
    let user = Uuid::now_v7();
    let t =
        h.ai.submit_task(as_user(&h, user, gen_req("retry", "quiz", pb::Mode::Async)))
            .await
            .unwrap()
            .into_inner();
    let t = settled(&mut h, user, &t.id).await;
    assert_eq!(t.status(), TaskStatus::Completed, "{t:?}");
    assert_eq!(t.attempts, 3);
    assert_eq!(h.fake.requests(), 3);
    let used = settled_usage(&mut h, user).await;
    assert_eq!(
        (used.tokens_used, used.tokens_held),
        (t.usage.unwrap().total_tokens as u64, 0),
        "charged once"
    );
}

async fn exhausted_retries_fail_the_task_release_the_hold_and_dead_letter(kind: Kind) {
    let mut h =
        harness_with(kind, Behavior::Fail { status: 503, retry_after: None }, config, true).await;
    let user = Uuid::now_v7();
    let t =
        h.ai.submit_task(as_user(&h, user, gen_req("doomed", "quiz", pb::Mode::Async)))
            .await
            .unwrap()
            .into_inner();
    let t = settled(&mut h, user, &t.id).await;
    assert_eq!(t.status(), TaskStatus::Failed);
    assert_eq!(t.error, "the text provider is unavailable; please try again later");
    assert_eq!(t.attempts, 3, "first try + 2 retries");
    let bus = h.t.infra.bus.clone();
    eventually("the job rests in the dead-letter queue", || async {
        bus.depth("generate.long.dead").await.unwrap() == 1
    })
    .await;
    let used = settled_usage(&mut h, user).await;
    assert_eq!((used.tokens_used, used.tokens_held), (0, 0), "hold released, nothing charged");

    // Not retryable: a content-policy refusal fails at once.
    h.fake.script([Behavior::ContentPolicy]);
    let before = h.fake.requests();
    let t =
        h.ai.submit_task(as_user(&h, user, gen_req("refused", "quiz", pb::Mode::Async)))
            .await
            .unwrap()
            .into_inner();
    let t = settled(&mut h, user, &t.id).await;
    assert_eq!((t.status(), t.attempts), (TaskStatus::Failed, 1));
    assert!(t.error.contains("content policy"), "{}", t.error);
    assert_eq!(h.fake.requests(), before + 1);
    // Inline, the same refusal is a 4xx with its own code.
    h.fake.script([Behavior::ContentPolicy]);
    let err =
        inline(&mut h, user, gen_req("refused inline", "quiz", pb::Mode::Sync)).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::ContentPolicy);
    assert_eq!(settled_usage(&mut h, user).await.tokens_held, 0);
}

fn as_operator<T>(h: &Harness, scopes: &[&str], msg: T) -> Request<T> {
    let id = Caller {
        user_id: "operator".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        exp: now_secs() + 300,
        ..Default::default()
    };
    let mut req = Request::new(msg);
    req.metadata_mut().insert("x-skillup-identity", h.key.sign(&id).parse().unwrap());
    req
}

async fn operators_read_and_requeue_dead_letters(kind: Kind) {
    let mut h =
        harness_with(kind, Behavior::Fail { status: 503, retry_after: None }, config, true).await;
    let user = Uuid::now_v7();
    let t =
        h.ai.submit_task(as_user(&h, user, gen_req("second chance", "quiz", pb::Mode::Async)))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(settled(&mut h, user, &t.id).await.status(), TaskStatus::Failed);
    let bus = h.t.infra.bus.clone();
    eventually("the job rests in the dead-letter queue", || async {
        bus.depth("generate.long.dead").await.unwrap() == 1
    })
    .await;

    // Only operators: no assertion, or one without the admin scope, is refused.
    let err = h.admin.get_queue_stats(pb::GetQueueStatsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err =
        h.admin.get_queue_stats(as_user(&h, user, pb::GetQueueStatsRequest {})).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    let stats = h
        .admin
        .get_queue_stats(as_operator(&h, &["admin"], pb::GetQueueStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.queued, stats.dead, stats.retrying.len()), (0, 1, 2), "{stats:?}");
    assert_eq!(stats.tasks.get("failed"), Some(&1), "{stats:?}");

    // Reading leaves the letter where it is.
    for _ in 0..2 {
        let list = h
            .admin
            .list_dead_letters(as_operator(
                &h,
                &["admin"],
                pb::ListDeadLettersRequest { limit: 10 },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.total, 1);
        let d = &list.dead_letters[0];
        assert_eq!((d.task_id.as_str(), d.user_id.clone()), (t.id.as_str(), user.to_string()));
        assert_eq!((d.status(), d.attempts), (TaskStatus::Failed, 3));
        assert!(d.reason.contains("503"), "{}", d.reason);
        assert!(d.error.contains("unavailable"), "{}", d.error);
        eventually("the letter is back in the dead-letter queue", || async {
            bus.depth("generate.long.dead").await.unwrap() == 1
        })
        .await;
    }

    // A bad id is refused before anything moves.
    let err = h
        .admin
        .requeue_dead_letters(as_operator(
            &h,
            &["admin"],
            pb::RequeueDeadLettersRequest { task_ids: vec!["nope".into()], limit: 0 },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // The provider is back: requeue, and the task runs again from attempt 1 with a new hold.
    h.fake.set_default(Behavior::quick(30));
    let res = h
        .admin
        .requeue_dead_letters(as_operator(
            &h,
            &["admin"],
            pb::RequeueDeadLettersRequest { task_ids: vec![t.id.clone()], limit: 0 },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.outcomes.len(), 1, "{res:?}");
    assert!(res.outcomes[0].requeued, "{res:?}");
    let done = settled(&mut h, user, &t.id).await;
    assert_eq!((done.status(), done.attempts), (TaskStatus::Completed, 1), "{done:?}");
    assert_eq!(bus.depth("generate.long.dead").await.unwrap(), 0);
    let used = settled_usage(&mut h, user).await;
    assert_eq!(used.tokens_used, done.usage.unwrap().total_tokens as u64, "charged once");

    // Nothing left: a second requeue finds nothing to move.
    let res = h
        .admin
        .requeue_dead_letters(as_operator(&h, &["admin"], pb::RequeueDeadLettersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(res.outcomes.is_empty(), "{res:?}");
}

async fn fifty_concurrent_generations_with_quota_for_ten(kind: Kind) {
    let h = harness_with(
        kind,
        Behavior::Answer {
            words: 10,
            first_token: Duration::from_millis(1500),
            per_token: Duration::ZERO,
        },
        config,
        false,
    )
    .await;
    let user = Uuid::now_v7();
    // The free plan holds 20_000 tokens a period: size each hold at about 1_900, so ten fit
    // and an eleventh does not.
    let estimate = {
        let mut prompts =
            skillup_proto::prompt::v1::prompt_service_client::PromptServiceClient::new(
                h._core.channel(),
            );
        prompts
            .build_prompt(skillup_proto::prompt::v1::BuildPromptRequest {
                topic: "topic 10".into(),
                function_id: "quiz".into(),
                max_tokens: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .estimated_input_tokens
    };
    let h = Arc::new(tokio::sync::Mutex::new(h));
    let mut calls = Vec::new();
    for i in 10..60 {
        let h = h.clone();
        calls.push(tokio::spawn(async move {
            let (mut ai, req) = {
                let h = h.lock().await;
                let mut r = gen_req(&format!("topic {i}"), "quiz", pb::Mode::Sync);
                r.max_tokens = 1_900 - estimate;
                (h.ai.clone(), as_user(&h, user, r))
            };
            ai.generate(req).await
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(code_of(&e), ErrorCode::QuotaExceeded, "{e:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (10, 40));
    let mut h = Arc::try_unwrap(h).ok().unwrap().into_inner();
    assert_eq!(h.fake.requests(), 10, "exactly ten reached the provider");
    assert_eq!(settled_usage(&mut h, user).await.tokens_held, 0);
}

async fn cancelling_stops_queued_and_running_tasks_and_returns_the_quota(kind: Kind) {
    let mut h = harness_with(
        kind,
        Behavior::Answer {
            words: 10,
            first_token: Duration::from_secs(30),
            per_token: Duration::ZERO,
        },
        config,
        true,
    )
    .await;
    let user = Uuid::now_v7();
    let t =
        h.ai.submit_task(as_user(&h, user, gen_req("slow", "quiz", pb::Mode::Async)))
            .await
            .unwrap()
            .into_inner();
    // Wait until the worker runs it (the provider has the request).
    eventually("the provider has the request", || async { h.fake.requests() == 1 }).await;
    assert!(usage(&mut h, user).await.tokens_held > 0, "the running task holds quota");
    let c =
        h.ai.cancel_task(as_user(&h, user, pb::CancelTaskRequest { task_id: t.id.clone() }))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(c.status(), TaskStatus::Cancelled);
    eventually("the worker stops the provider call", || async {
        count(&h.fake.seen().abandoned_answers) == 1
    })
    .await;
    let used = usage(&mut h, user).await;
    assert_eq!((used.tokens_used, used.tokens_held), (0, 0), "quota returned");
    // The worker let go of it: a second task runs right away on the freed slot and the
    // cancelled one never completes.
    h.fake.set_default(Behavior::quick(5));
    let t2 =
        h.ai.submit_task(as_user(&h, user, gen_req("next", "quiz", pb::Mode::Async)))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(settled(&mut h, user, &t2.id).await.status(), TaskStatus::Completed);
    let again =
        h.ai.get_task(as_user(&h, user, pb::GetTaskRequest { task_id: t.id.clone() }))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(again.status(), TaskStatus::Cancelled);
    let err =
        h.ai.cancel_task(as_user(&h, user, pb::CancelTaskRequest { task_id: t.id.clone() }))
            .await
            .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Conflict);
}

async fn a_task_cancelled_while_queued_is_skipped_by_the_worker(kind: Kind) {
    let mut h = harness_with(kind, Behavior::quick(5), config, false).await;
    let user = Uuid::now_v7();
    let t =
        h.ai.submit_task(as_user(&h, user, gen_req("later", "quiz", pb::Mode::Async)))
            .await
            .unwrap()
            .into_inner();
    assert!(usage(&mut h, user).await.tokens_held > 0);
    let c =
        h.ai.cancel_task(as_user(&h, user, pb::CancelTaskRequest { task_id: t.id.clone() }))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(c.status(), TaskStatus::Cancelled);
    assert_eq!(usage(&mut h, user).await.tokens_held, 0);
    // Now a worker starts and takes the job off the queue without running it.
    tokio::spawn(
        skillup_ai::Worker::new(h.generator.clone())
            .run(h.shutdown.clone(), Duration::from_secs(1)),
    );
    let bus = h.t.infra.bus.clone();
    eventually("the job is consumed", || async { bus.depth("generate.long").await.unwrap() == 0 })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.t.infra.bus.depth("generate.long").await.unwrap(), 0, "the job was consumed");
    assert_eq!(h.fake.requests(), 0, "and never reached the provider");
    let again =
        h.ai.get_task(as_user(&h, user, pb::GetTaskRequest { task_id: t.id }))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(again.status(), TaskStatus::Cancelled);
    assert_eq!(settled_usage(&mut h, user).await.tokens_used, 0);
}

async fn a_stopping_worker_hands_unfinished_tasks_back_to_the_queue(kind: Kind) {
    let mut h = harness_with(
        kind,
        Behavior::Answer {
            words: 5,
            first_token: Duration::from_secs(30),
            per_token: Duration::ZERO,
        },
        config,
        false,
    )
    .await;
    let user = Uuid::now_v7();
    let stop = Shutdown::new();
    let worker = tokio::spawn(
        skillup_ai::Worker::new(h.generator.clone()).run(stop.clone(), Duration::from_millis(200)),
    );
    let t =
        h.ai.submit_task(as_user(&h, user, gen_req("interrupted", "quiz", pb::Mode::Async)))
            .await
            .unwrap()
            .into_inner();
    eventually("the worker runs it", || async { h.fake.requests() == 1 }).await;
    stop.trigger();
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("the worker stops within its grace")
        .unwrap()
        .unwrap();
    let back =
        h.ai.get_task(as_user(&h, user, pb::GetTaskRequest { task_id: t.id.clone() }))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(back.status(), TaskStatus::Queued, "handed back, not lost and not failed");
    // The next worker finishes it, charged once.
    h.fake.set_default(Behavior::quick(5));
    tokio::spawn(
        skillup_ai::Worker::new(h.generator.clone())
            .run(h.shutdown.clone(), Duration::from_secs(1)),
    );
    let done = settled(&mut h, user, &t.id).await;
    assert_eq!(done.status(), TaskStatus::Completed);
    let used = settled_usage(&mut h, user).await;
    assert_eq!(
        (used.generations_used, used.tokens_used),
        (1, done.usage.unwrap().total_tokens as u64)
    );
}

async fn premium_tasks_jump_the_queue(kind: Kind) {
    let mut h = harness_with(
        kind,
        Behavior::quick(5),
        |fake| AiConfig { worker_concurrency: 1, ..config(fake) },
        false,
    )
    .await;
    let (free, premium) = (Uuid::now_v7(), Uuid::now_v7());
    let top_up = TopUpRequest {
        amount_minor: 2_990,
        currency: "USD".into(),
        idempotency_key: "fund".into(),
        payment_method: String::new(),
    };
    h.payments.top_up(as_user(&h, premium, top_up)).await.unwrap();
    let sub = subpb::SubscribeRequest { plan: "premium".into(), idempotency_key: String::new() };
    h.subs.subscribe(as_user(&h, premium, sub)).await.unwrap();
    let mut events =
        h.t.infra
            .bus
            .subscribe(
                &skillup_kit::bus::SubscriptionSpec::new(
                    "test-order",
                    &[<pb::GenerationCompleted as skillup_proto::events::Event>::KIND],
                ),
                16,
            )
            .await
            .unwrap();
    for i in 0..3 {
        h.ai.submit_task(as_user(&h, free, gen_req(&format!("free {i}"), "quiz", pb::Mode::Async)))
            .await
            .unwrap();
    }
    let vip =
        h.ai.submit_task(as_user(&h, premium, gen_req("premium", "quiz", pb::Mode::Async)))
            .await
            .unwrap()
            .into_inner();
    tokio::spawn(
        skillup_ai::Worker::new(h.generator.clone())
            .run(h.shutdown.clone(), Duration::from_secs(1)),
    );
    let first =
        tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().unwrap();
    assert_eq!(first.message.id, format!("{}:completed", vip.id), "the premium task ran first");
}

async fn retries_with_the_same_idempotency_key_get_the_first_answer(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    let mut req = gen_req("idem", "quiz", pb::Mode::Sync);
    req.idempotency_key = "client-key-1".into();
    let a = inline(&mut h, user, req.clone()).await.unwrap();
    let b = inline(&mut h, user, req.clone()).await.unwrap();
    assert_eq!(a, b, "the same answer, id included");
    assert_eq!(h.fake.requests(), 1);
    let mut task_req = gen_req("idem task", "quiz", pb::Mode::Async);
    task_req.idempotency_key = "client-key-2".into();
    let t1 = h.ai.submit_task(as_user(&h, user, task_req.clone())).await.unwrap().into_inner();
    let t2 = h.ai.submit_task(as_user(&h, user, task_req)).await.unwrap().into_inner();
    assert_eq!(t1.id, t2.id);
    settled(&mut h, user, &t1.id).await;
    let used = settled_usage(&mut h, user).await;
    assert_eq!(used.generations_used, 2, "one inline + one task, not four");
    assert_eq!(used.tokens_held, 0);
}

fn with_key(mut r: pb::GenerateRequest, key: &str) -> pb::GenerateRequest {
    r.idempotency_key = key.into();
    r
}

/// Issue 26.1: a key reused on streams with other topics generated new texts for free.
async fn an_idempotency_key_binds_to_one_request_and_never_buys_a_free_generation(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    let first =
        collect(&mut h, user, with_key(gen_req("topic a", "quiz", pb::Mode::Sync), "k1")).await;
    let Event::Started(started) = &first[0] else { panic!("{first:?}") };
    assert_eq!(settled_usage(&mut h, user).await.generations_used, 1);

    // The same request again replays the first stream, id included; nothing is charged.
    let again =
        collect(&mut h, user, with_key(gen_req("topic a", "quiz", pb::Mode::Sync), "k1")).await;
    let Event::Started(s2) = &again[0] else { panic!("{again:?}") };
    assert_eq!(s2.id, started.id);
    assert_eq!(text_of(&again), text_of(&first));
    // So does the same request inline.
    let c = inline(&mut h, user, with_key(gen_req("topic a", "quiz", pb::Mode::Sync), "k1"))
        .await
        .unwrap();
    assert_eq!((c.id.as_str(), c.text.as_str()), (started.id.as_str(), text_of(&first).as_str()));

    // Another request under the key is refused, streamed or inline, serial or parallel.
    let other = with_key(gen_req("topic b", "quiz", pb::Mode::Sync), "k1");
    let err = h.ai.generate_stream(as_user(&h, user, other.clone())).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::IdempotencyKeyReused, "{err:?}");
    let err = inline(&mut h, user, other.clone()).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::IdempotencyKeyReused, "{err:?}");
    let calls = (0..20).map(|_| {
        let (mut ai, req) = (h.ai.clone(), as_user(&h, user, other.clone()));
        async move { ai.generate_stream(req).await.map(|_| ()) }
    });
    for res in futures::future::join_all(calls).await {
        assert_eq!(code_of(&res.unwrap_err()), ErrorCode::IdempotencyKeyReused);
    }
    assert_eq!(h.fake.requests(), 1, "one provider call for all of it");

    // 20 parallel streams of one new request under a new key: one generation, the others
    // replay it or are told it is still running.
    let fresh = with_key(gen_req("topic c", "quiz", pb::Mode::Sync), "k2");
    let calls = (0..20).map(|_| {
        let (mut ai, req) = (h.ai.clone(), as_user(&h, user, fresh.clone()));
        async move {
            match ai.generate_stream(req).await {
                Ok(s) => {
                    let events: Vec<_> = s.into_inner().collect().await;
                    Ok(events.len())
                }
                Err(e) => Err(code_of(&e)),
            }
        }
    });
    for res in futures::future::join_all(calls).await {
        assert!(matches!(res, Ok(n) if n > 2) || res == Err(ErrorCode::Conflict), "{res:?}");
    }
    assert_eq!(h.fake.requests(), 2);
    let used = settled_usage(&mut h, user).await;
    assert_eq!((used.generations_used, used.generations_held), (2, 0));

    // A queued task's key binds the same way.
    let task = with_key(gen_req("task a", "quiz", pb::Mode::Async), "k3");
    let t = h.ai.submit_task(as_user(&h, user, task)).await.unwrap().into_inner();
    let err = h
        .ai
        .submit_task(as_user(&h, user, with_key(gen_req("task b", "quiz", pb::Mode::Async), "k3")))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::IdempotencyKeyReused, "{err:?}");
    settled(&mut h, user, &t.id).await;
    assert_eq!(settled_usage(&mut h, user).await.generations_used, 3);
}

/// Issue 26.13: user B repeating A's exact request got A's cached answer for nothing.
async fn the_result_cache_is_per_user(kind: Kind) {
    let mut h = harness(kind).await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let req = gen_req("shared topic", "quiz", pb::Mode::Sync);
    assert!(!inline(&mut h, a, req.clone()).await.unwrap().cached);
    assert!(inline(&mut h, a, req.clone()).await.unwrap().cached, "A's own repeat is a hit");
    let other = inline(&mut h, b, req).await.unwrap();
    assert!(!other.cached, "B's request is generated for B");
    assert_eq!(h.fake.requests(), 2);
    assert_eq!(settled_usage(&mut h, b).await.generations_used, 1, "and charged to B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_chain_and_breaker_route_around_a_failing_provider() {
    let anthropic = FakeProvider::start(Behavior::quick(12)).await;
    let anthropic_url = anthropic.anthropic_url();
    let mut h = harness_with(
        Kind::Embedded,
        Behavior::Fail { status: 500, retry_after: None },
        move |fake| {
            let mut cfg = config(fake);
            cfg.providers.insert(
                "anthropic".into(),
                provider(ProviderKind::Anthropic, anthropic_url.clone()),
            );
            cfg.chain = vec!["openai".into(), "anthropic".into()];
            cfg.breaker.consecutive_failures = 3;
            cfg.breaker.open_ms = 400;
            cfg
        },
        false,
    )
    .await;
    let user = Uuid::now_v7();
    for i in 0..6 {
        let c = inline(&mut h, user, gen_req(&format!("fallback {i}"), "quiz", pb::Mode::Sync))
            .await
            .unwrap();
        assert_eq!((c.provider.as_str(), c.model.as_str()), ("anthropic", "claude-test"));
        assert_eq!(c.text.split(' ').count(), 12);
    }
    assert_eq!(h.fake.requests(), 3, "the breaker opened after three failures");
    let body = anthropic.seen().last_body.lock().unwrap().clone().unwrap();
    assert!(body["system"].as_str().is_some(), "the system prompt is Anthropic's top-level field");
    assert_eq!(
        anthropic.seen().last_key.lock().unwrap().as_deref(),
        Some("sk-test-SECRET-1234567890")
    );
    // Streams fall back too, before the first token.
    let events = collect(&mut h, user, gen_req("fallback stream", "quiz", pb::Mode::Sync)).await;
    assert_eq!(text_of(&events).split(' ').count(), 12);
    // The primary recovers; after the open period a probe closes the breaker again.
    h.fake.set_default(Behavior::quick(7));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let c = inline(&mut h, user, gen_req("recovered", "quiz", pb::Mode::Sync)).await.unwrap();
    assert_eq!(c.provider, "openai");
    assert_eq!(h.fake.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_prompt_text_stay_out_of_the_logs() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .init();
    let mut h = harness(Kind::Embedded).await;
    let user = Uuid::now_v7();
    inline(&mut h, user, gen_req("a very private topic", "quiz", pb::Mode::Sync)).await.unwrap();
    h.fake.script([Behavior::Fail { status: 401, retry_after: None }]);
    let _ = inline(&mut h, user, gen_req("another private topic", "quiz", pb::Mode::Sync)).await;
    h.fake.script(vec![Behavior::Fail { status: 500, retry_after: None }; 3]);
    let t =
        h.ai.submit_task(as_user(&h, user, gen_req("private task topic", "quiz", pb::Mode::Async)))
            .await
            .unwrap()
            .into_inner();
    settled(&mut h, user, &t.id).await;
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("provider failed"), "the failures were logged: {logs}");
    assert!(!logs.contains("SECRET"), "an API key reached the logs");
    assert!(!logs.contains("private"), "prompt text reached the logs");
}

async fn task_rows_are_written_in_batches_each_with_its_own_outcome(kind: Kind) {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    use skillup_ai::store::{TaskWriter, task};
    let t = kind.infra().await;
    skillup_ai::migrate(&t.infra.db).await.unwrap();
    let user = Uuid::now_v7();
    let row = |idempotency: Option<String>| task::Model {
        idempotency,
        ..task::Model::queued(Uuid::now_v7(), user, Uuid::now_v7(), chrono::Utc::now())
    };
    // One writer, so rows sent together must share statements.
    let writer = Arc::new(TaskWriter::start(t.infra.db.clone(), 1));
    let dup = Some(format!("{user}:same-key"));
    writer.insert(row(dup.clone())).await.unwrap();
    let calls: Vec<_> = (0..43)
        .map(|i| {
            let (writer, r) = (writer.clone(), row(if i % 15 == 7 { dup.clone() } else { None }));
            tokio::spawn(async move { writer.insert(r).await })
        })
        .collect();
    let mut ok = 0;
    let mut duplicates = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) if skillup_kit::db::is_unique_violation(&e) => duplicates += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, duplicates), (40, 3), "each row its own outcome");
    let stored = task::Entity::find().filter(task::Column::UserId.eq(user)).count(&t.infra.db);
    assert_eq!(stored.await.unwrap(), 41, "every row that was told ok is there, nothing else");
    assert!(writer.batches() < 44, "rows sent together shared statements: {}", writer.batches());
}

async fn services_that_are_restarting_are_asked_again(kind: Kind) {
    let h = harness(kind).await;
    // A second ai whose prompt and subscribe services are down when a generation starts and
    // come up 150 ms later, as in a redeploy: the prompt and the reserve are asked again.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let generator = skillup_ai::generator(&h.t.infra, &config(&h.fake), channel.clone(), channel)
        .await
        .unwrap();
    let prompt = skillup_prompt::build(&h.t.infra).await.unwrap();
    let billing = Arc::new(skillup_subscribe::PaymentBilling::new(h._core.channel()));
    let subscribe = skillup_subscribe::build(
        &h.t.infra,
        billing,
        Duration::from_secs(3600),
        h.shutdown.clone(),
    )
    .await
    .unwrap();
    let core = GrpcServer::builder()
        .add_service(prompt.into_server())
        .add_service(subscribe.into_server())
        .identity_key(h.key.clone());
    let shutdown = h.shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        core.bind(addr).await.unwrap().run(shutdown).await
    });
    let user = Uuid::now_v7();
    let id = Caller {
        user_id: user.to_string(),
        email_verified: true,
        exp: now_secs() + 300,
        ..Default::default()
    };
    let id = Caller { assertion: h.key.sign(&id), ..id };
    let started = std::time::Instant::now();
    let out = generator
        .generate(&id, gen_req("photosynthesis", "quiz", pb::Mode::Sync).try_into().unwrap())
        .await
        .expect("answered once the services are back");
    assert!(matches!(out, skillup_ai::generate::Outcome::Inline(_)));
    assert!(started.elapsed() >= Duration::from_millis(150), "it did wait for them");
    let mut h = h;
    let u = settled_usage(&mut h, user).await;
    assert_eq!(u.generations_used, 1, "charged once");
}
