//! The CSI Node service: on each host, attach a published volume (stage), mount it into pods
//! (publish), and undo both; grow its filesystem; report its use and health.
//!
//! Stage attaches by the kind the controller's `publish_context` names: `local` (the host is the
//! volume's storage node: a loop device over the volume's file) or `iscsi` (`iscsiadm` login with
//! the export's CHAP credentials). A filesystem is made only on a blank device, never over one
//! that is there. What stage did is recorded (`state.rs`) before anything else depends on it, so
//! unstage and publish work after the plugin restarts.

pub mod host;
pub mod state;

use std::{collections::HashMap, path::Path, sync::Arc};

use basalt::{
    command::SystemRunner,
    csi::{
        self, NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetCapabilitiesRequest,
        NodeGetCapabilitiesResponse, NodeGetInfoRequest, NodeGetInfoResponse, NodeGetVolumeStatsRequest,
        NodeGetVolumeStatsResponse, NodePublishVolumeRequest, NodePublishVolumeResponse, NodeServiceCapability,
        NodeStageVolumeRequest, NodeStageVolumeResponse, NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse,
        NodeUnstageVolumeRequest, NodeUnstageVolumeResponse, VolumeCondition, VolumeUsage,
        node_service_capability::rpc::Type as Rpc, volume_usage::Unit,
    },
    ids::NodeId,
    locks::KeyedLocks,
};
use tonic::{Request, Response, Status};

use crate::{NodeSettings, capability, node_ref::NodeRef, topology};
use host::Host;
use state::{Attachment, Staged, StateDir};

pub struct NodeService {
    settings: NodeSettings,
    host: Host<SystemRunner>,
    state: StateDir,
    locks: Arc<KeyedLocks<String>>,
}

fn required(value: &str, field: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Ok(())
}

/// Volume ids name state files: only a UUID is one of ours.
fn volume_id(text: &str) -> Result<String, Status> {
    required(text, "volume_id")?;
    uuid::Uuid::try_parse(text)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| Status::not_found(format!("volume {} is not a Basalt volume", basalt::error::excerpt(text))))
}

/// Paths come from the orchestrator: absolute, and nothing but normal components.
fn path(text: &str, field: &str) -> Result<(), Status> {
    required(text, field)?;
    let clean = Path::new(text).is_absolute()
        && Path::new(text).components().skip(1).all(|part| matches!(part, std::path::Component::Normal(_)));
    if !clean {
        return Err(Status::invalid_argument(format!(
            "{field} {} must be an absolute path without . or ..",
            basalt::error::excerpt(text)
        )));
    }
    Ok(())
}

fn context_value<'a>(context: &'a HashMap<String, String>, key: &str) -> Result<&'a str, Status> {
    context
        .get(key)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| Status::invalid_argument(format!("publish_context lacks {key}: was the volume published?")))
}

fn capability(rpc: Rpc) -> NodeServiceCapability {
    NodeServiceCapability {
        r#type: Some(csi::node_service_capability::Type::Rpc(csi::node_service_capability::Rpc { r#type: rpc as i32 })),
    }
}

impl NodeService {
    pub fn open(settings: NodeSettings) -> Result<Self, basalt::ServiceError> {
        NodeId::parse(&settings.node_id)?;
        let state = StateDir::open(&settings.state_dir).map_err(basalt::ServiceError::from)?;
        let runner = SystemRunner { timeout: std::time::Duration::from_secs(120), transcript: None };
        Ok(Self { settings, host: Host::new(runner), state, locks: Arc::default() })
    }

    /// Attaches the volume as `publish_context` says; returns how, and the block device.
    async fn attach(&self, context: &HashMap<String, String>) -> Result<(Attachment, String), Status> {
        match context_value(context, "kind")? {
            "local" => {
                let file = context_value(context, "device_path")?.to_owned();
                if !Path::new(&file).exists() {
                    return Err(Status::not_found(format!(
                        "the volume's file is not on this host: {} is published to node {}",
                        file, self.settings.node_id
                    )));
                }
                let device = self.host.loop_attach(&file).await?;
                Ok((Attachment::Local { file }, device))
            }
            "iscsi" => {
                let portal = context_value(context, "target_portal")?.to_owned();
                let iqn = context_value(context, "target_iqn")?.to_owned();
                let lun = context_value(context, "target_lun")?
                    .parse::<u32>()
                    .map_err(|_| Status::invalid_argument("publish_context's target_lun is not a number"))?;
                let chap = match (context.get("auth_username"), context.get("auth_password")) {
                    (Some(username), Some(password)) => Some((username.as_str(), password.as_str())),
                    _ => None,
                };
                let device = self.host.iscsi_login(&portal, &iqn, lun, chap).await?;
                Ok((Attachment::Iscsi { portal, iqn, lun }, device))
            }
            other => Err(Status::invalid_argument(format!(
                "this node cannot attach {} volumes: it attaches local and iscsi ones",
                basalt::error::excerpt(other)
            ))),
        }
    }

