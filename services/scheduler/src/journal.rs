//! The operation journal. Every side effect on a node is preceded by a committed intent (a row in
//! `operations`, written in the same transaction as the status that announces it) and followed by
//! a completion that removes the row in the same transaction as the outcome. The owner renews a
//! lease while it works; an operation whose lease ran out (its scheduler died) is taken over by
//! the reconciler and re-driven. Node calls are idempotent by UUID, so re-driving is always safe,
//! and the completion is applied exactly once: only the current owner can delete the row.

use std::{sync::Arc, time::Duration};

use basalt::{
    ErrorCode, ServiceError,
    proto::{
        NodeBackup, NodeBackupRef, NodeBackupRequest, NodeCreateVolumeRequest, NodeDeleteBackupRequest,
        NodeDeleteVolumeRequest, NodeExtendVolumeRequest, NodeRestoreRequest, NodeRevertVolumeRequest,
        NodeSnapshotRequest, node_agent_client::NodeAgentClient,
    },
};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set,
    sea_query::{Expr, ExprTrait},
};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::{
    Core, backups,
    db::{db_error, operation},
    snapshots, volumes,
};

const GIB: u64 = 1 << 30;
const NODE_RETRY_PAUSE: Duration = Duration::from_millis(500);
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// What an operation does, with everything needed to re-drive it from the journal alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operation {
    CreateVolume {
        volume_id: String,
        node_id: String,
        pool: String,
        size_gib: i64,
        source_snapshot_id: Option<String>,
        source_volume_id: Option<String>,
        /// Restored onto the new volume once it exists (a volume from a backup).
        #[serde(default)]
        source_backup: Option<SourceBackup>,
    },
    /// Deletes the volume and, for a cascade, its snapshots first.
    DeleteVolume {
        volume_id: String,
        node_id: String,
        pool: String,
        snapshot_ids: Vec<String>,
    },
    ExtendVolume {
        volume_id: String,
        node_id: String,
        pool: String,
        old_size_gib: i64,
        new_size_gib: i64,
        /// In use while it grows: it returns to in-use, not available.
        #[serde(default)]
        attached: bool,
    },
    RevertVolume {
        volume_id: String,
        snapshot_id: String,
        node_id: String,
        pool: String,
    },
    CreateSnapshot {
        snapshot_id: String,
        volume_id: String,
        node_id: String,
        pool: String,
    },
    DeleteSnapshot {
        snapshot_id: String,
        node_id: String,
        pool: String,
    },
    /// The volume's node reads it (or `snapshot_id`) into the backup store.
    CreateBackup {
        backup_id: String,
        project_id: String,
        volume_id: String,
        node_id: String,
        pool: String,
        snapshot_id: Option<String>,
        parent_id: Option<String>,
        /// In use: read through a temporary snapshot, and back to in-use afterwards.
        attached: bool,
    },
    /// The volume's node writes the backup onto it.
    RestoreBackup {
        backup_id: String,
        project_id: String,
        volume_id: String,
        node_id: String,
        pool: String,
    },
    DeleteBackup {
        backup_id: String,
        project_id: String,
        node_id: String,
    },
}

/// The backup a new volume is restored from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceBackup {
    pub backup_id: String,
    pub project_id: String,
}

impl Operation {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CreateVolume { .. } => "create_volume",
            Self::DeleteVolume { .. } => "delete_volume",
            Self::ExtendVolume { .. } => "extend_volume",
            Self::RevertVolume { .. } => "revert_volume",
            Self::CreateSnapshot { .. } => "create_snapshot",
            Self::DeleteSnapshot { .. } => "delete_snapshot",
            Self::CreateBackup { .. } => "create_backup",
            Self::RestoreBackup { .. } => "restore_backup",
            Self::DeleteBackup { .. } => "delete_backup",
        }
    }

    /// The resource whose status this operation owns.
    pub fn resource_id(&self) -> &str {
        match self {
            Self::CreateVolume { volume_id, .. }
            | Self::DeleteVolume { volume_id, .. }
            | Self::ExtendVolume { volume_id, .. }
            | Self::RevertVolume { volume_id, .. } => volume_id,
            Self::CreateSnapshot { snapshot_id, .. } | Self::DeleteSnapshot { snapshot_id, .. } => snapshot_id,
            Self::CreateBackup { backup_id, .. }
            | Self::RestoreBackup { backup_id, .. }
            | Self::DeleteBackup { backup_id, .. } => backup_id,
        }
    }

    fn node_id(&self) -> &str {
        match self {
            Self::CreateVolume { node_id, .. }
            | Self::DeleteVolume { node_id, .. }
            | Self::ExtendVolume { node_id, .. }
            | Self::RevertVolume { node_id, .. }
            | Self::CreateSnapshot { node_id, .. }
            | Self::DeleteSnapshot { node_id, .. }
            | Self::CreateBackup { node_id, .. }
            | Self::RestoreBackup { node_id, .. }
            | Self::DeleteBackup { node_id, .. } => node_id,
        }
    }
}

