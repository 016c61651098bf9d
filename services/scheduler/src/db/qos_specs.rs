//! The `qos_specs` table.

use basalt::ids::QosSpecsId;
use sea_orm::entity::prelude::*;

use super::json::StringMap;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "qos_specs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: QosSpecsId,
    pub name: String,
    /// `back-end`, `front-end` or `both`.
    pub consumer: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub specs: StringMap,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
