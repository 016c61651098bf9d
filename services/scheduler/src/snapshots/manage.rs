//! Manage and unmanage of snapshots (Cinder's `os-snapshot-manage`, `manageable_snapshots`,
//! `os-unmanage`): an admin adopts a snapshot object of a volume's pool as a snapshot of that
//! volume, or releases a snapshot so the database forgets it while its bytes stay.

use basalt::{
    ServiceError,
    context::CallContext,
    ids::SnapshotId,
    proto::{
        ListManageableVolumesRequest, ManageSnapshotRequest, ManageableSnapshot, NodeListManageableRequest, PageInfo,
    },
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::{Snapshots, operations::SnapshotOperation};
use crate::{
    adoption, claims,
    db::{self, db_error, snapshot, volume},
    fields, journal,
    lifecycle::{self, SnapshotAction, VolumeAction},
    listing,
    new_rows::NewSnapshot,
    placement::PoolCandidate,
    quotas, status, volume_types,
};

/// The id in a backend's name for a snapshot (`snapshot-<uuid>`, LVM's `_snapshot-<uuid>`).
fn named_snapshot(name: &str) -> Option<SnapshotId> {
    name.rsplit_once("snapshot-").and_then(|(_, id)| SnapshotId::parse(id).ok())
}

impl Snapshots {
    /// Adopts `request.source_name`, in the volume's pool, as a new snapshot of the volume.
    pub async fn manage(
        &self,
        context: &CallContext,
        request: ManageSnapshotRequest,
    ) -> Result<snapshot::Model, ServiceError> {
        fields::check_common(&request.name, &request.description, &request.metadata)?;
        let db = &self.core.db;
        let volume = status::load::<volume::Model>(db, context, &request.volume_id).await?;
        status::check(&volume, VolumeAction::SnapshotForce, "adopting a snapshot of it")?;
        let (node_id, pool_name) = volume.placement()?;
        let pool = self.core.capacity.pool(node_id.as_str(), &pool_name).ok_or_else(|| {
            ServiceError::unavailable(format!("node {node_id} holding volume {} is not reporting", volume.id))
        })?;
        let listed = self.manageable_on(&pool).await?;
        adoption::pick(&listed, &request.source_name, pool.host(), "manageable_snapshots", |object| {
            (&object.source_name, object.safe_to_manage, &object.reason_not_safe)
        })?;
        let type_name = volume_types::name_of(db, volume.volume_type_id).await?;
        let txn = self.core.begin_write().await?;
        let allowed = lifecycle::volume(VolumeAction::SnapshotForce).from;
        status::lock::<volume::Model>(&*txn, volume.id, allowed, "adopting a snapshot of it").await?;
        let usage = quotas::snapshot_usage(&type_name, volume.size_gib);
        quotas::reserve(&*txn, &self.core.config.quota_defaults, &context.project_id, &usage).await?;
        // The bytes are in the pool already: booked whatever the pool's claims say.
        claims::book(&*txn, &volume.host(), claims::capacity_gib(&pool, false), volume.size_gib).await?;
        let placed = (node_id.clone(), pool_name.clone());
        let model = NewSnapshot::of(context, &volume, placed, request.name, request.description)
            .metadata(request.metadata)
            .insert(&*txn)
            .await
            .map_err(db::keyed_insert_error("snapshot"))?;
        let operation = SnapshotOperation::ManageSnapshot {
            snapshot_id: model.id,
            volume_id: volume.id,
            node_id,
            pool: pool_name,
            source_name: request.source_name.clone(),
        };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        tracing::info!(snapshot_id = %model.id, volume_id = %volume.id, source = %request.source_name, "snapshot being adopted");
        self.core.publish([status::created(&model)]).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(model)
    }

    /// The snapshot objects `request.host` holds, a page of them in the order asked.
    pub async fn manageable(
        &self,
        request: &ListManageableVolumesRequest,
    ) -> Result<(Vec<ManageableSnapshot>, PageInfo), ServiceError> {
        let pool = self.core.capacity.pool_of_host(&request.host)?;
        let mut listed = self.manageable_on(&pool).await?;
        listing::page_by_name(&mut listed, &request.sort, request.page.as_ref(), |object| {
            (object.source_name.as_str(), object.size_gib)
        })
    }

    /// Forgets the snapshot: its row goes with its quota and capacity claim, its bytes stay.
    pub async fn unmanage(&self, context: &CallContext, snapshot_id: &str) -> Result<snapshot::Model, ServiceError> {
        let model = self.get(context, snapshot_id).await?;
        status::check(&model, SnapshotAction::Unmanage, "unmanaging")?;
        let txn = self.core.begin_write().await?;
        let allowed = lifecycle::snapshot(SnapshotAction::Unmanage).from;
        status::lock::<snapshot::Model>(&*txn, model.id, allowed, "unmanaging").await?;
        if journal::in_flight(&*txn, &model.id.to_string()).await? {
            return Err(ServiceError::conflict(format!("snapshot {} has an operation in flight", model.id)));
        }
        let removed = status::remove::<snapshot::Model>(&*txn, model.id).await?;
        txn.commit().await?;
        tracing::info!(snapshot_id = %model.id, "snapshot unmanaged; its bytes stay in the pool");
        self.core.publish(removed).await;
        Ok(model)
    }

    /// Every snapshot object of `pool`, with whether it may be adopted: the node's word, then
    /// whether it is a snapshot this deployment already manages.
    async fn manageable_on(&self, pool: &PoolCandidate) -> Result<Vec<ManageableSnapshot>, ServiceError> {
        let mut client = self.core.nodes.client(&self.core.capacity, pool.node_id())?;
        let found = client
            .list_manageable_snapshots(NodeListManageableRequest { pool: pool.identity.pool.clone() })
            .await
            .map_err(ServiceError::from)?
            .into_inner()
            .snapshots;
        let named: Vec<SnapshotId> = found.iter().filter_map(|object| named_snapshot(&object.name)).collect();
        let managed: Vec<SnapshotId> = snapshot::Entity::find()
            .filter(snapshot::Column::Id.is_in(named))
            .all(&self.core.db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|row| row.id)
            .collect();
        Ok(found
            .into_iter()
            .map(|object| {
                let snapshot_id = named_snapshot(&object.name).filter(|id| managed.contains(id));
                let (size_gib, reason) =
                    adoption::verdict(object.size_bytes, &object.reason_not_safe, snapshot_id.is_some());
                ManageableSnapshot {
                    source_name: object.name,
                    size_gib,
                    safe_to_manage: reason.is_empty(),
                    reason_not_safe: reason,
                    snapshot_id: snapshot_id.map(|id| id.to_string()).unwrap_or_default(),
                    source_volume_name: object.origin,
                }
            })
            .collect())
    }
}
