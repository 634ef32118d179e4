//! Email tokens: verification, resets, password changes, what our mail says.

use super::*;

pub(crate) fn token_in(body: &str) -> String {
    body.split("token=").nth(1).unwrap().chars().take(43).collect()
}

pub(crate) async fn email_verification_is_single_use(kind: Kind) {
    let mut h = harness(kind).await;
    let em = email();
    let reg = register(&mut h, &em).await;
    let mail =
        h.outbox.read_all().unwrap().into_iter().find(|m| m.to == em).expect("verification email");
    let token = token_in(&mail.body);
    // GetMe keeps the row briefly; a change to the account must not be hidden by that.
    let before =
        h.client.get_me(bearer(pb::GetMeRequest {}, &reg.access_token)).await.unwrap().into_inner();
    assert!(!before.email_verified);
    tokio::time::sleep(Duration::from_millis(5)).await;
    h.client.verify_email(pb::VerifyEmailRequest { token: token.clone() }).await.unwrap();
    assert!(
        validate(&mut h, &reg.access_token).await.unwrap().email_verified,
        "existing tokens see it at once"
    );
    let me =
        h.client.get_me(bearer(pb::GetMeRequest {}, &reg.access_token)).await.unwrap().into_inner();
    assert!(me.email_verified);
    assert_ne!(me.updated_at, before.updated_at, "the row was read again, not served from memory");
    let err = h.client.verify_email(pb::VerifyEmailRequest { token }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("already used"), "{}", err.message());
}

pub(crate) async fn verification_tokens_expire_and_resend_is_throttled(kind: Kind) {
    let mut h =
        start_with(infra(kind).await, AuthConfig { verification_ttl_secs: 1, ..test_config() })
            .await;
    let em = email();
    let reg = register(&mut h, &em).await;
    let token = token_in(&h.outbox.read_all().unwrap()[0].body);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = h.client.verify_email(pb::VerifyEmailRequest { token }).await.unwrap_err();
    assert!(err.message().contains("expired"), "{}", err.message());
    let res = h
        .client
        .resend_verification(bearer(pb::ResendVerificationRequest {}, &reg.access_token))
        .await
        .unwrap();
    assert_eq!(res.metadata().get("x-http-status").unwrap(), "202");
    let err = h
        .client
        .resend_verification(bearer(pb::ResendVerificationRequest {}, &reg.access_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");
    assert_eq!(h.outbox.read_all().unwrap().len(), 2);
}

pub(crate) async fn password_reset_and_change(kind: Kind) {
    let mut h = harness(kind).await;
    let em = email();
    let reg = register(&mut h, &em).await;
    h.client
        .request_password_reset(pb::RequestPasswordResetRequest { email: email() })
        .await
        .expect("unknown email: same answer");
    h.client
        .request_password_reset(pb::RequestPasswordResetRequest { email: em.clone() })
        .await
        .unwrap();
    let mail = h
        .outbox
        .read_all()
        .unwrap()
        .into_iter()
        .find(|m| m.subject.contains("Reset"))
        .expect("reset email");
    let token = token_in(&mail.body);
    let new_pw = "a brand new secret";
    h.client
        .reset_password(pb::ResetPasswordRequest {
            token: token.clone(),
            new_password: new_pw.into(),
        })
        .await
        .unwrap();
    assert!(validate(&mut h, &reg.access_token).await.is_err(), "a reset signs out every session");
    assert!(
        h.client
            .login(pb::LoginRequest {
                email: em.clone(),
                password: PASSWORD.into(),
                ..Default::default()
            })
            .await
            .is_err()
    );
    let s1 = sign_in(&mut h, &em, new_pw).await.unwrap();
    assert!(
        h.client
            .reset_password(pb::ResetPasswordRequest { token, new_password: "another one!".into() })
            .await
            .is_err()
    );

    let s2 = sign_in(&mut h, &em, new_pw).await.unwrap();
    let err = h
        .client
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: "nope nope".into(),
                new_password: "x".repeat(10),
            },
            &s1.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    h.client
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: new_pw.into(),
                new_password: "third secret!".into(),
            },
            &s1.access_token,
        ))
        .await
        .unwrap();
    validate(&mut h, &s1.access_token).await.expect("the session that changed it lives");
    assert!(validate(&mut h, &s2.access_token).await.is_err(), "other sessions are revoked");
}

/// The tokens of the reset emails sent to `to` so far.
pub(crate) fn reset_tokens(h: &Harness, to: &str) -> Vec<String> {
    let mails = h.outbox.read_all().unwrap().into_iter();
    mails.filter(|m| m.to == to && m.subject.contains("Reset")).map(|m| token_in(&m.body)).collect()
}

