//! The `attachments` table (Cinder's volume attachments, 3.27+).

use basalt::{
    ids::{AttachmentId, ProjectId, VolumeId},
    proto::{AttachMode, AttachStatus},
};
use sea_orm::entity::prelude::*;

use super::json::{ConnectionInfo, Connector};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "attachments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: AttachmentId,
    pub volume_id: VolumeId,
    pub project_id: ProjectId,
    pub instance_id: String,
    pub host_name: String,
    /// `reserved`, `attaching`, `attached` or `detaching`.
    pub status: AttachStatus,
    pub mode: AttachMode,
    /// The host's connector; none while only reserved.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub connector: Option<Connector>,
    pub mountpoint: String,
    /// None until a host connects. Holds the CHAP secret.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub connection_info: Option<ConnectionInfo>,
    pub attached_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
