//! Logs and traces, set up once per process. Logs: human-readable by default, JSON lines on
//! request, filtered by `RUST_LOG` (default `info`, with sqlx's per-query lines kept to warnings).
//! Traces: when an OTLP endpoint is given (`--otlp-endpoint` or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), spans are exported over OTLP/gRPC, and the W3C trace context
//! (`traceparent`) travels on every gRPC hop: a mesh [`Channel`](crate::channel::Channel) writes the
//! caller's into each request and every gRPC server ([`TraceContextLayer`]) continues it, so one
//! REST request's trace runs from the gateway through the scheduler and its operation to the node.
//! The standard `OTEL_*` variables (service name, sampler, batch delay) apply.

use std::{
    io::IsTerminal,
    pin::Pin,
    task::{Context, Poll},
};

use opentelemetry::{
    global,
    propagation::{Extractor, Injector},
    trace::TracerProvider,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// What the process exports; flush it with [`Telemetry::shutdown`] before the process ends.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered.
    pub fn shutdown(self) {
        if let Some(traces) = self.traces
            && let Err(error) = traces.shutdown()
        {
            tracing::warn!(%error, "cannot flush the last traces");
        }
    }
}

/// Sets up logging, and trace export to `otlp_endpoint` (`http://collector:4317`) when given, as
/// `service` unless `OTEL_SERVICE_NAME` names it. Call inside the Tokio runtime.
pub fn init(json: bool, service: &'static str, otlp_endpoint: Option<&str>) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colours only for a person at a terminal: escape codes in journald or a log file are noise.
    let logs = fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let logs = if json { logs.json().boxed() } else { logs.boxed() };
    let (traces, exporting) = match otlp_endpoint.map(|endpoint| tracer_provider(service, endpoint)) {
        Some(Ok(provider)) => {
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("basalt"));
            (Some(provider), Some(layer))
        }
        Some(Err(error)) => {
            eprintln!("cannot export traces: {error}");
            (None, None)
        }
        None => (None, None),
    };
    global::set_text_map_propagator(TraceContextPropagator::new());
    // A second initialisation (tests running several services in one process) is harmless.
    let _ = tracing_subscriber::registry().with(filter).with(logs).with(exporting).try_init();
    if let Some(endpoint) = otlp_endpoint
        && traces.is_some()
    {
        tracing::info!(endpoint, service, "exporting traces over OTLP");
    }
    Telemetry { traces }
}

fn tracer_provider(service: &'static str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|error| error.to_string())?;
    let resource = match std::env::var_os("OTEL_SERVICE_NAME") {
        // The environment's name wins (the default resource reads it).
        Some(_) => Resource::builder().build(),
        None => Resource::builder().with_service_name(service).build(),
    };
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// Writes the current span's trace context into `headers` (nothing when there is no trace).
pub fn inject_context(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut HeaderCarrier(headers)));
}

/// The trace context a peer sent in `headers`, to continue its trace.
pub fn extract_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderView(headers)))
}

struct HeaderCarrier<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

struct HeaderView<'a>(&'a http::HeaderMap);

impl Extractor for HeaderView<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// `span`, made part of the trace the caller sent in `headers` (if it sent one).
pub fn continue_trace(span: tracing::Span, headers: &http::HeaderMap) -> tracing::Span {
    // Only a span the OpenTelemetry layer sees can take a parent; without one this is a no-op.
    let _ = span.set_parent(extract_context(headers));
    span
}

/// Runs every call of a gRPC server in a span that continues the caller's trace.
#[derive(Clone, Default)]
pub struct TraceContextLayer;

impl<S> tower::Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContextService { inner }
    }
}

#[derive(Clone)]
pub struct TraceContextService<S> {
    inner: S,
}

impl<S, Body> tower::Service<http::Request<Body>> for TraceContextService<S>
where
    S: tower::Service<http::Request<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The path is the caller's; only its length is trusted here, the metrics decide labels.
        let path = request.uri().path();
        let name = if path.len() <= 128 { path.trim_start_matches('/') } else { "unknown" };
        let span = continue_trace(
            tracing::info_span!("grpc", otel.name = name, otel.kind = "server", rpc.system = "grpc"),
            request.headers(),
        );
        let call = self.inner.call(request);
        Box::pin(call.instrument(span))
    }
}
