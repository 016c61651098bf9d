//! The CSI Controller service, mapped onto `VolumeService` like any other client of Basalt:
//!
//! - CreateVolume is keyed by the CSI name, which Basalt stores as the volume's idempotency key
//!   (a unique column), so a repeat after a controller restart still finds the volume;
//!   CreateSnapshot likewise;
//! - ControllerPublish is a Basalt attachment for the node: the scheduler exports the volume to
//!   the node's initiator (or lets its own storage node open it locally) and the connection info
//!   becomes the `publish_context`;
//! - capacity is what placement would still put in each pool.
//!
//! Calls on one volume, snapshot or name are serialised (the spec lets the orchestrator repeat
//! them, also concurrently), and every answer uses the codes of the spec's tables.

use std::{collections::HashMap, sync::Arc, time::Duration};

use basalt::channel::Channel;
use basalt::{
    GIB_BYTES,
    context::CallContext,
    csi::{
        self, CapacityRange, ControllerExpandVolumeRequest, ControllerExpandVolumeResponse,
        ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse, ControllerGetVolumeRequest,
        ControllerGetVolumeResponse, ControllerModifyVolumeRequest, ControllerModifyVolumeResponse,
        ControllerPublishVolumeRequest, ControllerPublishVolumeResponse, ControllerServiceCapability,
        ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse, CreateSnapshotRequest,
        CreateSnapshotResponse, CreateVolumeRequest, CreateVolumeResponse, DeleteSnapshotRequest,
        DeleteSnapshotResponse, DeleteVolumeRequest, DeleteVolumeResponse, GetCapacityRequest, GetCapacityResponse,
        GetSnapshotRequest, GetSnapshotResponse, ListSnapshotsRequest, ListSnapshotsResponse, ListVolumesRequest,
        ListVolumesResponse, ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse, VolumeCondition,
        VolumeContentSource, controller_service_capability::rpc::Type as Rpc, volume_content_source,
    },
    ids::ProjectId,
    locks::KeyedLocks,
    proto::{self, AttachMode, Connector, SnapshotStatus, VolumeStatus, volume_service_client::VolumeServiceClient},
};
use tonic::{Code, Request, Response, Status};

use crate::{capability, node_ref::NodeRef, topology};

/// StorageClass parameters this plugin reads; `csi.storage.k8s.io/*` ones (the provisioner's PVC
/// and PV names) become the volume's metadata.
const PARAMETER_TYPE: &str = "type";
const PARAMETER_ZONE: &str = "availabilityZone";
const ORCHESTRATOR_PREFIX: &str = "csi.storage.k8s.io/";
/// A wait polls the control plane soon after the request, since most volumes and snapshots are
/// ready within milliseconds, then ever less often, up to the slowest interval.
const FIRST_POLL: Duration = Duration::from_millis(1);
const SLOWEST_POLL: Duration = Duration::from_millis(100);

/// The pause before each poll of one wait: from `FIRST_POLL`, half as long again each time.
struct PollIntervals(Duration);

impl PollIntervals {
    fn new() -> Self {
        Self(FIRST_POLL)
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 3 / 2).min(SLOWEST_POLL);
    }
}

pub struct Controller {
    client: VolumeServiceClient<Channel>,
    /// A member of the cluster's project: every volume call is scoped to it, so a volume handle
    /// naming another project's volume is simply not found.
    context: CallContext,
    /// The same project's admin, for the one call that needs it: the pools' capacity.
    capacity_context: CallContext,
    ready_wait: Duration,
    /// One lock per CSI name and per volume or snapshot id.
    locks: Arc<KeyedLocks<String>>,
}

/// A missing required field.
fn required(value: &str, field: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Ok(())
}

