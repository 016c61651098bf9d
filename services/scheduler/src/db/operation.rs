//! The `operations` table: the journal. An operation's intent is committed, in the same
//! transaction as the status change that announces it, before any node is called; it is removed
//! in the same transaction as its outcome. An operation whose owner's lease ran out is taken over
//! and re-driven by another scheduler (or the same one after a restart).

use basalt::ids::OperationId;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "operations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: OperationId,
    pub kind: String,
    pub resource_id: String,
    /// The operation's arguments, JSON.
    pub payload: String,
    /// The scheduler process running it (`<instance>/<boot id>`).
    pub owner: String,
    pub lease_expires_at: DateTimeUtc,
    pub attempt: i32,
    pub created_at: DateTimeUtc,
    /// The REST request (or gRPC call) that started it, for the user message a failure leaves.
    pub request_id: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