pub(crate) async fn ask_reset(h: &mut Harness, em: &str) -> String {
    let before = reset_tokens(h, em);
    h.client
        .request_password_reset(pb::RequestPasswordResetRequest { email: em.into() })
        .await
        .unwrap();
    let after = reset_tokens(h, em);
    after.into_iter().find(|t| !before.contains(t)).expect("a new reset email")
}

/// Issue 26.6: reset token t1 still worked after t2 was used, and one mailed before a password
/// change worked after it.
pub(crate) async fn outstanding_reset_links_die_with_a_reset_or_a_password_change(kind: Kind) {
    let mut h =
        start_with(infra(kind).await, AuthConfig { resend_interval_secs: 1, ..test_config() })
            .await;
    let em = email();
    register(&mut h, &em).await;
    let t1 = ask_reset(&mut h, &em).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t2 = ask_reset(&mut h, &em).await;
    let reset = |token: &str, pw: &str| pb::ResetPasswordRequest {
        token: token.into(),
        new_password: pw.into(),
    };
    h.client.reset_password(reset(&t2, "second secret!")).await.unwrap();
    let err = h.client.reset_password(reset(&t1, "attacker's pick")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t3 = ask_reset(&mut h, &em).await;
    let s = sign_in(&mut h, &em, "second secret!").await.unwrap();
    h.client
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: "second secret!".into(),
                new_password: "third secret!".into(),
            },
            &s.access_token,
        ))
        .await
        .unwrap();
    let err = h.client.reset_password(reset(&t3, "attacker's pick")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    h.client
        .login(pb::LoginRequest {
            email: em,
            password: "third secret!".into(),
            ..Default::default()
        })
        .await
        .expect("the changed password stands");
}

