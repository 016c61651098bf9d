//! The NodeAgent gRPC service: the scheduler's commands to this host, each idempotent by UUID and
//! serialised per volume so a retry never races the call it retries.

use std::{sync::Arc, time::Duration};

use basalt::{
    ServiceError,
    ids::{BackupId, ProjectId, SnapshotId, VolumeId},
    locks::KeyedLocks,
    proto::{
        CapacityReport, ExportProtocol, NodeBackup, NodeBackupProgress, NodeBackupRef, NodeBackupRequest,
        NodeCopySetRequest, NodeCopySetResponse, NodeCreateVolumeRequest, NodeDeleteBackupRequest,
        NodeDeleteBackupResponse, NodeDeleteSnapshotResponse, NodeDeleteVolumeRequest, NodeDeleteVolumeResponse,
        NodeExport, NodeExportRequest, NodeExtendVolumeRequest, NodeGetCapacityRequest, NodeGetVolumeRequest,
        NodeInitiatorRequest, NodeListManageableRequest, NodeListManageableResponse,
        NodeListManageableSnapshotsResponse, NodeListStorageRequest, NodeListStorageResponse,
        NodeManageSnapshotRequest, NodeManageVolumeRequest, NodeManageable, NodeManageableSnapshot, NodeRestoreRequest,
        NodeRevertVolumeRequest, NodeSnapshot, NodeSnapshotRequest, NodeUnexportResponse, NodeVolume,
        node_agent_server::NodeAgent,
    },
};
use tonic::{Request, Response, Status};

use crate::{
    backend::{Backend, BackendSnapshot, BackendVolume, ConfiguredBackend, VolumeSource},
    backup::{BackupOrder, Backups, engine::Manifest},
    copy_set::{CopyKind, CopySet},
    reporter::Reporter,
    target::{Export, Target},
};
use uuid::Uuid;

#[derive(Clone)]
pub struct Agent {
    backend: Arc<ConfiguredBackend>,
    target: Arc<Target>,
    backups: Arc<Backups>,
    reporter: Arc<Reporter>,
    /// One lock per resource id (volume, snapshot or backup).
    locks: Arc<KeyedLocks<Uuid>>,
    /// The longest writers are held still for a set of copies.
    freeze_limit: Duration,
}

impl Agent {
    pub fn new(
        backend: Arc<ConfiguredBackend>,
        target: Arc<Target>,
        backups: Arc<Backups>,
        reporter: Arc<Reporter>,
        freeze_limit: Duration,
    ) -> Self {
        Self { backend, target, backups, reporter, locks: Arc::default(), freeze_limit }
    }

    async fn cut_set(&self, kind: CopyKind, request: NodeCopySetRequest) -> Result<NodeCopySetResponse, ServiceError> {
        let set = CopySet {
            backend: &self.backend,
            target: &self.target,
            locks: &self.locks,
            freeze_limit: self.freeze_limit,
        };
        let writers_held = set.cut(kind, &request).await?;
        tracing::info!(pool = %request.pool, copies = request.copies.len(), ?kind, writers_held, "copy set cut");
        self.reporter.report_soon();
        Ok(NodeCopySetResponse { writers_held })
    }

    async fn volume_path(&self, pool: &str, volume_id: VolumeId) -> Result<String, ServiceError> {
        self.backend
            .get_volume(pool, volume_id)
            .await?
            .map(|volume| volume.path)
            .ok_or_else(|| ServiceError::not_found(format!("volume {volume_id} is not in pool {pool:?} on this node")))
    }

    pub fn backend(&self) -> Arc<ConfiguredBackend> {
        self.backend.clone()
    }

    /// Cinder's NFS connection data: the share, the file's name in it, the mount options.
    fn nfs_export(&self, pool: &str, volume_id: VolumeId, path: &str) -> Result<NodeExport, ServiceError> {
        let ConfiguredBackend::Nfs(nfs) = self.backend.as_ref() else {
            return Err(ServiceError::invalid(format!(
                "volume {volume_id} is not on an NFS share, so a host reaches it over iSCSI only: the connector needs the host's iSCSI initiator name (connector.initiator)"
            )));
        };
        let (share, _) = nfs.share(pool)?;
        let name = std::path::Path::new(path).file_name().map(|name| name.to_string_lossy().into_owned());
        Ok(NodeExport {
            volume_id: volume_id.to_string(),
            nfs_export: share.address.clone(),
            nfs_name: name.unwrap_or_default(),
            nfs_options: if share.options.is_empty() { String::new() } else { format!("-o {}", share.options) },
            ..Default::default()
        })
    }
}

