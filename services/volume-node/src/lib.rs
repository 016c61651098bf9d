//! The volume node: one per storage host. It serves `NodeAgent` to the scheduler, keeps the bytes
//! of volumes in its backend, and reports its capacity on the bus. It never writes the database.

pub mod agent;
pub mod backend;
pub mod reporter;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use basalt::{
    ServiceError,
    bus::Bus,
    ids::NodeId,
    proto::node_agent_server::NodeAgentServer,
    server::{self, GrpcServices, Tasks},
};

use crate::{
    agent::Agent,
    backend::{Backend, FileBackend, file::FileBackendConfig},
    reporter::Reporter,
};

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub availability_zone: String,
    /// Where the NodeAgent gRPC server listens; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The endpoint the scheduler should call; defaults to the bound listen address.
    pub advertise: Option<String>,
    /// Directory of the `file` backend's pool.
    pub file_root: PathBuf,
    pub pool: String,
    pub max_over_subscription_ratio: f64,
    pub reserved_percentage: u32,
    /// Caps the file pool below its filesystem's size.
    pub max_capacity_bytes: Option<u64>,
    pub report_interval: Duration,
}

impl NodeConfig {
    pub fn new(node_id: NodeId, file_root: PathBuf) -> Self {
        Self {
            node_id,
            availability_zone: "nova".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            file_root,
            pool: "default".into(),
            max_over_subscription_ratio: 1.0,
            reserved_percentage: 0,
            max_capacity_bytes: None,
            report_interval: Duration::from_secs(10),
        }
    }
}

/// A started volume node. Dropping it does not stop it; call [`RunningNode::shutdown`].
pub struct RunningNode {
    pub grpc_addr: SocketAddr,
    tasks: Tasks,
}

impl RunningNode {
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}

pub async fn start(config: NodeConfig, bus: Bus) -> Result<RunningNode, ServiceError> {
    let backend = Backend::File(FileBackend::open(FileBackendConfig {
        root: config.file_root.clone(),
        pool: config.pool.clone(),
        max_over_subscription_ratio: config.max_over_subscription_ratio,
        reserved_percentage: config.reserved_percentage,
        max_capacity_bytes: config.max_capacity_bytes,
    })?);
    let (listener, grpc_addr) = server::bind(config.listen).await?;
    let endpoint = config.advertise.clone().unwrap_or_else(|| format!("http://{grpc_addr}"));

    let reporter = Arc::new(Reporter::new(&config, endpoint, bus));
    let agent = Agent::new(Arc::new(backend), reporter.clone());
    let mut tasks = Tasks::new();
    let reporting = reporter.run(agent.backend(), tasks.stopped()).await?;
    tasks.spawn(reporting);
    GrpcServices::new().with_service(NodeAgentServer::new(agent)).spawn(listener, &mut tasks, "node agent server");
    tracing::info!(node = %config.node_id, %grpc_addr, "volume node started");
    Ok(RunningNode { grpc_addr, tasks })
}
