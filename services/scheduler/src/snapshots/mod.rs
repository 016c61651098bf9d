//! Snapshots. A snapshot lives in its volume's pool, counts against the project's `snapshots` and
//! `gigabytes` quotas, and claims its size on the pool like a volume does; the node's part runs as
//! a journalled operation (`operations.rs`).

mod manage;
pub mod operations;

use std::{collections::HashMap, sync::Arc};

use basalt::{
    ErrorCode, ServiceError,
    context::CallContext,
    ids::SnapshotId,
    proto::{
        self, CreateSnapshotRequest, DeleteSnapshotRequest, ListSnapshotsRequest, PageInfo, ResetSnapshotStatusRequest,
        SnapshotStatus, UpdateSnapshotRequest, VolumeStatus,
    },
};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, UpdateMany, sea_query::Expr};

use self::operations::SnapshotOperation;
use crate::{
    Core, claims, copy_sources,
    db::{self, db_error, json::StringMap, snapshot, volume},
    journal,
    lifecycle::{self, SnapshotAction, VolumeAction},
    listing,
    new_rows::NewSnapshot,
    quotas, status, volume_types,
};

/// The columns Cinder's sort keys name.
const SORT_COLUMNS: listing::SortColumns<snapshot::Column> = listing::SortColumns {
    created_at: snapshot::Column::CreatedAt,
    updated_at: Some(snapshot::Column::UpdatedAt),
    name: snapshot::Column::Name,
    size: Some(snapshot::Column::SizeGib),
    status: snapshot::Column::Status,
    id: snapshot::Column::Id,
};

pub struct Snapshots {
    core: Arc<Core>,
}

impl Snapshots {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    pub async fn create(
        &self,
        context: &CallContext,
        request: CreateSnapshotRequest,
    ) -> Result<snapshot::Model, ServiceError> {
        crate::fields::check_common(&request.name, &request.description, &request.metadata)?;
        crate::fields::check_name("idempotency_key", &request.idempotency_key)?;
        // A repeat (a CSI CreateSnapshot retried) gets the snapshot it made, whatever the volume's
        // status is now.
        if !request.idempotency_key.is_empty()
            && let Some(existing) = self.find_by_idempotency_key(context, &request.idempotency_key).await?
        {
            if existing.volume_id.to_string() == request.volume_id {
                return Ok(existing);
            }
            return Err(ServiceError::new(
                ErrorCode::AlreadyExists,
                format!(
                    "idempotency key {} already names snapshot {} of volume {}; repeat the original arguments or use a new key",
                    basalt::error::excerpt(&request.idempotency_key),
                    existing.id,
                    existing.volume_id
                ),
            ));
        }
        let volume = status::load::<volume::Model>(&self.core.db, context, &request.volume_id).await?;
        let action = if request.force { VolumeAction::SnapshotForce } else { VolumeAction::Snapshot };
        if volume.status == VolumeStatus::InUse && !request.force {
            return Err(ServiceError::conflict(format!(
                "volume {} is in-use; pass force to snapshot an in-use volume",
                volume.id
            )));
        }
        status::check(&volume, action, "a snapshot")?;
        let type_name = volume_types::name_of(&self.core.db, volume.volume_type_id).await?;
        let (node_id, pool) = volume.placement()?;
        let host = volume.host();

        let txn = self.core.begin_write().await?;
        // Hold the volume in its snapshottable status until the commit: a concurrent delete waits,
        // then finds this snapshot and refuses.
        status::lock::<volume::Model>(&*txn, volume.id, lifecycle::volume(action).from, "the snapshot").await?;
        quotas::reserve(
            &*txn,
            &self.core.config.quota_defaults,
            &context.project_id,
            &quotas::snapshot_usage(&type_name, volume.size_gib),
        )
        .await?;
        let capacity = claims::pool_capacity(&self.core, node_id.as_str(), &pool);
        if !claims::claim(&*txn, &host, capacity, volume.size_gib).await? {
            return Err(ServiceError::new(
                ErrorCode::NoCapacity,
                format!("pool {host} cannot hold a {} GiB snapshot of volume {}", volume.size_gib, volume.id),
            ));
        }
        let placed = (node_id.clone(), pool.clone());
        let model = NewSnapshot::of(context, &volume, placed, request.name, request.description)
            .metadata(request.metadata)
            .idempotency_key((!request.idempotency_key.is_empty()).then_some(request.idempotency_key))
            .insert(&*txn)
            .await
            .map_err(db::keyed_insert_error("snapshot"))?;
        let operation =
            SnapshotOperation::CreateSnapshot { snapshot_id: model.id, volume_id: volume.id, node_id, pool };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        self.core.publish([status::created(&model)]).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(model)
    }

