//! The tonic adapters: the contract's messages converted into the service's own values and
//! back, the caller taken from the identity the edge asserted, errors mapped to statuses. A
//! queued `Generate` answers with `x-http-status: 202`, so the edge says 202 Accepted.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use skillup_kit::{db::timestamp as ts, identity::Caller};
use skillup_proto::{
    ai::v1::{
        self as pb, generation_admin_service_server::GenerationAdminServiceServer,
        generation_service_server::GenerationServiceServer,
    },
    google::api::HttpBody,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{
        Completion, DeadLetter, Delivery, DocumentEdit, GenerationRequest, Job, LibraryQuery, Mode,
        QueueStats, RequeueOutcome, StreamEvent, Task, TaskStatus, Usage,
    },
    error::AiError,
    generate::Outcome,
    generator::Generator,
};

mod chat;

pub use self::chat::FUNCTION_MODEL_PREFIX;

/// The scope every admin call needs.
pub const ADMIN_SCOPE: &str = "admin";

// ---- conversions -------------------------------------------------------------------------

impl TryFrom<pb::GenerateRequest> for GenerationRequest {
    type Error = AiError;

    fn try_from(r: pb::GenerateRequest) -> Result<Self, AiError> {
        let mode = match pb::Mode::try_from(r.mode) {
            Ok(pb::Mode::Auto | pb::Mode::Unspecified) => Mode::Auto,
            Ok(pb::Mode::Sync) => Mode::Sync,
            Ok(pb::Mode::Async) => Mode::Async,
            Err(_) => {
                return Err(AiError::Invalid(
                    "mode",
                    skillup_kit::invalid::one_of("mode", &["auto", "sync", "async"]),
                ));
            }
        };
        Ok(GenerationRequest {
            topic: r.topic,
            function: r.function,
            params: r.params,
            mode,
            locale: r.locale,
            max_tokens: r.max_tokens,
            idempotency_key: r.idempotency_key,
            fresh: false,
            regenerated_from: None,
            via_api: false,
            sampling: Default::default(),
            raw: None,
        })
    }
}

impl From<GenerationRequest> for pb::GenerateRequest {
    fn from(r: GenerationRequest) -> Self {
        let mode = match r.mode {
            Mode::Auto => pb::Mode::Auto,
            Mode::Sync => pb::Mode::Sync,
            Mode::Async => pb::Mode::Async,
        };
        pb::GenerateRequest {
            topic: r.topic,
            function: r.function,
            params: r.params,
            mode: mode as i32,
            locale: r.locale,
            max_tokens: r.max_tokens,
            idempotency_key: r.idempotency_key,
        }
    }
}

impl From<Job> for pb::GenerationJob {
    fn from(j: Job) -> Self {
        pb::GenerationJob {
            task_id: j.task_id,
            user_id: j.user_id,
            hold_id: j.hold_id,
            request: j.request.map(Into::into),
        }
    }
}

impl From<pb::GenerationJob> for Job {
    /// A request the contract refuses (an unknown mode) is kept without its mode.
    fn from(j: pb::GenerationJob) -> Self {
        let request = j.request.map(|r| {
            let raw = r.clone();
            GenerationRequest::try_from(r).unwrap_or(GenerationRequest {
                topic: raw.topic,
                function: raw.function,
                params: raw.params,
                locale: raw.locale,
                max_tokens: raw.max_tokens,
                idempotency_key: raw.idempotency_key,
                mode: Mode::Auto,
                ..GenerationRequest::default()
            })
        });
        Job { task_id: j.task_id, user_id: j.user_id, hold_id: j.hold_id, request }
    }
}

fn usage_pb(u: Usage) -> pb::TokenUsage {
    pb::TokenUsage { input_tokens: u.input, output_tokens: u.output, total_tokens: u.total() }
}

