//! Stages 3 and 4b: the network policy (internal routes only from `edge.internal_cidrs`) and
//! the budgets past the per-IP one — the sign-in family's before authentication, generation's
//! after it (by the caller's plan, or the client's address on a public route).

use skillup_proto::common::v1::RateClass;

use super::Call;
use crate::{Inner, errors::ApiError, net};

pub(super) fn network_policy(inner: &Inner, call: &Call) -> Result<(), ApiError> {
    if call.route.rpc.rule.internal && !net::contains(&inner.internal, call.client) {
        return Err(ApiError::new(403, "PERMISSION_DENIED", "this route is internal"));
    }
    Ok(())
}

pub(super) async fn before_authentication(inner: &Inner, call: &mut Call) -> Result<(), ApiError> {
    if call.route.rpc.rule.rate_class == RateClass::Auth {
        let v = inner.limits.check_auth(call.client).await?;
        call.spend(v);
    }
    Ok(())
}

pub(super) async fn after_authentication(inner: &Inner, call: &mut Call) -> Result<(), ApiError> {
    if call.route.rpc.rule.rate_class == RateClass::Generate {
        let v = match &call.decision {
            Some(d) => inner.limits.check_generate(&d.caller.tier, &d.caller.user_id).await,
            None => inner.limits.check_generate("free", &call.client.to_string()).await,
        }?;
        call.spend(v);
    }
    Ok(())
}