/// Writes the intent inside `txn`, owned by this scheduler. Launch it after the commit.
pub async fn record(
    txn: &impl ConnectionTrait,
    core: &Core,
    operation: &Operation,
) -> Result<operation::Model, ServiceError> {
    let now = Utc::now();
    let payload = serde_json::to_string(operation)
        .map_err(|error| ServiceError::internal(format!("cannot encode an operation: {error}")))?;
    operation::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        kind: Set(operation.kind().into()),
        resource_id: Set(operation.resource_id().into()),
        payload: Set(payload),
        owner: Set(core.owner.clone()),
        lease_expires_at: Set(now + lease(core)),
        attempt: Set(1),
        created_at: Set(now),
    }
    .insert(txn)
    .await
    .map_err(db_error)
}

/// Whether an operation on `resource_id` is in flight.
pub async fn in_flight(db: &impl ConnectionTrait, resource_id: &str) -> Result<bool, ServiceError> {
    let count = operation::Entity::find()
        .filter(operation::Column::ResourceId.eq(resource_id))
        .count(db)
        .await
        .map_err(db_error)?;
    Ok(count > 0)
}

fn lease(core: &Core) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(core.config.operation_lease).unwrap_or(chrono::TimeDelta::seconds(15))
}

/// Runs a recorded operation in the background.
pub fn launch(core: Arc<Core>, record: operation::Model) {
    tokio::spawn(async move { run(core, record).await });
}

async fn run(core: Arc<Core>, record: operation::Model) {
    let operation: Operation = match serde_json::from_str(&record.payload) {
        Ok(operation) => operation,
        Err(error) => {
            tracing::error!(operation_id = %record.id, %error, "an operation in the journal cannot be decoded; leaving it for an operator");
            return;
        }
    };
    tracing::info!(operation_id = %record.id, kind = operation.kind(), resource_id = operation.resource_id(), attempt = record.attempt, "operation started");
    let outcome = {
        let renewing = renew_lease(&core, &record.id);
        tokio::pin!(renewing);
        tokio::select! {
            outcome = execute(&core, &operation) => outcome,
            lost = &mut renewing => {
                tracing::warn!(operation_id = %record.id, ?lost, "lost the operation's lease; leaving it to its new owner");
                return;
            }
        }
    };
    if let Err(error) = &outcome {
        tracing::warn!(operation_id = %record.id, kind = operation.kind(), %error, "operation failed");
    }
    if let Err(error) = complete(&core, &record, &operation, outcome).await {
        // The row stays; once its lease runs out the reconciler re-drives it.
        tracing::error!(operation_id = %record.id, %error, "cannot record the operation's outcome; it will be re-driven");
    }
}

/// Renews the lease until it cannot: returns when the row is gone or owned by someone else.
async fn renew_lease(core: &Core, operation_id: &str) -> Result<(), ServiceError> {
    let period = core.config.operation_lease / 3;
    loop {
        tokio::time::sleep(period).await;
        let renewed = operation::Entity::update_many()
            .col_expr(operation::Column::LeaseExpiresAt, Expr::value(Utc::now() + lease(core)))
            .filter(operation::Column::Id.eq(operation_id))
            .filter(operation::Column::Owner.eq(core.owner.as_str()))
            .exec(&core.db)
            .await;
        match renewed {
            Ok(result) if result.rows_affected == 1 => {}
            Ok(_) => return Ok(()),
            // A database hiccup: keep working, the next renewal may succeed within the lease.
            Err(error) => tracing::warn!(operation_id, %error, "cannot renew an operation's lease"),
        }
    }
}

