//! One way to build a component: every service implements [`Component`] — built from the same
//! [`Context`] (configuration, infrastructure, shutdown, and how to reach the other services),
//! failing with the same typed [`BuildError`] — so `skillup up` and `skillup serve` wire them
//! alike (zero2prod's `Application::build`, as a trait).

use std::time::Duration;

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

/// What every component is built from.
pub struct Context<'a> {
    pub config: &'a Config,
    pub infra: &'a Infra,
    /// Background work a component starts stops with it.
    pub shutdown: &'a Shutdown,
    /// Set under `skillup up`: the services of this process, reached in-process.
    local: Option<&'a LocalSlot>,
}

impl<'a> Context<'a> {
    pub fn new(config: &'a Config, infra: &'a Infra, shutdown: &'a Shutdown) -> Self {
        Self { config, infra, shutdown, local: None }
    }

    /// Reach the services that run in this process through `slot` (filled once their server
    /// is built), unless `edge.upstreams.<name>` sends one elsewhere.
    pub fn with_local(self, slot: Option<&'a LocalSlot>) -> Self {
        Self { local: slot, ..self }
    }

    /// How this component reaches service `name`: in-process when it runs here too, else over
    /// gRPC at `config.service_url(name)` (connected lazily).
    pub fn channel(&self, name: &'static str) -> Result<ServiceChannel, BuildError> {
        channel(self.config, self.local, name)
    }
}

fn channel(
    config: &Config,
    local: Option<&LocalSlot>,
    name: &'static str,
) -> Result<ServiceChannel, BuildError> {
    if let Some(slot) = local
        && !config.edge.upstreams.contains_key(name)
    {
        return Ok(ServiceChannel::InProcess(slot.clone()));
    }
    let endpoint = tonic::transport::Endpoint::from_shared(config.service_url(name))
        .map_err(|e| BuildError::config(name, format!("the {name} service's address: {e}")))?;
    Ok(ServiceChannel::Network(
        endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect_lazy(),
    ))
}

/// A component: its name, and how it is built.
#[async_trait::async_trait]
pub trait Component: Sized {
    /// The name logs and errors use.
    const NAME: &'static str;

    /// Migrates what it owns, starts its background work (stopped by `ctx.shutdown`) and
    /// answers the built component.
    async fn build(ctx: &Context<'_>) -> Result<Self, BuildError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn services_of_this_process_are_reached_in_process_unless_sent_elsewhere() {
        let mut config = Config::default();
        let slot = LocalSlot::new();
        let here = channel(&config, Some(&slot), "payment").unwrap();
        assert!(matches!(here, ServiceChannel::InProcess(_)));
        assert!(matches!(channel(&config, None, "payment").unwrap(), ServiceChannel::Network(_)));
        config.edge.upstreams.insert("payment".into(), "http://payment:50051".into());
        let away = channel(&config, Some(&slot), "payment").unwrap();
        assert!(matches!(away, ServiceChannel::Network(_)), "an upstream setting wins");
        config.edge.upstreams.insert("prompt".into(), "not a url at all".into());
        let Err(e) = channel(&config, None, "prompt") else { panic!("a bad address is refused") };
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
