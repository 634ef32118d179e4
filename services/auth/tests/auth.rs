//! The auth service through its gRPC client, on real PostgreSQL, Redis and RabbitMQ (and the
//! embedded adapters for the core flow).

use std::{sync::Arc, time::Duration};

use skillup_auth::keys::{KeyStore, SigningKey};
use skillup_kit::{
    Shutdown,
    config::{AuthConfig, Config},
    grpc::GrpcServer,
    mailer::OutboxMailer,
};
use skillup_proto::{
    auth::v1::{self as pb, auth_service_client::AuthServiceClient},
    events::Event as _,
};
use skillup_testkit::{self as testing, Kind, TestInfra, TestServer};
use tonic::{Code, Request, transport::Channel};

struct Harness {
    client: AuthServiceClient<Channel>,
    /// The identity key the server verifies assertions with (the edge's, in production).
    key: Arc<skillup_kit::identity::IdentityKey>,
    outbox: OutboxMailer,
    t: TestInfra,
    _server: TestServer,
    shutdown: Shutdown,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn test_config() -> AuthConfig {
    AuthConfig { bcrypt_cost: 4, ..Config::default().auth }
}

fn keys_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("skillup-auth-keys-{}", testing::unique()));
    let key = SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap();
    KeyStore::new(&dir).store(&key, true).unwrap();
    dir
}

async fn start_with(t: TestInfra, cfg: AuthConfig) -> Harness {
    let outbox = OutboxMailer::new(
        std::env::temp_dir().join(format!("skillup-outbox-{}", testing::unique())),
        "test@skillup",
    );
    let shutdown = Shutdown::new();
    let svc =
        skillup_auth::build(cfg, keys_dir(), &t.infra, Arc::new(outbox.clone()), shutdown.clone())
            .await
            .unwrap();
    let key = Arc::new(skillup_kit::identity::IdentityKey::random());
    let server = TestServer::start(
        GrpcServer::builder().add_service(svc.into_server()).identity_key(key.clone()),
    )
    .await;
    Harness {
        client: AuthServiceClient::new(server.channel()),
        key,
        outbox,
        t,
        _server: server,
        shutdown,
    }
}

async fn infra(kind: Kind) -> TestInfra {
    kind.infra().await
}

async fn harness(kind: Kind) -> Harness {
    start_with(infra(kind).await, test_config()).await
}

async fn real() -> Harness {
    harness(Kind::Real).await
}

skillup_testkit::both_adapters!(
    register_login_me_validate,
    bad_input_gets_a_reason_never_internal,
    concurrent_duplicate_registration_makes_exactly_one_account,
    logout_blacklists_at_once_and_ends_the_session,
    log_out_everywhere,
    revoke_one_session,
    rotation_reuse_revokes_the_family,
    a_retry_within_the_grace_window_gets_the_same_pair,
    concurrent_refreshes_yield_one_successor_line,
    lockout_is_exact_under_fifty_parallel_wrong_passwords,
    email_verification_is_single_use,
    verification_tokens_expire_and_resend_is_throttled,
    password_reset_and_change,
    outstanding_reset_links_die_with_a_reset_or_a_password_change,
    an_unconfirmed_name_stays_out_of_our_mail,
    a_direct_caller_cannot_choose_the_address_its_failures_count_against,
    nobody_can_lock_an_owner_out,
    tier_follows_subscription_changed_events,
    a_deactivated_account_is_refused,
);

fn email() -> String {
    format!("user-{}@example.com", testing::unique())
}

const PASSWORD: &str = "correct horse battery";

async fn sign_in(
    h: &mut Harness,
    email: &str,
    password: &str,
) -> Result<pb::AuthResponse, tonic::Status> {
    let req =
        pb::LoginRequest { email: email.into(), password: password.into(), ..Default::default() };
    h.client.login(req).await.map(|r| r.into_inner())
}

