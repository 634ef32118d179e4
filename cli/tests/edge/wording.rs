//! The reader's language: what services hear, the edge's own errors, and the pages email links
//! open.

use super::*;

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