/// Issue 26.15: the name typed at registration went into the verification email to any
/// address — text of a stranger's choosing, sent by us.
pub(crate) async fn an_unconfirmed_name_stays_out_of_our_mail(kind: Kind) {
    let mut h = harness(kind).await;
    let em = email();
    let name = "Win a prize at evil.example";
    h.client
        .register(pb::RegisterRequest {
            email: em.clone(),
            password: PASSWORD.into(),
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mail = h.outbox.read_all().unwrap().into_iter().find(|m| m.to == em).unwrap();
    assert!(!mail.body.contains("evil.example"), "{}", mail.body);
    h.client.verify_email(pb::VerifyEmailRequest { token: token_in(&mail.body) }).await.unwrap();
    // Confirmed: the owner chose that name, and is greeted by it.
    let token = ask_reset(&mut h, &em).await;
    let mail = h.outbox.read_all().unwrap().into_iter().find(|m| m.body.contains(&token)).unwrap();
    assert!(mail.body.starts_with(&format!("Hello {name},")), "{}", mail.body);
}

// ---------- keys, tiers, deactivation, fail-closed ----------

pub(crate) async fn an_address_changes_only_from_the_new_address(kind: Kind) {
    let mut h = harness(kind).await;
    let (old, new) = (email(), email());
    let tokens = register(&mut h, &old).await;
    let change = |password: &str, new_email: &str| {
        bearer(
            pb::ChangeEmailRequest { password: password.into(), new_email: new_email.into() },
            &tokens.access_token,
        )
    };
    for (password, address, field) in [
        ("wrong password", new.as_str(), "password"),
        (PASSWORD, old.as_str(), "new_email"),
        (PASSWORD, "not an address", "new_email"),
    ] {
        let err = h.client.change_email(change(password, address)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, field);
    }
    let res = h.client.change_email(change(PASSWORD, &new.to_uppercase())).await.unwrap();
    assert_eq!(res.metadata().get("x-http-status").unwrap(), "202");
    let mails = h.outbox.read_all().unwrap();
    let confirm = mails.iter().find(|m| m.to == new).expect("a link to the new address");
    assert!(confirm.body.contains("/confirm-email?token="), "{}", confirm.body);
    let notice = mails.iter().rfind(|m| m.to == old).unwrap();
    assert!(notice.body.contains(&new), "the old address hears where to: {}", notice.body);
    assert!(!notice.body.contains("token="), "no link at the old address");
    let me = h.client.get_me(bearer(pb::GetMeRequest {}, &tokens.access_token)).await.unwrap();
    assert_eq!(me.into_inner().email, old, "nothing changes before the link is used");

    let token = token_in(&confirm.body);
    let done =
        h.client.confirm_email_change(pb::ConfirmEmailChangeRequest { token: token.clone() });
    assert_eq!(done.await.unwrap().into_inner().email, new);
    let err =
        h.client.confirm_email_change(pb::ConfirmEmailChangeRequest { token }).await.unwrap_err();
    assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, "token", "single use");
    // Sessions stay; the new address is the verified one; sign-in follows it.
    let v = validate(&mut h, &tokens.access_token).await.unwrap();
    assert!(v.email_verified, "the new address proved itself");
    let me = h.client.get_me(bearer(pb::GetMeRequest {}, &tokens.access_token)).await.unwrap();
    assert_eq!(me.into_inner().email, new);
    sign_in(&mut h, &new, PASSWORD).await.unwrap();
    let err = sign_in(&mut h, &old, PASSWORD).await.unwrap_err();
    assert_eq!(reason(&err), "INVALID_CREDENTIALS");

    // An address with an account: the same answer; its owner gets a note, nobody a link.
    let taken = email();
    register(&mut h, &taken).await;
    let other = register(&mut h, &email()).await;
    let req = bearer(
        pb::ChangeEmailRequest { password: PASSWORD.into(), new_email: taken.clone() },
        &other.access_token,
    );
    let res = h.client.change_email(req).await.unwrap();
    assert_eq!(res.metadata().get("x-http-status").unwrap(), "202");
    let to_taken: Vec<_> =
        h.outbox.read_all().unwrap().into_iter().filter(|m| m.to == taken).collect();
    assert_eq!(to_taken.len(), 2, "the verification at registration, then the note");
    assert!(!to_taken[1].body.contains("token="), "{}", to_taken[1].body);
    assert!(to_taken[1].body.contains("already has an account"), "{}", to_taken[1].body);
}

pub(crate) async fn a_deleted_account_ends_every_session_and_keeps_only_its_id(kind: Kind) {
    let mut h = harness(kind).await;
    let group = format!("deleted-test-{}", uuid::Uuid::now_v7());
    let spec = skillup_kit::bus::SubscriptionSpec::new(group, &[pb::UserDeleted::KIND]);
    let mut events = h.t.infra.bus.subscribe(&spec, 16).await.unwrap();
    let em = email();
    let tokens = register(&mut h, &em).await;
    let other = sign_in(&mut h, &em, PASSWORD).await.unwrap();
    let me = h.client.get_me(bearer(pb::GetMeRequest {}, &tokens.access_token)).await.unwrap();
    let id = me.into_inner().id;
    let delete =
        |pw: &str| bearer(pb::DeleteMeRequest { password: pw.into() }, &tokens.access_token);
    let err = h.client.delete_me(delete("wrong password")).await.unwrap_err();
    assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, "password");
    let res = h.client.delete_me(delete(PASSWORD)).await.unwrap();
    assert_eq!(res.metadata().get("x-http-status").unwrap(), "204");
    for t in [&tokens.access_token, &other.access_token] {
        assert_eq!(validate(&mut h, t).await.unwrap_err().code(), Code::Unauthenticated);
    }
    let refresh = h.client.refresh(pb::RefreshRequest { refresh_token: other.refresh_token }).await;
    assert_eq!(refresh.unwrap_err().code(), Code::Unauthenticated, "sessions are gone");
    assert_eq!(reason(&sign_in(&mut h, &em, PASSWORD).await.unwrap_err()), "INVALID_CREDENTIALS");
    // The row is a tombstone: its id, nothing of the person.
    use sea_orm::EntityTrait;
    let row = skillup_auth::store::entities::user::Entity::find_by_id(
        uuid::Uuid::parse_str(&id).unwrap(),
    )
    .one(&h.t.infra.db)
    .await
    .unwrap()
    .expect("kept as a tombstone");
    assert_eq!(row.email, format!("{id}@deleted.invalid"));
    assert!(row.name.is_empty() && row.password_hash.is_empty() && !row.is_active);
    let sessions =
        skillup_auth::store::entities::session::Entity::find().all(&h.t.infra.db).await.unwrap();
    assert!(sessions.iter().all(|s| s.user_id.to_string() != id), "no session rows");
    // One `user.deleted`; the address can have a new account.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = tokio::time::timeout_at(deadline, events.next()).await.expect("the event").unwrap();
        let (env, ev) = skillup_kit::events::decode::<pb::UserDeleted>(&d.message.payload).unwrap();
        d.ack().await.unwrap();
        if ev.user_id == id {
            assert_eq!(env.id, format!("deleted:{id}"));
            break;
        }
    }
    let again = register(&mut h, &em).await;
    let me = h.client.get_me(bearer(pb::GetMeRequest {}, &again.access_token)).await.unwrap();
    assert_ne!(me.into_inner().id, id, "a new account, never the old id");
}
