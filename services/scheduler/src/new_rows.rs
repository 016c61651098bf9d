//! The first row of a new volume or snapshot, `creating` on its pool: every domain that makes one
//! (a volume create, a clone, a group made from a source, a snapshot, a group snapshot) starts it
//! here, so the rows all start alike.

use std::collections::HashMap;

use basalt::{
    ServiceError,
    context::CallContext,
    ids::{GroupId, GroupSnapshotId, NodeId, SnapshotId, VolumeId, VolumeTypeId},
    proto::{AttachStatus, SnapshotStatus, VolumeStatus},
};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};

use crate::{
    db::{self, json::StringMap, snapshot, volume},
    placement::PoolCandidate,
};

/// A new volume's row, `creating` on its pool: what each way of making one decides.
pub struct NewVolume<'a> {
    pub context: &'a CallContext,
    pub pool: &'a PoolCandidate,
    pub node_id: NodeId,
    pub volume_type_id: VolumeTypeId,
    pub size_gib: i64,
    pub name: String,
    pub description: String,
    pub metadata: StringMap,
    pub bootable: bool,
    pub multiattach: bool,
    pub snapshot_id: Option<SnapshotId>,
    pub source_volume_id: Option<VolumeId>,
    pub idempotency_key: Option<String>,
    pub group_id: Option<GroupId>,
}

impl NewVolume<'_> {
    pub async fn insert(self, txn: &impl ConnectionTrait) -> Result<volume::Model, ServiceError> {
        let now = Utc::now();
        volume::ActiveModel {
            id: Set(VolumeId::new_random()),
            project_id: Set(self.context.project_id.clone()),
            user_id: Set(self.context.user_id.clone()),
            name: Set(self.name),
            description: Set(self.description),
            size_gib: Set(self.size_gib),
            status: Set(VolumeStatus::Creating),
            attach_status: Set(AttachStatus::Detached),
            availability_zone: Set(self.pool.identity.availability_zone.clone()),
            volume_type_id: Set(Some(self.volume_type_id)),
            node_id: Set(Some(self.node_id)),
            backend: Set(Some(self.pool.identity.backend.clone())),
            pool: Set(Some(self.pool.identity.pool.clone())),
            snapshot_id: Set(self.snapshot_id),
            source_volume_id: Set(self.source_volume_id),
            metadata: Set(self.metadata),
            bootable: Set(self.bootable),
            readonly: Set(false),
            multiattach: Set(self.multiattach),
            error_reason: Set(String::new()),
            idempotency_key: Set(self.idempotency_key),
            group_id: Set(self.group_id),
            migration_status: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(txn)
        .await
        .map_err(db::keyed_insert_error("volume"))
    }
}

/// A new snapshot of `volume`, `creating`, in the volume's pool and of its size.
pub struct NewSnapshot(snapshot::ActiveModel);

impl NewSnapshot {
    /// A snapshot of `volume` in `placed`, its volume's pool.
    pub fn of(
        context: &CallContext,
        volume: &volume::Model,
        (node_id, pool): (NodeId, String),
        name: String,
        description: String,
    ) -> Self {
        let now = Utc::now();
        Self(snapshot::ActiveModel {
            id: Set(SnapshotId::new_random()),
            project_id: Set(volume.project_id.clone()),
            user_id: Set(context.user_id.clone()),
            volume_id: Set(volume.id),
            name: Set(name),
            description: Set(description),
            size_gib: Set(volume.size_gib),
            status: Set(SnapshotStatus::Creating),
            metadata: Set(StringMap::default()),
            progress: Set(0),
            error_reason: Set(String::new()),
            node_id: Set(node_id),
            backend: Set(volume.backend.clone().unwrap_or_default()),
            pool: Set(pool),
            volume_type_id: Set(volume.volume_type_id),
            idempotency_key: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            group_snapshot_id: Set(None),
        })
    }

    pub fn idempotency_key(mut self, key: Option<String>) -> Self {
        self.0.idempotency_key = Set(key);
        self
    }

    pub fn metadata(mut self, metadata: HashMap<String, String>) -> Self {
        self.0.metadata = Set(StringMap::from(metadata));
        self
    }

    /// A member of a group snapshot.
    pub fn group_snapshot(mut self, group_snapshot_id: GroupSnapshotId) -> Self {
        self.0.group_snapshot_id = Set(Some(group_snapshot_id));
        self
    }

    pub async fn insert(self, txn: &impl ConnectionTrait) -> Result<snapshot::Model, sea_orm::DbErr> {
        self.0.insert(txn).await
    }
}
