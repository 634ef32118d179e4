//! Key commands: keys init, identity-key rotation, values that start with a hyphen.

use super::*;

#[test]
pub(super) fn keys_init_creates_what_is_missing_and_keeps_the_rest() {
    let dir = data_dir_with_test_key();
    let keys = dir.join("keys");
    let init = || {
        let out = skillup().args(["keys", "init", "--dir"]).arg(&keys).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = init();
    let kid = SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap().kid;
    assert!(first.contains(&format!("signing key {kid} (kept)")), "{first}");
    assert!(first.contains("identity.key (generated now;"), "{first}");
    let identity = std::fs::read(keys.join("identity.key")).unwrap();
    // Web Push's VAPID key: owner-only, a P-256 key the notification service loads.
    assert!(first.contains("vapid.key (generated now)"), "{first}");
    let vapid = std::fs::read(keys.join("vapid.key")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(keys.join("vapid.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only its owner reads it");
    }
    let loaded = skillup_notification::push::VapidKey::load(&keys.join("vapid.key")).unwrap();
    let second = init();
    assert!(second.contains("identity.key (kept;"), "{second}");
    assert_eq!(std::fs::read(keys.join("identity.key")).unwrap(), identity, "never replaced");
    assert!(second.contains("vapid.key (kept)"), "{second}");
    assert_eq!(std::fs::read(keys.join("vapid.key")).unwrap(), vapid, "never replaced");
    let again = skillup_notification::push::VapidKey::load(&keys.join("vapid.key")).unwrap();
    assert_eq!(loaded.public_key(), again.public_key());

    // An operator's assertion for grpcurl, signed with that key.
    let out = skillup()
        .args(["admin", "assertion", "--scopes", "admin,catalog:write", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let assertion = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let key = skillup_kit::identity::IdentityKey::load(&keys.join("identity.key"), false).unwrap();
    let id = key.verify(&assertion, skillup_kit::identity::now_secs()).unwrap();
    assert_eq!(id.user_id, "operator");
    assert_eq!(id.scopes, ["admin", "catalog:write"]);
    assert!(id.exp <= skillup_kit::identity::now_secs() + 300);
    let other = skillup_kit::identity::IdentityKey::random();
    assert!(other.verify(&assertion, skillup_kit::identity::now_secs()).is_err());
    // What services hold: the public half, written beside the key, verifies it just the same.
    let public = skillup_kit::identity::IdentityVerifier::load(&keys.join("identity.pub")).unwrap();
    assert_eq!(public.verify(&assertion, skillup_kit::identity::now_secs()).unwrap(), id);
    let text = std::fs::read_to_string(keys.join("identity.pub")).unwrap();
    assert!(!text.contains(std::str::from_utf8(&identity).unwrap().trim()), "no secret in it");
    let _ = std::fs::remove_dir_all(dir);
}

/// Fingerprints and kids are base64url, so one in 64 starts with `-`: it is a value, not a flag.
#[test]
pub(super) fn key_names_that_start_with_a_hyphen_are_values() {
    let dir = data_dir_with_test_key();
    for args in [
        &["keys", "identity", "promote", "-OIBwdOgAlAG1S84"][..],
        &["keys", "identity", "retire", "-OIBwdOgAlAG1S84"],
        &["keys", "promote", "-OIBwdOgAlAG1S84YyufPoYSkcCUTJaLgZuXVDTqxRA"],
    ] {
        let out = skillup().args(args).arg("--data-dir").arg(&dir).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
        assert!(!out.status.success(), "{args:?}: no such key here");
    }
}

/// Issue 27.3: `keys init` wrote identity.key without a final newline, so the documented
/// `>>` append glued the new key onto the old one and the first restarted service refused every
/// edge call. Rotation is now by command; the file is always newline-terminated and 0600.
#[test]
pub(super) fn identity_keys_rotate_by_command() {
    use skillup_kit::identity::{Caller, IdentityKey, IdentityVerifier, now_secs};
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir_with_test_key();
    let keys = dir.join("keys");
    let file = keys.join("identity.key");
    let run = |args: &[&str]| {
        let out = skillup().args(["keys"]).args(args).arg("--data-dir").arg(&dir).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["init"]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.ends_with('\n') && text.lines().count() == 1, "{text:?}");
    // The shell way still works: an appended line is a key of its own.
    std::fs::write(&file, format!("{text}{}\n", "ab".repeat(32))).unwrap();
    let old = IdentityKey::load(&file, false).unwrap();
    let signed_old =
        old.sign(&Caller { user_id: "u".into(), exp: now_secs() + 60, ..Default::default() });

    // Every command rewrites identity.pub (the services' half) to match, in order.
    let public_agrees = |signed: &[&String]| {
        let key = IdentityKey::load(&file, false).unwrap();
        let public = IdentityVerifier::load(&keys.join("identity.pub")).unwrap();
        assert_eq!(public.to_lines(), key.verifier().to_lines());
        for a in signed {
            assert_eq!(public.verify(a, now_secs()), key.verify(a, now_secs()));
        }
    };
    let added = run(&["identity", "add"]);
    public_agrees(&[&signed_old]);
    let fp = added.split_whitespace().nth(3).unwrap().to_owned();
    let listed = run(&["identity", "list"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(listed.lines().next().unwrap().ends_with("(signing)"));
    let both = IdentityKey::load(&file, false).unwrap();
    assert!(both.verify(&signed_old, now_secs()).is_ok(), "the old key still signs and verifies");

    run(&["identity", "promote", &fp]);
    let listed = run(&["identity", "list"]);
    assert!(listed.lines().next().unwrap().starts_with(&format!("{fp}  (signing)")), "{listed}");
    let promoted = IdentityKey::load(&file, false).unwrap();
    assert!(promoted.verify(&signed_old, now_secs()).is_ok(), "old assertions still verify");
    let signed_new =
        promoted.sign(&Caller { user_id: "u".into(), exp: now_secs() + 60, ..Default::default() });
    assert!(old.verify(&signed_new, now_secs()).is_err(), "signed by the new key");
    public_agrees(&[&signed_old, &signed_new]);

    let out = skillup()
        .args(["keys", "identity", "retire", &fp, "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the signing key cannot be retired");
    for line in run(&["identity", "list"]).lines().skip(1) {
        run(&["identity", "retire", line.trim()]);
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.ends_with('\n') && text.lines().count() == 1, "{text:?}");
    assert!(IdentityKey::load(&file, false).unwrap().verify(&signed_old, now_secs()).is_err());
    public_agrees(&[&signed_old, &signed_new]);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // Staged RS256 rotation: a verify-only key, then promoted by command.
    let out =
        skillup().args(["keys", "generate", "--verify-only", "--dir"]).arg(&keys).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kid = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(3).unwrap().to_owned();
    assert!(run(&["list"]).lines().any(|l| l == kid), "listed, not signing");
    run(&["promote", &kid]);
    assert!(run(&["list"]).lines().any(|l| l == format!("{kid}  (signing)")));
    let _ = std::fs::remove_dir_all(dir);
}
