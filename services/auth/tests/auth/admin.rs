//! Administration (issue 24): finding accounts, granting and revoking the admin scope (never
//! the last admin's), deactivation, and the audit log every change lands in — append-only.

use super::*;

/// Calls as the holder of `token` (a direct caller: auth validates the bearer itself).
fn with<T>(msg: T, token: &str) -> Request<T> {
    bearer(msg, token)
}

/// The audit log as `token`'s admin sees it once it holds `n` entries (the consumer stores
/// them moments after each change), newest first.
async fn audit_log(
    h: &mut Harness,
    token: &str,
    filter: pb::ListAuditLogRequest,
    n: usize,
) -> Vec<skillup_proto::common::v1::AuditEntry> {
    for _ in 0..100 {
        let got = h
            .client
            .list_audit_log(with(filter.clone(), token))
            .await
            .unwrap()
            .into_inner()
            .entries;
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the audit log never held {n} entries for {filter:?}");
}

pub(crate) async fn admins_find_accounts_grant_revoke_and_every_change_is_audited(kind: Kind) {
    let mut h = harness(kind).await;
    let admin_email = email();
    let admin_id = register(&mut h, &admin_email).await.user.unwrap().id;
    let admin = make_admin(&mut h, &admin_email).await;
    let tag = testing::unique();
    let (ada, bob) = (format!("ada-{tag}@example.com"), format!("bob-{tag}@example.com"));
    let ada_reg = register(&mut h, &ada).await;
    let ada_id = ada_reg.user.clone().unwrap().id;
    register(&mut h, &bob).await;

    // Not an admin: refused, whatever the call.
    let err = h
        .client
        .list_users(with(pb::ListUsersRequest::default(), &ada_reg.access_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let grant_self =
        pb::SetUserAdminRequest { user_id: ada_id.clone(), admin: true, ..Default::default() };
    let err = h.client.set_user_admin(with(grant_self, &ada_reg.access_token)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "no privilege escalation");
    let err = h
        .client
        .list_audit_log(with(pb::ListAuditLogRequest::default(), &ada_reg.access_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Search: part of the address, any case; `%` and `_` are themselves; pages.
    let list = |query: &str, page: Option<skillup_proto::common::v1::PageRequest>| {
        pb::ListUsersRequest { query: query.into(), page, ..Default::default() }
    };
    let found = h.client.list_users(with(list(&tag.to_uppercase(), None), &admin)).await.unwrap();
    let emails: Vec<String> = found.into_inner().users.into_iter().map(|u| u.email).collect();
    assert_eq!(emails, [bob.clone(), ada.clone()], "newest first");
    let none = h.client.list_users(with(list(&format!("{tag}%"), None), &admin)).await.unwrap();
    assert!(none.into_inner().users.is_empty(), "% is no wildcard");
    let page = |token: &str| {
        Some(skillup_proto::common::v1::PageRequest { page_size: 1, page_token: token.into() })
    };
    let first = h.client.list_users(with(list(&tag, page("")), &admin)).await.unwrap().into_inner();
    let next = first.page.unwrap().next_page_token;
    let second =
        h.client.list_users(with(list(&tag, page(&next)), &admin)).await.unwrap().into_inner();
    assert_eq!(
        (first.users[0].email.as_str(), second.users[0].email.as_str()),
        (bob.as_str(), ada.as_str())
    );
    assert!(second.page.unwrap().next_page_token.is_empty());

    // Grant: the scope is there at the next sign-in; granting twice changes nothing more.
    let grant = |admin: bool, reason: &str| pb::SetUserAdminRequest {
        user_id: ada_id.clone(),
        admin,
        reason: reason.into(),
    };
    let user = h.client.set_user_admin(with(grant(true, "joins support"), &admin)).await.unwrap();
    assert!(user.into_inner().scopes.contains(&"admin".to_owned()));
    h.client.set_user_admin(with(grant(true, "again"), &admin)).await.unwrap();
    let ada_admin = sign_in(&mut h, &ada, PASSWORD).await.unwrap().access_token;
    let admins =
        pb::ListUsersRequest { admins_only: true, query: tag.clone(), ..Default::default() };
    let listed = h.client.list_users(with(admins.clone(), &ada_admin)).await.unwrap().into_inner();
    assert_eq!(listed.users.len(), 1, "ada may list now, and is the one admin of the tag");

    // Revoke: signed out everywhere at once.
    h.client.set_user_admin(with(grant(false, "left the team"), &admin)).await.unwrap();
    assert!(validate(&mut h, &ada_admin).await.is_err(), "the admin's token dies with the scope");
    let err = h.client.list_users(with(admins, &ada_admin)).await.unwrap_err();
    assert!(matches!(err.code(), Code::Unauthenticated | Code::PermissionDenied), "{err:?}");

    // Deactivation with a reason; listing by state.
    let off =
        pb::SetUserActiveRequest { user_id: ada_id.clone(), active: false, reason: "spam".into() };
    h.client.set_user_active(with(off, &admin)).await.unwrap();
    let inactive = pb::ListUsersRequest {
        query: tag.clone(),
        activity: pb::UserActivity::Inactive as i32,
        ..Default::default()
    };
    let listed = h.client.list_users(with(inactive, &admin)).await.unwrap().into_inner();
    assert_eq!(listed.users.iter().map(|u| u.email.as_str()).collect::<Vec<_>>(), [ada.as_str()]);

    // The audit log: three changes about ada (the repeated grant changed nothing), newest
    // first, by the admin's address, with the states before and after and the reason.
    let about_ada = pb::ListAuditLogRequest { target_id: ada_id.clone(), ..Default::default() };
    let entries = audit_log(&mut h, &admin, about_ada.clone(), 3).await;
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["user.deactivate", "user.revoke_admin", "user.grant_admin"]);
    let grant_entry = &entries[2];
    assert_eq!(
        (grant_entry.actor.as_str(), grant_entry.actor_id.as_str()),
        (admin_email.as_str(), admin_id.as_str())
    );
    assert_eq!(
        (grant_entry.component.as_str(), grant_entry.reason.as_str()),
        ("auth", "joins support")
    );
    let json = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
    assert_eq!(json(&grant_entry.before)["scopes"], serde_json::json!(["user"]));
    assert_eq!(json(&grant_entry.after)["scopes"], serde_json::json!(["user", "admin"]));
    assert_eq!(json(&entries[0].after)["active"], false);
    assert_eq!(entries[0].reason, "spam");
    // Filters: a family of actions, an actor, a time window.
    let family = pb::ListAuditLogRequest {
        action: "user.".into(),
        target_id: ada_id.clone(),
        actor_id: admin_id.clone(),
        ..Default::default()
    };
    assert_eq!(audit_log(&mut h, &admin, family, 3).await.len(), 3);
    let revokes = pb::ListAuditLogRequest {
        action: "user.revoke_admin".into(),
        target_id: ada_id.clone(),
        ..Default::default()
    };
    assert_eq!(audit_log(&mut h, &admin, revokes, 1).await.len(), 1);
    let future = pb::ListAuditLogRequest {
        target_id: ada_id.clone(),
        since: Some(prost_types::Timestamp { seconds: 4_000_000_000, nanos: 0 }),
        ..Default::default()
    };
    let later = h.client.list_audit_log(with(future, &admin)).await.unwrap().into_inner();
    assert!(later.entries.is_empty());
    let bad = pb::ListAuditLogRequest { actor_id: "nope".into(), ..Default::default() };
    let err = h.client.list_audit_log(with(bad, &admin)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Append-only: the database itself refuses to change or remove an entry.
    use sea_orm::{ConnectionTrait, Statement};
    let db = &h.t.infra.db;
    for sql in [
        format!("UPDATE auth_audit_log SET reason = 'nothing' WHERE target_id = '{ada_id}'"),
        format!("DELETE FROM auth_audit_log WHERE target_id = '{ada_id}'"),
    ] {
        let err = db
            .execute_raw(Statement::from_string(db.get_database_backend(), sql.clone()))
            .await
            .expect_err("append-only");
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(audit_log(&mut h, &admin, about_ada, 3).await.len(), 3);
}

/// The last active admin stays one, even when two admins revoke each other at once.
pub(crate) async fn somebody_always_stays_an_admin(kind: Kind) {
    let mut h = harness(kind).await;
    // A fresh database: these two are its only admins.
    let (a, b) = (email(), email());
    let a_id = register(&mut h, &a).await.user.unwrap().id;
    let b_id = register(&mut h, &b).await.user.unwrap().id;
    let a_tok = make_admin(&mut h, &a).await;
    let b_tok = make_admin(&mut h, &b).await;
    let revoke = |id: &str| pb::SetUserAdminRequest {
        user_id: id.into(),
        admin: false,
        ..Default::default()
    };
    let (mut c1, mut c2) = (h.client.clone(), h.client.clone());
    let (r1, r2) = tokio::join!(
        c1.set_user_admin(with(revoke(&b_id), &a_tok)),
        c2.set_user_admin(with(revoke(&a_id), &b_tok)),
    );
    assert!(r1.is_err() || r2.is_err(), "not both: one of them would have been the last");
    // Whoever is left (a, unless b won the race) is the last admin: they cannot revoke or
    // deactivate themselves.
    let (left_id, left_tok) = if r2.is_ok() { (&b_id, &b_tok) } else { (&a_id, &a_tok) };
    let other = if r2.is_ok() { &a_id } else { &b_id };
    // (Had both failed — a busy database — the other is revoked now, one at a time.)
    let _ = h.client.set_user_admin(with(revoke(other), left_tok)).await;
    let listed = h
        .client
        .list_users(with(
            pb::ListUsersRequest { admins_only: true, ..Default::default() },
            left_tok,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.users.iter().map(|u| &u.id).collect::<Vec<_>>(), [left_id]);
    let err = h.client.set_user_admin(with(revoke(left_id), left_tok)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "CONFLICT: {err:?}");
    assert!(err.message().contains("admin"), "{err:?}");
    let off =
        pb::SetUserActiveRequest { user_id: left_id.clone(), active: false, ..Default::default() };
    let err = h.client.set_user_active(with(off, left_tok)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "nor deactivate themselves: {err:?}");
}
