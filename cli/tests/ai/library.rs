//! The library (issue 19): every generation — inline, streamed, queued — is a document its
//! owner lists, finds by words, titles, stars and deletes; nobody else sees it.

use super::*;

fn list(filter: impl FnOnce(&mut pb::ListTasksRequest)) -> pb::ListTasksRequest {
    let mut r = pb::ListTasksRequest::default();
    filter(&mut r);
    r
}

async fn library(h: &mut Harness, user: Uuid, r: pb::ListTasksRequest) -> Vec<pb::Task> {
    h.ai.list_tasks(as_user(h, user, r)).await.unwrap().into_inner().tasks
}

async fn finished(h: &mut Harness, user: Uuid, id: &str) -> pb::Task {
    for _ in 0..200 {
        let req = as_user(h, user, pb::GetTaskRequest { task_id: id.into() });
        let t = h.ai.get_task(req).await.unwrap().into_inner();
        if t.status() == TaskStatus::Completed {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task {id} did not complete");
}

/// Runs `req` the way `delivery` says; the new document's id.
async fn generate(
    h: &mut Harness,
    user: Uuid,
    req: pb::GenerateRequest,
    delivery: pb::Delivery,
) -> String {
    match delivery {
        pb::Delivery::Inline => {
            let r = h.ai.generate(as_user(h, user, req)).await.unwrap().into_inner();
            let Some(Outcome::Completion(c)) = r.outcome else { panic!("inline: {r:?}") };
            c.id
        }
        pb::Delivery::Stream => {
            let mut s = h.ai.generate_stream(as_user(h, user, req)).await.unwrap().into_inner();
            let mut id = String::new();
            while let Some(ev) = s.next().await {
                if let Some(Event::Started(st)) = ev.unwrap().event {
                    id = st.id;
                }
            }
            id
        }
        _ => {
            let t = h.ai.submit_task(as_user(h, user, req)).await.unwrap().into_inner();
            finished(h, user, &t.id).await.id
        }
    }
}

pub(super) async fn every_generation_is_a_document_of_the_library(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    let mut ids = Vec::new();
    for (topic, delivery) in [
        ("inline answer", pb::Delivery::Inline),
        ("streamed answer", pb::Delivery::Stream),
        ("queued answer", pb::Delivery::Queued),
    ] {
        let mut req = gen_req(topic, "quiz", pb::Mode::Sync);
        req.params.insert("questions".into(), "3".into());
        ids.push((generate(&mut h, user, req, delivery).await, delivery));
    }
    let docs = library(&mut h, user, list(|_| {})).await;
    let listed: Vec<(&str, pb::Delivery)> =
        docs.iter().map(|d| (d.id.as_str(), d.delivery())).collect();
    let expected: Vec<(&str, pb::Delivery)> =
        ids.iter().rev().map(|(id, d)| (id.as_str(), *d)).collect();
    assert_eq!(listed, expected, "newest first, each as it ran");
    for d in &docs {
        assert_eq!(d.status(), TaskStatus::Completed);
        assert!(d.text.is_empty() && !d.excerpt.is_empty(), "a listing shows an excerpt: {d:?}");
        assert_eq!(d.title, d.topic, "titled by the topic until its owner sets one");
        assert_eq!(d.params.get("questions").map(String::as_str), Some("3"));
        assert_eq!(d.provider, "openai");
        assert!(!d.model.is_empty() && d.usage.is_some() && !d.interrupted, "{d:?}");
    }
    // An inline answer's id leads to its document, text and all.
    let inline = &ids[0].0;
    let req = as_user(&h, user, pb::GetTaskRequest { task_id: inline.clone() });
    let doc = h.ai.get_task(req).await.unwrap().into_inner();
    assert_eq!(doc.delivery(), pb::Delivery::Inline);
    assert!(doc.text.starts_with(&docs[2].excerpt.trim_end_matches('…')[..10]), "{doc:?}");

    // Pages by cursor, the same documents in the same order.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = skillup_proto::common::v1::PageRequest { page_size: 2, page_token: token };
        let r = h.ai.list_tasks(as_user(&h, user, list(|r| r.page = Some(page)))).await;
        let r = r.unwrap().into_inner();
        seen.extend(r.tasks.into_iter().map(|t| t.id));
        token = r.page.unwrap_or_default().next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, docs.iter().map(|d| d.id.clone()).collect::<Vec<_>>());
    assert!(library(&mut h, Uuid::now_v7(), list(|_| {})).await.is_empty(), "nobody else's");
}

pub(super) async fn the_library_finds_words_and_filters(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    let plants = generate(
        &mut h,
        user,
        gen_req("Photosynthesis in green plants", "quiz", pb::Mode::Sync),
        pb::Delivery::Inline,
    )
    .await;
    let mut ru = gen_req("Фотосинтез зелёных растений", "article", pb::Mode::Sync);
    ru.locale = "ru".into();
    let rastenia = generate(&mut h, user, ru, pb::Delivery::Inline).await;
    let rome = generate(
        &mut h,
        user,
        gen_req("The fall of Rome", "quiz", pb::Mode::Sync),
        pb::Delivery::Inline,
    )
    .await;
    let found = |docs: Vec<pb::Task>| docs.into_iter().map(|d| d.id).collect::<Vec<_>>();

    // A word's other forms: stemmed by the document's locale on PostgreSQL, a prefix on
    // SQLite (FTS5 knows no Russian stemming).
    let q = |s: &str| list(|r| r.query = s.into());
    assert_eq!(found(library(&mut h, user, q("plant")).await), [plants.as_str()]);
    assert_eq!(found(library(&mut h, user, q("РАСТЕН")).await), [rastenia.as_str()]);
    if kind == Kind::Real {
        assert_eq!(found(library(&mut h, user, q("растения")).await), [rastenia.as_str()]);
        assert_eq!(found(library(&mut h, user, q("falling")).await), [rome.as_str()]);
    }
    assert_eq!(found(library(&mut h, user, q("фотосинтез")).await), [rastenia.as_str()]);
    assert_eq!(found(library(&mut h, user, q("rome fall")).await), [rome.as_str()], "every word");
    assert!(library(&mut h, user, q("nothing-like-this")).await.is_empty());
    // Query syntax and SQL in the words are words.
    for hostile in
        [r#"" OR 1=1 --"#, "rome' ; DROP TABLE ai_tasks; --", "NEAR(a b)", "*", "\"", "!:&|"]
    {
        let r = h.ai.list_tasks(as_user(&h, user, q(hostile))).await;
        assert!(r.is_ok(), "{hostile}: {r:?}");
    }
    assert_eq!(library(&mut h, user, list(|_| {})).await.len(), 3, "the table is still there");
    assert!(library(&mut h, user, q("!!! ...")).await.is_empty(), "no word finds nothing");
    assert_eq!(library(&mut h, user, q("   ")).await.len(), 3, "a blank query is no filter");
    let long = "a".repeat(201);
    let err = h.ai.list_tasks(as_user(&h, user, q(&long))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, "query");

    let quizzes = found(library(&mut h, user, list(|r| r.function = "quiz".into())).await);
    assert_eq!(quizzes, [rome.as_str(), plants.as_str()]);
    let edit = pb::UpdateTaskRequest {
        task_id: plants.clone(),
        starred: Some(true),
        ..Default::default()
    };
    h.ai.update_task(as_user(&h, user, edit)).await.unwrap();
    assert_eq!(found(library(&mut h, user, list(|r| r.starred = true)).await), [plants.as_str()]);
    let both = list(|r| {
        r.starred = true;
        r.query = "rome".into();
    });
    assert!(library(&mut h, user, both).await.is_empty(), "filters combine");
    // A title is found too.
    let edit = pb::UpdateTaskRequest {
        task_id: rome.clone(),
        title: Some("Ancient empires".into()),
        ..Default::default()
    };
    h.ai.update_task(as_user(&h, user, edit)).await.unwrap();
    assert_eq!(found(library(&mut h, user, q("empires")).await), [rome.as_str()]);

    // PostgreSQL: the indexer fills each document's vector after it is filed or renamed (off
    // the answer's path); a search finds a document either way, before and after.
    if kind == Kind::Real {
        use sea_orm::{ConnectionTrait, Statement};
        let db = h.t.infra.db.clone();
        let db = &db;
        let waiting = || async {
            let sql = format!(
                "SELECT count(*) AS n FROM ai_tasks WHERE user_id = '{user}' AND search IS NULL"
            );
            let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql));
            row.await.unwrap().unwrap().try_get::<i64>("", "n").unwrap()
        };
        let mut left = waiting().await;
        for _ in 0..100 {
            if left == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            left = waiting().await;
        }
        assert_eq!(left, 0, "every document indexed");
        assert_eq!(found(library(&mut h, user, q("empires")).await), [rome.as_str()]);
        let sql = format!("UPDATE ai_tasks SET search = NULL WHERE user_id = '{user}'");
        db.execute_unprepared(&sql).await.unwrap();
        assert_eq!(found(library(&mut h, user, q("empires")).await), [rome.as_str()]);
        assert_eq!(found(library(&mut h, user, q("растения")).await), [rastenia.as_str()]);
    }
}

