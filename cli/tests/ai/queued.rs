//! Queued tasks through the worker: retries, dead letters, concurrency under quota, cancelling, hand-back, priorities.

use super::*;

pub(super) async fn queued_tasks_complete_through_the_worker_once(kind: Kind) {
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
    // Its hold says how it ended and how long it waited for a worker (the plan's service
    // level measures both).
    ended_as(&h, user, &[("committed", Some("completed"), Some(-1))]).await;

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
                ..Default::default()
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
                ..Default::default()
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

pub(super) async fn provider_failures_retry_with_backoff_then_succeed(kind: Kind) {
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

pub(super) async fn exhausted_retries_fail_the_task_release_the_hold_and_dead_letter(kind: Kind) {
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
    // The platform's failure counts against the plan's availability; the refusals of what was
    // asked do not.
    ended_as(
        &h,
        user,
        &[
            ("released", Some("failed"), Some(-1)),
            ("released", None, Some(-1)),
            ("released", None, None),
        ],
    )
    .await;
}

pub(super) fn as_operator<T>(h: &Harness, scopes: &[&str], msg: T) -> Request<T> {
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

pub(super) async fn operators_read_and_requeue_dead_letters(kind: Kind) {
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
            pb::RequeueDeadLettersRequest { task_ids: vec!["nope".into()], ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // The provider is back: requeue, and the task runs again from attempt 1 with a new hold.
    // The requeue is audited: who, which task, why.
    let mut audit = skillup_kit::events::subscribe::<skillup_proto::common::v1::AuditEntry>(
        &bus,
        &format!("audit-requeue-{}", Uuid::now_v7()),
    )
    .await
    .unwrap();
    h.fake.set_default(Behavior::quick(30));
    let res = h
        .admin
        .requeue_dead_letters(as_operator(
            &h,
            &["admin"],
            pb::RequeueDeadLettersRequest {
                task_ids: vec![t.id.clone()],
                limit: 0,
                reason: "the provider is back".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.outcomes.len(), 1, "{res:?}");
    assert!(res.outcomes[0].requeued, "{res:?}");
    let d = tokio::time::timeout(Duration::from_secs(10), audit.next()).await.unwrap().unwrap();
    let (_, entry) =
        skillup_kit::events::decode::<skillup_proto::common::v1::AuditEntry>(&d.message.payload)
            .unwrap();
    d.ack().await.unwrap();
    assert_eq!((entry.action.as_str(), entry.component.as_str()), ("queue.requeue", "ai"));
    assert_eq!(
        (entry.target_id.as_str(), entry.reason.as_str()),
        (t.id.as_str(), "the provider is back")
    );
    assert_eq!(entry.actor, "assertion:operator");
    assert!(entry.after.contains(&t.id), "{}", entry.after);
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

pub(super) async fn fifty_concurrent_generations_with_quota_for_ten(kind: Kind) {
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

pub(super) async fn cancelling_stops_queued_and_running_tasks_and_returns_the_quota(kind: Kind) {
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
    ended_as(&h, user, &[("released", Some("cancelled"), None)]).await;
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

pub(super) async fn a_task_cancelled_while_queued_is_skipped_by_the_worker(kind: Kind) {
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

pub(super) async fn a_stopping_worker_hands_unfinished_tasks_back_to_the_queue(kind: Kind) {
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

pub(super) async fn premium_tasks_jump_the_queue(kind: Kind) {
    let mut h = harness_with(
        kind,
        Behavior::quick(5),
        |fake| AiConfig { worker_concurrency: 1, ..config(fake) },
        false,
    )
    .await;
    let (free, premium) = (Uuid::now_v7(), Uuid::now_v7());
    let top_up = TopUpRequest {
        amount_minor: 249_000,
        currency: "RUB".into(),
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
