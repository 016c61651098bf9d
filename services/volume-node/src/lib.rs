//! The volume node: one per storage host. It serves `NodeAgent` to the scheduler, keeps the bytes
//! of volumes in its backend, and reports its capacity on the bus. It never writes the database.

pub mod agent;
pub mod backend;
pub mod backup;
pub mod copy_set;
mod metrics;
pub mod reporter;
pub mod target;

pub use backend::{VolumeClear, nfs::NfsShare};
pub use backup::BackupStoreSettings;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use basalt::{
    ServiceError,
    bus::Bus,
    command::{SystemRunner, Transcript},
    ids::NodeId,
    listener::{ListenerLimits, Protocol},
    proto::node_agent_server::NodeAgentServer,
    server::{self, GrpcServices, Tasks},
    tls::{AdmitPeers, MeshTls, Role},
};

use crate::{
    agent::Agent,
    backend::{
        ConfiguredBackend, FileBackend, LvmBackend, NfsBackend,
        file::FileBackendConfig,
        lvm::{LvmBackendConfig, lvm_runner},
        nfs::NfsBackendConfig,
    },
    backup::Backups,
    reporter::Reporter,
    target::{ExportConfig, Exports, LioDriver, Target, TgtDriver},
};

/// How a node exports volumes.
#[derive(Debug, Clone)]
pub enum ExportSettings {
    /// Nothing is exported: local attach only.
    None,
    Tgt(TgtSettings),
    Lio(LioSettings),
}

/// The `lio` export target's settings.
#[derive(Debug, Clone)]
pub struct LioSettings {
    /// The portal hosts connect to, `ip:port`.
    pub portal: String,
    pub iqn_prefix: String,
    /// configfs' target directory, normally `/sys/kernel/config/target`.
    pub configfs: PathBuf,
}

/// Opens the export target `settings` describe, keeping its records in `state_dir/exports`.
/// With `transcript`, every target command is recorded there (the VM lane).
pub fn open_target(
    settings: &ExportSettings,
    state_dir: &std::path::Path,
    transcript: Option<Arc<Transcript>>,
) -> Result<Target, ServiceError> {
    let state_dir = state_dir.join("exports");
    Ok(match settings {
        ExportSettings::None => Target::None,
        ExportSettings::Tgt(tgt) => Target::Tgt(Exports::new(
            ExportConfig { portal: tgt.portal.clone(), iqn_prefix: tgt.iqn_prefix.clone(), state_dir },
            TgtDriver::new(tgt.control_port, SystemRunner { transcript: transcript.clone(), ..Default::default() }),
        )?),
        ExportSettings::Lio(lio) => Target::Lio(Exports::new(
            ExportConfig { portal: lio.portal.clone(), iqn_prefix: lio.iqn_prefix.clone(), state_dir },
            // targetcli starts slowly on a busy host.
            LioDriver::new(lio.configfs.clone(), SystemRunner { timeout: Duration::from_secs(120), transcript }),
        )?),
    })
}

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
    /// Which backend holds the volumes, and where.
    pub backend: BackendSettings,
    pub max_over_subscription_ratio: f64,
    pub reserved_percentage: u32,
    /// What a delete does to the bytes first (Cinder's `volume_clear`).
    pub volume_clear: VolumeClear,
    /// How volumes are exported to hosts.
    pub export: ExportSettings,
    /// The longest the target's writers are held still while a set of copies is cut
    /// (`copy_set.rs`).
    pub freeze_limit: Duration,
    /// Where the node keeps its own state (export records).
    pub state_dir: PathBuf,
    /// Where backups are kept (a directory shared by the nodes, or an S3 bucket); `None` when
    /// this node takes no backups.
    pub backup_store: Option<BackupStoreSettings>,
    pub report_interval: Duration,
    /// Bounds on the NodeAgent listener's connections.
    pub limits: ListenerLimits,
    /// The node's mesh certificate (it must name this node): NodeAgent serves with it and answers
    /// only the scheduler's.
    pub tls: MeshTls,
}

