//! Commands refusing what cannot work (naming the setting), help, keys list, migrate.

use super::*;

#[test]
pub(super) fn serve_without_database_url_names_the_variable() {
    let out = skillup().args(["serve", "auth"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DATABASE_URL"), "{err}");
}

#[test]
pub(super) fn serve_refuses_the_in_process_cache_and_bus() {
    let out = skillup()
        .args(["serve", "worker"])
        .env("DATABASE_URL", "postgres://x@127.0.0.1/x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("REDIS_URL"));
    let out = skillup()
        .args(["serve", "edge"])
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AMQP_URL"), "the edge needs no database, but a real bus: {err}");
}

#[test]
pub(super) fn a_bad_setting_stops_the_process_naming_its_key() {
    let out = skillup().args(["up"]).env("SKILLUP_GRPC_ADDR", "nowhere").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("grpc_addr"), "{err}");
    let out = skillup().args(["up"]).env("REDIS_URL", "http://wrong").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("REDIS_URL"));
}

#[test]
pub(super) fn help_explains_every_command() {
    let out = skillup().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["up", "serve", "migrate", "keys", "health", "admin"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from:\n{help}"
        );
    }
    let out = skillup().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for c in ["auth", "prompt", "subscribe", "payment", "ai", "worker", "notification", "edge"] {
        assert!(help.contains(c), "{c} missing from serve --help");
    }
}

#[test]
pub(super) fn keys_list_shows_the_signing_key() {
    let dir = data_dir_with_test_key();
    let kid = SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap().kid;
    let out = skillup().args(["keys", "list", "--dir"]).arg(dir.join("keys")).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{kid}  (signing)"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
pub(super) fn migrate_on_the_embedded_database() {
    let dir = std::env::temp_dir().join(format!("skillup-migrate-{}", testing::unique()));
    let out = skillup().args(["migrate", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("skillup.db").exists());
    let _ = std::fs::remove_dir_all(dir);
}
