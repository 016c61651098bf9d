//! Basalt's Container Storage Interface plugin: Kubernetes and other container orchestrators
//! provision, snapshot, expand, attach and mount Basalt volumes through it.
//!
//! One binary in three modes. The controller (`controller.rs`) maps CSI onto the public
//! `VolumeService` gRPC API, like any other client: it never touches the database or a node. The
//! node service (`node/`) runs on every host that mounts volumes: it attaches a volume the way the
//! controller's publish says (a loop device over the volume's own file when the host is the
//! volume's storage node, `iscsiadm` otherwise), formats it when blank, and mounts it.

pub mod capability;
pub mod client;
pub mod controller;
pub mod identity;
pub mod node;
pub mod node_ref;
pub mod topology;

use std::{path::PathBuf, time::Duration};

use basalt::{
    ServiceError,
    channel::channel_with_timeout,
    csi::{controller_server::ControllerServer, identity_server::IdentityServer, node_server::NodeServer},
    ids::ProjectId,
    server::{GrpcServices, Tasks},
    tls::{MeshTls, Role},
};
use tokio::net::UnixListener;

/// The driver's name, as StorageClasses and CSIDriver objects name it.
pub const DRIVER_NAME: &str = "csi.basalt.dev";
/// The plugin's version, reported by GetPluginInfo.
pub const VENDOR_VERSION: &str = env!("CARGO_PKG_VERSION");
/// How long one call to the control plane may take.
const CONTROL_PLANE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Controller,
    Node,
    All,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "controller" => Ok(Self::Controller),
            "node" => Ok(Self::Node),
            "all" => Ok(Self::All),
            other => Err(format!("unknown mode {other:?}: use controller, node or all")),
        }
    }
}

/// What a node service needs to know of its host.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// This host's name in the cluster and in Basalt (a volume whose storage node has this id is
    /// attached locally).
    pub node_id: String,
    pub availability_zone: String,
    /// The host's iSCSI initiator name; without one, only local volumes can be attached here.
    pub initiator: Option<String>,
    /// Where staging records are kept, so unstage works after a restart.
    pub state_dir: PathBuf,
    /// Volumes this host may hold at once (0: no limit).
    pub max_volumes: i64,
}

#[derive(Debug, Clone)]
pub struct CsiConfig {
    pub mode: Mode,
    /// The unix socket the orchestrator calls (`unix:///csi/csi.sock` or a plain path).
    pub endpoint: String,
    /// The scheduler's `VolumeService`.
    pub scheduler_endpoint: String,
    /// The plugin's mesh certificate, presented to the scheduler.
    pub tls: MeshTls,
    /// The Basalt project the controller provisions in.
    pub project_id: ProjectId,
    /// How long CreateVolume and expansions wait for the volume before answering ABORTED (the
    /// orchestrator retries with the same name).
    pub ready_wait: Duration,
    pub node: Option<NodeSettings>,
}

pub struct RunningCsi {
    pub socket: PathBuf,
    tasks: Tasks,
}

impl RunningCsi {
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The socket path of an endpoint (`unix:///csi/csi.sock`, `unix:/csi/csi.sock` or a path).
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ServiceError> {
    let path = endpoint.strip_prefix("unix://").or_else(|| endpoint.strip_prefix("unix:")).unwrap_or(endpoint);
    if path.is_empty() || endpoint.contains("://") && !endpoint.starts_with("unix://") {
        return Err(ServiceError::invalid(format!(
            "the CSI endpoint {} is not a unix socket: use unix:///path/to/csi.sock",
            basalt::error::excerpt(endpoint)
        )));
    }
    Ok(PathBuf::from(path))
}

pub async fn start(config: CsiConfig) -> Result<RunningCsi, ServiceError> {
    let socket = socket_path(&config.endpoint)?;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|error| ServiceError::unavailable(format!("cannot create the socket's directory: {error}")))?;
    }
    // A socket left by a previous run (the orchestrator restarts plugins) is replaced.
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(ServiceError::unavailable(format!("cannot replace the socket: {error}"))),
    }
    let listener = UnixListener::bind(&socket)
        .map_err(|error| ServiceError::unavailable(format!("cannot listen on {}: {error}", socket.display())))?;
    let scheduler =
        channel_with_timeout(&config.scheduler_endpoint, &config.tls, &Role::Scheduler, CONTROL_PLANE_TIMEOUT)?;

    let mut services =
        GrpcServices::new().with_service(IdentityServer::new(identity::Identity::new(scheduler.clone())));
    if matches!(config.mode, Mode::Controller | Mode::All) {
        services = services.with_service(ControllerServer::new(controller::Controller::new(
            scheduler.clone(),
            config.project_id.clone(),
            config.ready_wait,
        )));
    }
    if matches!(config.mode, Mode::Node | Mode::All) {
        let settings = config
            .node
            .clone()
            .ok_or_else(|| ServiceError::invalid("the node service needs its node settings (a node id)"))?;
        services = services.with_service(NodeServer::new(node::NodeService::open(settings)?));
    }
    let mut tasks = Tasks::new();
    let stopped = tasks.stopped();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tasks.spawn(async move {
        if let Err(error) = services.serve_incoming(incoming, stopped).await {
            tracing::error!(%error, "csi server stopped");
        }
    });
    tracing::info!(socket = %socket.display(), mode = ?config.mode, "csi plugin started");
    Ok(RunningCsi { socket, tasks })
}
