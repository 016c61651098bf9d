//! The `messages` table: why an asynchronous operation failed, in Cinder's terms, for the
//! resource's project to read until the message expires.

use basalt::ids::{MessageId, ProjectId};
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: MessageId,
    pub project_id: ProjectId,
    pub request_id: String,
    /// `VOLUME`, `VOLUME_SNAPSHOT` or `VOLUME_BACKUP`.
    pub resource_type: String,
    pub resource_uuid: String,
    /// `VOLUME_<resource type>_<action id>_<detail id>`.
    pub event_id: String,
    pub action_id: String,
    pub detail_id: String,
    pub message_level: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
