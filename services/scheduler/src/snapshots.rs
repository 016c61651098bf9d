//! Snapshot operations. A snapshot lives in its volume's pool, counts against the project's
//! `snapshots` and `gigabytes` quotas, and claims its size on the pool like a volume does.

use std::{collections::HashMap, sync::Arc};

use basalt::{
    ErrorCode, ServiceError,
    context::CallContext,
    ids::SnapshotId,
    proto::{
        self, CreateSnapshotRequest, DeleteSnapshotRequest, ListSnapshotsRequest, PageInfo, ResetSnapshotStatusRequest,
        SnapshotStatus, UpdateSnapshotRequest,
    },
};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::Expr,
};

use crate::{
    Core, claims,
    db::{db_error, snapshot, volume},
    events,
    journal::{self, Operation, PendingEvent},
    lifecycle::{self, SnapshotAction, VolumeAction},
    listing, quotas, string_map,
    volumes::{self, host_of, placement_of, timestamp, type_name_of},
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
            if existing.volume_id == request.volume_id {
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
        let volume = volumes::load(&self.core.db, context, &request.volume_id).await?;
        let action = if request.force { VolumeAction::SnapshotForce } else { VolumeAction::Snapshot };
        let allowed = lifecycle::volume(action).from;
        let volume_status = proto::VolumeStatus::from_cinder_name(&volume.status).unwrap_or_default();
        if !allowed.contains(&volume_status) {
            let hint = if volume_status == proto::VolumeStatus::InUse {
                "; pass force to snapshot an in-use volume"
            } else {
                ""
            };
            return Err(ServiceError::conflict(format!(
                "volume {} is {}; a snapshot needs it to be {}{hint}",
                volume.id,
                volume.status,
                lifecycle::volume_names(allowed)
            )));
        }
        let type_name = type_name_of(&self.core.db, volume.volume_type_id.as_deref()).await?;
        let (node_id, pool) = placement_of(&volume);
        let host = host_of(&volume);

        let txn = self.core.begin_write().await?;
        // Lock the volume row in its snapshottable status until the commit: a concurrent delete
        // waits, then finds this snapshot and refuses.
        let locked = volume::Entity::update_many()
            .col_expr(volume::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(volume::Column::Id.eq(volume.id.as_str()))
            .filter(volumes::statuses_condition(allowed))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        if locked.rows_affected == 0 {
            return Err(ServiceError::conflict(format!(
                "volume {} changed status meanwhile; retry the snapshot",
                volume.id
            )));
        }
        quotas::reserve(
            &*txn,
            &self.core.config.quota_defaults,
            context.project_id.as_str(),
            &quotas::snapshot_usage(&type_name, volume.size_gib),
        )
        .await?;
        let capacity = self.pool_capacity(&node_id, &pool);
        if !claims::claim(&*txn, &host, capacity, volume.size_gib).await? {
            return Err(ServiceError::new(
                ErrorCode::NoCapacity,
                format!("pool {host} cannot hold a {} GiB snapshot of volume {}", volume.size_gib, volume.id),
            ));
        }
        let now = Utc::now();
        let model = snapshot::ActiveModel {
            id: Set(SnapshotId::new_random().to_string()),
            project_id: Set(volume.project_id.clone()),
            user_id: Set(context.user_id.clone()),
            volume_id: Set(volume.id.clone()),
            name: Set(request.name),
            description: Set(request.description),
            size_gib: Set(volume.size_gib),
            status: Set(SnapshotStatus::Creating.cinder_name().into()),
            metadata: Set(string_map::to_json(&request.metadata)),
            progress: Set(0),
            error_reason: Set(String::new()),
            node_id: Set(node_id.clone()),
            backend: Set(volume.backend.clone().unwrap_or_default()),
            pool: Set(pool.clone()),
            volume_type_id: Set(volume.volume_type_id.clone()),
            idempotency_key: Set((!request.idempotency_key.is_empty()).then_some(request.idempotency_key)),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&*txn)
        .await
        .map_err(|error| {
            if matches!(error.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) {
                ServiceError::new(
                    ErrorCode::AlreadyExists,
                    "a snapshot with this idempotency key was created concurrently; retry to get it",
                )
            } else {
                db_error(error)
            }
        })?;
        let operation =
            Operation::CreateSnapshot { snapshot_id: model.id.clone(), volume_id: volume.id.clone(), node_id, pool };
        let record = journal::record(&*txn, &self.core, &operation).await?;
        txn.commit().await?;
        self.core.publish_status(events::SNAPSHOT, &model.id, &model.project_id, "", &model.status, "").await;
        journal::launch(self.core.clone(), record);
        Ok(model)
    }

    fn pool_capacity(&self, node_id: &str, pool: &str) -> i64 {
        self.core.capacity.pool(node_id, pool).map_or(0, |pool| claims::capacity_gib(&pool, false))
    }

    pub async fn get(&self, context: &CallContext, snapshot_id: &str) -> Result<snapshot::Model, ServiceError> {
        load(&self.core.db, context, snapshot_id).await
    }

    async fn find_by_idempotency_key(
        &self,
        context: &CallContext,
        key: &str,
    ) -> Result<Option<snapshot::Model>, ServiceError> {
        snapshot::Entity::find()
            .filter(snapshot::Column::ProjectId.eq(context.project_id.as_str()))
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
            condition = condition.add(snapshot::Column::Status.eq(status.cinder_name()));
        }
        let mut rows = snapshot::Entity::find().filter(condition).all(&self.core.db).await.map_err(db_error)?;
        listing::retain_metadata(&mut rows, &request.metadata, |row| &row.metadata);
        listing::page(rows, &request.sort, request.page.as_ref(), request.with_count, "snapshot")
    }

    pub async fn update(
        &self,
        context: &CallContext,
        request: UpdateSnapshotRequest,
    ) -> Result<snapshot::Model, ServiceError> {
        let model = self.get(context, &request.snapshot_id).await?;
        let metadata = request.metadata.map(|update| update.items);
        crate::fields::check_common(
            request.name.as_deref().unwrap_or_default(),
            request.description.as_deref().unwrap_or_default(),
            metadata.as_ref().unwrap_or(&HashMap::new()),
        )?;
        let mut update = snapshot::Entity::update_many()
            .col_expr(snapshot::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(snapshot::Column::Id.eq(model.id.as_str()))
            .filter(statuses_condition(lifecycle::snapshot(SnapshotAction::Update).from));
        if let Some(name) = request.name {
            update = update.col_expr(snapshot::Column::Name, Expr::value(name));
        }
        if let Some(description) = request.description {
            update = update.col_expr(snapshot::Column::Description, Expr::value(description));
        }
        if let Some(metadata) = metadata {
            update = update.col_expr(snapshot::Column::Metadata, Expr::value(string_map::to_json(&metadata)));
        }
        if update.exec(&self.core.db).await.map_err(db_error)?.rows_affected == 0 {
            return Err(ServiceError::conflict(format!(
                "snapshot {} is {}; it cannot be updated now",
                model.id, model.status
            )));
        }
        self.get(context, &model.id).await
    }

    pub async fn delete(
        &self,
        context: &CallContext,
        request: &DeleteSnapshotRequest,
    ) -> Result<snapshot::Model, ServiceError> {
        if request.force {
            context.require_admin("force delete of a snapshot")?;
        }
        let model = self.get(context, &request.snapshot_id).await?;
        if model.status == SnapshotStatus::Deleting.cinder_name() {
            return Ok(model);
        }
        let action = if request.force { SnapshotAction::ForceDelete } else { SnapshotAction::Delete };
        let txn = self.core.begin_write().await?;
        let (before, model) = transition(&*txn, &model.id, action, "").await?;
        let operation = Operation::DeleteSnapshot {
            snapshot_id: model.id.clone(),
            node_id: model.node_id.clone(),
            pool: model.pool.clone(),
        };
        let record = journal::record(&*txn, &self.core, &operation).await?;
        txn.commit().await?;
        self.core.publish_status(events::SNAPSHOT, &model.id, &model.project_id, &before, &model.status, "").await;
        journal::launch(self.core.clone(), record);
        Ok(model)
    }

    pub async fn reset_status(
        &self,
        context: &CallContext,
        request: ResetSnapshotStatusRequest,
    ) -> Result<snapshot::Model, ServiceError> {
        context.require_admin("resetting a snapshot's status")?;
        let target = SnapshotStatus::try_from(request.status).unwrap_or_default();
        if !lifecycle::SNAPSHOT_RESETTABLE.contains(&target) {
            return Err(ServiceError::invalid(format!(
                "a snapshot can be reset to {} only",
                lifecycle::snapshot_names(lifecycle::SNAPSHOT_RESETTABLE)
            )));
        }
        let model = self.get(context, &request.snapshot_id).await?;
        let txn = self.core.begin_write().await?;
        if journal::in_flight(&*txn, &model.id).await? {
            return Err(ServiceError::conflict(format!(
                "snapshot {} is {} with an operation in flight; wait for it to finish rather than reset it",
                model.id, model.status
            )));
        }
        let updated = snapshot::Entity::update_many()
            .col_expr(snapshot::Column::Status, Expr::value(target.cinder_name()))
            .col_expr(snapshot::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(snapshot::Column::Id.eq(model.id.as_str()))
            .filter(snapshot::Column::Status.eq(model.status.as_str()))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        if updated.rows_affected == 0 {
            return Err(ServiceError::conflict(format!(
                "snapshot {} changed status meanwhile; look again and retry",
                model.id
            )));
        }
        txn.commit().await?;
        self.core
            .publish_status(
                events::SNAPSHOT,
                &model.id,
                &model.project_id,
                &model.status,
                target.cinder_name(),
                "reset by an admin",
            )
            .await;
        self.get(context, &model.id).await
    }
}

pub async fn load(
    db: &impl ConnectionTrait,
    context: &CallContext,
    snapshot_id: &str,
) -> Result<snapshot::Model, ServiceError> {
    let id = SnapshotId::parse(snapshot_id)?;
    let found = snapshot::Entity::find_by_id(id.to_string()).one(db).await.map_err(db_error)?;
    match found {
        Some(model) if context.is_admin || model.project_id == context.project_id.as_str() => Ok(model),
        _ => Err(ServiceError::not_found(format!("snapshot {id} not found"))),
    }
}

pub fn statuses_condition(statuses: &[SnapshotStatus]) -> Condition {
    Condition::all().add(snapshot::Column::Status.is_in(statuses.iter().map(|status| status.cinder_name())))
}

/// Applies `action`'s start by compare-and-set inside `txn`; returns the status before and the row.
pub async fn transition(
    txn: &impl ConnectionTrait,
    snapshot_id: &str,
    action: SnapshotAction,
    reason: &str,
) -> Result<(String, snapshot::Model), ServiceError> {
    let rule = lifecycle::snapshot(action);
    let before = find(txn, snapshot_id)
        .await?
        .ok_or_else(|| ServiceError::not_found(format!("snapshot {snapshot_id} not found")))?;
    let Some(during) = rule.during else {
        return Ok((before.status.clone(), before));
    };
    set_status(txn, snapshot_id, rule.from, during, reason).await?;
    let after = find(txn, snapshot_id)
        .await?
        .ok_or_else(|| ServiceError::not_found(format!("snapshot {snapshot_id} not found")))?;
    Ok((before.status, after))
}

async fn find(db: &impl ConnectionTrait, snapshot_id: &str) -> Result<Option<snapshot::Model>, ServiceError> {
    snapshot::Entity::find_by_id(snapshot_id.to_owned()).one(db).await.map_err(db_error)
}

async fn set_status(
    txn: &impl ConnectionTrait,
    snapshot_id: &str,
    from: &[SnapshotStatus],
    to: SnapshotStatus,
    reason: &str,
) -> Result<(), ServiceError> {
    let mut update = snapshot::Entity::update_many()
        .col_expr(snapshot::Column::Status, Expr::value(to.cinder_name()))
        .col_expr(snapshot::Column::ErrorReason, Expr::value(reason))
        .col_expr(snapshot::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(snapshot::Column::Id.eq(snapshot_id))
        .filter(statuses_condition(from));
    if to == SnapshotStatus::Available {
        update = update.col_expr(snapshot::Column::Progress, Expr::value(100));
    }
    if update.exec(txn).await.map_err(db_error)?.rows_affected == 1 {
        return Ok(());
    }
    match find(txn, snapshot_id).await? {
        Some(model) => Err(ServiceError::conflict(format!(
            "snapshot {snapshot_id} is {}; it can become {} only from {}",
            model.status,
            to.cinder_name(),
            lifecycle::snapshot_names(from)
        ))),
        None => Err(ServiceError::not_found(format!("snapshot {snapshot_id} not found"))),
    }
}

fn event(model: &snapshot::Model, to: &str, reason: &str) -> PendingEvent {
    PendingEvent {
        kind: events::SNAPSHOT,
        id: model.id.clone(),
        project: model.project_id.clone(),
        from: model.status.clone(),
        to: to.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Removes a deleted snapshot's row and gives back its quota and claim.
pub async fn remove(txn: &impl ConnectionTrait, snapshot_id: &str) -> Result<Option<PendingEvent>, ServiceError> {
    let Some(model) = find(txn, snapshot_id).await? else {
        return Ok(None);
    };
    let type_name = type_name_of(txn, model.volume_type_id.as_deref()).await?;
    quotas::release(txn, &model.project_id, &quotas::snapshot_usage(&type_name, model.size_gib)).await?;
    claims::release(txn, &format!("{}@{}#{}", model.node_id, model.backend, model.pool), model.size_gib).await?;
    snapshot::Entity::delete_by_id(model.id.clone()).exec(txn).await.map_err(db_error)?;
    Ok(Some(event(&model, events::DELETED, "")))
}

pub async fn fail_deletion(
    txn: &impl ConnectionTrait,
    snapshot_id: &str,
    reason: &str,
) -> Result<Option<PendingEvent>, ServiceError> {
    let Some(model) = find(txn, snapshot_id).await? else {
        return Ok(None);
    };
    let failure = lifecycle::snapshot(SnapshotAction::Delete).failure;
    set_status(txn, snapshot_id, &[SnapshotStatus::Deleting], failure, reason).await?;
    Ok(Some(event(&model, failure.cinder_name(), reason)))
}

/// A revert is over, whatever its outcome: the snapshot is intact and available again.
pub async fn finish_revert(
    txn: &impl ConnectionTrait,
    snapshot_id: &str,
) -> Result<Option<PendingEvent>, ServiceError> {
    let Some(model) = find(txn, snapshot_id).await? else {
        return Ok(None);
    };
    let success = lifecycle::snapshot(SnapshotAction::Revert).success.unwrap_or(SnapshotStatus::Available);
    set_status(txn, snapshot_id, &[SnapshotStatus::Restoring], success, "").await?;
    Ok(Some(event(&model, success.cinder_name(), "")))
}

/// Applies a finished snapshot operation's outcome inside the completion transaction.
pub async fn complete(
    txn: &impl ConnectionTrait,
    operation: &Operation,
    outcome: &Result<(), ServiceError>,
) -> Result<Vec<PendingEvent>, ServiceError> {
    let snapshot_id = operation.resource_id();
    let reason = outcome.as_ref().err().map(|error| error.message.clone()).unwrap_or_default();
    let Some(model) = find(txn, snapshot_id).await? else {
        tracing::warn!(snapshot_id, "the snapshot of a finished operation is gone");
        return Ok(Vec::new());
    };
    match (operation, outcome) {
        (Operation::CreateSnapshot { .. }, outcome) => {
            let rule = lifecycle::snapshot(SnapshotAction::Create);
            let to = if outcome.is_ok() { rule.success.unwrap_or(SnapshotStatus::Available) } else { rule.failure };
            set_status(txn, snapshot_id, &[SnapshotStatus::Creating], to, &reason).await?;
            Ok(vec![event(&model, to.cinder_name(), &reason)])
        }
        (Operation::DeleteSnapshot { .. }, Ok(())) => Ok(remove(txn, snapshot_id).await?.into_iter().collect()),
        (Operation::DeleteSnapshot { .. }, Err(_)) => {
            Ok(fail_deletion(txn, snapshot_id, &reason).await?.into_iter().collect())
        }
        _ => Err(ServiceError::internal("a volume operation reached the snapshot completion")),
    }
}

pub fn to_proto(model: &snapshot::Model) -> proto::Snapshot {
    proto::Snapshot {
        id: model.id.clone(),
        project_id: model.project_id.clone(),
        user_id: model.user_id.clone(),
        volume_id: model.volume_id.clone(),
        name: model.name.clone(),
        description: model.description.clone(),
        size_gib: model.size_gib as u64,
        status: SnapshotStatus::from_cinder_name(&model.status).unwrap_or_default() as i32,
        metadata: string_map::from_json(&model.metadata),
        progress: model.progress.clamp(0, 100) as u32,
        error_reason: model.error_reason.clone(),
        created_at: Some(timestamp(model.created_at)),
        updated_at: Some(timestamp(model.updated_at)),
        idempotency_key: model.idempotency_key.clone().unwrap_or_default(),
    }
}
