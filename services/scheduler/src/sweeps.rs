//! Keeps a delete's sweep of a project's backup chunks apart from the backups and restores of the
//! project: a running backup relies on chunks its manifest does not name yet, a restore reads them.
//! Backups and restores refuse while a backup of the project is deleting; a delete refuses while
//! one is being made or restored.

use basalt::{ServiceError, ids::ProjectId, proto::BackupStatus};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::{
    db::{backup, db_error},
    quotas,
};

/// What a backup or restore must wait for.
pub const SWEEPING: &[BackupStatus] = &[BackupStatus::Deleting];

/// What a delete (and its sweep) must wait for.
pub const READING_OR_WRITING: &[BackupStatus] = &[BackupStatus::Creating, BackupStatus::Restoring];

/// Fails when a backup of `project` is in one of `busy`, with `advice`. Inside the write
/// transaction, after locking the project's backup counter, so two such transactions of a project
/// never interleave.
pub async fn exclude(
    txn: &impl ConnectionTrait,
    project: &ProjectId,
    busy: &[BackupStatus],
    advice: &str,
) -> Result<(), ServiceError> {
    quotas::lock(txn, project, quotas::BACKUPS).await?;
    let running = backup::Entity::find()
        .filter(backup::Column::ProjectId.eq(project.clone()))
        .filter(backup::Column::Status.is_in(busy.iter().copied()))
        .one(txn)
        .await
        .map_err(db_error)?;
    match running {
        Some(running) => Err(ServiceError::conflict(format!(
            "backup {} of this project is {}; {advice}",
            running.id,
            running.status.cinder_name()
        ))),
        None => Ok(()),
    }
}
