//! The profile: name, language and time zone, validated, and the language every letter and
//! answer follows.

use super::*;

pub(crate) async fn a_profile_sets_name_language_and_time_zone(kind: Kind) {
    let mut h = harness(kind).await;
    let group = format!("updated-test-{}", uuid::Uuid::now_v7());
    let spec = skillup_kit::bus::SubscriptionSpec::new(group, &[pb::UserUpdated::KIND]);
    let mut events = h.t.infra.bus.subscribe(&spec, 16).await.unwrap();

    // Registration takes the language asked for, else the request's Accept-Language.
    let em = email();
    let mut req = Request::new(pb::RegisterRequest {
        email: em.clone(),
        password: PASSWORD.into(),
        ..Default::default()
    });
    req.metadata_mut().insert("accept-language", "ru-RU,ru;q=0.9,en;q=0.8".parse().unwrap());
    let user = h.client.register(req).await.unwrap().into_inner().user.unwrap();
    assert_eq!((user.locale.as_str(), user.time_zone.as_str()), ("ru", "UTC"));
    let mail = h.outbox.read_all().unwrap().into_iter().find(|m| m.to == em).unwrap();
    assert_eq!(mail.subject, "Подтвердите email для SkillUp", "mail in the account's language");
    assert!(mail.body.contains("Ссылка действует 24 часа."), "{}", mail.body);
    let explicit = pb::RegisterRequest {
        email: email(),
        password: PASSWORD.into(),
        locale: "en".into(),
        time_zone: "Asia/Yekaterinburg".into(),
        ..Default::default()
    };
    let other = h.client.register(explicit).await.unwrap().into_inner().user.unwrap();
    assert_eq!((other.locale.as_str(), other.time_zone.as_str()), ("en", "Asia/Yekaterinburg"));
    for (field, locale, tz) in [("locale", "de", ""), ("time_zone", "", "Mars/Olympus")] {
        let bad = pb::RegisterRequest {
            email: email(),
            password: PASSWORD.into(),
            locale: locale.into(),
            time_zone: tz.into(),
            ..Default::default()
        };
        let err = h.client.register(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, field);
    }

    let tokens = sign_in(&mut h, &em, PASSWORD).await.unwrap();
    assert_eq!(validate(&mut h, &tokens.access_token).await.unwrap().locale, "ru");
    // Errors people read come in the language the call asks for; the code stays.
    let mut wrong = Request::new(pb::LoginRequest {
        email: em.clone(),
        password: "wrong password".into(),
        ..Default::default()
    });
    wrong.metadata_mut().insert("accept-language", "ru-RU,ru;q=0.9".parse().unwrap());
    let err = h.client.login(wrong).await.unwrap_err();
    assert_eq!(
        (reason(&err).as_str(), err.message()),
        ("INVALID_CREDENTIALS", "Неверный email или пароль.")
    );
    let wrong =
        pb::LoginRequest { email: em.clone(), password: "wrong".into(), ..Default::default() };
    let err = h.client.login(wrong).await.unwrap_err();
    assert_eq!(err.message(), "Email or password is wrong.", "English when nothing is asked");
    let update = |name: Option<&str>, locale: Option<&str>, tz: Option<&str>| {
        bearer(
            pb::UpdateMeRequest {
                name: name.map(str::to_owned),
                locale: locale.map(str::to_owned),
                time_zone: tz.map(str::to_owned),
            },
            &tokens.access_token,
        )
    };
    let me = h.client.update_me(update(Some("  Ада "), Some("en"), Some("Europe/Moscow"))).await;
    let me = me.unwrap().into_inner();
    assert_eq!(
        (me.name.as_str(), me.locale.as_str(), me.time_zone.as_str()),
        ("Ада", "en", "Europe/Moscow")
    );
    // The same token speaks the new language at once (the edge asserts it on the next call).
    assert_eq!(validate(&mut h, &tokens.access_token).await.unwrap().locale, "en");
    let got = h.client.get_me(bearer(pb::GetMeRequest {}, &tokens.access_token)).await.unwrap();
    assert_eq!(got.into_inner().time_zone, "Europe/Moscow");
    // Each field alone; nothing asked, nothing changed.
    let me = h.client.update_me(update(None, Some("ru"), None)).await.unwrap().into_inner();
    assert_eq!((me.name.as_str(), me.locale.as_str()), ("Ада", "ru"));
    // Mail follows the profile: English now.
    h.client.update_me(update(None, Some("en"), None)).await.unwrap();
    let reset = pb::RequestPasswordResetRequest { email: em.clone() };
    h.client.request_password_reset(reset).await.unwrap();
    let mails = h.outbox.read_all().unwrap();
    let reset = mails.iter().rfind(|m| m.to == em).unwrap();
    assert_eq!(reset.subject, "Reset your SkillUp password");
    let me = h.client.update_me(update(None, Some("ru"), None)).await.unwrap().into_inner();
    let same = h.client.update_me(update(None, None, None)).await.unwrap().into_inner();
    assert_eq!(same.updated_at, me.updated_at);
    for (field, req) in [
        ("name", update(Some(&"я".repeat(101)), None, None)),
        ("name", update(Some("a\u{7}b"), None, None)),
        ("locale", update(None, Some("fr"), None)),
        ("time_zone", update(None, None, Some("Moscow"))),
    ] {
        let err = h.client.update_me(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert_eq!(skillup_kit::error::detail_of(&err).unwrap().field, field);
    }
    let err = h.client.update_me(Request::new(pb::UpdateMeRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Each change is one `user.updated` with the account as it became.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 4 {
        let d =
            tokio::time::timeout_at(deadline, events.next()).await.expect("four events").unwrap();
        let (_, ev) = skillup_kit::events::decode::<pb::UserUpdated>(&d.message.payload).unwrap();
        d.ack().await.unwrap();
        let u = ev.user.unwrap();
        if u.id == user.id {
            seen.push((u.name, u.locale, u.time_zone));
        }
    }
    assert_eq!(
        seen,
        [
            ("Ада".to_owned(), "en".to_owned(), "Europe/Moscow".to_owned()),
            ("Ада".to_owned(), "ru".to_owned(), "Europe/Moscow".to_owned()),
            ("Ада".to_owned(), "en".to_owned(), "Europe/Moscow".to_owned()),
            ("Ада".to_owned(), "ru".to_owned(), "Europe/Moscow".to_owned())
        ]
    );
}
