//! Web Push end to end against `skillup up`: a browser (the push service stand-in's) subscribes
//! through the edge, a queued generation finishes, and the push service receives the
//! notification signed with the platform's VAPID key and encrypted for that browser.

use skillup_testkit::providers::push::PushStandIn;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_subscribed_through_the_edge_is_pushed_a_finished_generation() {
    let push = PushStandIn::start().await;
    let (up, base) = start_up().await;
    let outbox = up.dir.join("outbox");
    let rest = reqwest::Client::new();
    let email = format!("push-{}@example.com", testing::unique());
    let account = json!({"email": email, "password": "correct horse battery"});
    register_verified(&rest, &base, &outbox, &account).await;
    let res = rest.post(format!("{base}/api/auth/login")).json(&account).send().await.unwrap();
    let token = ok(res, 200).await["access_token"].as_str().unwrap().to_owned();

    // The key, to anyone; the one pushes are signed with.
    let res = rest.get(format!("{base}/api/notifications/push/key")).send().await.unwrap();
    let key = ok(res, 200).await["public_key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 87);

    let browser = push.browser();
    // What `PushSubscription.toJSON()` gives, as a browser posts it.
    let subscription = json!({
        "endpoint": browser.endpoint,
        "expirationTime": null,
        "keys": {"p256dh": browser.p256dh, "auth": browser.auth},
    });
    let subscriptions = format!("{base}/api/notifications/push/subscriptions");
    // Not with an API key: devices are a signed-in person's.
    let res = rest
        .post(format!("{base}/api/auth/api-keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "script"}))
        .send()
        .await
        .unwrap();
    let api_key = ok(res, 201).await["secret"].as_str().unwrap().to_owned();
    let res = rest.post(&subscriptions).bearer_auth(&api_key).json(&subscription).send().await;
    assert_eq!(res.unwrap().status(), 403);
    // Not an address inside the network.
    let inside = json!({"endpoint": "https://10.0.0.7/push/1", "keys": subscription["keys"]});
    let res = rest.post(&subscriptions).bearer_auth(&token).json(&inside).send().await.unwrap();
    let refused = ok(res, 400).await;
    assert_eq!(refused["error"]["field"], "endpoint", "{refused}");

    let res = rest.post(&subscriptions).bearer_auth(&token).json(&subscription).send().await;
    let device = ok(res.unwrap(), 201).await;
    assert_eq!(device["endpoint"], browser.endpoint.as_str());

    let res = rest
        .post(format!("{base}/api/generate"))
        .bearer_auth(&token)
        .json(&json!({"topic": "tides", "function": "quiz", "mode": "MODE_ASYNC"}))
        .send()
        .await
        .unwrap();
    let task = ok(res, 202).await;
    let got = push.wait_for(&browser, 1, Duration::from_secs(60)).await;
    let m = &got[0];
    assert_eq!(m.key, key);
    assert_eq!(m.claims["aud"], push.server.base_url);
    assert_eq!(m.payload["kind"], "generation_completed");
    assert!(m.payload["title"].as_str().unwrap().contains("tides"), "{}", m.payload);
    let id = task["task"]["task_id"].as_str().unwrap();
    assert!(
        m.payload["url"].as_str().unwrap().ends_with(&format!("/library/{id}")),
        "{}",
        m.payload
    );

    // No console was open: the finished generation was emailed too, with a one-click
    // unsubscribe a mail client posts as RFC 8058 says — a form body, no sign-in.
    let mailer = skillup_kit::mailer::OutboxMailer::new(&outbox, "x");
    let mut one_click = None;
    for _ in 0..300 {
        one_click = mailer
            .read_all()
            .unwrap()
            .into_iter()
            .find(|m| m.to == email && m.subject.contains("tides"))
            .and_then(|m| m.unsubscribe);
        if one_click.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let one_click =
        one_click.expect("an email about the finished generation, with List-Unsubscribe");
    let local = one_click.replacen(&format!("{base}/"), "/", 1);
    assert!(local.starts_with("/api/notifications/unsubscribe?token="), "{one_click}");
    let res = rest
        .post(&one_click)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    ok(res, 200).await;
    let res = rest.get(format!("{base}/api/notifications/preferences")).bearer_auth(&token).send();
    let prefs = ok(res.await.unwrap(), 200).await;
    let completed = prefs["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "NOTIFICATION_EVENT_GENERATION_COMPLETED")
        .cloned()
        .unwrap();
    assert_eq!(completed["email"], "DELIVERY_OFF", "{prefs}");
    assert_eq!(completed["push"], "DELIVERY_IMMEDIATE", "{prefs}");

    // Off again: the device goes.
    let res = rest.get(&subscriptions).bearer_auth(&token).send().await.unwrap();
    let listed = ok(res, 200).await;
    assert_eq!(listed["devices"].as_array().unwrap().len(), 1);
    let id = device["id"].as_str().unwrap();
    let res = rest.delete(format!("{subscriptions}/{id}")).bearer_auth(&token).send().await;
    assert_eq!(res.unwrap().status(), 204);
    let res = rest.get(&subscriptions).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok(res, 200).await["devices"].as_array().map_or(0, Vec::len), 0);
}
