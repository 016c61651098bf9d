//! The `volume_types` table.

use basalt::ids::{QosSpecsId, VolumeTypeId};
use sea_orm::entity::prelude::*;

use super::json::StringMap;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "volume_types")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: VolumeTypeId,
    pub name: String,
    pub description: String,
    pub is_public: bool,
    #[sea_orm(column_type = "JsonBinary")]
    pub extra_specs: StringMap,
    pub is_default: bool,
    pub qos_specs_id: Option<QosSpecsId>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
