//! Inline and streamed generations: settled by usage, replayed from the cache, a client leaving mid-stream.

use super::*;

pub(super) async fn inline_answers_settle_the_hold_by_usage_and_repeat_from_the_cache(kind: Kind) {
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

pub(super) async fn collect(h: &mut Harness, user: Uuid, req: pb::GenerateRequest) -> Vec<Event> {
    let mut s = h.ai.generate_stream(as_user(h, user, req)).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(ev) = s.next().await {
        out.push(ev.unwrap().event.unwrap());
    }
    out
}

pub(super) fn text_of(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Delta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

pub(super) async fn streams_charge_what_was_generated_and_replay_from_the_cache(kind: Kind) {
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

pub(super) async fn a_client_leaving_mid_stream_cancels_the_provider_and_pays_for_what_was_produced(
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
