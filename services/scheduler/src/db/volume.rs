//! The `volumes` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "volumes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub name: String,
    pub description: String,
    pub size_gib: i64,
    /// Cinder's status string (`creating`, `available`, `in-use`, ...).
    pub status: String,
    pub attach_status: String,
    pub availability_zone: String,
    pub volume_type_id: Option<String>,
    pub node_id: Option<String>,
    pub backend: Option<String>,
    pub pool: Option<String>,
    pub snapshot_id: Option<String>,
    pub source_volume_id: Option<String>,
    /// A JSON object of string keys and values.
    pub metadata: String,
    pub bootable: bool,
    pub readonly: bool,
    /// Several hosts may attach it at once; chosen by the volume type (`multiattach=<is> True`).
    pub multiattach: bool,
    pub error_reason: String,
    pub idempotency_key: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
