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
    server::{self, GrpcServices, Tasks},
};
use sea_orm::DatabaseConnection;

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
    tasks: Tasks,
}

impl RunningScheduler {
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}

pub async fn start(config: SchedulerConfig, bus: Bus) -> Result<RunningScheduler, ServiceError> {
    let db = db::connect(&config.database_url).await?;
    let (listener, grpc_addr) = server::bind(config.listen).await?;
    let mut tasks = Tasks::new();

    let capacity = Arc::new(CapacityView::default());
    let following = capacity.clone().follow(&bus, tasks.stopped()).await?;
    tasks.spawn(following);
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
    {
        let core = core.clone();
        let wait = config.initial_report_wait;
        tasks.spawn(async move {
            tokio::time::sleep(wait).await;
            match Volumes::new(core).resume_in_flight().await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "resumed interrupted volume operations"),
                Err(error) => {
                    tracing::error!(%error, "cannot resume interrupted volume operations")
                }
            }
        });
    }

    GrpcServices::new()
        .with_service(VolumeServiceServer::new(VolumeApi::new(core)))
        .spawn(listener, &mut tasks, "volume service");
    tracing::info!(%grpc_addr, database = %db::redact(&config.database_url), "scheduler started");
    Ok(RunningScheduler { grpc_addr, tasks })
}
