//! Recovery from a volume node that is gone for good. An admin declares it lost: its volumes,
//! snapshots and groups go to `error`, each volume and snapshot with a user message, and nothing
//! waits for the node any more (`lost_nodes.rs`), so force-deleting them removes their rows, quota
//! and capacity claims at once. Or, when another node took over its storage, the admin moves what
//! it held to that node (Cinder's `cinder-manage volume update_host`), claims included.

use std::time::Instant;

use basalt::{
    ServiceError,
    context::CallContext,
    ids::NodeId,
    proto::{GroupStatus, NodeRecoveryResponse, SnapshotStatus, VolumeStatus},
};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::Expr};

use crate::{
    Core,
    db::{backup, db_error, group, lost_node, pool_claim, snapshot, volume},
    events::PendingEvent,
    lost_nodes,
    messages::{self, Action, Detail, Failure, Resource},
    status::{self, Stateful},
};

/// Refuses a node that is reporting: its storage is there, and declaring it lost would strand it.
fn check_silent(core: &Core, node_id: &NodeId) -> Result<(), ServiceError> {
    match core.capacity.node(node_id.as_str()) {
        Some(node) if node.is_fresh(Instant::now()) => Err(ServiceError::conflict(format!(
            "volume node {node_id} is reporting; a node is declared lost only once it is gone (stop it first)"
        ))),
        _ => Ok(()),
    }
}