    async fn detach(&self, attachment: &Attachment) -> Result<(), Status> {
        match attachment {
            Attachment::Local { file } => self.host.loop_detach(file).await,
            Attachment::Iscsi { portal, iqn, .. } => self.host.iscsi_logout(portal, iqn).await,
        }
    }

    /// Mounts the staged filesystem (a device it would destroy is refused, a blank one formatted).
    async fn mount_staged(&self, staged: &Staged) -> Result<(), Status> {
        match self.host.filesystem(&staged.device).await? {
            None => self.host.make_filesystem(&staged.device, &staged.fs_type).await?,
            Some(found) if found == staged.fs_type => {}
            Some(found) => {
                return Err(Status::failed_precondition(format!(
                    "volume {} holds a {found} filesystem, not the {} asked for; it is left as it is",
                    staged.volume_id, staged.fs_type
                )));
            }
        }
        self.host.mount(&staged.device, &staged.staging_path, &staged.fs_type, &staged.mount_flags).await
    }
}

#[tonic::async_trait]
impl csi::node_server::Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume_id = volume_id(&request.volume_id)?;
        path(&request.staging_target_path, "staging_target_path")?;
        let capability = request
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        // The controller checked the mode against the volume's type; here only the form matters.
        let wanted = capability::check(capability, true)?;
        let _volume = self.locks.lock(volume_id.clone()).await;
        if let Some(staged) = self.state.load(&volume_id)? {
            let same = staged.staging_path == request.staging_target_path
                && staged.block == wanted.block
                && (staged.block || staged.fs_type == wanted.fs_type);
            if !same {
                return Err(Status::already_exists(format!(
                    "volume {volume_id} is staged at {} with another capability; unstage it first",
                    staged.staging_path
                )));
            }
            if staged.block || (staged.mounted && self.host.mount_at(&staged.staging_path)?.is_some()) {
                return Ok(Response::new(NodeStageVolumeResponse {}));
            }
            // Attached, not mounted (a restart in between): finish the stage.
            self.mount_staged(&staged).await?;
            self.state.save(&Staged { mounted: true, ..staged })?;
            return Ok(Response::new(NodeStageVolumeResponse {}));
        }
        let (attachment, device) = self.attach(&request.publish_context).await?;
        let mut staged = Staged {
            volume_id: volume_id.clone(),
            staging_path: request.staging_target_path.clone(),
            attachment,
            device,
            block: wanted.block,
            fs_type: wanted.fs_type.clone(),
            mount_flags: wanted.mount_flags.clone(),
            mounted: false,
        };
        // Recorded before the mount: whatever happens next, unstage knows what to detach.
        self.state.save(&staged)?;
        if !staged.block {
            self.mount_staged(&staged).await?;
            staged.mounted = true;
            self.state.save(&staged)?;
        }
        tracing::info!(volume_id, device = %staged.device, block = staged.block, "csi volume staged");
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume_id = volume_id(&request.volume_id)?;
        path(&request.staging_target_path, "staging_target_path")?;
        let _volume = self.locks.lock(volume_id.clone()).await;
        self.host.unmount_all(&request.staging_target_path).await?;
        if let Some(staged) = self.state.load(&volume_id)? {
            self.detach(&staged.attachment).await?;
            self.state.remove(&volume_id)?;
            tracing::info!(volume_id, "csi volume unstaged");
        }
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume_id = volume_id(&request.volume_id)?;
        path(&request.target_path, "target_path")?;
        let capability = request
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let wanted = capability::check(capability, true)?;
        if request.staging_target_path.is_empty() {
            return Err(Status::failed_precondition("staging_target_path is required: this plugin stages volumes"));
        }
        path(&request.staging_target_path, "staging_target_path")?;
        let read_only = request.readonly || wanted.read_only();
        let _volume = self.locks.lock(volume_id.clone()).await;
        let staged =
            self.state
                .load(&volume_id)?
                .filter(|staged| staged.staging_path == request.staging_target_path)
                .ok_or_else(|| Status::failed_precondition(format!("volume {volume_id} is not staged at that path")))?;
        if staged.block != wanted.block {
            return Err(Status::invalid_argument(format!(
                "volume {volume_id} is staged as {}, not {}",
                if staged.block { "a block device" } else { "a filesystem" },
                if wanted.block { "a block device" } else { "a filesystem" }
            )));
        }
        if let Some(mount) = self.host.mount_at(&request.target_path)? {
            if mount.read_only() == read_only {
                return Ok(Response::new(NodePublishVolumeResponse {}));
            }
            return Err(Status::already_exists(format!(
                "volume {volume_id} is published there {}; unpublish it first",
                if mount.read_only() { "read-only" } else { "read-write" }
            )));
        }
        let target = Path::new(&request.target_path);
        let io = |error: std::io::Error| Status::internal(format!("cannot prepare the target path: {error}"));
        if staged.block {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            if !target.exists() {
                std::fs::File::create(target).map_err(io)?;
            }
            self.host.bind(&staged.device, &request.target_path, read_only).await?;
        } else {
            std::fs::create_dir_all(target).map_err(io)?;
            if !wanted.mount_group.is_empty() {
                grant_group(&staged.staging_path, &wanted.mount_group)?;
            }
            self.host.bind(&staged.staging_path, &request.target_path, read_only).await?;
        }
        tracing::info!(volume_id, read_only, "csi volume published");
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume_id = volume_id(&request.volume_id)?;
        path(&request.target_path, "target_path")?;
        let _volume = self.locks.lock(volume_id.clone()).await;
        self.host.unmount_all(&request.target_path).await?;
        let target = Path::new(&request.target_path);
        let removed = match std::fs::symlink_metadata(target) {
            Ok(metadata) if metadata.is_dir() => std::fs::remove_dir(target),
            Ok(_) => std::fs::remove_file(target),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        };
        removed.map_err(|error| Status::internal(format!("cannot remove the target path: {error}")))?;
        tracing::info!(volume_id, "csi volume unpublished");
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let request = request.into_inner();
        let volume_id = volume_id(&request.volume_id)?;
        path(&request.volume_path, "volume_path")?;
        let volume_path = Path::new(&request.volume_path);
        if !volume_path.exists() {
            return Err(Status::not_found(format!("{} does not exist", request.volume_path)));
        }
        let staged = self
            .state
            .load(&volume_id)?
            .ok_or_else(|| Status::not_found(format!("volume {volume_id} is not staged on this node")))?;
        let mount = self.host.mount_at(&request.volume_path)?;
        if staged.block {
            let total = self.host.device_size(&staged.device).await? as i64;
            let usage = VolumeUsage { total, unit: Unit::Bytes as i32, ..Default::default() };
            let condition = match mount {
                Some(_) => VolumeCondition { abnormal: false, message: "the device is bound there".into() },
                None => VolumeCondition { abnormal: true, message: "the device is no longer bound there".into() },
            };
            return Ok(Response::new(NodeGetVolumeStatsResponse {
                usage: vec![usage],
                volume_condition: Some(condition),
            }));
        }
        let Some(mount) = mount else {
            return Ok(Response::new(NodeGetVolumeStatsResponse {
                usage: vec![],
                volume_condition: Some(VolumeCondition {
                    abnormal: true,
                    message: "the filesystem is no longer mounted there".into(),
                }),
            }));
        };
        let stats = statvfs(volume_path)?;
        let condition = if mount.read_only() && !staged.mount_flags.iter().any(|flag| flag == "ro") {
            VolumeCondition {
                abnormal: true,
                message: "the filesystem is read-only: the kernel may have remounted it after an error".into(),
            }
        } else {
            VolumeCondition { abnormal: false, message: "the filesystem is mounted".into() }
        };
        Ok(Response::new(NodeGetVolumeStatsResponse { usage: stats, volume_condition: Some(condition) }))
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume_id = volume_id(&request.volume_id)?;
        path(&request.volume_path, "volume_path")?;
        let _volume = self.locks.lock(volume_id.clone()).await;
        let staged = self
            .state
            .load(&volume_id)?
            .ok_or_else(|| Status::not_found(format!("volume {volume_id} is not staged on this node")))?;
        if !Path::new(&request.volume_path).exists() {
            return Err(Status::not_found(format!("{} does not exist", request.volume_path)));
        }
        match &staged.attachment {
            Attachment::Local { .. } => self.host.loop_refresh(&staged.device).await?,
            Attachment::Iscsi { portal, iqn, .. } => self.host.iscsi_rescan(portal, iqn).await?,
        }
        let size = self.host.device_size(&staged.device).await?;
        let wanted = request.capacity_range.as_ref().map_or(0, |range| range.required_bytes.max(0) as u64);
        if size < wanted {
            return Err(Status::failed_precondition(format!(
                "the device holds {size} bytes, less than the {wanted} asked for: expand the volume first"
            )));
        }
        if !staged.block {
            self.host.grow_filesystem(&staged.fs_type, &staged.device, &staged.staging_path).await?;
        }
        tracing::info!(volume_id, size, "csi volume expanded on the node");
        Ok(Response::new(NodeExpandVolumeResponse { capacity_bytes: size as i64 }))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let capabilities = [
            Rpc::StageUnstageVolume,
            Rpc::GetVolumeStats,
            Rpc::ExpandVolume,
            Rpc::VolumeCondition,
            Rpc::SingleNodeMultiWriter,
            Rpc::VolumeMountGroup,
        ];
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: capabilities.into_iter().map(capability).collect(),
        }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        let name = NodeId::parse(&self.settings.node_id).map_err(Status::from)?;
        let node = NodeRef { name, initiator: self.settings.initiator.clone() };
        Ok(Response::new(NodeGetInfoResponse {
            node_id: node.encode(),
            max_volumes_per_node: self.settings.max_volumes,
            accessible_topology: Some(topology::node(&self.settings.availability_zone, &self.settings.node_id)),
        }))
    }
}

