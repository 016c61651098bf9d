//! Sources of copies: a volume or snapshot that new volumes are still being copied from (their
//! creates have not reached the node yet) must outlive those copies. Volume and snapshot deletes
//! refuse while one is pending.

use basalt::{
    ServiceError,
    ids::{SnapshotId, VolumeId},
    proto::VolumeStatus,
};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};

use crate::db::{db_error, volume};

/// What new volumes are copied from.
pub enum CopySource {
    Volume(VolumeId),
    Snapshot(SnapshotId),
}

/// Refuses, inside a delete's transaction (after its status change locked the row), to delete
/// `source` while a volume is still being created from it: its node would find nothing to copy.
/// Cinder's volume manager makes such a delete wait for the copy; here the caller retries.
pub async fn refuse_while_copied(txn: &impl ConnectionTrait, source: CopySource) -> Result<(), ServiceError> {
    let (made_from, what) = match source {
        CopySource::Volume(id) => (volume::Column::SourceVolumeId.eq(id), format!("volume {id}")),
        CopySource::Snapshot(id) => (volume::Column::SnapshotId.eq(id), format!("snapshot {id}")),
    };
    let copying = volume::Entity::find()
        .filter(made_from)
        .filter(volume::Column::Status.eq(VolumeStatus::Creating))
        .count(txn)
        .await
        .map_err(db_error)?;
    if copying > 0 {
        return Err(ServiceError::conflict(format!(
            "{what} is being copied into {copying} new volume(s); delete it once they are available"
        )));
    }
    Ok(())
}
