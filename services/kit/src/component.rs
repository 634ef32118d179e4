//! One way to build a component: every service implements [`Component`] — built from the same
//! [`Context`] (configuration, infrastructure, shutdown, and how to reach the other services),
//! failing with the same typed [`BuildError`] — so `skillup up` and `skillup serve` wire them
//! alike (zero2prod's `Application::build`, as a trait).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use crate::{
    Config, Shutdown,
    grpc::{LocalSlot, ServiceChannel},
    infra::Infra,
};

/// Why a component could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Its migrations failed.
    #[error("{component} migrations: {source}")]
    Migrations {
        component: &'static str,
        #[source]
        source: crate::Error,
    },
    /// Something it needs at start (keys, a queue, a consumer, the mailer) is not there.
    #[error("{component}: {what}: {source}")]
    Infrastructure {
        component: &'static str,
        what: &'static str,
        #[source]
        source: crate::Error,
    },
    /// Its configuration cannot work; the message names the setting.
    #[error("{component}: {message}")]
    Config { component: &'static str, message: String },
}

impl BuildError {
    /// A `map_err` for a failed migration of `component`.
    pub fn migrations(component: &'static str) -> impl FnOnce(crate::Error) -> Self {
        move |source| BuildError::Migrations { component, source }
    }

    /// A `map_err` for something `component` needs at start.
    pub fn infrastructure(
        component: &'static str,
        what: &'static str,
    ) -> impl FnOnce(crate::Error) -> Self {
        move |source| BuildError::Infrastructure { component, what, source }
    }

    /// A configuration `component` cannot work with.
    pub fn config(component: &'static str, message: impl Into<String>) -> Self {
        BuildError::Config { component, message: message.into() }
    }
}

/// What every component needs to know about the deployment around it, whichever section
/// sets it (the binary fills it in from the sections it loaded).
#[derive(Debug, Clone)]
pub struct Deployment {
    /// gRPC address of a service by its short name (`payment`, `prompt`, …).
    pub upstreams: BTreeMap<String, String>,
    /// Address of any service not in `upstreams`.
    pub upstream_default: String,
    /// Where users reach the platform (links in emails).
    pub public_url: String,
    /// Where keys are kept (signing keys, the identity assertion key).
    pub keys_dir: PathBuf,
    /// This process's mesh certificate: its channels to other processes present it (without
    /// it they call as nobody, and every RPC but health refuses them).
    pub mesh: Option<std::sync::Arc<crate::mesh::MeshTls>>,
    /// The one currency the deployment sells in (ISO 4217, `payment.currency`): plans are
    /// priced and money is paid in it.
    pub currency: String,
}

impl Deployment {
    /// Where service `name` is reached over gRPC.
    pub fn service_url(&self, name: &str) -> &str {
        self.upstreams.get(name).unwrap_or(&self.upstream_default)
    }
}

/// What every component is built from.
pub struct Context<'a> {
    pub config: &'a Config,
    pub deployment: &'a Deployment,
    pub infra: &'a Infra,
    /// Background work a component starts stops with it.
    pub shutdown: &'a Shutdown,
    /// Set under `skillup up`: the services of this process, reached in-process.
    local: Option<&'a LocalSlot>,
    /// The component being built: who its in-process calls come from.
    component: Option<&'static str>,
}

impl<'a> Context<'a> {
    pub fn new(
        config: &'a Config,
        deployment: &'a Deployment,
        infra: &'a Infra,
        shutdown: &'a Shutdown,
    ) -> Self {
        Self { config, deployment, infra, shutdown, local: None, component: None }
    }

