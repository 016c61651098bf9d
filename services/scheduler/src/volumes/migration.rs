//! Moving a volume to another node (a retype with `migration_policy: on-demand` whose new type its
//! pool does not satisfy). The bytes travel through the deployment's backup store, the data path
//! that is already verified end to end: the old node backs the volume up under a transit backup
//! id, the new node makes an empty volume of the same id and restores onto it (checked against the
//! manifest), then the transit backup is deleted. Only then does the completion, in one
//! transaction, give the row its new node, pool and type and move quotas and claims; and it records
//! the wipe of the old copy as a follow-up operation in that same transaction, so the old bytes are
//! wiped even if this scheduler dies right after, and never before the row names the new copy.
//! A failed move leaves the volume where it was, with its old type, and wipes the partial copy.
//!
//! Every step is idempotent by id, so a scheduler that takes the operation over re-drives it from
//! the start: the backup is returned as it is, the volume found, the restore written again.

use basalt::{
    ServiceError,
    ids::{BackupId, NodeId, ProjectId, VolumeId, VolumeTypeId},
    proto::{NodeBackupRequest, NodeCreateVolumeRequest, NodeDeleteBackupRequest, NodeRestoreRequest},
};
use chrono::Utc;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, sea_query::Expr};
use serde::{Deserialize, Serialize};

use crate::{
    Core, claims,
    db::{db_error, volume},
    events::PendingEvent,
    journal::{Journalled, delete_volume_on, with_node},
    lifecycle::VolumeAction,
    messages::Failure,
    quotas, status, volume_types,
};

const GIB: u64 = 1 << 30;

/// Cinder's `migration_status` while a volume moves, and after.
pub const MIGRATING: &str = "migrating";
const SUCCEEDED: &str = "success";
const FAILED: &str = "error";

/// What an admin may reset `migration_status` to, as Cinder's schema allows (`none` clears it).
pub const RESETTABLE: &[&str] = &[MIGRATING, FAILED, SUCCEEDED, "completing", "starting", "none"];

