//! The server side: every RPC admitted by its assertion before any service code reads who
//! calls.

use super::*;

/// The server side of the assertion: see the module docs. Without a key nothing can be
/// verified, so every identity header is dropped and every assertion refused (fail closed).
#[derive(Clone, Debug, Default)]
pub struct IdentityLayer {
    key: Option<Arc<IdentityVerifier>>,
}

impl IdentityLayer {
    pub fn new(key: Option<Arc<IdentityVerifier>>) -> Self {
        Self { key }
    }
}

impl<S> Layer<S> for IdentityLayer {
    type Service = IdentityService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        IdentityService { inner, key: self.key.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct IdentityService<S> {
    inner: S,
    key: Option<Arc<IdentityVerifier>>,
}

type BoxFut<T, E> = Pin<Box<dyn std::future::Future<Output = std::result::Result<T, E>> + Send>>;

impl<S> Service<Request<Body>> for IdentityService<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFut<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let admitted =
            admit(self.key.as_deref(), &mut parts.headers, &mut parts.extensions, parts.uri.path());
        match admitted {
            Ok(()) => {
                let locale = crate::i18n::Locale::of_parts(&parts.headers, &parts.extensions);
                let call = self.inner.call(Request::from_parts(parts, body));
                Box::pin(crate::i18n::scope(locale, call))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

/// What [`IdentityLayer`] does to a call (and what an in-process direct call does too):
/// first the calling component — proven by its mesh certificate, or tagged by its in-process
/// channel — is checked against the contract's callers ([`crate::mesh::authorize`]) and put
/// in `extensions` as a [`crate::mesh::Peer`]; then every identity header is dropped and,
/// with a valid assertion, put back from its claims, the [`Caller`] added to `extensions`; a
/// bad or expired assertion is UNAUTHENTICATED.
pub fn admit(
    key: Option<&IdentityVerifier>,
    headers: &mut http::HeaderMap,
    extensions: &mut http::Extensions,
    path: &str,
) -> std::result::Result<(), tonic::Status> {
    use crate::mesh::{MeshConnectInfo, Peer};
    // In-process: the channel's tag. Over the network: the certificate the handshake proved
    // (a request arriving on a connection carries no other extensions).
    if extensions.get::<Peer>().is_none()
        && let Some(peer) = extensions.get::<MeshConnectInfo>().and_then(|i| i.peer.clone())
    {
        extensions.insert(peer);
    }
    if let Err(status) = crate::mesh::authorize(path, extensions.get::<Peer>()) {
        // A component calling what its contract does not allow is a misconfiguration or a
        // compromise: worth a warning. Anonymous callers are noise anyone can make (counted in
        // the RPC metrics); a warning each would let them flood the logs.
        match extensions.get::<Peer>() {
            Some(peer) => tracing::warn!(%path, caller = %peer.label(), "call refused by the mesh"),
            None => tracing::debug!(%path, "anonymous call refused by the mesh"),
        }
        return Err(status);
    }
    let [user_id, scopes, tier, email_verified, assertion_name] = IDENTITY_HEADERS;
    let assertion = headers.remove(&assertion_name);
    for h in [&user_id, &scopes, &tier, &email_verified] {
        headers.remove(h);
    }
    let Some(assertion) = assertion else { return Ok(()) };
    let verified = match (key, assertion.to_str()) {
        (Some(key), Ok(text)) => key.verify(text, now_secs()),
        _ => Err(AssertionError::BadSignature),
    };
    match verified {
        Ok(id) => {
            if !id.ip.is_empty() {
                extensions.insert(ClientAddr(id.ip.clone()));
            }
            // The language to answer in, for anonymous callers too.
            if let Some(l) = crate::i18n::Locale::parse(&id.locale) {
                extensions.insert(l);
            }
            // An anonymous assertion (a public route) vouches for the address only.
            if id.user_id.is_empty() {
                return Ok(());
            }
            let mut put = |k: http::HeaderName, v: &str| {
                if let Ok(v) = HeaderValue::from_str(v) {
                    headers.insert(k, v);
                }
            };
            put(user_id, &id.user_id);
            put(scopes, &id.scopes.join(" "));
            put(tier, &id.tier);
            headers.insert(
                email_verified,
                HeaderValue::from_static(if id.email_verified { "true" } else { "false" }),
            );
            // The assertion goes on as it came (services forward it on their own calls).
            headers.insert(assertion_name, assertion);
            extensions.insert(id);
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, %path, "identity assertion refused");
            Err(crate::error::status(
                skillup_proto::common::v1::ErrorCode::Unauthenticated,
                e.to_string(),
            ))
        }
    }
}
