//! Idempotency keys, the per-user result cache, provider fallback, secrets out of logs, batched task rows, services that restart.

use super::*;

pub(super) async fn retries_with_the_same_idempotency_key_get_the_first_answer(kind: Kind) {
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

pub(super) fn with_key(mut r: pb::GenerateRequest, key: &str) -> pb::GenerateRequest {
    r.idempotency_key = key.into();
    r
}

/// Issue 26.1: a key reused on streams with other topics generated new texts for free.
pub(super) async fn an_idempotency_key_binds_to_one_request_and_never_buys_a_free_generation(
    kind: Kind,
) {
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
pub(super) async fn the_result_cache_is_per_user(kind: Kind) {
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
pub(super) async fn the_fallback_chain_and_breaker_route_around_a_failing_provider() {
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
pub(super) async fn api_keys_and_prompt_text_stay_out_of_the_logs() {
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

pub(super) async fn task_rows_are_written_in_batches_each_with_its_own_outcome(kind: Kind) {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    use skillup_ai::store::{Flush, TaskWriter, task};
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
    writer.insert(row(dup.clone()), Flush::Wait).await.unwrap();
    // Queued tasks and filings mixed: a batch with any queued task waits for the flush.
    let calls: Vec<_> = (0..43)
        .map(|i| {
            let (writer, r) = (writer.clone(), row(if i % 15 == 7 { dup.clone() } else { None }));
            let flush = if i % 2 == 0 { Flush::Behind } else { Flush::Wait };
            tokio::spawn(async move { writer.insert(r, flush).await })
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

pub(super) async fn services_that_are_restarting_are_asked_again(kind: Kind) {
    let h = harness(kind).await;
    // A second ai whose prompt and subscribe services are down when a generation starts and
    // come up 150 ms later, as in a redeploy: the prompt and the reserve are asked again.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let channel = skillup_testkit::channel_as(addr, Some("ai"));
    let generator = skillup_ai::generator(&h.t.infra, &config(&h.fake), channel.clone(), channel)
        .await
        .unwrap();
    let prompt = skillup_prompt::build(&h.t.infra).await.unwrap();
    let billing = Arc::new(skillup_subscribe::PaymentBilling::new(h._core.channel_as("subscribe")));
    let subscribe = skillup_subscribe::build(
        &h.t.infra,
        billing,
        "RUB",
        Duration::from_secs(3600),
        h.shutdown.clone(),
    )
    .await
    .unwrap();
    let core = skillup_testkit::with_mesh(
        GrpcServer::builder()
            .add_service(prompt.into_server())
            .add_service(subscribe.into_server())
            .identity_key(h.key.clone()),
    );
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

/// Filings (generations answered already) commit without waiting for the WAL flush, queued
/// tasks (whose 202 promises them) wait for it: each statement sets it for its own transaction,
/// and its rows are there once it returns.
pub(super) async fn filings_commit_without_the_wal_flush_queued_tasks_with_it() {
    use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, Statement, TransactionTrait};
    use skillup_ai::store::{Flush, task, writer::insert_statement};
    let t = Kind::Real.infra().await;
    let db = &t.infra.db;
    skillup_ai::migrate(db).await.unwrap();
    let row =
        || task::Model::queued(Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), chrono::Utc::now());
    let setting =
        Statement::from_string(DbBackend::Postgres, "SELECT current_setting('synchronous_commit')");
    for (flush, expected) in [(Flush::Behind, "off"), (Flush::Wait, "on")] {
        let tx = db.begin().await.unwrap();
        let rows = vec![row().into(), row().into()];
        tx.execute_raw(insert_statement(rows, flush)).await.unwrap();
        let now = tx.query_one_raw(setting.clone()).await.unwrap().unwrap();
        let now: String = now.try_get_by_index(0).unwrap();
        assert_eq!(now, expected, "{flush:?}: the transaction's commit");
        tx.rollback().await.unwrap();
    }
    let filed = row();
    db.execute_raw(insert_statement(vec![filed.clone().into()], Flush::Behind)).await.unwrap();
    let read = task::Entity::find_by_id(filed.id).one(db).await.unwrap();
    assert_eq!(read.map(|r| r.id), Some(filed.id), "a filing is read back once its insert returns");
}
