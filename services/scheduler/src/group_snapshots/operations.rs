//! The group snapshot operations the journal runs: the node cuts every member at one point in
//! time, or deletes them; the outcome moves the group snapshot and its members together.

use basalt::{
    ServiceError,
    ids::{GroupSnapshotId, NodeId, SnapshotId, VolumeId},
    proto::{NodeCopy, NodeCopySetRequest},
};
use sea_orm::DatabaseTransaction;
use serde::{Deserialize, Serialize};

use crate::{
    Core,
    db::{group_snapshot, snapshot},
    events::PendingEvent,
    journal::{Journalled, delete_snapshot_on, with_node},
    lifecycle::{GroupSnapshotAction, SnapshotAction},
    messages::Failure,
    status,
};

/// A volume of the group and the snapshot it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetMember {
    pub snapshot_id: SnapshotId,
    pub volume_id: VolumeId,
    /// Attached to a host when the group snapshot was asked for: the node holds its writers.
    pub in_use: bool,
}

/// What a group snapshot operation does, with everything needed to re-drive it from the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GroupSnapshotOperation {
    CreateGroupSnapshot {
        group_snapshot_id: GroupSnapshotId,
        node_id: NodeId,
        pool: String,
        members: Vec<SetMember>,
    },
    DeleteGroupSnapshot {
        group_snapshot_id: GroupSnapshotId,
        node_id: NodeId,
        pool: String,
        snapshot_ids: Vec<SnapshotId>,
    },
}

impl GroupSnapshotOperation {
    fn group_snapshot_id(&self) -> GroupSnapshotId {
        match self {
            Self::CreateGroupSnapshot { group_snapshot_id, .. }
            | Self::DeleteGroupSnapshot { group_snapshot_id, .. } => *group_snapshot_id,
        }
    }

    fn snapshot_ids(&self) -> Vec<SnapshotId> {
        match self {
            Self::CreateGroupSnapshot { members, .. } => members.iter().map(|member| member.snapshot_id).collect(),
            Self::DeleteGroupSnapshot { snapshot_ids, .. } => snapshot_ids.clone(),
        }
    }
}

impl Journalled for GroupSnapshotOperation {
    type Output = ();

    fn kind(&self) -> &'static str {
        match self {
            Self::CreateGroupSnapshot { .. } => "create_group_snapshot",
            Self::DeleteGroupSnapshot { .. } => "delete_group_snapshot",
        }
    }

    fn resource_id(&self) -> String {
        self.group_snapshot_id().to_string()
    }

    fn node_id(&self) -> &str {
        match self {
            Self::CreateGroupSnapshot { node_id, .. } | Self::DeleteGroupSnapshot { node_id, .. } => node_id.as_str(),
        }
    }

    /// Cinder words no message for group snapshots: the group snapshot and its members show
    /// `error` with the reason.
    fn failure(&self, _error: &ServiceError) -> Option<Failure> {
        None
    }

    async fn execute(&self, core: &Core) -> Result<(), ServiceError> {
        let node_id = self.node_id();
        match self {
            Self::CreateGroupSnapshot { pool, members, .. } => {
                let request = NodeCopySetRequest {
                    pool: pool.clone(),
                    copies: members
                        .iter()
                        .map(|member| NodeCopy {
                            source_volume_id: member.volume_id.to_string(),
                            copy_id: member.snapshot_id.to_string(),
                            size_bytes: 0,
                            in_use: member.in_use,
                        })
                        .collect(),
                };
                with_node(core, node_id, |mut client| {
                    let request = request.clone();
                    async move { client.create_snapshot_set(request).await.map(drop) }
                })
                .await
            }
            Self::DeleteGroupSnapshot { pool, snapshot_ids, .. } => {
                for snapshot_id in snapshot_ids {
                    delete_snapshot_on(core, node_id, *snapshot_id, pool).await?;
                }
                Ok(())
            }
        }
    }

    async fn complete(
        &self,
        txn: &DatabaseTransaction,
        outcome: &Result<(), ServiceError>,
    ) -> Result<Vec<PendingEvent>, ServiceError> {
        let group_snapshot_id = self.group_snapshot_id();
        let reason = outcome.as_ref().err().map(|error| error.message.clone()).unwrap_or_default();
        let succeeded = outcome.is_ok();
        let mut pending = Vec::new();
        match self {
            Self::CreateGroupSnapshot { .. } => {
                for snapshot_id in self.snapshot_ids() {
                    let finished =
                        status::finish::<snapshot::Model>(txn, snapshot_id, SnapshotAction::Create, succeeded, &reason);
                    pending.extend(finished.await?);
                }
                let action = GroupSnapshotAction::Create;
                let finished =
                    status::finish::<group_snapshot::Model>(txn, group_snapshot_id, action, succeeded, &reason);
                pending.extend(finished.await?);
            }
            Self::DeleteGroupSnapshot { .. } if succeeded => {
                for snapshot_id in self.snapshot_ids() {
                    pending.extend(status::remove::<snapshot::Model>(txn, snapshot_id).await?);
                }
                pending.extend(status::remove::<group_snapshot::Model>(txn, group_snapshot_id).await?);
            }
            Self::DeleteGroupSnapshot { .. } => {
                // Deletes are idempotent: deleting the group snapshot again re-drives the ones done.
                for snapshot_id in self.snapshot_ids() {
                    let finished =
                        status::finish::<snapshot::Model>(txn, snapshot_id, SnapshotAction::Delete, false, &reason);
                    pending.extend(finished.await?);
                }
                let action = GroupSnapshotAction::Delete;
                let finished = status::finish::<group_snapshot::Model>(txn, group_snapshot_id, action, false, &reason);
                pending.extend(finished.await?);
            }
        }
        Ok(pending)
    }
}
