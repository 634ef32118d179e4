//! Queued generations: the task row, the `generate.long` job (after the broker's confirm), and
//! reading, listing and cancelling tasks.

use std::time::Duration;

use chrono::Utc;
use skillup_kit::{bus::Message, identity::Caller};
use uuid::Uuid;

use crate::{
    domain::{DocumentEdit, GenerationRequest, Job, LibraryQuery, Task, excerpt},
    error::{AiError, Result},
    export::{self, Export, Format},
    queue::{QUEUE, REQUEST_ID_HEADER},
    store::task,
};

use crate::generator::*;
use crate::idempotency::key_reused;

/// Queued tasks may wait and retry for up to a day.
pub(crate) const TASK_HOLD_TTL: u32 = 86_400;

/// Whether a stored task is the one `p` asks for (its key's retry) — the same function,
/// topic, limits and built prompt (which holds the parameters and locale).
pub(crate) fn same_task(t: &task::Model, p: &Prepared) -> bool {
    t.function == p.req.function
        && t.topic == p.req.topic.trim()
        && t.max_tokens == p.max_tokens as i32
        && serde_json::to_string(&p.messages).is_ok_and(|m| m == t.messages)
}

impl Generator {
    /// `SubmitTask`: always queued.
    pub async fn submit(&self, identity: &Caller, req: GenerationRequest) -> Result<Task> {
        let p = self.prepare(identity, req).await?;
        self.enqueue(p).await
    }

    /// Stores the task, holds its quota and puts it on the queue with a publisher confirm —
    /// only then is it accepted. A publish that cannot be confirmed fails the task and gives
    /// the hold back, so nothing is left half-written.
    pub(crate) async fn enqueue(&self, p: Prepared) -> Result<Task> {
        // On a task of its own: a caller that leaves (the edge cancels the call when its
        // client disconnects) must not cut it between the hold, the row and the publish.
        // It stays in the caller's span, so the published job carries the caller's trace.
        use tracing::Instrument;
        let this = self.clone();
        // In the caller's language too: a refusal is worded for them.
        let work = skillup_kit::i18n::carried(async move { this.enqueue_now(p).await });
        tokio::spawn(work.instrument(tracing::Span::current()))
            .await
            .map_err(|e| AiError::Unavailable(format!("queueing: {e}")))?
    }

    pub(crate) async fn enqueue_now(&self, p: Prepared) -> Result<Task> {
        let task_id = Uuid::now_v7();
        let key = Self::hold_key(&p, &task_id);
        let idempotency = (!p.req.idempotency_key.is_empty())
            .then(|| format!("{}:{}", p.user, p.req.idempotency_key));
        if let Some(idem) = &idempotency
            && let Some(t) = self.inner.tasks.by_idempotency(idem).await?
        {
            return same_task(&t, &p).then(|| Task::from(&t)).ok_or_else(key_reused);
        }
        let (hold, priority) = self.reserve(&p, p.hold_tokens(), &key, TASK_HOLD_TTL).await?;
        let hold_uuid = Uuid::parse_str(&hold)
            .map_err(|_| AiError::Unavailable("subscribe returned a bad hold id".into()))?;
        let now = Utc::now();
        let row = task::Model {
            topic: p.req.topic.trim().to_owned(),
            function: p.req.function.clone(),
            locale: p.locale.clone(),
            messages: serde_json::to_string(&p.messages).unwrap_or_default(),
            max_tokens: p.max_tokens as i32,
            priority: priority as i32,
            idempotency: idempotency.clone(),
            params: serde_json::to_string(&p.req.params).unwrap_or_else(|_| "{}".into()),
            regenerated_from: p.req.regenerated_from,
            ..task::Model::queued(task_id, p.user, hold_uuid, now)
        };
        let row = match self.inner.tasks.insert(row.clone()).await {
            Ok(()) => row,
            Err(e) if skillup_kit::db::is_unique_violation(&e) => {
                // A concurrent retry with the same key won; it holds the same quota hold.
                let idem = idempotency.unwrap_or_default();
                let t = self
                    .inner
                    .tasks
                    .by_idempotency(&idem)
                    .await?
                    .ok_or_else(|| AiError::Unavailable("task vanished".into()))?;
                return same_task(&t, &p).then(|| Task::from(&t)).ok_or_else(key_reused);
            }
            Err(e) => {
                self.release(&hold, crate::ports::Release::Failed).await;
                return Err(e.into());
            }
        };
        let job = Job {
            task_id: task_id.to_string(),
            user_id: p.user.to_string(),
            hold_id: hold.clone(),
            request: Some(p.req.clone()),
        };
        let mut msg = Message::new(crate::queue::encode(job)).with_priority(priority.min(9) as u8);
        msg.id = task_id.to_string();
        if !p.request_id.is_empty() {
            msg = msg.with_header(REQUEST_ID_HEADER, p.request_id.clone());
        }
        if let Err(e) = self.inner.bus.enqueue(QUEUE, msg).await {
            tracing::error!(task = %task_id, error = %e, "queueing failed; the task is failed and its hold released");
            let failed = "the task could not be queued; nothing was charged";
            let _ = self.inner.tasks.fail_unqueued(task_id, failed).await;
            self.release(&hold, crate::ports::Release::Failed).await;
            return Err(AiError::Unavailable(format!("queue: {e}")));
        }
        metrics::counter!("ai_tasks_queued_total").increment(1);
        Ok(Task::from(&row))
    }

    /// One of the user's tasks: from the cache while fresh, else the database.
    pub async fn task(&self, user: Uuid, id: Uuid) -> Result<Task> {
        if let Some(t) = self.inner.tasks.cached(user, id).await {
            return Ok(t);
        }
        Ok(Task::from(&self.find(user, id).await?))
    }

