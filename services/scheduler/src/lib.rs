//! The scheduler: Basalt's control plane. It owns the database (the only service that does),
//! serves the public `VolumeService`, places volumes on pools from the capacity reports on the
//! bus, and drives the nodes through `NodeAgent`.

pub mod api;
pub mod capacity;
pub mod db;
pub mod nodes;
pub mod placement;
pub mod volumes;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use basalt::{
    ServiceError,
    bus::Bus,
    proto::{CapacityPoll, volume_service_server::VolumeServiceServer},
    server::GrpcServices,
};
use sea_orm::DatabaseConnection;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{api::VolumeApi, capacity::CapacityView, nodes::NodeClients, volumes::Volumes};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// `sqlite://path?mode=rwc` or `postgres://user@host/db`.
    pub database_url: String,
    pub listen: SocketAddr,
    /// This replica's name in the service list.
    pub instance: String,
    /// How long to wait at start for the first capacity reports before resuming operations.
    pub initial_report_wait: Duration,
}

/// State shared by the scheduler's parts.
pub struct Core {
    pub db: DatabaseConnection,
    pub capacity: Arc<CapacityView>,
    pub nodes: NodeClients,
    pub instance: String,
}

pub struct RunningScheduler {
    pub grpc_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningScheduler {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

pub async fn start(config: SchedulerConfig, bus: Bus) -> Result<RunningScheduler, ServiceError> {
    let db = db::connect(&config.database_url).await?;
    let listener = TcpListener::bind(config.listen).await.map_err(|error| {
        ServiceError::unavailable(format!("cannot listen on {}: {error}", config.listen))
    })?;
    let grpc_addr = listener.local_addr().map_err(|error| {
        ServiceError::internal(format!("cannot read the bound address: {error}"))
    })?;
    let (stop, stopped) = watch::channel(false);

    let capacity = Arc::new(CapacityView::default());
    let following = capacity.clone().follow(&bus, stopped.clone()).await?;
    bus.publish_capacity_poll(&CapacityPoll {
        requested_by: config.instance.clone(),
    })
    .await?;

    let core = Arc::new(Core {
        db,
        capacity,
        nodes: NodeClients::default(),
        instance: config.instance.clone(),
    });

    // Give the nodes a moment to answer the poll, so resumed operations find their node at once;
    // operations whose node is still silent retry on their own.
    let resuming = {
        let core = core.clone();
        let wait = config.initial_report_wait;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            match Volumes::new(core).resume_in_flight().await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "resumed interrupted volume operations"),
                Err(error) => {
                    tracing::error!(%error, "cannot resume interrupted volume operations")
                }
            }
        })
    };

    let mut stopped_server = stopped;
    let api = VolumeApi::new(core);
    let serving = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped_server.wait_for(|stop| *stop).await;
        };
        if let Err(error) = GrpcServices::new()
            .with_service(VolumeServiceServer::new(api))
            .serve(listener, shutdown)
            .await
        {
            tracing::error!(%error, "volume service stopped");
        }
    });
    tracing::info!(%grpc_addr, database = %db::redact(&config.database_url), "scheduler started");
    Ok(RunningScheduler {
        grpc_addr,
        stop,
        tasks: vec![following, resuming, serving],
    })
}
