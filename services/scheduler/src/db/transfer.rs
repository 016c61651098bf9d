//! The `transfers` table: volumes offered to whichever project presents the key.

use basalt::ids::{ProjectId, TransferId, VolumeId};
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "transfers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: TransferId,
    pub volume_id: VolumeId,
    /// The offering project.
    pub project_id: ProjectId,
    pub name: String,
    pub salt: String,
    /// HMAC-SHA256 of the key under the salt, in hex.
    pub crypt_hash: String,
    pub no_snapshots: bool,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
