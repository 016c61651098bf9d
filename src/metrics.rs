//! Prometheus metrics: every service registers its families in the process's default registry
//! (one process may run several services, as `basalt up` does, and then serves them all at one
//! endpoint), and [`serve`] answers `GET /metrics` in the text exposition format on a listener of
//! its own, apart from the APIs, so an operator can keep it on a private network.
//!
//! Every gRPC server counts its calls by service, method and status code ([`GrpcMetricsLayer`]).
//! Label values come from a closed set (route templates, method names of the served services,
//! status code names), never from what a client sent, so a hostile client cannot grow the
//! registry.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::LazyLock,
    task::{Context, Poll},
    time::Instant,
};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, TextEncoder,
};

use crate::{
    ServiceError,
    listener::{ListenerLimits, Protocol},
    server::{self, Tasks},
};

/// Latency buckets in seconds, from a cached read (sub-millisecond) to a long node call.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Registers `collector` in the process's registry. Each family is made once, in a `LazyLock`
/// of the module that owns it, so a second registration is a programming error.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(collector: C) -> C {
    prometheus::register(Box::new(collector.clone())).expect("every metric family is registered once");
    collector
}

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric name and labels"))
}

pub fn gauge(name: &str, help: &str) -> Gauge {
    register(Gauge::new(name, help).expect("a valid metric name"))
}

pub fn int_gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).expect("a valid metric name"))
}

pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(GaugeVec::new(Opts::new(name, help), labels).expect("a valid metric name and labels"))
}

pub fn int_gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric name and labels"))
}

pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    register(
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
            .expect("a valid metric name and labels"),
    )
}

/// The process's metrics in the text exposition format.
pub fn render() -> String {
    TextEncoder::new().encode_to_string(&prometheus::gather()).unwrap_or_else(|error| {
        tracing::error!(%error, "cannot encode the metrics");
        String::new()
    })
}

/// The metrics endpoint of a process.
pub struct RunningMetrics {
    pub addr: SocketAddr,
    tasks: Tasks,
}

impl RunningMetrics {
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}

/// Serves `GET /metrics` on `listen` (plain HTTP, as Prometheus scrapes) until shut down.
pub async fn serve(listen: SocketAddr, limits: ListenerLimits) -> Result<RunningMetrics, ServiceError> {
    let (listener, addr) = server::bind(listen, limits, Protocol::Http1, "metrics").await?;
    let app = Router::new().route(
        "/metrics",
        get(|| async { ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], render()).into_response() }),
    );
    let mut tasks = Tasks::new();
    let stopped = tasks.stopped();
    tasks.spawn(server::serve_http1(listener, app, stopped));
    tracing::info!(%addr, "metrics endpoint started");
    Ok(RunningMetrics { addr, tasks })
}

static GRPC_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "basalt_grpc_server_calls_total",
        "gRPC calls served, by service, method and status code",
        &["service", "method", "code"],
    )
});
static GRPC_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "basalt_grpc_server_call_duration_seconds",
        "Time from a gRPC call's arrival to the end of its response, by service and method",
        &["service", "method"],
        LATENCY_BUCKETS,
    )
});

/// Counts and times the calls of a gRPC server. `services` are the names it serves: a call to any
/// other, or to a method the server does not have (answered UNIMPLEMENTED), counts as `unknown`.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    services: std::sync::Arc<[&'static str]>,
}

impl GrpcMetricsLayer {
    pub fn new(services: &[&'static str]) -> Self {
        Self { services: services.into() }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService { inner, services: self.services.clone() }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    services: std::sync::Arc<[&'static str]>,
}

impl<S, Request, ResponseBody> tower::Service<http::Request<Request>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<Request>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Body<Data = Bytes> + Unpin + Send + 'static,
{
    type Response = http::Response<MeteredBody<ResponseBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<Request>) -> Self::Future {
        let call = Call::new(request.uri().path(), &self.services);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // An error answered at once carries its status in the headers (trailers-only); any
            // other call's status comes in the trailers at the end of the body.
            let call = match grpc_status(response.headers()) {
                Some(code) => {
                    call.finish(code);
                    None
                }
                None => Some(call),
            };
            Ok(response.map(|body| MeteredBody { inner: body, call }))
        })
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(value))
}

