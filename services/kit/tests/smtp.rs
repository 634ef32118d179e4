//! The SMTP adapter against a local server that speaks SMTP (RFC 5321): greeting, EHLO,
//! MAIL/RCPT/DATA with dot-terminated data, QUIT — and a 550 refusal.

use skillup_kit::mailer::{Email, Mailer, SmtpMailer};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::mpsc,
};

/// Accepts connections; refuses recipients containing "nobody"; sends each message's DATA out.
async fn fake_smtp() -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 fake.smtp ESMTP ready\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-fake.smtp\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
                    } else if upper.starts_with("MAIL FROM") {
                        b"250 2.1.0 ok\r\n"
                    } else if upper.starts_with("RCPT TO") {
                        if upper.contains("NOBODY") {
                            b"550 5.1.1 no such user\r\n"
                        } else {
                            b"250 2.1.5 ok\r\n"
                        }
                    } else if upper == "DATA" {
                        w.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await.unwrap();
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        let _ = tx.send(data);
                        b"250 2.0.0 queued\r\n"
                    } else if upper == "QUIT" {
                        let _ = w.write_all(b"221 2.0.0 bye\r\n").await;
                        return;
                    } else if upper == "RSET" || upper == "NOOP" {
                        b"250 ok\r\n"
                    } else {
                        b"502 5.5.2 not implemented\r\n"
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn sends_through_smtp_and_reports_refusals() {
    let (port, mut rx) = fake_smtp().await;
    let mailer = SmtpMailer::from_url(
        &format!("smtp://127.0.0.1:{port}"),
        "SkillUp <no-reply@skillup.test>",
    )
    .unwrap();
    mailer
        .send(Email {
            to: "ada@example.com".into(),
            subject: "Confirm your email".into(),
            body: "token=abc\n.leading dot".into(),
            unsubscribe: Some("https://skillup.test/api/notifications/unsubscribe?token=t".into()),
        })
        .await
        .expect("accepted by the server");
    let data = rx.recv().await.unwrap();
    assert!(data.contains("To: ada@example.com"), "{data}");
    assert!(data.contains("Subject: Confirm your email"), "{data}");
    assert!(data.contains("token=abc"), "{data}");
    assert!(data.contains("..leading dot"), "dot-stuffed on the wire: {data}");
    assert!(
        data.contains(
            "List-Unsubscribe: <https://skillup.test/api/notifications/unsubscribe?token=t>"
        ),
        "{data}"
    );
    assert!(data.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"), "{data}");

    let err = mailer
        .send(Email {
            to: "nobody@example.com".into(),
            subject: "x".into(),
            body: "y".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("550") || err.to_string().contains("no such user"), "{err}");
}

#[tokio::test]
async fn bad_settings_name_their_key() {
    let err = SmtpMailer::from_url("nonsense://x", "a@b.c").unwrap_err().to_string();
    assert!(err.contains("SKILLUP_MAIL__SMTP_URL"), "{err}");
    let err =
        SmtpMailer::from_url("smtp://127.0.0.1:25", "not an address").unwrap_err().to_string();
    assert!(err.contains("SKILLUP_MAIL__FROM"), "{err}");
}