impl From<Completion> for pb::Completion {
    fn from(c: Completion) -> Self {
        pb::Completion {
            id: c.id,
            text: c.text,
            usage: Some(usage_pb(c.usage)),
            provider: c.provider,
            model: c.model,
            finish_reason: c.finish_reason,
            cached: c.cached,
        }
    }
}

impl From<StreamEvent> for pb::GenerateStreamEvent {
    fn from(e: StreamEvent) -> Self {
        use pb::generate_stream_event::Event;
        let event = match e {
            StreamEvent::Started { id, provider, model, cached } => {
                Event::Started(pb::StreamStarted { id, provider, model, cached })
            }
            StreamEvent::Delta(t) => Event::Delta(t),
            StreamEvent::Finished { usage, finish_reason } => {
                Event::Finished(pb::StreamFinished { usage: Some(usage_pb(usage)), finish_reason })
            }
        };
        pb::GenerateStreamEvent { event: Some(event) }
    }
}

impl From<TaskStatus> for pb::TaskStatus {
    fn from(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Queued => pb::TaskStatus::Queued,
            TaskStatus::Running => pb::TaskStatus::Running,
            TaskStatus::Completed => pb::TaskStatus::Completed,
            TaskStatus::Failed => pb::TaskStatus::Failed,
            TaskStatus::Cancelled => pb::TaskStatus::Cancelled,
        }
    }
}

/// The contract's status filter (`None`: unspecified, any).
fn status_filter(s: pb::TaskStatus) -> Option<TaskStatus> {
    match s {
        pb::TaskStatus::Queued => Some(TaskStatus::Queued),
        pb::TaskStatus::Running => Some(TaskStatus::Running),
        pb::TaskStatus::Completed => Some(TaskStatus::Completed),
        pb::TaskStatus::Failed => Some(TaskStatus::Failed),
        pb::TaskStatus::Cancelled => Some(TaskStatus::Cancelled),
        pb::TaskStatus::Unspecified => None,
    }
}

impl From<Task> for pb::Task {
    fn from(t: Task) -> Self {
        pb::Task {
            id: t.id.to_string(),
            status: pb::TaskStatus::from(t.status) as i32,
            topic: t.topic,
            function: t.function,
            text: t.text.unwrap_or_default(),
            error: t.error.unwrap_or_default(),
            usage: t.usage.map(usage_pb),
            attempts: t.attempts,
            created_at: Some(ts(t.created_at)),
            updated_at: Some(ts(t.updated_at)),
            locale: t.locale,
            delivery: pb::Delivery::from(t.delivery) as i32,
            title: t.title,
            starred: t.starred,
            params: t.params.into_iter().collect(),
            provider: t.provider,
            model: t.model,
            finish_reason: t.finish_reason,
            regenerated_from: t.regenerated_from.map(|id| id.to_string()).unwrap_or_default(),
            interrupted: t.interrupted,
            excerpt: t.excerpt,
        }
    }
}

impl From<Delivery> for pb::Delivery {
    fn from(d: Delivery) -> Self {
        match d {
            Delivery::Inline => pb::Delivery::Inline,
            Delivery::Stream => pb::Delivery::Stream,
            Delivery::Queued => pb::Delivery::Queued,
            Delivery::Api => pb::Delivery::Api,
        }
    }
}

impl From<QueueStats> for pb::QueueStats {
    fn from(s: QueueStats) -> Self {
        pb::QueueStats {
            queued: s.queued,
            retrying: s.retrying,
            dead: s.dead,
            tasks: s.tasks.into_iter().collect(),
            oldest_queued_seconds: s.oldest_queued_seconds,
        }
    }
}

impl From<DeadLetter> for pb::DeadLetter {
    fn from(d: DeadLetter) -> Self {
        pb::DeadLetter {
            task_id: d.task_id,
            user_id: d.user_id,
            reason: d.reason,
            attempts: d.attempts,
            status: d.status.map(pb::TaskStatus::from).unwrap_or_default() as i32,
            error: d.error,
        }
    }
}

