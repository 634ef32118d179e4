//! The web console as the edge serves it, and the browser session it keeps in cookies.

use super::*;

/// Every `Set-Cookie` of an answer.
fn set_cookies(h: &reqwest::header::HeaderMap) -> Vec<String> {
    h.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

/// The value a `Set-Cookie` gives `name` at `path`.
fn cookie_at(cookies: &[String], name: &str, path: &str) -> Option<String> {
    cookies
        .iter()
        .find(|c| c.contains(&format!("Path={path};")))
        .and_then(|c| c.strip_prefix(&format!("{name}="))?.split(';').next().map(str::to_owned))
}

#[test]
fn the_console_is_served_with_its_caching_and_security_headers() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let res = s.http.get(s.url("/")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let h = res.headers().clone();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["cache-control"], "no-cache");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "same-origin");
        assert!(h.get("strict-transport-security").is_none(), "no HSTS without TLS");
        let csp = h["content-security-policy"].to_str().unwrap();
        let scripts = csp.split(';').find(|d| d.trim().starts_with("script-src")).unwrap();
        assert!(!scripts.contains("unsafe-inline") && scripts.contains("'sha256-"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        let html = res.text().await.unwrap();
        let at = html.find("/_nuxt/").expect("the shell names its entry");
        let asset = html[at..].split('"').next().unwrap().to_owned();
        assert!(asset.ends_with(".js"), "{asset}");

        // A hashed asset: immutable, pre-compressed by negotiation, revalidated by its tag.
        let get = |path: String, enc: &'static str| {
            s.http.get(s.url(&path)).header("accept-encoding", enc).send()
        };
        let plain = get(asset.clone(), "identity").await.unwrap();
        let h = plain.headers().clone();
        assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
        assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
        assert!(h.get("content-encoding").is_none());
        let size = plain.bytes().await.unwrap().len();
        for (accept, coding) in
            [("gzip, deflate, br", "br"), ("gzip", "gzip"), ("br;q=0, gzip", "gzip")]
        {
            let res = get(asset.clone(), accept).await.unwrap();
            assert_eq!(res.headers()["content-encoding"], coding, "{accept}");
            assert_eq!(res.headers()["vary"], "Accept-Encoding");
            assert!(res.bytes().await.unwrap().len() < size / 2, "{accept}: compressed");
        }
        let etag = h["etag"].to_str().unwrap().to_owned();
        let res = s
            .http
            .get(s.url(&asset))
            .header("accept-encoding", "identity")
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 304);

        // Deep links get the app; missing files and the API never do.
        let res = s.http.get(s.url("/library/01J8Z")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.text().await.unwrap().contains("<div id=\"__nuxt\">"));
        let res = s.http.get(s.url("/_nuxt/gone.js")).send().await.unwrap();
        assert_eq!(res.status(), 404);
        assert!(!res.text().await.unwrap().contains("__nuxt"));
        assert_eq!(s.http.get(s.url("/favicon.png")).send().await.unwrap().status(), 404);
        let (st, v, _) = s.get("/api/nothing/here", None).await;
        assert_eq!((st, code(&v)), (404, "NOT_FOUND"), "an unknown API path stays JSON");
        let (st, v, _) = s.post("/library", None, json!({})).await;
        assert_eq!((st, code(&v)), (404, "NOT_FOUND"), "only reads are the console's");
        let (st, v, _) = s.get("/.well-known/jwks.json", None).await;
        assert_eq!(st, 200, "a contract route outside /api is still the route");
        assert!(v["keys"].is_array());
        assert_eq!(s.http.get(s.url("/healthz")).send().await.unwrap().text().await.unwrap(), "ok");
    });
}

#[test]
fn without_the_console_the_edge_is_the_api_alone() {
    mt().block_on(async {
        let s = stack(Kind::Real, |c| c.edge.console = false).await;
        let (st, v, _) = s.get("/", None).await;
        assert_eq!((st, code(&v)), (404, "NOT_FOUND"));
    });
}

