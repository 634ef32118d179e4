//! The tonic adapter: the caller comes from the identity the edge asserted; a queued
//! `Generate` answers with `x-http-status: 202`, so the edge says 202 Accepted.

use skillup_kit::identity::Identity;
use skillup_proto::ai::v1::{self as pb, generation_service_server::GenerationServiceServer};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{generate::Outcome, generator::Generator};

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
    Identity::account(req)
}

/// The request with the `idempotency-key` header as its key when the body has none.
fn with_key(req: Request<pb::GenerateRequest>) -> (Identity, pb::GenerateRequest) {
    let identity = Identity::of(&req).cloned().unwrap_or_default();
    let key = skillup_kit::grpc::idempotency_key(&req, &req.get_ref().idempotency_key);
    (identity, pb::GenerateRequest { idempotency_key: key, ..req.into_inner() })
}

#[tonic::async_trait]
impl pb::generation_service_server::GenerationService for AiGrpc {
    async fn generate(
        &self,
        req: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        caller(&req)?;
        let (identity, r) = with_key(req);
        match self.generator.generate(&identity, r).await? {
            Outcome::Inline(c) => Ok(Response::new(pb::GenerateResponse {
                outcome: Some(pb::generate_response::Outcome::Completion(c)),
            })),
            Outcome::Queued(t) => {
                let mut res = Response::new(pb::GenerateResponse {
                    outcome: Some(pb::generate_response::Outcome::Task(t)),
                });
                res.metadata_mut().insert("x-http-status", "202".parse().expect("static"));
                Ok(res)
            }
        }
    }

    type GenerateStreamStream = ReceiverStream<Result<pb::GenerateStreamEvent, Status>>;

    async fn generate_stream(
        &self,
        req: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStreamStream>, Status> {
        caller(&req)?;
        let (identity, r) = with_key(req);
        Ok(Response::new(self.generator.stream(&identity, r).await?))
    }

    async fn submit_task(
        &self,
        req: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        caller(&req)?;
        let (identity, r) = with_key(req);
        Ok(Response::new(self.generator.submit(&identity, r).await?))
    }

    async fn get_task(
        &self,
        req: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let user = caller(&req)?;
        Ok(Response::new(self.generator.task(user, &req.get_ref().task_id).await?))
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let user = caller(&req)?;
        let r = req.into_inner();
        let status = crate::tasks::status_of_pb(r.status());
        let page = r.page.unwrap_or_default();
        let (tasks, next) =
            self.generator.tasks(user, page.page_size, &page.page_token, status).await?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks,
            page: Some(skillup_proto::common::v1::PageResponse { next_page_token: next }),
        }))
    }

    async fn cancel_task(
        &self,
        req: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let user = caller(&req)?;
        Ok(Response::new(self.generator.cancel(user, &req.get_ref().task_id).await?))
    }
}
