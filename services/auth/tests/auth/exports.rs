//! "Export my data" at the auth service: one operation however often it is asked, prepared in
//! the background (once, with several replicas), a zip of every part, downloadable by its
//! owner only, for a day; an emailed link; retried when a part fails.

use std::{
    io::Read as _,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt as _;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use skillup_auth::{
    ports::{DataHolder, Part},
    store::entities::{data_export, data_export_chunk},
};
use skillup_kit::export::Piece;
use skillup_proto::auth::v1 as pb;
use skillup_testkit::Kind;
use tonic::{Code, Request};
use uuid::Uuid;

use super::*;

/// A service holding a library of two documents; its first `failures` calls fail midway.
struct Library {
    failures: usize,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl DataHolder for Library {
    fn name(&self) -> &'static str {
        "ai"
    }

    async fn export(&self, _user: Uuid) -> Result<Part, String> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let piece =
            |path: &str, data: &str| Ok(Piece { path: path.into(), data: data.to_owned().into() });
        let mut pieces = vec![
            piece("library/documents.json", "[\n  {\"title\": \"Растения\"}"),
            piece("library/documents.json", "\n]\n"),
        ];
        if call < self.failures {
            pieces.push(Err("ai: the database is away".into()));
        } else {
            pieces
                .push(piece("library/2026-12-05 Растения (0193ab12).md", "# Растения\n\nТекст.\n"));
        }
        Ok(futures::stream::iter(pieces).boxed())
    }
}

fn library(failures: usize) -> Arc<Library> {
    Arc::new(Library { failures, calls: AtomicUsize::new(0) })
}

async fn ask(h: &mut Harness, token: &str) -> pb::DataExport {
    let res = h.client.request_data_export(bearer(pb::RequestDataExportRequest {}, token)).await;
    let res = res.unwrap();
    assert_eq!(res.metadata().get("x-http-status").unwrap(), "202");
    res.into_inner()
}

async fn exports(h: &mut Harness, token: &str) -> Vec<pb::DataExport> {
    let req = bearer(pb::ListDataExportsRequest {}, token);
    h.client.list_data_exports(req).await.unwrap().into_inner().exports
}

/// The export once it is no longer being prepared.
async fn settled(h: &mut Harness, token: &str, id: &str) -> pb::DataExport {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let e = exports(h, token).await.into_iter().find(|e| e.id == id).expect("listed");
        if e.status() != pb::DataExportStatus::Preparing {
            return e;
        }
        assert!(tokio::time::Instant::now() < deadline, "the export is still being prepared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn download(
    h: &mut Harness,
    token: &str,
    id: &str,
) -> Result<(String, Vec<u8>), tonic::Status> {
    let req = bearer(pb::DownloadDataExportRequest { export_id: id.into() }, token);
    let res = h.client.download_data_export(req).await?;
    let disposition =
        res.metadata().get("content-disposition").unwrap().to_str().unwrap().to_owned();
    let mut stream = res.into_inner();
    let mut bytes = Vec::new();
    let mut first = true;
    while let Some(m) = stream.next().await {
        let m = m?;
        assert_eq!(m.content_type, if first { "application/zip" } else { "" });
        first = false;
        bytes.extend(m.data);
    }
    Ok((disposition, bytes))
}

fn unzip(bytes: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let name = f.name().unwrap().into_owned();
            let mut text = String::new();
            f.read_to_string(&mut text).unwrap();
            (name, text)
        })
        .collect()
}

