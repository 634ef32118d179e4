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

/// A port free now, for a child process to bind later. Chosen below the kernel's ephemeral
/// range (32768–60999 by default): a port the kernel hands out (`bind(0)`) is also what it hands
/// to outgoing connections, so one of those could take it before the child binds.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    // Never the same port twice in one test process: a port is only checked free here, and
    // bound later by the process it is handed to — a Mesh takes sixteen at once, and two of
    // them alike (about one Mesh in a hundred) left one component answering on another's
    // address (the e2e takeout test once registered against auth's ops port: 404).
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if GIVEN.lock().unwrap().contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            GIVEN.lock().unwrap().insert(port);
            return port;
        }
    }
}