    pub async fn get(&self, context: &CallContext, snapshot_id: &str) -> Result<snapshot::Model, ServiceError> {
        status::load(&self.core.db, context, snapshot_id).await
    }

    async fn find_by_idempotency_key(
        &self,
        context: &CallContext,
        key: &str,
    ) -> Result<Option<snapshot::Model>, ServiceError> {
        snapshot::Entity::find()
            .filter(snapshot::Column::ProjectId.eq(context.project_id.clone()))
            .filter(snapshot::Column::IdempotencyKey.eq(key))
            .one(&self.core.db)
            .await
            .map_err(db_error)
    }

    pub async fn list(
        &self,
        context: &CallContext,
        request: &ListSnapshotsRequest,
    ) -> Result<(Vec<snapshot::Model>, PageInfo), ServiceError> {
        let mut condition =
            listing::project_scope(context, request.all_projects, snapshot::Column::ProjectId, "snapshots")?;
        if !request.volume_id.is_empty() {
            condition = condition.add(snapshot::Column::VolumeId.eq(request.volume_id.as_str()));
        }
        if !request.name.is_empty() {
            condition = condition.add(snapshot::Column::Name.eq(request.name.as_str()));
        }
        if request.status != SnapshotStatus::Unspecified as i32 {
            let status = SnapshotStatus::try_from(request.status)
                .map_err(|_| ServiceError::invalid(format!("unknown snapshot status {}", request.status)))?;
            condition = condition.add(snapshot::Column::Status.eq(status));
        }
        let backend = self.core.db.get_database_backend();
        let condition = listing::metadata_holds(condition, backend, "snapshots", &request.metadata);
        let keyset = listing::Keyset::<snapshot::Entity> {
            order: SORT_COLUMNS.order(&request.sort, "snapshots")?,
            id: snapshot::Column::Id,
            id_of: |row| row.id.to_string(),
        };
        keyset.page(&self.core.db, condition, request.page.as_ref(), request.with_count, "snapshot").await
    }

    pub async fn update(
        &self,
        context: &CallContext,
        request: UpdateSnapshotRequest,
    ) -> Result<snapshot::Model, ServiceError> {
        let model = self.get(context, &request.snapshot_id).await?;
        status::check(&model, SnapshotAction::Update, "updating")?;
        let metadata = request.metadata.map(|update| update.items);
        crate::fields::check_common(
            request.name.as_deref().unwrap_or_default(),
            request.description.as_deref().unwrap_or_default(),
            metadata.as_ref().unwrap_or(&HashMap::new()),
        )?;
        let mut changes = Vec::new();
        if let Some(name) = request.name {
            changes.push((snapshot::Column::Name, name.into()));
        }
        if let Some(description) = request.description {
            changes.push((snapshot::Column::Description, description.into()));
        }
        if let Some(metadata) = metadata {
            changes.push((snapshot::Column::Metadata, StringMap::from(metadata).into()));
        }
        status::update(&self.core.db, &model, SnapshotAction::Update, changes).await?;
        self.get(context, &model.id.to_string()).await
    }

