//! The `group_types` table: what kinds of group there are, with their group specs.

use basalt::ids::GroupTypeId;
use sea_orm::entity::prelude::*;

use super::json::StringMap;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "group_types")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: GroupTypeId,
    pub name: String,
    pub description: String,
    pub is_public: bool,
    #[sea_orm(column_type = "JsonBinary")]
    pub group_specs: StringMap,
    /// The deployment's default group type (Cinder's `default_group_type`).
    pub is_default: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
