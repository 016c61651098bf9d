//! The group operations the journal runs: making a group's volumes from a source, and deleting a
//! group with its volumes; each on the group's node, then every row at once.

use basalt::{
    ServiceError,
    ids::{GroupId, NodeId, SnapshotId, VolumeId},
    proto::{NodeCopy, NodeCopySetRequest, NodeCreateVolumeRequest},
};
use sea_orm::DatabaseTransaction;
use serde::{Deserialize, Serialize};

use crate::{
    Core,
    db::{group, volume},
    events::PendingEvent,
    journal::{Journalled, delete_volume_on, with_node},
    lifecycle::{GroupAction, VolumeAction},
    messages::Failure,
    status,
};

/// A volume of the group, where it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub volume_id: VolumeId,
    pub node_id: NodeId,
    pub pool: String,
}

/// A volume of a group made from a source, and what it copies: a snapshot of a group snapshot,
/// or a volume of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCopy {
    pub volume_id: VolumeId,
    pub size_gib: i64,
    pub source_snapshot_id: Option<SnapshotId>,
    pub source_volume_id: Option<VolumeId>,
    /// The source volume was attached: the node holds its writers still while the set is cut.
    pub in_use: bool,
}

const GIB: u64 = 1 << 30;

/// What a group operation does, with everything needed to re-drive it from the journal alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GroupOperation {
    /// Every member's bytes are wiped and removed on its node (all on the group's node), then the
    /// group's and the members' rows go together.
    DeleteGroup { group_id: GroupId, members: Vec<Member> },
    /// The new group's volumes are made on its node: from snapshots one by one (a group snapshot
    /// is one point in time already), from volumes as one set cut at one point in time.
    CreateFromSource { group_id: GroupId, node_id: NodeId, pool: String, copies: Vec<GroupCopy> },
}

impl Journalled for GroupOperation {
    type Output = ();

    fn kind(&self) -> &'static str {
        match self {
            Self::DeleteGroup { .. } => "delete_group",
            Self::CreateFromSource { .. } => "create_group_from_source",
        }
    }

    fn resource_id(&self) -> String {
        match self {
            Self::DeleteGroup { group_id, .. } | Self::CreateFromSource { group_id, .. } => group_id.to_string(),
        }
    }

    fn node_id(&self) -> &str {
        match self {
            Self::DeleteGroup { members, .. } => members.first().map_or("", |member| member.node_id.as_str()),
            Self::CreateFromSource { node_id, .. } => node_id.as_str(),
        }
    }

    /// Cinder words no message for a failed group operation: the group and its volumes show
    /// their error status with the reason.
    fn failure(&self, _error: &ServiceError) -> Option<Failure> {
        None
    }

    async fn execute(&self, core: &Core) -> Result<(), ServiceError> {
        match self {
            Self::DeleteGroup { members, .. } => {
                for member in members {
                    delete_volume_on(core, member.node_id.as_str(), member.volume_id, &member.pool).await?;
                }
                Ok(())
            }
            Self::CreateFromSource { node_id, pool, copies, .. } => {
                if copies.iter().all(|copy| copy.source_snapshot_id.is_some()) {
                    for copy in copies {
                        let request = NodeCreateVolumeRequest {
                            volume_id: copy.volume_id.to_string(),
                            pool: pool.clone(),
                            size_bytes: copy.size_gib as u64 * GIB,
                            source_snapshot_id: copy.source_snapshot_id.map(|id| id.to_string()).unwrap_or_default(),
                            source_volume_id: String::new(),
                        };
                        with_node(core, node_id.as_str(), |mut client| {
                            let request = request.clone();
                            async move { client.create_volume(request).await.map(drop) }
                        })
                        .await?;
                    }
                    return Ok(());
                }
                let request = NodeCopySetRequest {
                    pool: pool.clone(),
                    copies: copies
                        .iter()
                        .map(|copy| NodeCopy {
                            source_volume_id: copy.source_volume_id.map(|id| id.to_string()).unwrap_or_default(),
                            copy_id: copy.volume_id.to_string(),
                            size_bytes: copy.size_gib as u64 * GIB,
                            in_use: copy.in_use,
                        })
                        .collect(),
                };
                with_node(core, node_id.as_str(), |mut client| {
                    let request = request.clone();
                    async move { client.clone_volume_set(request).await.map(drop) }
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
        let (group_id, members) = match self {
            Self::DeleteGroup { group_id, members } => (group_id, members),
            Self::CreateFromSource { group_id, copies, .. } => {
                let succeeded = outcome.is_ok();
                let reason = outcome.as_ref().err().map(|error| error.message.clone()).unwrap_or_default();
                let mut pending = Vec::new();
                for copy in copies {
                    let action = VolumeAction::Create;
                    let finished = status::finish::<volume::Model>(txn, copy.volume_id, action, succeeded, &reason);
                    pending.extend(finished.await?);
                }
                let finished = status::finish::<group::Model>(txn, *group_id, GroupAction::Create, succeeded, &reason);
                pending.extend(finished.await?);
                return Ok(pending);
            }
        };
        let mut pending = Vec::new();
        match outcome {
            Ok(()) => {
                for member in members {
                    pending.extend(status::remove::<volume::Model>(txn, member.volume_id).await?);
                }
                pending.extend(status::remove::<group::Model>(txn, *group_id).await?);
            }
            Err(error) => {
                // Deletes are idempotent: deleting the group again re-drives the ones done.
                for member in members {
                    let failed = status::finish::<volume::Model>(
                        txn,
                        member.volume_id,
                        VolumeAction::Delete,
                        false,
                        &error.message,
                    );
                    pending.extend(failed.await?);
                }
                let failed = status::finish::<group::Model>(txn, *group_id, GroupAction::Delete, false, &error.message);
                pending.extend(failed.await?);
            }
        }
        Ok(pending)
    }
}
