//! The operators' service over the generation queue (`GenerationAdminService`; the rules in
//! [`crate::admin`]).

use skillup_proto::ai::v1::{
    self as pb, generation_admin_service_server::GenerationAdminServiceServer,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::generator::Generator;

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