/// Bytes to whole GiB, as Basalt sizes volumes: `required_bytes` rounded up (1 GiB when nothing
/// is asked), never above `limit_bytes`.
pub fn size_gib(range: Option<&CapacityRange>) -> Result<u64, Status> {
    let (required, limit) = range.map_or((0, 0), |range| (range.required_bytes, range.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(Status::out_of_range("capacity_range bytes cannot be negative"));
    }
    let gib = (required as u64).div_ceil(GIB_BYTES).max(1);
    if limit > 0 && gib * GIB_BYTES > limit as u64 {
        return Err(Status::out_of_range(format!(
            "volumes are whole GiB: {required} bytes round up to {gib} GiB, above the limit of {limit} bytes"
        )));
    }
    Ok(gib)
}

/// The parameters of a StorageClass (or VolumeSnapshotClass, without `type` and
/// `availabilityZone`): the ones Basalt reads, and the orchestrator's, kept as metadata.
struct Parameters {
    volume_type: String,
    zone: String,
    metadata: HashMap<String, String>,
}

fn parameters(given: &HashMap<String, String>, allowed: &[&str]) -> Result<Parameters, Status> {
    let mut parsed = Parameters { volume_type: String::new(), zone: String::new(), metadata: HashMap::new() };
    for (key, value) in given {
        match key.as_str() {
            PARAMETER_TYPE if allowed.contains(&PARAMETER_TYPE) => parsed.volume_type = value.clone(),
            PARAMETER_ZONE if allowed.contains(&PARAMETER_ZONE) => parsed.zone = value.clone(),
            orchestrator if orchestrator.starts_with(ORCHESTRATOR_PREFIX) => {
                parsed.metadata.insert(key.clone(), value.clone());
            }
            unknown => {
                return Err(Status::invalid_argument(format!(
                    "unknown parameter {}: use {}",
                    basalt::error::excerpt(unknown),
                    if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") }
                )));
            }
        }
    }
    Ok(parsed)
}

/// Whether a volume type's extra specs let several hosts attach its volumes.
fn multiattach(volume_type: &proto::VolumeType) -> bool {
    volume_type.extra_specs.get("multiattach").is_some_and(|value| value.trim().eq_ignore_ascii_case("<is> true"))
}

fn content_source(volume: &proto::Volume) -> Option<VolumeContentSource> {
    let source = if !volume.snapshot_id.is_empty() {
        volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
            snapshot_id: volume.snapshot_id.clone(),
        })
    } else if !volume.source_volume_id.is_empty() {
        volume_content_source::Type::Volume(volume_content_source::VolumeSource {
            volume_id: volume.source_volume_id.clone(),
        })
    } else {
        return None;
    };
    Some(VolumeContentSource { r#type: Some(source) })
}

fn csi_volume(volume: &proto::Volume) -> csi::Volume {
    csi::Volume {
        capacity_bytes: (volume.size_gib * GIB_BYTES) as i64,
        volume_id: volume.id.clone(),
        volume_context: HashMap::new(),
        content_source: content_source(volume),
        accessible_topology: vec![topology::zone(&volume.availability_zone)],
    }
}

fn condition(volume: &proto::Volume) -> VolumeCondition {
    let status = volume.status();
    let abnormal = matches!(
        status,
        VolumeStatus::Error
            | VolumeStatus::ErrorDeleting
            | VolumeStatus::ErrorExtending
            | VolumeStatus::ErrorRestoring
            | VolumeStatus::ErrorBackingUp
    );
    let message = if abnormal {
        format!("the volume is {}: {}", status.cinder_name(), volume.error_reason)
    } else {
        format!("the volume is {}", status.cinder_name())
    };
    VolumeCondition { abnormal, message }
}

fn published_nodes(volume: &proto::Volume) -> Vec<String> {
    volume.attachments.iter().map(|attachment| attachment.server_id.clone()).collect()
}

fn csi_snapshot(snapshot: &proto::Snapshot) -> csi::Snapshot {
    csi::Snapshot {
        size_bytes: (snapshot.size_gib * GIB_BYTES) as i64,
        snapshot_id: snapshot.id.clone(),
        source_volume_id: snapshot.volume_id.clone(),
        creation_time: snapshot.created_at,
        ready_to_use: snapshot.status() == SnapshotStatus::Available,
        group_snapshot_id: String::new(),
    }
}

/// `publish_context`: what the node needs to reach the volume, from the attachment's connection
/// info. It holds the CHAP secret of an iSCSI export, so it is never logged.
fn publish_context(attachment: &proto::Attachment) -> Result<HashMap<String, String>, Status> {
    use proto::connection_info::Target;
    let info =
        attachment.connection_info.as_ref().ok_or_else(|| Status::internal("the attachment has no connection info"))?;
    let mut context = HashMap::from([
        ("kind".to_owned(), info.driver_volume_type.clone()),
        ("access_mode".to_owned(), info.access_mode.clone()),
    ]);
    match &info.target {
        Some(Target::Local(local)) => {
            context.insert("device_path".into(), local.device_path.clone());
        }
        Some(Target::Iscsi(iscsi)) => {
            context.insert("target_iqn".into(), iscsi.target_iqn.clone());
            context.insert("target_portal".into(), iscsi.target_portal.clone());
            context.insert("target_lun".into(), iscsi.target_lun.to_string());
            context.insert("auth_username".into(), iscsi.auth_username.clone());
            context.insert("auth_password".into(), iscsi.auth_password.clone());
        }
        Some(Target::Nfs(_)) | None => {}
    }
    Ok(context)
}

/// A page token is the last volume or snapshot id of the previous page.
fn page(max_entries: i32, starting_token: &str) -> Result<proto::PageRequest, Status> {
    if max_entries < 0 {
        return Err(Status::invalid_argument("max_entries cannot be negative"));
    }
    if !starting_token.is_empty() && uuid::Uuid::try_parse(starting_token).is_err() {
        return Err(Status::aborted(format!(
            "starting_token {} is not a token of this plugin",
            basalt::error::excerpt(starting_token)
        )));
    }
    Ok(proto::PageRequest { limit: max_entries as u32, marker: starting_token.to_owned(), offset: 0 })
}

/// Oldest first, so a page token stays valid while volumes are created.
fn oldest_first() -> Vec<proto::SortKey> {
    vec![proto::SortKey { key: "created_at".into(), descending: false }]
}

fn capability(rpc: Rpc) -> ControllerServiceCapability {
    ControllerServiceCapability {
        r#type: Some(csi::controller_service_capability::Type::Rpc(csi::controller_service_capability::Rpc {
            r#type: rpc as i32,
        })),
    }
}

