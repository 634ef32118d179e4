//! Issue 26.7: the outbox mailer logged verification and reset links with live tokens at INFO,
//! and outbox and SQLite files were created 0644. Its own test binary: it installs the global
//! log subscriber.

use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    sync::{Arc, Mutex},
};

use skillup_kit::mailer::{Email, Mailer, OutboxMailer};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn mail_and_database_files_are_private_and_links_never_logged() {
    let buf = Buf::default();
    let writer = buf.clone();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .init();
    let root = std::env::temp_dir().join(format!("skillup-private-{}", uuid::Uuid::now_v7()));
    let outbox = root.join("data/outbox");
    let m = OutboxMailer::new(&outbox, "SkillUp <a@b>");
    let token = "tok-LIVE-0123456789abcdefghijklmnopqrstuvwxyzABCD";
    m.send(Email {
        to: "x@y.z".into(),
        subject: "Confirm your email".into(),
        body: format!("open http://127.0.0.1:8080/verify-email?token={token}\nor send {token}"),
        ..Default::default()
    })
    .await
    .unwrap();
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("outbox"), "the send is logged: {logs}");
    assert!(!logs.contains(token) && !logs.contains("verify-email"), "{logs}");
    assert_eq!(mode(&outbox), 0o700);
    for f in std::fs::read_dir(&outbox).unwrap() {
        assert_eq!(mode(&f.unwrap().path()), 0o600);
    }

    let db_dir = root.join("data/db");
    let url = format!("sqlite://{}/skillup.db?mode=rwc", db_dir.display());
    let db = skillup_kit::db::connect(&url, 2).await.unwrap();
    use sea_orm::ConnectionTrait;
    db.execute_unprepared("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);").await.unwrap();
    assert_eq!(mode(&db_dir), 0o700);
    for f in std::fs::read_dir(&db_dir).unwrap() {
        let p = f.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    let _ = std::fs::remove_dir_all(root);
}
