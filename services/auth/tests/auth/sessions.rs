//! Sessions and tokens: logout, revocation, refresh rotation, validation, tiers, JWKS.

use super::*;

pub(crate) async fn logout_blacklists_at_once_and_ends_the_session(kind: Kind) {
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

pub(crate) async fn log_out_everywhere(kind: Kind) {
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

pub(crate) async fn revoke_one_session(kind: Kind) {
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

pub(crate) async fn rotation_reuse_revokes_the_family(kind: Kind) {
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

pub(crate) async fn a_retry_within_the_grace_window_gets_the_same_pair(kind: Kind) {
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

pub(crate) async fn concurrent_refreshes_yield_one_successor_line(kind: Kind) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn jwks_serves_the_public_key() {
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

pub(crate) async fn tier_follows_subscription_changed_events(kind: Kind) {
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

pub(crate) async fn a_deactivated_account_is_refused(kind: Kind) {
    let mut h = harness(kind).await;
    let admin_email = email();
    register(&mut h, &admin_email).await;
    let admin_tok = make_admin(&mut h, &admin_email).await;
    let em = email();
    let victim = register(&mut h, &em).await;
    let vid = victim.user.clone().unwrap().id;
    // Not an admin: refused.
    let err = h
        .client
        .set_user_active(bearer(
            pb::SetUserActiveRequest { user_id: vid.clone(), active: false, ..Default::default() },
            &victim.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    h.client
        .set_user_active(bearer(
            pb::SetUserActiveRequest { user_id: vid.clone(), active: false, ..Default::default() },
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
            pb::SetUserActiveRequest { user_id: vid, active: true, ..Default::default() },
            &admin_tok,
        ))
        .await
        .unwrap();
    h.client
        .login(pb::LoginRequest { email: em, password: PASSWORD.into(), ..Default::default() })
        .await
        .expect("active again");
}

/// A child process killed when this is dropped (a failed assertion leaves no server behind).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Redis server of the test's own (so it can be flushed disturbing nobody), and a cache on
/// it; the server stops when the first value is dropped.
async fn own_redis() -> (Killed, u16, skillup_kit::cache::RedisCache) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let redis = Killed(
        std::process::Command::new("redis-server")
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
            .expect("redis-server on PATH"),
    );
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..50 {
        if let Ok(c) = skillup_kit::cache::RedisCache::connect(&url, "t:").await {
            return (redis, port, c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("own redis did not start");
}

/// Issue 24: logout, session revocation and deactivation are marks in Redis; a Redis that
/// loses its data (FLUSHALL here) must not bring a signed-out session or a deactivated
/// account back. PostgreSQL answers until the marks are back, and then they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn revocations_survive_a_flushed_cache() {
    let (_redis, port, cache) = own_redis().await;
    let mut t = TestInfra::real().await;
    t.infra.cache = Arc::new(cache);
    let mut h = start_with(t, test_config()).await;
    let admin_email = email();
    register(&mut h, &admin_email).await;
    let admin = make_admin(&mut h, &admin_email).await;
    let gone = register(&mut h, &email()).await;
    h.client
        .logout(bearer(pb::LogoutRequest { refresh_token: String::new() }, &gone.access_token))
        .await
        .unwrap();
    let off = register(&mut h, &email()).await;
    let off_id = off.user.clone().unwrap().id;
    h.client
        .set_user_active(bearer(
            pb::SetUserActiveRequest {
                user_id: off_id.clone(),
                active: false,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap();
    let fine = register(&mut h, &email()).await;
    assert_eq!(reason(&validate(&mut h, &gone.access_token).await.unwrap_err()), "TOKEN_REVOKED");
    let flushed = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "FLUSHALL"])
        .output()
        .expect("redis-cli on PATH");
    assert!(flushed.status.success());
    assert!(h.t.infra.cache.get(skillup_kit::identity::CACHE_EPOCH_KEY).await.unwrap().is_none());

    // Both still refused, the others still fine — and nothing in between.
    let err = validate(&mut h, &gone.access_token).await.unwrap_err();
    assert_eq!(reason(&err), "TOKEN_REVOKED", "{err:?}");
    let refused =
        |e: &tonic::Status| matches!(e.code(), Code::PermissionDenied | Code::Unauthenticated);
    let err = validate(&mut h, &off.access_token).await.unwrap_err();
    assert!(refused(&err), "{err:?}");
    validate(&mut h, &fine.access_token).await.expect("an untouched session still works");
    // The marks are back (so the next answers are the cache's again), the sentinel last.
    let c = &h.t.infra.cache;
    assert!(c.get(skillup_kit::identity::CACHE_EPOCH_KEY).await.unwrap().is_some());
    assert!(c.get(&format!("auth:off:{off_id}")).await.unwrap().is_some());
    let stamp = format!("{}{off_id}", skillup_kit::identity::VERSION_KEY_PREFIX);
    assert!(c.get(&stamp).await.unwrap().is_some(), "edges drop what they cached of it");
    let err = validate(&mut h, &off.access_token).await.unwrap_err();
    assert!(refused(&err), "{err:?}");
    assert_eq!(reason(&validate(&mut h, &gone.access_token).await.unwrap_err()), "TOKEN_REVOKED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn validate_token_fails_closed_when_redis_stops() {
    // A Redis of this test's own, so stopping it disturbs nobody else.
    let (mut redis, _, cache) = own_redis().await;
    let mut t = TestInfra::real().await;
    t.infra.cache = Arc::new(cache);
    let mut h = start_with(t, test_config()).await;
    let reg = register(&mut h, &email()).await;
    validate(&mut h, &reg.access_token).await.unwrap();

    redis.0.kill().unwrap();
    redis.0.wait().unwrap();
    let err = validate(&mut h, &reg.access_token).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "never valid without Redis: {err:?}");
    assert_eq!(reason(&err), "UNAVAILABLE");
}
