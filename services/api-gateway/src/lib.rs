//! The REST gateway: Cinder's Block Storage API v3 on the wire, translated into `VolumeService`
//! gRPC calls. Stateless: it holds no data and never touches the database or a node.
//!
//! This first cut serves the version documents that every Cinder client reads before anything
//! else, and a health check that follows the scheduler's gRPC health.

pub mod versions;

use std::{net::SocketAddr, time::Duration};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use basalt::{
    ServiceError,
    channel::channel_with_timeout,
    server::{self, Tasks},
};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const SCHEDULER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// The scheduler's VolumeService endpoint, e.g. `http://127.0.0.1:8780`.
    pub scheduler_endpoint: String,
}

#[derive(Clone)]
struct GatewayState {
    scheduler: Channel,
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

pub async fn start(config: GatewayConfig) -> Result<RunningGateway, ServiceError> {
    let scheduler = channel_with_timeout(&config.scheduler_endpoint, SCHEDULER_CALL_TIMEOUT)?;
    let (listener, rest_addr) = server::bind(config.listen).await?;
    let router = Router::new()
        .route("/", get(versions::all_versions))
        .route("/v3", get(versions::v3_versions))
        .route("/v3/", get(versions::v3_versions))
        .route("/healthcheck", get(healthcheck))
        .fallback(versions::not_found)
        .with_state(GatewayState { scheduler });
    let mut tasks = Tasks::new();
    let stopped = tasks.stopped();
    tasks.spawn(async move {
        if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(stopped).await {
            tracing::error!(%error, "rest gateway stopped");
        }
    });
    tracing::info!(%rest_addr, scheduler = %config.scheduler_endpoint, "rest gateway started");
    Ok(RunningGateway { rest_addr, tasks })
}

/// 200 when the scheduler answers its gRPC health check, 503 otherwise.
async fn healthcheck(State(state): State<GatewayState>) -> (StatusCode, &'static str) {
    let mut client = HealthClient::new(state.scheduler);
    match client.check(HealthCheckRequest { service: String::new() }).await {
        Ok(response) if response.get_ref().status == ServingStatus::Serving as i32 => (StatusCode::OK, "OK"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "the scheduler does not answer"),
    }
}