#[test]
fn a_console_session_keeps_its_tokens_in_http_only_cookies() {
    mt().block_on(async {
        let s = stack(Kind::Real, |_| {}).await;
        let email = format!("cookie-{}@example.com", skillup_testkit::unique());
        let (st, _, _) = s
            .post(
                "/api/auth/register",
                None,
                json!({"email": email, "password": support::PASSWORD}),
            )
            .await;
        assert_eq!(st, 201);
        let origin = s.url("");
        let cookie_post = |path: &str, cookie: Option<String>, origin: Option<&str>| {
            let mut req = s
                .http
                .post(s.url(path))
                .header("x-session-transport", "cookie")
                .header("content-type", "application/json");
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            if let Some(o) = origin {
                req = req.header("origin", o.to_owned());
            }
            req
        };

        // Sign-in: the tokens become cookies; JavaScript gets the access token only.
        let login = json!({"email": email, "password": support::PASSWORD}).to_string();
        let res = cookie_post("/api/auth/login", None, Some(&origin)).body(login).send().await;
        let res = res.unwrap();
        assert_eq!(res.status(), 200);
        let cookies = set_cookies(res.headers());
        let body: Value = res.json().await.unwrap();
        assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(
            body.get("refresh_token").is_none() && body.get("device_token").is_none(),
            "{body}"
        );
        let refresh =
            cookie_at(&cookies, "skillup_refresh", "/api/auth/refresh").expect("{cookies:?}");
        assert_eq!(
            cookie_at(&cookies, "skillup_refresh", "/api/auth/logout"),
            Some(refresh.clone())
        );
        assert!(cookie_at(&cookies, "skillup_device", "/api/auth/login").is_some(), "{cookies:?}");
        for c in &cookies {
            assert!(c.contains("; HttpOnly; SameSite=Strict; Max-Age="), "{c}");
            assert!(!c.contains("Secure"), "plain HTTP: {c}");
        }

        // Refresh by the cookie alone, from our own pages only.
        let jar = |t: &str| Some(format!("skillup_refresh={t}"));
        let res = cookie_post("/api/auth/refresh", jar(&refresh), None).body("{}").send().await;
        assert_eq!(res.unwrap().status(), 403, "no Origin");
        let evil = Some("https://evil.example");
        let res = cookie_post("/api/auth/refresh", jar(&refresh), evil).body("{}").send().await;
        assert_eq!(res.unwrap().status(), 403, "another site");
        let res = cookie_post("/api/auth/refresh", None, Some(&origin)).body("{}").send().await;
        let res = res.unwrap();
        assert_eq!(res.status(), 401, "no cookie: no session");
        let res = cookie_post("/api/auth/refresh", jar(&refresh), Some(&origin)).body("{}").send();
        let res = res.await.unwrap();
        assert_eq!(res.status(), 200);
        let rotated =
            cookie_at(&set_cookies(res.headers()), "skillup_refresh", "/api/auth/refresh");
        let rotated = rotated.expect("a rotated cookie");
        assert_ne!(rotated, refresh);
        let access =
            res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
        assert_eq!(s.get("/api/auth/me", Some(&access)).await.0, 200);

        // Sign-out reads the cookie and clears it.
        let res = cookie_post("/api/auth/logout", jar(&rotated), Some(&origin))
            .bearer_auth(&access)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        let cleared = set_cookies(res.headers());
        assert_eq!(
            cookie_at(&cleared, "skillup_refresh", "/api/auth/refresh").as_deref(),
            Some("")
        );
        assert!(cleared.iter().all(|c| c.contains("Max-Age=0")), "{cleared:?}");
        let res = cookie_post("/api/auth/refresh", jar(&rotated), Some(&origin)).body("{}").send();
        let res = res.await.unwrap();
        assert_eq!(res.status(), 401, "the session is over");
        let cleared = set_cookies(res.headers());
        assert!(
            cleared.iter().any(|c| c.starts_with("skillup_refresh=;")),
            "a dead cookie is dropped"
        );

        // API clients keep the body form.
        let (st, v, h) = s
            .post("/api/auth/login", None, json!({"email": email, "password": support::PASSWORD}))
            .await;
        assert_eq!(st, 200);
        assert!(v["refresh_token"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(h.get("set-cookie").is_none());
    });
}
