//! Stage 1: what every request pays before anything is looked up — bounded headers, the
//! client's address (from a trusted proxy's headers or the peer), and the per-IP budget.

use std::net::IpAddr;

use http::request::Parts;

use super::peer;
use crate::{Inner, errors::ApiError, limits::Verdict, net};

pub(super) async fn admit(
    inner: &Inner,
    parts: &Parts,
) -> Result<(IpAddr, Option<Verdict>), ApiError> {
    let header_bytes: usize =
        parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > inner.cfg.max_header_bytes {
        return Err(ApiError::new(431, "PAYLOAD_TOO_LARGE", "the request headers are too large"));
    }
    let client = net::client_ip(peer(parts), &parts.headers, &inner.trusted);
    // Unknown paths and methods spend it too, so they cannot be sent faster than real ones.
    let verdict = inner.limits.check_ip(client).await?;
    Ok((client, verdict))
}
