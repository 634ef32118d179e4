//! Queued generation under faults, on the real PostgreSQL, Redis and RabbitMQ: a worker
//! process killed mid-task, and the broker restarted while tasks are being accepted. The
//! prompt, payment, subscribe and ai services run in this test process; the worker runs as
//! `skillup serve worker` where the test needs to kill it. The provider is the local fake.

mod common;

use std::{
    collections::HashSet,
    process::Child,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{free_port, skillup};
use skillup_ai::{
    AiConfig,
    config::{ProviderConfig, ProviderKind},
    fake::{Behavior, FakeProvider},
};
use skillup_kit::{
    Config, Shutdown,
    bus::SubscriptionSpec,
    grpc::GrpcServer,
    identity::{Caller, IdentityKey, now_secs},
    infra::Infra,
};
use skillup_proto::{
    ai::v1::{self as pb, TaskStatus, generation_service_client::GenerationServiceClient},
    subscribe::v1::{self as subpb, subscription_service_client::SubscriptionServiceClient},
};
use skillup_testkit::Channel;
use skillup_testkit::{self as testing, TestDb, TestServer};
use tonic::Request;
use uuid::Uuid;

/// The services of one deployment, in this process, with the names a worker process needs.
struct Deployment {
    config: Config,
    ai_config: AiConfig,
    infra: Infra,
    key: Arc<IdentityKey>,
    core: TestServer,
    ai: GenerationServiceClient<Channel>,
    subs: SubscriptionServiceClient<Channel>,
    shutdown: Shutdown,
    payments: skillup_proto::payment::v1::payment_service_client::PaymentServiceClient<Channel>,
    _pay: TestServer,
    _db: TestDb,
    _ai_server: TestServer,
}

async fn deployment(fake: &FakeProvider, in_process_worker: bool) -> Deployment {
    let db = TestDb::postgres().await;
    let mut config = Config {
        database_url: Some(db.url.clone().into()),
        redis_url: Some(testing::redis_url().into()),
        amqp_url: Some(testing::amqp_url().into()),
        cache_prefix: format!("test:{}:", testing::unique()),
        ..Default::default()
    };
    config.bus.exchange = format!("test.{}.events", testing::unique());
    config.bus.queue_prefix = format!("test.{}.", testing::unique());
    config.bus.publish_timeout_ms = 30_000;
    let mut ai = AiConfig::default();
    ai.providers.clear();
    ai.providers.insert(
        "openai".into(),
        ProviderConfig {
            kind: ProviderKind::Openai,
            base_url: fake.openai_url(),
            api_key: Some("sk-test".to_owned().into()),
            model: "gpt-test".into(),
            ..Default::default()
        },
    );
    ai.chain = vec!["openai".into()];
    ai.retry_base_ms = 200;
    let infra = Infra::connect(&config).await.unwrap();
    let key = Arc::new(IdentityKey::random());
    let shutdown = Shutdown::new();
    let payment =
        skillup_payment::build(&infra, &Default::default(), "", shutdown.clone()).await.unwrap();
    let pay = TestServer::start(
        GrpcServer::builder().add_service(payment.into_server()).identity_key(key.clone()),
    )
    .await;
    let billing = Arc::new(skillup_subscribe::PaymentBilling::new(pay.channel_as("subscribe")));
    let subscribe = skillup_subscribe::build(
        &infra,
        billing,
        "RUB",
        Duration::from_secs(3600),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let prompt = skillup_prompt::build(&infra).await.unwrap();
    let core = TestServer::start(
        GrpcServer::builder()
            .add_service(prompt.into_server())
            .add_service(subscribe.into_server())
            .identity_key(key.clone()),
    )
    .await;
    let generator =
        skillup_ai::generator(&infra, &ai, core.channel_as("ai"), core.channel_as("ai"))
            .await
            .unwrap();
    if in_process_worker {
        let w = skillup_ai::Worker::new(generator.clone());
        tokio::spawn(w.run(shutdown.clone(), Duration::from_secs(5)));
    }
    let ai_server = TestServer::start(
        GrpcServer::builder()
            .add_service(skillup_ai::AiGrpc::new(generator).into_server())
            .identity_key(key.clone()),
    )
    .await;
    Deployment {
        ai: GenerationServiceClient::new(ai_server.channel()),
        subs: SubscriptionServiceClient::new(core.channel()),
        config,
        ai_config: ai,
        infra,
        key,
        core,
        shutdown,
        payments: skillup_proto::payment::v1::payment_service_client::PaymentServiceClient::new(
            pay.channel(),
        ),
        _pay: pay,
        _db: db,
        _ai_server: ai_server,
    }
}

impl Deployment {
    fn as_user<T>(&self, user: Uuid, msg: T) -> Request<T> {
        let id = Caller {
            user_id: user.to_string(),
            email_verified: true,
            exp: now_secs() + 600,
            ..Default::default()
        };
        let mut req = Request::new(msg);
        req.metadata_mut().insert("x-skillup-identity", self.key.sign(&id).parse().unwrap());
        req
    }

    /// `skillup serve worker` on this deployment's servers.
    fn worker_process(&self, dir: &std::path::Path) -> Child {
        let c = &self.config;
        let p = &self.ai_config.providers["openai"];
        skillup()
            .args(["serve", "worker", "--grpc-addr"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(dir)
            .env("DATABASE_URL", &self._db.url)
            .env("REDIS_URL", testing::redis_url())
            .env("AMQP_URL", testing::amqp_url())
            .env("SKILLUP_CACHE_PREFIX", &c.cache_prefix)
            .env("SKILLUP_BUS__EXCHANGE", &c.bus.exchange)
            .env("SKILLUP_BUS__QUEUE_PREFIX", &c.bus.queue_prefix)
            .env("SKILLUP_EDGE__UPSTREAM_DEFAULT", format!("http://{}", self.core.addr))
            .env("SKILLUP_AI__PROVIDERS__OPENAI__BASE_URL", &p.base_url)
            .env("SKILLUP_AI__PROVIDERS__OPENAI__API_KEY", "sk-test")
            .env("SKILLUP_AI__PROVIDERS__OPENAI__MODEL", &p.model)
            .env("SKILLUP_AI__RETRY_BASE_MS", self.ai_config.retry_base_ms.to_string())
            // The worker's certificate of the test mesh the in-test servers trust.
            .env("SKILLUP_MESH__CA_FILE", testing::mesh_dir().join("ca.pem"))
            .env("SKILLUP_MESH__CERT_FILE", testing::mesh_dir().join("worker.pem"))
            .env("SKILLUP_MESH__KEY_FILE", testing::mesh_dir().join("worker.key"))
            .spawn()
            .unwrap()
    }

    async fn task(&mut self, user: Uuid, id: &str) -> pb::Task {
        let req = self.as_user(user, pb::GetTaskRequest { task_id: id.into() });
        self.ai.get_task(req).await.unwrap().into_inner()
    }

    /// Tops the user up and subscribes them to premium (2,000 generations a period).
    async fn premium(&mut self, user: Uuid) {
        use skillup_proto::payment::v1::TopUpRequest;
        let req = self.as_user(
            user,
            TopUpRequest {
                amount_minor: 249_000,
                currency: "RUB".into(),
                idempotency_key: "fund".into(),
                payment_method: String::new(),
            },
        );
        self.payments.top_up(req).await.unwrap();
        let req = self.as_user(
            user,
            subpb::SubscribeRequest { plan: "premium".into(), idempotency_key: String::new() },
        );
        self.subs.subscribe(req).await.unwrap();
    }

    async fn usage(&mut self, user: Uuid) -> subpb::Usage {
        let req = self.as_user(user, subpb::GetUsageRequest {});
        self.subs.get_usage(req).await.unwrap().into_inner()
    }
}

fn submit(topic: &str) -> pb::GenerateRequest {
    pb::GenerateRequest {
        topic: topic.into(),
        function: "quiz".into(),
        mode: pb::Mode::Async as i32,
        max_tokens: 100,
        ..Default::default()
    }
}

async fn until(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_leaves_it_to_the_next_which_completes_it_once_charged_once() {
    let fake = FakeProvider::start(Behavior::Answer {
        words: 20,
        first_token: Duration::from_secs(30),
        per_token: Duration::ZERO,
    })
    .await;
    let mut d = deployment(&fake, false).await;
    let mut completed = d
        .infra
        .bus
        .subscribe(
            &SubscriptionSpec::new(
                "test-completions",
                &[<pb::GenerationCompleted as skillup_proto::events::Event>::KIND],
            ),
            16,
        )
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("skillup-worker-{}", testing::unique()));
    let user = Uuid::now_v7();
    let task =
        d.ai.submit_task(d.as_user(user, submit("crash course"))).await.unwrap().into_inner();

    let mut first = d.worker_process(&dir);
    until("the first worker calls the provider", 60, async || fake.requests() == 1).await;
    assert_eq!(d.task(user, &task.id).await.status(), TaskStatus::Running);
    first.kill().unwrap(); // SIGKILL: no goodbye, no ack
    first.wait().unwrap();

    fake.set_default(Behavior::quick(20));
    let mut second = d.worker_process(&dir);
    until("the task completes", 60, async || {
        d.task(user, &task.id).await.status() == TaskStatus::Completed
    })
    .await;
    let done = d.task(user, &task.id).await;
    assert_eq!(done.text.split(' ').count(), 20);
    assert_eq!(fake.requests(), 2, "the killed run, then the one that finished");
    until("the hold is settled", 10, async || d.usage(user).await.tokens_held == 0).await;
    let u = d.usage(user).await;
    assert_eq!(u.generations_used, 1, "charged once");
    assert_eq!(u.tokens_used, done.usage.unwrap().total_tokens as u64);
    eprintln!(
        "fault worker-sigkill: sent 1 task, accepted 1, lost 0, duplicated 0 \
         (the provider was called twice: the killed run and the one that finished; charged once)"
    );
    let ev =
        tokio::time::timeout(Duration::from_secs(10), completed.next()).await.unwrap().unwrap();
    assert_eq!(ev.message.id, format!("{}:completed", task.id));
    ev.ack().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(2), completed.next()).await.is_err(),
        "completed once"
    );
    let _ = second.kill();
    let _ = second.wait();
    d.shutdown.trigger();
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 27.4: `serve worker` exited 3.4 s after SIGTERM with 3 tasks in flight (8 s
/// provider); they were redelivered and the provider paid twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_finishes_its_tasks_before_it_exits_on_sigterm() {
    let fake = FakeProvider::start(Behavior::Answer {
        words: 20,
        first_token: Duration::from_secs(6),
        per_token: Duration::ZERO,
    })
    .await;
    let mut d = deployment(&fake, false).await;
    let dir = std::env::temp_dir().join(format!("skillup-worker-{}", testing::unique()));
    let user = Uuid::now_v7();
    let mut tasks = Vec::new();
    for n in 0..3 {
        let req = d.as_user(user, submit(&format!("drain {n}")));
        tasks.push(d.ai.submit_task(req).await.unwrap().into_inner().id);
    }
    let mut worker = d.worker_process(&dir);
    until("the worker calls the provider for all three", 60, async || fake.requests() == 3).await;
    let asked = Instant::now();
    let pid = worker.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = loop {
        if let Some(s) = worker.try_wait().unwrap() {
            break s;
        }
        assert!(asked.elapsed() < Duration::from_secs(60), "the worker never exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let drain = asked.elapsed();
    assert!(status.success(), "{status:?}");
    for id in &tasks {
        assert_eq!(d.task(user, id).await.status(), TaskStatus::Completed, "{id}");
    }
    assert_eq!(fake.requests(), 3, "no task was run again");
    until("the holds are settled", 10, async || d.usage(user).await.tokens_held == 0).await;
    assert_eq!(d.usage(user).await.generations_used, 3, "each charged once");
    eprintln!(
        "worker drain: 3 tasks in flight finished, exited {:.1} s after SIGTERM",
        drain.as_secs_f64()
    );
    d.shutdown.trigger();
    let _ = std::fs::remove_dir_all(dir);
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the broker: run serially (scripts/test)"]
async fn no_task_that_got_a_202_is_lost_when_the_broker_restarts() {
    let fake = FakeProvider::start(Behavior::quick(10)).await;
    let mut d = deployment(&fake, true).await;
    let user = Uuid::now_v7();
    d.premium(user).await;
    // Submit steadily from a second task while the broker goes down and comes back.
    let mut ai = d.ai.clone();
    let key = d.key.clone();
    let submitter = tokio::spawn(async move {
        let (mut accepted, mut refused) = (Vec::new(), 0u32);
        let end = Instant::now() + Duration::from_secs(12);
        let mut i = 0;
        while Instant::now() < end {
            i += 1;
            let id = Caller {
                user_id: user.to_string(),
                email_verified: true,
                exp: now_secs() + 600,
                ..Default::default()
            };
            let mut req = Request::new(submit(&format!("topic {i}")));
            req.metadata_mut().insert("x-skillup-identity", key.sign(&id).parse().unwrap());
            match ai.submit_task(req).await {
                Ok(t) => accepted.push(t.into_inner().id),
                Err(e) => {
                    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                    refused += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        (accepted, refused)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    rabbitmqctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["start_app"]);
    let (accepted, refused) = submitter.await.unwrap();
    assert!(accepted.len() > 50, "steady submissions were accepted: {}", accepted.len());
    let mut pending: HashSet<String> = accepted.iter().cloned().collect();
    let end = Instant::now() + Duration::from_secs(90);
    while !pending.is_empty() && Instant::now() < end {
        let mut still = HashSet::new();
        for id in pending {
            let t = d.task(user, &id).await;
            match t.status() {
                TaskStatus::Completed => {}
                TaskStatus::Queued | TaskStatus::Running => {
                    still.insert(id);
                }
                other => panic!("accepted task {id} ended {other:?}: {}", t.error),
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    until("every hold is settled", 30, async || d.usage(user).await.tokens_held == 0).await;
    let u = d.usage(user).await;
    eprintln!(
        "fault broker-restart: sent {} tasks, accepted {}, refused {} with UNAVAILABLE, lost {}, duplicated {}",
        accepted.len() + refused as usize,
        accepted.len(),
        refused,
        pending.len(),
        (u.generations_used as usize).saturating_sub(accepted.len())
    );
    assert!(pending.is_empty(), "accepted but never completed: {pending:?}");
    assert_eq!(u.generations_used as usize, accepted.len(), "each accepted task charged once");
    d.shutdown.trigger();
}
