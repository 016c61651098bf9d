//! The scheduler: Basalt's control plane. It owns the database (the only service that does),
//! serves the public `VolumeService`, places volumes on pools from the capacity reports on the
//! bus, and drives the nodes through `NodeAgent` by way of the operation journal.

pub mod adoption;
pub mod api;
pub mod attachments;
pub mod backups;
pub mod capacity;
pub mod claims;
pub mod copy_sources;
pub mod core;
pub mod db;
pub mod events;
pub mod fields;
pub mod group_snapshots;
pub mod group_types;
pub mod groups;
pub mod journal;
pub mod lifecycle;
pub mod listing;
pub mod lost_nodes;
pub mod messages;
pub mod metrics;
pub mod new_rows;
pub mod node_recovery;
pub mod nodes;
pub mod operations;
pub mod placement;
pub mod pool_table;
pub mod qos;
pub mod quotas;
pub mod secrets;
pub mod service_states;
pub mod snapshots;
pub mod status;
pub mod sweeps;
pub mod transfers;
pub mod volume_types;
pub mod volumes;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use basalt::{
    ServiceError,
    bus::Bus,
    listener::{ListenerLimits, Protocol},
    proto::{CapacityPoll, volume_service_server::VolumeServiceServer},
    server::{self, GrpcServices, Tasks},
    tls::{AdmitPeers, MeshTls, Role},
};

pub use crate::core::{ControlPlaneConfig, Core};
use crate::{api::VolumeApi, capacity::CapacityView, nodes::NodeClients};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// `sqlite://path?mode=rwc` or `postgres://user@host/db`.
    pub database_url: String,
    /// The most connections kept to the database.
    pub database_pool_size: u32,
    pub listen: SocketAddr,
    /// This replica's name in the service list.
    pub instance: String,
    /// How long to wait at start for the first capacity reports before re-driving operations.
    pub initial_report_wait: Duration,
    pub control: ControlPlaneConfig,
    /// Bounds on the VolumeService listener's connections.
    pub limits: ListenerLimits,
    /// The scheduler's mesh certificate: it serves VolumeService and calls the nodes with it.
    pub tls: MeshTls,
}

pub struct RunningScheduler {
    pub grpc_addr: SocketAddr,
    capacity: Arc<CapacityView>,
    tasks: Tasks,
}

impl RunningScheduler {
    /// Waits (at most `within`) until node `node_id`'s capacity has reached this scheduler, so a
    /// volume asked for right after start finds a pool; `false` when it has not.
    pub async fn wait_for_node(&self, node_id: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.capacity.node(node_id).is_none() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}

pub async fn start(config: SchedulerConfig, bus: Bus) -> Result<RunningScheduler, ServiceError> {
    let db = db::connect(&config.database_url, config.database_pool_size).await?;
    let (listener, grpc_addr) = server::bind(config.listen, config.limits, Protocol::Grpc, "volume service").await?;
    let mut tasks = Tasks::new();

    let capacity = Arc::new(CapacityView::default());
    let following = capacity.clone().follow(&bus, tasks.stopped()).await?;
    tasks.spawn(following);
    bus.publish_capacity_poll(&CapacityPoll { requested_by: config.instance.clone() }).await?;

    let nodes = NodeClients::new(config.tls.clone());
    let core = Arc::new(Core::new(db, capacity.clone(), nodes, bus, config.instance.clone(), config.control.clone()));

    // Give the nodes a moment to answer the poll, so re-driven operations find their node at once;
    // operations whose node is still silent retry on their own.
    {
        let core = core.clone();
        let wait = config.initial_report_wait;
        let stopped = tasks.stopped();
        tasks.spawn(async move {
            tokio::time::sleep(wait).await;
            journal::reconcile(core, operations::relaunch, stopped).await;
        });
    }

    tasks.spawn(claims::keep_bookings_current(core.clone(), tasks.stopped()));
    tasks.spawn(attachments::take_back_failed(core.clone(), tasks.stopped()));
    tasks.spawn(metrics::keep_current(core.clone(), tasks.stopped()));
    {
        let core = core.clone();
        let interval = config.control.message_reap_interval;
        tasks.spawn(messages::reap(core, interval, tasks.stopped()));
    }

    // Only the gateway and the CSI plugin speak for callers; no other peer may name a project.
    let api =
        VolumeServiceServer::with_interceptor(VolumeApi::new(core), AdmitPeers::only(&[Role::Gateway, Role::Csi]));
    GrpcServices::new().with_service(api).spawn(listener, &config.tls, &mut tasks, "volume service");
    tracing::info!(%grpc_addr, database = %db::redact(&config.database_url), "scheduler started");
    Ok(RunningScheduler { grpc_addr, capacity, tasks })
}