impl From<RequeueOutcome> for pb::RequeueOutcome {
    fn from(o: RequeueOutcome) -> Self {
        pb::RequeueOutcome { task_id: o.task_id, requeued: o.requeued, reason: o.reason }
    }
}

// ---- GenerationService -------------------------------------------------------------------

#[derive(Clone)]
pub struct AiGrpc {
    generator: Generator,
}

impl AiGrpc {
    pub fn new(generator: Generator) -> Self {
        Self { generator }
    }

    pub fn into_server(self) -> GenerationServiceServer<Self> {
        GenerationServiceServer::new(self)
    }

    /// [`Self::into_server`], and its unary methods for direct calls from this process
    /// (`skillup up`: see `skillup_kit::grpc::LocalChannel`).
    pub fn into_local_server(
        self,
    ) -> (GenerationServiceServer<Self>, skillup_proto::local::Handlers) {
        pb::generation_service_local::serve(self)
    }
}

fn caller<T>(req: &Request<T>) -> Result<Uuid, Status> {
    Caller::account(req)
}

/// The request with the `idempotency-key` header as its key when the body has none.
fn with_key(req: Request<pb::GenerateRequest>) -> Result<(Caller, GenerationRequest), Status> {
    caller(&req)?;
    let identity = Caller::of(&req).cloned().unwrap_or_default();
    let key = skillup_kit::grpc::idempotency_key(&req, &req.get_ref().idempotency_key);
    let r = pb::GenerateRequest { idempotency_key: key, ..req.into_inner() };
    Ok((identity, r.try_into()?))
}

/// An inline answer (200) or a queued task (202).
fn respond(outcome: Outcome) -> Result<Response<pb::GenerateResponse>, Status> {
    match outcome {
        Outcome::Inline(c) => Ok(Response::new(pb::GenerateResponse {
            outcome: Some(pb::generate_response::Outcome::Completion(c.into())),
        })),
        Outcome::Queued(t) => {
            let mut res = Response::new(pb::GenerateResponse {
                outcome: Some(pb::generate_response::Outcome::Task(task_ref(*t))),
            });
            res.metadata_mut().insert("x-http-status", "202".parse().expect("static"));
            Ok(res)
        }
    }
}

fn task_ref(t: Task) -> pb::TaskRef {
    pb::TaskRef {
        status_url: format!("/api/generate/{}", t.id),
        task_id: t.id.to_string(),
        status: pb::TaskStatus::from(t.status) as i32,
    }
}

fn task_id(id: &str) -> Result<Uuid, AiError> {
    Uuid::parse_str(id)
        .map_err(|_| AiError::Invalid("task_id", skillup_kit::invalid::uuid("task_id")))
}

#[tonic::async_trait]
impl pb::generation_service_server::GenerationService for AiGrpc {
    async fn generate(
        &self,
        req: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let (identity, r) = with_key(req)?;
        respond(self.generator.generate(&identity, r).await?)
    }

    type GenerateStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::GenerateStreamEvent, Status>> + Send>>;

