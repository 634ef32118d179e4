//! Who calls, component by component. Every component proves its identity on every call:
//! across processes by mutual TLS — a certificate of the mesh CA naming it in a SAN URI,
//! `spiffe://skillup/<component>` (operators: `spiffe://skillup/operator/<name>`); inside one
//! process (`skillup up`) by the tag the calling component's channel puts on the request. The
//! server layer then checks the caller against the RPC's `skillup.common.v1.callers` option
//! before the service runs ([`authorize`]): no identity is UNAUTHENTICATED, a component the
//! contract does not name is PERMISSION_DENIED. Health and reflection answer anyone (probes
//! and `grpcurl list`).
//!
//! The listener takes plain HTTP/2 and TLS on the same port (the first byte tells them
//! apart): a plaintext caller is anonymous, so it gets a gRPC status saying so rather than a
//! failed handshake, and Kubernetes' gRPC probes (which speak no TLS) still reach health.

use tonic::Status;

pub mod issue;
mod tls;
mod transport;

pub use self::{
    tls::{MeshFiles, MeshTls},
    transport::{MeshClientIo, MeshConnector, MeshIncoming, MeshIo, MeshStream},
};

/// The trust domain of every SPIFFE id the mesh issues.
pub const TRUST_DOMAIN: &str = "skillup";

/// The identity of a person at the controls (`skillup keys issue operator --name …`).
pub const OPERATOR: &str = "operator";

/// Every component that can hold a mesh certificate of its own.
pub const COMPONENTS: [&str; 8] =
    ["edge", "auth", "prompt", "subscribe", "payment", "ai", "worker", "notification"];

/// A verified caller inside the mesh: the component (or `operator` and the operator's name).
/// The server layer puts it in the request's extensions once it is proven — a copy per call,
/// so its parts are shared (`Arc<str>`), not allocated again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// `edge`, `ai`, … or [`OPERATOR`].
    pub component: std::sync::Arc<str>,
    /// The operator's name; empty for a component.
    pub name: std::sync::Arc<str>,
}

impl Peer {
    /// A component's identity.
    pub fn component(component: &str) -> Self {
        Self { component: component.into(), name: "".into() }
    }

    /// An operator's identity.
    pub fn operator(name: &str) -> Self {
        Self { component: OPERATOR.into(), name: name.into() }
    }

    /// `spiffe://skillup/<component>` (`…/operator/<name>`).
    pub fn spiffe_id(&self) -> String {
        if self.name.is_empty() {
            format!("spiffe://{TRUST_DOMAIN}/{}", self.component)
        } else {
            format!("spiffe://{TRUST_DOMAIN}/{}/{}", self.component, self.name)
        }
    }

    /// The peer a SPIFFE id names, when it is one of this mesh's: a known component, or an
    /// operator with a name.
    pub fn from_spiffe_id(uri: &str) -> Option<Self> {
        let path = uri.strip_prefix("spiffe://")?.strip_prefix(TRUST_DOMAIN)?.strip_prefix('/')?;
        let mut parts = path.split('/');
        let component = parts.next()?;
        let peer = match (component, parts.next(), parts.next()) {
            (OPERATOR, Some(name), None) if valid_name(name) => Self::operator(name),
            (c, None, None) if COMPONENTS.contains(&c) => Self::component(c),
            _ => return None,
        };
        Some(peer)
    }

    /// For logs: `payment`, `operator/alice`.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            self.component.to_string()
        } else {
            format!("{}/{}", self.component, self.name)
        }
    }
}

/// An operator's name: 1–64 of `a-z 0-9 . _ -`, so it fits a SPIFFE path segment as it is.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b))
}

/// What the listener learnt of a connection; tonic puts it in every request's extensions.
#[derive(Debug, Clone)]
pub struct MeshConnectInfo {
    /// The peer's socket address.
    pub remote: Option<std::net::SocketAddr>,
    /// Who the peer's certificate names (`None`: plaintext, or TLS without a certificate).
    pub peer: Option<Peer>,
}

impl tonic::transport::server::Connected for MeshIo {
    type ConnectInfo = MeshConnectInfo;

    fn connect_info(&self) -> MeshConnectInfo {
        self.info().clone()
    }
}