/// Records how the volume's latest move stands (admins see it as `migration_status`).
pub async fn set_status(
    txn: &impl ConnectionTrait,
    volume_id: VolumeId,
    status: Option<&str>,
) -> Result<(), ServiceError> {
    volume::Entity::update_many()
        .col_expr(volume::Column::MigrationStatus, Expr::value(status))
        .filter(volume::Column::Id.eq(volume_id))
        .exec(txn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Where a copy of the volume is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    pub node_id: NodeId,
    pub backend: String,
    pub pool: String,
    pub availability_zone: String,
}

impl Place {
    fn host(&self) -> String {
        format!("{}@{}#{}", self.node_id, self.backend, self.pool)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MigrationOperation {
    /// Copies the volume from `from` to `to` and, on success, gives it `new_type_id` (a retype;
    /// for an admin's migration it is the type the volume has).
    MigrateVolume {
        volume_id: VolumeId,
        project_id: ProjectId,
        size_gib: i64,
        from: Box<Place>,
        to: Box<Place>,
        transit_backup_id: BackupId,
        old_type_id: Option<VolumeTypeId>,
        new_type_id: Option<VolumeTypeId>,
    },
    /// Wipes and removes a copy of the volume no row names any more.
    WipeCopy { volume_id: VolumeId, node_id: NodeId, pool: String },
}

impl MigrationOperation {
    /// Whose running status the move owns: a retype's, or an admin's migration's.
    fn action(&self) -> VolumeAction {
        match self {
            Self::MigrateVolume { old_type_id, new_type_id, .. } if old_type_id != new_type_id => {
                VolumeAction::RetypeMigrate
            }
            _ => VolumeAction::Migrate,
        }
    }
}

impl Journalled for MigrationOperation {
    type Output = ();

    fn kind(&self) -> &'static str {
        match self {
            Self::MigrateVolume { .. } => "migrate_volume",
            Self::WipeCopy { .. } => "wipe_volume_copy",
        }
    }

    fn resource_id(&self) -> String {
        match self {
            Self::MigrateVolume { volume_id, .. } | Self::WipeCopy { volume_id, .. } => volume_id.to_string(),
        }
    }

    fn node_id(&self) -> &str {
        match self {
            Self::MigrateVolume { to, .. } => to.node_id.as_str(),
            Self::WipeCopy { node_id, .. } => node_id.as_str(),
        }
    }

    /// Cinder words no user message for a failed migration: the volume keeps its type and place,
    /// and the error is logged with the operation.
    fn failure(&self, _error: &ServiceError) -> Option<Failure> {
        None
    }

    async fn execute(&self, core: &Core) -> Result<(), ServiceError> {
        match self {
            Self::MigrateVolume { volume_id, project_id, size_gib, from, to, transit_backup_id, .. } => {
                let backup = NodeBackupRequest {
                    backup_id: transit_backup_id.to_string(),
                    project_id: project_id.to_string(),
                    volume_id: volume_id.to_string(),
                    pool: from.pool.clone(),
                    name: format!("transit copy of volume {volume_id} to {}", to.node_id),
                    ..Default::default()
                };
                with_node(core, from.node_id.as_str(), |mut client| {
                    let request = backup.clone();
                    async move { client.backup_volume(request).await.map(drop) }
                })
                .await?;
                let create = NodeCreateVolumeRequest {
                    volume_id: volume_id.to_string(),
                    pool: to.pool.clone(),
                    size_bytes: *size_gib as u64 * GIB,
                    ..Default::default()
                };
                with_node(core, to.node_id.as_str(), |mut client| {
                    let request = create.clone();
                    async move { client.create_volume(request).await.map(drop) }
                })
                .await?;
                let restore = NodeRestoreRequest {
                    backup_id: transit_backup_id.to_string(),
                    project_id: project_id.to_string(),
                    volume_id: volume_id.to_string(),
                    pool: to.pool.clone(),
                };
                with_node(core, to.node_id.as_str(), |mut client| {
                    let request = restore.clone();
                    async move { client.restore_backup(request).await.map(drop) }
                })
                .await?;
                // The transit copy holds the tenant's bytes: it goes as soon as it has served.
                // Its chunks go with the project's next sweep, as a deleted backup's do.
                let delete = NodeDeleteBackupRequest {
                    backup_id: transit_backup_id.to_string(),
                    project_id: project_id.to_string(),
                    sweep: false,
                };
                with_node(core, to.node_id.as_str(), |mut client| {
                    let request = delete.clone();
                    async move { client.delete_backup(request).await.map(drop) }
                })
                .await
            }
            Self::WipeCopy { volume_id, node_id, pool } => {
                delete_volume_on(core, node_id.as_str(), *volume_id, pool).await
            }
        }
    }

    async fn complete(
        &self,
        txn: &DatabaseTransaction,
        outcome: &Result<(), ServiceError>,
    ) -> Result<Vec<PendingEvent>, ServiceError> {
        let Self::MigrateVolume { volume_id, project_id, size_gib, from, to, old_type_id, new_type_id, .. } = self
        else {
            return Ok(Vec::new());
        };
        let Some(model) = status::find::<volume::Model>(txn, *volume_id).await? else {
            tracing::warn!(%volume_id, "the volume of a finished migration is gone");
            return Ok(Vec::new());
        };
        let (kept, released) = match outcome {
            Ok(()) => ((&**to, *new_type_id), (&**from, *old_type_id)),
            Err(_) => ((&**from, *old_type_id), (&**to, *new_type_id)),
        };
        if old_type_id != new_type_id {
            let released_type = volume_types::name_of(txn, released.1).await?;
            quotas::release(txn, project_id, &quotas::volume_type_usage(&released_type, *size_gib)).await?;
        }
        claims::release(txn, &released.0.host(), *size_gib).await?;
        if outcome.is_ok() {
            volume::Entity::update_many()
                .col_expr(volume::Column::NodeId, Expr::value(kept.0.node_id.clone()))
                .col_expr(volume::Column::Backend, Expr::value(kept.0.backend.clone()))
                .col_expr(volume::Column::Pool, Expr::value(kept.0.pool.clone()))
                .col_expr(volume::Column::AvailabilityZone, Expr::value(kept.0.availability_zone.clone()))
                .col_expr(volume::Column::VolumeTypeId, Expr::value(kept.1))
                .col_expr(volume::Column::UpdatedAt, Expr::value(Utc::now()))
                .filter(volume::Column::Id.eq(model.id))
                .exec(txn)
                .await
                .map_err(db_error)?;
        }
        set_status(txn, *volume_id, Some(if outcome.is_ok() { SUCCEEDED } else { FAILED })).await?;
        let reason = outcome.as_ref().err().map(|error| format!("the move to {} failed: {}", to.host(), error.message));
        let finished = status::finish::<volume::Model>(
            txn,
            *volume_id,
            self.action(),
            outcome.is_ok(),
            reason.as_deref().unwrap_or_default(),
        );
        Ok(finished.await?.into_iter().collect())
    }

    /// The copy no row names any more: the old one after a move, the partial new one after a
    /// failure.
    fn follow_up(&self, outcome: &Result<(), ServiceError>) -> Option<Self> {
        let Self::MigrateVolume { volume_id, from, to, .. } = self else { return None };
        let stale = if outcome.is_ok() { from } else { to };
        Some(Self::WipeCopy { volume_id: *volume_id, node_id: stale.node_id.clone(), pool: stale.pool.clone() })
    }
}
