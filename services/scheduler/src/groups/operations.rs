//! The group operations the journal runs: deleting a group with its volumes, each on its node,
//! then every row at once.

use basalt::{
    ServiceError,
    ids::{GroupId, NodeId, VolumeId},
    proto::NodeDeleteVolumeRequest,
};
use sea_orm::DatabaseTransaction;
use serde::{Deserialize, Serialize};

use crate::{
    Core,
    db::{group, volume},
    events::PendingEvent,
    journal::{Journalled, with_node},
    lifecycle::{GroupAction, VolumeAction},
    lost_nodes,
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

/// What a group operation does, with everything needed to re-drive it from the journal alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GroupOperation {
    /// Every member's bytes are wiped and removed on its node (all on the group's node), then the
    /// group's and the members' rows go together.
    DeleteGroup { group_id: GroupId, members: Vec<Member> },
}

impl Journalled for GroupOperation {
    type Output = ();

    fn kind(&self) -> &'static str {
        match self {
            Self::DeleteGroup { .. } => "delete_group",
        }
    }

    fn resource_id(&self) -> String {
        match self {
            Self::DeleteGroup { group_id, .. } => group_id.to_string(),
        }
    }

    fn node_id(&self) -> &str {
        match self {
            Self::DeleteGroup { members, .. } => members.first().map_or("", |member| member.node_id.as_str()),
        }
    }

    /// Cinder words no message for a failed group delete: the group and its volumes show
    /// `error_deleting` with the reason.
    fn failure(&self, _error: &ServiceError) -> Option<Failure> {
        None
    }

    async fn execute(&self, core: &Core) -> Result<(), ServiceError> {
        match self {
            Self::DeleteGroup { members, .. } => {
                for member in members {
                    if lost_nodes::is_lost(&core.db, member.node_id.as_str()).await? {
                        continue;
                    }
                    let request =
                        NodeDeleteVolumeRequest { volume_id: member.volume_id.to_string(), pool: member.pool.clone() };
                    with_node(core, member.node_id.as_str(), |mut client| {
                        let request = request.clone();
                        async move { client.delete_volume(request).await.map(drop) }
                    })
                    .await?;
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
        let Self::DeleteGroup { group_id, members } = self;
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
