//! The REST gateway: Cinder's Block Storage API v3 on the wire, translated into `VolumeService`
//! gRPC calls. Stateless: it holds no data and never touches the database or a node.
//!
//! This first cut serves the version documents that every Cinder client reads before anything
//! else, and a health check that follows the scheduler's gRPC health.

pub mod versions;

use std::{net::SocketAddr, time::Duration};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use basalt::{ServiceError, channel::channel_with_timeout};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

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
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningGateway {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

pub async fn start(config: GatewayConfig) -> Result<RunningGateway, ServiceError> {
    let scheduler = channel_with_timeout(&config.scheduler_endpoint, SCHEDULER_CALL_TIMEOUT)?;
    let listener = TcpListener::bind(config.listen).await.map_err(|error| {
        ServiceError::unavailable(format!("cannot listen on {}: {error}", config.listen))
    })?;
    let rest_addr = listener.local_addr().map_err(|error| {
        ServiceError::internal(format!("cannot read the bound address: {error}"))
    })?;
    let router = Router::new()
        .route("/", get(versions::all_versions))
        .route("/v3", get(versions::v3_versions))
        .route("/v3/", get(versions::v3_versions))
        .route("/healthcheck", get(healthcheck))
        .fallback(versions::not_found)
        .with_state(GatewayState { scheduler });
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "rest gateway stopped");
        }
    });
    tracing::info!(%rest_addr, scheduler = %config.scheduler_endpoint, "rest gateway started");
    Ok(RunningGateway {
        rest_addr,
        stop,
        task,
    })
}

/// 200 when the scheduler answers its gRPC health check, 503 otherwise.
async fn healthcheck(State(state): State<GatewayState>) -> (StatusCode, &'static str) {
    let mut client = HealthClient::new(state.scheduler);
    match client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Ok(response) if response.get_ref().status == ServingStatus::Serving as i32 => {
            (StatusCode::OK, "OK")
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler does not answer",
        ),
    }
}
