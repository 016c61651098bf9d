//! The backup operations the journal runs: the volume's node reads it into the backup store,
//! writes a backup onto a volume, or deletes a backup's manifest and sweeps its chunks; and what
//! each outcome does to the backup and to the volume it read or wrote.

use std::time::Duration;

use basalt::{
    ServiceError,
    ids::{BackupId, NodeId, ProjectId, SnapshotId, VolumeId},
    proto::{NodeBackup, NodeBackupRef, NodeBackupRequest, NodeDeleteBackupRequest, NodeRestoreRequest},
};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, Set, sea_query::Expr};
use serde::{Deserialize, Serialize};

use crate::{
    Core,
    db::{backup, db_error, volume},
    events::PendingEvent,
    journal::{Journalled, with_node},
    lifecycle::{BackupAction, VolumeAction},
    lost_nodes,
    messages::{Action, Detail, Failure, Resource},
    status,
};

const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// What a backup operation does, with everything needed to re-drive it from the journal alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackupOperation {
    /// The volume's node reads it (or `snapshot_id`) into the backup store.
    CreateBackup {
        backup_id: BackupId,
        project_id: ProjectId,
        volume_id: VolumeId,
        node_id: NodeId,
        pool: String,
        snapshot_id: Option<SnapshotId>,
        parent_id: Option<BackupId>,
        /// In use: read through a temporary snapshot, and back to in-use afterwards.
        attached: bool,
    },
    /// The volume's node writes the backup onto it.
    RestoreBackup {
        backup_id: BackupId,
        project_id: ProjectId,
        volume_id: VolumeId,
        node_id: NodeId,
        pool: String,
    },
    DeleteBackup {
        backup_id: BackupId,
        project_id: ProjectId,
        node_id: NodeId,
    },
}

impl BackupOperation {
    fn backup_id(&self) -> BackupId {
        match self {
            Self::CreateBackup { backup_id, .. }
            | Self::RestoreBackup { backup_id, .. }
            | Self::DeleteBackup { backup_id, .. } => *backup_id,
        }
    }

    fn project_id(&self) -> &ProjectId {
        match self {
            Self::CreateBackup { project_id, .. }
            | Self::RestoreBackup { project_id, .. }
            | Self::DeleteBackup { project_id, .. } => project_id,
        }
    }

    /// Runs `work` while copying the node's progress on the backup into its row every second.
    async fn with_progress<T>(
        &self,
        core: &Core,
        work: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        let backup_id = self.backup_id();
        let polling = async {
            loop {
                tokio::time::sleep(PROGRESS_INTERVAL).await;
                let reference =
                    NodeBackupRef { backup_id: backup_id.to_string(), project_id: self.project_id().to_string() };
                let Ok(mut client) = core.nodes.client(&core.capacity, self.node_id()) else { continue };
                if let Ok(progress) = client.get_backup_progress(reference).await
                    && progress.get_ref().running
                {
                    let recorded = backup::Entity::update_many()
                        .col_expr(backup::Column::Progress, Expr::value(progress.get_ref().percent.min(100) as i32))
                        .filter(backup::Column::Id.eq(backup_id))
                        .exec(&core.db)
                        .await;
                    if let Err(error) = recorded {
                        tracing::warn!(%backup_id, %error, "cannot record a backup's progress");
                    }
                }
            }
        };
        tokio::select! {
            result = work => result,
            () = polling => unreachable!("progress polling never ends"),
        }
    }

    async fn delete_manifest(&self, core: &Core, sweep: bool) -> Result<(), ServiceError> {
        let request = NodeDeleteBackupRequest {
            backup_id: self.backup_id().to_string(),
            project_id: self.project_id().to_string(),
            sweep,
        };
        let mut node_id = self.node_id().to_owned();
        if lost_nodes::is_lost(&core.db, &node_id).await? {
            // The backup store is the deployment's, not the node's: another node removes it.
            let now = std::time::Instant::now();
            let reporting = core.capacity.nodes().into_iter().find(|node| node.is_fresh(now));
            node_id = reporting.map(|node| node.report.node_id.clone()).ok_or_else(|| {
                ServiceError::unavailable(format!(
                    "backup {}'s node {node_id} was declared lost and no other volume node reports to delete it",
                    self.backup_id()
                ))
            })?;
        }
        with_node(core, &node_id, |mut client| {
            let request = request.clone();
            async move { client.delete_backup(request).await.map(drop) }
        })
        .await
    }
}

impl Journalled for BackupOperation {
    /// A backup's result is what the node wrote (`None` when it was deleted while it ran).
    type Output = Option<NodeBackup>;