fn volume_to_proto(volume: BackendVolume) -> NodeVolume {
    NodeVolume {
        volume_id: volume.volume_id.to_string(),
        pool: volume.pool,
        size_bytes: volume.size_bytes,
        path: volume.path,
        allocated_bytes: volume.allocated_bytes,
    }
}

fn snapshot_to_proto(snapshot: BackendSnapshot, volume_id: String) -> NodeSnapshot {
    NodeSnapshot {
        snapshot_id: snapshot.snapshot_id.to_string(),
        volume_id,
        pool: snapshot.pool,
        size_bytes: snapshot.size_bytes,
        path: snapshot.path,
    }
}

fn backup_to_proto(manifest: Manifest) -> NodeBackup {
    NodeBackup {
        object_count: manifest.chunks.iter().flatten().count() as u64,
        backup_id: manifest.backup_id,
        project_id: manifest.project_id,
        volume_id: manifest.volume_id,
        parent_id: manifest.parent_id.unwrap_or_default(),
        size_bytes: manifest.size_bytes,
        stored_bytes: manifest.stored_bytes,
        checksum: manifest.checksum,
        name: manifest.name,
        description: manifest.description,
        metadata: manifest.metadata.into_iter().collect(),
        created_at: Some(prost_types::Timestamp { seconds: manifest.created_unix_seconds as i64, nanos: 0 }),
    }
}

fn export_to_proto(export: Export) -> NodeExport {
    NodeExport {
        volume_id: export.volume_id,
        target_iqn: export.iqn,
        target_portal: export.portal,
        target_lun: export.lun,
        auth_username: export.username,
        auth_password: export.password,
        ..Default::default()
    }
}

/// Parses an optional id field: empty is `None`.
fn optional_id<T>(text: &str, parse: fn(&str) -> Result<T, ServiceError>) -> Result<Option<T>, ServiceError> {
    if text.is_empty() { Ok(None) } else { parse(text).map(Some) }
}

#[tonic::async_trait]
impl NodeAgent for Agent {
    async fn create_volume(&self, request: Request<NodeCreateVolumeRequest>) -> Result<Response<NodeVolume>, Status> {
        let request = request.into_inner();
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let snapshot = optional_id(&request.source_snapshot_id, SnapshotId::parse)?;
        let source_volume = optional_id(&request.source_volume_id, VolumeId::parse)?;
        let source = match (snapshot, source_volume) {
            (None, None) => VolumeSource::Empty,
            (Some(snapshot), None) => VolumeSource::Snapshot(snapshot),
            (None, Some(volume)) => VolumeSource::Volume(volume),
            (Some(_), Some(_)) => {
                return Err(ServiceError::invalid("give source_snapshot_id or source_volume_id, not both").into());
            }
        };
        let _guard = self.locks.lock(*volume_id.as_uuid()).await;
        let volume = self.backend.create_volume(&request.pool, volume_id, request.size_bytes, source).await?;
        tracing::info!(volume_id = %volume_id, pool = %request.pool, size_bytes = request.size_bytes, ?source, "volume created");
        self.reporter.report_soon();
        Ok(Response::new(volume_to_proto(volume)))
    }

