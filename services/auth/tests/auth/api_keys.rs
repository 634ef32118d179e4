//! API keys: shown once, stored as hashes, validated like access tokens (never as a signed-in
//! person, never with `admin`), bounded per account, and refused from the next request on when
//! revoked, expired, or their account deactivated or deleted.

use super::*;

async fn create_key(
    h: &mut Harness,
    token: &str,
    name: &str,
    expires_at: Option<prost_types::Timestamp>,
) -> Result<pb::CreatedApiKey, tonic::Status> {
    let req = pb::CreateApiKeyRequest { name: name.into(), expires_at };
    h.client.create_api_key(bearer(req, token)).await.map(|r| r.into_inner())
}

async fn keys_of(h: &mut Harness, token: &str) -> Vec<pb::ApiKey> {
    let req = bearer(pb::ListApiKeysRequest {}, token);
    h.client.list_api_keys(req).await.unwrap().into_inner().api_keys
}

fn stored_rows(
    h: &Harness,
) -> impl std::future::Future<Output = Vec<skillup_auth::store::entities::api_key::Model>> + '_ {
    use sea_orm::EntityTrait;
    async move {
        skillup_auth::store::entities::api_key::Entity::find().all(&h.t.infra.db).await.unwrap()
    }
}

pub(crate) async fn an_api_key_is_shown_once_and_speaks_for_its_account(kind: Kind) {
    use sha2::Digest;
    let mut h = harness(kind).await;
    let me = register(&mut h, &email()).await;
    let user_id = me.user.clone().unwrap().id;
    let created = create_key(&mut h, &me.access_token, "  CI bot ", None).await.unwrap();
    let key = created.key.unwrap();
    let secret = created.secret;
    assert!(secret.starts_with("sk-skillup-") && secret.len() == 11 + 43, "{secret}");
    assert_eq!(key.name, "CI bot");
    assert!(secret.starts_with(&key.prefix) && key.prefix.len() == 17);
    assert!(key.last_used_at.is_none() && key.expires_at.is_none());

    // Only the hash is kept.
    let rows = stored_rows(&h).await;
    let row = rows.iter().find(|r| r.id.to_string() == key.id).unwrap();
    let hash: String =
        sha2::Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(row.secret_hash, hash);
    assert!(rows.iter().all(|r| !format!("{r:?}").contains(&secret)));

    // Validated like an access token: the account, no session, the key's id.
    let v = validate(&mut h, &secret).await.unwrap();
    assert_eq!(v.user_id, user_id);
    assert_eq!(v.api_key_id, key.id);
    assert!(v.session_id.is_empty() && v.jti.is_empty());
    assert_eq!(v.scopes, ["user"]);
    assert!(v.expires_at.unwrap().seconds > chrono::Utc::now().timestamp());
    let listed = keys_of(&mut h, &me.access_token).await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used_at.is_some(), "a use is recorded");

    // Called directly with the key: what the account reads works; what only a person who signed
    // in may do is refused.
    let me_again =
        h.client.get_me(bearer(pb::GetMeRequest {}, &secret)).await.unwrap().into_inner();
    assert_eq!(me_again.id, user_id);
    let refused = [
        create_key(&mut h, &secret, "escalation", None).await.unwrap_err(),
        h.client.list_api_keys(bearer(pb::ListApiKeysRequest {}, &secret)).await.unwrap_err(),
        h.client.list_sessions(bearer(pb::ListSessionsRequest {}, &secret)).await.unwrap_err(),
        h.client
            .change_password(bearer(
                pb::ChangePasswordRequest {
                    current_password: PASSWORD.into(),
                    new_password: "another long password".into(),
                },
                &secret,
            ))
            .await
            .unwrap_err(),
        h.client
            .delete_me(bearer(pb::DeleteMeRequest { password: PASSWORD.into() }, &secret))
            .await
            .unwrap_err(),
    ];
    for err in refused {
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("API key"), "{}", err.message());
    }

    // Not a key: anything else with the prefix is refused without a lookup.
    for bad in ["sk-skillup-", "sk-skillup-nope", &format!("{}x", &secret[..secret.len() - 1])] {
        let err = validate(&mut h, bad).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{bad}: {err:?}");
    }
}

