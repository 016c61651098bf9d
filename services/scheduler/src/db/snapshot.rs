//! The `snapshots` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "snapshots")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub volume_id: String,
    pub name: String,
    pub description: String,
    pub size_gib: i64,
    /// Cinder's status string (`creating`, `available`, `deleting`, ...).
    pub status: String,
    /// A JSON object of string keys and values.
    pub metadata: String,
    pub progress: i32,
    pub error_reason: String,
    /// The pool of the snapshot's volume: snapshots live beside their volume.
    pub node_id: String,
    pub backend: String,
    pub pool: String,
    pub volume_type_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
