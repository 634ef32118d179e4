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

/// The audit entry of an administrator's change to an account (see `skillup_kit::audit`).
pub(crate) fn audit(
    actor: &skillup_kit::audit::Actor,
    action: &str,
    target: (&str, &str),
    before: &impl serde::Serialize,
    after: &impl serde::Serialize,
    why: &str,
) -> skillup_proto::common::v1::AuditEntry {
    actor.entry("auth", action, target, Some(before), Some(after), why)
}

/// An `audit.recorded` event as the audit log's row (`None`: not an entry anyone could have
/// written — its ids are not UUIDs).
pub(crate) fn audit_row(
    e: skillup_proto::common::v1::AuditEntry,
) -> Option<crate::store::entities::audit_entry::Model> {
    let id = Uuid::parse_str(&e.id).ok()?;
    let actor_id = match e.actor_id.as_str() {
        "" => None,
        a => Some(Uuid::parse_str(a).ok()?),
    };
    let occurred_at = e
        .occurred_at
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .unwrap_or_else(Utc::now);
    Some(crate::store::entities::audit_entry::Model {
        id,
        occurred_at,
        actor_id,
        actor: e.actor,
        action: e.action,
        target_type: e.target_type,
        target_id: e.target_id,
        before: e.before,
        after: e.after,
        reason: e.reason,
        request_id: e.request_id,
        client_ip: e.client_ip,
        component: e.component,
    })
}
