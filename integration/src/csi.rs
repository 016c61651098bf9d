//! The CSI plugin for tests and benchmarks: started in this process over a mesh (controller and
//! node on one socket, the node being the mesh's storage node, so volumes attach locally through
//! loop devices), or as a `basalt csi` child process a test can kill; and a client over the unix
//! socket. The harness cleans up after itself: whatever a failed test left mounted under its
//! directory is unmounted and the loop devices over its volume files are detached.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};
use basalt::csi::{
    CapacityRange, Topology, VolumeCapability,
    controller_client::ControllerClient,
    identity_client::IdentityClient,
    node_client::NodeClient,
    volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode},
};
use tonic::transport::Channel;

use crate::{InProcessMesh, project_id};

/// The mesh's storage node, which is also the CSI node: its volumes attach locally.
pub const CSI_NODE: &str = "node-0";

/// Clients of one plugin socket.
#[derive(Clone)]
pub struct CsiClients {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

impl CsiClients {
    /// Connects to the socket at `path` (waiting for it to appear).
    pub async fn connect(path: &Path) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        while !path.exists() {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "{} never appeared", path.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let channel = basalt_csi_plugin::client::connect_path(path).await?;
        Ok(Self {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            node: NodeClient::new(channel),
        })
    }
}

/// A mesh and the plugin over it, in this process, with a directory for staging and target paths.
pub struct CsiHarness {
    pub mesh: InProcessMesh,
    pub clients: CsiClients,
    pub root: tempfile::TempDir,
    running: Option<basalt_csi_plugin::RunningCsi>,
}

/// The plugin's settings for a harness rooted at `root`.
pub fn plugin_config(
    grpc_addr: &str,
    socket: &Path,
    state_dir: &Path,
    mode: basalt_csi_plugin::Mode,
) -> basalt_csi_plugin::CsiConfig {
    basalt_csi_plugin::CsiConfig {
        mode,
        endpoint: format!("unix://{}", socket.display()),
        scheduler_endpoint: grpc_addr.to_owned(),
        tls: crate::pki().tls(basalt::tls::Role::Csi),
        project_id: basalt::ids::ProjectId::parse(&project_id("csi")).expect("a hex project id"),
        ready_wait: crate::WAIT,
        node: Some(basalt_csi_plugin::NodeSettings {
            node_id: CSI_NODE.into(),
            availability_zone: "nova".into(),
            initiator: None,
            state_dir: state_dir.to_path_buf(),
            max_volumes: 0,
        }),
    }
}

impl CsiHarness {
    pub async fn start() -> Result<Self> {
        let mut mesh = InProcessMesh::start(0).await?;
        // A pool of 40 GiB (below the free space of the filesystem under it), as a thin pool caps
        // what it promises: capacity shrinks as volumes are made.
        mesh.add_node_with(CSI_NODE, |config| {
            if let basalt_volume_node::BackendSettings::File { max_capacity_bytes, .. } = &mut config.backend {
                *max_capacity_bytes = Some(40 << 30);
            }
        })
        .await?;
        crate::lift_volume_quotas(&crate::volume_client(&mesh.grpc_addr).await?, &crate::admin("csi")).await?;
        let root = tempfile::tempdir()?;
        let socket = root.path().join("csi.sock");
        let config = plugin_config(&mesh.grpc_addr, &socket, &root.path().join("state"), basalt_csi_plugin::Mode::All);
        let running = basalt_csi_plugin::start(config).await?;
        let clients = CsiClients::connect(&socket).await?;
        Ok(Self { mesh, clients, root, running: Some(running) })
    }

    /// A fresh directory under the harness (the orchestrator creates staging paths).
    pub fn dir(&self, name: &str) -> Result<String> {
        let path = self.root.path().join(name);
        std::fs::create_dir_all(&path)?;
        Ok(path.to_str().context("utf-8 path")?.to_owned())
    }

    /// A path under the harness that does not exist yet (the plugin creates target paths).
    pub fn path(&self, name: &str) -> String {
        self.root.path().join(name).to_string_lossy().into_owned()
    }

    /// Stops nothing: hands the in-process plugin over, to stop it apart from the mesh.
    pub fn take_plugin(&mut self) -> Option<basalt_csi_plugin::RunningCsi> {
        self.running.take()
    }

    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        clean_up(self.root.path(), &self.mesh.node_dir(CSI_NODE));
    }
}

impl Drop for CsiHarness {
    fn drop(&mut self) {
        clean_up(self.root.path(), &self.mesh.node_dir(CSI_NODE));
    }
}

/// Unmounts everything under `root` (deepest first) and detaches loop devices over files in
/// `volumes`.
pub fn clean_up(root: &Path, volumes: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounted: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
        .filter(|point| Path::new(point).starts_with(root))
        .collect();
    mounted.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in mounted {
        let _ = Command::new("umount").arg("-l").arg(&point).status();
    }
    let listed = Command::new("losetup").arg("-a").output().map(|output| output.stdout).unwrap_or_default();
    for line in String::from_utf8_lossy(&listed).lines() {
        if line.contains(volumes.to_string_lossy().as_ref())
            && let Some((device, _)) = line.split_once(':')
        {
            let _ = Command::new("losetup").arg("-d").arg(device).status();
        }
    }
}

pub fn mount_capability(fs_type: &str, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume { fs_type: fs_type.into(), ..Default::default() })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

pub fn block_capability(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

pub fn gib_range(gib: i64) -> Option<CapacityRange> {
    Some(CapacityRange { required_bytes: gib << 30, limit_bytes: 0 })
}

/// The topology segment of the plugin's node.
pub fn node_topology() -> Topology {
    Topology {
        segments: HashMap::from([
            (basalt_csi_plugin::topology::ZONE_KEY.to_owned(), "nova".to_owned()),
            (basalt_csi_plugin::topology::NODE_KEY.to_owned(), CSI_NODE.to_owned()),
        ]),
    }
}

/// The files under `dir`, for checking what a mount shows.
pub fn files_in(dir: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|entry| Ok(entry?.path())).collect::<Result<_>>()?;
    files.sort();
    Ok(files)
}
