//! "Export my data": a person asks for a copy of everything SkillUp holds about them; auth
//! gathers its own part (account, sessions) and every other service's ([`DataHolder`]) into one
//! zip of JSON and Markdown files, keeps it for [`EXPORT_TTL`] and emails a link to the console,
//! where its owner downloads it with their token.
//!
//! Prepared in the background by [`Auth::run_exports`] on every auth replica: an export is
//! claimed with a lease (a compare-and-set, see [`crate::store::exports`]), so one replica
//! prepares it; a replica that dies mid-way leaves the lease to run out and another starts over;
//! a service that is down makes the attempt fail and it is tried again with backoff, up to
//! [`MAX_ATTEMPTS`] times. The archive is written into the database in chunks as it is made,
//! so neither making nor downloading it holds the whole archive in memory.

use std::{
    io::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use futures::{StreamExt, stream::BoxStream};
use serde::Serialize;
use skillup_kit::{Shutdown, export::safe_path, fluent_args, i18n, identity::Caller};
use uuid::Uuid;
use zip::{CompressionMethod, ZipWriter, write::SimpleFileOptions};

use crate::{
    auth::{Auth, account_of, now},
    error::{AuthError, NO_EXPORT, NOT_READY, Result},
    letters,
    store::{
        entities::{data_export, user},
        exports::{FAILED, PREPARING, READY},
    },
};

/// How long a ready archive is kept.
pub const EXPORT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Asking again this soon after an export was made answers that one (a double click, a retry).
pub const FRESH: Duration = Duration::from_secs(10 * 60);
/// Attempts before an export fails for good.
pub const MAX_ATTEMPTS: i32 = 5;
/// How long a replica has to finish an attempt before another may take the export over.
const LEASE: Duration = Duration::from_secs(15 * 60);
/// Bytes of archive per stored chunk.
const CHUNK_BYTES: usize = 1024 * 1024;
/// How often a replica looks for work it was not woken for (another replica's asks, retries,
/// expired archives).
const IDLE_POLL: Duration = Duration::from_secs(10);

/// Where an export stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportStatus {
    Preparing,
    Ready,
    Failed,
}

/// An export as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataExport {
    pub id: Uuid,
    pub status: ExportStatus,
    pub created_at: DateTime<Utc>,
    pub ready_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub size_bytes: u64,
}

impl From<&data_export::Model> for DataExport {
    fn from(r: &data_export::Model) -> Self {
        let status = match r.status.as_str() {
            READY => ExportStatus::Ready,
            FAILED => ExportStatus::Failed,
            _ => ExportStatus::Preparing,
        };
        DataExport {
            id: r.id,
            status,
            created_at: r.created_at,
            ready_at: r.ready_at,
            expires_at: (status == ExportStatus::Ready).then_some(r.expires_at).flatten(),
            size_bytes: r.size_bytes.max(0) as u64,
        }
    }
}

/// A ready archive: its download name and its bytes, read chunk by chunk.
pub struct Archive {
    pub file_name: String,
    pub bytes: BoxStream<'static, Result<Bytes>>,
}

impl Auth {
    /// Starts an export of the caller's data, or answers the one being prepared or made in the
    /// last [`FRESH`] minutes.
    pub async fn request_export(&self, who: &Caller) -> Result<DataExport> {
        let user = self.user(account_of(who)?).await?;
        if !user.is_active {
            return Err(AuthError::Forbidden("error-deactivated"));
        }
        let row = self.exports.start(user.id, now(), chrono_of(FRESH)).await?;
        self.export_wake.notify_one();
        Ok(DataExport::from(&row))
    }

    /// The caller's exports that have not expired, newest first.
    pub async fn data_exports(&self, who: &Caller) -> Result<Vec<DataExport>> {
        let rows = self.exports.of_user(account_of(who)?, now(), 20).await?;
        Ok(rows.iter().map(DataExport::from).collect())
    }

    /// The archive of one of the caller's ready exports. Another account's, an expired, a
    /// failed or an unknown one is NOT_FOUND alike; one being prepared is CONFLICT.
    pub async fn export_archive(&self, who: &Caller, id: Uuid) -> Result<Archive> {
        let user = account_of(who)?;
        let row = self.exports.get(id).await?.filter(|r| r.user_id == user);
        let Some(row) = row.filter(|r| r.expires_at.is_none_or(|t| t > now())) else {
            return Err(AuthError::NotFound(NO_EXPORT));
        };
        match row.status.as_str() {
            READY => {}
            PREPARING => return Err(AuthError::Conflict(NOT_READY)),
            _ => return Err(AuthError::NotFound(NO_EXPORT)),
        }
        let store = self.exports.clone();
        let bytes = futures::stream::try_unfold(0, move |seq| {
            let store = store.clone();
            async move { Ok(store.chunk(id, seq).await?.map(|data| (Bytes::from(data), seq + 1))) }
        })
        .boxed();
        let file_name = format!("skillup-data-{}.zip", row.created_at.format("%Y-%m-%d"));
        Ok(Archive { file_name, bytes })
    }

