//! Accounts: registration, sign-in, bad input, forged tokens, brute-force limits.

use super::*;

pub(crate) async fn register_login_me_validate(kind: Kind) {
    let mut h = harness(kind).await;
    let em = email();
    let res = h
        .client
        .register(pb::RegisterRequest {
            email: em.to_uppercase(),
            password: PASSWORD.into(),
            name: " Ada ".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(res.metadata().get("x-http-status").unwrap(), "201");
    let res = res.into_inner();
    let user = res.user.clone().unwrap();
    assert_eq!(user.email, em, "normalised");
    assert_eq!(user.name, "Ada");
    assert_eq!(user.tier, "free");
    assert!(!user.email_verified);
    let res = sign_in(&mut h, &em, PASSWORD).await.unwrap();
    assert_eq!(res.token_type, "Bearer");
    assert_eq!(res.expires_in, 3600);
    assert_eq!(res.refresh_token.len(), 43);

    let me =
        h.client.get_me(bearer(pb::GetMeRequest {}, &res.access_token)).await.unwrap().into_inner();
    assert_eq!(me.id, user.id);

    let v = validate(&mut h, &res.access_token).await.unwrap();
    assert_eq!(v.user_id, user.id);
    assert_eq!(v.scopes, ["user"]);
    assert_eq!(v.tier, "free");
    assert!(!v.email_verified);

    let login = sign_in(&mut h, &em, PASSWORD).await.unwrap();
    assert_ne!(login.access_token, res.access_token);
    let err = h
        .client
        .login(pb::LoginRequest {
            email: em.clone(),
            password: "wrong password".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "INVALID_CREDENTIALS");
    let err = h
        .client
        .login(pb::LoginRequest { email: email(), password: PASSWORD.into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_CREDENTIALS", "unknown email answers the same");
    // Token metadata is in the cache under auth:jwt:{jti}.
    let meta =
        h.t.infra
            .cache
            .get(&format!("auth:jwt:{}", v.jti))
            .await
            .unwrap()
            .expect("metadata stored");
    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    assert_eq!(meta["user_id"], user.id);
    assert_eq!(meta["tier"], "free");
}

pub(crate) async fn bad_input_gets_a_reason_never_internal(kind: Kind) {
    let mut h = harness(kind).await;
    let cases = [
        ("not-an-email", PASSWORD.to_owned(), "".to_owned(), "email"),
        ("", PASSWORD.to_owned(), "".to_owned(), "email"),
        ("a@example.com", "short".to_owned(), "".to_owned(), "password"),
        ("a@example.com", "é".repeat(37), "".to_owned(), "password"),
        ("a@example.com", PASSWORD.to_owned(), "x".repeat(101), "name"),
        ("a@example.com", PASSWORD.to_owned(), "bad\u{7}name".to_owned(), "name"),
    ];
    for (em, pw, name, field) in cases {
        let err = h
            .client
            .register(pb::RegisterRequest {
                email: em.into(),
                password: pw,
                name,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, field);
        assert!(!err.message().is_empty());
    }
    let err = h
        .client
        .login(pb::LoginRequest {
            email: "x@example.com".into(),
            password: "".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = h.client.get_me(Request::new(pb::GetMeRequest {})).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err =
        h.client.refresh(pb::RefreshRequest { refresh_token: "garbage".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = h
        .client
        .verify_email(pb::VerifyEmailRequest { token: "garbage".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

pub(crate) async fn concurrent_duplicate_registration_makes_exactly_one_account(kind: Kind) {
    let h = harness(kind).await;
    let spec =
        skillup_kit::bus::SubscriptionSpec::new("registered-test", &[pb::UserRegistered::KIND]);
    let mut events = h.t.infra.bus.subscribe(&spec, 16).await.unwrap();
    let em = email();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let mut c = h.client.clone();
            let addr = if i % 2 == 0 { em.clone() } else { em.to_uppercase() };
            tokio::spawn(async move {
                c.register(pb::RegisterRequest {
                    email: addr,
                    password: PASSWORD.into(),
                    name: String::new(),
                    ..Default::default()
                })
                .await
            })
        })
        .collect();
    // Every one is answered alike (issue 26.17: a 409 told anyone the address had an account).
    for t in tasks {
        let res = t.await.unwrap().expect("the same answer for every attempt");
        assert_eq!(res.metadata().get("x-http-status").unwrap(), "201");
        assert_eq!(res.into_inner().user.unwrap().email, em);
    }
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let accounts = skillup_auth::store::entities::user::Entity::find()
        .filter(skillup_auth::store::entities::user::Column::Email.eq(em.clone()))
        .count(&h.t.infra.db)
        .await
        .unwrap();
    assert_eq!(accounts, 1);
    // The owner got one note about the others (throttled), never a second confirmation link.
    let mails: Vec<_> = h.outbox.read_all().unwrap().into_iter().filter(|m| m.to == em).collect();
    assert_eq!(mails.iter().filter(|m| m.body.contains("token=")).count(), 1, "{mails:#?}");
    assert_eq!(mails.iter().filter(|m| m.body.contains("already has one")).count(), 1);
    // One `user.registered` (committed with the account; the refused ones rolled theirs back).
    let d = tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().unwrap();
    let (env, ev) =
        skillup_kit::events::decode::<pb::UserRegistered>(&d.message.payload).expect("an event");
    d.ack().await.unwrap();
    assert_eq!(ev.user.unwrap().email, em);
    assert_eq!(env.id, format!("registered:{}", env.user_id));
    let more = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
    assert!(more.is_err(), "exactly one event");
}

pub(crate) async fn every_sign_in_reports_user_logged_in_through_the_outbox(kind: Kind) {
    let mut h = harness(kind).await;
    let group = format!("logged-in-test-{}", uuid::Uuid::now_v7());
    let spec = skillup_kit::bus::SubscriptionSpec::new(group, &[pb::UserLoggedIn::KIND]);
    let mut events = h.t.infra.bus.subscribe(&spec, 16).await.unwrap();
    let em = email();
    let first = register(&mut h, &em).await;
    let me = h.client.get_me(bearer(pb::GetMeRequest {}, &first.access_token)).await.unwrap();
    let user_id = me.into_inner().id;
    let mut login =
        pb::LoginRequest { email: em.clone(), password: PASSWORD.into(), ..Default::default() };
    let mut req = Request::new(login.clone());
    req.metadata_mut().insert("user-agent", "Firefox/140".parse().unwrap());
    h.client.login(req).await.unwrap();
    login.password = "wrong password".into();
    h.client.login(login).await.unwrap_err();

    // Other tests sign in on the same broker: this user's events only.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 {
        let d =
            tokio::time::timeout_at(deadline, events.next()).await.expect("two events").unwrap();
        let (env, ev) =
            skillup_kit::events::decode::<pb::UserLoggedIn>(&d.message.payload).unwrap();
        d.ack().await.unwrap();
        if ev.user_id == user_id {
            assert_eq!(env.id, format!("logged_in:{}", ev.session_id), "one event per session");
            seen.push(ev);
        }
    }
    assert_ne!(seen[0].session_id, seen[1].session_id);
    assert!(seen.iter().any(|e| e.user_agent.starts_with("Firefox/140")), "{seen:?}");
    let sessions = h
        .client
        .list_sessions(bearer(pb::ListSessionsRequest {}, &first.access_token))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    let mut ids: Vec<_> = sessions.iter().map(|s| s.id.clone()).collect();
    let mut reported: Vec<_> = seen.iter().map(|e| e.session_id.clone()).collect();
    ids.sort();
    reported.sort();
    assert_eq!(ids, reported, "each event names a stored session");
    // The refused attempt reported nothing.
    let more = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            let d = events.next().await.unwrap();
            let (_, ev) =
                skillup_kit::events::decode::<pb::UserLoggedIn>(&d.message.payload).unwrap();
            d.ack().await.unwrap();
            if ev.user_id == user_id {
                return ev;
            }
        }
    })
    .await;
    assert!(more.is_err(), "a refused sign-in is no event: {more:?}");
    // Relayed: nothing left in the outbox (the relay deletes a row once the broker confirmed).
    let outbox = skillup_kit::outbox::Outbox::new(
        h.t.infra.db.clone(),
        h.t.infra.bus.clone(),
        skillup_auth::store::OUTBOX,
    );
    let mut pending = u64::MAX;
    for _ in 0..100 {
        pending = outbox.pending().await.unwrap();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending, 0, "relayed");
}

// ---------- the JWT attack list ----------

mod attacks {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    fn test_key() -> SigningKey {
        SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap()
    }

    fn claims(user_id: &str, sid: &str) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": "skillup", "aud": "skillup-api", "sub": user_id, "iat": now, "nbf": now, "exp": now + 600,
            "jti": uuid::Uuid::now_v7().to_string(), "typ": "access", "scope": "user admin", "tier": "premium",
            "email_verified": true, "sid": sid, "email": "x@example.com"
        })
    }

    fn sign_with(key: &SigningKey, header: Header, claims: &serde_json::Value) -> String {
        use secrecy::ExposeSecret;
        let ek = EncodingKey::from_rsa_pem(key.private_pem.expose_secret().as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &ek).unwrap()
    }

    fn ours(claims: &serde_json::Value) -> String {
        let key = test_key();
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(key.kid.clone());
        sign_with(&key, h, claims)
    }

    fn raw(header: serde_json::Value, claims: &serde_json::Value, sig: &str) -> String {
        format!("{}.{}.{sig}", B64.encode(header.to_string()), B64.encode(claims.to_string()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_forgery_is_rejected() {
        let mut h = real().await;
        let reg = register(&mut h, &email()).await;
        let good = validate(&mut h, &reg.access_token).await.unwrap();
        let (uid, sid) = (good.user_id.clone(), good.session_id.clone());
        let kid = test_key().kid;
        let base = claims(&uid, &sid);
        // Sanity: a token we sign ourselves with these claims is accepted.
        validate(&mut h, &ours(&base)).await.expect("the control token validates");

        let mut forged: Vec<(&str, String)> = Vec::new();
        for alg in ["none", "None", "NONE", "nOnE"] {
            forged.push(("alg none", raw(json!({"alg": alg, "kid": kid}), &base, "")));
        }
        // HS256 keyed with our public key (the classic algorithm confusion).
        let public_pem = {
            use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
            use secrecy::ExposeSecret;
            let k =
                rsa::PrivateKey::from_pkcs8_pem(test_key().private_pem.expose_secret()).unwrap();
            k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap()
        };
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some(kid.clone());
        forged.push((
            "HS256 with the public key",
            jsonwebtoken::encode(&hs, &base, &EncodingKey::from_secret(public_pem.as_bytes()))
                .unwrap(),
        ));

        let token = ours(&base);
        let (head_payload, sig) = token.rsplit_once('.').unwrap();
        forged.push(("empty signature", format!("{head_payload}.")));
        forged.push(("truncated signature", format!("{head_payload}.{}", &sig[..sig.len() / 2])));
        let mut flipped = B64.decode(sig).unwrap();
        flipped[10] ^= 0x01;
        forged.push(("bit-flipped signature", format!("{head_payload}.{}", B64.encode(flipped))));
        let header_part = head_payload.split('.').next().unwrap();
        let mut tampered = base.clone();
        tampered["scope"] = json!("user admin superuser");
        forged.push((
            "payload changed under the signature",
            format!("{header_part}.{}.{sig}", B64.encode(tampered.to_string())),
        ));

        let attacker = SigningKey::generate_bits(2048).unwrap();
        for bad_kid in ["unknown-kid", "../../../../etc/passwd", "' OR 1=1 --", ""] {
            let mut hd = Header::new(Algorithm::RS256);
            hd.kid = Some(bad_kid.into());
            forged.push(("bad kid", sign_with(&attacker, hd, &base)));
        }
        let mut hd = Header::new(Algorithm::RS256);
        hd.kid = None;
        forged.push(("no kid", sign_with(&attacker, hd, &base)));
        // jku / x5u / jwk: never fetched or trusted — signed by the attacker, pointing at them.
        let mut hd = Header::new(Algorithm::RS256);
        hd.kid = Some(attacker.kid.clone());
        hd.jku = Some("http://127.0.0.1:1/jwks.json".into());
        hd.x5u = Some("http://127.0.0.1:1/cert.pem".into());
        forged.push(("jku/x5u", sign_with(&attacker, hd, &base)));
        let embedded_jwk = json!({"alg": "RS256", "kid": attacker.kid, "jwk": {"kty": "RSA", "n": attacker.n, "e": attacker.e, "kid": attacker.kid}});
        let unsigned = raw(embedded_jwk, &base, "");
        let signed_with_attacker = {
            let mut hd = Header::new(Algorithm::RS256);
            hd.kid = Some(attacker.kid.clone());
            let t = sign_with(&attacker, hd, &base);
            let sig = t.rsplit_once('.').unwrap().1.to_owned();
            format!("{}{sig}", unsigned)
        };
        forged.push(("embedded jwk", signed_with_attacker));
        // Our own key but a kid that is ours: fine; the same claims with our kid but signed by the attacker:
        let mut hd = Header::new(Algorithm::RS256);
        hd.kid = Some(kid.clone());
        forged.push(("our kid, attacker's signature", sign_with(&attacker, hd, &base)));

        let now = chrono::Utc::now().timestamp();
        let mut expired = base.clone();
        expired["exp"] = json!(now - 120);
        forged.push(("expired beyond leeway", ours(&expired)));
        let mut future = base.clone();
        future["nbf"] = json!(now + 300);
        forged.push(("nbf in the future", ours(&future)));
        let mut no_exp = base.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        forged.push(("missing exp", ours(&no_exp)));
        let mut iss = base.clone();
        iss["iss"] = json!("someone-else");
        forged.push(("wrong iss", ours(&iss)));
        let mut aud = base.clone();
        aud["aud"] = json!("another-api");
        forged.push(("wrong aud", ours(&aud)));
        for typ in ["refresh", "id", "Access", ""] {
            let mut t = base.clone();
            t["typ"] = json!(typ);
            forged.push(("other typ", ours(&t)));
        }
        forged.push(("the refresh token as an access token", reg.refresh_token.clone()));
        forged.push(("empty", String::new()));
        forged.push(("garbage", "a.b.c".into()));
        forged.push(("oversized", format!("{}.{}", "a".repeat(9000), "b")));

        for (what, token) in forged {
            let err = validate(&mut h, &token).await.expect_err(what);
            assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
        }
        // Issue 26.17: an expiry is an expiry on every path — no leeway on `exp` (Nginx's
        // validate took a token 60 s past it while REST refused the assertion it made).
        let mut recent = base.clone();
        recent["exp"] = json!(now - 2);
        let err = validate(&mut h, &ours(&recent)).await.expect_err("just expired");
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        assert!(err.message().contains("expired"), "{}", err.message());
        // A token a replica's clock sees as not valid yet for a few seconds still is.
        let mut early = base.clone();
        early["nbf"] = json!(now + 30);
        validate(&mut h, &ours(&early)).await.expect("nbf within leeway");
    }
}

// ---------- sessions, rotation, revocation ----------

pub(crate) async fn lockout_is_exact_under_fifty_parallel_wrong_passwords(kind: Kind) {
    let mut h = harness(kind).await;
    let em = email();
    register(&mut h, &em).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let mut c = h.client.clone();
            let em = em.clone();
            tokio::spawn(async move {
                c.login(pb::LoginRequest {
                    email: em,
                    password: "wrong password".into(),
                    ..Default::default()
                })
                .await
            })
        })
        .collect();
    let (mut wrong, mut limited) = (0i64, 0i64);
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        match reason(&err).as_str() {
            "INVALID_CREDENTIALS" => wrong += 1,
            "RATE_LIMITED" => {
                assert!(err.metadata().get("retry-after").is_some());
                limited += 1
            }
            other => panic!("unexpected {other}: {err:?}"),
        }
    }
    assert_eq!(wrong + limited, 50);
    let counted =
        h.t.infra
            .cache
            .incr(&format!("auth:fail:acct:{}", skillup_auth::domain::secrets::hash(&em)), 0, None)
            .await
            .unwrap();
    assert_eq!(counted, wrong, "every checked wrong password counted exactly once");
    assert!(wrong >= 5);
    // Locked now, even with the right password.
    let err = h
        .client
        .login(pb::LoginRequest { email: em, password: PASSWORD.into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");
    let d = skillup_kit::error::detail_of(&err).unwrap();
    assert!(d.retry_after_seconds >= 1);
}

// ---------- email tokens ----------

/// Issue 26.8: 50 bad logins sent straight to auth with `x-forwarded-for: <the edge>` locked
/// the edge's own address. Only the edge's signed assertion names a client address.
pub(crate) async fn a_direct_caller_cannot_choose_the_address_its_failures_count_against(
    kind: Kind,
) {
    let mut h = harness(kind).await;
    let em = email();
    register(&mut h, &em).await;
    for _ in 0..3 {
        let mut req = Request::new(pb::LoginRequest {
            email: em.clone(),
            password: "wrong!".into(),
            ..Default::default()
        });
        req.metadata_mut().insert("x-forwarded-for", "198.51.100.7".parse().unwrap());
        h.client.login(req).await.unwrap_err();
    }
    let count = |who: &str| {
        let (cache, key) = (h.t.infra.cache.clone(), format!("auth:fail:ip:{who}"));
        async move { cache.incr(&key, 0, None).await.unwrap() }
    };
    assert_eq!(count("198.51.100.7").await, 0, "the header is not believed");
    assert_eq!(count("127.0.0.1").await, 3, "the failures count against the peer");
}

/// A sign-in as the edge forwards it: an anonymous assertion naming the client's address.
pub(crate) fn login_from(
    h: &Harness,
    ip: &str,
    em: &str,
    pw: &str,
    device: &str,
) -> Request<pb::LoginRequest> {
    let mut req = Request::new(pb::LoginRequest {
        email: em.into(),
        password: pw.into(),
        device_token: device.into(),
    });
    let id = skillup_kit::identity::Caller {
        exp: skillup_kit::identity::now_secs() + 60,
        ip: ip.into(),
        ..Default::default()
    };
    req.metadata_mut().insert("x-skillup-identity", h.key.sign(&id).parse().unwrap());
    req
}

/// Issue 26.9: five wrong passwords from anywhere locked the account for its owner too.
pub(crate) async fn nobody_can_lock_an_owner_out(kind: Kind) {
    let cfg = AuthConfig { max_failures_per_account_total: 12, ..test_config() };
    let mut h = start_with(infra(kind).await, cfg).await;
    let em = email();
    let device = register(&mut h, &em).await.device_token;
    assert_eq!(device.len(), 43, "registration gives the device a token");
    let login = |h: &Harness, ip: &str, pw: &str, device: &str| {
        let (mut c, req) = (h.client.clone(), login_from(h, ip, &em, pw, device));
        async move { c.login(req).await.map(|r| r.into_inner()) }
    };
    let limited = |r: Result<pb::AuthResponse, tonic::Status>| matches!(&r, Err(e) if reason(e) == "RATE_LIMITED");

    // Five failures from one address lock that address out of this account, and no more.
    for _ in 0..5 {
        assert!(login(&h, "203.0.113.1", "wrong!", "").await.is_err());
    }
    assert!(limited(login(&h, "203.0.113.1", PASSWORD, "").await), "the pair is locked");
    let fresh = login(&h, "203.0.113.2", PASSWORD, "").await.expect("another address gets in");
    assert_eq!(fresh.device_token.len(), 43);

    // Failures spread over many addresses lock the account — for unknown devices only.
    for n in 10..22 {
        let _ = login(&h, &format!("198.51.100.{n}"), "wrong!", "").await;
    }
    assert!(limited(login(&h, "203.0.113.3", PASSWORD, "").await), "the account is locked");
    let known = login(&h, "203.0.113.3", PASSWORD, &device).await.expect("a known device gets in");
    assert_eq!(known.device_token, device, "and keeps its token");
    // A device token of another account, or a made-up one, is no key.
    let other = email();
    let strangers = register(&mut h, &other).await.device_token;
    assert!(limited(login(&h, "203.0.113.3", PASSWORD, &strangers).await));

    // A known device is limited by its own failures.
    for _ in 0..5 {
        assert!(!limited(login(&h, "203.0.113.4", "wrong!", &device).await));
    }
    assert!(limited(login(&h, "203.0.113.4", PASSWORD, &device).await), "the device is locked");
}

// ---------- the profile ----------

pub(crate) async fn a_profile_sets_name_language_and_time_zone(kind: Kind) {
    let mut h = harness(kind).await;
    let group = format!("updated-test-{}", uuid::Uuid::now_v7());
    let spec = skillup_kit::bus::SubscriptionSpec::new(group, &[pb::UserUpdated::KIND]);
    let mut events = h.t.infra.bus.subscribe(&spec, 16).await.unwrap();

    // Registration takes the language asked for, else the request's Accept-Language.
    let em = email();
    let mut req = Request::new(pb::RegisterRequest {
        email: em.clone(),
        password: PASSWORD.into(),
        ..Default::default()
    });
    req.metadata_mut().insert("accept-language", "ru-RU,ru;q=0.9,en;q=0.8".parse().unwrap());
    let user = h.client.register(req).await.unwrap().into_inner().user.unwrap();
    assert_eq!((user.locale.as_str(), user.time_zone.as_str()), ("ru", "UTC"));
    let mail = h.outbox.read_all().unwrap().into_iter().find(|m| m.to == em).unwrap();
    assert_eq!(mail.subject, "Подтвердите email для SkillUp", "mail in the account's language");
    assert!(mail.body.contains("Ссылка действует 24 часа."), "{}", mail.body);
    let explicit = pb::RegisterRequest {
        email: email(),
        password: PASSWORD.into(),
        locale: "en".into(),
        time_zone: "Asia/Yekaterinburg".into(),
        ..Default::default()
    };
    let other = h.client.register(explicit).await.unwrap().into_inner().user.unwrap();
    assert_eq!((other.locale.as_str(), other.time_zone.as_str()), ("en", "Asia/Yekaterinburg"));
    for (field, locale, tz) in [("locale", "de", ""), ("time_zone", "", "Mars/Olympus")] {
        let bad = pb::RegisterRequest {
            email: email(),
            password: PASSWORD.into(),
            locale: locale.into(),
            time_zone: tz.into(),
            ..Default::default()
        };
        let err = h.client.register(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, field);
    }

    let tokens = sign_in(&mut h, &em, PASSWORD).await.unwrap();
    assert_eq!(validate(&mut h, &tokens.access_token).await.unwrap().locale, "ru");
    // Errors people read come in the language the call asks for; the code stays.
    let mut wrong = Request::new(pb::LoginRequest {
        email: em.clone(),
        password: "wrong password".into(),
        ..Default::default()
    });
    wrong.metadata_mut().insert("accept-language", "ru-RU,ru;q=0.9".parse().unwrap());
    let err = h.client.login(wrong).await.unwrap_err();
    assert_eq!(
        (reason(&err).as_str(), err.message()),
        ("INVALID_CREDENTIALS", "Неверный email или пароль.")
    );
    let wrong =
        pb::LoginRequest { email: em.clone(), password: "wrong".into(), ..Default::default() };
    let err = h.client.login(wrong).await.unwrap_err();
    assert_eq!(err.message(), "Email or password is wrong.", "English when nothing is asked");
    let update = |name: Option<&str>, locale: Option<&str>, tz: Option<&str>| {
        bearer(
            pb::UpdateMeRequest {
                name: name.map(str::to_owned),
                locale: locale.map(str::to_owned),
                time_zone: tz.map(str::to_owned),
            },
            &tokens.access_token,
        )
    };
    let me = h.client.update_me(update(Some("  Ада "), Some("en"), Some("Europe/Moscow"))).await;
    let me = me.unwrap().into_inner();
    assert_eq!(
        (me.name.as_str(), me.locale.as_str(), me.time_zone.as_str()),
        ("Ада", "en", "Europe/Moscow")
    );
    // The same token speaks the new language at once (the edge asserts it on the next call).
    assert_eq!(validate(&mut h, &tokens.access_token).await.unwrap().locale, "en");
    let got = h.client.get_me(bearer(pb::GetMeRequest {}, &tokens.access_token)).await.unwrap();
    assert_eq!(got.into_inner().time_zone, "Europe/Moscow");
    // Each field alone; nothing asked, nothing changed.
    let me = h.client.update_me(update(None, Some("ru"), None)).await.unwrap().into_inner();
    assert_eq!((me.name.as_str(), me.locale.as_str()), ("Ада", "ru"));
    // Mail follows the profile: English now.
    h.client.update_me(update(None, Some("en"), None)).await.unwrap();
    let reset = pb::RequestPasswordResetRequest { email: em.clone() };
    h.client.request_password_reset(reset).await.unwrap();
    let mails = h.outbox.read_all().unwrap();
    let reset = mails.iter().rfind(|m| m.to == em).unwrap();
    assert_eq!(reset.subject, "Reset your SkillUp password");
    let me = h.client.update_me(update(None, Some("ru"), None)).await.unwrap().into_inner();
    let same = h.client.update_me(update(None, None, None)).await.unwrap().into_inner();
    assert_eq!(same.updated_at, me.updated_at);
    for (field, req) in [
        ("name", update(Some(&"я".repeat(101)), None, None)),
        ("name", update(Some("a\u{7}b"), None, None)),
        ("locale", update(None, Some("fr"), None)),
        ("time_zone", update(None, None, Some("Moscow"))),
    ] {
        let err = h.client.update_me(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, field);
    }
    let err = h.client.update_me(Request::new(pb::UpdateMeRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Each change is one `user.updated` with the account as it became.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 4 {
        let d =
            tokio::time::timeout_at(deadline, events.next()).await.expect("four events").unwrap();
        let (_, ev) = skillup_kit::events::decode::<pb::UserUpdated>(&d.message.payload).unwrap();
        d.ack().await.unwrap();
        let u = ev.user.unwrap();
        if u.id == user.id {
            seen.push((u.name, u.locale, u.time_zone));
        }
    }
    assert_eq!(
        seen,
        [
            ("Ада".to_owned(), "en".to_owned(), "Europe/Moscow".to_owned()),
            ("Ада".to_owned(), "ru".to_owned(), "Europe/Moscow".to_owned()),
            ("Ада".to_owned(), "en".to_owned(), "Europe/Moscow".to_owned()),
            ("Ада".to_owned(), "ru".to_owned(), "Europe/Moscow".to_owned())
        ]
    );
}