/// A channel to `addr` (`host:port`) calling as `component`, with its certificate from `dir`
/// (a deployment's `<keys dir>/mesh`, as `skillup keys init` wrote it); `None` calls as nobody.
/// Connected on first use. For tools that call services directly (load generators, tests).
pub fn channel_in(
    dir: Option<&std::path::Path>,
    addr: &str,
    component: &str,
) -> crate::Result<tonic::transport::Channel> {
    crate::install_crypto_provider();
    let tls = match dir {
        Some(dir) => Some(MeshTls::load(MeshFiles::in_dir(dir, component))?),
        None => None,
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| crate::Error::Config(format!("{addr}: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true);
    Ok(endpoint.connect_with_connector_lazy(MeshConnector::new(tls)))
}

/// Services every caller may use, identity or not: health (probes) and reflection (listing).
fn open_to_anyone(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Whether `peer` may call the RPC at `path`, by the contract's `skillup.common.v1.callers`.
/// A path no contract declares needs an identity too, and then goes on (to UNIMPLEMENTED).
#[allow(clippy::result_large_err)]
pub fn authorize(path: &str, peer: Option<&Peer>) -> Result<(), Status> {
    use skillup_proto::common::v1::ErrorCode;
    if open_to_anyone(path) {
        return Ok(());
    }
    let Some(peer) = peer else {
        return Err(crate::error::status(
            ErrorCode::Unauthenticated,
            "this RPC answers only to components of the mesh: call with a mesh certificate \
             (mutual TLS; `skillup keys issue`)",
        ));
    };
    match skillup_proto::callers::of(path) {
        Some(allowed) if !allowed.contains(&&*peer.component) => Err(crate::error::status(
            ErrorCode::PermissionDenied,
            format!("{} may not call {path} (it answers to {})", peer.label(), allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_name_components_and_operators_and_nothing_else() {
        for c in COMPONENTS {
            let p = Peer::component(c);
            assert_eq!(Peer::from_spiffe_id(&p.spiffe_id()), Some(p));
        }
        let alice = Peer::operator("alice");
        assert_eq!(alice.spiffe_id(), "spiffe://skillup/operator/alice");
        assert_eq!(Peer::from_spiffe_id("spiffe://skillup/operator/alice"), Some(alice));
        for bad in [
            "spiffe://skillup/operator",
            "spiffe://skillup/operator/",
            "spiffe://skillup/operator/Alice",
            "spiffe://skillup/operator/a/b",
            "spiffe://skillup/billing",
            "spiffe://skillup/payment/x",
            "spiffe://other/payment",
            "spiffe://skillupx/payment",
            "https://skillup/payment",
            "",
        ] {
            assert_eq!(Peer::from_spiffe_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_contract_decides_who_calls() {
        let charge = skillup_proto::callers::CALLERS
            .iter()
            .map(|(p, _)| *p)
            .find(|p| p.ends_with("PaymentService/Charge"))
            .unwrap();
        let code = |r: Result<(), Status>| r.err().map(|s| s.code());
        assert_eq!(code(authorize(charge, None)), Some(tonic::Code::Unauthenticated));
        assert_eq!(
            code(authorize(charge, Some(&Peer::component("edge")))),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            code(authorize(charge, Some(&Peer::operator("alice")))),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(code(authorize(charge, Some(&Peer::component("subscribe")))), None);
        let health = "/grpc.health.v1.Health/Check";
        assert_eq!(code(authorize(health, None)), None, "probes need no identity");
        let list = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert_eq!(code(authorize(list, None)), None, "listing needs no identity");
        let nothing = "/skillup.nothing.v1.Nothing/Call";
        assert_eq!(code(authorize(nothing, None)), Some(tonic::Code::Unauthenticated));
        assert_eq!(code(authorize(nothing, Some(&Peer::component("edge")))), None);
    }

    #[test]
    fn every_rpc_of_every_contract_names_known_callers() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(skillup_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut rpcs = 0;
        for file in set.file.iter().filter(|f| f.package().starts_with("skillup.")) {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    let allowed = skillup_proto::callers::of(&path)
                        .unwrap_or_else(|| panic!("{path} states no callers"));
                    assert!(!allowed.is_empty(), "{path}");
                    for c in allowed {
                        assert!(
                            COMPONENTS.contains(c) || *c == OPERATOR,
                            "{path} names an unknown caller {c}"
                        );
                    }
                    rpcs += 1;
                }
            }
        }
        assert!(rpcs > 60, "{rpcs} RPCs");
        // (That an RPC with an HTTP route names the edge, the build checks: build.rs.)
    }
}
