//! The tonic adapter: decode, call the service, encode, map errors. Protected RPCs take the
//! caller from the edge's identity assertion, or else from `authorization: Bearer <access
//! token>`, validated fully.

use skillup_kit::db::timestamp as ts;
use skillup_kit::{audit::Actor, i18n::Locale, identity::Caller};
use skillup_proto::{
    auth::v1::{self as pb, auth_service_server::AuthServiceServer},
    google::api::HttpBody,
};
use tonic::{Request, Response, Status, metadata::MetadataMap};

use skillup_proto::common::v1::{AuditEntry, PageResponse};

use crate::{
    accounts::Registration,
    admin::UserFilter,
    auth::{Auth, ClientInfo, Issued, account_of, person_of},
    domain::profile::ProfileEdit,
    error::AuthError,
    events::user_pb,
    exports::{DataExport, ExportStatus},
    store::entities::{api_key, session, user},
    store::{audit::AuditFilter, entities::audit_entry},
};

/// Response metadata the edge turns into the HTTP status of a success.
pub const HTTP_STATUS: &str = "x-http-status";

#[derive(Clone)]
pub struct AuthGrpc {
    auth: Auth,
}

impl AuthGrpc {
    pub fn new(auth: Auth) -> Self {
        Self { auth }
    }

    pub fn into_server(self) -> AuthServiceServer<Self> {
        AuthServiceServer::new(self)
    }

    /// [`Self::into_server`], and its unary methods for direct calls from this process
    /// (`skillup up`: see `skillup_kit::grpc::LocalChannel`).
    pub fn into_local_server(self) -> (AuthServiceServer<Self>, skillup_proto::local::Handlers) {
        pb::auth_service_local::serve(self)
    }

    /// The caller: the identity the edge validated moments ago and asserted (verified by the
    /// kit before this runs), or — for direct gRPC callers such as operators with grpcurl — a
    /// full validation of the bearer token.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        if let Some(id) = Caller::of(req)
            && id.user().is_some()
            && ((id.session().is_some() && !id.jti.is_empty()) || !id.api_key.is_empty())
        {
            return Ok(id.clone());
        }
        let token = bearer(req.metadata())
            .ok_or_else(|| Status::from(AuthError::Unauthenticated("error-sign-in")))?;
        Ok(self.auth.validate(token, &[]).await?.caller)
    }

    /// The administrator making an admin call: the asserted caller with the admin scope, or —
    /// for a direct gRPC caller with a bearer token — the token's account, validated here.
    async fn admin<T>(&self, req: &Request<T>) -> Result<Actor, Status> {
        if Caller::of(req).is_none()
            && let Some(token) = bearer(req.metadata())
        {
            let validated = self.auth.validate(token, &[]).await?;
            return Actor::of_caller(req, &validated.caller);
        }
        Actor::admin(req)
    }

    /// [`Self::caller`], when it is a person who signed in: an API key may not change the
    /// account, its sessions, keys or data (PERMISSION_DENIED).
    async fn person<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let who = self.caller(req).await?;
        person_of(&who)?;
        Ok(who)
    }
}

fn bearer(md: &MetadataMap) -> Option<&str> {
    let v = md.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn client<T>(req: &Request<T>) -> ClientInfo {
    let md = req.metadata();
    let header = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // From the edge's signed assertion, or the peer: never a header a direct caller could set.
    let ip = skillup_kit::identity::ClientAddr::of(req);
    let user_agent = header("x-user-agent").or_else(|| header("user-agent")).unwrap_or_default();
    ClientInfo { ip, user_agent }
}

/// The account shown to its owner: the validated view of tier and verification is the newest
/// (fresher than a row a replica read).
fn as_seen_by(user: &user::Model, who: Caller) -> pb::User {
    let mut out = user_pb(user);
    out.tier = who.tier;
    out.email_verified |= who.email_verified;
    out
}

/// An export as its owner sees it, with where to download it once ready.
fn export_pb(e: DataExport) -> pb::DataExport {
    let status = match e.status {
        ExportStatus::Preparing => pb::DataExportStatus::Preparing,
        ExportStatus::Ready => pb::DataExportStatus::Ready,
        ExportStatus::Failed => pb::DataExportStatus::Failed,
    };
    pb::DataExport {
        id: e.id.to_string(),
        status: status as i32,
        created_at: Some(ts(e.created_at)),
        ready_at: e.ready_at.map(ts),
        expires_at: e.expires_at.map(ts),
        size_bytes: e.size_bytes,
        download_url: match e.status {
            ExportStatus::Ready => format!("/api/auth/me/export/{}", e.id),
            _ => String::new(),
        },
    }
}

fn with_status<T>(body: T, code: u16) -> Response<T> {
    let mut res = Response::new(body);
    res.metadata_mut()
        .insert(HTTP_STATUS, code.to_string().parse().expect("digits are valid metadata"));
    res
}

fn auth_response(u: &user::Model, i: Issued) -> pb::AuthResponse {
    pb::AuthResponse {
        user: Some(user_pb(u)),
        access_token: i.access_token,
        refresh_token: i.refresh_token,
        token_type: "Bearer".into(),
        expires_in: i.expires_in,
        refresh_expires_in: i.refresh_expires_in,
        device_token: i.device_token,
    }
}

fn api_key_pb(k: &api_key::Model) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.to_string(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        created_at: Some(ts(k.created_at)),
        last_used_at: k.last_used_at.map(ts),
        expires_at: k.expires_at.map(ts),
    }
}

