//! Logs, traces and error reports, set up once per process by [`init`]:
//! - logs: `RUST_LOG` filter (default `info`), human output on a terminal, JSON when
//!   `SKILLUP_LOG_FORMAT=json` (or when stderr is not a terminal and the format is `auto`); every
//!   line inside a request carries its span's `request_id` and `trace_id`;
//! - traces: every span is an OpenTelemetry span, exported over OTLP/HTTP when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set (batched, off the request path), under a filter of
//!   their own (`SKILLUP_TRACE_FILTER`, default `info`) so quieter logs keep full traces. The W3C
//!   `traceparent` travels in HTTP headers, gRPC metadata and bus message headers: see
//!   [`adopt`], [`inject_metadata`], [`inject_headers`] and [`extract_headers`];
//! - errors: with `SENTRY_DSN` set, every `error!` event goes to Sentry with its span's request
//!   and trace ids, and no request data beyond them (no headers, bodies or user details).

use std::{collections::BTreeMap, io::IsTerminal};

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, LevelFilter},
    fmt,
    prelude::*,
};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    #[default]
    Auto,
    Pretty,
    Json,
}

/// Keeps the exporters running; dropping it flushes the spans still batched and the error
/// reports still queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
    _sentry: Option<sentry::ClientInitGuard>,
    /// Where spans go, for the start-up log line.
    pub otlp_endpoint: Option<String>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Where traces and error reports go.
#[derive(Debug, Clone, Default)]
pub struct Exporters {
    /// OTLP/HTTP base URL (`…/v1/traces` is appended); none = spans are not exported.
    pub otlp_endpoint: Option<String>,
    /// Sentry DSN; none = no error reports.
    pub sentry_dsn: Option<String>,
}

