//! Auth delegation: tokens and scopes, identity assertions, revocation at every edge, Nginx's auth_request.

use super::*;

// ---------- auth delegation ----------

#[test]
pub(super) fn protected_routes_need_a_valid_token_and_the_right_scope() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let (tok, _, user_id) = s.register().await;
        let (st, v, h) = s.get("/v1/echo/x", None).await;
        assert_eq!((st, code(&v)), (401, "UNAUTHENTICATED"));
        assert!(h["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        let (st, v, _) = s.get("/v1/echo/x", Some("not.a.token")).await;
        assert_eq!((st, code(&v)), (401, "UNAUTHENTICATED"));
        let (st, v, _) = s.get("/v1/admin/echo?id=1", Some(&tok)).await;
        assert_eq!((st, code(&v)), (403, "PERMISSION_DENIED"));
        let (st, v, _) = s.get("/v1/echo/x", Some(&tok)).await;
        assert_eq!(st, 200);
        assert_eq!(v["user_id"], user_id.as_str());
        assert_eq!(v["tier"], "free");
        assert_eq!(v["scopes"], json!(["user"]));
        let (st, v, _) = s.get("/v1/public/echo?id=1", None).await;
        assert_eq!((st, v["user_id"].as_str()), (200, Some("")), "public: anonymous");
    });
}

#[test]
pub(super) fn services_hear_the_accounts_language_else_the_requests() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let echo = |lang: Option<&'static str>, token: Option<String>| {
            let mut req = s.http.get(s.url("/v1/echo/x"));
            if token.is_none() {
                req = s.http.get(s.url("/v1/public/echo?id=1"));
            }
            if let Some(l) = lang {
                req = req.header("accept-language", l);
            }
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            async move {
                let res = req.send().await.unwrap();
                assert_eq!(res.status(), 200);
                res.json::<Value>().await.unwrap()["locale"].as_str().unwrap().to_owned()
            }
        };
        assert_eq!(echo(Some("ru-RU,ru;q=0.9,en;q=0.8"), None).await, "ru");
        assert_eq!(echo(Some("de;q=1, en;q=0.3, ru;q=0.5"), None).await, "ru", "by weight");
        assert_eq!(echo(Some("de"), None).await, "en");
        assert_eq!(echo(None, None).await, "en");
        // Registered without a preference and no Accept-Language: English, whatever a
        // later request asks for; a profile change applies to the very next request.
        let (tok, _, _) = s.register().await;
        assert_eq!(echo(Some("ru"), Some(tok.clone())).await, "en");
        let res = s
            .http
            .patch(s.url("/api/auth/me"))
            .bearer_auth(&tok)
            .json(&json!({"locale": "ru"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(echo(Some("en"), Some(tok.clone())).await, "ru");
    });
}

#[test]
pub(super) fn client_sent_identity_headers_are_replaced_by_the_validated_identity() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let (tok, _, user_id) = s.register().await;
        let res = s
            .http
            .get(s.url("/v1/echo/x"))
            .bearer_auth(&tok)
            .header("x-user-id", "00000000-0000-0000-0000-000000000001")
            .header("x-scopes", "admin")
            .header("x-subscription-tier", "premium")
            .header("x-email-verified", "true")
            .header("x-skillup-identity", "v1.forged.sig")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["user_id"], user_id.as_str());
        let md: Vec<String> = serde_json::from_value(v["metadata"].clone()).unwrap();
        assert!(md.contains(&format!("x-user-id={user_id}")), "{md:?}");
        assert!(md.contains(&"x-scopes=user".to_owned()), "{md:?}");
        assert!(md.contains(&"x-subscription-tier=free".to_owned()), "{md:?}");
        assert!(md.contains(&"x-email-verified=false".to_owned()), "{md:?}");
        assert!(md.iter().any(|m| m.starts_with("x-skillup-identity=v2.")), "{md:?}");
        // A public route: the spoofed headers are dropped, nobody is asserted.
        let res = s
            .http
            .get(s.url("/v1/public/echo?id=1"))
            .header("x-user-id", "00000000-0000-0000-0000-000000000001")
            .send()
            .await
            .unwrap();
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["user_id"], "");
        let md: Vec<String> = serde_json::from_value(v["metadata"].clone()).unwrap();
        assert!(!md.iter().any(|m| m.starts_with("x-user-id")), "{md:?}");
    });
}

