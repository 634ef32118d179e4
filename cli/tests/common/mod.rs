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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
