//! Who did what as an administrator, for the append-only audit log. An admin call is made by
//! a person signed in to an account holding the `admin` scope (through the edge), by an
//! operator with an assertion of the scope (`skillup admin assertion`, over an operator's mesh
//! certificate from `skillup keys issue operator`), or by `skillup admin` on a machine with
//! the database; [`Actor`] is that someone.
//! The service that makes the change builds an [`AuditEntry`] with [`Actor::entry`] and stores
//! it in its outbox in the change's own transaction, so there is no change without its entry
//! and no entry without its change; auth keeps the log (event `audit.recorded`).

use serde::Serialize;
use skillup_proto::common::v1::{AuditEntry, ErrorCode};

use crate::{
    identity::{Caller, ClientAddr},
    mesh::{OPERATOR, Peer},
};

/// The scope an administrator's account holds.
pub const ADMIN_SCOPE: &str = "admin";

/// Longest reason an operator may give, characters.
pub const MAX_REASON: usize = 500;

/// Longest `before` / `after` state kept, bytes of JSON.
pub const MAX_STATE: usize = 16 * 1024;

/// Who is acting as an administrator.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Actor {
    /// The admin's account id; empty for an operator certificate or the CLI.
    pub id: String,
    /// Readable: empty for an account (auth fills in the email), `operator:<name>`,
    /// `cli:<login>`.
    pub label: String,
    /// The request id of the call.
    pub request_id: String,
    /// The client's address.
    pub ip: String,
}

impl Actor {
    /// The administrator making `req`: its caller (the identity the edge asserted, or one
    /// `skillup admin assertion` signed) must hold the admin scope as a person signed in — an
    /// API key never acts as an administrator, whatever its account may do. An operator's
    /// certificate names who acted when the caller is no account. No caller is UNAUTHENTICATED,
    /// any other PERMISSION_DENIED.
    pub fn admin<T>(req: &tonic::Request<T>) -> Result<Actor, tonic::Status> {
        let caller = Caller::of(req).ok_or_else(|| {
            crate::error::status(ErrorCode::Unauthenticated, said("admin-required"))
        })?;
        Self::of_caller(req, caller)
    }

    /// [`Actor::admin`] for a caller the service validated itself (a bearer token).
    pub fn of_caller<T>(req: &tonic::Request<T>, c: &Caller) -> Result<Actor, tonic::Status> {
        if !c.api_key.is_empty() || !c.has_scope(ADMIN_SCOPE) {
            return Err(forbidden());
        }
        let request_id = if c.request_id.is_empty() {
            req.metadata()
                .get(crate::identity::REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        } else {
            c.request_id.clone()
        };
        let ip = if c.ip.is_empty() { ClientAddr::of(req) } else { c.ip.clone() };
        if c.user().is_some() {
            return Ok(Actor { id: c.user_id.clone(), label: String::new(), request_id, ip });
        }
        // `skillup admin assertion --subject <name>`: not an account.
        let label = match req.extensions().get::<Peer>() {
            Some(p) if &*p.component == OPERATOR => format!("operator:{}", p.name),
            _ => format!("assertion:{}", c.user_id),
        };
        Ok(Actor { id: String::new(), label, request_id, ip })
    }

    /// `skillup admin …` run by `login` on a machine with the database.
    pub fn cli(login: &str) -> Actor {
        Actor { label: format!("cli:{login}"), ..Default::default() }
    }

    /// The platform itself, for a change a rule makes (`system:<rule>`).
    pub fn system(rule: &str) -> Actor {
        Actor { label: format!("system:{rule}"), ..Default::default() }
    }

    /// The audit entry of this actor's change, made by `component` now. `before` and `after`
    /// are the target's states (anything serialisable as a JSON object; `None` is `{}`), cut
    /// to [`MAX_STATE`]; `reason` as given (validate it with [`reason`] first).
    pub fn entry(
        &self,
        component: &str,
        action: &str,
        target: (&str, &str),
        before: Option<&impl Serialize>,
        after: Option<&impl Serialize>,
        reason: &str,
    ) -> AuditEntry {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        AuditEntry {
            id: uuid::Uuid::now_v7().to_string(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: now.as_secs() as i64,
                nanos: now.subsec_nanos() as i32,
            }),
            actor_id: self.id.clone(),
            actor: self.label.clone(),
            action: action.to_owned(),
            target_type: target.0.to_owned(),
            target_id: target.1.to_owned(),
            before: state(before),
            after: state(after),
            reason: reason.to_owned(),
            request_id: self.request_id.clone(),
            client_ip: self.ip.clone(),
            component: component.to_owned(),
        }
    }
}