#[test]
pub(super) fn a_pod_calling_a_service_directly_cannot_act_as_a_user() {
    mt().block_on(async {
        use skillup_proto::testing::v1::{EchoRequest, echo_service_client::EchoServiceClient};
        let s = stack(Kind::Embedded, |_| {}).await;
        let echo = || tonic::Request::new(EchoRequest { id: "1".into(), ..Default::default() });
        // Without a mesh certificate a pod is nobody; with another component's, not the edge.
        let err = EchoServiceClient::new(skillup_testkit::channel_as(s.grpc_addr, None))
            .echo(echo())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        let err = EchoServiceClient::new(skillup_testkit::channel_as(s.grpc_addr, Some("payment")))
            .echo(echo())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("payment may not call"), "{err:?}");
        // An "edge" certificate of another CA does not get through the handshake.
        let forged_ca =
            std::env::temp_dir().join(format!("skillup-forged-{}", skillup_testkit::unique()));
        skillup_kit::mesh::issue::init(&forged_ca, &[], false).unwrap();
        let forged = skillup_kit::mesh::MeshTls::load(skillup_kit::mesh::MeshFiles::in_dir(
            &forged_ca, "edge",
        ))
        .unwrap();
        let err = EchoServiceClient::new(skillup_testkit::channel_with(
            &s.grpc_addr.to_string(),
            Some(forged),
        ))
        .echo(echo())
        .await
        .unwrap_err();
        // (A transport error — the handshake's alert or the closed connection — never an
        // answer of the service.)
        assert!(std::error::Error::source(&err).is_some(), "{err:?}");
        let _ = std::fs::remove_dir_all(forged_ca);
        // With the edge's certificate (a pod that stole it), still no user without the key.
        let mut client =
            EchoServiceClient::new(skillup_testkit::channel_as(s.grpc_addr, Some("edge")));
        // Plain headers are dropped.
        let mut req = tonic::Request::new(EchoRequest { id: "1".into(), ..Default::default() });
        req.metadata_mut().insert("x-user-id", "victim".parse().unwrap());
        req.metadata_mut().insert("x-scopes", "admin".parse().unwrap());
        let r = client.echo(req).await.unwrap().into_inner();
        assert_eq!(r.user_id, "");
        assert!(!r.metadata.iter().any(|m| m.starts_with("x-user-id")), "{:?}", r.metadata);
        // An assertion signed with another key, or expired, is refused.
        let forged = skillup_kit::identity::IdentityKey::random().sign(&Caller {
            user_id: "victim".into(),
            scopes: vec!["admin".into()],
            tier: "premium".into(),
            email_verified: true,
            request_id: String::new(),
            exp: skillup_kit::identity::now_secs() + 60,
            assertion: String::new(),
            ..Default::default()
        });
        let mut req = tonic::Request::new(EchoRequest { id: "1".into(), ..Default::default() });
        req.metadata_mut().insert("x-skillup-identity", forged.parse().unwrap());
        let err = client.echo(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let expired = s.key.sign(&Caller {
            user_id: "victim".into(),
            scopes: vec![],
            tier: "free".into(),
            email_verified: false,
            request_id: String::new(),
            exp: skillup_kit::identity::now_secs() - 1,
            assertion: String::new(),
            ..Default::default()
        });
        let mut req = tonic::Request::new(EchoRequest { id: "1".into(), ..Default::default() });
        req.metadata_mut().insert("x-skillup-identity", expired.parse().unwrap());
        assert_eq!(client.echo(req).await.unwrap_err().code(), tonic::Code::Unauthenticated);
        // A valid one (as a service forwarding what it received) is believed.
        let good = s.key.sign(&Caller {
            user_id: "u-7".into(),
            scopes: vec!["user".into()],
            tier: "basic".into(),
            email_verified: true,
            request_id: "r".into(),
            exp: skillup_kit::identity::now_secs() + 30,
            assertion: String::new(),
            ..Default::default()
        });
        let mut req = tonic::Request::new(EchoRequest { id: "1".into(), ..Default::default() });
        req.metadata_mut().insert("x-skillup-identity", good.parse().unwrap());
        let r = client.echo(req).await.unwrap().into_inner();
        assert_eq!((r.user_id.as_str(), r.tier.as_str()), ("u-7", "basic"));
    });
}