    /// Prepares exports as they are asked for and deletes expired archives, until `shutdown`.
    /// Safe on every replica at once.
    pub async fn run_exports(self, shutdown: Shutdown) {
        loop {
            if let Err(e) = self.exports.sweep(now()).await {
                tracing::warn!(error = %e, "expired data exports not swept");
            }
            loop {
                match self.exports.claim(now(), chrono_of(LEASE)).await {
                    Ok(Some(row)) => self.prepare(row).await,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "data exports not claimed");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = self.export_wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// One attempt at a claimed export; its outcome is stored only while the claim holds.
    async fn prepare(&self, row: data_export::Model) {
        let id = row.id;
        let user = match self.store.user(row.user_id).await {
            Ok(Some(u)) if u.is_active => u,
            Ok(_) => {
                let _ = self.exports.give_back(id, row.attempts, None, "the account is gone").await;
                return;
            }
            Err(e) => {
                self.retry_later(&row, &e.to_string()).await;
                return;
            }
        };
        let written = i18n::scope(letters::locale_of(&user), self.write_archive(&row, &user)).await;
        match written {
            Ok(size) => {
                let at = now();
                let expires = at + chrono_of(EXPORT_TTL);
                match self.exports.ready(id, row.attempts, size as i64, at, expires).await {
                    Ok(true) => {
                        tracing::info!(export = %id, bytes = size, "data export ready");
                        self.mail_ready(&user, id, size).await;
                    }
                    Ok(false) => tracing::warn!(export = %id, "data export claim lost"),
                    Err(e) => self.retry_later(&row, &detail(&e.into())).await,
                }
            }
            Err(e) => self.retry_later(&row, &detail(&e)).await,
        }
    }

    async fn retry_later(&self, row: &data_export::Model, why: &str) {
        let until = (row.attempts < MAX_ATTEMPTS)
            .then(|| now() + chrono::Duration::seconds(30 << row.attempts.clamp(0, 10)));
        tracing::warn!(export = %row.id, attempt = row.attempts, error = why, "data export failed");
        if let Err(e) = self.exports.give_back(row.id, row.attempts, until, why).await {
            tracing::warn!(export = %row.id, error = %e, "data export left to its lease");
        }
    }

    /// Writes the archive's chunks; its size.
    async fn write_archive(&self, row: &data_export::Model, user: &user::Model) -> Result<u64> {
        self.exports.clear_chunks(row.id).await?;
        let mut zip = Archiver::new(row.id, row.created_at);
        zip.json(self, "account.json", &AccountFile::of(user)).await?;
        let sessions: Vec<SessionFile> =
            self.store.unrevoked_sessions(user.id).await?.iter().map(SessionFile::of).collect();
        zip.json(self, "sessions.json", &sessions).await?;
        let mut parts = vec!["auth"];
        for holder in self.holders.iter() {
            let mut part = holder.export(user.id).await.map_err(AuthError::Unavailable)?;
            while let Some(piece) = part.next().await {
                let piece = piece.map_err(AuthError::Unavailable)?;
                zip.write(self, &piece.path, &piece.data).await?;
            }
            parts.push(holder.name());
        }
        let about = AboutFile {
            export_id: row.id,
            account_id: user.id,
            asked_at: row.created_at,
            made_at: now(),
            parts,
        };
        zip.json(self, "export.json", &about).await?;
        zip.finish(self).await
    }

    async fn mail_ready(&self, user: &user::Model, id: Uuid, size: u64) {
        let base = self.cfg.public_url.trim_end_matches('/');
        let args = fluent_args![
            ("link", format!("{base}/account?export={id}")),
            ("reset", format!("{base}/forgot-password")),
            ("hours", EXPORT_TTL.as_secs() / 3600),
            ("size", human_size(size))
        ];
        let mail = letters::letter(user, "data-export-ready", args);
        if let Err(e) = self.mailer.send(mail).await {
            // The console lists it anyway; the link is a convenience.
            tracing::warn!(export = %id, error = %e, "data export email not sent");
        }
    }
}

/// What went wrong, for operators (the error's own words hide the cause from people).
fn detail(e: &AuthError) -> String {
    match e {
        AuthError::Unavailable(d) | AuthError::Internal(d) => d.clone(),
        other => other.to_string(),
    }
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `812 KB`, `3.4 MB`: for the email.
fn human_size(bytes: u64) -> String {
    match bytes {
        b if b < 1000 => format!("{b} B"),
        b if b < 1_000_000 => format!("{} KB", b.div_ceil(1000)),
        b => format!("{:.1} MB", b as f64 / 1e6),
    }
}

/// The zip being written: its bytes go to the database a chunk at a time.
struct Archiver {
    id: Uuid,
    zip: ZipWriter<zip::write::StreamWriter<Shared>>,
    out: Shared,
    options: SimpleFileOptions,
    current: Option<String>,
    seq: i32,
    size: u64,
}

/// The bytes the zip wrote and the database has not taken yet.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("archive buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Archiver {
    fn new(id: Uuid, made: DateTime<Utc>) -> Self {
        let out = Shared::default();
        let time = zip::DateTime::from_date_and_time(
            made.year().clamp(1980, 2107) as u16,
            made.month() as u8,
            made.day() as u8,
            made.hour() as u8,
            made.minute() as u8,
            made.second() as u8,
        )
        .unwrap_or_default();
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .last_modified_time(time);
        let zip = ZipWriter::new_stream(out.clone());
        Self { id, zip, out, options, current: None, seq: 0, size: 0 }
    }

    async fn json(&mut self, auth: &Auth, path: &str, value: &impl Serialize) -> Result<()> {
        let mut data = serde_json::to_vec_pretty(value).map_err(|e| internal(&e))?;
        data.push(b'\n');
        self.write(auth, path, &data).await
    }

    /// The next bytes of the file at `path` (a new file when `path` changes; a path seen
    /// before, or an unsafe one, fails the export).
    async fn write(&mut self, auth: &Auth, path: &str, data: &[u8]) -> Result<()> {
        if self.current.as_deref() != Some(path) {
            if !safe_path(path) {
                return Err(AuthError::Internal(format!("an unsafe path in an export: {path:?}")));
            }
            self.zip.start_file(path, self.options).map_err(|e| internal(&e))?;
            self.current = Some(path.to_owned());
        }
        self.zip.write_all(data).map_err(|e| internal(&e))?;
        self.spill(auth, CHUNK_BYTES).await
    }

    /// Stores what is buffered once it reaches `at_least` bytes.
    async fn spill(&mut self, auth: &Auth, at_least: usize) -> Result<()> {
        let data = {
            let mut buf = self.out.0.lock().expect("archive buffer");
            if buf.is_empty() || buf.len() < at_least {
                return Ok(());
            }
            std::mem::take(&mut *buf)
        };
        self.size += data.len() as u64;
        auth.exports.put_chunk(self.id, self.seq, data).await?;
        self.seq += 1;
        Ok(())
    }

    async fn finish(mut self, auth: &Auth) -> Result<u64> {
        let zip = std::mem::replace(&mut self.zip, ZipWriter::new_stream(Shared::default()));
        zip.finish().map_err(|e| internal(&e))?;
        self.spill(auth, 1).await?;
        Ok(self.size)
    }
}

fn internal(e: &dyn std::fmt::Display) -> AuthError {
    AuthError::Internal(format!("data export: {e}"))
}

/// `account.json`: the account as stored, without its password hash.
#[derive(Serialize)]
struct AccountFile<'a> {
    id: Uuid,
    email: &'a str,
    name: &'a str,
    email_verified: bool,
    tier: &'a str,
    scopes: Vec<&'a str>,
    locale: &'a str,
    time_zone: &'a str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<'a> AccountFile<'a> {
    fn of(u: &'a user::Model) -> Self {
        AccountFile {
            id: u.id,
            email: &u.email,
            name: &u.name,
            email_verified: u.email_verified,
            tier: &u.tier,
            scopes: u.scopes.split_whitespace().collect(),
            locale: &u.locale,
            time_zone: &u.time_zone,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// `sessions.json`: the account's sessions that were not revoked.
#[derive(Serialize)]
struct SessionFile {
    id: Uuid,
    user_agent: String,
    ip: String,
    created_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl SessionFile {
    fn of(s: &crate::store::entities::session::Model) -> Self {
        SessionFile {
            id: s.id,
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
        }
    }
}

/// `export.json`: what this archive is.
#[derive(Serialize)]
struct AboutFile {
    export_id: Uuid,
    account_id: Uuid,
    asked_at: DateTime<Utc>,
    made_at: DateTime<Utc>,
    /// The services whose parts it holds.
    parts: Vec<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1_001), "2 KB");
        assert_eq!(human_size(3_400_000), "3.4 MB");
    }
}
