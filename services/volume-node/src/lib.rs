//! The volume node: one per storage host. It serves `NodeAgent` to the scheduler, keeps the bytes
//! of volumes in its backend, and reports its capacity on the bus. It never writes the database.

pub mod agent;
pub mod backend;
pub mod command;
pub mod reporter;
pub mod target;

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
    command::SystemRunner,
    reporter::Reporter,
    target::{Target, TgtConfig, TgtTarget},
};

/// The `tgt` export target's settings.
#[derive(Debug, Clone)]
pub struct TgtSettings {
    pub control_port: Option<u16>,
    /// The portal hosts connect to, `ip:port`.
    pub portal: String,
    pub iqn_prefix: String,
}

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
    /// How volumes are exported; `None` exports nothing (local attach only).
    pub tgt: Option<TgtSettings>,
    /// Where the node keeps its own state (export records).
    pub state_dir: PathBuf,
    pub report_interval: Duration,
}

impl NodeConfig {
    pub fn new(node_id: NodeId, file_root: PathBuf) -> Self {
        // Beside the pool, not in it: the pool directory holds volumes and snapshots only.
        let state_dir =
            file_root.parent().map_or_else(|| file_root.join(".basalt-node"), |parent| parent.join("node-state"));
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
            tgt: None,
            state_dir,
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
    let target = match &config.tgt {
        None => Target::None,
        Some(settings) => Target::Tgt(TgtTarget::new(
            TgtConfig {
                control_port: settings.control_port,
                portal: settings.portal.clone(),
                iqn_prefix: settings.iqn_prefix.clone(),
                state_dir: config.state_dir.join("exports"),
            },
            SystemRunner::default(),
        )?),
    };
    // Exports of attached volumes come back with the node, with the same credentials.
    let restored = target.restore().await?;
    if restored > 0 {
        tracing::info!(restored, "volume exports re-created");
    }
    let (listener, grpc_addr) = server::bind(config.listen).await?;
    let endpoint = config.advertise.clone().unwrap_or_else(|| format!("http://{grpc_addr}"));

    let reporter = Arc::new(Reporter::new(&config, endpoint, bus));
    let agent = Agent::new(Arc::new(backend), Arc::new(target), reporter.clone());
    let mut tasks = Tasks::new();
    let reporting = reporter.run(agent.backend(), tasks.stopped()).await?;
    tasks.spawn(reporting);
    GrpcServices::new().with_service(NodeAgentServer::new(agent)).spawn(listener, &mut tasks, "node agent server");
    tracing::info!(node = %config.node_id, %grpc_addr, "volume node started");
    Ok(RunningNode { grpc_addr, tasks })
}