#[test]
pub(super) fn a_revoked_token_fails_on_the_next_request_at_every_edge() {
    mt().block_on(async {
        let s = stack(Kind::Real, |c| c.edge.decision_cache_ms = 60_000).await;
        let other = s.start_edge(s.config.clone()).await;
        let (tok, refresh, _) = s.register().await;
        let on_other = |tok: String| {
            let url = format!("{other}/v1/echo/x");
            let http = s.http.clone();
            async move { http.get(url).bearer_auth(tok).send().await.unwrap().status().as_u16() }
        };
        // Both edges validate and cache the decision.
        assert_eq!(s.get("/v1/echo/x", Some(&tok)).await.0, 200);
        assert_eq!(on_other(tok.clone()).await, 200);
        assert_eq!(on_other(tok.clone()).await, 200);
        // Log out through the first edge…
        let (st, v, _) = s.post("/api/auth/logout", Some(&tok), json!({"refresh_token": refresh})).await;
        assert_eq!(st, 204, "{v}");
        // …and the second refuses the very next request.
        assert_eq!(on_other(tok.clone()).await, 401);
        assert_eq!(s.get("/v1/echo/x", Some(&tok)).await.0, 401);
        // Log out everywhere revokes tokens not cached anywhere yet, and cached ones.
        let (tok2, _, _) = s.register().await;
        let login = s
            .post("/api/auth/login", None, json!({"email": s.get("/api/auth/me", Some(&tok2)).await.1["email"], "password": support::PASSWORD}))
            .await;
        let tok3 = login.1["access_token"].as_str().unwrap().to_owned();
        assert_eq!(on_other(tok3.clone()).await, 200);
        assert_eq!(s.post("/api/auth/logout/all", Some(&tok2), json!({})).await.0, 204);
        assert_eq!(on_other(tok3).await, 401);
        assert_eq!(on_other(tok2).await, 401);
    });
}

/// Issue 24: a cache that lost its data lost the identity stamps the edge compares before
/// reusing a decision; so while auth's sentinel is missing the edge asks auth again (which
/// answers from PostgreSQL and puts the marks back), and trusts its cache once they are.
#[test]
pub(super) fn a_flushed_cache_sends_every_decision_back_to_auth() {
    mt().block_on(async {
        let s = stack(Kind::Real, |c| c.edge.decision_cache_ms = 60_000).await;
        let (tok, _, _) = s.register().await;
        let asked = || async {
            let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
            let count = |source: &str| {
                text.lines()
                    .find(|l| {
                        l.starts_with("edge_auth_decisions_total")
                            && l.contains(&format!("source=\"{source}\""))
                    })
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            (count("auth"), count("cache"))
        };
        assert_eq!(s.get("/v1/echo/x", Some(&tok)).await.0, 200);
        assert_eq!(s.get("/v1/echo/x", Some(&tok)).await.0, 200);
        let (auth, cache) = asked().await;
        assert!(cache >= 1, "the second request reused the decision");
        s.t.infra.cache.delete_prefix("").await.unwrap();
        assert_eq!(s.get("/v1/echo/x", Some(&tok)).await.0, 200);
        let (auth_after, cache_after) = asked().await;
        assert_eq!((auth_after, cache_after), (auth + 1, cache), "asked auth, not the cache");
        assert_eq!(s.get("/v1/echo/x", Some(&tok)).await.0, 200);
        assert_eq!(asked().await.1, cache + 1, "the marks are back: trusted again");
    });
}

#[test]
pub(super) fn an_api_key_calls_the_api_but_never_manages_the_account() {
    mt().block_on(async {
        let s = stack(Kind::Real, |c| c.edge.decision_cache_ms = 60_000).await;
        let other = s.start_edge(s.config.clone()).await;
        let (tok, _, user_id) = s.register().await;
        let (st, v, _) = s.post("/api/auth/api-keys", Some(&tok), json!({"name": "CI"})).await;
        assert_eq!(st, 201, "{v}");
        let key = v["secret"].as_str().unwrap().to_owned();
        let key_id = v["key"]["id"].as_str().unwrap().to_owned();
        assert!(key.starts_with("sk-skillup-"));
        // A key speaks for its account, like an access token.
        let (st, v, _) = s.get("/v1/echo/x", Some(&key)).await;
        assert_eq!((st, v["user_id"].as_str()), (200, Some(user_id.as_str())), "{v}");
        assert_eq!(v["scopes"], json!(["user"]));
        assert_eq!(s.get("/api/auth/me", Some(&key)).await.0, 200);
        let on_other = |path: &'static str| {
            let (url, http, key) = (format!("{other}{path}"), s.http.clone(), key.clone());
            async move { http.get(url).bearer_auth(key).send().await.unwrap().status().as_u16() }
        };
        assert_eq!(on_other("/v1/echo/x").await, 200, "the second edge caches the decision");
        // What only a person who signed in may do is refused, whatever the service behind.
        for (method, path) in [
            ("GET", "/api/auth/sessions"),
            ("GET", "/api/auth/api-keys"),
            ("POST", "/api/auth/api-keys"),
            ("POST", "/api/auth/password/change"),
            ("POST", "/api/auth/me/export"),
            ("PATCH", "/api/auth/me"),
            ("POST", "/api/payments/top-up"),
            ("POST", "/api/subscriptions"),
            ("DELETE", "/api/subscriptions/me"),
        ] {
            let res = s
                .http
                .request(method.parse().unwrap(), s.url(path))
                .bearer_auth(&key)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 403, "{method} {path}");
            let v: Value = res.json().await.unwrap();
            assert_eq!(code(&v), "PERMISSION_DENIED");
            assert!(v["error"]["message"].as_str().unwrap().contains("API key"), "{v}");
        }
        // Revoked with a session's token: refused on the next request at every edge.
        let res = s
            .http
            .delete(s.url(&format!("/api/auth/api-keys/{key_id}")))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(on_other("/v1/echo/x").await, 401);
        let (st, v, _) = s.get("/v1/echo/x", Some(&key)).await;
        assert_eq!((st, code(&v)), (401, "UNAUTHENTICATED"));
        assert_eq!(s.get("/v1/echo/x", Some(&tok)).await.0, 200, "the session goes on");
    });
}

