//! The `groups` table: volumes kept together on one pool. A volume names its group in
//! `volumes.group_id`.

use basalt::{
    ids::{GroupId, GroupSnapshotId, GroupTypeId, NodeId, ProjectId},
    proto::GroupStatus,
};
use sea_orm::entity::prelude::*;

use super::json::IdList;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "groups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: GroupId,
    pub project_id: ProjectId,
    pub user_id: String,
    pub name: String,
    pub description: String,
    pub group_type_id: GroupTypeId,
    /// The volume types its volumes may have.
    #[sea_orm(column_type = "JsonBinary")]
    pub volume_type_ids: IdList,
    pub status: GroupStatus,
    pub availability_zone: String,
    /// The pool every volume of the group is on.
    pub node_id: NodeId,
    pub backend: String,
    pub pool: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// What it was made from (`create-from-src`), if it was.
    pub group_snapshot_id: Option<GroupSnapshotId>,
    pub source_group_id: Option<GroupId>,
}

impl Model {
    /// The group's pool as `host@backend#pool`.
    pub fn host(&self) -> String {
        format!("{}@{}#{}", self.node_id, self.backend, self.pool)
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
