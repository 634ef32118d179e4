//! The tonic adapter: decode, check the caller where the RPC needs one, call the catalog, map
//! errors. Admin RPCs need the scope `admin` in the identity the edge asserted.

use skillup_kit::{db::timestamp, identity::Caller};
use skillup_proto::prompt::v1::{self as pb, prompt_service_server::PromptServiceServer};
use tonic::{Request, Response, Status};

use crate::{
    catalog::Catalog,
    domain::{
        catalog::{Function, FunctionDraft, PromptAsk, TemplateDraft, TemplateVersion, Topic},
        class::FunctionClass,
    },
    error::PromptError,
};

fn class_pb(c: FunctionClass) -> pb::FunctionClass {
    match c {
        FunctionClass::Short => pb::FunctionClass::Short,
        FunctionClass::Long => pb::FunctionClass::Long,
    }
}

impl From<Topic> for pb::Topic {
    fn from(t: Topic) -> Self {
        pb::Topic { id: t.id, title: t.title, description: t.description }
    }
}

impl From<Function> for pb::Function {
    fn from(f: Function) -> Self {
        pb::Function {
            id: f.id,
            title: f.title,
            description: f.description,
            class: class_pb(f.class) as i32,
            default_max_tokens: f.default_max_tokens,
            min_tier: f.min_tier,
            params: f.params.into_iter().collect(),
            locales: f.locales,
        }
    }
}

impl From<pb::Function> for FunctionDraft {
    fn from(f: pb::Function) -> Self {
        let class = match pb::FunctionClass::try_from(f.class) {
            Ok(pb::FunctionClass::Short) => Some(FunctionClass::Short),
            Ok(pb::FunctionClass::Long) => Some(FunctionClass::Long),
            _ => None,
        };
        FunctionDraft {
            id: f.id,
            title: f.title,
            description: f.description,
            class,
            default_max_tokens: f.default_max_tokens,
            min_tier: f.min_tier,
            params: f.params,
        }
    }
}

impl From<pb::Template> for TemplateDraft {
    fn from(t: pb::Template) -> Self {
        TemplateDraft { locale: t.locale, system: t.system, user: t.user }
    }
}

impl From<TemplateVersion> for pb::Template {
    fn from(t: TemplateVersion) -> Self {
        pb::Template {
            function_id: t.function_id,
            locale: t.locale,
            version: t.version,
            system: t.system,
            user: t.user,
            variables: t.variables,
            current: t.current,
            created_at: Some(timestamp(t.created_at)),
        }
    }
}

impl From<pb::BuildPromptRequest> for PromptAsk {
    fn from(r: pb::BuildPromptRequest) -> Self {
        PromptAsk {
            topic: r.topic,
            function_id: r.function_id,
            locale: r.locale,
            params: r.params,
            max_tokens: r.max_tokens,
        }
    }
}

#[derive(Clone)]
pub struct PromptGrpc {
    catalog: Catalog,
}

impl PromptGrpc {
    pub fn new(catalog: Catalog) -> Self {
        Self { catalog }
    }

    pub fn into_server(self) -> PromptServiceServer<Self> {
        PromptServiceServer::new(self)
    }

    /// [`Self::into_server`], and its unary methods for direct calls from this process
    /// (`skillup up`: see `skillup_kit::grpc::LocalChannel`).
    pub fn into_local_server(self) -> (PromptServiceServer<Self>, skillup_proto::local::Handlers) {
        pb::prompt_service_local::serve(self)
    }
}

fn admin<T>(req: &Request<T>) -> Result<(), Status> {
    let id = Caller::of(req)
        .ok_or(PromptError::Unauthenticated("sign in first: this call needs an administrator"))?;
    if !id.has_scope("admin") {
        return Err(PromptError::Forbidden("this call needs the admin scope").into());
    }
    Ok(())
}

fn created<T>(body: T) -> Response<T> {
    let mut res = Response::new(body);
    res.metadata_mut().insert("x-http-status", "201".parse().expect("valid metadata"));
    res
}

#[tonic::async_trait]
impl pb::prompt_service_server::PromptService for PromptGrpc {
    async fn list_topics(
        &self,
        req: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let topics =
            self.catalog.topics(&req.get_ref().locale).await?.into_iter().map(Into::into).collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn list_functions(
        &self,
        req: Request<pb::ListFunctionsRequest>,
    ) -> Result<Response<pb::ListFunctionsResponse>, Status> {
        let functions = self
            .catalog
            .functions(&req.get_ref().locale)
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Response::new(pb::ListFunctionsResponse { functions }))
    }

    async fn get_function(
        &self,
        req: Request<pb::GetFunctionRequest>,
    ) -> Result<Response<pb::Function>, Status> {
        let f = self.catalog.get_function(&req.get_ref().function_id, "en").await?;
        Ok(Response::new(f.into()))
    }

    async fn build_prompt(
        &self,
        req: Request<pb::BuildPromptRequest>,
    ) -> Result<Response<pb::BuildPromptResponse>, Status> {
        let b = self.catalog.build(&req.into_inner().into()).await?;
        Ok(Response::new(pb::BuildPromptResponse {
            messages: vec![
                pb::Message { role: pb::Role::System as i32, content: b.system },
                pb::Message { role: pb::Role::User as i32, content: b.user },
            ],
            max_tokens: b.max_tokens,
            class: class_pb(b.class) as i32,
            template_version: b.version,
            locale: b.locale,
            estimated_input_tokens: b.estimated_input_tokens,
        }))
    }

    async fn create_function(
        &self,
        req: Request<pb::CreateFunctionRequest>,
    ) -> Result<Response<pb::Function>, Status> {
        admin(&req)?;
        let r = req.into_inner();
        let missing = if r.function.is_none() { "function" } else { "template" };
        let (Some(f), Some(t)) = (r.function, r.template) else {
            return Err(
                PromptError::Invalid(missing, skillup_kit::invalid::required(missing)).into()
            );
        };
        Ok(created(self.catalog.create_function(&f.into(), &t.into()).await?.into()))
    }

    async fn publish_template(
        &self,
        req: Request<pb::PublishTemplateRequest>,
    ) -> Result<Response<pb::Template>, Status> {
        admin(&req)?;
        let r = req.into_inner();
        let t = r
            .template
            .ok_or(PromptError::Invalid("template", skillup_kit::invalid::required("template")))?;
        Ok(created(self.catalog.publish(&r.function_id, &t.into()).await?.into()))
    }

    async fn rollback_template(
        &self,
        req: Request<pb::RollbackTemplateRequest>,
    ) -> Result<Response<pb::Template>, Status> {
        admin(&req)?;
        let r = req.into_inner();
        let t = self.catalog.rollback(&r.function_id, &r.locale, r.version).await?;
        Ok(Response::new(t.into()))
    }

    async fn list_templates(
        &self,
        req: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        admin(&req)?;
        let r = req.get_ref();
        let templates = self.catalog.templates(&r.function_id, &r.locale).await?;
        Ok(Response::new(pb::ListTemplatesResponse {
            templates: templates.into_iter().map(Into::into).collect(),
        }))
    }
}