#[test]
pub(super) fn revocation_events_evict_cached_decisions_at_every_edge() {
    mt().block_on(async {
        let s = stack(Kind::Real, |c| c.edge.decision_cache_ms = 60_000).await;
        let (other, edge) = s.start_edge_handle(s.config.clone()).await;
        let (tok, _, _) = s.register().await;
        let status = s
            .http
            .get(format!("{other}/v1/echo/x"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        assert_eq!(edge.inner().authn.cached(), 1, "the second edge keeps the decision");
        assert_eq!(s.post("/api/auth/logout/all", Some(&tok), json!({})).await.0, 204);
        // The token.revoked event reaches the second edge's own queue and evicts it.
        let start = Instant::now();
        while edge.inner().authn.cached() != 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "not evicted by the event");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

#[test]
pub(super) fn auth_unreachable_is_503_never_a_pass_through() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |c| {
            c.edge.upstreams.insert("auth".into(), "http://127.0.0.1:9".into());
        })
        .await;
        let seen_before = s.seen.calls.load(Ordering::SeqCst);
        let (st, v, h) = s.get("/v1/echo/x", Some("eyJhbGciOiJSUzI1NiJ9.e30.sig")).await;
        assert_eq!((st, code(&v)), (503, "UNAVAILABLE"), "{v}");
        assert!(h.contains_key("retry-after"));
        assert_eq!(s.seen.calls.load(Ordering::SeqCst), seen_before, "nothing proxied");
        // Public routes still work.
        assert_eq!(s.get("/v1/public/echo?id=1", None).await.0, 200);
    });
}

#[test]
pub(super) fn nginx_auth_request_endpoint() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let (tok, _, user_id) = s.register().await;
        let res = s
            .http
            .get(s.url("/api/auth/internal/jwt/validate"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(res.headers()["x-user-id"], user_id.as_str());
        assert_eq!(res.headers()["x-scopes"], "user");
        assert_eq!(res.headers()["x-subscription-tier"], "free");
        assert_eq!(res.headers()["x-email-verified"], "false");
        let res = s
            .http
            .get(s.url("/api/auth/internal/jwt/validate"))
            .bearer_auth("bad")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let res = s
            .http
            .get(s.url("/api/auth/internal/jwt/validate"))
            .bearer_auth(&tok)
            .header("x-required-scopes", "admin")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        // From outside the allow-list (here: loopback is not in it), refused.
        let mut c = s.config.clone();
        c.edge.internal_cidrs = vec!["10.0.0.0/8".into()];
        let outside = s.start_edge(c).await;
        let res = s
            .http
            .get(format!("{outside}/api/auth/internal/jwt/validate"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        let res = s.http.get(format!("{outside}/v1/internal/echo?id=1")).send().await.unwrap();
        assert_eq!(res.status(), 403, "internal routes too");
        assert_eq!(s.get("/v1/internal/echo?id=1", None).await.0, 200, "from loopback it answers");
    });
}

// ---------- the pages our emails link to ----------

#[test]
pub(super) fn with_the_console_the_links_open_the_console() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        for path in
            ["/verify-email?token=abc", "/reset-password?token=abc", "/confirm-email?token=abc"]
        {
            let res = s.http.get(s.url(path)).send().await.unwrap();
            assert_eq!(res.status(), 200, "{path}");
            let csp = res.headers()["content-security-policy"].to_str().unwrap().to_owned();
            let scripts = csp.split(';').find(|d| d.trim().starts_with("script-src")).unwrap();
            assert!(scripts.contains("'self'") && !scripts.contains("unsafe-inline"), "{csp}");
            assert!(
                res.text().await.unwrap().contains("<div id=\"__nuxt\">"),
                "{path}: the console's shell"
            );
        }
    });
}

