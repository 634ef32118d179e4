//! A person's data across every service, end to end on the real servers: an account deleted
//! leaves nothing of them anywhere; an export takes all of it away in one archive.

use super::*;

/// Every place the mesh keeps data that holds `needle`: `table.column` of the database (text
/// and bytes alike) and keys of the cache under `prefix` (by name or string value).
pub(super) async fn traces(db_url: &str, prefix: &str, needle: &str) -> Vec<String> {
    use fred::{prelude::*, types::scan::Scanner};
    use futures::TryStreamExt;
    use sea_orm::{ConnectionTrait, Statement};
    let db = sea_orm::Database::connect(db_url).await.unwrap();
    let pg = sea_orm::DatabaseBackend::Postgres;
    let columns = db
        .query_all_raw(Statement::from_string(
            pg,
            "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS d
               FROM information_schema.columns
              WHERE table_schema = current_schema()
                AND data_type IN ('text', 'character varying', 'bytea', 'json', 'jsonb')",
        ))
        .await
        .unwrap();
    let mut found = Vec::new();
    for row in columns {
        let (t, c, d): (String, String, String) = (
            row.try_get("", "t").unwrap(),
            row.try_get("", "c").unwrap(),
            row.try_get("", "d").unwrap(),
        );
        let test = if d == "bytea" {
            format!("position(convert_to($1, 'UTF8') in \"{c}\") > 0")
        } else {
            format!("\"{c}\"::text ILIKE '%' || $1 || '%'")
        };
        let sql = format!("SELECT count(*) AS n FROM \"{t}\" WHERE {test}");
        let n: i64 = db
            .query_one_raw(Statement::from_sql_and_values(pg, sql, [needle.into()]))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "n")
            .unwrap();
        if n > 0 {
            found.push(format!("{t}.{c}: {n} row(s)"));
        }
    }
    let redis = Builder::from_config(Config::from_url(&skillup_testkit::redis_url()).unwrap())
        .build()
        .unwrap();
    redis.init().await.unwrap();
    let mut pages = std::pin::pin!(redis.scan(format!("{prefix}*"), Some(500), None));
    while let Some(mut page) = pages.try_next().await.unwrap() {
        for key in page.take_results().unwrap_or_default() {
            let name = key.as_str().unwrap_or_default().to_owned();
            // Strings by value (other types hold no value we keep personal data in).
            let value: Option<bytes::Bytes> = redis.get(&name).await.unwrap_or(None);
            let holds = value.is_some_and(|v| String::from_utf8_lossy(&v[..]).contains(needle));
            if name.contains(needle) || holds {
                found.push(format!("redis {name}"));
            }
        }
        Scanner::next(page);
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_account_leaves_no_personal_data_in_any_service() {
    let mesh = Mesh::start(&[]).await;
    let (base, outbox) = (mesh.edge(), mesh.dir.join("outbox"));
    let rest = reqwest::Client::new();
    let email = format!("forget-{}@example.com", testing::unique());
    let password = "correct horse battery";
    let account = json!({"email": email, "password": password, "name": "Ада"});
    register_verified(&rest, &base, &outbox, &account).await;
    // A failed sign-in (counters), then a real one from a known device.
    let wrong = json!({"email": email, "password": "wrong password"});
    let res = rest.post(format!("{base}/api/auth/login")).json(&wrong).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let credentials = json!({"email": email, "password": password});
    let res = rest.post(format!("{base}/api/auth/login")).json(&credentials).send().await.unwrap();
    let login: Value = ok(res, 200).await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    // Documents that hold the address itself, inline and queued.
    for mode in ["MODE_SYNC", "MODE_ASYNC"] {
        let res = rest
            .post(format!("{base}/api/generate"))
            .bearer_auth(&token)
            .json(&json!({"topic": format!("a letter to {email}"), "function": "email", "mode": mode}))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    }
    // In the account's language, through every hop (edge → ai → subscribe and back).
    let res = rest
        .patch(format!("{base}/api/auth/me"))
        .bearer_auth(&token)
        .json(&json!({"locale": "ru"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = rest
        .post(format!("{base}/api/generate"))
        .bearer_auth(&token)
        .header("accept-language", "en")
        .json(&json!({"topic": "photosynthesis", "function": "lesson_plan"}))
        .send()
        .await
        .unwrap();
    let refused = ok(res, 402).await;
    assert_eq!(refused["error"]["code"], "SUBSCRIPTION_REQUIRED", "{refused}");
    let says = refused["error"]["message"].as_str().unwrap();
    assert!(says.starts_with("Недоступно — оформите подписку"), "{refused}");
    let (db_url, prefix) =
        (mesh.database_url().to_owned(), mesh.setting("SKILLUP_CACHE_PREFIX").unwrap().to_owned());
    let before = traces(&db_url, &prefix, &email).await;
    assert!(before.iter().any(|t| t.starts_with("auth_users.email")), "{before:?}");
    assert!(before.iter().any(|t| t.starts_with("ai_tasks.")), "the library holds it: {before:?}");

    // The password confirms it; then every token ends at once.
    let delete = |pw: &str| {
        rest.delete(format!("{base}/api/auth/me"))
            .bearer_auth(&token)
            .json(&json!({"password": pw}))
            .send()
    };
    let res = delete("wrong password").await.unwrap();
    assert_eq!(ok(res, 400).await["error"]["field"], "password");
    assert_eq!(delete(password).await.unwrap().status(), 204);
    let me = rest.get(format!("{base}/api/auth/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 401);
    let res = rest.post(format!("{base}/api/auth/login")).json(&credentials).send().await.unwrap();
    assert_eq!(res.status(), 401, "no account answers to the address");

    // Every service forgets (the consumers run on their own time).
    let mut left = Vec::new();
    for _ in 0..100 {
        left = traces(&db_url, &prefix, &email).await;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(left.is_empty(), "personal data left behind: {left:?}");
    // The address is free for a new account (a new id; the old one is a tombstone).
    let res = rest.post(format!("{base}/api/auth/register")).json(&account).send().await.unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_takes_all_their_data_away_in_one_archive() {
    use std::io::Read as _;
    let mesh = Mesh::start(&[]).await;
    let (base, outbox) = (mesh.edge(), mesh.dir.join("outbox"));
    let rest = reqwest::Client::new();
    let email = format!("takeout-{}@example.com", testing::unique());
    let password = "correct horse battery";
    let account = json!({"email": email, "password": password, "name": "Ада", "locale": "ru"});
    register_verified(&rest, &base, &outbox, &account).await;
    let credentials = json!({"email": email, "password": password});
    let res = rest.post(format!("{base}/api/auth/login")).json(&credentials).send().await.unwrap();
    let token = ok(res, 200).await["access_token"].as_str().unwrap().to_owned();
    let post = |path: &str, body: Value| {
        rest.post(format!("{base}{path}")).bearer_auth(&token).json(&body).send()
    };
    let get = |path: String| rest.get(format!("{base}{path}")).bearer_auth(&token).send();

    // Something in every service: money, a document inline and one queued (a notification).
    let res = rest
        .post(format!("{base}/api/payments/top-up"))
        .bearer_auth(&token)
        .header("idempotency-key", format!("takeout-{email}"))
        .json(&json!({"amount_minor": 700, "currency": "RUB"}))
        .send()
        .await
        .unwrap();
    let top_up = ok(res, 201).await;
    let body = json!({"topic": "фотосинтез", "function": "email", "mode": "MODE_SYNC"});
    let inline = ok(post("/api/generate", body).await.unwrap(), 200).await;
    let body = json!({"topic": "осень", "function": "email", "mode": "MODE_ASYNC"});
    let queued = ok(post("/api/generate", body).await.unwrap(), 202).await;
    let task = queued["task"]["task_id"].as_str().unwrap().to_owned();
    let mut notified = false;
    for _ in 0..200 {
        let list = ok(get("/api/notifications".into()).await.unwrap(), 200).await;
        if list["notifications"].as_array().is_some_and(|n| !n.is_empty()) {
            notified = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(notified, "the queued generation's notification never came");

    // Asked for twice: one export, 202, prepared in the background.
    let first = ok(post("/api/auth/me/export", json!({})).await.unwrap(), 202).await;
    let second = ok(post("/api/auth/me/export", json!({})).await.unwrap(), 202).await;
    assert_eq!(first["id"], second["id"]);
    let id = first["id"].as_str().unwrap().to_owned();
    let mut ready = Value::Null;
    for _ in 0..300 {
        let list = ok(get("/api/auth/me/export".into()).await.unwrap(), 200).await;
        let found = list["exports"].as_array().unwrap().iter().find(|e| e["id"] == id).cloned();
        if let Some(e) = found.filter(|e| e["status"] != "DATA_EXPORT_STATUS_PREPARING") {
            ready = e;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready["status"], "DATA_EXPORT_STATUS_READY", "{ready}");
    let url = ready["download_url"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("/api/auth/me/export/{id}"));

    // The link came by email, in the account's language.
    let mut letter = String::new();
    for _ in 0..100 {
        for entry in std::fs::read_dir(&outbox).into_iter().flatten() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
            if text.contains(&format!("To: {email}")) && text.contains(&format!("export={id}")) {
                letter = text;
            }
        }
        if !letter.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(letter.contains(&format!("/account?export={id}")), "no link mailed: {letter}");

    // Only its owner downloads it: a zip, streamed through the edge.
    let stranger = json!({"email": format!("s-{email}"), "password": password});
    register_verified(&rest, &base, &outbox, &stranger).await;
    let res = rest.post(format!("{base}/api/auth/login")).json(&stranger).send().await.unwrap();
    let other = ok(res, 200).await["access_token"].as_str().unwrap().to_owned();
    let res = rest.get(format!("{base}{url}")).bearer_auth(&other).send().await.unwrap();
    assert_eq!(ok(res, 404).await["error"]["code"], "NOT_FOUND");
    let res = rest.get(format!("{base}{url}")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = get(url.clone()).await.unwrap();
    assert_eq!(res.status(), 200);
    let header = |n: &str| res.headers()[n].to_str().unwrap().to_owned();
    assert_eq!(header("content-type"), "application/zip");
    assert!(header("content-disposition").starts_with("attachment; filename=\"skillup-data-"));
    assert_eq!(header("cache-control"), "private, no-store");
    let bytes = res.bytes().await.unwrap();
    assert_eq!(
        ready["size_bytes"].as_str().map(|s| s.parse::<usize>().unwrap()),
        Some(bytes.len())
    );
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut files = std::collections::BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let name = f.name().unwrap().into_owned();
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        files.insert(name, text);
    }
    let read = |name: &str| -> Value {
        serde_json::from_str(
            files.get(name).unwrap_or_else(|| panic!("no {name}: {:?}", files.keys())),
        )
        .unwrap()
    };
    assert_eq!(read("account.json")["email"], email.as_str());
    assert_eq!(read("account.json")["name"], "Ада");
    assert!(!read("sessions.json").as_array().unwrap().is_empty());
    let docs = read("library/documents.json");
    let ids: Vec<&str> =
        docs.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&inline["completion"]["id"].as_str().unwrap()), "{ids:?}");
    assert!(ids.contains(&task.as_str()), "{ids:?}");
    let markdown = files.keys().filter(|k| k.starts_with("library/") && k.ends_with(".md")).count();
    assert_eq!(markdown, 2, "each document as Markdown: {:?}", files.keys());
    assert!(files.keys().any(|k| k.contains("фотосинтез")), "named by title: {:?}", files.keys());
    let entries = read("transactions.json");
    assert_eq!(entries[0]["id"], top_up["id"]);
    assert_eq!(read("wallets.json")[0]["balance_minor"], 700);
    assert_eq!(read("subscription.json")["current"]["plan"]["id"], "free");
    assert!(read("usage.json")["periods"][0]["generations_used"].as_u64().unwrap() >= 1);
    let notes = read("notifications.json");
    assert!(!notes.as_array().unwrap().is_empty());
    assert!(
        notes[0]["title"].as_str().unwrap().chars().any(|c| matches!(c, 'а'..='я')),
        "worded in the account's language: {notes}"
    );
    assert_eq!(read("notification-contact.json")["email"], email.as_str());
    assert_eq!(
        read("export.json")["parts"],
        json!(["auth", "ai", "subscribe", "payment", "notification"])
    );
}
