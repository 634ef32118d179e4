//! What the binary's test files share.

#![allow(dead_code)] // each test file uses its own part

pub mod mesh;

use std::process::Command;

/// The `skillup` binary with a clean slate: no inherited server URLs or SKILLUP_* settings.
pub fn skillup() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skillup"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SKILLUP_")
            || ["DATABASE_URL", "REDIS_URL", "AMQP_URL"].contains(&k.as_str())
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// The verification token mailed to `email` (the file mailer's outbox); waits up to 5 s.
pub fn mailed_token(outbox: &std::path::Path, email: &str) -> String {
    for _ in 0..100 {
        for entry in std::fs::read_dir(outbox).into_iter().flatten() {
            let body = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
            if body.contains(&format!("To: {email}"))
                && let Some(token) = account_token(&body)
            {
                return token;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no verification email to {email} in {}", outbox.display());
}

/// The token of an account letter's link (verification, reset): not a notification's
/// unsubscribe link, which carries a `token=` too.
pub fn account_token(mail: &str) -> Option<String> {
    mail.match_indices("token=")
        .find(|(at, _)| !mail[..*at].ends_with("unsubscribe?"))
        .map(|(at, _)| mail[at + "token=".len()..].chars().take(43).collect())
}

pub use skillup_testkit::free_port;