    async fn generate_stream(
        &self,
        req: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStreamStream>, Status> {
        let (identity, r) = with_key(req)?;
        let events = self.generator.stream(&identity, r).await?;
        Ok(Response::new(Box::pin(events.map(|e| e.map(Into::into).map_err(Into::into)))))
    }

    type ChatCompletionStream =
        Pin<Box<dyn Stream<Item = Result<pb::GenerateStreamEvent, Status>> + Send>>;

    async fn chat_completion(
        &self,
        req: Request<pb::ChatCompletionRequest>,
    ) -> Result<Response<Self::ChatCompletionStream>, Status> {
        let identity = skillup_kit::identity::Caller::require(&req)?.clone();
        let r = GenerationRequest::try_from(req.into_inner())?;
        let events = self.generator.stream(&identity, r).await?;
        Ok(Response::new(Box::pin(events.map(|e| e.map(Into::into).map_err(Into::into)))))
    }

    async fn complete_chat(
        &self,
        req: Request<pb::ChatCompletionRequest>,
    ) -> Result<Response<pb::Completion>, Status> {
        let identity = skillup_kit::identity::Caller::require(&req)?.clone();
        let r = GenerationRequest::try_from(req.into_inner())?;
        Ok(Response::new(self.generator.whole(&identity, r).await?.into()))
    }

    async fn list_models(
        &self,
        _req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let models = self
            .generator
            .chain()
            .models()
            .into_iter()
            .map(|(id, kind)| pb::ProviderModel { id, kind: kind.to_owned() })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }

    async fn submit_task(
        &self,
        req: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let (identity, r) = with_key(req)?;
        Ok(Response::new(self.generator.submit(&identity, r).await?.into()))
    }

    async fn get_task(
        &self,
        req: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let user = caller(&req)?;
        let id = task_id(&req.get_ref().task_id)?;
        Ok(Response::new(self.generator.task(user, id).await?.into()))
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let user = caller(&req)?;
        let r = req.into_inner();
        let filter = LibraryQuery {
            status: status_filter(r.status()),
            query: r.query,
            function: r.function,
            starred: r.starred,
        };
        let page = r.page.unwrap_or_default();
        let (tasks, next) =
            self.generator.tasks(user, page.page_size, &page.page_token, &filter).await?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks.into_iter().map(Into::into).collect(),
            page: Some(skillup_proto::common::v1::PageResponse { next_page_token: next }),
        }))
    }

    async fn cancel_task(
        &self,
        req: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let user = caller(&req)?;
        let id = task_id(&req.get_ref().task_id)?;
        Ok(Response::new(self.generator.cancel(user, id).await?.into()))
    }

    async fn regenerate_task(
        &self,
        req: Request<pb::RegenerateTaskRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let user = caller(&req)?;
        let identity = Caller::of(&req).cloned().unwrap_or_default();
        let key = skillup_kit::grpc::idempotency_key(&req, &req.get_ref().idempotency_key);
        let id = task_id(&req.get_ref().task_id)?;
        respond(self.generator.regenerate(&identity, user, id, key).await?)
    }

    async fn update_task(
        &self,
        req: Request<pb::UpdateTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let user = caller(&req)?;
        let r = req.into_inner();
        let id = task_id(&r.task_id)?;
        let edit = DocumentEdit { title: r.title, starred: r.starred };
        Ok(Response::new(self.generator.edit(user, id, edit).await?.into()))
    }

    async fn delete_task(
        &self,
        req: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        let user = caller(&req)?;
        let id = task_id(&req.get_ref().task_id)?;
        self.generator.delete(user, id).await?;
        Ok(Response::new(pb::DeleteTaskResponse {}))
    }

    async fn export_task(
        &self,
        req: Request<pb::ExportTaskRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let user = caller(&req)?;
        let r = req.into_inner();
        let id = task_id(&r.task_id)?;
        let file = self.generator.export(user, id, &r.format).await?;
        let mut res = Response::new(HttpBody {
            content_type: file.content_type.to_owned(),
            data: file.body.into_bytes(),
            extensions: Vec::new(),
        });
        let disposition = attachment(&file.file_name);
        res.metadata_mut()
            .insert("content-disposition", disposition.parse().expect("ASCII by construction"));
        Ok(res)
    }

    type ExportUserDataStream = skillup_kit::grpc::ExportStream;

    async fn export_user_data(
        &self,
        req: Request<skillup_proto::common::v1::ExportUserDataRequest>,
    ) -> Result<Response<Self::ExportUserDataStream>, Status> {
        let generator = self.generator.clone();
        skillup_kit::grpc::export_part(req.get_ref(), move |user, sink| async move {
            generator.export_user(user, &sink).await
        })
    }
}

// ---- GenerationAdminService --------------------------------------------------------------

