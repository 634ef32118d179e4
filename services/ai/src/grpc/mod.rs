//! The tonic adapters: the contract's messages converted into the service's own values and
//! back, the caller taken from the identity the edge asserted, errors mapped to statuses. A
//! queued `Generate` answers with `x-http-status: 202`, so the edge says 202 Accepted.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use skillup_kit::identity::Caller;
use skillup_proto::{
    ai::v1::{self as pb, generation_service_server::GenerationServiceServer},
    google::api::HttpBody,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{DocumentEdit, GenerationRequest, LibraryQuery, Task},
    error::AiError,
    generate::Outcome,
    generator::Generator,
};

mod admin;
mod chat;
mod convert;

use self::convert::*;
pub use self::{admin::AdminGrpc, chat::FUNCTION_MODEL_PREFIX};

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