impl Exporters {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` and `SENTRY_DSN` (blank = unset).
    pub fn from_env() -> Self {
        Self {
            otlp_endpoint: env_nonempty("OTEL_EXPORTER_OTLP_ENDPOINT"),
            sentry_dsn: env_nonempty("SENTRY_DSN"),
        }
    }
}

/// What is logged unless `RUST_LOG` says otherwise.
const DEFAULT_LOGS: &str = "info,sqlx=warn,sea_orm_migration=warn,lapin=warn,h2=warn,tower=warn";

/// What is traced (with an OTLP endpoint) unless `SKILLUP_TRACE_FILTER` says otherwise: every
/// request's spans, and the warnings and errors inside them.
const DEFAULT_TRACES: &str = "info,sqlx=warn,sea_orm_migration=warn,lapin=warn,h2=warn,tower=warn";

fn env_filter(var: &str, default: &str) -> EnvFilter {
    EnvFilter::try_from_env(var).unwrap_or_else(|_| EnvFilter::new(default))
}

/// Installs the global subscriber for `service` (the OpenTelemetry `service.name` unless
/// `OTEL_SERVICE_NAME` says otherwise). Calling it twice is harmless: the second call installs
/// nothing, but its [`Telemetry`] still flushes its own exporters.
pub fn init(format: LogFormat, service: &str, exporters: Exporters) -> Telemetry {
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };

    let service = env_nonempty("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_owned());
    let resource = Resource::builder()
        .with_service_name(service.clone())
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let mut provider = SdkTracerProvider::builder().with_resource(resource);
    let otlp_endpoint = exporters.otlp_endpoint;
    if let Some(endpoint) = &otlp_endpoint {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        match opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(url).build() {
            Ok(exporter) => provider = provider.with_batch_exporter(exporter),
            Err(e) => eprintln!("warning: OTLP exporter not started: {e}"),
        }
    }
    // Without an endpoint spans still get trace ids (logs and error reports carry them, and
    // they are passed on), they are just not exported.
    let provider = provider.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer("skillup");

    let sentry_guard = exporters.sentry_dsn.map(|dsn| {
        let mut options = sentry::ClientOptions::default();
        options.release = Some(format!("skillup@{}", env!("CARGO_PKG_VERSION")).into());
        options.environment = env_nonempty("SENTRY_ENVIRONMENT").map(Into::into);
        options.server_name = Some(service.clone().into());
        options.send_default_pii = false;
        options.attach_stacktrace = true;
        sentry::init((dsn, options))
    });
    let sentry_layer = sentry_guard.as_ref().map(|_| SentryErrors);

    let logs = || env_filter("RUST_LOG", DEFAULT_LOGS);
    if otlp_endpoint.is_none() {
        // Spans live as long as the logs want them (they give log lines their ids).
        let _ = tracing_subscriber::registry()
            .with(logs())
            .with(IdsLayer)
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .with(fmt_layer(json))
            .with(sentry_layer)
            .try_init();
    } else {
        // Exported traces have a filter of their own: an operator who quiets the logs
        // (`RUST_LOG=warn`) still gets every request's trace.
        let traces = || env_filter("SKILLUP_TRACE_FILTER", DEFAULT_TRACES);
        let _ = tracing_subscriber::registry()
            .with(IdsLayer.with_filter(logs().or(traces())))
            .with(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(traces()))
            .with(fmt_layer(json).with_filter(logs()))
            .with(sentry_layer.map(|l| l.with_filter(LevelFilter::ERROR)))
            .try_init();
    }
    Telemetry { provider, _sentry: sentry_guard, otlp_endpoint }
}

/// Log lines on stderr: JSON, or compact for a terminal.
fn fmt_layer<S>(json: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    if json {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        fmt::layer().compact().with_writer(std::io::stderr).boxed()
    }
}

/// `error!` events as Sentry events, tagged with the request and trace ids of the span they
/// happened in; their own fields as extra data. Nothing else: no breadcrumbs (log lines may
/// name users), no spans, no request headers or bodies.
struct SentryErrors;

#[derive(Default)]
struct EventFields {
    message: String,
    extra: BTreeMap<String, String>,
}

impl tracing::field::Visit for EventFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.extra.insert(field.name().to_owned(), value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

impl<S> Layer<S> for SentryErrors
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, cx: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() != tracing::Level::ERROR {
            return;
        }
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let mut e = sentry::protocol::Event {
            level: sentry::Level::Error,
            message: Some(fields.message),
            logger: Some(event.metadata().target().to_owned()),
            ..Default::default()
        };
        for (k, v) in fields.extra {
            e.extra.insert(k, v.into());
        }
        if let Some(scope) = cx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(ids) = span.extensions().get::<Ids>() {
                    if !ids.request_id.is_empty() {
                        e.tags.insert("request_id".into(), ids.request_id.clone());
                    }
                    if !ids.trace_id.is_empty() {
                        e.tags.insert("trace_id".into(), ids.trace_id.clone());
                    }
                }
            }
        }
        sentry::capture_event(e);
    }
}

/// A span's `request_id` and `trace_id` as recorded, kept where the Sentry mapper can read them.
#[derive(Default, Clone)]
struct Ids {
    request_id: String,
    trace_id: String,
}

struct IdsLayer;

struct IdsVisitor<'a>(&'a mut Ids);

impl tracing::field::Visit for IdsVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "request_id" => self.0.request_id = value.to_owned(),
            "trace_id" => self.0.trace_id = value.to_owned(),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if matches!(field.name(), "request_id" | "trace_id") {
            self.record_str(field, format!("{value:?}").trim_matches('"'));
        }
    }
}

impl<S> Layer<S> for IdsLayer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = cx.span(id) {
            let mut ids = Ids::default();
            attrs.record(&mut IdsVisitor(&mut ids));
            span.extensions_mut().insert(ids);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = cx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(ids) = ext.get_mut::<Ids>() {
                values.record(&mut IdsVisitor(ids));
            }
        }
    }
}

/// The W3C trace context of `span` (its trace id and its own span id).
pub fn context_of(span: &Span) -> Context {
    span.context()
}

/// Makes `span` a child of the trace in `parent` (when it carries one), then records the
/// span's `trace_id` field (declare it `trace_id = tracing::field::Empty`).
pub fn adopt_context(span: &Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// [`adopt_context`] with the parent read from HTTP headers or gRPC metadata (`traceparent`).
pub fn adopt(span: &Span, headers: &http::HeaderMap) {
    adopt_context(span, extract_http(headers));
}

/// The trace context in HTTP headers.
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HttpCarrier(headers))
}

/// The trace context in bus message headers.
pub fn extract_headers(headers: &BTreeMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(&MapCarrier(headers))
}

/// Writes the current span's trace context into bus message headers, unless they carry one
/// already (a retry keeps the trace it started in).
pub fn inject_headers(headers: &mut BTreeMap<String, String>) {
    if headers.contains_key("traceparent") {
        return;
    }
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MapCarrierMut(headers));
    }
}

/// Writes the current span's trace context into outgoing gRPC metadata.
pub fn inject_metadata(md: &mut tonic::metadata::MetadataMap) {
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataCarrier(md));
    }
}

struct MapCarrier<'a>(&'a BTreeMap<String, String>);

impl Extractor for MapCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct MapCarrierMut<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapCarrierMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct HttpCarrier<'a>(&'a http::HeaderMap);

impl Extractor for HttpCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MetadataCarrier<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_through_message_headers() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let headers = BTreeMap::from([("traceparent".to_owned(), tp.to_owned())]);
        let cx = extract_headers(&headers);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = BTreeMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut MapCarrierMut(&mut out));
        assert_eq!(out["traceparent"], tp);
        // A message that carries a context keeps it.
        let mut kept = headers.clone();
        inject_headers(&mut kept);
        assert_eq!(kept["traceparent"], tp);
    }
}