    pub(crate) async fn find(&self, user: Uuid, id: Uuid) -> Result<task::Model> {
        self.inner
            .tasks
            .get(id)
            .await?
            .filter(|t| t.user_id == user)
            .ok_or_else(|| AiError::NotFound("no such task".into()))
    }

    /// Keeps a finished task in the cache for fast polling.
    pub(crate) async fn cache_task(&self, t: &task::Model) {
        let ttl = Duration::from_secs(self.inner.cfg.task_cache_secs.max(1));
        self.inner.tasks.remember(t, ttl).await;
    }

    /// The user's library, newest first (ids are time-ordered): every generation, or those
    /// `filter` asks for.
    pub async fn tasks(
        &self,
        user: Uuid,
        page_size: u32,
        page_token: &str,
        filter: &LibraryQuery,
    ) -> Result<(Vec<Task>, String)> {
        if filter.query.chars().count() > 200 {
            return Err(invalid("query", skillup_kit::invalid::at_most_chars("query", 200)));
        }
        if filter.function.len() > 64 {
            return Err(invalid("function", skillup_kit::invalid::slug("function")));
        }
        let size = match page_size {
            0 => 20,
            n => n.min(100),
        } as u64;
        let before = match page_token {
            "" => None,
            t => Some(Uuid::parse_str(t).map_err(|_| {
                invalid("page.page_token", skillup_kit::invalid::page_token("page.page_token"))
            })?),
        };
        let mut rows = self.inner.tasks.page(user, before, filter, size + 1).await?;
        let next = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last().map(|t| t.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        // A listing leaves the texts out (an excerpt instead): read one with `task`.
        let list = rows
            .iter()
            .map(|t| {
                let mut d = Task::from(t);
                d.excerpt = excerpt(d.text.take().as_deref().unwrap_or_default());
                d
            })
            .collect();
        Ok((list, next))
    }

    /// A new document from the same request as document `id`: never from the result cache,
    /// charged like any generation, linked to the original; inline or queued as it ran.
    pub async fn regenerate(
        &self,
        identity: &Caller,
        user: Uuid,
        id: Uuid,
        idempotency_key: String,
    ) -> Result<crate::generate::Outcome> {
        let original = self.find(user, id).await?;
        let req = GenerationRequest {
            topic: original.topic.clone(),
            function: original.function.clone(),
            params: serde_json::from_str(&original.params).unwrap_or_default(),
            mode: match original.delivery {
                crate::domain::Delivery::Queued => crate::domain::Mode::Async,
                _ => crate::domain::Mode::Sync,
            },
            locale: original.locale.clone(),
            max_tokens: original.max_tokens.max(0) as u32,
            idempotency_key,
            fresh: true,
            regenerated_from: Some(id),
            via_api: false,
            sampling: Default::default(),
            raw: None,
        };
        self.generate(identity, req).await
    }

    /// Its owner's edit of a document: the title (1..=200 characters once trimmed) and the
    /// star.
    pub async fn edit(&self, user: Uuid, id: Uuid, mut edit: DocumentEdit) -> Result<Task> {
        if let Some(title) = &mut edit.title {
            *title = title.trim().to_owned();
            if title.is_empty() || title.chars().count() > 200 {
                return Err(invalid("title", skillup_kit::invalid::chars("title", 1, 200)));
            }
        }
        match self.inner.tasks.edit(user, id, &edit).await? {
            Some(t) => Ok(Task::from(&t)),
            None => Err(AiError::NotFound("no such task".into())),
        }
    }

    /// Deletes one of the user's documents; a queued or running one is cancelled first (its
    /// hold goes back, a worker running it stops).
    pub async fn delete(&self, user: Uuid, id: Uuid) -> Result<()> {
        let t = self.find(user, id).await?;
        if !t.status.is_final() {
            match self.cancel(user, id).await {
                Ok(_) | Err(AiError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if self.inner.tasks.delete(user, id).await? {
            Ok(())
        } else {
            Err(AiError::NotFound("no such task".into()))
        }
    }

    /// One of the user's documents as a file in `format` (`md`, `txt`, `html`); CONFLICT
    /// while it has no text.
    pub async fn export(&self, user: Uuid, id: Uuid, format: &str) -> Result<Export> {
        let format = Format::parse(format).ok_or_else(|| {
            invalid("format", skillup_kit::invalid::one_of("format", &["md", "txt", "html"]))
        })?;
        let task = self.task(user, id).await?;
        export::render(&task, format)
            .ok_or_else(|| AiError::Conflict(crate::texts::about("no-text-yet", task.status)))
    }

    /// A deleted account: every document of it (a queued one's worker finds no row and drops
    /// it) and every cached answer go.
    pub async fn forget_user(&self, user: Uuid) -> Result<u64> {
        let n = self.inner.tasks.forget_user(user).await?;
        let prefix = format!("{}{user}:", crate::results::RESULT_KEY);
        self.inner.cache.delete_prefix(&prefix).await?;
        Ok(n)
    }

    /// Cancels a queued or running task: its hold goes back, a worker running it stops.
    pub async fn cancel(&self, user: Uuid, id: Uuid) -> Result<Task> {
        let cancelled = self.inner.tasks.cancel(user, id).await?;
        let t = self.find(user, id).await?;
        if !cancelled {
            return Err(AiError::Conflict(crate::texts::about("already", t.status)));
        }
        self.release(&t.hold_id.to_string(), crate::ports::Release::Cancelled).await;
        self.cache_task(&t).await;
        if let Err(e) = crate::events::cancelled(&self.inner.bus, user, id).await {
            // The worker also re-reads the row before storing a result: it cannot complete it.
            tracing::warn!(task = %id, error = %e, "cancel event not published");
        }
        Ok(Task::from(&t))
    }
}