    pub async fn delete(
        &self,
        context: &CallContext,
        request: &DeleteSnapshotRequest,
    ) -> Result<snapshot::Model, ServiceError> {
        if request.force {
            context.authorize("volume_extension:snapshot_admin_actions:force_delete")?;
        }
        let model = self.get(context, &request.snapshot_id).await?;
        if model.status == SnapshotStatus::Deleting {
            return Ok(model);
        }
        if let Some(group_snapshot_id) = model.group_snapshot_id {
            return Err(ServiceError::invalid(format!(
                "snapshot {} is part of group snapshot {group_snapshot_id}; delete the group snapshot instead",
                model.id
            )));
        }
        let action = if request.force { SnapshotAction::ForceDelete } else { SnapshotAction::Delete };
        let txn = self.core.begin_write().await?;
        let (before, model) = status::transition::<snapshot::Model>(&*txn, model.id, action, "").await?;
        copy_sources::refuse_while_copied(&*txn, copy_sources::CopySource::Snapshot(model.id)).await?;
        let operation = SnapshotOperation::DeleteSnapshot {
            snapshot_id: model.id,
            node_id: model.node_id.clone(),
            pool: model.pool.clone(),
        };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        self.core.publish([status::changed(before, &model)]).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(model)
    }

    pub async fn reset_status(
        &self,
        context: &CallContext,
        request: ResetSnapshotStatusRequest,
    ) -> Result<snapshot::Model, ServiceError> {
        let target = SnapshotStatus::try_from(request.status).unwrap_or_default();
        status::resettable::<snapshot::Model>(target, lifecycle::SNAPSHOT_RESETTABLE)?;
        let model = self.get(context, &request.snapshot_id).await?;
        let txn = self.core.begin_write().await?;
        status::reset(&*txn, &model, target, lifecycle::SNAPSHOT_RESETTABLE).await?;
        txn.commit().await?;
        self.core.publish([status::event(&model, target.cinder_name(), "reset by an admin")]).await;
        self.get(context, &model.id.to_string()).await
    }
}

status::stateful! {
    snapshot: kind crate::events::SNAPSHOT, id SnapshotId, status SnapshotStatus, action SnapshotAction, rule lifecycle::snapshot,
    reason Some(snapshot::Column::ErrorReason), updated_at Some(snapshot::Column::UpdatedAt);
    fn with_status(update: UpdateMany<snapshot::Entity>, to: SnapshotStatus) -> UpdateMany<snapshot::Entity> {
        if to == SnapshotStatus::Available {
            return update.col_expr(snapshot::Column::Progress, Expr::value(100));
        }
        update
    }

    /// The quota and the pool's space it held.
    async fn release(&self, txn: &impl ConnectionTrait) -> Result<(), ServiceError> {
        let type_name = volume_types::name_of(txn, self.volume_type_id).await?;
        quotas::release(txn, &self.project_id, &quotas::snapshot_usage(&type_name, self.size_gib)).await?;
        claims::release(txn, &self.host(), self.size_gib).await
    }
}

pub fn to_proto(model: &snapshot::Model) -> proto::Snapshot {
    proto::Snapshot {
        id: model.id.to_string(),
        project_id: model.project_id.to_string(),
        user_id: model.user_id.clone(),
        volume_id: model.volume_id.to_string(),
        name: model.name.clone(),
        description: model.description.clone(),
        size_gib: model.size_gib as u64,
        status: model.status as i32,
        metadata: model.metadata.to_hash_map(),
        progress: model.progress.clamp(0, 100) as u32,
        error_reason: model.error_reason.clone(),
        created_at: Some(std::time::SystemTime::from(model.created_at).into()),
        updated_at: Some(std::time::SystemTime::from(model.updated_at).into()),
        idempotency_key: model.idempotency_key.clone().unwrap_or_default(),
        group_snapshot_id: model.group_snapshot_id.map(|id| id.to_string()).unwrap_or_default(),
    }
}