pub(crate) async fn an_api_key_never_carries_admin(kind: Kind) {
    let mut h = harness(kind).await;
    let em = email();
    register(&mut h, &em).await;
    let admin = make_admin(&mut h, &em).await;
    let secret = create_key(&mut h, &admin, "ops", None).await.unwrap().secret;
    let v = validate(&mut h, &secret).await.unwrap();
    assert_eq!(v.scopes, ["user"]);
    let err = h
        .client
        .validate_token(pb::ValidateTokenRequest {
            token: secret,
            required_scopes: vec!["admin".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

pub(crate) async fn a_revoked_or_expired_api_key_is_refused_at_once(kind: Kind) {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    use skillup_auth::store::entities::api_key;
    let mut h = harness(kind).await;
    let me = register(&mut h, &email()).await;
    let user_id = me.user.clone().unwrap().id;
    let a = create_key(&mut h, &me.access_token, "a", None).await.unwrap();
    let in_an_hour =
        prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() + 3_600, nanos: 0 };
    let b = create_key(&mut h, &me.access_token, "b", Some(in_an_hour)).await.unwrap();
    assert_eq!(b.key.as_ref().unwrap().expires_at.as_ref().unwrap().seconds, in_an_hour.seconds);
    let names: Vec<String> =
        keys_of(&mut h, &me.access_token).await.into_iter().map(|k| k.name).collect();
    assert_eq!(names, ["b", "a"], "newest first");

    // Revoked: refused on the next validation; the identity stamp moved, so every edge's cached
    // decision for the account is dropped too.
    let stamp = validate(&mut h, &a.secret).await.unwrap().identity_version;
    let id = a.key.unwrap().id;
    let res = h
        .client
        .delete_api_key(bearer(pb::DeleteApiKeyRequest { key_id: id.clone() }, &me.access_token))
        .await
        .unwrap();
    assert_eq!(res.metadata().get("x-http-status").unwrap(), "204");
    let err = validate(&mut h, &a.secret).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("API key"), "{}", err.message());
    let now_stamp = validate(&mut h, &b.secret).await.unwrap().identity_version;
    assert_ne!(now_stamp, stamp);
    // Gone: a second revocation, another account's key, or no key at all is NOT_FOUND.
    let other = register(&mut h, &email()).await;
    for (key_id, token) in [
        (id.clone(), &me.access_token),
        (b.key.clone().unwrap().id, &other.access_token),
        ("not-a-uuid".to_owned(), &me.access_token),
    ] {
        let err = h
            .client
            .delete_api_key(bearer(pb::DeleteApiKeyRequest { key_id }, token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    validate(&mut h, &b.secret).await.expect("another account cannot revoke it");

    // Expired: refused.
    api_key::Entity::update_many()
        .col_expr(
            api_key::Column::ExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(api_key::Column::UserId.eq(uuid::Uuid::parse_str(&user_id).unwrap()))
        .exec(&h.t.infra.db)
        .await
        .unwrap();
    assert_eq!(validate(&mut h, &b.secret).await.unwrap_err().code(), Code::Unauthenticated);

    // Bad input names its field.
    let past = prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() - 60, nanos: 0 };
    let far = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 4 * 366 * 86_400,
        nanos: 0,
    };
    for (name, at, field) in
        [("", None, "name"), ("x", Some(past), "expires_at"), ("x", Some(far), "expires_at")]
    {
        let err = create_key(&mut h, &me.access_token, name, at).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let detail = skillup_kit::error::detail_of(&err).unwrap();
        assert_eq!(detail.field, field, "{err:?}");
    }
}

pub(crate) async fn api_keys_are_bounded_per_account_even_when_created_at_once(kind: Kind) {
    let t = infra(kind).await;
    let mut h = start_with(t, AuthConfig { api_keys_per_user: 3, ..test_config() }).await;
    let me = register(&mut h, &email()).await;
    let tries = (0..8).map(|i| {
        let mut client = h.client.clone();
        let token = me.access_token.clone();
        async move {
            let req = pb::CreateApiKeyRequest { name: format!("k{i}"), expires_at: None };
            client.create_api_key(bearer(req, &token)).await
        }
    });
    let results = futures::future::join_all(tries).await;
    let made = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(made, 3, "{results:?}");
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(err), "CONFLICT", "{err:?}");
    }
    assert_eq!(keys_of(&mut h, &me.access_token).await.len(), 3);
}

pub(crate) async fn a_deactivated_or_deleted_account_loses_its_keys(kind: Kind) {
    let mut h = harness(kind).await;
    let admin_email = email();
    register(&mut h, &admin_email).await;
    let admin = make_admin(&mut h, &admin_email).await;

    // Deactivated: refused; active again: accepted.
    let a = register(&mut h, &email()).await;
    let a_id = a.user.clone().unwrap().id;
    let key = create_key(&mut h, &a.access_token, "a", None).await.unwrap().secret;
    validate(&mut h, &key).await.unwrap();
    for (active, ok) in [(false, false), (true, true)] {
        let req = pb::SetUserActiveRequest { user_id: a_id.clone(), active, ..Default::default() };
        h.client.set_user_active(bearer(req, &admin)).await.unwrap();
        let res = validate(&mut h, &key).await;
        assert_eq!(res.is_ok(), ok, "active {active}: {res:?}");
        if let Err(e) = res {
            assert_eq!(e.code(), Code::PermissionDenied);
        }
    }

    // Deleted: the keys go with the account.
    let b = register(&mut h, &email()).await;
    let key = create_key(&mut h, &b.access_token, "b", None).await.unwrap().secret;
    let b_id = b.user.clone().unwrap().id;
    h.client
        .delete_me(bearer(pb::DeleteMeRequest { password: PASSWORD.into() }, &b.access_token))
        .await
        .unwrap();
    assert_eq!(validate(&mut h, &key).await.unwrap_err().code(), Code::Unauthenticated);
    assert!(stored_rows(&h).await.iter().all(|r| r.user_id.to_string() != b_id));
}