/// The node side: idempotent calls, retried while the node is unreachable. A backup's result is
/// what the node wrote (`None` when it was deleted while it ran).
async fn execute(core: &Core, operation: &Operation) -> Result<Option<NodeBackup>, ServiceError> {
    let node_id = operation.node_id().to_owned();
    match operation.clone() {
        Operation::CreateBackup {
            backup_id, project_id, volume_id, pool, snapshot_id, parent_id, attached, ..
        } => {
            let request = NodeBackupRequest {
                backup_id: backup_id.clone(),
                project_id: project_id.clone(),
                volume_id,
                pool,
                from_temporary_snapshot: attached && snapshot_id.is_none(),
                snapshot_id: snapshot_id.unwrap_or_default(),
                parent_id: parent_id.unwrap_or_default(),
                ..Default::default()
            };
            let written = with_progress(core, &node_id, &backup_id, &project_id, async {
                with_node(core, &node_id, |mut client| {
                    let request = request.clone();
                    async move { client.backup_volume(request).await.map(tonic::Response::into_inner) }
                })
                .await
            })
            .await;
            if backups::is_deleting(&core.db, &backup_id).await? {
                // Cancelled: its manifest goes; its chunks are swept by the next delete, since
                // other backups of the project may be running now.
                let request = NodeDeleteBackupRequest { backup_id, project_id, sweep: false };
                with_node(core, &node_id, |mut client| {
                    let request = request.clone();
                    async move { client.delete_backup(request).await.map(drop) }
                })
                .await?;
                return Ok(None);
            }
            written.map(Some)
        }
        Operation::RestoreBackup { backup_id, project_id, volume_id, pool, .. } => {
            let request =
                NodeRestoreRequest { backup_id: backup_id.clone(), project_id: project_id.clone(), volume_id, pool };
            with_progress(core, &node_id, &backup_id, &project_id, async {
                with_node(core, &node_id, |mut client| {
                    let request = request.clone();
                    async move { client.restore_backup(request).await.map(drop) }
                })
                .await
            })
            .await
            .map(|()| None)
        }
        Operation::DeleteBackup { backup_id, project_id, .. } => {
            // No backup or restore of the project runs while one is deleting (backups::exclude).
            let request = NodeDeleteBackupRequest { backup_id, project_id, sweep: true };
            with_node(core, &node_id, |mut client| {
                let request = request.clone();
                async move { client.delete_backup(request).await.map(drop) }
            })
            .await
            .map(|()| None)
        }
        Operation::CreateVolume {
            volume_id,
            pool,
            size_gib,
            source_snapshot_id,
            source_volume_id,
            source_backup,
            ..
        } => {
            let request = NodeCreateVolumeRequest {
                volume_id: volume_id.clone(),
                pool: pool.clone(),
                size_bytes: size_gib as u64 * GIB,
                source_snapshot_id: source_snapshot_id.unwrap_or_default(),
                source_volume_id: source_volume_id.unwrap_or_default(),
            };
            with_node(core, &node_id, |mut client| {
                let request = request.clone();
                async move { client.create_volume(request).await.map(drop) }
            })
            .await?;
            let Some(source) = source_backup else { return Ok(None) };
            let request =
                NodeRestoreRequest { backup_id: source.backup_id, project_id: source.project_id, volume_id, pool };
            with_node(core, &node_id, |mut client| {
                let request = request.clone();
                async move { client.restore_backup(request).await.map(drop) }
            })
            .await
            .map(|()| None)
        }
        Operation::DeleteVolume { volume_id, pool, snapshot_ids, .. } => {
            for snapshot_id in snapshot_ids {
                let request = NodeSnapshotRequest { snapshot_id, volume_id: volume_id.clone(), pool: pool.clone() };
                with_node(core, &node_id, |mut client| {
                    let request = request.clone();
                    async move { client.delete_snapshot(request).await.map(drop) }
                })
                .await?;
            }
            let request = NodeDeleteVolumeRequest { volume_id, pool };
            with_node(core, &node_id, |mut client| {
                let request = request.clone();
                async move { client.delete_volume(request).await.map(drop) }
            })
            .await
            .map(|()| None)
        }
        Operation::ExtendVolume { volume_id, pool, new_size_gib, .. } => {
            let request = NodeExtendVolumeRequest { volume_id, pool, new_size_bytes: new_size_gib as u64 * GIB };
            with_node(core, &node_id, |mut client| {
                let request = request.clone();
                async move { client.extend_volume(request).await.map(drop) }
            })
            .await
            .map(|()| None)
        }
        Operation::RevertVolume { volume_id, snapshot_id, pool, .. } => {
            let request = NodeRevertVolumeRequest { volume_id, snapshot_id, pool };
            with_node(core, &node_id, |mut client| {
                let request = request.clone();
                async move { client.revert_volume(request).await.map(drop) }
            })
            .await
            .map(|()| None)
        }
        Operation::CreateSnapshot { snapshot_id, volume_id, pool, .. } => {
            let request = NodeSnapshotRequest { snapshot_id, volume_id, pool };
            with_node(core, &node_id, |mut client| {
                let request = request.clone();
                async move { client.create_snapshot(request).await.map(drop) }
            })
            .await
            .map(|()| None)
        }
        Operation::DeleteSnapshot { snapshot_id, pool, .. } => {
            let request = NodeSnapshotRequest { snapshot_id, volume_id: String::new(), pool };
            with_node(core, &node_id, |mut client| {
                let request = request.clone();
                async move { client.delete_snapshot(request).await.map(drop) }
            })
            .await
            .map(|()| None)
        }
    }
}

