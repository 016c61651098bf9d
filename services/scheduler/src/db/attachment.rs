//! The `attachments` table (Cinder's volume attachments, 3.27+).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "attachments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub volume_id: String,
    pub project_id: String,
    pub instance_id: String,
    pub host_name: String,
    /// Cinder's attach status (`reserved`, `attaching`, `attached`, `detaching`, ...).
    pub status: String,
    /// `rw` or `ro`.
    pub mode: String,
    /// The host's connector, JSON; empty while only reserved.
    pub connector: String,
    pub mountpoint: String,
    /// Cinder-shaped connection info, JSON; empty until a host connects. Holds the CHAP secret.
    pub connection_info: String,
    pub attached_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
