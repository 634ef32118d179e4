//! Revocation at every edge: revoked tokens and API keys, revocation events, and a cache that
//! lost its data.

use super::*;

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