/// Runs `work` while copying the node's progress on the backup into its row every second.
async fn with_progress<T>(
    core: &Core,
    node_id: &str,
    backup_id: &str,
    project_id: &str,
    work: impl Future<Output = Result<T, ServiceError>>,
) -> Result<T, ServiceError> {
    let polling = async {
        loop {
            tokio::time::sleep(PROGRESS_INTERVAL).await;
            let reference = NodeBackupRef { backup_id: backup_id.to_owned(), project_id: project_id.to_owned() };
            let Ok(mut client) = core.nodes.client(&core.capacity, node_id) else { continue };
            if let Ok(progress) = client.get_backup_progress(reference).await
                && progress.get_ref().running
                && let Err(error) = backups::set_progress(&core.db, backup_id, progress.get_ref().percent).await
            {
                tracing::warn!(backup_id, %error, "cannot record a backup's progress");
            }
        }
    };
    tokio::select! {
        result = work => result,
        () = polling => unreachable!("progress polling never ends"),
    }
}

/// Calls the node, retrying while it is unreachable; other errors are final.
async fn with_node<T, F, Fut>(core: &Core, node_id: &str, call: F) -> Result<T, ServiceError>
where
    F: Fn(NodeAgentClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + core.config.node_retry_window;
    loop {
        let attempt = match core.nodes.client(&core.capacity, node_id) {
            Ok(client) => call(client).await.map_err(|status| {
                let retryable = is_retryable(&status);
                (ServiceError::from(status), retryable)
            }),
            Err(error) => {
                let retryable = matches!(error.code, ErrorCode::Unavailable | ErrorCode::Timeout);
                Err((error, retryable))
            }
        };
        match attempt {
            Ok(value) => return Ok(value),
            Err((error, true)) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ServiceError::unavailable(format!(
                        "volume node {node_id} stayed unreachable for {}s: {error}",
                        core.config.node_retry_window.as_secs()
                    )));
                }
                tokio::time::sleep(NODE_RETRY_PAUSE).await;
            }
            Err((error, false)) => return Err(error),
        }
    }
}

/// Whether a failed node call may succeed on a retry: the node was unreachable, or the connection
/// broke mid-call (a transport error, which tonic reports as UNKNOWN with its cause attached).
/// Node operations are idempotent, so repeating one is always safe.
fn is_retryable(status: &tonic::Status) -> bool {
    use std::error::Error;
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => true,
        tonic::Code::Unknown => status.source().is_some(),
        _ => false,
    }
}