pub(super) async fn owners_title_star_and_delete_their_documents_others_get_not_found(kind: Kind) {
    let mut h = harness_with(kind, Behavior::quick(40), config, false).await;
    let user = Uuid::now_v7();
    let other = Uuid::now_v7();
    let id =
        generate(&mut h, user, gen_req("titles", "quiz", pb::Mode::Sync), pb::Delivery::Inline)
            .await;

    let edit = |title: Option<&str>, starred: Option<bool>| pb::UpdateTaskRequest {
        task_id: id.clone(),
        title: title.map(str::to_owned),
        starred,
    };
    let t = h.ai.update_task(as_user(&h, user, edit(Some("  Мой тест  "), None))).await.unwrap();
    let t = t.into_inner();
    assert_eq!((t.title.as_str(), t.starred), ("Мой тест", false), "trimmed");
    let t = h.ai.update_task(as_user(&h, user, edit(None, Some(true)))).await.unwrap().into_inner();
    assert_eq!((t.title.as_str(), t.starred), ("Мой тест", true), "each field alone");
    for bad in ["   ", &"я".repeat(201)] {
        let err = h.ai.update_task(as_user(&h, user, edit(Some(bad), None))).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, "title");
    }

    // Someone else's document does not exist for them.
    let get = |id: &str| pb::GetTaskRequest { task_id: id.into() };
    let e = h.ai.get_task(as_user(&h, other, get(&id))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = h.ai.update_task(as_user(&h, other, edit(Some("mine"), None))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let del = |id: &str| pb::DeleteTaskRequest { task_id: id.into() };
    let e = h.ai.delete_task(as_user(&h, other, del(&id))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    h.ai.delete_task(as_user(&h, user, del(&id))).await.unwrap();
    let e = h.ai.get_task(as_user(&h, user, get(&id))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "gone, also from the cache");
    let e = h.ai.delete_task(as_user(&h, user, del(&id))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // A queued task is cancelled before it goes: its quota comes back. (No worker here.)
    let queued = h.ai.submit_task(as_user(&h, user, gen_req("waiting", "quiz", pb::Mode::Async)));
    let queued = queued.await.unwrap().into_inner();
    assert!(usage(&mut h, user).await.tokens_held > 0);
    h.ai.delete_task(as_user(&h, user, del(&queued.id))).await.unwrap();
    assert_eq!(settled_usage(&mut h, user).await.tokens_held, 0, "the hold went back");
    assert!(library(&mut h, user, list(|_| {})).await.is_empty());
}

pub(super) async fn a_stream_its_client_left_is_kept_with_what_was_generated(kind: Kind) {
    let slow = Behavior::Answer {
        words: 400,
        first_token: Duration::ZERO,
        per_token: Duration::from_millis(20),
    };
    let mut h = harness_with(kind, slow, config, false).await;
    let user = Uuid::now_v7();
    let req = gen_req("leaving early", "quiz", pb::Mode::Sync);
    let mut s = h.ai.generate_stream(as_user(&h, user, req)).await.unwrap().into_inner();
    let (mut id, mut text) = (String::new(), String::new());
    while let Some(ev) = s.next().await {
        match ev.unwrap().event {
            Some(Event::Started(st)) => id = st.id,
            Some(Event::Delta(d)) => {
                text.push_str(&d);
                if text.split_whitespace().count() >= 5 {
                    break;
                }
            }
            _ => {}
        }
    }
    drop(s);
    let mut doc = None;
    for _ in 0..200 {
        let req = as_user(&h, user, pb::GetTaskRequest { task_id: id.clone() });
        if let Ok(t) = h.ai.get_task(req).await {
            doc = Some(t.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let doc = doc.expect("the interrupted stream is in the library");
    assert!(doc.interrupted && doc.finish_reason == "cancelled", "{doc:?}");
    assert_eq!(doc.delivery(), pb::Delivery::Stream);
    assert!(doc.text.starts_with(&text), "what the client saw is kept: {:?} / {text:?}", doc.text);
    assert!(doc.text.split_whitespace().count() < 400, "not the whole answer");
}

/// The words' condition the store writes reads the full-text index: PostgreSQL's GIN index
/// (which plan wins on a user's 100,000 documents is measured by the library benchmark),
/// SQLite's FTS5 table.
pub(super) async fn the_search_can_use_its_index(kind: Kind) {
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
    let h = harness(kind).await;
    let db = &h.t.infra.db;
    let backend = db.get_database_backend();
    let tx = db.begin().await.unwrap();
    let (explain, uses) = if kind == Kind::Real {
        tx.execute_unprepared("SET LOCAL enable_seqscan = off").await.unwrap();
        // The store's condition: indexed documents by the GIN index, the ones the indexer has
        // not reached by the partial index of those.
        (
            "EXPLAIN SELECT id FROM ai_tasks WHERE (ai_tasks.search @@ \
             (websearch_to_tsquery('russian', 'plan') || websearch_to_tsquery('english', 'plan')) \
             OR (ai_tasks.search IS NULL AND to_tsvector('english', topic) @@ \
             (websearch_to_tsquery('russian', 'plan') || websearch_to_tsquery('english', 'plan'))))",
            "ai_tasks_search",
        )
    } else {
        (
            "EXPLAIN QUERY PLAN SELECT id FROM ai_tasks WHERE ai_tasks.id IN \
             (SELECT id FROM ai_tasks_fts WHERE ai_tasks_fts MATCH '\"plan\"*')",
            "VIRTUAL TABLE INDEX",
        )
    };
    let plan = tx.query_all_raw(Statement::from_string(backend, explain)).await.unwrap();
    let plan: Vec<String> = plan
        .iter()
        .map(|r| {
            r.try_get_by_index::<String>(0)
                .or_else(|_| r.try_get::<String>("", "detail"))
                .unwrap_or_default()
        })
        .collect();
    assert!(plan.iter().any(|l| l.contains(uses)), "{}", plan.join("\n"));
    if kind == Kind::Real {
        let unindexed = plan.iter().any(|l| l.contains("ai_tasks_unindexed"));
        assert!(unindexed, "the rows waiting for the indexer by their index: {}", plan.join("\n"));
    }
    tx.rollback().await.unwrap();
}

pub(super) async fn regenerating_makes_a_new_linked_document_never_from_the_cache(kind: Kind) {
    let mut h = harness(kind).await;
    let user = Uuid::now_v7();
    let other = Uuid::now_v7();
    let mut req = gen_req("regenerate me", "quiz", pb::Mode::Sync);
    req.params.insert("questions".into(), "4".into());
    let first = generate(&mut h, user, req.clone(), pb::Delivery::Inline).await;
    // The same request again is a cache hit: no provider call.
    generate(&mut h, user, req, pb::Delivery::Inline).await;
    assert_eq!(h.fake.requests(), 1);
    let used = settled_usage(&mut h, user).await.tokens_used;

    let again = |id: &str| pb::RegenerateTaskRequest { task_id: id.into(), ..Default::default() };
    let r = h.ai.regenerate_task(as_user(&h, user, again(&first))).await.unwrap().into_inner();
    let Some(Outcome::Completion(c)) = r.outcome else { panic!("inline as the original: {r:?}") };
    assert_eq!(h.fake.requests(), 2, "asked the provider, not the cache");
    assert!(!c.cached && c.id != first, "{c:?}");
    assert!(settled_usage(&mut h, user).await.tokens_used > used, "charged like any generation");
    let doc = h.ai.get_task(as_user(&h, user, pb::GetTaskRequest { task_id: c.id.clone() }));
    let doc = doc.await.unwrap().into_inner();
    assert_eq!(doc.regenerated_from, first);
    assert_eq!((doc.topic.as_str(), doc.function.as_str()), ("regenerate me", "quiz"));
    assert_eq!(doc.params.get("questions").map(String::as_str), Some("4"), "same parameters");

    // A queued original is regenerated queued.
    let queued =
        generate(&mut h, user, gen_req("long one", "quiz", pb::Mode::Async), pb::Delivery::Queued)
            .await;
    let r = h.ai.regenerate_task(as_user(&h, user, again(&queued))).await.unwrap().into_inner();
    let Some(Outcome::Task(t)) = r.outcome else { panic!("queued as the original: {r:?}") };
    let t = finished(&mut h, user, &t.task_id).await;
    assert_eq!(t.regenerated_from, queued);
    assert_eq!(t.delivery(), pb::Delivery::Queued);

    // Someone else's document cannot be regenerated (nor found).
    let e = h.ai.regenerate_task(as_user(&h, other, again(&first))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

pub(super) async fn a_document_downloads_as_markdown_text_or_html(kind: Kind) {
    let mut h = harness_with(kind, Behavior::quick(40), config, false).await;
    let user = Uuid::now_v7();
    let id =
        generate(&mut h, user, gen_req("экспорт", "quiz", pb::Mode::Sync), pb::Delivery::Inline)
            .await;
    let edit = pb::UpdateTaskRequest {
        task_id: id.clone(),
        title: Some("Урок 1/2: «фото»".into()),
        starred: None,
    };
    h.ai.update_task(as_user(&h, user, edit)).await.unwrap();
    let text =
        h.ai.get_task(as_user(&h, user, pb::GetTaskRequest { task_id: id.clone() }))
            .await
            .unwrap()
            .into_inner()
            .text;
    let export =
        |format: &str| pb::ExportTaskRequest { task_id: id.clone(), format: format.into() };

    for (format, ext, content_type) in [
        ("md", "md", "text/markdown; charset=utf-8"),
        ("", "md", "text/markdown; charset=utf-8"),
        ("txt", "txt", "text/plain; charset=utf-8"),
        ("HTML", "html", "text/html; charset=utf-8"),
    ] {
        let res = h.ai.export_task(as_user(&h, user, export(format))).await.unwrap();
        let disposition = res.metadata().get("content-disposition").unwrap().to_str().unwrap();
        // The name drops the path characters: «Урок 12 «фото».ext», percent-encoded as UTF-8; the ASCII name keeps what it can.
        let encoded = format!(
            "filename*=UTF-8''%D0%A3%D1%80%D0%BE%D0%BA%2012%20%C2%AB%D1%84%D0%BE%D1%82%D0%BE%C2%BB.{ext}"
        );
        assert!(disposition.starts_with("attachment; filename=\"____ 12 ______."), "{disposition}");
        assert!(disposition.ends_with(&encoded), "{disposition}");
        let body = res.into_inner();
        assert_eq!(body.content_type, content_type);
        let body = String::from_utf8(body.data).unwrap();
        let first_words = text.split_whitespace().next().unwrap().trim_matches('#');
        assert!(body.contains(first_words), "{format}: the text is in the file: {body}");
        match ext {
            "md" => assert!(body.starts_with("# Урок 1/2: «фото»\n\n"), "{body}"),
            "txt" => assert!(body.starts_with("Урок 1/2: «фото»\n\n"), "{body}"),
            _ => assert!(body.contains("<title>Урок 1/2: «фото»</title>"), "{body}"),
        }
    }

    let err = h.ai.export_task(as_user(&h, user, export("pdf"))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, "format");
    let other = Uuid::now_v7();
    let err = h.ai.export_task(as_user(&h, other, export("md"))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "someone else's document does not exist");

    // A queued document has nothing to download yet. (No worker here.)
    let queued = h.ai.submit_task(as_user(&h, user, gen_req("waiting", "quiz", pb::Mode::Async)));
    let queued = queued.await.unwrap().into_inner();
    let req = pb::ExportTaskRequest { task_id: queued.id, format: "md".into() };
    let err = h.ai.export_task(as_user(&h, user, req)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "409 at the edge: {err:?}");
    assert!(err.message().contains("no text"), "{err:?}");
}

pub(super) async fn a_deleted_users_library_and_cached_answers_are_forgotten(kind: Kind) {
    let mut h = harness_with(kind, Behavior::quick(40), config, false).await;
    let (user, other) = (Uuid::now_v7(), Uuid::now_v7());
    let req = gen_req("forget me", "quiz", pb::Mode::Sync);
    generate(&mut h, user, req.clone(), pb::Delivery::Inline).await;
    assert!(inline(&mut h, user, req.clone()).await.unwrap().cached, "an answer is cached");
    generate(&mut h, other, req.clone(), pb::Delivery::Inline).await;
    let queued = h.ai.submit_task(as_user(&h, user, gen_req("waiting", "quiz", pb::Mode::Async)));
    queued.await.unwrap();
    assert_eq!(library(&mut h, user, list(|_| {})).await.len(), 3);

    assert_eq!(h.generator.forget_user(user).await.unwrap(), 3, "every document, queued too");
    assert!(library(&mut h, user, list(|_| {})).await.is_empty());
    assert!(!inline(&mut h, user, req.clone()).await.unwrap().cached, "no cached answer left");
    assert_eq!(library(&mut h, other, list(|_| {})).await.len(), 1, "nobody else's");
    assert!(inline(&mut h, other, req).await.unwrap().cached, "nor their cache");
    assert_eq!(h.generator.forget_user(user).await.unwrap(), 1, "again: only what came since");
}