/// Registers an account and signs it in (registration itself answers no tokens).
async fn register(h: &mut Harness, email: &str) -> pb::AuthResponse {
    h.client
        .register(pb::RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
            name: "Ada".into(),
        })
        .await
        .unwrap();
    let login =
        pb::LoginRequest { email: email.into(), password: PASSWORD.into(), ..Default::default() };
    h.client.login(login).await.unwrap().into_inner()
}

fn bearer<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

async fn validate(
    h: &mut Harness,
    token: &str,
) -> Result<pb::ValidateTokenResponse, tonic::Status> {
    h.client
        .validate_token(pb::ValidateTokenRequest { token: token.into(), required_scopes: vec![] })
        .await
        .map(|r| r.into_inner())
}

fn reason(s: &tonic::Status) -> String {
    skillup_kit::error::detail_of(s).map(|d| d.code().as_str_name().to_owned()).unwrap_or_default()
}

// ---------- accounts ----------

async fn register_login_me_validate(kind: Kind) {
    let mut h = harness(kind).await;
    let em = email();
    let res = h
        .client
        .register(pb::RegisterRequest {
            email: em.to_uppercase(),
            password: PASSWORD.into(),
            name: " Ada ".into(),
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

async fn bad_input_gets_a_reason_never_internal(kind: Kind) {
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
            .register(pb::RegisterRequest { email: em.into(), password: pw, name })
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

async fn concurrent_duplicate_registration_makes_exactly_one_account(kind: Kind) {
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

async fn logout_blacklists_at_once_and_ends_the_session(kind: Kind) {
    let mut h = harness(kind).await;
    let reg = register(&mut h, &email()).await;
    validate(&mut h, &reg.access_token).await.unwrap();
    let res = h
        .client
        .logout(bearer(
            pb::LogoutRequest { refresh_token: reg.refresh_token.clone() },
            &reg.access_token,
        ))
        .await
        .unwrap();
    assert_eq!(res.metadata().get("x-http-status").unwrap(), "204");
    let err = validate(&mut h, &reg.access_token).await.unwrap_err();
    assert_eq!(reason(&err), "TOKEN_REVOKED");
    let err = h
        .client
        .refresh(pb::RefreshRequest { refresh_token: reg.refresh_token })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "TOKEN_REVOKED");
}

async fn log_out_everywhere(kind: Kind) {
    let mut h = harness(kind).await;
    let em = email();
    let a = register(&mut h, &em).await;
    let b = sign_in(&mut h, &em, PASSWORD).await.unwrap();
    let sessions = h
        .client
        .list_sessions(bearer(pb::ListSessionsRequest {}, &a.access_token))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s.current).count(), 1);
    h.client.logout_all(bearer(pb::LogoutAllRequest {}, &b.access_token)).await.unwrap();
    for t in [&a.access_token, &b.access_token] {
        assert_eq!(reason(&validate(&mut h, t).await.unwrap_err()), "TOKEN_REVOKED");
    }
    for r in [a.refresh_token, b.refresh_token] {
        assert!(h.client.refresh(pb::RefreshRequest { refresh_token: r }).await.is_err());
    }
    // Signing in again right away works (same second as the cut-off included).
    let c = h
        .client
        .login(pb::LoginRequest { email: em, password: PASSWORD.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    validate(&mut h, &c.access_token).await.expect("new tokens are not caught by the cut-off");
}

async fn revoke_one_session(kind: Kind) {
    let mut h = harness(kind).await;
    let em = email();
    let a = register(&mut h, &em).await;
    let b = h
        .client
        .login(pb::LoginRequest { email: em, password: PASSWORD.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let b_sid = validate(&mut h, &b.access_token).await.unwrap().session_id;
    h.client
        .revoke_session(bearer(
            pb::RevokeSessionRequest { session_id: b_sid.clone() },
            &a.access_token,
        ))
        .await
        .unwrap();
    assert!(validate(&mut h, &b.access_token).await.is_err());
    validate(&mut h, &a.access_token).await.expect("the other session lives");
    // Another account's session is nobody else's to see or end (issue 26's cross-user checks).
    let other = register(&mut h, &email()).await;
    let other_sid = validate(&mut h, &other.access_token).await.unwrap().session_id;
    let err = h
        .client
        .revoke_session(bearer(
            pb::RevokeSessionRequest { session_id: other_sid.clone() },
            &a.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    validate(&mut h, &other.access_token).await.expect("the stranger's session lives");
    let mine = h
        .client
        .list_sessions(bearer(pb::ListSessionsRequest {}, &a.access_token))
        .await
        .unwrap()
        .into_inner();
    assert!(!mine.sessions.is_empty() && mine.sessions.iter().all(|s| s.id != other_sid));
    let err = h
        .client
        .revoke_session(bearer(pb::RevokeSessionRequest { session_id: b_sid }, &a.access_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

async fn rotation_reuse_revokes_the_family(kind: Kind) {
    let mut h =
        start_with(infra(kind).await, AuthConfig { refresh_grace_secs: 1, ..test_config() }).await;
    let a = register(&mut h, &email()).await;
    let b = h
        .client
        .refresh(pb::RefreshRequest { refresh_token: a.refresh_token.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(b.refresh_token, a.refresh_token);
    validate(&mut h, &b.access_token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Past the grace window, the spent token is a theft signal.
    let err =
        h.client.refresh(pb::RefreshRequest { refresh_token: a.refresh_token }).await.unwrap_err();
    assert_eq!(reason(&err), "TOKEN_REVOKED");
    assert!(
        h.client.refresh(pb::RefreshRequest { refresh_token: b.refresh_token }).await.is_err(),
        "the successor dies too"
    );
    assert_eq!(
        reason(&validate(&mut h, &b.access_token).await.unwrap_err()),
        "TOKEN_REVOKED",
        "and its access tokens"
    );
    assert_eq!(reason(&validate(&mut h, &a.access_token).await.unwrap_err()), "TOKEN_REVOKED");
}

async fn a_retry_within_the_grace_window_gets_the_same_pair(kind: Kind) {
    let mut h = harness(kind).await;
    let a = register(&mut h, &email()).await;
    let first = h
        .client
        .refresh(pb::RefreshRequest { refresh_token: a.refresh_token.clone() })
        .await
        .unwrap()
        .into_inner();
    let retry = h
        .client
        .refresh(pb::RefreshRequest { refresh_token: a.refresh_token.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.refresh_token, retry.refresh_token);
    assert_eq!(first.access_token, retry.access_token);
    validate(&mut h, &retry.access_token).await.expect("the session is intact");
}

async fn concurrent_refreshes_yield_one_successor_line(kind: Kind) {
    let mut h = harness(kind).await;
    let a = register(&mut h, &email()).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let mut c = h.client.clone();
            let t = a.refresh_token.clone();
            tokio::spawn(async move { c.refresh(pb::RefreshRequest { refresh_token: t }).await })
        })
        .collect();
    let mut successors = std::collections::HashSet::new();
    for t in tasks {
        if let Ok(r) = t.await.unwrap() {
            successors.insert(r.into_inner().refresh_token);
        }
    }
    assert_eq!(successors.len(), 1, "one successor, shared by every winner");
    let next = successors.into_iter().next().unwrap();
    h.client.refresh(pb::RefreshRequest { refresh_token: next }).await.expect("the line continues");
}

// ---------- brute force ----------

async fn lockout_is_exact_under_fifty_parallel_wrong_passwords(kind: Kind) {
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
    let counted = h.t.infra.cache.incr(&format!("auth:fail:acct:{em}"), 0, None).await.unwrap();
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

fn token_in(body: &str) -> String {
    body.split("token=").nth(1).unwrap().chars().take(43).collect()
}

async fn email_verification_is_single_use(kind: Kind) {
    let mut h = harness(kind).await;
    let em = email();
    let reg = register(&mut h, &em).await;
    let mail =
        h.outbox.read_all().unwrap().into_iter().find(|m| m.to == em).expect("verification email");
    let token = token_in(&mail.body);
    // GetMe keeps the row briefly; a change to the account must not be hidden by that.
    let before =
        h.client.get_me(bearer(pb::GetMeRequest {}, &reg.access_token)).await.unwrap().into_inner();
    assert!(!before.email_verified);
    tokio::time::sleep(Duration::from_millis(5)).await;
    h.client.verify_email(pb::VerifyEmailRequest { token: token.clone() }).await.unwrap();
    assert!(
        validate(&mut h, &reg.access_token).await.unwrap().email_verified,
        "existing tokens see it at once"
    );
    let me =
        h.client.get_me(bearer(pb::GetMeRequest {}, &reg.access_token)).await.unwrap().into_inner();
    assert!(me.email_verified);
    assert_ne!(me.updated_at, before.updated_at, "the row was read again, not served from memory");
    let err = h.client.verify_email(pb::VerifyEmailRequest { token }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("already used"), "{}", err.message());
}

async fn verification_tokens_expire_and_resend_is_throttled(kind: Kind) {
    let mut h =
        start_with(infra(kind).await, AuthConfig { verification_ttl_secs: 1, ..test_config() })
            .await;
    let em = email();
    let reg = register(&mut h, &em).await;
    let token = token_in(&h.outbox.read_all().unwrap()[0].body);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = h.client.verify_email(pb::VerifyEmailRequest { token }).await.unwrap_err();
    assert!(err.message().contains("expired"), "{}", err.message());
    let res = h
        .client
        .resend_verification(bearer(pb::ResendVerificationRequest {}, &reg.access_token))
        .await
        .unwrap();
    assert_eq!(res.metadata().get("x-http-status").unwrap(), "202");
    let err = h
        .client
        .resend_verification(bearer(pb::ResendVerificationRequest {}, &reg.access_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");
    assert_eq!(h.outbox.read_all().unwrap().len(), 2);
}

async fn password_reset_and_change(kind: Kind) {
    let mut h = harness(kind).await;
    let em = email();
    let reg = register(&mut h, &em).await;
    h.client
        .request_password_reset(pb::RequestPasswordResetRequest { email: email() })
        .await
        .expect("unknown email: same answer");
    h.client
        .request_password_reset(pb::RequestPasswordResetRequest { email: em.clone() })
        .await
        .unwrap();
    let mail = h
        .outbox
        .read_all()
        .unwrap()
        .into_iter()
        .find(|m| m.subject.contains("Reset"))
        .expect("reset email");
    let token = token_in(&mail.body);
    let new_pw = "a brand new secret";
    h.client
        .reset_password(pb::ResetPasswordRequest {
            token: token.clone(),
            new_password: new_pw.into(),
        })
        .await
        .unwrap();
    assert!(validate(&mut h, &reg.access_token).await.is_err(), "a reset signs out every session");
    assert!(
        h.client
            .login(pb::LoginRequest {
                email: em.clone(),
                password: PASSWORD.into(),
                ..Default::default()
            })
            .await
            .is_err()
    );
    let s1 = sign_in(&mut h, &em, new_pw).await.unwrap();
    assert!(
        h.client
            .reset_password(pb::ResetPasswordRequest { token, new_password: "another one!".into() })
            .await
            .is_err()
    );

    let s2 = sign_in(&mut h, &em, new_pw).await.unwrap();
    let err = h
        .client
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: "nope nope".into(),
                new_password: "x".repeat(10),
            },
            &s1.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    h.client
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: new_pw.into(),
                new_password: "third secret!".into(),
            },
            &s1.access_token,
        ))
        .await
        .unwrap();
    validate(&mut h, &s1.access_token).await.expect("the session that changed it lives");
    assert!(validate(&mut h, &s2.access_token).await.is_err(), "other sessions are revoked");
}

/// Issue 26.8: 50 bad logins sent straight to auth with `x-forwarded-for: <the edge>` locked
/// the edge's own address. Only the edge's signed assertion names a client address.
async fn a_direct_caller_cannot_choose_the_address_its_failures_count_against(kind: Kind) {
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
fn login_from(
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
    let id = skillup_kit::identity::Identity {
        exp: skillup_kit::identity::now_secs() + 60,
        ip: ip.into(),
        ..Default::default()
    };
    req.metadata_mut().insert("x-skillup-identity", h.key.sign(&id).parse().unwrap());
    req
}

/// Issue 26.9: five wrong passwords from anywhere locked the account for its owner too.
async fn nobody_can_lock_an_owner_out(kind: Kind) {
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

/// The tokens of the reset emails sent to `to` so far.
fn reset_tokens(h: &Harness, to: &str) -> Vec<String> {
    let mails = h.outbox.read_all().unwrap().into_iter();
    mails.filter(|m| m.to == to && m.subject.contains("Reset")).map(|m| token_in(&m.body)).collect()
}

async fn ask_reset(h: &mut Harness, em: &str) -> String {
    let before = reset_tokens(h, em);
    h.client
        .request_password_reset(pb::RequestPasswordResetRequest { email: em.into() })
        .await
        .unwrap();
    let after = reset_tokens(h, em);
    after.into_iter().find(|t| !before.contains(t)).expect("a new reset email")
}

/// Issue 26.6: reset token t1 still worked after t2 was used, and one mailed before a password
/// change worked after it.
async fn outstanding_reset_links_die_with_a_reset_or_a_password_change(kind: Kind) {
    let mut h =
        start_with(infra(kind).await, AuthConfig { resend_interval_secs: 1, ..test_config() })
            .await;
    let em = email();
    register(&mut h, &em).await;
    let t1 = ask_reset(&mut h, &em).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t2 = ask_reset(&mut h, &em).await;
    let reset = |token: &str, pw: &str| pb::ResetPasswordRequest {
        token: token.into(),
        new_password: pw.into(),
    };
    h.client.reset_password(reset(&t2, "second secret!")).await.unwrap();
    let err = h.client.reset_password(reset(&t1, "attacker's pick")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t3 = ask_reset(&mut h, &em).await;
    let s = sign_in(&mut h, &em, "second secret!").await.unwrap();
    h.client
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: "second secret!".into(),
                new_password: "third secret!".into(),
            },
            &s.access_token,
        ))
        .await
        .unwrap();
    let err = h.client.reset_password(reset(&t3, "attacker's pick")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    h.client
        .login(pb::LoginRequest {
            email: em,
            password: "third secret!".into(),
            ..Default::default()
        })
        .await
        .expect("the changed password stands");
}

/// Issue 26.15: the name typed at registration went into the verification email to any
/// address — text of a stranger's choosing, sent by us.
async fn an_unconfirmed_name_stays_out_of_our_mail(kind: Kind) {
    let mut h = harness(kind).await;
    let em = email();
    let name = "Win a prize at evil.example";
    h.client
        .register(pb::RegisterRequest {
            email: em.clone(),
            password: PASSWORD.into(),
            name: name.into(),
        })
        .await
        .unwrap();
    let mail = h.outbox.read_all().unwrap().into_iter().find(|m| m.to == em).unwrap();
    assert!(!mail.body.contains("evil.example"), "{}", mail.body);
    h.client.verify_email(pb::VerifyEmailRequest { token: token_in(&mail.body) }).await.unwrap();
    // Confirmed: the owner chose that name, and is greeted by it.
    let token = ask_reset(&mut h, &em).await;
    let mail = h.outbox.read_all().unwrap().into_iter().find(|m| m.body.contains(&token)).unwrap();
    assert!(mail.body.starts_with(&format!("Hello {name},")), "{}", mail.body);
}

// ---------- keys, tiers, deactivation, fail-closed ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_serves_the_public_key() {
    let mut h = real().await;
    let jwks = h.client.get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner();
    let key = SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let k = &jwks.keys[0];
    assert_eq!((k.kty.as_str(), k.alg.as_str(), k.r#use.as_str()), ("RSA", "RS256", "sig"));
    assert_eq!(
        (k.kid.as_str(), k.n.as_str(), k.e.as_str()),
        (key.kid.as_str(), key.n.as_str(), key.e.as_str())
    );
}

async fn tier_follows_subscription_changed_events(kind: Kind) {
    let mut h = harness(kind).await;
    let reg = register(&mut h, &email()).await;
    let uid = reg.user.unwrap().id;
    let event = skillup_proto::subscribe::v1::SubscriptionChanged {
        user_id: uid.clone(),
        plan: "premium".into(),
        ..Default::default()
    };
    // The consumer may still be binding its queue: publish until it is seen.
    for _ in 0..50 {
        skillup_kit::events::publish(&h.t.infra.bus, &uid, &event).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if validate(&mut h, &reg.access_token).await.unwrap().tier == "premium" {
            return;
        }
    }
    panic!("tier never changed");
}

async fn a_deactivated_account_is_refused(kind: Kind) {
    use sea_orm::{ConnectionTrait, Statement};
    let mut h = harness(kind).await;
    let admin_email = email();
    register(&mut h, &admin_email).await;
    let conn = &h.t.infra.db;
    conn.execute_raw(Statement::from_string(
        conn.get_database_backend(),
        format!("UPDATE auth_users SET scopes = 'user admin' WHERE email = '{admin_email}'"),
    ))
    .await
    .unwrap();
    // A fresh sign-in carries the new scope.
    let admin_tok = sign_in(&mut h, &admin_email, PASSWORD).await.unwrap().access_token;
    let em = email();
    let victim = register(&mut h, &em).await;
    let vid = victim.user.clone().unwrap().id;
    // Not an admin: refused.
    let err = h
        .client
        .set_user_active(bearer(
            pb::SetUserActiveRequest { user_id: vid.clone(), active: false },
            &victim.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    h.client
        .set_user_active(bearer(
            pb::SetUserActiveRequest { user_id: vid.clone(), active: false },
            &admin_tok,
        ))
        .await
        .unwrap();
    let err = validate(&mut h, &victim.access_token).await.unwrap_err();
    assert!(matches!(err.code(), Code::PermissionDenied | Code::Unauthenticated), "{err:?}");
    let err = h
        .client
        .login(pb::LoginRequest {
            email: em.clone(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    h.client
        .set_user_active(bearer(
            pb::SetUserActiveRequest { user_id: vid, active: true },
            &admin_tok,
        ))
        .await
        .unwrap();
    h.client
        .login(pb::LoginRequest { email: em, password: PASSWORD.into(), ..Default::default() })
        .await
        .expect("active again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_token_fails_closed_when_redis_stops() {
    // A Redis of this test's own, so stopping it disturbs nobody else.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let url = format!("redis://127.0.0.1:{port}");
    let mut cache = None;
    for _ in 0..50 {
        if let Ok(c) = skillup_kit::cache::RedisCache::connect(&url, "t:").await {
            cache = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut t = TestInfra::real().await;
    t.infra.cache = Arc::new(cache.expect("own redis started"));
    let mut h = start_with(t, test_config()).await;
    let reg = register(&mut h, &email()).await;
    validate(&mut h, &reg.access_token).await.unwrap();

    redis.kill().unwrap();
    redis.wait().unwrap();
    let err = validate(&mut h, &reg.access_token).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "never valid without Redis: {err:?}");
    assert_eq!(reason(&err), "UNAVAILABLE");
}
