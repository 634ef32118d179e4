//! The mailer port: auth (verification, password reset) and notification (task emails) send
//! through it. [`SmtpMailer`] (lettre) sends for real when `mail.smtp_url` is set; the file
//! outbox writes one RFC 5322 message per file under the outbox directory and logs its subject —
//! what `skillup up` uses by default, and what tests read links from.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::{Error, Result};

/// One outgoing email.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Email {
    pub to: String,
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// The one-click unsubscribe URL (RFC 8058): sent as `List-Unsubscribe: <url>` with
    /// `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, which mail clients show as an
    /// "Unsubscribe" button that posts to it.
    pub unsubscribe: Option<String>,
}

/// The `List-Unsubscribe` and `List-Unsubscribe-Post` values for an unsubscribe URL.
fn unsubscribe_headers(url: &str) -> [(&'static str, String); 2] {
    [
        ("List-Unsubscribe", format!("<{url}>")),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".to_owned()),
    ]
}

#[async_trait]
pub trait Mailer: Send + Sync + std::fmt::Debug + 'static {
    async fn send(&self, email: Email) -> Result<()>;
}

pub type SharedMailer = std::sync::Arc<dyn Mailer>;

/// Writes each email as `<outbox>/<uuid v7>.eml`.
#[derive(Debug, Clone)]
pub struct OutboxMailer {
    dir: PathBuf,
    from: String,
}

impl OutboxMailer {
    pub fn new(dir: impl Into<PathBuf>, from: impl Into<String>) -> Self {
        Self { dir: dir.into(), from: from.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every email in the outbox, oldest first (file names are UUID v7, so they sort by time).
    pub fn read_all(&self) -> Result<Vec<Email>> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        files.sort();
        files.iter().map(|p| parse(&std::fs::read_to_string(p)?)).collect()
    }
}

fn parse(text: &str) -> Result<Email> {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Io(std::io::Error::other("malformed outbox file")))?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let unsubscribe = header("List-Unsubscribe:");
    Ok(Email {
        to: header("To:"),
        subject: header("Subject:"),
        body: body.replace("\r\n", "\n"),
        unsubscribe: unsubscribe
            .strip_prefix('<')
            .and_then(|u| u.strip_suffix('>'))
            .map(str::to_owned),
    })
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, email: Email) -> Result<()> {
        // Header injection: no CR/LF inside header values.
        let unsubscribe = email.unsubscribe.clone().unwrap_or_default();
        if [&email.to, &email.subject, &unsubscribe].iter().any(|v| v.contains(['\r', '\n'])) {
            return Err(Error::Io(std::io::Error::other("line break in an email header")));
        }
        crate::files::private_dir(&self.dir)?;
        let id = uuid::Uuid::now_v7();
        let lists: String = email
            .unsubscribe
            .as_deref()
            .map(|u| unsubscribe_headers(u).iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect())
            .unwrap_or_default();
        let text = format!(
            "Message-ID: <{id}@skillup>\r\nFrom: {}\r\nTo: {}\r\nSubject: {}\r\n{lists}Content-Type: text/plain; charset=utf-8\r\n\r\n{}",
            self.from,
            email.to,
            email.subject,
            email.body.replace('\n', "\r\n")
        );
        let tmp = self.dir.join(format!("{id}.tmp"));
        crate::files::write_private(&tmp, text).await?;
        tokio::fs::rename(&tmp, self.dir.join(format!("{id}.eml"))).await?;
        // Never the body or its links: they carry live tokens (verification, reset), and logs
        // are read by more people than mailboxes. The file is the owner's alone.
        tracing::info!(subject = %email.subject, outbox = %self.dir.display(), "email written to the outbox; open it for its link");
        Ok(())
    }
}

/// Sends through an SMTP server (lettre, pooled connections).
#[derive(Clone)]
pub struct SmtpMailer {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer").field("from", &self.from.to_string()).finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// `smtp://host:25` (plain; add `?tls=required` for STARTTLS) or `smtps://user:pass@host:465`.
    /// Call it inside the tokio runtime (the connection pool starts a task).
    pub fn from_url(url: &str, from: &str) -> Result<Self> {
        let transport = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
            .map_err(|e| {
                Error::Config(format!(
                    "`mail.smtp_url` (SKILLUP_MAIL__SMTP_URL) is not a valid SMTP URL: {e}"
                ))
            })?
            .timeout(Some(std::time::Duration::from_secs(10)))
            .build();
        let from = from.parse().map_err(|e| {
            Error::Config(format!("`mail.from` (SKILLUP_MAIL__FROM) is not a valid address: {e}"))
        })?;
        Ok(Self { transport, from })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: Email) -> Result<()> {
        use lettre::AsyncTransport;
        let to: lettre::message::Mailbox = email
            .to
            .parse()
            .map_err(|e| Error::Io(std::io::Error::other(format!("recipient: {e}"))))?;
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN);
        if let Some(url) = &email.unsubscribe {
            for (name, value) in unsubscribe_headers(url) {
                let name = lettre::message::header::HeaderName::new_from_ascii_str(name);
                builder =
                    builder.raw_header(lettre::message::header::HeaderValue::new(name, value));
            }
        }
        let message = builder
            .body(email.body)
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        self.transport
            .send(message)
            .await
            .map_err(|e| Error::Io(std::io::Error::other(format!("smtp: {e}"))))?;
        Ok(())
    }
}

/// The mailer a process uses: SMTP when configured, else the file outbox.
pub fn from_config(config: &crate::Config) -> Result<SharedMailer> {
    use secrecy::ExposeSecret;
    Ok(match &config.mail.smtp_url {
        Some(url) => {
            std::sync::Arc::new(SmtpMailer::from_url(url.expose_secret(), &config.mail.from)?)
        }
        None => {
            std::sync::Arc::new(OutboxMailer::new(config.outbox_dir(), config.mail.from.clone()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outbox_round_trip_and_header_injection() {
        let dir = std::env::temp_dir().join(format!("skillup-outbox-{}", uuid::Uuid::new_v4()));
        let m = OutboxMailer::new(&dir, "SkillUp <a@b>");
        let mail = |subject: &str, body: &str| Email {
            to: "x@y.z".into(),
            subject: subject.into(),
            body: body.into(),
            ..Default::default()
        };
        m.send(mail("Hi", "line 1\nline 2")).await.unwrap();
        let leave = "https://skillup.test/api/notifications/unsubscribe?token=a.b&event=E";
        m.send(Email { unsubscribe: Some(leave.into()), ..mail("Second", "b") }).await.unwrap();
        let all = m.read_all().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].subject, "Hi");
        assert_eq!(all[0].body, "line 1\nline 2");
        assert_eq!(all[0].unsubscribe, None);
        assert_eq!(all[1].unsubscribe.as_deref(), Some(leave), "List-Unsubscribe reads back");
        let text = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .find(|t| t.contains("Subject: Second"))
            .unwrap();
        assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"), "{text}");
        let bad = Email { to: "x@y.z\r\nBcc: evil@x".into(), ..mail("s", "") };
        assert!(m.send(bad).await.is_err());
        let bad = Email { unsubscribe: Some("https://a\r\nBcc: evil@x".into()), ..mail("s", "") };
        assert!(m.send(bad).await.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
