//! The snapshot operations the journal runs: the node cuts or deletes the snapshot, and the
//! outcome moves the snapshot on.

use basalt::{
    ServiceError,
    ids::{NodeId, SnapshotId, VolumeId},
    proto::{NodeManageSnapshotRequest, NodeSnapshotRequest},
};
use sea_orm::DatabaseTransaction;
use serde::{Deserialize, Serialize};

use crate::{
    Core,
    db::snapshot,
    events::PendingEvent,
    journal::{Journalled, delete_snapshot_on, with_node},
    lifecycle::SnapshotAction,
    messages::{Action, Detail, Failure, Resource},
    status,
};

/// What a snapshot operation does, with everything needed to re-drive it from the journal alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SnapshotOperation {
    CreateSnapshot {
        snapshot_id: SnapshotId,
        volume_id: VolumeId,
        node_id: NodeId,
        pool: String,
    },
    DeleteSnapshot {
        snapshot_id: SnapshotId,
        node_id: NodeId,
        pool: String,
    },
    /// The node renames a snapshot object of the volume to the snapshot's name.
    ManageSnapshot {
        snapshot_id: SnapshotId,
        volume_id: VolumeId,
        node_id: NodeId,
        pool: String,
        source_name: String,
    },
}

impl SnapshotOperation {
    fn snapshot_id(&self) -> SnapshotId {
        match self {
            Self::CreateSnapshot { snapshot_id, .. }
            | Self::DeleteSnapshot { snapshot_id, .. }
            | Self::ManageSnapshot { snapshot_id, .. } => *snapshot_id,
        }
    }
}

impl Journalled for SnapshotOperation {
    type Output = ();

    fn kind(&self) -> &'static str {
        match self {
            Self::CreateSnapshot { .. } => "create_snapshot",
            Self::DeleteSnapshot { .. } => "delete_snapshot",
            Self::ManageSnapshot { .. } => "manage_snapshot",
        }
    }

    fn resource_id(&self) -> String {
        self.snapshot_id().to_string()
    }

    fn node_id(&self) -> &str {
        match self {
            Self::CreateSnapshot { node_id, .. }
            | Self::DeleteSnapshot { node_id, .. }
            | Self::ManageSnapshot { node_id, .. } => node_id.as_str(),
        }
    }

    fn failure(&self, error: &ServiceError) -> Option<Failure> {
        let (action, failed) = match self {
            Self::CreateSnapshot { .. } | Self::ManageSnapshot { .. } => {
                (Action::SNAPSHOT_CREATE, Detail::SNAPSHOT_CREATE_ERROR)
            }
            Self::DeleteSnapshot { .. } => (Action::SNAPSHOT_DELETE, Detail::SNAPSHOT_DELETE_ERROR),
        };
        let detail = Detail::of(error, failed, Detail::DRIVER_NOT_INITIALIZED);
        Some(Failure { resource: Resource::Snapshot(self.snapshot_id()), action, detail })
    }

    async fn execute(&self, core: &Core) -> Result<(), ServiceError> {
        let node_id = self.node_id();
        match self {
            Self::CreateSnapshot { snapshot_id, volume_id, pool, .. } => {
                let request = NodeSnapshotRequest {
                    snapshot_id: snapshot_id.to_string(),
                    volume_id: volume_id.to_string(),
                    pool: pool.clone(),
                };
                with_node(core, node_id, |mut client| {
                    let request = request.clone();
                    async move { client.create_snapshot(request).await.map(drop) }
                })
                .await
            }
            Self::DeleteSnapshot { snapshot_id, pool, .. } => {
                delete_snapshot_on(core, node_id, *snapshot_id, pool).await
            }
            Self::ManageSnapshot { snapshot_id, volume_id, pool, source_name, .. } => {
                let request = NodeManageSnapshotRequest {
                    snapshot_id: snapshot_id.to_string(),
                    volume_id: volume_id.to_string(),
                    pool: pool.clone(),
                    source_name: source_name.clone(),
                };
                with_node(core, node_id, |mut client| {
                    let request = request.clone();
                    async move { client.manage_snapshot(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn complete(
        &self,
        txn: &DatabaseTransaction,
        outcome: &Result<(), ServiceError>,
    ) -> Result<Vec<PendingEvent>, ServiceError> {
        let snapshot_id = self.snapshot_id();
        if status::find::<snapshot::Model>(txn, snapshot_id).await?.is_none() {
            tracing::warn!(%snapshot_id, "the snapshot of a finished operation is gone");
            return Ok(Vec::new());
        }
        let reason = outcome.as_ref().err().map(|error| error.message.clone()).unwrap_or_default();
        let done = match (self, outcome) {
            (Self::DeleteSnapshot { .. }, Ok(())) => status::remove::<snapshot::Model>(txn, snapshot_id).await?,
            (Self::DeleteSnapshot { .. }, Err(_)) => {
                status::finish::<snapshot::Model>(txn, snapshot_id, SnapshotAction::Delete, false, &reason).await?
            }
            (Self::CreateSnapshot { .. } | Self::ManageSnapshot { .. }, outcome) => {
                let action = SnapshotAction::Create;
                status::finish::<snapshot::Model>(txn, snapshot_id, action, outcome.is_ok(), &reason).await?
            }
        };
        Ok(done.into_iter().collect())
    }
}