    async fn delete_volume(
        &self,
        request: Request<NodeDeleteVolumeRequest>,
    ) -> Result<Response<NodeDeleteVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let _guard = self.locks.lock(*volume_id.as_uuid()).await;
        // No target may keep serving a volume whose bytes are being wiped.
        self.target.remove(volume_id).await?;
        let existed = self.backend.delete_volume(&request.pool, volume_id).await?;
        tracing::info!(volume_id = %volume_id, pool = %request.pool, existed, "volume deleted");
        self.reporter.report_soon();
        Ok(Response::new(NodeDeleteVolumeResponse { existed }))
    }

    async fn get_volume(&self, request: Request<NodeGetVolumeRequest>) -> Result<Response<NodeVolume>, Status> {
        let request = request.into_inner();
        let volume_id = VolumeId::parse(&request.volume_id)?;
        match self.backend.get_volume(&request.pool, volume_id).await? {
            Some(volume) => Ok(Response::new(volume_to_proto(volume))),
            None => Err(ServiceError::not_found(format!(
                "volume {volume_id} is not in pool {:?} on this node",
                request.pool
            ))
            .into()),
        }
    }

    async fn get_capacity(
        &self,
        _request: Request<NodeGetCapacityRequest>,
    ) -> Result<Response<CapacityReport>, Status> {
        Ok(Response::new(self.reporter.current_report(&self.backend).await?))
    }

    async fn extend_volume(&self, request: Request<NodeExtendVolumeRequest>) -> Result<Response<NodeVolume>, Status> {
        let request = request.into_inner();
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let _guard = self.locks.lock(*volume_id.as_uuid()).await;
        let volume = self.backend.extend_volume(&request.pool, volume_id, request.new_size_bytes).await?;
        // An exported volume's LUN shows the new size to the initiator.
        self.target.refresh(volume_id).await?;
        tracing::info!(volume_id = %volume_id, new_size_bytes = request.new_size_bytes, "volume extended");
        self.reporter.report_soon();
        Ok(Response::new(volume_to_proto(volume)))
    }

    async fn create_snapshot(&self, request: Request<NodeSnapshotRequest>) -> Result<Response<NodeSnapshot>, Status> {
        let request = request.into_inner();
        let snapshot_id = SnapshotId::parse(&request.snapshot_id)?;
        let volume_id = VolumeId::parse(&request.volume_id)?;
        // The volume's lock: no revert or extend of it runs while its bytes are copied.
        let _guard = self.locks.lock(*volume_id.as_uuid()).await;
        let snapshot = self.backend.create_snapshot(&request.pool, snapshot_id, volume_id).await?;
        tracing::info!(snapshot_id = %snapshot_id, volume_id = %volume_id, "snapshot created");
        self.reporter.report_soon();
        Ok(Response::new(snapshot_to_proto(snapshot, request.volume_id)))
    }

    async fn create_snapshot_set(
        &self,
        request: Request<NodeCopySetRequest>,
    ) -> Result<Response<NodeCopySetResponse>, Status> {
        Ok(Response::new(self.cut_set(CopyKind::Snapshot, request.into_inner()).await?))
    }

    async fn clone_volume_set(
        &self,
        request: Request<NodeCopySetRequest>,
    ) -> Result<Response<NodeCopySetResponse>, Status> {
        Ok(Response::new(self.cut_set(CopyKind::Clone, request.into_inner()).await?))
    }

    async fn delete_snapshot(
        &self,
        request: Request<NodeSnapshotRequest>,
    ) -> Result<Response<NodeDeleteSnapshotResponse>, Status> {
        let request = request.into_inner();
        let snapshot_id = SnapshotId::parse(&request.snapshot_id)?;
        let _guard = self.locks.lock(*snapshot_id.as_uuid()).await;
        let existed = self.backend.delete_snapshot(&request.pool, snapshot_id).await?;
        tracing::info!(snapshot_id = %snapshot_id, existed, "snapshot deleted");
        self.reporter.report_soon();
        Ok(Response::new(NodeDeleteSnapshotResponse { existed }))
    }

    async fn revert_volume(&self, request: Request<NodeRevertVolumeRequest>) -> Result<Response<NodeVolume>, Status> {
        let request = request.into_inner();
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let snapshot_id = SnapshotId::parse(&request.snapshot_id)?;
        let _guard = self.locks.lock(*volume_id.as_uuid()).await;
        let volume = self.backend.revert_volume(&request.pool, volume_id, snapshot_id).await?;
        tracing::info!(volume_id = %volume_id, snapshot_id = %snapshot_id, "volume reverted");
        Ok(Response::new(volume_to_proto(volume)))
    }

    async fn list_storage(
        &self,
        _request: Request<NodeListStorageRequest>,
    ) -> Result<Response<NodeListStorageResponse>, Status> {
        let (volumes, snapshots) = self.backend.list().await?;
        Ok(Response::new(NodeListStorageResponse {
            volumes: volumes.into_iter().map(volume_to_proto).collect(),
            snapshots: snapshots.into_iter().map(|snapshot| snapshot_to_proto(snapshot, String::new())).collect(),
        }))
    }

    async fn list_manageable(
        &self,
        request: Request<NodeListManageableRequest>,
    ) -> Result<Response<NodeListManageableResponse>, Status> {
        let objects = self.backend.manageable(&request.get_ref().pool).await?;
        let objects = objects
            .into_iter()
            .map(|object| NodeManageable {
                name: object.name,
                size_bytes: object.size_bytes,
                reason_not_safe: object.reason_not_safe.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(NodeListManageableResponse { objects }))
    }

    async fn manage_volume(&self, request: Request<NodeManageVolumeRequest>) -> Result<Response<NodeVolume>, Status> {
        let request = request.into_inner();
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let _guard = self.locks.lock(*volume_id.as_uuid()).await;
        let volume =
            self.backend.manage_volume(&request.pool, volume_id, &request.source_name, request.size_bytes).await?;
        tracing::info!(volume_id = %volume_id, pool = %request.pool, source = %request.source_name, size_bytes = volume.size_bytes, "volume adopted");
        self.reporter.report_soon();
        Ok(Response::new(volume_to_proto(volume)))
    }

    async fn list_manageable_snapshots(
        &self,
        request: Request<NodeListManageableRequest>,
    ) -> Result<Response<NodeListManageableSnapshotsResponse>, Status> {
        let found = self.backend.manageable_snapshots(&request.get_ref().pool).await?;
        let snapshots = found
            .into_iter()
            .map(|snapshot| NodeManageableSnapshot {
                name: snapshot.name,
                size_bytes: snapshot.size_bytes,
                origin: snapshot.origin.unwrap_or_default(),
                reason_not_safe: snapshot.reason_not_safe.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(NodeListManageableSnapshotsResponse { snapshots }))
    }

    async fn manage_snapshot(
        &self,
        request: Request<NodeManageSnapshotRequest>,
    ) -> Result<Response<NodeSnapshot>, Status> {
        let request = request.into_inner();
        let snapshot_id = SnapshotId::parse(&request.snapshot_id)?;
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let _guard = self.locks.lock(*volume_id.as_uuid()).await;
        let snapshot =
            self.backend.manage_snapshot(&request.pool, snapshot_id, volume_id, &request.source_name).await?;
        tracing::info!(%snapshot_id, %volume_id, source = %request.source_name, "snapshot adopted");
        self.reporter.report_soon();
        Ok(Response::new(snapshot_to_proto(snapshot, volume_id.to_string())))
    }

    async fn export_volume(&self, request: Request<NodeExportRequest>) -> Result<Response<NodeExport>, Status> {
        let request = request.into_inner();
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let _guard = self.locks.lock(*volume_id.as_uuid()).await;
        let path = self.volume_path(&request.pool, volume_id).await?;
        match request.protocol() {
            ExportProtocol::Nfs => return Ok(Response::new(self.nfs_export(&request.pool, volume_id, &path)?)),
            ExportProtocol::Local => {
                let export = NodeExport { volume_id: volume_id.to_string(), local_path: path, ..Default::default() };
                return Ok(Response::new(export));
            }
            ExportProtocol::Iscsi => {}
        }
        let export = self.target.export(volume_id, &path).await?;
        tracing::info!(volume_id = %volume_id, iqn = %export.iqn, "volume exported");
        Ok(Response::new(export_to_proto(export)))
    }

    async fn allow_initiator(&self, request: Request<NodeInitiatorRequest>) -> Result<Response<NodeExport>, Status> {
        let request = request.into_inner();
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let _guard = self.locks.lock(*volume_id.as_uuid()).await;
        let export = self.target.allow(volume_id, &request.initiator).await?;
        tracing::info!(volume_id = %volume_id, initiator = %request.initiator, "initiator allowed");
        Ok(Response::new(export_to_proto(export)))
    }

    async fn revoke_initiator(
        &self,
        request: Request<NodeInitiatorRequest>,
    ) -> Result<Response<NodeUnexportResponse>, Status> {
        let request = request.into_inner();
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let _guard = self.locks.lock(*volume_id.as_uuid()).await;
        self.target.revoke(volume_id, &request.initiator).await?;
        tracing::info!(volume_id = %volume_id, initiator = %request.initiator, "initiator revoked");
        Ok(Response::new(NodeUnexportResponse {}))
    }

    async fn unexport_volume(
        &self,
        request: Request<NodeExportRequest>,
    ) -> Result<Response<NodeUnexportResponse>, Status> {
        let request = request.into_inner();
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let _guard = self.locks.lock(*volume_id.as_uuid()).await;
        self.target.remove(volume_id).await?;
        tracing::info!(volume_id = %volume_id, "volume export removed");
        Ok(Response::new(NodeUnexportResponse {}))
    }

    async fn backup_volume(&self, request: Request<NodeBackupRequest>) -> Result<Response<NodeBackup>, Status> {
        let request = request.into_inner();
        let backup_id = BackupId::parse(&request.backup_id)?;
        let _guard = self.locks.lock(*backup_id.as_uuid()).await;
        let order = BackupOrder {
            backup_id,
            project_id: ProjectId::parse(&request.project_id)?,
            volume_id: VolumeId::parse(&request.volume_id)?,
            pool: request.pool,
            snapshot_id: optional_id(&request.snapshot_id, SnapshotId::parse)?,
            from_temporary_snapshot: request.from_temporary_snapshot,
            parent_id: optional_id(&request.parent_id, BackupId::parse)?,
            name: request.name,
            description: request.description,
            metadata: request.metadata.into_iter().collect(),
        };
        let manifest = self.backups.backup(self.backend.as_ref(), order).await?;
        tracing::info!(backup_id = %backup_id, stored_bytes = manifest.stored_bytes, "backup written");
        Ok(Response::new(backup_to_proto(manifest)))
    }

    async fn get_backup_progress(
        &self,
        request: Request<NodeBackupRef>,
    ) -> Result<Response<NodeBackupProgress>, Status> {
        let backup_id = BackupId::parse(&request.into_inner().backup_id)?;
        let progress = self.backups.progress(&backup_id);
        Ok(Response::new(NodeBackupProgress { percent: progress.unwrap_or(0), running: progress.is_some() }))
    }

    async fn cancel_backup(&self, request: Request<NodeBackupRef>) -> Result<Response<NodeBackupProgress>, Status> {
        let backup_id = BackupId::parse(&request.into_inner().backup_id)?;
        let running = self.backups.cancel(&backup_id);
        tracing::info!(%backup_id, running, "backup cancellation asked");
        Ok(Response::new(NodeBackupProgress { percent: self.backups.progress(&backup_id).unwrap_or(0), running }))
    }

    async fn restore_backup(&self, request: Request<NodeRestoreRequest>) -> Result<Response<NodeVolume>, Status> {
        let request = request.into_inner();
        let backup_id = BackupId::parse(&request.backup_id)?;
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let _guard = self.locks.lock(*volume_id.as_uuid()).await;
        let project_id = ProjectId::parse(&request.project_id)?;
        self.backups.restore(self.backend.as_ref(), &project_id, backup_id, &request.pool, volume_id).await?;
        tracing::info!(backup_id = %backup_id, volume_id = %volume_id, "backup restored");
        let volume = self
            .backend
            .get_volume(&request.pool, volume_id)
            .await?
            .ok_or_else(|| ServiceError::internal(format!("volume {volume_id} vanished during the restore")))?;
        Ok(Response::new(volume_to_proto(volume)))
    }

    async fn delete_backup(
        &self,
        request: Request<NodeDeleteBackupRequest>,
    ) -> Result<Response<NodeDeleteBackupResponse>, Status> {
        let request = request.into_inner();
        let backup_id = BackupId::parse(&request.backup_id)?;
        let _guard = self.locks.lock(*backup_id.as_uuid()).await;
        let project_id = ProjectId::parse(&request.project_id)?;
        let (existed, freed_bytes) = self.backups.delete(&project_id, backup_id, request.sweep).await?;
        tracing::info!(backup_id = %backup_id, existed, freed_bytes, "backup deleted");
        Ok(Response::new(NodeDeleteBackupResponse { existed, freed_bytes }))
    }

    async fn get_backup_manifest(&self, request: Request<NodeBackupRef>) -> Result<Response<NodeBackup>, Status> {
        let request = request.into_inner();
        let backup_id = BackupId::parse(&request.backup_id)?;
        let manifest = self.backups.manifest(&ProjectId::parse(&request.project_id)?, backup_id).await?;
        Ok(Response::new(backup_to_proto(manifest)))
    }
}
