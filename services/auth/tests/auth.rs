//! The auth service through its gRPC client, on real PostgreSQL, Redis and RabbitMQ (and the
//! embedded adapters for the core flow).

use std::{sync::Arc, time::Duration};

use skillup_auth::{
    AuthConfig,
    keys::{KeyStore, SigningKey},
};
use skillup_kit::{Shutdown, grpc::GrpcServer, mailer::OutboxMailer};
use skillup_proto::{
    auth::v1::{self as pb, auth_service_client::AuthServiceClient},
    events::Event as _,
};
use skillup_testkit::Channel;
use skillup_testkit::{self as testing, Kind, TestInfra, TestServer};
use tonic::{Code, Request};

struct Harness {
    client: AuthServiceClient<Channel>,
    /// The identity key the server verifies assertions with (the edge's, in production).
    key: Arc<skillup_kit::identity::IdentityKey>,
    outbox: OutboxMailer,
    t: TestInfra,
    _server: TestServer,
    shutdown: Shutdown,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn test_config() -> AuthConfig {
    AuthConfig { bcrypt_cost: 4, ..AuthConfig::default() }
}

fn keys_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("skillup-auth-keys-{}", testing::unique()));
    let key = SigningKey::from_pem(testing::TEST_RSA_PRIVATE_PEM).unwrap();
    KeyStore::new(&dir).store(&key, true).unwrap();
    dir
}

async fn start_with(t: TestInfra, cfg: AuthConfig) -> Harness {
    start_holding(t, cfg, Vec::new()).await
}

/// [`start_with`], gathering people's data exports from `holders` too.
async fn start_holding(
    t: TestInfra,
    cfg: AuthConfig,
    holders: Vec<Arc<dyn skillup_auth::ports::DataHolder>>,
) -> Harness {
    let outbox = OutboxMailer::new(
        std::env::temp_dir().join(format!("skillup-outbox-{}", testing::unique())),
        "test@skillup",
    );
    let shutdown = Shutdown::new();
    let mailer = Arc::new(outbox.clone());
    let svc =
        skillup_auth::build_with(cfg, keys_dir(), &t.infra, mailer, holders, shutdown.clone())
            .await
            .unwrap();
    let key = Arc::new(skillup_kit::identity::IdentityKey::random());
    let server = TestServer::start(
        GrpcServer::builder().add_service(svc.into_server()).identity_key(key.clone()),
    )
    .await;
    Harness {
        client: AuthServiceClient::new(server.channel()),
        key,
        outbox,
        t,
        _server: server,
        shutdown,
    }
}

async fn infra(kind: Kind) -> TestInfra {
    kind.infra().await
}

async fn harness(kind: Kind) -> Harness {
    start_with(infra(kind).await, test_config()).await
}

async fn real() -> Harness {
    harness(Kind::Real).await
}

#[path = "auth/accounts.rs"]
mod accounts;
#[path = "auth/admin.rs"]
mod admin;
#[path = "auth/api_keys.rs"]
mod api_keys;
#[path = "auth/email.rs"]
mod email;
#[path = "auth/exports.rs"]
mod exports;
#[path = "auth/limits.rs"]
mod limits;
#[path = "auth/profile.rs"]
mod profile;
#[path = "auth/sessions.rs"]
mod sessions;

use accounts::*;
use admin::*;
use api_keys::*;
use email::*;
use exports::*;
use limits::*;
use profile::*;
use sessions::*;

skillup_testkit::both_adapters!(
    register_login_me_validate,
    bad_input_gets_a_reason_never_internal,
    concurrent_duplicate_registration_makes_exactly_one_account,
    every_sign_in_reports_user_logged_in_through_the_outbox,
    a_profile_sets_name_language_and_time_zone,
    an_address_changes_only_from_the_new_address,
    a_deleted_account_ends_every_session_and_keeps_only_its_id,
    logout_blacklists_at_once_and_ends_the_session,
    log_out_everywhere,
    revoke_one_session,
    rotation_reuse_revokes_the_family,
    a_retry_within_the_grace_window_gets_the_same_pair,
    concurrent_refreshes_yield_one_successor_line,
    lockout_is_exact_under_fifty_parallel_wrong_passwords,
    email_verification_is_single_use,
    verification_tokens_expire_and_resend_is_throttled,
    password_reset_and_change,
    outstanding_reset_links_die_with_a_reset_or_a_password_change,
    an_unconfirmed_name_stays_out_of_our_mail,
    a_direct_caller_cannot_choose_the_address_its_failures_count_against,
    nobody_can_lock_an_owner_out,
    tier_follows_subscription_changed_events,
    a_deactivated_account_is_refused,
    a_data_export_is_one_operation_and_downloads_as_one_zip,
    an_export_being_prepared_or_expired_cannot_be_downloaded,
    a_failed_part_is_tried_again_and_replicas_prepare_each_export_once,
    an_api_key_is_shown_once_and_speaks_for_its_account,
    an_api_key_never_carries_admin,
    a_revoked_or_expired_api_key_is_refused_at_once,
    api_keys_are_bounded_per_account_even_when_created_at_once,
    a_deactivated_or_deleted_account_loses_its_keys,
    admins_find_accounts_grant_revoke_and_every_change_is_audited,
    somebody_always_stays_an_admin,
);

fn email() -> String {
    format!("user-{}@example.com", testing::unique())
}

const PASSWORD: &str = "correct horse battery";

async fn sign_in(
    h: &mut Harness,
    email: &str,
    password: &str,
) -> Result<pb::AuthResponse, tonic::Status> {
    let req =
        pb::LoginRequest { email: email.into(), password: password.into(), ..Default::default() };
    h.client.login(req).await.map(|r| r.into_inner())
}

/// Registers an account and signs it in (registration itself answers no tokens).
async fn register(h: &mut Harness, email: &str) -> pb::AuthResponse {
    h.client
        .register(pb::RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
            name: "Ada".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let login =
        pb::LoginRequest { email: email.into(), password: PASSWORD.into(), ..Default::default() };
    h.client.login(login).await.unwrap().into_inner()
}

/// Grants `email`'s account the admin scope (only SQL can, today) and signs it in again, so
/// the token carries it.
async fn make_admin(h: &mut Harness, email: &str) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let conn = &h.t.infra.db;
    conn.execute_raw(Statement::from_string(
        conn.get_database_backend(),
        format!("UPDATE auth_users SET scopes = 'user admin' WHERE email = '{email}'"),
    ))
    .await
    .unwrap();
    sign_in(h, email, PASSWORD).await.unwrap().access_token
}

fn bearer<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

async fn validate(
    h: &mut Harness,
    token: &str,
) -> Result<pb::ValidateTokenResponse, tonic::Status> {
    h.client
        .validate_token(pb::ValidateTokenRequest { token: token.into(), required_scopes: vec![] })
        .await
        .map(|r| r.into_inner())
}

fn reason(s: &tonic::Status) -> String {
    skillup_kit::error::detail_of(s).map(|d| d.code().as_str_name().to_owned()).unwrap_or_default()
}

// ---------- accounts ----------