    /// The same context for building `component`: its in-process calls carry its name (across
    /// processes its mesh certificate says it).
    pub fn as_component(&self, component: &'static str) -> Context<'a> {
        Context { component: Some(component), ..*self }
    }

    /// Reach the services that run in this process through `slot` (filled once their server
    /// is built), unless the deployment sends one elsewhere (`edge.upstreams.<name>`).
    pub fn with_local(self, slot: Option<&'a LocalSlot>) -> Self {
        Self { local: slot, ..self }
    }

    /// How this component reaches service `name`: in-process when it runs here too, else over
    /// gRPC at its address (connected lazily).
    pub fn channel(&self, name: &'static str) -> Result<ServiceChannel, BuildError> {
        let every = Duration::from_millis(self.config.grpc.resolve_interval_ms);
        channel(self.deployment, self.local, self.component, name, every)
    }
}

fn channel(
    deployment: &Deployment,
    local: Option<&LocalSlot>,
    caller: Option<&'static str>,
    name: &'static str,
    resolve_every: Duration,
) -> Result<ServiceChannel, BuildError> {
    if let Some(slot) = local
        && !deployment.upstreams.contains_key(name)
    {
        return Ok(ServiceChannel::InProcess(match caller {
            Some(c) => slot.as_component(c),
            None => slot.clone(),
        }));
    }
    // Every replica behind the address (see `grpc::balance`).
    let settings = crate::grpc::BalanceSettings {
        resolve_every,
        connections_per_backend: 1,
        endpoint: |e| {
            e.connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
        },
        mesh: deployment.mesh.clone(),
    };
    crate::grpc::Balanced::new(name, deployment.service_url(name), settings)
        .map(ServiceChannel::Balanced)
        .map_err(|e| BuildError::config(name, format!("the {name} service's address: {e}")))
}

/// A component: its name, and how it is built.
#[async_trait::async_trait]
pub trait Component: Sized {
    /// The name logs and errors use.
    const NAME: &'static str;

    /// Its own settings (its config section, `()` when it has none).
    type Config: Sync;

    /// Migrates what it owns, starts its background work (stopped by `ctx.shutdown`) and
    /// answers the built component.
    async fn build(ctx: &Context<'_>, config: &Self::Config) -> Result<Self, BuildError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn services_of_this_process_are_reached_in_process_unless_sent_elsewhere() {
        let mut deployment = Deployment {
            upstreams: BTreeMap::new(),
            upstream_default: "http://127.0.0.1:50051".into(),
            public_url: "http://127.0.0.1:8080".into(),
            keys_dir: "keys".into(),
            mesh: None,
            currency: "RUB".into(),
        };
        let slot = LocalSlot::new();
        let here = channel(&deployment, Some(&slot), None, "payment", EVERY).unwrap();
        assert!(matches!(here, ServiceChannel::InProcess(_)));
        let there = channel(&deployment, None, None, "payment", EVERY).unwrap();
        assert!(matches!(there, ServiceChannel::Balanced(_)));
        assert_eq!(deployment.service_url("payment"), "http://127.0.0.1:50051");
        deployment.upstreams.insert("payment".into(), "http://payment:50051".into());
        assert_eq!(deployment.service_url("payment"), "http://payment:50051");
        let away = channel(&deployment, Some(&slot), None, "payment", EVERY).unwrap();
        assert!(matches!(away, ServiceChannel::Balanced(_)), "an upstream setting wins");
        deployment.upstreams.insert("prompt".into(), "not a url at all".into());
        let Err(e) = channel(&deployment, None, None, "prompt", EVERY) else {
            panic!("a bad address is refused")
        };
        assert!(matches!(e, BuildError::Config { component: "prompt", .. }), "{e}");
        assert!(e.to_string().starts_with("prompt: the prompt service's address"), "{e}");
    }

    #[test]
    fn build_errors_name_the_component_and_what_failed() {
        let e = BuildError::migrations("ai")(crate::Error::Config("x".into()));
        assert_eq!(e.to_string(), "ai migrations: configuration: x");
        let e = BuildError::infrastructure("auth", "mailer")(crate::Error::Keys("gone".into()));
        assert_eq!(e.to_string(), "auth: mailer: keys: gone");
        assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
    }
}
