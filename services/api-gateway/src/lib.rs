//! The REST gateway: Cinder's Block Storage API v3 on the wire, translated into `VolumeService`
//! gRPC calls. Stateless: it holds no data and never touches the database or a node.
//!
//! Every `/v3` resource is routed twice, as Cinder does: under `/v3/{project_id}/...` and, for
//! microversion 3.67 clients, under `/v3/...` with the project taken from the token.

pub mod auth;
pub mod body;
pub mod fault;
mod metrics;
pub mod microversion;
pub mod openapi;
pub mod routes;
pub mod schemas;
pub mod versions;
pub mod views;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, HttpBody},
    extract::{FromRequestParts, Path, Query, Request, State},
    http::{HeaderValue, StatusCode, header, header::HeaderName, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use basalt::channel::Channel;
use basalt::{
    ServiceError,
    channel::channel_with_timeout,
    context::CallContext,
    listener::{ListenerLimits, Protocol},
    proto::volume_service_client::VolumeServiceClient,
    server::{self, Tasks},
    tls::{MeshTls, Role},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

pub use crate::auth::{AuthConfig, KeystoneConfig};
use crate::{
    auth::Authenticator,
    fault::Fault,
    microversion::{ApiVersion, VersionError},
};

const SCHEDULER_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest request target accepted (eventlet, under which Cinder runs, refuses lines over
/// 16 KiB as well).
const MAX_URI_BYTES: usize = 16 << 10;
/// The media types of JSON bodies that Cinder accepts (`api/openstack/wsgi.py`).
const JSON_MEDIA_TYPES: [&str; 2] = ["application/json", "application/vnd.openstack.volume+json"];

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// The scheduler's VolumeService endpoint, e.g. `https://127.0.0.1:8780`.
    pub scheduler_endpoint: String,
    /// The gateway's mesh certificate, presented to the scheduler.
    pub tls: MeshTls,
    pub auth: AuthConfig,
    /// Bounds on the REST listener's connections and on request bodies.
    pub limits: ListenerLimits,
}

#[derive(Clone)]
pub struct GatewayState {
    scheduler: Channel,
    auth: Arc<Authenticator>,
    body_timeout: Duration,
}

pub struct RunningGateway {
    pub rest_addr: SocketAddr,
    tasks: Tasks,
}

impl RunningGateway {
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}

impl GatewayState {
    pub fn new(
        scheduler_endpoint: &str,
        tls: &MeshTls,
        auth: AuthConfig,
        limits: ListenerLimits,
    ) -> Result<Self, ServiceError> {
        Ok(Self {
            scheduler: channel_with_timeout(scheduler_endpoint, tls, &Role::Scheduler, SCHEDULER_CALL_TIMEOUT)?,
            auth: Arc::new(Authenticator::new(auth)?),
            body_timeout: limits.body_timeout,
        })
    }
}

pub async fn start(config: GatewayConfig) -> Result<RunningGateway, ServiceError> {
    let state = GatewayState::new(&config.scheduler_endpoint, &config.tls, config.auth.clone(), config.limits)?;
    let (listener, rest_addr) = server::bind(config.listen, config.limits, Protocol::Http1, "rest").await?;
    let app = router(state);
    let mut tasks = Tasks::new();
    let stopped = tasks.stopped();
    tasks.spawn(server::serve_http1(listener, app, stopped));
    tracing::info!(%rest_addr, scheduler = %config.scheduler_endpoint, "rest gateway started");
    Ok(RunningGateway { rest_addr, tasks })
}

pub fn router(state: GatewayState) -> Router {
    let resources = routes::resources();
    let api = Router::new()
        .nest("/v3/{project_id}", resources.clone())
        .nest("/v3", resources)
        .layer(middleware::from_fn(versioned));
    Router::new()
        .route("/", get(versions::all_versions))
        .route("/v3", get(versions::v3_versions))
        .route("/v3/", get(versions::v3_versions))
        .route("/healthcheck", get(healthcheck))
        .route("/openapi.json", get(openapi::document))
        .merge(api)
        .route_layer(middleware::from_fn(metrics::matched_route))
        .fallback(versions::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), bounded_request))
        .layer(middleware::from_fn(fault_bodies))
        .layer(middleware::from_fn(metrics::metered))
        .layer(middleware::from_fn(traced))
        .with_state(state)
}