/// The link to `path` in the newest mail to `to`, as a path and query on this edge.
fn link_in(s: &support::Stack, to: &str, path: &str) -> String {
    let mails = s.outbox.read_all().unwrap();
    let mail = mails.iter().rfind(|m| m.to == to).expect("a mail");
    let at = mail.body.find(path).unwrap_or_else(|| panic!("no {path} in {}", mail.body));
    mail.body[at..].split_whitespace().next().unwrap().to_owned()
}

#[test]
pub(super) fn email_links_open_pages_that_do_the_step_in_the_readers_language() {
    mt().block_on(async {
        // Without the console (API-only deployments) the edge's own pages serve the links.
        let s = stack(Kind::Real, |c| c.edge.console = false).await;
        let email = format!("pages-{}@example.com", skillup_testkit::unique());
        let res = s
            .http
            .post(s.url("/api/auth/register"))
            .header("accept-language", "ru")
            .json(&json!({"email": email, "password": support::PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let link = link_in(&s, &email, "/verify-email?token=");
        let token = link.split("token=").nth(1).unwrap().to_owned();

        // Opening the link only shows a form: a mail scanner confirms nothing.
        let page = s.http.get(s.url(&link)).header("accept-language", "ru-RU,ru").send().await;
        let page = page.unwrap();
        assert_eq!(page.status(), 200);
        let h = page.headers().clone();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["referrer-policy"], "no-referrer", "the token never leaves in a Referer");
        assert!(h["content-security-policy"].to_str().unwrap().starts_with("default-src 'none'"));
        let html = page.text().await.unwrap();
        assert!(
            html.contains("<html lang=\"ru\">") && html.contains("Подтвердите email"),
            "{html}"
        );
        assert!(html.contains(&format!("value=\"{token}\"")), "{html}");
        let login = json!({"email": email, "password": support::PASSWORD});
        let res = s.http.post(s.url("/api/auth/login")).json(&login).send().await.unwrap();
        let access =
            res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
        let (_, me, _) = s.get("/api/auth/me", Some(&access)).await;
        assert_eq!(me["email_verified"], false, "GET did nothing");

        // The form's post does it, through the same route as the JSON call.
        let post = |path: &str, form: Vec<(&str, String)>, lang: &str| {
            s.http.post(s.url(path)).header("accept-language", lang.to_owned()).form(&form).send()
        };
        let done = post("/verify-email", vec![("token", token.clone())], "ru").await.unwrap();
        assert_eq!(done.status(), 200);
        assert!(done.text().await.unwrap().contains("Email подтверждён"));
        let (_, me, _) = s.get("/api/auth/me", Some(&access)).await;
        assert_eq!(me["email_verified"], true);
        let again = post("/verify-email", vec![("token", token)], "en").await.unwrap();
        assert_eq!(again.status(), 400);
        assert!(again.text().await.unwrap().contains("was used already"), "single use, in English");

        // A reset: the password twice, a mismatch said on the form, then the new password works.
        let res = s
            .http
            .post(s.url("/api/auth/password/reset"))
            .json(&json!({"email": email}))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
        let link = link_in(&s, &email, "/reset-password?token=");
        let token = link.split("token=").nth(1).unwrap().to_owned();
        let html = s.http.get(s.url(&link)).send().await.unwrap().text().await.unwrap();
        assert!(html.contains("type=\"password\" name=\"repeat\""), "{html}");
        let form = |a: &str, b: &str| {
            vec![("token", token.clone()), ("password", a.to_owned()), ("repeat", b.to_owned())]
        };
        let res = post("/reset-password", form("new password 1", "new password 2"), "en").await;
        let res = res.unwrap();
        assert_eq!(res.status(), 400);
        assert!(res.text().await.unwrap().contains("The two passwords differ"));
        let res = post("/reset-password", form("new password 1", "new password 1"), "en").await;
        assert_eq!(res.unwrap().status(), 200);
        let login = json!({"email": email, "password": "new password 1"});
        let res = s.http.post(s.url("/api/auth/login")).json(&login).send().await.unwrap();
        assert_eq!(res.status(), 200);

        // Nothing but a token as we mint them reaches a page; unknown /api paths stay JSON.
        let res =
            s.http.get(s.url("/confirm-email?token=%22%3E%3Cscript%3E")).send().await.unwrap();
        assert_eq!(res.status(), 400);
        assert!(!res.text().await.unwrap().contains("<script>"));
        let (st, v, _) = s.get("/api/verify-email", None).await;
        assert_eq!((st, code(&v)), (404, "NOT_FOUND"));
    });
}

#[test]
pub(super) fn the_edges_own_errors_are_worded_in_the_readers_language() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let ask = |path: &'static str, lang: &'static str| {
            let req = s.http.get(s.url(path)).header("accept-language", lang);
            async move {
                let res = req.send().await.unwrap();
                let status = res.status().as_u16();
                (status, res.json::<Value>().await.unwrap())
            }
        };
        let (st, v) = ask("/v1/echo/x", "ru-RU,ru;q=0.9").await;
        assert_eq!((st, code(&v)), (401, "UNAUTHENTICATED"), "the code stays");
        assert!(v["error"]["message"].as_str().unwrap().starts_with("Сначала войдите"), "{v}");
        let (st, v) = ask("/api/nothing-here", "ru").await;
        assert_eq!(
            (st, v["error"]["message"].as_str()),
            (404, Some("По этому адресу ничего нет."))
        );
        let (_, v) = ask("/api/nothing-here", "en").await;
        assert_eq!(v["error"]["message"], "no such route", "English stays the edge's own words");
        // A service's answer is worded by the service (auth here, in the asserted language),
        // never re-worded by the edge.
        let wrong = json!({"email": "nobody@example.com", "password": "wrong password"});
        let res = s
            .http
            .post(s.url("/api/auth/login"))
            .header("accept-language", "ru")
            .json(&wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let v: Value = res.json().await.unwrap();
        assert_eq!(code(&v), "INVALID_CREDENTIALS");
        assert_eq!(v["error"]["message"], "Неверный email или пароль.", "{v}");

        // Bad input: the edge's own refusals and a service's field rules, in Russian too; the
        // code and the field stay the machine's.
        let post = |body: &'static str, lang: &'static str| {
            let req = s
                .http
                .post(s.url("/api/auth/register"))
                .header("accept-language", lang)
                .header("content-type", "application/json")
                .body(body);
            async move {
                let res = req.send().await.unwrap();
                (res.status().as_u16(), res.json::<Value>().await.unwrap())
            }
        };
        for (body, lang, field, says) in [
            (r#"{"email": "#, "ru", None, "Тело запроса — не JSON (строка 1, позиция 10): оно обрывается."),
            (r#"{"email": "#, "en", None, "the body is not valid JSON (line 1, column 10): it ends too early"),
            ("[1]", "ru", None, "Тело запроса должно быть JSON-объектом."),
            (r#"{"password": "x"}"#, "ru", Some("email"), "Заполните поле «email»."),
            (r#"{"email": "a@example.com", "password": "short"}"#, "ru", Some("password"), "Пароль должен быть не короче 8 символов."),
            (r#"{"email": "a@example.com", "password": "short"}"#, "en", Some("password"), "password must be at least 8 characters"),
            (r#"{"email": "not-an-address", "password": "long enough"}"#, "ru", Some("email"), "В email должен быть знак @."),
            (r#"{"email": "a@example.com", "password": "long enough", "time_zone": "Mars/Olympus"}"#, "ru", Some("time_zone"), "Часовой пояс должен быть названием из базы IANA, например «Europe/Moscow»."),
        ] {
            let (st, v) = post(body, lang).await;
            assert_eq!((st, code(&v)), (400, "INVALID_ARGUMENT"), "{body}: {v}");
            assert_eq!(v["error"]["field"].as_str(), field, "{body}: {v}");
            assert_eq!(v["error"]["message"], says, "{body} ({lang})");
        }
    });
}
