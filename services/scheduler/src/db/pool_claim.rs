//! The `pool_claims` table: GiB booked on each pool (`host@backend#pool`), raised by a guarded
//! increment in the same transaction as the volume or snapshot row, so scheduler replicas sharing
//! the database never double-book a pool.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pool_claims")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub host: String,
    pub claimed_gib: i64,
    /// The most the pool may hold, from its latest report (Cinder's capacity formulas).
    pub capacity_gib: i64,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
