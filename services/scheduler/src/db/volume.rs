//! The `volumes` table.

use basalt::{
    ids::{GroupId, NodeId, ProjectId, SnapshotId, VolumeId, VolumeTypeId},
    proto::{AttachStatus, VolumeStatus},
};
use sea_orm::entity::prelude::*;

use super::json::StringMap;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "volumes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: VolumeId,
    pub project_id: ProjectId,
    pub user_id: String,
    pub name: String,
    pub description: String,
    pub size_gib: i64,
    pub status: VolumeStatus,
    pub attach_status: AttachStatus,
    pub availability_zone: String,
    pub volume_type_id: Option<VolumeTypeId>,
    pub node_id: Option<NodeId>,
    pub backend: Option<String>,
    pub pool: Option<String>,
    pub snapshot_id: Option<SnapshotId>,
    pub source_volume_id: Option<VolumeId>,
    #[sea_orm(column_type = "JsonBinary")]
    pub metadata: StringMap,
    pub bootable: bool,
    pub readonly: bool,
    /// Several hosts may attach it at once; chosen by the volume type (`multiattach=<is> True`).
    pub multiattach: bool,
    pub error_reason: String,
    pub idempotency_key: Option<String>,
    /// The group it is a member of.
    pub group_id: Option<GroupId>,
    /// How its latest move went (Cinder's `migration_status`: migrating, success, error).
    pub migration_status: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// Read with the volume in one query where a view needs the type's name.
    #[sea_orm(
        belongs_to = "super::volume_type::Entity",
        from = "Column::VolumeTypeId",
        to = "super::volume_type::Column::Id"
    )]
    VolumeType,
}

impl Related<super::volume_type::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::VolumeType.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The node and pool that hold the volume.
    pub fn placement(&self) -> Result<(NodeId, String), basalt::ServiceError> {
        match (&self.node_id, &self.pool) {
            (Some(node_id), Some(pool)) => Ok((node_id.clone(), pool.clone())),
            _ => Err(basalt::ServiceError::internal(format!("volume {} has no pool", self.id))),
        }
    }

    /// The volume's pool as `host@backend#pool`, the key of its capacity claim.
    pub fn host(&self) -> String {
        match (&self.node_id, &self.backend, &self.pool) {
            (Some(node), Some(backend), Some(pool)) => format!("{node}@{backend}#{pool}"),
            _ => String::new(),
        }
    }
}

/// Sets a volume's attach status (which has no machine of its own: it follows the status).
pub async fn set_attach_status(
    txn: &impl ConnectionTrait,
    volume_id: VolumeId,
    attach_status: AttachStatus,
) -> Result<(), basalt::ServiceError> {
    Entity::update_many()
        .col_expr(Column::AttachStatus, sea_orm::sea_query::Expr::value(attach_status))
        .filter(Column::Id.eq(volume_id))
        .exec(txn)
        .await
        .map_err(super::db_error)
        .map(drop)
}