    fn kind(&self) -> &'static str {
        match self {
            Self::CreateBackup { .. } => "create_backup",
            Self::RestoreBackup { .. } => "restore_backup",
            Self::DeleteBackup { .. } => "delete_backup",
        }
    }

    fn resource_id(&self) -> String {
        self.backup_id().to_string()
    }

    fn node_id(&self) -> &str {
        match self {
            Self::CreateBackup { node_id, .. }
            | Self::RestoreBackup { node_id, .. }
            | Self::DeleteBackup { node_id, .. } => node_id.as_str(),
        }
    }

    async fn execute(&self, core: &Core) -> Result<Option<NodeBackup>, ServiceError> {
        let node_id = self.node_id();
        match self {
            Self::CreateBackup { backup_id, project_id, volume_id, pool, snapshot_id, parent_id, attached, .. } => {
                let request = NodeBackupRequest {
                    backup_id: backup_id.to_string(),
                    project_id: project_id.to_string(),
                    volume_id: volume_id.to_string(),
                    pool: pool.clone(),
                    from_temporary_snapshot: *attached && snapshot_id.is_none(),
                    snapshot_id: snapshot_id.map(|id| id.to_string()).unwrap_or_default(),
                    parent_id: parent_id.map(|id| id.to_string()).unwrap_or_default(),
                    ..Default::default()
                };
                let written = self
                    .with_progress(core, async {
                        with_node(core, node_id, |mut client| {
                            let request = request.clone();
                            async move { client.backup_volume(request).await.map(tonic::Response::into_inner) }
                        })
                        .await
                    })
                    .await;
                let current = status::find::<backup::Model>(&core.db, *backup_id).await?;
                if current.is_none_or(|current| current.status == basalt::proto::BackupStatus::Deleting) {
                    // Cancelled: its manifest goes; its chunks are swept by the next delete, since
                    // other backups of the project may be running now.
                    self.delete_manifest(core, false).await?;
                    return Ok(None);
                }
                written.map(Some)
            }
            Self::RestoreBackup { backup_id, project_id, volume_id, pool, .. } => {
                let request = NodeRestoreRequest {
                    backup_id: backup_id.to_string(),
                    project_id: project_id.to_string(),
                    volume_id: volume_id.to_string(),
                    pool: pool.clone(),
                };
                let restored = with_node(core, node_id, |mut client| {
                    let request = request.clone();
                    async move { client.restore_backup(request).await.map(drop) }
                });
                self.with_progress(core, restored).await.map(|()| None)
            }
            // No backup or restore of the project runs while one is deleting (`sweeps`).
            Self::DeleteBackup { .. } => self.delete_manifest(core, true).await.map(|()| None),
        }
    }

    fn failure(&self, error: &ServiceError) -> Option<Failure> {
        let (action, failed) = match self {
            Self::CreateBackup { .. } => (Action::BACKUP_CREATE, Detail::BACKUP_CREATE_DRIVER_ERROR),
            Self::RestoreBackup { .. } => (Action::BACKUP_RESTORE, Detail::BACKUP_RESTORE_ERROR),
            Self::DeleteBackup { .. } => (Action::BACKUP_DELETE, Detail::BACKUP_DELETE_DRIVER_ERROR),
        };
        let detail = Detail::of(error, failed, Detail::BACKUP_SERVICE_DOWN);
        Some(Failure { resource: Resource::Backup(self.backup_id()), action, detail })
    }

    async fn complete(
        &self,
        txn: &DatabaseTransaction,
        outcome: &Result<Option<NodeBackup>, ServiceError>,
    ) -> Result<Vec<PendingEvent>, ServiceError> {
        let backup_id = self.backup_id();
        let Some(model) = status::find::<backup::Model>(txn, backup_id).await? else {
            tracing::warn!(%backup_id, "the backup of a finished operation is gone");
            return Ok(Vec::new());
        };
        let succeeded = outcome.is_ok();
        let reason = outcome.as_ref().err().map(|error| error.message.clone()).unwrap_or_default();
        let mut pending = Vec::new();
        match (self, outcome) {
            (Self::CreateBackup { volume_id, attached, .. }, outcome) => {
                let action = if *attached { VolumeAction::BackupAttached } else { VolumeAction::Backup };
                pending.extend(status::finish::<volume::Model>(txn, *volume_id, action, succeeded, &reason).await?);
                match outcome {
                    Ok(None) => pending.extend(status::remove::<backup::Model>(txn, backup_id).await?),
                    Ok(Some(written)) => {
                        let mut active: backup::ActiveModel = model.clone().into();
                        active.object_count = Set(written.object_count as i64);
                        active.stored_bytes = Set(written.stored_bytes as i64);
                        active.progress = Set(100);
                        active.update(txn).await.map_err(db_error)?;
                        pending.extend(
                            status::finish::<backup::Model>(txn, backup_id, BackupAction::Create, true, "").await?,
                        );
                    }
                    Err(_) => {
                        let failed =
                            status::finish::<backup::Model>(txn, backup_id, BackupAction::Create, false, &reason);
                        pending.extend(failed.await?);
                    }
                }
            }
            (Self::RestoreBackup { volume_id, .. }, _) => {
                let action = VolumeAction::RestoreBackup;
                pending.extend(status::finish::<volume::Model>(txn, *volume_id, action, succeeded, &reason).await?);
                let action = BackupAction::Restore;
                pending.extend(status::finish::<backup::Model>(txn, backup_id, action, succeeded, &reason).await?);
            }
            (Self::DeleteBackup { .. }, Ok(_)) => {
                pending.extend(status::remove::<backup::Model>(txn, backup_id).await?)
            }
            (Self::DeleteBackup { .. }, Err(_)) => {
                let failed = status::finish::<backup::Model>(txn, backup_id, BackupAction::Delete, false, &reason);
                pending.extend(failed.await?);
            }
        }
        Ok(pending)
    }
}
