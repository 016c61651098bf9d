//! The `volume_type_access` table: projects allowed to use a private type.

use basalt::ids::{ProjectId, VolumeTypeId};
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "volume_type_access")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub volume_type_id: VolumeTypeId,
    #[sea_orm(primary_key, auto_increment = false)]
    pub project_id: ProjectId,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