/// Bytes and inodes of the filesystem at `path`.
fn statvfs(path: &Path) -> Result<Vec<VolumeUsage>, Status> {
    use std::os::unix::ffi::OsStrExt;
    let text = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Status::invalid_argument("the volume path holds a NUL"))?;
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs fills the struct we pass, for a NUL-terminated path we own.
    if unsafe { libc::statvfs(text.as_ptr(), &mut stats) } != 0 {
        return Err(Status::internal(format!("statvfs failed: {}", std::io::Error::last_os_error())));
    }
    let block = stats.f_frsize as i64;
    let bytes = VolumeUsage {
        total: stats.f_blocks as i64 * block,
        available: stats.f_bavail as i64 * block,
        used: (stats.f_blocks - stats.f_bfree) as i64 * block,
        unit: Unit::Bytes as i32,
    };
    let inodes = VolumeUsage {
        total: stats.f_files as i64,
        available: stats.f_favail as i64,
        used: (stats.f_files - stats.f_ffree) as i64,
        unit: Unit::Inodes as i32,
    };
    Ok(vec![bytes, inodes])
}

/// Kubernetes' fsGroup through VOLUME_MOUNT_GROUP: the filesystem's root belongs to the group,
/// with the set-group-id bit so new files do too, and the group may write there.
fn grant_group(root: &str, group: &str) -> Result<(), Status> {
    use std::os::unix::fs::PermissionsExt;
    let gid: u32 = group.parse().map_err(|_| {
        Status::invalid_argument(format!("volume_mount_group {} is not a group id", basalt::error::excerpt(group)))
    })?;
    std::os::unix::fs::chown(root, None, Some(gid))
        .map_err(|error| Status::internal(format!("cannot give the volume to group {gid}: {error}")))?;
    let metadata = std::fs::metadata(root).map_err(|error| Status::internal(error.to_string()))?;
    let mode = metadata.permissions().mode() | 0o2070;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode))
        .map_err(|error| Status::internal(format!("cannot open the volume to group {gid}: {error}")))
}