/// One call being served: its labels and when it came.
struct Call {
    service: &'static str,
    method: String,
    started: Instant,
}

impl Call {
    fn new(path: &str, services: &[&'static str]) -> Self {
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("", ""));
        match services.iter().find(|known| **known == service) {
            // Bounded by the code below: a method the service lacks is relabelled when it finishes.
            Some(known) if !method.is_empty() && method.len() <= 64 => {
                Self { service: known, method: method.to_owned(), started: Instant::now() }
            }
            _ => Self { service: "unknown", method: "unknown".into(), started: Instant::now() },
        }
    }

    fn finish(self, code: tonic::Code) {
        let method = if code == tonic::Code::Unimplemented { "unknown" } else { self.method.as_str() };
        let service = if method == "unknown" { "unknown" } else { self.service };
        let code_name = format!("{code:?}");
        GRPC_CALLS.with_label_values(&[service, method, &code_name]).inc();
        GRPC_SECONDS.with_label_values(&[service, method]).observe(self.started.elapsed().as_secs_f64());
    }
}

/// A response body that records its call when the trailers pass, or as CANCELLED when the body is
/// dropped before the end (the client went away).
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish(tonic::Code::Cancelled);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for MeteredBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(context);
        let finished = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().and_then(grpc_status),
            Poll::Ready(Some(Err(_))) => Some(tonic::Code::Internal),
            // The end without a status in the trailers: the server's own framing failed.
            Poll::Ready(None) => Some(tonic::Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = finished
            && let Some(call) = self.call.take()
        {
            call.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service, ServiceExt};

    use super::*;

    /// A response body that ends with `grpc-status: <code>` in its trailers, as tonic's do.
    struct Trailers(Option<http::HeaderMap>);

    impl Body for Trailers {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.take().map(|trailers| Ok(Frame::trailers(trailers))))
        }
    }

    fn calls(service: &str, method: &str, code: &str) -> u64 {
        GRPC_CALLS.with_label_values(&[service, method, code]).get()
    }

    async fn serve(path: &str, code: tonic::Code) {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", (code as i32).to_string().parse().unwrap());
        let inner = tower::service_fn(move |_: http::Request<()>| {
            let trailers = trailers.clone();
            async move { Ok::<_, Infallible>(http::Response::new(Trailers(Some(trailers)))) }
        });
        let mut service = GrpcMetricsLayer::new(&["test.v1.Kept"]).layer(inner);
        let request = http::Request::builder().uri(path).body(()).unwrap();
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        let mut body = std::pin::pin!(response.into_body());
        while std::future::poll_fn(|context| body.as_mut().poll_frame(context)).await.is_some() {}
    }

    #[tokio::test]
    async fn a_call_counts_by_its_service_method_and_the_status_in_its_trailers() {
        let before = calls("test.v1.Kept", "Find", "NotFound");
        serve("/test.v1.Kept/Find", tonic::Code::NotFound).await;
        assert_eq!(calls("test.v1.Kept", "Find", "NotFound"), before + 1);
    }

    #[tokio::test]
    async fn what_a_client_invents_is_never_a_label() {
        let before = calls("unknown", "unknown", "Unimplemented");
        // A method the service lacks (the server answers UNIMPLEMENTED), a service it does not
        // serve, and an absurd name: none of them becomes a label value.
        serve("/test.v1.Kept/Invented", tonic::Code::Unimplemented).await;
        serve("/evil.Service/Anything", tonic::Code::Unimplemented).await;
        serve(&format!("/test.v1.Kept/{}", "x".repeat(200)), tonic::Code::Unimplemented).await;
        assert_eq!(calls("unknown", "unknown", "Unimplemented"), before + 3);
        let text = render();
        assert!(!text.contains("Invented") && !text.contains("evil.Service") && !text.contains("xxxx"));
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_counts_as_cancelled() {
        let before = calls("test.v1.Kept", "Stream", "Cancelled");
        let inner = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(Trailers(None)))
        });
        let mut service = GrpcMetricsLayer::new(&["test.v1.Kept"]).layer(inner);
        let request = http::Request::builder().uri("/test.v1.Kept/Stream").body(()).unwrap();
        drop(service.ready().await.unwrap().call(request).await.unwrap());
        assert_eq!(calls("test.v1.Kept", "Stream", "Cancelled"), before + 1);
    }
}