fn session_pb(s: &session::Model, current: uuid::Uuid) -> pb::Session {
    pb::Session {
        id: s.id.to_string(),
        user_agent: s.user_agent.clone(),
        ip: s.ip.clone(),
        created_at: Some(ts(s.created_at)),
        last_used_at: Some(ts(s.last_used_at)),
        expires_at: Some(ts(s.expires_at)),
        current: s.id == current,
    }
}

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for AuthGrpc {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request_locale = Locale::of(&req);
        let r = req.into_inner();
        let registration = Registration {
            email: &r.email,
            password: &r.password,
            name: &r.name,
            locale: &r.locale,
            time_zone: &r.time_zone,
            request_locale,
        };
        let user = self.auth.register(&registration).await?;
        Ok(with_status(pb::RegisterResponse { user: Some(user_pb(&user)) }, 201))
    }

    async fn login(
        &self,
        req: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let c = client(&req);
        let r = req.into_inner();
        let (user, issued) = self.auth.login(&r.email, &r.password, &r.device_token, &c).await?;
        Ok(Response::new(auth_response(&user, issued)))
    }

    async fn refresh(
        &self,
        req: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let c = client(&req);
        let r = req.into_inner();
        let (user, issued) = self.auth.refresh(&r.refresh_token, &c).await?;
        Ok(Response::new(auth_response(&user, issued)))
    }

    async fn logout(
        &self,
        req: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let who = self.caller(&req).await?;
        self.auth.logout(&who, &req.into_inner().refresh_token).await?;
        Ok(with_status(pb::LogoutResponse {}, 204))
    }

    async fn logout_all(
        &self,
        req: Request<pb::LogoutAllRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let who = self.person(&req).await?;
        self.auth.logout_all(account_of(&who)?).await?;
        Ok(with_status(pb::LogoutResponse {}, 204))
    }

    async fn verify_email(
        &self,
        req: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        self.auth.verify_email(&req.into_inner().token).await?;
        Ok(Response::new(pb::VerifyEmailResponse { email_verified: true }))
    }

    async fn resend_verification(
        &self,
        req: Request<pb::ResendVerificationRequest>,
    ) -> Result<Response<pb::ResendVerificationResponse>, Status> {
        let who = self.caller(&req).await?;
        self.auth.resend_verification(account_of(&who)?).await?;
        Ok(with_status(pb::ResendVerificationResponse {}, 202))
    }

    async fn request_password_reset(
        &self,
        req: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        self.auth.request_password_reset(&req.into_inner().email).await?;
        Ok(with_status(pb::RequestPasswordResetResponse {}, 202))
    }

    async fn reset_password(
        &self,
        req: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        let r = req.into_inner();
        self.auth.reset_password(&r.token, &r.new_password).await?;
        Ok(Response::new(pb::ResetPasswordResponse {}))
    }

    async fn change_password(
        &self,
        req: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let who = self.person(&req).await?;
        let r = req.into_inner();
        self.auth.change_password(&who, &r.current_password, &r.new_password).await?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn get_me(&self, req: Request<pb::GetMeRequest>) -> Result<Response<pb::User>, Status> {
        let who = self.caller(&req).await?;
        let user = self.auth.profile(account_of(&who)?, &who.ver).await?;
        Ok(Response::new(as_seen_by(&user, who)))
    }

    async fn delete_me(
        &self,
        req: Request<pb::DeleteMeRequest>,
    ) -> Result<Response<pb::DeleteMeResponse>, Status> {
        let who = self.person(&req).await?;
        self.auth.delete_me(&who, &req.get_ref().password).await?;
        Ok(with_status(pb::DeleteMeResponse {}, 204))
    }

    async fn change_email(
        &self,
        req: Request<pb::ChangeEmailRequest>,
    ) -> Result<Response<pb::ChangeEmailResponse>, Status> {
        let who = self.person(&req).await?;
        let r = req.into_inner();
        self.auth.change_email(&who, &r.password, &r.new_email).await?;
        Ok(with_status(pb::ChangeEmailResponse {}, 202))
    }

    async fn confirm_email_change(
        &self,
        req: Request<pb::ConfirmEmailChangeRequest>,
    ) -> Result<Response<pb::ConfirmEmailChangeResponse>, Status> {
        let email = self.auth.confirm_email_change(&req.get_ref().token).await?;
        Ok(Response::new(pb::ConfirmEmailChangeResponse { email }))
    }

    async fn update_me(
        &self,
        req: Request<pb::UpdateMeRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let who = self.person(&req).await?;
        let r = req.into_inner();
        let edit = ProfileEdit { name: r.name, locale: r.locale, time_zone: r.time_zone };
        let user = self.auth.update_me(account_of(&who)?, &edit).await?;
        Ok(Response::new(as_seen_by(&user, who)))
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let who = self.person(&req).await?;
        let sessions = self.auth.list_sessions(account_of(&who)?).await?;
        let current = who.session().unwrap_or_default();
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.iter().take(100).map(|s| session_pb(s, current)).collect(),
        }))
    }

    async fn revoke_session(
        &self,
        req: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let who = self.person(&req).await?;
        self.auth.revoke_session(account_of(&who)?, &req.into_inner().session_id).await?;
        Ok(with_status(pb::RevokeSessionResponse {}, 204))
    }

    async fn request_data_export(
        &self,
        req: Request<pb::RequestDataExportRequest>,
    ) -> Result<Response<pb::DataExport>, Status> {
        let who = self.person(&req).await?;
        Ok(with_status(export_pb(self.auth.request_export(&who).await?), 202))
    }

    async fn list_data_exports(
        &self,
        req: Request<pb::ListDataExportsRequest>,
    ) -> Result<Response<pb::ListDataExportsResponse>, Status> {
        let who = self.person(&req).await?;
        let exports = self.auth.data_exports(&who).await?.into_iter().map(export_pb).collect();
        Ok(Response::new(pb::ListDataExportsResponse { exports }))
    }

    type DownloadDataExportStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<HttpBody, Status>> + Send>>;

    async fn download_data_export(
        &self,
        req: Request<pb::DownloadDataExportRequest>,
    ) -> Result<Response<Self::DownloadDataExportStream>, Status> {
        use futures::StreamExt as _;
        let who = self.person(&req).await?;
        let id = uuid::Uuid::parse_str(&req.get_ref().export_id).map_err(|_| {
            AuthError::Invalid("export_id", skillup_kit::invalid::uuid("export_id"))
        })?;
        let archive = self.auth.export_archive(&who, id).await?;
        // The first message says what the bytes are; the rest carry only bytes.
        let mut first = true;
        let body = archive.bytes.map(move |r| {
            let content_type = if std::mem::take(&mut first) { "application/zip" } else { "" };
            r.map(|data| HttpBody {
                content_type: content_type.into(),
                data: data.to_vec(),
                extensions: Vec::new(),
            })
            .map_err(Status::from)
        });
        let mut res = Response::new(Box::pin(body) as Self::DownloadDataExportStream);
        let disposition = format!("attachment; filename=\"{}\"", archive.file_name);
        res.metadata_mut()
            .insert("content-disposition", disposition.parse().expect("ASCII by construction"));
        Ok(res)
    }

    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreatedApiKey>, Status> {
        let who = self.caller(&req).await?;
        let r = req.into_inner();
        let expires_at = match r.expires_at {
            None => None,
            Some(t) => Some(
                chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
                    .ok_or_else(|| crate::auth::refused("expires_at", "key-expiry-far", 0))?,
            ),
        };
        let (key, secret) = self.auth.create_api_key(&who, &r.name, expires_at).await?;
        Ok(with_status(pb::CreatedApiKey { key: Some(api_key_pb(&key)), secret }, 201))
    }

    async fn list_api_keys(
        &self,
        req: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let who = self.caller(&req).await?;
        let keys = self.auth.api_keys(&who).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: keys.iter().map(api_key_pb).collect(),
        }))
    }

    async fn delete_api_key(
        &self,
        req: Request<pb::DeleteApiKeyRequest>,
    ) -> Result<Response<pb::DeleteApiKeyResponse>, Status> {
        let who = self.caller(&req).await?;
        self.auth.delete_api_key(&who, &req.get_ref().key_id).await?;
        Ok(with_status(pb::DeleteApiKeyResponse {}, 204))
    }

    async fn validate_token(
        &self,
        req: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        let r = req.into_inner();
        let v = self.auth.validate(&r.token, &r.required_scopes).await?;
        let c = v.caller;
        Ok(Response::new(pb::ValidateTokenResponse {
            user_id: c.user_id,
            email: v.email,
            scopes: c.scopes,
            tier: c.tier,
            email_verified: c.email_verified,
            jti: c.jti,
            expires_at: Some(prost_types::Timestamp { seconds: c.token_exp, nanos: 0 }),
            session_id: c.sid,
            identity_version: c.ver,
            locale: c.locale,
            api_key_id: c.api_key,
        }))
    }

    async fn get_contact(
        &self,
        req: Request<pb::GetContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        let id = uuid::Uuid::parse_str(&req.get_ref().user_id)
            .map_err(|_| AuthError::Invalid("user_id", skillup_kit::invalid::uuid("user_id")))?;
        let user = self.auth.contact(id).await?;
        Ok(Response::new(pb::Contact {
            user_id: user.id.to_string(),
            email: user.email,
            name: user.name,
            locale: user.locale,
            email_verified: user.email_verified,
        }))
    }

    async fn get_jwks(
        &self,
        _req: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::Jwks>, Status> {
        let keys = self
            .auth
            .keys
            .jwks()
            .into_iter()
            .map(|k| pb::Jwk {
                kty: "RSA".into(),
                kid: k.kid,
                r#use: "sig".into(),
                alg: "RS256".into(),
                n: k.n,
                e: k.e,
            })
            .collect();
        Ok(Response::new(pb::Jwks { keys }))
    }

    async fn set_user_active(
        &self,
        req: Request<pb::SetUserActiveRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = self.admin(&req).await?;
        let r = req.into_inner();
        let user = self.auth.set_active(&actor, &r.user_id, r.active, &r.reason).await?;
        Ok(Response::new(user_pb(&user)))
    }

    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.admin(&req).await?;
        let r = req.into_inner();
        let filter = UserFilter {
            active: match r.activity() {
                pb::UserActivity::Unspecified => None,
                pb::UserActivity::Active => Some(true),
                pb::UserActivity::Inactive => Some(false),
            },
            admins_only: r.admins_only,
            query: r.query,
        };
        let page = r.page.unwrap_or_default();
        let (users, next) = self.auth.list_users(&filter, page.page_size, &page.page_token).await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(user_pb).collect(),
            page: Some(PageResponse { next_page_token: next }),
        }))
    }

    async fn set_user_admin(
        &self,
        req: Request<pb::SetUserAdminRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = self.admin(&req).await?;
        let r = req.into_inner();
        let user = self.auth.set_admin(&actor, &r.user_id, r.admin, &r.reason).await?;
        Ok(Response::new(user_pb(&user)))
    }

    async fn list_audit_log(
        &self,
        req: Request<pb::ListAuditLogRequest>,
    ) -> Result<Response<pb::ListAuditLogResponse>, Status> {
        self.admin(&req).await?;
        let r = req.into_inner();
        let bad = |field: &'static str, msg: String| Status::from(AuthError::Invalid(field, msg));
        let actor_id = match r.actor_id.as_str() {
            "" => None,
            a => Some(
                uuid::Uuid::parse_str(a)
                    .map_err(|_| bad("actor_id", skillup_kit::invalid::uuid("actor_id")))?,
            ),
        };
        let text = |field: &'static str, v: String, max: usize| match v.trim() {
            "" => Ok(None),
            t if t.chars().count() > max => {
                Err(bad(field, skillup_kit::invalid::at_most_chars(field, max)))
            }
            t => Ok(Some(t.to_owned())),
        };
        let time = |field: &'static str, t: Option<prost_types::Timestamp>| {
            t.map(|t| {
                chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
                    .ok_or_else(|| bad(field, skillup_kit::invalid::required(field)))
            })
            .transpose()
        };
        let filter = AuditFilter {
            actor_id,
            action: text("action", r.action, 64)?,
            target_id: text("target_id", r.target_id, 128)?,
            since: time("since", r.since)?,
            until: time("until", r.until)?,
            before: None,
        };
        let page = r.page.unwrap_or_default();
        let (rows, next) = self.auth.audit_log(filter, page.page_size, &page.page_token).await?;
        Ok(Response::new(pb::ListAuditLogResponse {
            entries: rows.into_iter().map(audit_pb).collect(),
            page: Some(PageResponse { next_page_token: next }),
        }))
    }
}

fn audit_pb(e: audit_entry::Model) -> AuditEntry {
    AuditEntry {
        id: e.id.to_string(),
        occurred_at: Some(ts(e.occurred_at)),
        actor_id: e.actor_id.map(|a| a.to_string()).unwrap_or_default(),
        actor: e.actor,
        action: e.action,
        target_type: e.target_type,
        target_id: e.target_id,
        before: e.before,
        after: e.after,
        reason: e.reason,
        request_id: e.request_id,
        client_ip: e.client_ip,
        component: e.component,
    }
}