/// Operators' RPCs over the generation queue (see [`crate::admin`]). gRPC only, inside the
/// mesh; every call needs an identity assertion with the `admin` scope.
#[derive(Clone)]
pub struct AdminGrpc {
    generator: Generator,
}

impl AdminGrpc {
    pub fn new(generator: Generator) -> Self {
        Self { generator }
    }

    pub fn into_server(self) -> GenerationAdminServiceServer<Self> {
        GenerationAdminServiceServer::new(self)
    }

    /// [`Self::into_server`], and its unary methods for direct calls from this process
    /// (`skillup up`: see `skillup_kit::grpc::LocalChannel`).
    pub fn into_local_server(
        self,
    ) -> (GenerationAdminServiceServer<Self>, skillup_proto::local::Handlers) {
        pb::generation_admin_service_local::serve(self)
    }
}

/// The administrator making an admin call (see `skillup_kit::audit::Actor::admin`).
fn operator<T>(req: &Request<T>) -> Result<skillup_kit::audit::Actor, Status> {
    skillup_kit::audit::Actor::admin(req)
}

#[tonic::async_trait]
impl pb::generation_admin_service_server::GenerationAdminService for AdminGrpc {
    async fn get_queue_stats(
        &self,
        req: Request<pb::GetQueueStatsRequest>,
    ) -> Result<Response<pb::QueueStats>, Status> {
        operator(&req)?;
        Ok(Response::new(self.generator.queue_stats().await?.into()))
    }

    async fn list_dead_letters(
        &self,
        req: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        operator(&req)?;
        let (letters, total) = self.generator.dead_letters(req.get_ref().limit).await?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: letters.into_iter().map(Into::into).collect(),
            total,
        }))
    }

    async fn requeue_dead_letters(
        &self,
        req: Request<pb::RequeueDeadLettersRequest>,
    ) -> Result<Response<pb::RequeueDeadLettersResponse>, Status> {
        let actor = operator(&req)?;
        let r = req.into_inner();
        for id in &r.task_ids {
            if Uuid::parse_str(id).is_err() {
                return Err(skillup_kit::error::invalid_field(
                    "task_ids",
                    skillup_kit::invalid::uuid("task_ids"),
                ));
            }
        }
        let reason = skillup_kit::audit::reason(&r.reason, false)
            .map_err(|m| skillup_kit::error::invalid_field("reason", m))?;
        let outcomes = self.generator.requeue_dead(&r.task_ids, r.limit).await?;
        if !outcomes.is_empty() {
            // Audited after the fact (the queue is not a transaction): an entry lost to a
            // broker failure here is logged.
            let entry = crate::events::requeue_audit(&actor, &outcomes, &reason);
            if let Err(e) = skillup_kit::events::publish_with_id(
                &self.generator.bus(),
                &entry.id.clone(),
                "",
                &entry,
            )
            .await
            {
                tracing::error!(error = %e, "the requeue's audit entry was not sent");
            }
        }
        Ok(Response::new(pb::RequeueDeadLettersResponse {
            outcomes: outcomes.into_iter().map(Into::into).collect(),
        }))
    }
}

/// `Content-Disposition` for a download named `file_name` (RFC 6266): an ASCII `filename` for
/// old clients (other characters as `_`; `document` for a name without Latin letters or
/// digits) and the exact name as UTF-8 in `filename*` (RFC 8187).
fn attachment(file_name: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    // RFC 8187's attr-char, unescaped.
    const ATTR: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let (stem, ext) = file_name.rsplit_once('.').unwrap_or((file_name, ""));
    let ascii: String = if stem.chars().any(|c| c.is_ascii_alphanumeric()) {
        let keep = |c: char| (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ';
        stem.chars().map(|c| if keep(c) { c } else { '_' }).collect()
    } else {
        "document".to_owned()
    };
    let ascii = format!("{ascii}.{ext}");
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        utf8_percent_encode(file_name, ATTR)
    )
}
