//! The `backups` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "backups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub volume_id: String,
    /// The snapshot backed up instead of the volume, if one was named.
    pub snapshot_id: Option<String>,
    pub name: String,
    pub description: String,
    /// Cinder's status string (`creating`, `available`, `deleting`, `restoring`, `error`, ...).
    pub status: String,
    /// The size of the volume backed up.
    pub size_gib: i64,
    pub object_count: i64,
    pub stored_bytes: i64,
    pub container: String,
    pub availability_zone: String,
    pub parent_id: Option<String>,
    /// A JSON object of string keys and values.
    pub metadata: String,
    pub progress: i32,
    pub fail_reason: String,
    /// The node that wrote it; any node with the shared backup store can read it.
    pub node_id: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// When the backed-up data was taken (Cinder's `data_timestamp`).
    pub data_timestamp: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