/// Removes the journal row and applies the outcome in one transaction; a no-op when another
/// scheduler took the operation over meanwhile.
async fn complete(
    core: &Core,
    record: &operation::Model,
    operation: &Operation,
    outcome: Result<Option<NodeBackup>, ServiceError>,
) -> Result<(), ServiceError> {
    let txn = core.begin_write().await?;
    if !remove_if_owned(&*txn, core, record).await? {
        tracing::info!(operation_id = %record.id, "the operation changed hands before it completed here");
        return Ok(());
    }
    let storage_outcome = outcome.as_ref().map(drop).map_err(Clone::clone);
    let applied = match operation {
        Operation::CreateVolume { .. }
        | Operation::DeleteVolume { .. }
        | Operation::ExtendVolume { .. }
        | Operation::RevertVolume { .. } => volumes::complete(&*txn, operation, &storage_outcome).await,
        Operation::CreateSnapshot { .. } | Operation::DeleteSnapshot { .. } => {
            snapshots::complete(&*txn, operation, &storage_outcome).await
        }
        Operation::CreateBackup { .. } | Operation::RestoreBackup { .. } | Operation::DeleteBackup { .. } => {
            backups::complete(&*txn, operation, &outcome).await
        }
    };
    let events = match applied {
        Ok(events) => events,
        Err(error) if error.code == ErrorCode::Conflict => {
            // The resource is no longer in the status this operation owns; re-driving would find
            // the same. Close the operation and leave the resource as it is, for an operator.
            drop(txn);
            tracing::error!(operation_id = %record.id, kind = operation.kind(), %error, "the operation's resource moved on; closing the operation without applying its outcome");
            let txn = core.begin_write().await?;
            remove_if_owned(&*txn, core, record).await?;
            return txn.commit().await;
        }
        Err(error) => return Err(error),
    };
    txn.commit().await?;
    tracing::info!(operation_id = %record.id, kind = operation.kind(), succeeded = outcome.is_ok(), "operation completed");
    for event in events {
        core.publish_status(event.kind, &event.id, &event.project, &event.from, &event.to, &event.reason).await;
    }
    Ok(())
}

/// Deletes the journal row if this scheduler still owns it; `false` when it changed hands.
async fn remove_if_owned(
    txn: &impl ConnectionTrait,
    core: &Core,
    record: &operation::Model,
) -> Result<bool, ServiceError> {
    let removed = operation::Entity::delete_many()
        .filter(operation::Column::Id.eq(record.id.as_str()))
        .filter(operation::Column::Owner.eq(core.owner.as_str()))
        .exec(txn)
        .await
        .map_err(db_error)?;
    Ok(removed.rows_affected == 1)
}

/// A status change to announce once its transaction committed.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub kind: &'static str,
    pub id: String,
    pub project: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// Takes over every operation whose lease ran out, and re-drives it. Returns how many.
pub async fn reconcile_once(core: &Arc<Core>) -> Result<usize, ServiceError> {
    let now = Utc::now();
    let expired = operation::Entity::find()
        .filter(operation::Column::LeaseExpiresAt.lt(now))
        .all(&core.db)
        .await
        .map_err(db_error)?;
    let mut taken = 0;
    for record in expired {
        let claimed = operation::Entity::update_many()
            .col_expr(operation::Column::Owner, Expr::value(core.owner.as_str()))
            .col_expr(operation::Column::LeaseExpiresAt, Expr::value(Utc::now() + lease(core)))
            .col_expr(operation::Column::Attempt, Expr::col(operation::Column::Attempt).add(1))
            .filter(operation::Column::Id.eq(record.id.as_str()))
            .filter(operation::Column::Owner.eq(record.owner.as_str()))
            .filter(operation::Column::LeaseExpiresAt.lt(now))
            .exec(&core.db)
            .await
            .map_err(db_error)?;
        if claimed.rows_affected != 1 {
            continue;
        }
        let Some(record) = operation::Entity::find_by_id(record.id.clone()).one(&core.db).await.map_err(db_error)?
        else {
            continue;
        };
        tracing::info!(operation_id = %record.id, kind = %record.kind, previous_owner = %record.owner, attempt = record.attempt, "taking over an interrupted operation");
        launch(core.clone(), record);
        taken += 1;
    }
    Ok(taken)
}

/// The reconciler loop: re-drives abandoned operations until `stopped` resolves.
pub async fn reconcile(core: Arc<Core>, stopped: impl Future<Output = ()>) {
    tokio::pin!(stopped);
    loop {
        if let Err(error) = reconcile_once(&core).await {
            tracing::warn!(%error, "reconciliation pass failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(core.config.reconcile_interval) => {}
            _ = &mut stopped => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_through_the_journal_payload() {
        let operation = Operation::ExtendVolume {
            volume_id: "v".into(),
            node_id: "n".into(),
            pool: "p".into(),
            old_size_gib: 1,
            new_size_gib: 2,
            attached: false,
        };
        let payload = serde_json::to_string(&operation).unwrap();
        assert!(payload.contains("\"kind\":\"extend_volume\""), "{payload}");
        assert_eq!(serde_json::from_str::<Operation>(&payload).unwrap(), operation);
        assert_eq!(operation.resource_id(), "v");
    }
}