fn json(files: &std::collections::BTreeMap<String, String>, name: &str) -> serde_json::Value {
    serde_json::from_str(&files[name]).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub(crate) async fn a_data_export_is_one_operation_and_downloads_as_one_zip(kind: Kind) {
    let mut h = start_holding(infra(kind).await, test_config(), vec![library(0)]).await;
    let em = email();
    let me = register(&mut h, &em).await;
    let token = me.access_token.clone();
    let user_id = me.user.unwrap().id;

    // Asked three times at once: one export.
    let asks = (0..3).map(|_| {
        let (mut client, req) = (h.client.clone(), bearer(pb::RequestDataExportRequest {}, &token));
        async move { client.request_data_export(req).await.unwrap().into_inner() }
    });
    let asked = futures::future::join_all(asks).await;
    let (a, b, c) = (asked[0].clone(), &asked[1], &asked[2]);
    assert!(a.id == b.id && b.id == c.id, "one operation: {} {} {}", a.id, b.id, c.id);
    let done = settled(&mut h, &token, &a.id).await;
    assert_eq!(done.status(), pb::DataExportStatus::Ready);
    assert_eq!(done.download_url, format!("/api/auth/me/export/{}", a.id));
    let (made, until) = (done.ready_at.unwrap().seconds, done.expires_at.unwrap().seconds);
    assert_eq!(until - made, 24 * 3600, "kept for a day");

    let (disposition, bytes) = download(&mut h, &token, &a.id).await.unwrap();
    assert_eq!(done.size_bytes, bytes.len() as u64);
    assert!(disposition.starts_with("attachment; filename=\"skillup-data-"), "{disposition}");
    let files = unzip(&bytes);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "account.json",
            "export.json",
            "library/2026-12-05 Растения (0193ab12).md",
            "library/documents.json",
            "sessions.json"
        ]
    );
    let account = json(&files, "account.json");
    assert_eq!(
        (account["email"].as_str(), account["id"].as_str()),
        (Some(em.as_str()), Some(user_id.as_str()))
    );
    assert!(
        account.get("password_hash").is_none() && !files["account.json"].contains("$2"),
        "no hash"
    );
    assert_eq!(json(&files, "sessions.json").as_array().unwrap().len(), 1);
    assert_eq!(json(&files, "library/documents.json")[0]["title"], "Растения");
    assert_eq!(json(&files, "export.json")["parts"], serde_json::json!(["auth", "ai"]));

    // The link went to the owner, in their language, to the console.
    let mail =
        h.outbox.read_all().unwrap().into_iter().find(|m| m.subject.contains("data is ready"));
    let mail = mail.expect("the ready email");
    assert_eq!(mail.to, em);
    assert!(mail.body.contains(&format!("/account?export={}", a.id)), "{}", mail.body);
    assert!(mail.body.contains("24 hours"), "{}", mail.body);

    // Nobody else can download it (not found, like an unknown one), and a bad id is named.
    let other = register(&mut h, &email()).await.access_token;
    for (token, id) in [(&other, a.id.clone()), (&token, Uuid::now_v7().to_string())] {
        let err = download(&mut h, token, &id).await.unwrap_err();
        assert_eq!((err.code(), reason(&err)), (Code::NotFound, "NOT_FOUND".to_owned()));
    }
    let err = download(&mut h, &token, "../etc").await.unwrap_err();
    assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, "export_id");
    assert!(exports(&mut h, &other).await.is_empty());
    let err = h.client.request_data_export(Request::new(pb::RequestDataExportRequest {})).await;
    assert_eq!(err.unwrap_err().code(), Code::Unauthenticated);

    // Asked again soon after: the same one; ten minutes after it was made: a new one.
    assert_eq!(ask(&mut h, &token).await.id, a.id);
    data_export::Entity::update_many()
        .col_expr(
            data_export::Column::ReadyAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::minutes(11)),
        )
        .filter(data_export::Column::Id.eq(Uuid::parse_str(&a.id).unwrap()))
        .exec(&h.t.infra.db)
        .await
        .unwrap();
    let again = ask(&mut h, &token).await;
    assert_ne!(again.id, a.id);
    settled(&mut h, &token, &again.id).await;

    // A deleted account's exports go with it.
    let id = Uuid::parse_str(&user_id).unwrap();
    let req = bearer(pb::DeleteMeRequest { password: PASSWORD.into() }, &token);
    h.client.delete_me(req).await.unwrap();
    let db = &h.t.infra.db;
    let rows = data_export::Entity::find().filter(data_export::Column::UserId.eq(id)).all(db).await;
    assert!(rows.unwrap().is_empty(), "no export rows");
    for e in [&a.id, &again.id] {
        let chunks = data_export_chunk::Entity::find()
            .filter(data_export_chunk::Column::ExportId.eq(Uuid::parse_str(e).unwrap()))
            .all(db)
            .await
            .unwrap();
        assert!(chunks.is_empty(), "no archive bytes");
    }
}

