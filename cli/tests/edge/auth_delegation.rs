//! Auth delegation: tokens and scopes, identity assertions, a pod calling a service directly,
//! auth unreachable, Nginx's auth_request.

use super::*;

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
        assert!(md.iter().any(|m| m.starts_with("x-skillup-identity=v3.")), "{md:?}");
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
