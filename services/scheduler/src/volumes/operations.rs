//! The volume operations the journal runs: the node's part of a create, delete, extend or revert,
//! and what each outcome does to the volume and to the snapshots or backup it involves.

use basalt::{
    ServiceError,
    ids::{BackupId, NodeId, ProjectId, SnapshotId, VolumeId},
    proto::{
        NodeCreateVolumeRequest, NodeExtendVolumeRequest, NodeManageVolumeRequest, NodeRestoreRequest,
        NodeRevertVolumeRequest,
    },
};
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, sea_query::Expr};
use serde::{Deserialize, Serialize};

use crate::{
    Core, claims,
    db::{backup, db_error, snapshot, volume},
    events::PendingEvent,
    journal::{Journalled, delete_snapshot_on, delete_volume_on, with_node},
    lifecycle::{BackupAction, SnapshotAction, VolumeAction},
    messages::{Action, Detail, Failure, Resource},
    quotas, status, volume_types,
};

const GIB: u64 = 1 << 30;

/// What a volume operation does, with everything needed to re-drive it from the journal alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VolumeOperation {
    CreateVolume {
        volume_id: VolumeId,
        node_id: NodeId,
        pool: String,
        size_gib: i64,
        source_snapshot_id: Option<SnapshotId>,
        source_volume_id: Option<VolumeId>,
        /// Restored onto the new volume once it exists (a volume from a backup).
        #[serde(default)]
        source_backup: Option<SourceBackup>,
    },
    /// Deletes the volume and, for a cascade, its snapshots first.
    DeleteVolume {
        volume_id: VolumeId,
        node_id: NodeId,
        pool: String,
        snapshot_ids: Vec<SnapshotId>,
    },
    ExtendVolume {
        volume_id: VolumeId,
        node_id: NodeId,
        pool: String,
        old_size_gib: i64,
        new_size_gib: i64,
        /// In use while it grows: it returns to in-use, not available.
        #[serde(default)]
        attached: bool,
    },
    RevertVolume {
        volume_id: VolumeId,
        snapshot_id: SnapshotId,
        node_id: NodeId,
        pool: String,
    },
    /// The node renames an object of the pool to the volume's name and grows it to the size.
    ManageVolume {
        volume_id: VolumeId,
        node_id: NodeId,
        pool: String,
        source_name: String,
        size_gib: i64,
    },
}

/// The backup a new volume is restored from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceBackup {
    pub backup_id: BackupId,
    pub project_id: ProjectId,
}

impl VolumeOperation {
    fn volume_id(&self) -> VolumeId {
        match self {
            Self::CreateVolume { volume_id, .. }
            | Self::DeleteVolume { volume_id, .. }
            | Self::ExtendVolume { volume_id, .. }
            | Self::RevertVolume { volume_id, .. }
            | Self::ManageVolume { volume_id, .. } => *volume_id,
        }
    }

    /// The lifecycle action whose running status the operation owns.
    fn action(&self) -> VolumeAction {
        match self {
            Self::CreateVolume { .. } | Self::ManageVolume { .. } => VolumeAction::Create,
            Self::DeleteVolume { .. } => VolumeAction::Delete,
            Self::ExtendVolume { attached: true, .. } => VolumeAction::ExtendAttached,
            Self::ExtendVolume { .. } => VolumeAction::Extend,
            Self::RevertVolume { .. } => VolumeAction::Revert,
        }
    }
}

impl Journalled for VolumeOperation {
    type Output = ();