pub(crate) async fn an_export_being_prepared_or_expired_cannot_be_downloaded(kind: Kind) {
    // No runner gets to it: the lease says another replica is on it for an hour.
    let mut h = harness(kind).await;
    let token = register(&mut h, &email()).await.access_token;
    let db = h.t.infra.db.clone();
    let first = ask(&mut h, &token).await;
    let done = settled(&mut h, &token, &first.id).await;
    assert_eq!(done.status(), pb::DataExportStatus::Ready);

    data_export::Entity::update_many()
        .col_expr(
            data_export::Column::ReadyAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::minutes(11)),
        )
        .filter(data_export::Column::Id.eq(Uuid::parse_str(&first.id).unwrap()))
        .exec(&db)
        .await
        .unwrap();
    // Another replica is on this one (its lease runs for an hour).
    let user = Uuid::parse_str(
        &h.client.get_me(bearer(pb::GetMeRequest {}, &token)).await.unwrap().into_inner().id,
    )
    .unwrap();
    let now = chrono::Utc::now();
    let busy = data_export::Model {
        id: Uuid::now_v7(),
        user_id: user,
        status: "preparing".into(),
        created_at: now,
        updated_at: now,
        lease_until: now + chrono::Duration::hours(1),
        attempts: 1,
        ready_at: None,
        expires_at: None,
        size_bytes: 0,
        error: String::new(),
    };
    data_export::Entity::insert(data_export::ActiveModel::from(busy.clone()))
        .exec_without_returning(&db)
        .await
        .unwrap();
    let busy = pb::DataExport { id: busy.id.to_string(), ..Default::default() };
    let mut req = bearer(pb::DownloadDataExportRequest { export_id: busy.id.clone() }, &token);
    req.metadata_mut().insert("accept-language", "ru".parse().unwrap());
    let err = h.client.download_data_export(req).await.unwrap_err();
    assert_eq!(reason(&err), "CONFLICT");
    assert!(err.message().starts_with("Копия ваших данных ещё готовится"), "{}", err.message());
    assert_eq!(ask(&mut h, &token).await.id, busy.id, "still one operation");

    // Past its day: gone from the list, not found, and swept with its bytes.
    data_export::Entity::update_many()
        .col_expr(
            data_export::Column::ExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(data_export::Column::Id.eq(Uuid::parse_str(&first.id).unwrap()))
        .exec(&db)
        .await
        .unwrap();
    let listed: Vec<String> = exports(&mut h, &token).await.into_iter().map(|e| e.id).collect();
    assert_eq!(listed, std::slice::from_ref(&busy.id));
    let err = download(&mut h, &token, &first.id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let store = skillup_auth::store::exports::ExportStore::new(db.clone());
    store.sweep(chrono::Utc::now()).await.unwrap(); // (or the runner's own sweep did)
    let id = Uuid::parse_str(&first.id).unwrap();
    assert!(data_export::Entity::find_by_id(id).one(&db).await.unwrap().is_none());
    let chunks = data_export_chunk::Entity::find()
        .filter(data_export_chunk::Column::ExportId.eq(id))
        .all(&db)
        .await
        .unwrap();
    assert!(chunks.is_empty());
}

pub(crate) async fn a_failed_part_is_tried_again_and_replicas_prepare_each_export_once(kind: Kind) {
    let holder = library(1);
    let mut h = start_holding(infra(kind).await, test_config(), vec![holder.clone()]).await;
    // A second replica on the same database and bus, sharing the holder's count.
    let outbox = skillup_kit::mailer::OutboxMailer::new(
        std::env::temp_dir().join(format!("skillup-outbox-{}", skillup_testkit::unique())),
        "test@skillup",
    );
    let stop = skillup_kit::Shutdown::new();
    let holders: Vec<Arc<dyn DataHolder>> = vec![holder.clone()];
    let mailer = Arc::new(outbox.clone());
    skillup_auth::build_with(test_config(), keys_dir(), &h.t.infra, mailer, holders, stop.clone())
        .await
        .unwrap();
    let token = register(&mut h, &email()).await.access_token;

    // The first attempt fails midway: the export waits to be tried again, the failure noted.
    let asked = ask(&mut h, &token).await;
    let id = Uuid::parse_str(&asked.id).unwrap();
    let db = h.t.infra.db.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let row = loop {
        let row = data_export::Entity::find_by_id(id).one(&db).await.unwrap().unwrap();
        if row.attempts == 1 && !row.error.is_empty() {
            break row;
        }
        assert!(tokio::time::Instant::now() < deadline, "no failed attempt: {row:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(row.status, "preparing");
    assert!(row.error.contains("the database is away"), "{}", row.error);
    assert!(row.lease_until > chrono::Utc::now(), "tried again later, not at once");

    // Its time comes: the next attempt makes it.
    data_export::Entity::update_many()
        .col_expr(data_export::Column::LeaseUntil, Expr::value(chrono::Utc::now()))
        .filter(data_export::Column::Id.eq(id))
        .exec(&db)
        .await
        .unwrap();
    assert_eq!(ask(&mut h, &token).await.id, asked.id, "asking again wakes it, still one");
    let done = settled(&mut h, &token, &asked.id).await;
    assert_eq!(done.status(), pb::DataExportStatus::Ready);
    let files = unzip(&download(&mut h, &token, &asked.id).await.unwrap().1);
    assert!(
        files.contains_key("library/2026-12-05 Растения (0193ab12).md"),
        "the whole part, once"
    );

    // Twelve people ask at once, two replicas run: each export is made exactly once.
    let before = holder.calls.load(Ordering::SeqCst);
    let mut tokens = Vec::new();
    for _ in 0..12 {
        tokens.push(register(&mut h, &email()).await.access_token);
    }
    let asks = tokens.iter().map(|t| {
        let mut c = h.client.clone();
        let req = bearer(pb::RequestDataExportRequest {}, t);
        async move { c.request_data_export(req).await.unwrap().into_inner().id }
    });
    let ids = futures::future::join_all(asks).await;
    for (t, id) in tokens.iter().zip(&ids) {
        assert_eq!(settled(&mut h, t, id).await.status(), pb::DataExportStatus::Ready);
    }
    assert_eq!(holder.calls.load(Ordering::SeqCst) - before, 12, "one part gathered per export");
    let mut mails = h.outbox.read_all().unwrap();
    mails.extend(outbox.read_all().unwrap());
    stop.trigger();
    let ready = mails.iter().filter(|m| m.subject.contains("data is ready")).count();
    assert_eq!(ready, 13, "one email per export, whichever replica made it");
}