/// Declares `node_id` lost: what it held goes to `error` with `reason`, and its volumes' and
/// snapshots' projects get a user message. Safe to repeat.
pub async fn declare_lost(
    core: &Core,
    context: &CallContext,
    node_id: &str,
    reason: &str,
) -> Result<NodeRecoveryResponse, ServiceError> {
    let node_id = NodeId::parse(node_id)?;
    crate::fields::check_text("reason", reason)?;
    check_silent(core, &node_id)?;
    let reason = match reason.trim() {
        "" => format!("volume node {node_id} was declared lost"),
        given => format!("volume node {node_id} was declared lost: {given}"),
    };
    let txn = core.begin_write().await?;
    if !lost_nodes::is_lost(&*txn, node_id.as_str()).await? {
        lost_node::ActiveModel {
            node_id: Set(node_id.to_string()),
            reason: Set(reason.clone()),
            declared_at: Set(Utc::now()),
        }
        .insert(&*txn)
        .await
        .map_err(db_error)?;
    }
    let mut events: Vec<PendingEvent> = Vec::new();
    let volumes = volume::Entity::find()
        .filter(volume::Column::NodeId.eq(node_id.as_str()))
        .filter(volume::Column::Status.is_not_in([VolumeStatus::Deleting, VolumeStatus::Error]))
        .all(&*txn)
        .await
        .map_err(db_error)?;
    for model in &volumes {
        events.push(fail(&*txn, model, VolumeStatus::Error, &reason).await?);
        record_lost(&*txn, core, context, Resource::Volume(model.id)).await?;
    }
    let snapshots = snapshot::Entity::find()
        .filter(snapshot::Column::NodeId.eq(node_id.as_str()))
        .filter(snapshot::Column::Status.is_not_in([SnapshotStatus::Deleting, SnapshotStatus::Error]))
        .all(&*txn)
        .await
        .map_err(db_error)?;
    for model in &snapshots {
        events.push(fail(&*txn, model, SnapshotStatus::Error, &reason).await?);
        record_lost(&*txn, core, context, Resource::Snapshot(model.id)).await?;
    }
    let groups = group::Entity::update_many()
        .col_expr(group::Column::Status, Expr::value(GroupStatus::Error))
        .col_expr(group::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(group::Column::NodeId.eq(node_id.as_str()))
        .filter(group::Column::Status.ne(GroupStatus::Deleting))
        .exec(&*txn)
        .await
        .map_err(db_error)?;
    txn.commit().await?;
    tracing::warn!(%node_id, volumes = volumes.len(), snapshots = snapshots.len(), %reason, "volume node declared lost");
    core.publish(events).await;
    Ok(NodeRecoveryResponse {
        volumes: volumes.len() as u32,
        snapshots: snapshots.len() as u32,
        groups: groups.rows_affected as u32,
        backups: 0,
    })
}

/// Moves `model` from the status it was seen in to `to`, with `reason`, by compare-and-set.
async fn fail<R: Stateful>(
    txn: &impl ConnectionTrait,
    model: &R,
    to: R::Status,
    reason: &str,
) -> Result<PendingEvent, ServiceError> {
    status::set::<R>(txn, model.id(), &[model.status()], to, reason).await?;
    Ok(status::event(model, R::status_name(to), reason))
}

async fn record_lost(
    txn: &impl ConnectionTrait,
    core: &Core,
    context: &CallContext,
    resource: Resource,
) -> Result<(), ServiceError> {
    let failure = Failure { resource, action: Action::NODE_LOST, detail: Detail::NODE_LOST };
    messages::record(txn, core, &context.request_id, failure).await
}

/// Moves every row of `from` to `to`, the node that took over its storage: volumes, snapshots,
/// groups and backups name `to`, and the pools' capacity claims follow. Their statuses stay as
/// they are (an admin resets those the loss put in error once the new node serves them).
pub async fn move_node(core: &Core, from: &str, to: &str) -> Result<NodeRecoveryResponse, ServiceError> {
    let (from, to) = (NodeId::parse(from)?, NodeId::parse(to)?);
    if from == to {
        return Err(ServiceError::invalid("moving a node's volumes needs two different nodes"));
    }
    check_silent(core, &from)?;
    let serving = core.capacity.node(to.as_str()).is_some_and(|node| node.is_fresh(Instant::now()));
    if !serving {
        return Err(ServiceError::invalid(format!("volume node {to} is not reporting; start it before moving to it")));
    }
    let txn = core.begin_write().await?;
    if lost_nodes::is_lost(&*txn, to.as_str()).await? {
        return Err(ServiceError::invalid(format!("volume node {to} was declared lost")));
    }
    let volumes = volume::Entity::update_many()
        .col_expr(volume::Column::NodeId, Expr::value(to.as_str()))
        .filter(volume::Column::NodeId.eq(from.as_str()))
        .exec(&*txn)
        .await
        .map_err(db_error)?;
    let snapshots = snapshot::Entity::update_many()
        .col_expr(snapshot::Column::NodeId, Expr::value(to.as_str()))
        .filter(snapshot::Column::NodeId.eq(from.as_str()))
        .exec(&*txn)
        .await
        .map_err(db_error)?;
    let groups = group::Entity::update_many()
        .col_expr(group::Column::NodeId, Expr::value(to.as_str()))
        .filter(group::Column::NodeId.eq(from.as_str()))
        .exec(&*txn)
        .await
        .map_err(db_error)?;
    let backups = backup::Entity::update_many()
        .col_expr(backup::Column::NodeId, Expr::value(to.as_str()))
        .filter(backup::Column::NodeId.eq(from.as_str()))
        .exec(&*txn)
        .await
        .map_err(db_error)?;
    // `from@backend#pool` becomes `to@backend#pool`, merged into what `to` has booked there.
    let prefix = format!("{from}@");
    let claims = pool_claim::Entity::find().all(&*txn).await.map_err(db_error)?;
    for claim in claims.iter().filter(|claim| claim.host.starts_with(&prefix)) {
        let moved_host = format!("{to}@{}", &claim.host[prefix.len()..]);
        match claims.iter().find(|other| other.host == moved_host) {
            Some(existing) => {
                let mut merged: pool_claim::ActiveModel = existing.clone().into();
                merged.claimed_gib = Set(existing.claimed_gib + claim.claimed_gib);
                merged.updated_at = Set(Utc::now());
                merged.update(&*txn).await.map_err(db_error)?;
            }
            None => {
                pool_claim::ActiveModel {
                    host: Set(moved_host),
                    claimed_gib: Set(claim.claimed_gib),
                    capacity_gib: Set(claim.capacity_gib),
                    updated_at: Set(Utc::now()),
                }
                .insert(&*txn)
                .await
                .map_err(db_error)?;
            }
        }
        pool_claim::Entity::delete_by_id(claim.host.clone()).exec(&*txn).await.map_err(db_error)?;
    }
    txn.commit().await?;
    tracing::warn!(%from, %to, volumes = volumes.rows_affected, snapshots = snapshots.rows_affected, "a node's volumes moved to the node that took over its storage");
    Ok(NodeRecoveryResponse {
        volumes: volumes.rows_affected as u32,
        snapshots: snapshots.rows_affected as u32,
        groups: groups.rows_affected as u32,
        backups: backups.rows_affected as u32,
    })
}