    fn kind(&self) -> &'static str {
        match self {
            Self::CreateVolume { .. } => "create_volume",
            Self::DeleteVolume { .. } => "delete_volume",
            Self::ExtendVolume { .. } => "extend_volume",
            Self::RevertVolume { .. } => "revert_volume",
            Self::ManageVolume { .. } => "manage_volume",
        }
    }

    fn resource_id(&self) -> String {
        self.volume_id().to_string()
    }

    fn node_id(&self) -> &str {
        match self {
            Self::CreateVolume { node_id, .. }
            | Self::DeleteVolume { node_id, .. }
            | Self::ExtendVolume { node_id, .. }
            | Self::RevertVolume { node_id, .. }
            | Self::ManageVolume { node_id, .. } => node_id.as_str(),
        }
    }

    /// Cinder has words for a failed create or extend; a failed delete or revert leaves the
    /// volume in its error status with the reason, and no message.
    fn failure(&self, error: &ServiceError) -> Option<Failure> {
        let resource = Resource::Volume(self.volume_id());
        let (action, failed) = match self {
            Self::CreateVolume { .. } | Self::ManageVolume { .. } => {
                (Action::CREATE_VOLUME_FROM_BACKEND, Detail::DRIVER_FAILED_CREATE)
            }
            Self::ExtendVolume { .. } => (Action::EXTEND_VOLUME, Detail::DRIVER_FAILED_EXTEND),
            Self::DeleteVolume { .. } | Self::RevertVolume { .. } => return None,
        };
        Some(Failure { resource, action, detail: Detail::of(error, failed, Detail::DRIVER_NOT_INITIALIZED) })
    }

    async fn execute(&self, core: &Core) -> Result<(), ServiceError> {
        let node_id = self.node_id();
        match self {
            Self::CreateVolume {
                volume_id,
                pool,
                size_gib,
                source_snapshot_id,
                source_volume_id,
                source_backup,
                ..
            } => {
                let request = NodeCreateVolumeRequest {
                    volume_id: volume_id.to_string(),
                    pool: pool.clone(),
                    size_bytes: *size_gib as u64 * GIB,
                    source_snapshot_id: source_snapshot_id.map(|id| id.to_string()).unwrap_or_default(),
                    source_volume_id: source_volume_id.map(|id| id.to_string()).unwrap_or_default(),
                };
                with_node(core, node_id, |mut client| {
                    let request = request.clone();
                    async move { client.create_volume(request).await.map(drop) }
                })
                .await?;
                let Some(source) = source_backup else { return Ok(()) };
                let request = NodeRestoreRequest {
                    backup_id: source.backup_id.to_string(),
                    project_id: source.project_id.to_string(),
                    volume_id: volume_id.to_string(),
                    pool: pool.clone(),
                };
                with_node(core, node_id, |mut client| {
                    let request = request.clone();
                    async move { client.restore_backup(request).await.map(drop) }
                })
                .await
            }
            Self::DeleteVolume { volume_id, pool, snapshot_ids, .. } => {
                for snapshot_id in snapshot_ids {
                    delete_snapshot_on(core, node_id, *snapshot_id, pool).await?;
                }
                delete_volume_on(core, node_id, *volume_id, pool).await
            }
            Self::ExtendVolume { volume_id, pool, new_size_gib, .. } => {
                let request = NodeExtendVolumeRequest {
                    volume_id: volume_id.to_string(),
                    pool: pool.clone(),
                    new_size_bytes: *new_size_gib as u64 * GIB,
                };
                with_node(core, node_id, |mut client| {
                    let request = request.clone();
                    async move { client.extend_volume(request).await.map(drop) }
                })
                .await
            }
            Self::ManageVolume { volume_id, pool, source_name, size_gib, .. } => {
                let request = NodeManageVolumeRequest {
                    volume_id: volume_id.to_string(),
                    pool: pool.clone(),
                    source_name: source_name.clone(),
                    size_bytes: *size_gib as u64 * GIB,
                };
                with_node(core, node_id, |mut client| {
                    let request = request.clone();
                    async move { client.manage_volume(request).await.map(drop) }
                })
                .await
            }
            Self::RevertVolume { volume_id, snapshot_id, pool, .. } => {
                let request = NodeRevertVolumeRequest {
                    volume_id: volume_id.to_string(),
                    snapshot_id: snapshot_id.to_string(),
                    pool: pool.clone(),
                };
                with_node(core, node_id, |mut client| {
                    let request = request.clone();
                    async move { client.revert_volume(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn complete(
        &self,
        txn: &DatabaseTransaction,
        outcome: &Result<(), ServiceError>,
    ) -> Result<Vec<PendingEvent>, ServiceError> {
        let volume_id = self.volume_id();
        let Some(model) = status::find::<volume::Model>(txn, volume_id).await? else {
            tracing::warn!(%volume_id, "the volume of a finished operation is gone");
            return Ok(Vec::new());
        };
        let succeeded = outcome.is_ok();
        let reason = outcome.as_ref().err().map(|error| error.message.clone()).unwrap_or_default();
        let mut pending = Vec::new();
        match self {
            Self::DeleteVolume { snapshot_ids, .. } if succeeded => {
                for snapshot_id in snapshot_ids {
                    pending.extend(status::remove::<snapshot::Model>(txn, *snapshot_id).await?);
                }
                pending.extend(status::remove::<volume::Model>(txn, volume_id).await?);
                return Ok(pending);
            }
            Self::DeleteVolume { snapshot_ids, .. } => {
                for snapshot_id in snapshot_ids {
                    let failed =
                        status::finish::<snapshot::Model>(txn, *snapshot_id, SnapshotAction::Delete, false, &reason);
                    pending.extend(failed.await?);
                }
            }
            Self::ExtendVolume { old_size_gib, new_size_gib, .. } if succeeded => {
                volume::Entity::update_many()
                    .col_expr(volume::Column::SizeGib, Expr::value(*new_size_gib))
                    .filter(volume::Column::Id.eq(volume_id))
                    .filter(volume::Column::SizeGib.eq(*old_size_gib))
                    .exec(txn)
                    .await
                    .map_err(db_error)?;
            }
            Self::ExtendVolume { old_size_gib, new_size_gib, .. } => {
                // The volume keeps its old size; the space and quota taken for the growth go back.
                let delta = new_size_gib - old_size_gib;
                let type_name = volume_types::name_of(txn, model.volume_type_id).await?;
                quotas::release(txn, &model.project_id, &quotas::extend_usage(&type_name, delta)).await?;
                claims::release(txn, &model.host(), delta).await?;
            }
            Self::RevertVolume { snapshot_id, .. } => {
                // Whatever the outcome, the snapshot is intact and available again.
                let restored =
                    status::finish::<snapshot::Model>(txn, *snapshot_id, SnapshotAction::Revert, succeeded, "");
                pending.extend(restored.await?);
            }
            Self::CreateVolume { source_backup: Some(source), .. } => {
                let restored =
                    status::finish::<backup::Model>(txn, source.backup_id, BackupAction::Restore, succeeded, &reason);
                pending.extend(restored.await?);
            }
            Self::CreateVolume { .. } | Self::ManageVolume { .. } => {}
        }
        pending.extend(status::finish::<volume::Model>(txn, volume_id, self.action(), succeeded, &reason).await?);
        Ok(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_through_the_journal_payload() {
        let operation = VolumeOperation::ExtendVolume {
            volume_id: VolumeId::new_random(),
            node_id: NodeId::parse("node-1").unwrap(),
            pool: "p".into(),
            old_size_gib: 1,
            new_size_gib: 2,
            attached: false,
        };
        let payload = serde_json::to_string(&operation).unwrap();
        assert!(payload.contains("\"kind\":\"extend_volume\""), "{payload}");
        assert_eq!(serde_json::from_str::<VolumeOperation>(&payload).unwrap(), operation);
    }
}
