//! Nodes declared lost (`node_recovery.rs` declares them): nothing waits for them any more. A
//! call to a lost node fails at once instead of retrying for the node's window, and a delete of
//! what it held succeeds without it, its storage being gone.

use basalt::{ErrorCode, ServiceError};
use sea_orm::{ConnectionTrait, EntityTrait};

use crate::db::{db_error, lost_node};

pub async fn is_lost(db: &impl ConnectionTrait, node_id: &str) -> Result<bool, ServiceError> {
    Ok(lost_node::Entity::find_by_id(node_id.to_owned()).one(db).await.map_err(db_error)?.is_some())
}

pub fn lost_error(node_id: &str) -> ServiceError {
    ServiceError::new(
        ErrorCode::Conflict,
        format!("volume node {node_id} was declared lost; only deletes of what it held can finish"),
    )
}
