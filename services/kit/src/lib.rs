//! What every SkillUp service shares: layered config, telemetry, the gRPC server bootstrap
//! (health driven by real readiness, reflection, per-RPC metrics, graceful shutdown), the ops
//! HTTP endpoints, database connections and migrations, and the two infrastructure ports —
//! [`cache::Cache`] and [`bus::Bus`] — each with a real adapter (Redis, RabbitMQ) and an
//! in-process one for `skillup up`.

pub mod audit;
pub mod breaker;
pub mod bus;
pub mod cache;
pub mod component;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod export;
pub mod files;
pub mod grpc;
pub mod i18n;
pub mod identity;
pub mod infra;
pub mod invalid;
pub mod mailer;
pub mod mesh;
pub mod ops;
pub mod outbox;
pub mod readiness;
pub mod shutdown;
pub mod telemetry;

pub use config::Config;
pub use error::{Error, Result};
pub use readiness::Readiness;
pub use shutdown::Shutdown;

/// rustls has two crypto providers in this tree (sqlx brings ring; reqwest, lapin and fred
/// bring aws-lc-rs), so it has no default: install one before any TLS client is built.
/// Safe to call many times.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Raises this process's open-file limit to the hard limit (every connection is a file; the
/// soft limit is often 1,024), where the system allows it. Returns the limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "the open-file limit could not be raised");
        }
    }
    getrlimit(Resource::Nofile).current
}