fn state(value: Option<&impl Serialize>) -> String {
    let text = value
        .and_then(|v| serde_json::to_string(v).ok())
        .filter(|t| t.starts_with('{'))
        .unwrap_or_else(|| "{}".to_owned());
    if text.len() <= MAX_STATE {
        text
    } else {
        serde_json::json!({ "truncated": true, "bytes": text.len() }).to_string()
    }
}

/// A reason as given: trimmed, at most [`MAX_REASON`] characters of one line; `required`
/// refuses an empty one. The error is the sentence for field `reason`.
pub fn reason(text: &str, required: bool) -> Result<String, String> {
    let t = text.trim();
    if required && t.is_empty() {
        return Err(crate::invalid::required("reason"));
    }
    if t.chars().count() > MAX_REASON {
        return Err(crate::invalid::at_most_chars("reason", MAX_REASON));
    }
    if t.chars().any(char::is_control) {
        return Err(crate::invalid::control("reason"));
    }
    Ok(t.to_owned())
}

/// PERMISSION_DENIED: the caller is no administrator.
pub fn forbidden() -> tonic::Status {
    crate::error::status(ErrorCode::PermissionDenied, said("admin-required"))
}

fn said(key: &str) -> String {
    crate::invalid::MESSAGES.text(crate::i18n::current(), key, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(caller: Option<Caller>, peer: Option<Peer>) -> tonic::Request<()> {
        let mut req = tonic::Request::new(());
        req.metadata_mut().insert(crate::identity::REQUEST_ID, "r-1".parse().unwrap());
        if let Some(c) = caller {
            req.extensions_mut().insert(c);
        }
        if let Some(p) = peer {
            req.extensions_mut().insert(p);
        }
        req
    }

    #[test]
    fn an_admin_signed_in_may_act_and_nobody_else() {
        let admin = Caller {
            user_id: uuid::Uuid::now_v7().to_string(),
            scopes: vec!["user".into(), "admin".into()],
            request_id: "r-9".into(),
            ip: "203.0.113.5".into(),
            ..Default::default()
        };
        let req = request(Some(admin.clone()), Some(Peer::component("edge")));
        let actor = Actor::admin(&req).unwrap();
        assert_eq!((actor.id.as_str(), actor.request_id.as_str()), (admin.user_id.as_str(), "r-9"));
        assert_eq!(actor.ip, "203.0.113.5");
        // An operator: its certificate and an assertion of the admin scope for no account.
        let operator = Caller {
            user_id: "operator".into(),
            scopes: vec!["admin".into()],
            ..Default::default()
        };
        let actor = Actor::admin(&request(Some(operator.clone()), Some(Peer::operator("ann"))));
        let actor = actor.unwrap();
        assert_eq!((actor.id.as_str(), actor.label.as_str()), ("", "operator:ann"));
        assert_eq!(actor.request_id, "r-1");
        let actor = Actor::admin(&request(Some(operator), Some(Peer::component("edge")))).unwrap();
        assert_eq!(actor.label, "assertion:operator");
        // Not enough: a certificate alone, a user, an admin's API key.
        let err = Actor::admin(&request(None, Some(Peer::operator("ann")))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("admin"), "{err:?}");
        let user = Caller { scopes: vec!["user".into()], ..admin.clone() };
        let err = Actor::admin(&request(Some(user), Some(Peer::operator("ann")))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let key = Caller { api_key: "k1".into(), ..admin.clone() };
        let err = Actor::admin(&request(Some(key), None)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "an API key is no administrator");
    }

    #[test]
    fn entries_keep_states_as_json_objects_within_bounds() {
        let actor = Actor::cli("root");
        #[derive(Serialize)]
        struct S {
            active: bool,
        }
        let e = actor.entry(
            "auth",
            "user.deactivate",
            ("user", "u1"),
            Some(&S { active: true }),
            Some(&S { active: false }),
            "spam",
        );
        assert_eq!(
            (e.before.as_str(), e.after.as_str()),
            (r#"{"active":true}"#, r#"{"active":false}"#)
        );
        assert_eq!(
            (e.actor.as_str(), e.component.as_str(), e.reason.as_str()),
            ("cli:root", "auth", "spam")
        );
        assert!(uuid::Uuid::parse_str(&e.id).is_ok() && e.occurred_at.is_some());
        let none: Option<&S> = None;
        assert_eq!(actor.entry("auth", "x", ("user", "u"), none, none, "").before, "{}");
        let big = serde_json::json!({ "text": "x".repeat(MAX_STATE) });
        let cut = actor.entry("auth", "x", ("user", "u"), Some(&big), none, "");
        assert!(cut.before.len() < 100 && cut.before.contains("truncated"), "{}", cut.before);
        assert_eq!(reason("  why  ", true).unwrap(), "why");
        assert!(reason(" ", true).is_err() && reason("", false).is_ok());
        assert!(reason(&"x".repeat(MAX_REASON + 1), false).is_err());
        assert!(reason("a\u{7}b", false).is_err());
    }
}
