//! What the ai service holds about one person, for their data export: the library as one JSON
//! list (every document with its text, parameters, usage and dates) and each document with a
//! text as a Markdown file under `library/`. Read page by page, so memory stays bounded
//! whatever the library's size.

use skillup_kit::export::Sink;
use uuid::Uuid;

use crate::{
    domain::{LibraryQuery, Task},
    error::{AiError, Result},
    export::{self, Format},
    generator::Generator,
};

/// Documents read at a time.
const PAGE: u64 = 200;

impl Generator {
    /// Writes the user's library into `sink`: `library/documents.json`, then
    /// `library/<date> <title> (<id>).md` for each document that has a text.
    pub async fn export_user(&self, user: Uuid, sink: &Sink) -> Result<()> {
        let mut list = sink.json_array("library/documents.json");
        let mut before = None;
        loop {
            let (page, next) = self.documents(user, before).await?;
            for task in &page {
                list.push(task).await.map_err(abandoned)?;
            }
            match next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        list.finish().await.map_err(abandoned)?;
        let mut before = None;
        loop {
            let (page, next) = self.documents(user, before).await?;
            for task in &page {
                if let Some(file) = export::render(task, Format::Markdown) {
                    let path = markdown_path(task, &file.file_name);
                    sink.file(&path, file.body).await.map_err(abandoned)?;
                }
            }
            match next {
                Some(n) => before = Some(n),
                None => return Ok(()),
            }
        }
    }

    /// A page of the user's documents older than `before`, newest first, and where the next
    /// page starts (`None` after the last).
    async fn documents(
        &self,
        user: Uuid,
        before: Option<Uuid>,
    ) -> Result<(Vec<Task>, Option<Uuid>)> {
        let rows = self.inner.tasks.page(user, before, &LibraryQuery::default(), PAGE).await?;
        let next = rows.last().filter(|_| rows.len() as u64 == PAGE).map(|r| r.id);
        Ok((rows.iter().map(Task::from).collect(), next))
    }
}

/// `library/2026-12-05 Title (0193ab12).md`: the day it was made, the safe file name of its
/// title, and the start of its id, so two documents of one title never share a name.
fn markdown_path(task: &Task, file_name: &str) -> String {
    let stem = file_name.strip_suffix(".md").unwrap_or(file_name);
    let short: String = task.id.simple().to_string().chars().take(8).collect();
    format!("library/{} {stem} ({short}).md", task.created_at.format("%Y-%m-%d"))
}

fn abandoned(e: skillup_kit::export::ExportError) -> AiError {
    AiError::Unavailable(e.to_string())
}
