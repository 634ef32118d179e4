//! Brute-force limits: exact under parallel attempts, keyed by what a caller cannot choose,
//! and never a way to lock an owner out.

use super::*;

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
