//! The `group_snapshots` table: a snapshot of every volume of a group, cut at one point in time.
//! Each member is a row of `snapshots` naming it in `group_snapshot_id`.

use basalt::{
    ids::{GroupId, GroupSnapshotId, GroupTypeId, NodeId, ProjectId},
    proto::GroupSnapshotStatus,
};
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "group_snapshots")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: GroupSnapshotId,
    pub project_id: ProjectId,
    pub user_id: String,
    pub group_id: GroupId,
    pub group_type_id: GroupTypeId,
    pub name: String,
    pub description: String,
    pub status: GroupSnapshotStatus,
    /// The group's pool, where its snapshots are.
    pub node_id: NodeId,
    pub backend: String,
    pub pool: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