impl NodeConfig {
    /// A node with the `file` backend in `file_root`, pool `default`.
    pub fn new(node_id: NodeId, file_root: PathBuf, tls: MeshTls) -> Self {
        // Beside the pool, not in it: the pool directory holds volumes and snapshots only.
        let state_dir =
            file_root.parent().map_or_else(|| file_root.join(".basalt-node"), |parent| parent.join("node-state"));
        Self {
            node_id,
            availability_zone: "nova".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            backend: BackendSettings::File { root: file_root, pool: "default".into(), max_capacity_bytes: None },
            max_over_subscription_ratio: 1.0,
            reserved_percentage: 0,
            volume_clear: VolumeClear::Zero,
            export: ExportSettings::None,
            freeze_limit: Duration::from_secs(10),
            state_dir,
            backup_store: None,
            report_interval: Duration::from_secs(10),
            limits: ListenerLimits::default(),
            tls,
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

/// The backends a node can run, with what each needs.
#[derive(Debug, Clone)]
pub enum BackendSettings {
    /// Sparse files in a local directory.
    File {
        root: PathBuf,
        pool: String,
        /// Caps the pool below its filesystem's size.
        max_capacity_bytes: Option<u64>,
    },
    /// Logical volumes in a volume group, thick or in a thin pool.
    Lvm { volume_group: String, thin_pool: Option<String>, pool: String },
    /// Sparse files on NFS shares the node mounts under `mount_base`.
    Nfs { shares: Vec<NfsShare>, mount_base: PathBuf },
}

/// Opens the backend `settings` describe, with LVM and mount commands run through `runner`.
pub async fn open_backend(
    settings: &BackendSettings,
    max_over_subscription_ratio: f64,
    reserved_percentage: u32,
    clear: VolumeClear,
    runner: SystemRunner,
) -> Result<ConfiguredBackend, ServiceError> {
    Ok(match settings {
        BackendSettings::File { root, pool, max_capacity_bytes } => {
            ConfiguredBackend::File(FileBackend::open(FileBackendConfig {
                root: root.clone(),
                pool: pool.clone(),
                max_over_subscription_ratio,
                reserved_percentage,
                max_capacity_bytes: *max_capacity_bytes,
                driver: "file",
                clear,
            })?)
        }
        BackendSettings::Lvm { volume_group, thin_pool, pool } => ConfiguredBackend::Lvm(
            LvmBackend::open(
                LvmBackendConfig {
                    volume_group: volume_group.clone(),
                    thin_pool: thin_pool.clone(),
                    pool: pool.clone(),
                    max_over_subscription_ratio,
                    reserved_percentage,
                    clear,
                },
                runner,
            )
            .await?,
        ),
        BackendSettings::Nfs { shares, mount_base } => ConfiguredBackend::Nfs(
            NfsBackend::open(
                NfsBackendConfig {
                    shares: shares.clone(),
                    mount_base: mount_base.clone(),
                    max_over_subscription_ratio,
                    reserved_percentage,
                    clear,
                },
                &runner,
            )
            .await?,
        ),
    })
}

pub async fn start(config: NodeConfig, bus: Bus) -> Result<RunningNode, ServiceError> {
    let role = Role::Node(config.node_id.clone());
    if *config.tls.role() != role {
        return Err(ServiceError::invalid(format!(
            "the node's mesh certificate is one for {}, not for {role}",
            config.tls.role()
        )));
    }
    let backend = open_backend(
        &config.backend,
        config.max_over_subscription_ratio,
        config.reserved_percentage,
        config.volume_clear,
        lvm_runner(),
    )
    .await?;
    let target = open_target(&config.export, &config.state_dir, None)?;
    // Exports of attached volumes come back with the node, with the same credentials.
    let restored = target.restore().await?;
    if restored > 0 {
        tracing::info!(restored, "volume exports re-created");
    }
    let (listener, grpc_addr) = server::bind(config.listen, config.limits, Protocol::Grpc, "node agent").await?;
    let endpoint = config.advertise.clone().unwrap_or_else(|| format!("https://{grpc_addr}"));

    let reporter = Arc::new(Reporter::new(&config, endpoint, bus));
    let backups = Backups::open(config.backup_store.as_ref())?;
    let agent =
        Agent::new(Arc::new(backend), Arc::new(target), Arc::new(backups), reporter.clone(), config.freeze_limit);
    let mut tasks = Tasks::new();
    let reporting = reporter.run(agent.backend(), tasks.stopped()).await?;
    tasks.spawn(reporting);
    // The scheduler is the node's only caller: nothing else may export a volume or read its CHAP
    // secret.
    let agent = NodeAgentServer::with_interceptor(agent, AdmitPeers::only(&[Role::Scheduler]));
    GrpcServices::new().with_service(agent).spawn(listener, &config.tls, &mut tasks, "node agent server");
    tracing::info!(node = %config.node_id, %grpc_addr, "volume node started");
    Ok(RunningNode { grpc_addr, tasks })
}
