//! The messages of the events auth publishes (the catalogue in `skillup_proto::events` names
//! them), built from its rows; the gRPC adapter shows a user the same way.

use skillup_kit::db::timestamp as ts;
use skillup_proto::auth::v1 as pb;

use crate::store::entities::user;

/// A user as the contracts show one.
pub(crate) fn user_pb(u: &user::Model) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        email: u.email.clone(),
        name: u.name.clone(),
        email_verified: u.email_verified,
        tier: u.tier.clone(),
        scopes: u.scopes.split_whitespace().map(str::to_owned).collect(),
        is_active: u.is_active,
        created_at: Some(ts(u.created_at)),
        updated_at: Some(ts(u.updated_at)),
    }
}

/// `user.registered`.
pub(crate) fn registered(u: &user::Model) -> pb::UserRegistered {
    pb::UserRegistered { user: Some(user_pb(u)) }
}
