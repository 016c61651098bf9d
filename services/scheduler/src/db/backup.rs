//! The `backups` table.

use basalt::{
    ids::{BackupId, NodeId, ProjectId, SnapshotId, VolumeId},
    proto::BackupStatus,
};
use sea_orm::entity::prelude::*;

use super::json::StringMap;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "backups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: BackupId,
    pub project_id: ProjectId,
    pub user_id: String,
    /// The volume backed up; it may be gone, or in another deployment for an imported record.
    pub volume_id: VolumeId,
    /// The snapshot backed up instead of the volume, if one was named.
    pub snapshot_id: Option<SnapshotId>,
    pub name: String,
    pub description: String,
    pub status: BackupStatus,
    /// The size of the volume backed up.
    pub size_gib: i64,
    pub object_count: i64,
    pub stored_bytes: i64,
    pub container: String,
    pub availability_zone: String,
    pub parent_id: Option<BackupId>,
    #[sea_orm(column_type = "JsonBinary")]
    pub metadata: StringMap,
    pub progress: i32,
    pub fail_reason: String,
    /// The node that wrote it; any node with the shared backup store can read it.
    pub node_id: NodeId,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// When the backed-up data was taken (Cinder's `data_timestamp`).
    pub data_timestamp: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