impl Controller {
    pub fn new(channel: Channel, project_id: ProjectId, ready_wait: Duration) -> Self {
        Self {
            client: VolumeServiceClient::new(channel),
            context: CallContext::new(project_id.clone(), "csi", basalt::context::MEMBER_ROLES),
            capacity_context: CallContext::new(project_id, "csi", basalt::context::ADMIN_ROLES),
            ready_wait,
            locks: Arc::default(),
        }
    }

    fn client(&self) -> VolumeServiceClient<Channel> {
        self.client.clone()
    }

    async fn volume(&self, volume_id: &str) -> Result<Option<proto::Volume>, Status> {
        if uuid::Uuid::try_parse(volume_id).is_err() {
            return Ok(None);
        }
        let request = self.context.request(proto::GetVolumeRequest { volume_id: volume_id.into() });
        match self.client().get_volume(request).await {
            Ok(volume) => Ok(Some(volume.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    async fn existing_volume(&self, volume_id: &str) -> Result<proto::Volume, Status> {
        self.volume(volume_id).await?.ok_or_else(|| Status::not_found(format!("volume {volume_id} does not exist")))
    }

    async fn snapshot(&self, snapshot_id: &str) -> Result<Option<proto::Snapshot>, Status> {
        if uuid::Uuid::try_parse(snapshot_id).is_err() {
            return Ok(None);
        }
        let request = self.context.request(proto::GetSnapshotRequest { snapshot_id: snapshot_id.into() });
        match self.client().get_snapshot(request).await {
            Ok(snapshot) => Ok(Some(snapshot.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    async fn volume_type(&self, name: &str) -> Result<proto::VolumeType, Status> {
        let mut client = self.client();
        let found = if name.is_empty() {
            client.get_default_volume_type(self.context.request(proto::GetDefaultVolumeTypeRequest {})).await
        } else {
            client.get_volume_type(self.context.request(proto::GetVolumeTypeRequest { volume_type: name.into() })).await
        };
        match found {
            Ok(volume_type) => Ok(volume_type.into_inner()),
            Err(status) if status.code() == Code::NotFound => Err(Status::invalid_argument(format!(
                "the volume type {} of the parameters does not exist",
                basalt::error::excerpt(name)
            ))),
            Err(status) => Err(status),
        }
    }

    /// Waits until the volume leaves its transitional status; `None` when it does not in time.
    async fn settled_volume(&self, volume_id: &str) -> Result<Option<proto::Volume>, Status> {
        let deadline = tokio::time::Instant::now() + self.ready_wait;
        let mut intervals = PollIntervals::new();
        loop {
            let volume = self.existing_volume(volume_id).await?;
            let busy = matches!(
                volume.status(),
                VolumeStatus::Creating
                    | VolumeStatus::Extending
                    | VolumeStatus::Retyping
                    | VolumeStatus::RestoringBackup
                    | VolumeStatus::Downloading
            );
            if !busy {
                return Ok(Some(volume));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            intervals.pause().await;
        }
    }

    async fn volume_attachments(&self, volume_id: &str, node: &str) -> Result<Vec<proto::Attachment>, Status> {
        let request = proto::ListAttachmentsRequest {
            volume_id: volume_id.into(),
            instance_id: node.into(),
            ..Default::default()
        };
        Ok(self.client().list_attachments(self.context.request(request)).await?.into_inner().attachments)
    }
}

#[tonic::async_trait]
impl csi::controller_server::Controller for Controller {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.name, "name")?;
        let parameters = parameters(&request.parameters, &[PARAMETER_TYPE, PARAMETER_ZONE])?;
        let zone = topology::zone_for(request.accessibility_requirements.as_ref(), &parameters.zone)?;
        let size_gib = size_gib(request.capacity_range.as_ref())?;
        let volume_type = self.volume_type(&parameters.volume_type).await?;
        capability::check_all(&request.volume_capabilities, multiattach(&volume_type))?;
        let (snapshot_id, source_volume_id) =
            match request.volume_content_source.as_ref().and_then(|source| source.r#type.as_ref()) {
                Some(volume_content_source::Type::Snapshot(source)) => {
                    let snapshot = self.snapshot(&source.snapshot_id).await?.ok_or_else(|| {
                        Status::not_found(format!("source snapshot {} does not exist", source.snapshot_id))
                    })?;
                    (snapshot.id, String::new())
                }
                Some(volume_content_source::Type::Volume(source)) => {
                    let volume = self.volume(&source.volume_id).await?.ok_or_else(|| {
                        Status::not_found(format!("source volume {} does not exist", source.volume_id))
                    })?;
                    (String::new(), volume.id)
                }
                None => (String::new(), String::new()),
            };
        let _name = self.locks.lock(format!("volume-name:{}", request.name)).await;
        let create = proto::CreateVolumeRequest {
            size_gib,
            name: request.name.clone(),
            volume_type: volume_type.id.clone(),
            availability_zone: zone,
            metadata: parameters.metadata,
            snapshot_id,
            source_volume_id,
            idempotency_key: request.name.clone(),
            ..Default::default()
        };
        let volume = match self.client().create_volume(self.context.request(create)).await {
            Ok(volume) => volume.into_inner(),
            Err(status) if status.code() == Code::InvalidArgument && status.message().contains("must be at least") => {
                return Err(Status::out_of_range(status.message().to_owned()));
            }
            Err(status) => return Err(status),
        };
        let Some(ready) = self.settled_volume(&volume.id).await? else {
            return Err(Status::aborted(format!("volume {} is still being created; retry", volume.id)));
        };
        match ready.status() {
            VolumeStatus::Available | VolumeStatus::InUse | VolumeStatus::Reserved => {}
            VolumeStatus::Error => {
                // A retry with the same name must get a new attempt, not this failed volume.
                let delete = proto::DeleteVolumeRequest { volume_id: ready.id.clone(), ..Default::default() };
                let _ = self.client().delete_volume(self.context.request(delete)).await;
                return Err(Status::resource_exhausted(format!(
                    "volume {} could not be created ({}); it is being removed, retry",
                    ready.id, ready.error_reason
                )));
            }
            other => {
                return Err(Status::aborted(format!(
                    "volume {} is {}; retry once it is available",
                    ready.id,
                    other.cinder_name()
                )));
            }
        }
        tracing::info!(volume_id = %ready.id, name = %request.name, size_gib = ready.size_gib, "csi volume ready");
        Ok(Response::new(CreateVolumeResponse { volume: Some(csi_volume(&ready)) }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        let _volume = self.locks.lock(request.volume_id.clone()).await;
        let Some(volume) = self.volume(&request.volume_id).await? else {
            return Ok(Response::new(DeleteVolumeResponse {}));
        };
        if volume.status() == VolumeStatus::Deleting {
            return Ok(Response::new(DeleteVolumeResponse {}));
        }
        let delete = proto::DeleteVolumeRequest { volume_id: volume.id.clone(), ..Default::default() };
        match self.client().delete_volume(self.context.request(delete)).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) if status.code() == Code::FailedPrecondition => {
                return Err(Status::failed_precondition(status.message().to_owned()));
            }
            Err(status) => return Err(status),
        }
        tracing::info!(volume_id = %volume.id, "csi volume deleted");
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        required(&request.node_id, "node_id")?;
        let capability = request
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let node = NodeRef::parse(&request.node_id).ok_or_else(|| {
            Status::not_found(format!("node {} is unknown", basalt::error::excerpt(&request.node_id)))
        })?;
        let _volume = self.locks.lock(request.volume_id.clone()).await;
        let volume = self.existing_volume(&request.volume_id).await?;
        let wanted = capability::check(capability, volume.multiattach)?;
        let readonly = request.readonly || wanted.read_only();
        let mode = if readonly { AttachMode::ReadOnly } else { AttachMode::ReadWrite };
        let mine = self.volume_attachments(&volume.id, node.name.as_str()).await?;
        if let Some(existing) = mine.first() {
            if existing.mode() != mode {
                return Err(Status::already_exists(format!(
                    "volume {} is published to node {} {}; unpublish it first",
                    volume.id,
                    node.name,
                    if existing.mode() == AttachMode::ReadOnly { "read-only" } else { "read-write" }
                )));
            }
            return Ok(Response::new(ControllerPublishVolumeResponse { publish_context: publish_context(existing)? }));
        }
        let elsewhere = volume.attachments.iter().any(|attachment| attachment.server_id != node.name.as_str());
        if elsewhere && (!volume.multiattach || wanted.single_node()) {
            return Err(Status::failed_precondition(format!(
                "volume {} is published to another node and its access mode allows one node only",
                volume.id
            )));
        }
        let connector = Connector {
            initiator: node.initiator.clone().unwrap_or_default(),
            host: node.name.to_string(),
            do_local_attach: true,
            ..Default::default()
        };
        let create = proto::CreateAttachmentRequest {
            volume_id: volume.id.clone(),
            instance_id: node.name.to_string(),
            connector: Some(connector),
            mode: mode as i32,
        };
        let attachment = self.client().create_attachment(self.context.request(create)).await?.into_inner();
        // The node attaches from the publish context at once: the volume is in use from now on.
        let complete = proto::CompleteAttachmentRequest { attachment_id: attachment.id.clone() };
        self.client().complete_attachment(self.context.request(complete)).await?;
        tracing::info!(volume_id = %volume.id, node = %node.name, attachment_id = %attachment.id, "csi volume published");
        Ok(Response::new(ControllerPublishVolumeResponse { publish_context: publish_context(&attachment)? }))
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        let _volume = self.locks.lock(request.volume_id.clone()).await;
        if self.volume(&request.volume_id).await?.is_none() {
            return Ok(Response::new(ControllerUnpublishVolumeResponse {}));
        }
        // Without a node id, the volume is unpublished from every node.
        let node = match request.node_id.as_str() {
            "" => String::new(),
            text => match NodeRef::parse(text) {
                Some(node) => node.name.to_string(),
                None => return Ok(Response::new(ControllerUnpublishVolumeResponse {})),
            },
        };
        for attachment in self.volume_attachments(&request.volume_id, &node).await? {
            let delete = proto::DeleteAttachmentRequest { attachment_id: attachment.id.clone() };
            match self.client().delete_attachment(self.context.request(delete)).await {
                Ok(_) => {}
                Err(status) if status.code() == Code::NotFound => {}
                Err(status) => return Err(status),
            }
            tracing::info!(volume_id = %request.volume_id, node = %attachment.instance_id, "csi volume unpublished");
        }
        Ok(Response::new(ControllerUnpublishVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        if request.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities are required"));
        }
        let volume = self.existing_volume(&request.volume_id).await?;
        if let Err(refused) = capability::check_all(&request.volume_capabilities, volume.multiattach) {
            return Ok(Response::new(ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: refused.message().to_owned(),
            }));
        }
        Ok(Response::new(ValidateVolumeCapabilitiesResponse {
            confirmed: Some(csi::validate_volume_capabilities_response::Confirmed {
                volume_context: request.volume_context,
                volume_capabilities: request.volume_capabilities,
                parameters: request.parameters,
                mutable_parameters: request.mutable_parameters,
            }),
            message: String::new(),
        }))
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let request = request.into_inner();
        let list = proto::ListVolumesRequest {
            page: Some(page(request.max_entries, &request.starting_token)?),
            sort: oldest_first(),
            ..Default::default()
        };
        let listed = match self.client().list_volumes(self.context.request(list)).await {
            Ok(listed) => listed.into_inner(),
            Err(status) if status.code() == Code::InvalidArgument && status.message().contains("marker") => {
                return Err(Status::aborted(format!("starting_token {} is no longer valid", request.starting_token)));
            }
            Err(status) => return Err(status),
        };
        let entries = listed
            .volumes
            .iter()
            .map(|volume| csi::list_volumes_response::Entry {
                volume: Some(csi_volume(volume)),
                status: Some(csi::list_volumes_response::VolumeStatus {
                    published_node_ids: published_nodes(volume),
                    volume_condition: Some(condition(volume)),
                }),
            })
            .collect();
        Ok(Response::new(ListVolumesResponse { entries, next_token: listed.page.unwrap_or_default().next_marker }))
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let request = request.into_inner();
        let parameters = parameters(&request.parameters, &[PARAMETER_TYPE, PARAMETER_ZONE])?;
        let segments = request.accessible_topology.map(|topology| topology.segments).unwrap_or_default();
        let zone = segments.get(topology::ZONE_KEY).cloned().unwrap_or(parameters.zone);
        let node = segments.get(topology::NODE_KEY).cloned().unwrap_or_default();
        let pools = self
            .client()
            .list_pools(self.capacity_context.request(proto::ListPoolsRequest::default()))
            .await?
            .into_inner()
            .pools;
        let offered: Vec<u64> = pools
            .iter()
            .filter(|pool| pool.schedulable)
            .filter(|pool| zone.is_empty() || pool.availability_zone == zone)
            .filter(|pool| node.is_empty() || pool.r#ref.as_ref().is_some_and(|pool| pool.node_id == node))
            .map(|pool| pool.largest_volume_gib)
            .collect();
        let bytes = |gib: u64| (gib.saturating_mul(GIB_BYTES)).min(i64::MAX as u64) as i64;
        Ok(Response::new(GetCapacityResponse {
            available_capacity: bytes(offered.iter().sum()),
            maximum_volume_size: Some(bytes(offered.iter().copied().max().unwrap_or(0))),
            minimum_volume_size: Some(GIB_BYTES as i64),
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let capabilities = [
            Rpc::CreateDeleteVolume,
            Rpc::PublishUnpublishVolume,
            Rpc::ListVolumes,
            Rpc::GetCapacity,
            Rpc::CreateDeleteSnapshot,
            Rpc::ListSnapshots,
            Rpc::CloneVolume,
            Rpc::PublishReadonly,
            Rpc::ExpandVolume,
            Rpc::ListVolumesPublishedNodes,
            Rpc::VolumeCondition,
            Rpc::GetVolume,
            Rpc::SingleNodeMultiWriter,
            Rpc::ModifyVolume,
            Rpc::GetSnapshot,
        ];
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: capabilities.into_iter().map(capability).collect(),
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let request = request.into_inner();
        required(&request.name, "name")?;
        required(&request.source_volume_id, "source_volume_id")?;
        let parameters = parameters(&request.parameters, &[])?;
        let _name = self.locks.lock(format!("snapshot-name:{}", request.name)).await;
        let create = proto::CreateSnapshotRequest {
            volume_id: request.source_volume_id.clone(),
            name: request.name.clone(),
            // The orchestrator snapshots volumes in use; the node copies a consistent image.
            force: true,
            metadata: parameters.metadata,
            idempotency_key: request.name.clone(),
            ..Default::default()
        };
        let created = match self.client().create_snapshot(self.context.request(create)).await {
            Ok(snapshot) => snapshot.into_inner(),
            Err(status) if status.code() == Code::NotFound || status.code() == Code::InvalidArgument => {
                if self.volume(&request.source_volume_id).await?.is_none() {
                    return Err(Status::not_found(format!("volume {} does not exist", request.source_volume_id)));
                }
                return Err(status);
            }
            Err(status) => return Err(status),
        };
        let deadline = tokio::time::Instant::now() + self.ready_wait;
        let mut snapshot = created;
        let mut intervals = PollIntervals::new();
        while snapshot.status() == SnapshotStatus::Creating && tokio::time::Instant::now() < deadline {
            intervals.pause().await;
            snapshot = self.snapshot(&snapshot.id).await?.ok_or_else(|| Status::aborted("the snapshot vanished"))?;
        }
        if snapshot.status() == SnapshotStatus::Error {
            let delete = proto::DeleteSnapshotRequest { snapshot_id: snapshot.id.clone(), force: false };
            let _ = self.client().delete_snapshot(self.context.request(delete)).await;
            return Err(Status::resource_exhausted(format!(
                "snapshot {} could not be taken ({}); it is being removed, retry",
                snapshot.id, snapshot.error_reason
            )));
        }
        tracing::info!(snapshot_id = %snapshot.id, name = %request.name, "csi snapshot taken");
        Ok(Response::new(CreateSnapshotResponse { snapshot: Some(csi_snapshot(&snapshot)) }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let request = request.into_inner();
        required(&request.snapshot_id, "snapshot_id")?;
        let _snapshot = self.locks.lock(request.snapshot_id.clone()).await;
        let Some(snapshot) = self.snapshot(&request.snapshot_id).await? else {
            return Ok(Response::new(DeleteSnapshotResponse {}));
        };
        if snapshot.status() == SnapshotStatus::Deleting {
            return Ok(Response::new(DeleteSnapshotResponse {}));
        }
        let delete = proto::DeleteSnapshotRequest { snapshot_id: snapshot.id.clone(), force: false };
        match self.client().delete_snapshot(self.context.request(delete)).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => return Err(status),
        }
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let request = request.into_inner();
        let page = page(request.max_entries, &request.starting_token)?;
        if !request.snapshot_id.is_empty() {
            let entries = self
                .snapshot(&request.snapshot_id)
                .await?
                .filter(|snapshot| {
                    request.source_volume_id.is_empty() || snapshot.volume_id == request.source_volume_id
                })
                .map(|snapshot| csi::list_snapshots_response::Entry { snapshot: Some(csi_snapshot(&snapshot)) })
                .into_iter()
                .collect();
            return Ok(Response::new(ListSnapshotsResponse { entries, next_token: String::new() }));
        }
        if !request.source_volume_id.is_empty() && uuid::Uuid::try_parse(&request.source_volume_id).is_err() {
            return Ok(Response::new(ListSnapshotsResponse::default()));
        }
        let list = proto::ListSnapshotsRequest {
            page: Some(page),
            sort: oldest_first(),
            volume_id: request.source_volume_id.clone(),
            ..Default::default()
        };
        let listed = match self.client().list_snapshots(self.context.request(list)).await {
            Ok(listed) => listed.into_inner(),
            Err(status) if status.code() == Code::InvalidArgument && status.message().contains("marker") => {
                return Err(Status::aborted(format!("starting_token {} is no longer valid", request.starting_token)));
            }
            Err(status) => return Err(status),
        };
        let entries = listed
            .snapshots
            .iter()
            .map(|snapshot| csi::list_snapshots_response::Entry { snapshot: Some(csi_snapshot(snapshot)) })
            .collect();
        Ok(Response::new(ListSnapshotsResponse { entries, next_token: listed.page.unwrap_or_default().next_marker }))
    }

    async fn get_snapshot(
        &self,
        request: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        let request = request.into_inner();
        required(&request.snapshot_id, "snapshot_id")?;
        let snapshot = self
            .snapshot(&request.snapshot_id)
            .await?
            .ok_or_else(|| Status::not_found(format!("snapshot {} does not exist", request.snapshot_id)))?;
        Ok(Response::new(GetSnapshotResponse { snapshot: Some(csi_snapshot(&snapshot)) }))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        let range =
            request.capacity_range.as_ref().ok_or_else(|| Status::invalid_argument("capacity_range is required"))?;
        let new_gib = size_gib(Some(range))?;
        let _volume = self.locks.lock(request.volume_id.clone()).await;
        let volume = self.existing_volume(&request.volume_id).await?;
        let block = request.volume_capability.as_ref().is_some_and(|capability| {
            matches!(capability.access_type, Some(csi::volume_capability::AccessType::Block(_)))
        });
        if volume.size_gib < new_gib {
            let extend = proto::ExtendVolumeRequest { volume_id: volume.id.clone(), new_size_gib: new_gib };
            match self.client().extend_volume(self.context.request(extend)).await {
                Ok(_) => {}
                Err(status) if status.code() == Code::ResourceExhausted => {
                    return Err(Status::out_of_range(status.message().to_owned()));
                }
                Err(status) => return Err(status),
            }
        }
        let Some(expanded) = self.settled_volume(&volume.id).await? else {
            return Err(Status::aborted(format!("volume {} is still being extended; retry", volume.id)));
        };
        if expanded.status() == VolumeStatus::ErrorExtending || expanded.size_gib < new_gib {
            return Err(Status::internal(format!(
                "volume {} could not be extended to {new_gib} GiB: {}",
                volume.id, expanded.error_reason
            )));
        }
        Ok(Response::new(ControllerExpandVolumeResponse {
            capacity_bytes: (expanded.size_gib * GIB_BYTES) as i64,
            node_expansion_required: !block,
        }))
    }

    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        let volume = self.existing_volume(&request.volume_id).await?;
        Ok(Response::new(ControllerGetVolumeResponse {
            volume: Some(csi_volume(&volume)),
            status: Some(csi::controller_get_volume_response::VolumeStatus {
                published_node_ids: published_nodes(&volume),
                volume_condition: Some(condition(&volume)),
            }),
        }))
    }

    async fn controller_modify_volume(
        &self,
        request: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        let parameters = parameters(&request.mutable_parameters, &[PARAMETER_TYPE])?;
        let _volume = self.locks.lock(request.volume_id.clone()).await;
        let volume = self.existing_volume(&request.volume_id).await?;
        if parameters.volume_type.is_empty() {
            return Ok(Response::new(ControllerModifyVolumeResponse {}));
        }
        let wanted = self.volume_type(&parameters.volume_type).await?;
        if wanted.id != volume.volume_type_id {
            let retype = proto::RetypeVolumeRequest {
                volume_id: volume.id.clone(),
                new_type: wanted.id.clone(),
                migration_policy: "never".into(),
            };
            match self.client().retype_volume(self.context.request(retype)).await {
                Ok(_) => {}
                Err(status) if status.code() == Code::InvalidArgument || status.code() == Code::FailedPrecondition => {
                    return Err(Status::invalid_argument(format!(
                        "volume {} cannot change to type {}: {}",
                        volume.id,
                        wanted.name,
                        status.message()
                    )));
                }
                Err(status) => return Err(status),
            }
            if self.settled_volume(&volume.id).await?.is_none() {
                return Err(Status::aborted(format!("volume {} is still changing type; retry", volume.id)));
            }
            tracing::info!(volume_id = %volume.id, volume_type = %wanted.name, "csi volume retyped");
        }
        Ok(Response::new(ControllerModifyVolumeResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(required: i64, limit: i64) -> CapacityRange {
        CapacityRange { required_bytes: required, limit_bytes: limit }
    }

    #[test]
    fn sizes_round_up_to_whole_gib_within_the_limit() {
        assert_eq!(size_gib(None).unwrap(), 1);
        assert_eq!(size_gib(Some(&range(1, 0))).unwrap(), 1);
        assert_eq!(size_gib(Some(&range(GIB_BYTES as i64 + 1, 0))).unwrap(), 2);
        assert_eq!(size_gib(Some(&range(0, 3 * GIB_BYTES as i64))).unwrap(), 1);
        assert_eq!(size_gib(Some(&range(10, 20))).unwrap_err().code(), Code::OutOfRange);
        assert_eq!(size_gib(Some(&range(-1, 0))).unwrap_err().code(), Code::OutOfRange);
    }

    #[test]
    fn parameters_are_known_or_refused() {
        let given: HashMap<String, String> =
            [("type".to_owned(), "fast".to_owned()), ("csi.storage.k8s.io/pvc/name".to_owned(), "data".to_owned())]
                .into();
        let parsed = parameters(&given, &[PARAMETER_TYPE, PARAMETER_ZONE]).unwrap();
        assert_eq!(parsed.volume_type, "fast");
        assert_eq!(parsed.metadata["csi.storage.k8s.io/pvc/name"], "data");
        let unknown: HashMap<String, String> = [("replicas".to_owned(), "3".to_owned())].into();
        assert_eq!(parameters(&unknown, &[PARAMETER_TYPE]).err().unwrap().code(), Code::InvalidArgument);
        assert!(parameters(&given, &[]).is_err(), "snapshot classes take no type");
    }

    #[test]
    fn tokens_are_volume_ids() {
        assert_eq!(page(-1, "").unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(page(10, "garbage").unwrap_err().code(), Code::Aborted);
        assert_eq!(page(10, "").unwrap().limit, 10);
    }
}
