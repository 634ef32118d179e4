//! Readiness: named probes of a process's real dependencies (database, cache, bus). gRPC
//! health and `/readyz` both follow it.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};

type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A set of probes; cloning shares them.
#[derive(Clone, Default)]
pub struct Readiness {
    probes: Vec<(String, Probe)>,
}

/// One probe's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeResult {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a probe; it must answer within two seconds or counts as failed.
    pub fn with<F, Fut>(mut self, name: impl Into<String>, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.probes.push((name.into(), Arc::new(move || probe().boxed())));
        self
    }

    /// Adds every probe of `other`.
    pub fn merge(mut self, other: &Readiness) -> Self {
        self.probes.extend(other.probes.iter().cloned());
        self
    }

    /// Runs every probe concurrently.
    pub async fn check(&self) -> Vec<ProbeResult> {
        let runs = self.probes.iter().map(|(name, probe)| {
            let fut = probe();
            let name = name.clone();
            async move {
                let res = match tokio::time::timeout(Duration::from_secs(2), fut).await {
                    Ok(r) => r,
                    Err(_) => Err("timed out".to_owned()),
                };
                ProbeResult { name, ok: res.is_ok(), error: res.err() }
            }
        });
        futures::future::join_all(runs).await
    }

    /// True when every probe passes.
    pub async fn is_ready(&self) -> bool {
        self.check().await.iter().all(|r| r.ok)
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.probes.iter().map(|(n, _)| n)).finish()
    }
}