/// Each request runs in a span that continues the client's trace (W3C `traceparent`), so the
/// gRPC calls it makes carry that trace on.
async fn traced(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let span = basalt::telemetry::continue_trace(
        tracing::info_span!(
            "rest",
            otel.name = "rest request",
            otel.kind = "server",
            http.request.method = metrics::method_label(request.method()),
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        ),
        request.headers(),
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.route", metrics::route_of(&response));
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// The request's `x-openstack-request-id`, which the calls it makes carry to the scheduler.
#[derive(Debug, Clone)]
struct RequestId(String);

/// Every response carries `x-openstack-request-id`, and every error a Cinder fault body: errors
/// that the router makes itself (405 with its `Allow` header, ...) come without one.
async fn fault_bodies(mut request: Request, next: Next) -> Response {
    let id = basalt::context::new_request_id();
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    let status = response.status();
    if status.as_u16() >= 400 && response.body().size_hint().exact() == Some(0) {
        let message = match status {
            StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed on this resource; see the Allow header",
            _ => status.canonical_reason().unwrap_or("the request failed"),
        };
        let fault = Fault::new(status, message.to_ascii_lowercase()).into_response();
        let (parts, body) = fault.into_parts();
        *response.body_mut() = body;
        for (name, value) in parts.headers {
            if let Some(name) = name {
                response.headers_mut().insert(name, value);
            }
        }
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HeaderName::from_static(basalt::context::REQUEST_ID_HEADER), value);
    }
    response
}

/// What every request must be before a handler sees it: a request target of at most 16 KiB, a
/// JSON body when it has one, and a body that arrives within the body timeout.
async fn bounded_request(State(state): State<GatewayState>, request: Request, next: Next) -> Response {
    if request.uri().to_string().len() > MAX_URI_BYTES {
        return Fault::new(StatusCode::URI_TOO_LONG, "the request url is longer than 16 KiB").into_response();
    }
    if let Err(fault) = check_media_type(&request) {
        return fault.into_response();
    }
    let (parts, body) = request.into_parts();
    let body = Body::new(body::DeadlineBody::new(body, state.body_timeout));
    next.run(Request::from_parts(parts, body)).await
}

/// Each query parameter at most once (which of two values would win is a guess), and no control
/// characters in values (no name or filter holds one).
fn check_query(query: &[(String, String)]) -> Result<(), Fault> {
    for (index, (key, value)) in query.iter().enumerate() {
        if query[..index].iter().any(|(earlier, _)| earlier == key) {
            return Err(Fault::bad_request(format!(
                "the query parameter {} is given more than once: give it once",
                basalt::error::excerpt(key)
            )));
        }
        if value.chars().any(char::is_control) || key.chars().any(char::is_control) {
            return Err(Fault::bad_request(format!(
                "the query parameter {} holds a control character",
                basalt::error::excerpt(key)
            )));
        }
    }
    Ok(())
}

/// A request with a body must declare JSON, or declare nothing (taken as JSON).
fn check_media_type(request: &Request) -> Result<(), Fault> {
    if request.body().size_hint().exact() == Some(0) {
        return Ok(());
    }
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else { return Ok(()) };
    let media_type = value.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
    if JSON_MEDIA_TYPES.iter().any(|json| media_type.eq_ignore_ascii_case(json)) {
        return Ok(());
    }
    Err(Fault::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "unsupported content type {}: send application/json",
            basalt::error::excerpt(value.to_str().unwrap_or("(not text)"))
        ),
    ))
}

/// Negotiates the microversion, and echoes it (with `Vary`) on every response, errors included.
async fn versioned(mut request: Request, next: Next) -> Response {
    let version = match microversion::negotiate(request.headers()) {
        Ok(version) => version,
        Err(VersionError::Malformed(message)) => return Fault::bad_request(message).into_response(),
        Err(VersionError::Unsupported(message)) => {
            return Fault::new(StatusCode::NOT_ACCEPTABLE, message).into_response();
        }
    };
    request.extensions_mut().insert(version);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&version.header_value()) {
        headers.insert(HeaderName::from_static(microversion::HEADER), value);
    }
    headers.insert(axum::http::header::VARY, HeaderValue::from_static("OpenStack-API-Version"));
    response
}

/// 200 when the scheduler answers its gRPC health check, 503 otherwise.
async fn healthcheck(State(state): State<GatewayState>) -> (StatusCode, &'static str) {
    let mut client = HealthClient::new(state.scheduler);
    match client.check(HealthCheckRequest { service: String::new() }).await {
        Ok(response) if response.get_ref().status == ServingStatus::Serving as i32 => (StatusCode::OK, "OK"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "the scheduler does not answer"),
    }
}

/// What every `/v3` handler needs: who calls, at which microversion, the path parameters and
/// query, the base of links, and a client of the scheduler.
pub struct Rest {
    pub context: CallContext,
    pub version: ApiVersion,
    pub params: HashMap<String, String>,
    pub query: Vec<(String, String)>,
    /// `http://host/v3/<project>` (or `/v3` on project-less routes), for links.
    pub base: String,
    pub client: VolumeServiceClient<Channel>,
}

impl Rest {
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.context.request(message)
    }

    pub fn client(&self) -> VolumeServiceClient<Channel> {
        self.client.clone()
    }

    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or_default()
    }

    /// The last value of a query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// For what only some microversions of an operation accept (an action, say); whole operations
    /// are gated by the route table.
    pub fn require_version(&self, minor: u16, what: &str) -> Result<(), Fault> {
        microversion::version_needed(self.version, minor, what)
    }
}

impl FromRequestParts<GatewayState> for Rest {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, state: &GatewayState) -> Result<Self, Self::Rejection> {
        let version = parts.extensions.get::<ApiVersion>().copied().unwrap_or(ApiVersion::MIN);
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|error| Fault::bad_request(format!("invalid path: {error}")))?;
        let Query(query) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|error| Fault::bad_request(format!("invalid query string: {error}")))?;
        check_query(&query)?;
        let url_project = params.get("project_id").map(String::as_str);
        let context = state.auth.authenticate(&parts.headers, url_project).await?;
        let context = match parts.extensions.get::<RequestId>() {
            Some(RequestId(id)) => context.for_request(id),
            None => context,
        };
        let host =
            parts.headers.get(axum::http::header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("localhost");
        let base = match url_project {
            Some(project) => format!("http://{host}/v3/{project}"),
            None => format!("http://{host}/v3"),
        };
        Ok(Self { context, version, params, query, base, client: VolumeServiceClient::new(state.scheduler.clone()) })
    }
}
