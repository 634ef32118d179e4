//! Components as separate processes on the real servers: migrations under the lock, serve, key rotation, generation through the edge.

use super::*;

/// `skillup migrate` on PostgreSQL, as the compose file and a Kubernetes Job run it: under the
/// migrations' lock, twice in a row (the second finds nothing to do), and two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn migrate_on_postgres_takes_its_lock_and_runs_again_and_concurrently() {
    let db = testing::TestDb::postgres().await;
    let migrate = || {
        let mut cmd = skillup();
        cmd.arg("migrate").env("DATABASE_URL", &db.url);
        cmd
    };
    let out = migrate().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = migrate().output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let fresh = testing::TestDb::postgres().await;
    let both: Vec<_> =
        (0..2).map(|_| migrate().env("DATABASE_URL", &fresh.url).spawn().unwrap()).collect();
    for child in both {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn serve_auth_prompt_and_edge_as_separate_processes_on_the_real_servers() {
    let db = testing::TestDb::postgres().await;
    let dir = data_dir_with_test_key();
    let (grpc, http) = (free_port(), free_port());
    let prefix = format!("test:{}:", testing::unique());
    let exchange = format!("test.{}.events", testing::unique());
    let mut child = skillup()
        .args([
            "serve",
            "auth",
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--http-addr",
            &format!("127.0.0.1:{http}"),
            "--data-dir",
        ])
        .arg(&dir)
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", testing::redis_url())
        .env("AMQP_URL", testing::amqp_url())
        .env("SKILLUP_AUTH__BCRYPT_COST", "4")
        .env("SKILLUP_CACHE_PREFIX", &prefix)
        .env("SKILLUP_BUS__EXCHANGE", &exchange)
        .env("SKILLUP_BUS__QUEUE_PREFIX", format!("test.{}.", testing::unique()))
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{grpc}");
    let mut channel = None;
    for _ in 0..100 {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            channel = Some(ch);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    channel.expect("serve auth listens");
    assert_eq!(grpc_health(&addr).await, ServingStatus::Serving);
    // Called as the edge (its certificate from the data directory's mesh).
    let mut auth = AuthServiceClient::new(testing::channel_in(&dir.join("keys"), &addr, "edge"));
    auth.register(pb::RegisterRequest {
        email: "grace@example.com".into(),
        password: "correct horse battery".into(),
        name: String::new(),
        ..Default::default()
    })
    .await
    .unwrap();
    let res = auth
        .login(pb::LoginRequest {
            email: "grace@example.com".into(),
            password: "correct horse battery".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    auth.validate_token(pb::ValidateTokenRequest {
        token: res.access_token,
        required_scopes: vec![],
    })
    .await
    .unwrap();
    let ready = reqwest::get(format!("http://127.0.0.1:{http}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    // `serve prompt` beside it, on the same database.
    let (prompt_grpc, prompt_http) = (free_port(), free_port());
    let mut prompt = skillup()
        .args([
            "serve",
            "prompt",
            "--grpc-addr",
            &format!("127.0.0.1:{prompt_grpc}"),
            "--http-addr",
            &format!("127.0.0.1:{prompt_http}"),
            "--data-dir",
        ])
        .arg(&dir)
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", testing::redis_url())
        .env("AMQP_URL", testing::amqp_url())
        .env("SKILLUP_CACHE_PREFIX", &prefix)
        .env("SKILLUP_BUS__EXCHANGE", &exchange)
        .env("SKILLUP_BUS__QUEUE_PREFIX", format!("test.{}.", testing::unique()))
        .spawn()
        .unwrap();

    // `serve edge` as a process of its own, in front of them.
    let edge_http = free_port();
    let mut edge = skillup()
        .args(["serve", "edge", "--http-addr", &format!("127.0.0.1:{edge_http}"), "--data-dir"])
        .arg(&dir)
        .env("REDIS_URL", testing::redis_url())
        .env("AMQP_URL", testing::amqp_url())
        .env("SKILLUP_EDGE__UPSTREAMS__AUTH", format!("http://127.0.0.1:{grpc}"))
        .env("SKILLUP_EDGE__UPSTREAMS__PROMPT", format!("http://127.0.0.1:{prompt_grpc}"))
        .env("SKILLUP_CACHE_PREFIX", &prefix)
        .env("SKILLUP_BUS__EXCHANGE", &exchange)
        .env("SKILLUP_BUS__QUEUE_PREFIX", format!("test.{}.", testing::unique()))
        .spawn()
        .unwrap();
    let rest = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{edge_http}");
    let mut login = None;
    for _ in 0..100 {
        if let Ok(r) = rest
            .post(format!("{base}/api/auth/login"))
            .json(&serde_json::json!({"email": "grace@example.com", "password": "correct horse battery"}))
            .send()
            .await
        {
            login = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let login = login.expect("serve edge listens");
    assert_eq!(login.status(), 200);
    let token = login.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = rest.get(format!("{base}/api/auth/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let out = rest
        .post(format!("{base}/api/auth/logout"))
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let me = rest.get(format!("{base}/api/auth/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 401);
    let mut topics = None;
    for _ in 0..100 {
        let r = rest.get(format!("{base}/api/catalog/topics?locale=ru")).send().await.unwrap();
        if r.status() == 200 {
            topics = Some(r.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let topics = topics.expect("serve prompt answers through the edge");
    assert!(topics["topics"].as_array().unwrap().iter().any(|t| t["title"] == "История"));

    for c in [&child, &edge, &prompt] {
        assert!(
            Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap().success()
        );
    }
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    let status = tokio::task::spawn_blocking(move || edge.wait()).await.unwrap().unwrap();
    assert!(status.success(), "edge: {status:?}");
    let status = tokio::task::spawn_blocking(move || prompt.wait()).await.unwrap().unwrap();
    assert!(status.success(), "prompt: {status:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
pub(super) fn keys_rotate_keeps_the_old_key_for_verification() {
    let dir = data_dir_with_test_key();
    let old = SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap().kid;
    let out = skillup().args(["keys", "rotate", "--dir"]).arg(dir.join("keys")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = KeyStore::new(dir.join("keys"));
    let current = store.current_kid().unwrap().unwrap();
    assert_ne!(current, old);
    let kids: Vec<String> = store.load_all().unwrap().into_iter().map(|k| k.kid).collect();
    assert!(kids.contains(&old) && kids.contains(&current));
    let _ = std::fs::remove_dir_all(dir);
}

/// Generation as a browser uses it: refused until the email is verified, then inline (200),
/// streamed (SSE) and queued (202, then polled) — all on the offline provider.
pub(super) async fn generation_through_the_edge(
    rest: &reqwest::Client,
    http: &str,
    token: &str,
    dir: &std::path::Path,
) {
    let generate = |body: serde_json::Value| {
        rest.post(format!("http://{http}/api/generate")).bearer_auth(token).json(&body)
    };
    let res =
        generate(serde_json::json!({"topic": "rust", "function": "quiz"})).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "EMAIL_NOT_VERIFIED", "{err}");
    // Verify from the outbox (the email sent to grace@example.com).
    let mut verify_token = String::new();
    for entry in std::fs::read_dir(dir.join("outbox")).unwrap() {
        let body = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        if body.contains("To: grace@example.com")
            && let Some(token) = crate::common::account_token(&body)
        {
            verify_token = token;
        }
    }
    let res = rest
        .post(format!("http://{http}/api/auth/verify-email"))
        .json(&serde_json::json!({"token": verify_token}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{:?}", res.text().await);

    let res = generate(serde_json::json!({"topic": "rust ownership", "function": "quiz"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let c = &body["completion"];
    assert_eq!(c["provider"], "offline", "labelled offline: {body}");
    assert!(c["text"].as_str().unwrap().contains("rust ownership"), "{body}");
    assert!(c["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let res = generate(serde_json::json!({"topic": "rust lifetimes", "function": "quiz"}))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let sse = res.text().await.unwrap();
    assert!(sse.contains("\"started\""), "{sse}");
    assert!(sse.contains("\"delta\""), "{sse}");
    assert!(sse.contains("\"finished\""), "{sse}");

    // The live channel: a WebSocket with the token as a subprotocol, as browsers do.
    let mut ws = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{http}/api/notifications/ws").into_client_request().unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("skillup.v1, bearer.{token}").parse().unwrap(),
        );
        tokio_tungstenite::connect_async(req).await.expect("the notification socket opens").0
    };
    let res = generate(serde_json::json!({"topic": "rust traits", "function": "article"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "a long function is queued");
    let body: serde_json::Value = res.json().await.unwrap();
    let url = body["task"]["status_url"].as_str().unwrap().to_owned();
    let task_id = body["task"]["task_id"].as_str().unwrap().to_owned();
    // Its completion is pushed over the socket (other notifications — the payment, the plan —
    // may come first).
    let pushed = tokio::time::timeout(Duration::from_secs(20), async {
        use futures::StreamExt;
        while let Some(Ok(m)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                let n: serde_json::Value = serde_json::from_str(&t).unwrap();
                if n["kind"] == "NOTIFICATION_KIND_GENERATION_COMPLETED" {
                    return n;
                }
            }
        }
        panic!("the socket closed before the completion");
    })
    .await
    .expect("the completion reaches the open WebSocket");
    assert_eq!(pushed["data"]["task_id"], task_id.as_str(), "{pushed}");
    let mut task = serde_json::Value::Null;
    for _ in 0..100 {
        task = get_json(rest, format!("http://{http}{url}"), token).await;
        if task["status"] == "TASK_STATUS_COMPLETED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(task["status"], "TASK_STATUS_COMPLETED", "{task}");
    assert!(task["text"].as_str().unwrap().contains("rust traits"), "{task}");
    let res = rest
        .post(format!("http://{http}/api/generate/tasks"))
        .bearer_auth(token)
        .json(&serde_json::json!({"topic": "rust macros", "function": "quiz"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let history: serde_json::Value =
        get_json(rest, format!("http://{http}/api/generate?page.page_size=10"), token).await;
    // The library: the two queued tasks and the inline and streamed generations before them.
    let deliveries: Vec<&str> = history["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["delivery"].as_str().unwrap())
        .collect();
    assert_eq!(
        deliveries,
        ["DELIVERY_QUEUED", "DELIVERY_QUEUED", "DELIVERY_STREAM", "DELIVERY_INLINE"],
        "{history}"
    );
    // Enums by name in a query, as the OpenAPI document says.
    let done =
        get_json(rest, format!("http://{http}/api/generate?status=TASK_STATUS_COMPLETED"), token)
            .await;
    let done_tasks = done["tasks"].as_array().unwrap();
    assert!(!done_tasks.is_empty(), "{done}");
    assert!(done_tasks.iter().all(|t| t["status"] == "TASK_STATUS_COMPLETED"), "{done}");
    let res = rest
        .get(format!("http://{http}/api/generate?status=3"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"]["field"], "status", "{err}");
    let usage: serde_json::Value =
        get_json(rest, format!("http://{http}/api/subscriptions/me/usage"), token).await;
    assert!(usage["tokens_used"].as_str().unwrap().parse::<u64>().unwrap() > 0, "{usage}");
}

/// GET with the bearer token, as JSON.
pub(super) async fn get_json(
    rest: &reqwest::Client,
    url: String,
    token: &str,
) -> serde_json::Value {
    rest.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}
