//! Accounts: registration, sign-in, bad input, forged tokens.

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
