//! Issue 24's attack matrix, against every component as its own `skillup serve` process on the
//! real servers (the way Kubernetes runs them, services holding only the identity assertion's
//! public key): every internal RPC of every contract, called by someone on the network who is
//! anonymous, a component the contract does not name, a component whose certificate has
//! expired, or a rightful caller carrying an assertion it forged or an expired one.

use std::time::Duration;

use skillup_kit::{
    identity::{ASSERTION, Caller, IdentityKey, now_secs},
    mesh::{COMPONENTS, MeshFiles, MeshTls, OPERATOR, Peer, issue::MeshCa},
};
use skillup_testkit as testing;

use super::common::mesh::Mesh;

/// The process serving `path`: its package's component (`/skillup.ai.v1.…` → ai).
fn server_of(path: &str) -> &'static str {
    let package = path.trim_start_matches("/skillup.").split('.').next().unwrap();
    ["auth", "prompt", "payment", "subscribe", "ai", "notification"]
        .into_iter()
        .find(|c| *c == package)
        .unwrap_or_else(|| panic!("no component serves {path}"))
}

/// Calls `path` with an empty message and `assertion`, expecting a refusal.
async fn call(
    channel: tonic::transport::Channel,
    path: &'static str,
    assertion: Option<&str>,
) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(());
    if let Some(a) = assertion {
        req.metadata_mut().insert(ASSERTION, a.parse().unwrap());
    }
    grpc.unary::<(), (), _>(
        req,
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<(), ()>::default(),
    )
    .await
    .expect_err("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn every_internal_rpc_of_separate_processes_refuses_each_attack() {
    let mesh = Mesh::start(&[]).await;
    let keys = mesh.dir.join("keys");
    let ca = MeshCa::load(&keys.join("mesh")).unwrap();
    ca.issue(&Peer::operator("matrix"), &[], Duration::from_secs(600))
        .unwrap()
        .write(&keys.join("mesh"), "matrix")
        .unwrap();
    let tls = |who: &str| {
        let name = if who == OPERATOR { "matrix" } else { who };
        Some(MeshTls::load(MeshFiles::in_dir(&keys.join("mesh"), name)).unwrap())
    };
    // What a compromised pod could sign with: not the edge's key (it holds only the public
    // half), so any other key.
    let forger = IdentityKey::random();
    let genuine = IdentityKey::load(&keys.join("identity.key"), false).unwrap();
    let user = |exp| Caller {
        user_id: uuid::Uuid::now_v7().to_string(),
        scopes: vec!["user".into(), "admin".into()],
        exp,
        ..Default::default()
    };
    let forged = forger.sign(&user(now_secs() + 60));
    let expired = genuine.sign(&user(now_secs() - 1));
    let everyone: Vec<&str> = COMPONENTS.iter().copied().chain([OPERATOR]).collect();
    let mut checked = 0;
    for (path, allowed) in skillup_proto::callers::CALLERS {
        if path.starts_with("/skillup.testing.") {
            continue;
        }
        let addr = mesh.grpc(server_of(path));
        let err = call(testing::channel_with(&addr, None), path, None).await;
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{path} anonymous: {err:?}");
        let wrong = everyone.iter().find(|c| !allowed.contains(c)).unwrap();
        let err = call(testing::channel_with(&addr, tls(wrong)), path, None).await;
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{path} as {wrong}: {err:?}");
        // A rightful caller with an identity the edge did not sign, or signed long ago.
        let rightful = testing::channel_with(&addr, tls(allowed[0]));
        let err = call(rightful.clone(), path, Some(&forged)).await;
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{path} forged: {err:?}");
        assert!(err.message().contains("signature"), "{path}: {err:?}");
        let err = call(rightful, path, Some(&expired)).await;
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{path} expired: {err:?}");
        assert!(err.message().contains("expired"), "{path}: {err:?}");
        checked += 1;
    }
    assert!(checked > 60, "every internal RPC: {checked}");

    // A certificate of the mesh's own CA that has expired gets no further than the handshake,
    // at every service; a valid one of the same component reaches the service.
    ca.issue(&Peer::component("subscribe"), &[], Duration::ZERO)
        .unwrap()
        .write(&keys.join("mesh"), "expired")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let stale = MeshTls::load(MeshFiles::in_dir(&keys.join("mesh"), "expired")).unwrap();
    for component in ["auth", "prompt", "payment", "subscribe", "ai", "notification"] {
        let path = skillup_proto::callers::CALLERS
            .iter()
            .map(|(p, _)| *p)
            .find(|p| server_of(p) == component)
            .unwrap();
        let channel = testing::channel_with(&mesh.grpc(component), Some(stale.clone()));
        let err = call(channel, path, None).await;
        assert!(std::error::Error::source(&err).is_some(), "{component} expired cert: {err:?}");
    }
    let charge = "/skillup.payment.v1.PaymentService/Charge";
    let answered =
        call(testing::channel_with(&mesh.grpc("payment"), tls("subscribe")), charge, None).await;
    assert!(std::error::Error::source(&answered).is_none(), "{answered:?}");
    assert_eq!(answered.code(), tonic::Code::InvalidArgument, "{answered:?}");
    // And the genuine assertion of the same caller gets past the identity check too.
    let genuine_now = genuine.sign(&user(now_secs() + 60));
    let answered = call(
        testing::channel_with(&mesh.grpc("payment"), tls("subscribe")),
        charge,
        Some(&genuine_now),
    )
    .await;
    assert_eq!(answered.code(), tonic::Code::InvalidArgument, "{answered:?}");
}
