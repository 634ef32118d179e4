//! Issue 24's admin for operators, as a newcomer meets it: `skillup admin grant EMAIL` makes
//! the first admin of a running `skillup up`, who then works through `/api/admin/…`; a user
//! cannot; every change is in the audit log, by who made it.

use super::*;

async fn sign_in(rest: &reqwest::Client, base: &str, email: &str) -> String {
    let res = rest
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"email": email, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let v: serde_json::Value = res.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

fn admin_cli(dir: &std::path::Path, grpc: &str, args: &[&str]) -> std::process::Output {
    skillup()
        .args(["admin"])
        .args(args)
        .args(["--addr", grpc, "--data-dir"])
        .arg(dir)
        .env("USER", "ops-ann")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn the_first_admin_is_granted_from_the_cli_and_works_through_the_rest_api() {
    let dir = data_dir_with_test_key();
    let mut up = start_up(&mut skillup(), &dir);
    let base = format!("http://{}", up.http);
    let rest = reqwest::Client::new();
    for email in ["ann@example.com", "bob@example.com"] {
        let res = rest
            .post(format!("{base}/api/auth/register"))
            .json(&serde_json::json!({"email": email, "password": "correct horse battery"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let bob = sign_in(&rest, &base, "bob@example.com").await;
    let res = rest.get(format!("{base}/api/admin/users")).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(res.status(), 403, "a user is no admin");

    let out =
        admin_cli(&dir, &up.grpc, &["grant", "Ann@Example.com", "--reason", "first operator"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("ann@example.com is admin"), "{said}");
    let out = admin_cli(&dir, &up.grpc, &["grant", "nobody@example.com"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account"), "{out:?}");

    // Ann signs in again: her token carries the scope, and the admin API answers her.
    let ann = sign_in(&rest, &base, "ann@example.com").await;
    let res = rest
        .get(format!("{base}/api/admin/users?query=BOB"))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["users"].as_array().unwrap().len(), 1, "{v}");
    let bob_id = v["users"][0]["id"].as_str().unwrap().to_owned();
    let res = rest
        .post(format!("{base}/api/admin/users/{bob_id}/active"))
        .bearer_auth(&ann)
        .json(&serde_json::json!({"active": false, "reason": "spam"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = rest.get(format!("{base}/api/auth/me")).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(res.status(), 401, "bob is signed out at once");
    // A balance adjustment, with its key.
    let res = rest
        .post(format!("{base}/api/admin/users/{bob_id}/balance/adjustments"))
        .bearer_auth(&ann)
        .header("Idempotency-Key", "goodwill-1")
        .json(&serde_json::json!({"amount_minor": 500, "currency": "RUB", "reason": "goodwill"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());

    // The generation queue, for admins only.
    let res = rest.get(format!("{base}/api/admin/queue")).bearer_auth(&ann).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    assert!(v.get("retrying").is_some() || v.get("tasks").is_some(), "{v}");
    let bob2 = {
        let res = rest
            .post(format!("{base}/api/auth/register"))
            .json(&serde_json::json!({"email": "cy@example.com", "password": "correct horse battery"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        sign_in(&rest, &base, "cy@example.com").await
    };
    for path in ["/api/admin/queue", "/api/admin/queue/dead-letters", "/api/admin/audit"] {
        let res = rest.get(format!("{base}{path}")).bearer_auth(&bob2).send().await.unwrap();
        assert_eq!(res.status(), 403, "{path}");
    }
    // Privilege escalation: a user granting themselves admin, crediting themselves, or
    // passing the edge's identity headers, gets nowhere.
    let me: serde_json::Value = rest
        .get(format!("{base}/api/auth/me"))
        .bearer_auth(&bob2)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cy = me["id"].as_str().unwrap();
    let attempts = [
        (format!("/api/admin/users/{cy}/admin"), serde_json::json!({"admin": true})),
        (
            format!("/api/admin/users/{cy}/balance/adjustments"),
            serde_json::json!({"amount_minor": 100000, "currency": "RUB", "reason": "me"}),
        ),
    ];
    for (path, body) in attempts {
        let res = rest
            .post(format!("{base}{path}"))
            .bearer_auth(&bob2)
            .header("Idempotency-Key", "escalate-1")
            .header("x-scopes", "admin")
            .header("x-skillup-identity", "v3.forged.sig")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path}");
    }

    // The audit log: the grant by the operator who ran the CLI, the deactivation and the
    // adjustment by Ann, newest first.
    let mut entries = Vec::new();
    for _ in 0..100 {
        let res =
            rest.get(format!("{base}/api/admin/audit")).bearer_auth(&ann).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let v: serde_json::Value = res.json().await.unwrap();
        entries = v["entries"].as_array().cloned().unwrap_or_default();
        if entries.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let show: Vec<(String, String)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap().into(), e["actor"].as_str().unwrap().into()))
        .collect();
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        show,
        [
            pair("balance.credit", "ann@example.com"),
            pair("user.deactivate", "ann@example.com"),
            pair("user.grant_admin", "operator:ops-ann"),
        ]
    );
    assert_eq!(entries[2]["reason"], "first operator");
    assert_eq!(entries[1]["reason"], "spam");

    // The last admin cannot be revoked; another can, and is signed out at once.
    let out = admin_cli(&dir, &up.grpc, &["revoke", "ann@example.com"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin"), "{out:?}");
    up.child.kill().unwrap();
    let _ = up.child.wait();
    let _ = std::fs::remove_dir_all(dir);
}
