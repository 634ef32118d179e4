//! The events auth publishes (the catalogue in `skillup_proto::events` names them), built from
//! its rows; the gRPC adapter shows a user the same way. `user.registered`, `user.updated` and
//! `user.logged_in` go through the outbox with the row they report; the others are published best-effort after the change.

use chrono::{DateTime, Utc};
use skillup_kit::db::timestamp as ts;
use skillup_proto::{auth::v1 as pb, events::Event};
use uuid::Uuid;

use crate::{
    auth::Auth,
    store::{accounts::Client, entities::user},
};

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
        locale: u.locale.clone(),
        time_zone: u.time_zone.clone(),
    }
}

/// `user.deleted`.
pub(crate) fn deleted(user_id: Uuid) -> pb::UserDeleted {
    pb::UserDeleted { user_id: user_id.to_string() }
}

/// `user.updated`.
pub(crate) fn updated(u: &user::Model) -> pb::UserUpdated {
    pb::UserUpdated { user: Some(user_pb(u)) }
}

/// `user.registered`.
pub(crate) fn registered(u: &user::Model) -> pb::UserRegistered {
    pb::UserRegistered { user: Some(user_pb(u)) }
}

/// `user.logged_in`, with the client as stored on the session.
pub(crate) fn logged_in(user_id: Uuid, session: Uuid, client: Client<'_>) -> pb::UserLoggedIn {
    pb::UserLoggedIn {
        user_id: user_id.to_string(),
        session_id: session.to_string(),
        ip: client.ip.to_owned(),
        user_agent: client.user_agent.to_owned(),
    }
}

impl Auth {
    async fn emit<E: Event>(&self, user_id: &Uuid, msg: &E) {
        if let Err(e) = skillup_kit::events::publish(&self.bus, &user_id.to_string(), msg).await {
            tracing::warn!(event = E::KIND, error = %e, "event not published");
        }
    }

    /// `user.email_verified`.
    pub(crate) async fn emit_email_verified(&self, user_id: Uuid) {
        self.emit(&user_id, &pb::EmailVerified { user_id: user_id.to_string() }).await;
    }

    /// `user.password_changed`.
    pub(crate) async fn emit_password_changed(&self, user_id: Uuid, via_reset: bool) {
        let msg = pb::PasswordChanged { user_id: user_id.to_string(), via_reset };
        self.emit(&user_id, &msg).await;
    }

    /// `tokens.revoked`: these token ids, or every token issued before a time.
    pub(crate) async fn emit_revoked(
        &self,
        user_id: Uuid,
        jtis: Vec<String>,
        before: Option<DateTime<Utc>>,
    ) {
        let msg =
            pb::TokensRevoked { jtis, user_id: user_id.to_string(), issued_before: before.map(ts) };
        self.emit(&user_id, &msg).await;
    }
}
