//! The `service_states` table: services an admin disabled (Cinder's `os-services` disable), with
//! the reason given; a service without a row is enabled.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "service_states")]
pub struct Model {
    /// `basalt-volume` or `basalt-scheduler`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub binary: String,
    /// `node@backend` for a volume service, the instance name for a scheduler.
    #[sea_orm(primary_key, auto_increment = false)]
    pub host: String,
    pub disabled_reason: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
