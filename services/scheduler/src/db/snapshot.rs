//! The `snapshots` table.

use basalt::{
    ids::{GroupSnapshotId, NodeId, ProjectId, SnapshotId, VolumeId, VolumeTypeId},
    proto::SnapshotStatus,
};
use sea_orm::entity::prelude::*;

use super::json::StringMap;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "snapshots")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: SnapshotId,
    pub project_id: ProjectId,
    pub user_id: String,
    pub volume_id: VolumeId,
    pub name: String,
    pub description: String,
    pub size_gib: i64,
    pub status: SnapshotStatus,
    #[sea_orm(column_type = "JsonBinary")]
    pub metadata: StringMap,
    pub progress: i32,
    pub error_reason: String,
    /// The pool of the snapshot's volume: snapshots live beside their volume.
    pub node_id: NodeId,
    pub backend: String,
    pub pool: String,
    pub volume_type_id: Option<VolumeTypeId>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The group snapshot it was cut in; it is deleted with it, never alone.
    pub group_snapshot_id: Option<GroupSnapshotId>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The snapshot's pool as `host@backend#pool`, the key of its capacity claim.
    pub fn host(&self) -> String {
        format!("{}@{}#{}", self.node_id, self.backend, self.pool)
    }
}
