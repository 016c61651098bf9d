//! Volumes: validation, placement with its capacity claim and quota in the same transaction as
//! the row, status changes by compare-and-set through the lifecycle table, and an operation in the
//! journal (`operations.rs`) for everything a node must do.

mod manage;
pub mod migration;
pub mod operations;

use std::{collections::HashMap, sync::Arc};

use basalt::{
    ErrorCode, ServiceError,
    context::CallContext,
    ids::{BackupId, GroupId, NodeId, SnapshotId, VolumeId, VolumeTypeId},
    proto::{
        self, AttachStateChange, AttachStatus, ChangeAttachStateRequest, CreateVolumeRequest, DeleteVolumeRequest,
        ExtendVolumeRequest, GroupStatus, ListVolumesRequest, MigrateVolumeRequest, PageInfo, PoolRef,
        ResetVolumeStatusRequest, RetypeVolumeRequest, RevertVolumeRequest, UpdateVolumeRequest, VolumeStatus,
    },
};
use chrono::Utc;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, sea_query::Expr};

use self::{
    migration::{MIGRATING, MigrationOperation, Place},
    operations::{SourceBackup, VolumeOperation},
};
use crate::{
    Core, claims,
    copy_sources::{self, CopySource},
    db::{attachment, backup, db_error, group, json::StringMap, snapshot, volume, volume_type},
    fields, journal,
    lifecycle::{self, BackupAction, SnapshotAction, VolumeAction},
    listing,
    new_rows::NewVolume,
    placement::{self, PlacementRequest, PoolCandidate},
    quotas, status, sweeps, transfers, volume_types,
};

/// The columns Cinder's sort keys name.
const SORT_COLUMNS: listing::SortColumns<volume::Column> = listing::SortColumns {
    created_at: volume::Column::CreatedAt,
    updated_at: Some(volume::Column::UpdatedAt),
    name: volume::Column::Name,
    size: Some(volume::Column::SizeGib),
    status: volume::Column::Status,
    id: volume::Column::Id,
};

/// 1 PiB: far above any real pool, low enough that byte sizes never overflow.
pub const MAX_VOLUME_GIB: u64 = 1 << 20;

pub struct Volumes {
    core: Arc<Core>,
}

impl Volumes {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    pub async fn create(
        &self,
        context: &CallContext,
        request: CreateVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        fields::check_common(&request.name, &request.description, &request.metadata)?;
        fields::check_name("idempotency_key", &request.idempotency_key)?;
        fields::check_name("availability_zone", &request.availability_zone)?;
        let sources = [&request.snapshot_id, &request.source_volume_id, &request.backup_id];
        if sources.iter().filter(|source| !source.is_empty()).count() > 1 {
            return Err(ServiceError::invalid("give one of snapshot_id, source_volume_id and backup_id, not several"));
        }
        // A volume from a backup (3.47, and a restore that names no volume) is a new empty volume
        // the backup is then restored onto.
        let backup = if request.backup_id.is_empty() {
            None
        } else {
            let backup = status::load::<backup::Model>(&self.core.db, context, &request.backup_id).await?;
            status::check(&backup, BackupAction::Restore, "creating a volume from it")?;
            Some(backup)
        };
        if !request.idempotency_key.is_empty()
            && let Some(existing) = self.find_by_idempotency_key(context, &request.idempotency_key).await?
        {
            let wanted_type = match request.volume_type.as_str() {
                "" => None,
                // A type that no longer resolves cannot be the one the volume has.
                wanted => Some(volume_types::resolve(&self.core.db, context, wanted).await.map(|found| found.id).ok()),
            };
            return same_request_or_conflict(existing, &request, wanted_type);
        }

        let db = &self.core.db;
        let source = self.source(context, &request).await?;
        // A copy keeps its source's type unless the request names another, as in Cinder.
        let volume_type = match (request.volume_type.as_str(), source.as_ref().and_then(|source| source.volume_type_id))
        {
            ("", Some(source_type)) => volume_types::resolve(db, context, &source_type.to_string()).await?,
            ("", None) => volume_types::default_type(db, &context.project_id).await?,
            (wanted, _) => volume_types::resolve(db, context, wanted).await?,
        };
        let size_gib = match (&source, &backup, request.size_gib) {
            (None, None, 0) => {
                return Err(ServiceError::invalid(format!("a volume needs a size between 1 and {MAX_VOLUME_GIB} GiB")));
            }
            (Some(source), _, 0) => source.size_gib,
            (None, Some(backup), 0) => backup.size_gib,
            (Some(source), _, size) if (size as i64) < source.size_gib => {
                return Err(ServiceError::invalid(format!(
                    "a volume created from {} must be at least {} GiB, not {size}",
                    source.description, source.size_gib
                )));
            }
            (None, Some(backup), size) if (size as i64) < backup.size_gib => {
                return Err(ServiceError::invalid(format!(
                    "a volume created from backup {} must be at least {} GiB, not {size}",
                    backup.id, backup.size_gib
                )));
            }
            (_, _, size) => size as i64,
        };
        if size_gib as u64 > MAX_VOLUME_GIB {
            return Err(ServiceError::invalid(format!(
                "invalid size {size_gib} GiB: a volume must be between 1 and {MAX_VOLUME_GIB} GiB"
            )));
        }
        let project = &context.project_id;
        quotas::check_volume_size(db, &self.core.config.quota_defaults, project, size_gib).await?;

        let usage = quotas::volume_usage(&volume_type.name, size_gib);
        quotas::precheck(db, &self.core.config.quota_defaults, project, &usage).await?;
        let mut placement_request = volume_types::placement_request(&volume_type, size_gib);
        if !request.availability_zone.is_empty() {
            placement_request.availability_zones = vec![request.availability_zone.clone()];
        }
        let group = match request.group_id.as_str() {
            "" => None,
            group_id => Some(self.group_to_join(context, group_id, volume_type.id).await?),
        };
        let ranked = match (&source, &group) {
            // A copy is made by the node that holds the source, in the source's pool.
            (Some(source), _) => vec![self.source_pool(source)?],
            // A group's volumes are all on the group's pool.
            (None, Some(group)) => {
                vec![self.core.capacity.pool(group.node_id.as_str(), &group.pool).ok_or_else(|| {
                    ServiceError::unavailable(format!(
                        "node {} of group {} is not reporting; retry shortly",
                        group.node_id, group.id
                    ))
                })?]
            }
            (None, None) => claims::place(&self.core, &placement_request, |_| true).await?,
        };
        if let (Some(group), Some(pool)) = (&group, ranked.first())
            && pool.host() != group.host()
        {
            return Err(ServiceError::invalid(format!(
                "a volume of group {} is made on its pool {}; this one's source is on {}",
                group.id,
                group.host(),
                pool.host()
            )));
        }

        let txn = self.core.begin_write().await?;
        if let Some(source) = &source {
            source.lock(&*txn).await?;
        }
        quotas::reserve(&*txn, &self.core.config.quota_defaults, project, &usage).await?;
        let chosen = claims::claim_first(&self.core, &*txn, &ranked, placement_request.thick, size_gib).await?;
        let Some(pool) = chosen else {
            return Err(ServiceError::new(
                ErrorCode::NoCapacity,
                format!("no valid node: every pool that could take a {size_gib} GiB volume is fully booked"),
            ));
        };
        let node_id = NodeId::parse(pool.node_id())?;
        let model = NewVolume {
            context,
            pool: &pool,
            node_id: node_id.clone(),
            volume_type_id: volume_type.id,
            size_gib,
            name: request.name.clone(),
            description: request.description.clone(),
            metadata: StringMap::from(&request.metadata),
            bootable: source.as_ref().is_some_and(|source| source.bootable),
            multiattach: volume_types::allows_multiattach(&placement_request.extra_specs),
            snapshot_id: source.as_ref().and_then(|source| source.snapshot_id),
            source_volume_id: source.as_ref().and_then(|source| source.volume_id),
            idempotency_key: (!request.idempotency_key.is_empty()).then(|| request.idempotency_key.clone()),
            group_id: group.as_ref().map(|group| group.id),
        }
        .insert(&*txn)
        .await?;
        let mut events = vec![status::created(&model)];
        if let Some(backup) = &backup {
            sweeps::exclude(&*txn, &backup.project_id, sweeps::SWEEPING, "restore once it is deleted").await?;
            let (before, restoring) =
                status::transition::<backup::Model>(&*txn, backup.id, BackupAction::Restore, "").await?;
            events.push(status::changed(before, &restoring));
        }
        let operation = VolumeOperation::CreateVolume {
            volume_id: model.id,
            node_id,
            pool: pool.identity.pool.clone(),
            size_gib,
            source_snapshot_id: model.snapshot_id,
            source_volume_id: model.source_volume_id,
            source_backup: backup
                .as_ref()
                .map(|backup| SourceBackup { backup_id: backup.id, project_id: backup.project_id.clone() }),
        };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        tracing::info!(volume_id = %model.id, host = %pool.host(), size_gib, "volume placed");
        self.core.publish(events).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(model)
    }

    async fn find_by_idempotency_key(
        &self,
        context: &CallContext,
        key: &str,
    ) -> Result<Option<volume::Model>, ServiceError> {
        volume::Entity::find()
            .filter(volume::Column::ProjectId.eq(context.project_id.clone()))
            .filter(volume::Column::IdempotencyKey.eq(key))
            .one(&self.core.db)
            .await
            .map_err(db_error)
    }

    /// Resolves and checks the snapshot or volume a new volume copies, if any.
    async fn source(
        &self,
        context: &CallContext,
        request: &CreateVolumeRequest,
    ) -> Result<Option<Source>, ServiceError> {
        if !request.snapshot_id.is_empty() {
            let snapshot = status::load::<snapshot::Model>(&self.core.db, context, &request.snapshot_id).await?;
            status::check(&snapshot, SnapshotAction::VolumeSource, "creating a volume from it")?;
            let source_volume = status::find::<volume::Model>(&self.core.db, snapshot.volume_id).await?;
            return Ok(Some(Source {
                description: format!("snapshot {}", snapshot.id),
                size_gib: snapshot.size_gib,
                node_id: snapshot.node_id.clone(),
                pool: snapshot.pool.clone(),
                snapshot_id: Some(snapshot.id),
                volume_id: None,
                volume_type_id: snapshot.volume_type_id,
                bootable: source_volume.is_some_and(|volume| volume.bootable),
            }));
        }
        if !request.source_volume_id.is_empty() {
            let source = self.get(context, &request.source_volume_id).await?;
            status::check(&source, VolumeAction::CloneSource, "cloning")?;
            let (node_id, pool) = source.placement()?;
            return Ok(Some(Source {
                description: format!("volume {}", source.id),
                size_gib: source.size_gib,
                node_id,
                pool,
                snapshot_id: None,
                volume_id: Some(source.id),
                volume_type_id: source.volume_type_id,
                bootable: source.bootable,
            }));
        }
        Ok(None)
    }

    /// The caller's group a new volume joins: available, and allowing the volume's type.
    async fn group_to_join(
        &self,
        context: &CallContext,
        group_id: &str,
        volume_type: VolumeTypeId,
    ) -> Result<group::Model, ServiceError> {
        let id = GroupId::parse(group_id)?;
        let found = group::Entity::find_by_id(id).one(&self.core.db).await.map_err(db_error)?;
        let group = found
            .filter(|group| context.is_admin || group.project_id == context.project_id)
            .ok_or_else(|| ServiceError::not_found(format!("group {id} not found")))?;
        if group.status != GroupStatus::Available {
            return Err(ServiceError::invalid(format!(
                "group {id} is {}; volumes join an available group",
                group.status.cinder_name()
            )));
        }
        if !group.volume_type_ids.0.contains(&volume_type.to_string()) {
            return Err(ServiceError::invalid(format!(
                "group {id} does not allow the volume's type; give one of its volume_types"
            )));
        }
        Ok(group)
    }

    /// The pool of a copy's source, from its node's latest report.
    fn source_pool(&self, source: &Source) -> Result<PoolCandidate, ServiceError> {
        let node_id = source.node_id.as_str();
        if self.core.capacity.node(node_id).is_none() {
            return Err(ServiceError::unavailable(format!(
                "node {node_id} holding {} has not reported since this scheduler started; retry shortly",
                source.description
            )));
        }
        self.core
            .capacity
            .pool(node_id, &source.pool)
            .ok_or_else(|| ServiceError::unavailable(format!("node {node_id} no longer reports pool {}", source.pool)))
    }

    pub async fn get(&self, context: &CallContext, volume_id: &str) -> Result<volume::Model, ServiceError> {
        status::load(&self.core.db, context, volume_id).await
    }

    /// [`Self::get`], with the volume's type read in the same query.
    pub async fn get_with_type(
        &self,
        context: &CallContext,
        volume_id: &str,
    ) -> Result<(volume::Model, Option<volume_type::Model>), ServiceError> {
        let id = VolumeId::parse(volume_id)?;
        let found = volume::Entity::find_by_id(id)
            .find_also_related(volume_type::Entity)
            .one(&self.core.db)
            .await
            .map_err(db_error)?;
        match found {
            Some((model, volume_type)) if status::visible(context, &model) => Ok((model, volume_type)),
            _ => Err(status::not_found::<volume::Model>(id)),
        }
    }

    pub async fn list(
        &self,
        context: &CallContext,
        request: &ListVolumesRequest,
    ) -> Result<(Vec<volume::Model>, PageInfo), ServiceError> {
        let mut condition =
            listing::project_scope(context, request.all_projects, volume::Column::ProjectId, "volumes")?;
        if !request.name.is_empty() {
            condition = condition.add(volume::Column::Name.eq(request.name.as_str()));
        }
        if !request.name_contains.is_empty() {
            condition = condition.add(listing::contains(volume::Column::Name, &request.name_contains));
        }
        if request.status != VolumeStatus::Unspecified as i32 {
            let status = VolumeStatus::try_from(request.status)
                .map_err(|_| ServiceError::invalid(format!("unknown volume status {}", request.status)))?;
            condition = condition.add(volume::Column::Status.eq(status));
        }
        if !request.availability_zone.is_empty() {
            condition = condition.add(volume::Column::AvailabilityZone.eq(request.availability_zone.as_str()));
        }
        if !request.idempotency_key.is_empty() {
            condition = condition.add(volume::Column::IdempotencyKey.eq(request.idempotency_key.as_str()));
        }
        if let Some(bootable) = request.bootable {
            condition = condition.add(volume::Column::Bootable.eq(bootable));
        }
        if !request.group_id.is_empty() {
            condition = condition.add(volume::Column::GroupId.eq(GroupId::parse(&request.group_id)?));
        }
        if let Some(size_gib) = request.size_gib {
            let size_gib = i64::try_from(size_gib).unwrap_or(i64::MAX);
            condition = condition.add(volume::Column::SizeGib.eq(size_gib));
        }
        let backend = self.core.db.get_database_backend();
        let condition = listing::metadata_holds(condition, backend, "volumes", &request.metadata);
        let keyset = listing::Keyset::<volume::Entity> {
            order: SORT_COLUMNS.order(&request.sort, "volumes")?,
            id: volume::Column::Id,
            id_of: |row| row.id.to_string(),
        };
        keyset.page(&self.core.db, condition, request.page.as_ref(), request.with_count, "volume").await
    }

    pub async fn update(
        &self,
        context: &CallContext,
        request: UpdateVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        let model = self.get(context, &request.volume_id).await?;
        status::check(&model, VolumeAction::Update, "updating")?;
        let metadata = request.metadata.map(|update| update.items);
        fields::check_common(
            request.name.as_deref().unwrap_or_default(),
            request.description.as_deref().unwrap_or_default(),
            metadata.as_ref().unwrap_or(&HashMap::new()),
        )?;
        let mut changes = Vec::new();
        if let Some(name) = request.name {
            changes.push((volume::Column::Name, name.into()));
        }
        if let Some(description) = request.description {
            changes.push((volume::Column::Description, description.into()));
        }
        if let Some(metadata) = metadata {
            changes.push((volume::Column::Metadata, StringMap::from(metadata).into()));
        }
        if let Some(bootable) = request.bootable {
            changes.push((volume::Column::Bootable, bootable.into()));
        }
        if let Some(readonly) = request.readonly {
            changes.push((volume::Column::Readonly, readonly.into()));
        }
        status::update(&self.core.db, &model, VolumeAction::Update, changes).await?;
        self.get(context, &model.id.to_string()).await
    }

    pub async fn extend(
        &self,
        context: &CallContext,
        request: ExtendVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        let model = self.get(context, &request.volume_id).await?;
        let new_size = request.new_size_gib as i64;
        if request.new_size_gib > MAX_VOLUME_GIB {
            return Err(ServiceError::invalid(format!(
                "invalid size {}: a volume can grow to at most {MAX_VOLUME_GIB} GiB",
                request.new_size_gib
            )));
        }
        if new_size <= model.size_gib {
            return Err(ServiceError::invalid(format!(
                "new size {new_size} GiB must be larger than the current {} GiB; volumes only grow",
                model.size_gib
            )));
        }
        let attached = model.status == VolumeStatus::InUse;
        let action = if attached { VolumeAction::ExtendAttached } else { VolumeAction::Extend };
        status::check(&model, action, "extending")?;
        let project = &model.project_id;
        quotas::check_volume_size(&self.core.db, &self.core.config.quota_defaults, project, new_size).await?;
        let delta = new_size - model.size_gib;
        let type_name = volume_types::name_of(&self.core.db, model.volume_type_id).await?;
        let (node_id, pool_name) = model.placement()?;
        let host = model.host();
        let pool = self.core.capacity.pool(node_id.as_str(), &pool_name);

        let txn = self.core.begin_write().await?;
        let (before, model) = status::transition::<volume::Model>(&*txn, model.id, action, "").await?;
        let usage = quotas::extend_usage(&type_name, delta);
        quotas::reserve(&*txn, &self.core.config.quota_defaults, project, &usage).await?;
        let capacity = pool.map(|pool| claims::capacity_gib(&pool, false)).unwrap_or(0);
        if !claims::claim(&*txn, &host, capacity, delta).await? {
            return Err(ServiceError::new(
                ErrorCode::NoCapacity,
                format!("pool {host} cannot take {delta} GiB more; the volume stays at {} GiB", model.size_gib),
            ));
        }
        let operation = VolumeOperation::ExtendVolume {
            volume_id: model.id,
            node_id,
            pool: pool_name,
            old_size_gib: model.size_gib,
            new_size_gib: new_size,
            attached,
        };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        self.core.publish([status::changed(before, &model)]).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(model)
    }

    pub async fn delete(
        &self,
        context: &CallContext,
        request: &DeleteVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        if request.force {
            context.authorize("volume:force_delete")?;
        }
        let model = self.get(context, &request.volume_id).await?;
        if model.status == VolumeStatus::Deleting {
            // A repeated delete of a volume on its way out is not an error.
            return Ok(model);
        }
        let action = if request.force { VolumeAction::ForceDelete } else { VolumeAction::Delete };
        status::check(&model, action, "deleting")?;

        let txn = self.core.begin_write().await?;
        let (before, model) = status::transition::<volume::Model>(&*txn, model.id, action, "").await?;
        // A force delete of a volume on offer withdraws the offer with it.
        transfers::withdraw_offers_of(&*txn, model.id).await?;
        // Counted after the compare-and-set, which locks the row: a snapshot created meanwhile
        // either committed before (and is seen here) or waits and then finds the volume deleting.
        let volume_snapshots = snapshot::Entity::find()
            .filter(snapshot::Column::VolumeId.eq(model.id))
            .all(&*txn)
            .await
            .map_err(db_error)?;
        if !volume_snapshots.is_empty() && !request.cascade {
            return Err(ServiceError::conflict(format!(
                "volume {} has {} snapshots; delete them first, or delete with cascade",
                model.id,
                volume_snapshots.len()
            )));
        }
        copy_sources::refuse_while_copied(&*txn, CopySource::Volume(model.id)).await?;
        for volume_snapshot in &volume_snapshots {
            copy_sources::refuse_while_copied(&*txn, CopySource::Snapshot(volume_snapshot.id)).await?;
        }
        let snapshot_action = if request.force { SnapshotAction::ForceDelete } else { SnapshotAction::Delete };
        let mut events = Vec::new();
        for volume_snapshot in &volume_snapshots {
            let (snapshot_before, deleting) =
                status::transition::<snapshot::Model>(&*txn, volume_snapshot.id, snapshot_action, "").await?;
            events.push(status::changed(snapshot_before, &deleting));
        }
        events.push(status::changed(before, &model));
        let (node_id, pool) = model.placement()?;
        let operation = VolumeOperation::DeleteVolume {
            volume_id: model.id,
            node_id,
            pool,
            snapshot_ids: volume_snapshots.iter().map(|snapshot| snapshot.id).collect(),
        };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        self.core.publish(events).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(model)
    }

    pub async fn reset_status(
        &self,
        context: &CallContext,
        request: ResetVolumeStatusRequest,
    ) -> Result<volume::Model, ServiceError> {
        let target = VolumeStatus::try_from(request.status).unwrap_or_default();
        status::resettable::<volume::Model>(target, lifecycle::VOLUME_RESETTABLE)?;
        let attach_status = AttachStatus::try_from(request.attach_status).unwrap_or_default();
        if attach_status == AttachStatus::Attached || target == VolumeStatus::InUse {
            return Err(ServiceError::invalid("a volume without attachments cannot be reset to attached or in-use"));
        }
        if let Some(name) = &request.migration_status
            && !migration::RESETTABLE.contains(&name.as_str())
        {
            return Err(ServiceError::invalid(format!(
                "unknown migration status {}: use one of {}",
                basalt::error::excerpt(name),
                migration::RESETTABLE.join(", ")
            )));
        }
        let model = self.get(context, &request.volume_id).await?;
        let txn = self.core.begin_write().await?;
        status::reset(&*txn, &model, target, lifecycle::VOLUME_RESETTABLE).await?;
        if attach_status != AttachStatus::Unspecified {
            volume::Entity::update_many()
                .col_expr(volume::Column::AttachStatus, Expr::value(attach_status))
                .filter(volume::Column::Id.eq(model.id))
                .exec(&*txn)
                .await
                .map_err(db_error)?;
        }
        // `none` clears it, as in Cinder.
        if let Some(migration_status) = &request.migration_status {
            let value = Some(migration_status.as_str()).filter(|name| *name != "none");
            migration::set_status(&*txn, model.id, value).await?;
        }
        txn.commit().await?;
        tracing::warn!(volume_id = %model.id, from = model.status.cinder_name(), to = target.cinder_name(), "volume status reset by an admin");
        self.core.publish([status::event(&model, target.cinder_name(), "reset by an admin")]).await;
        self.get(context, &model.id.to_string()).await
    }

    pub async fn revert(
        &self,
        context: &CallContext,
        request: RevertVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        let model = self.get(context, &request.volume_id).await?;
        let snapshot_id = SnapshotId::parse(&request.snapshot_id)?;
        let latest = snapshot::Entity::find()
            .filter(snapshot::Column::VolumeId.eq(model.id))
            .order_by_desc(snapshot::Column::CreatedAt)
            .order_by_desc(snapshot::Column::Id)
            .one(&self.core.db)
            .await
            .map_err(db_error)?;
        match latest {
            Some(latest) if latest.id == snapshot_id => {}
            Some(latest) => {
                return Err(ServiceError::invalid(format!(
                    "a volume can only be reverted to its latest snapshot, which is {}, not {snapshot_id}",
                    latest.id
                )));
            }
            None => {
                return Err(ServiceError::not_found(format!(
                    "snapshot {snapshot_id} of volume {} not found",
                    model.id
                )));
            }
        }
        status::check(&model, VolumeAction::Revert, "reverting")?;
        let txn = self.core.begin_write().await?;
        let (before, model) = status::transition::<volume::Model>(&*txn, model.id, VolumeAction::Revert, "").await?;
        let (snapshot_before, snapshot) =
            status::transition::<snapshot::Model>(&*txn, snapshot_id, SnapshotAction::Revert, "").await?;
        let (node_id, pool) = model.placement()?;
        let operation = VolumeOperation::RevertVolume { volume_id: model.id, snapshot_id: snapshot.id, node_id, pool };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        self.core.publish([status::changed(before, &model), status::changed(snapshot_before, &snapshot)]).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(model)
    }

    /// The legacy attach-state actions, by compare-and-set through the lifecycle table.
    pub async fn change_attach_state(
        &self,
        context: &CallContext,
        request: ChangeAttachStateRequest,
    ) -> Result<volume::Model, ServiceError> {
        let (action, doing, attach_status) = match AttachStateChange::try_from(request.change).unwrap_or_default() {
            AttachStateChange::Reserve => (VolumeAction::LegacyReserve, "reserving", AttachStatus::Attaching),
            AttachStateChange::Unreserve => (VolumeAction::LegacyUnreserve, "unreserving", AttachStatus::Detached),
            AttachStateChange::BeginDetaching => (VolumeAction::BeginDetaching, "detaching", AttachStatus::Detaching),
            AttachStateChange::RollDetaching => {
                (VolumeAction::RollDetaching, "rolling back a detach", AttachStatus::Attached)
            }
            AttachStateChange::Unspecified => {
                return Err(ServiceError::invalid(
                    "change must be reserve, unreserve, begin_detaching or roll_detaching",
                ));
            }
        };
        let model = self.get(context, &request.volume_id).await?;
        status::check(&model, action, doing)?;
        let txn = self.core.begin_write().await?;
        let (before, after) = status::transition::<volume::Model>(&*txn, model.id, action, "").await?;
        volume::set_attach_status(&*txn, model.id, attach_status).await?;
        txn.commit().await?;
        self.core.publish([status::changed(before, &after)]).await;
        self.get(context, &model.id.to_string()).await
    }

    /// Gives the volume a new type: at once when its pool already satisfies it; with
    /// `migration_policy: on-demand` by moving it to a node whose pool does (`migration.rs`).
    pub async fn retype(
        &self,
        context: &CallContext,
        request: RetypeVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        let policy = match request.migration_policy.as_str() {
            "" | "never" => "never",
            "on-demand" => "on-demand",
            other => {
                return Err(ServiceError::invalid(format!(
                    "migration_policy must be never or on-demand, not {other:?}"
                )));
            }
        };
        let model = self.get(context, &request.volume_id).await?;
        status::check(&model, VolumeAction::Retype, "retyping")?;
        if let Some(group_id) = model.group_id {
            // A group allows only its volume types.
            return Err(ServiceError::invalid(format!(
                "volume {} is in group {group_id}; remove it from the group before retyping it",
                model.id
            )));
        }
        let db = &self.core.db;
        let new_type = volume_types::resolve(db, context, &request.new_type).await?;
        if model.volume_type_id == Some(new_type.id) {
            return Err(ServiceError::invalid(format!("volume {} is already of type {}", model.id, new_type.name)));
        }
        let (node_id, pool_name) = model.placement()?;
        let pool = self.core.capacity.pool(node_id.as_str(), &pool_name).ok_or_else(|| {
            ServiceError::unavailable(format!("node {node_id} holding the volume is not reporting; retry shortly"))
        })?;
        if !placement::filters::satisfies(&pool, &volume_types::placement_request(&new_type, model.size_gib)) {
            let reason = format!("pool {} does not satisfy volume type {}", pool.host(), new_type.name);
            if policy != "on-demand" {
                return Err(ServiceError::invalid(format!(
                    "{reason}; with migration_policy never the volume must stay where it is"
                )));
            }
            return self.migrate(context, model, new_type, &reason).await;
        }
        let old_type = volume_types::name_of(db, model.volume_type_id).await?;
        let txn = self.core.begin_write().await?;
        // The new type's per-type quotas take the volume; the old type's give it back.
        let project = &model.project_id;
        let new_usage = quotas::volume_type_usage(&new_type.name, model.size_gib);
        quotas::reserve(&*txn, &self.core.config.quota_defaults, project, &new_usage).await?;
        quotas::release(&*txn, project, &quotas::volume_type_usage(&old_type, model.size_gib)).await?;
        let updated = volume::Entity::update_many()
            .col_expr(volume::Column::VolumeTypeId, Expr::value(new_type.id))
            .col_expr(volume::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(volume::Column::Id.eq(model.id))
            .filter(status::condition::<volume::Model>(lifecycle::volume(VolumeAction::Retype).from))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        if updated.rows_affected == 0 {
            return Err(ServiceError::conflict(format!(
                "volume {} changed status meanwhile; retry the retype",
                model.id
            )));
        }
        txn.commit().await?;
        tracing::info!(volume_id = %model.id, from = %old_type, to = %new_type.name, "volume retyped");
        self.get(context, &model.id.to_string()).await
    }
}

impl Volumes {
    /// Records the move of a detached volume to the best node whose pool satisfies `new_type`.
    async fn migrate(
        &self,
        context: &CallContext,
        model: volume::Model,
        new_type: crate::db::volume_type::Model,
        why: &str,
    ) -> Result<volume::Model, ServiceError> {
        check_movable(&model, why, &self.core.db).await?;
        let (from_node, _) = model.placement()?;
        let request = volume_types::placement_request(&new_type, model.size_gib);
        let ranked = claims::place(&self.core, &request, |candidate| candidate.node_id() != from_node.as_str())
            .await
            .map_err(|error| {
            ServiceError::new(error.code, format!("{why}, and no other node can take it: {}", error.message))
        })?;
        self.start_move(context, model, ranked, request.thick, Some(new_type), why).await
    }

    /// An admin's migration (Cinder's `os-migrate_volume`): the detached volume, its type kept,
    /// to the pool `host` names, which must be another node's and satisfy the type.
    pub async fn migrate_to_host(
        &self,
        context: &CallContext,
        request: MigrateVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        let model = self.get(context, &request.volume_id).await?;
        let why = format!("moving volume {} to {}", model.id, basalt::error::excerpt(&request.host));
        let pool = claims::candidates(&self.core)
            .await?
            .into_iter()
            .find(|candidate| candidate.host() == request.host)
            .ok_or_else(|| {
                ServiceError::invalid(format!(
                    "no reporting pool is named {}: give one as the pools listing names it (node@backend#pool)",
                    basalt::error::excerpt(&request.host)
                ))
            })?;
        let (from_node, _) = model.placement()?;
        if pool.node_id() == from_node.as_str() {
            return Err(ServiceError::invalid(format!(
                "volume {} is on node {from_node} already; a volume moves between nodes",
                model.id
            )));
        }
        check_movable(&model, &why, &self.core.db).await?;
        let volume_type = match model.volume_type_id {
            Some(type_id) => Some(volume_types::resolve(&self.core.db, context, &type_id.to_string()).await?),
            None => None,
        };
        let (placement, type_name) = match &volume_type {
            Some(volume_type) => {
                (volume_types::placement_request(volume_type, model.size_gib), volume_type.name.clone())
            }
            None => (PlacementRequest { size_gib: model.size_gib as f64, ..Default::default() }, String::new()),
        };
        if !placement::filters::satisfies(&pool, &placement) {
            return Err(ServiceError::invalid(format!(
                "pool {} does not satisfy volume type {type_name}; retype the volume instead",
                pool.host()
            )));
        }
        // The type stays: only the node changes.
        self.start_move(context, model, vec![pool], placement.thick, None, &why).await
    }

    /// Takes the first of `ranked` with room, the new type's quotas when it changes, the volume's
    /// moving status, and records the move.
    async fn start_move(
        &self,
        context: &CallContext,
        model: volume::Model,
        ranked: Vec<PoolCandidate>,
        thick: bool,
        new_type: Option<crate::db::volume_type::Model>,
        why: &str,
    ) -> Result<volume::Model, ServiceError> {
        let (from_node, from_pool) = model.placement()?;
        let new_type_id = new_type.as_ref().map_or(model.volume_type_id, |new_type| Some(new_type.id));
        let txn = self.core.begin_write().await?;
        if let Some(new_type) = &new_type {
            let usage = quotas::volume_type_usage(&new_type.name, model.size_gib);
            quotas::reserve(&*txn, &self.core.config.quota_defaults, &model.project_id, &usage).await?;
        }
        let chosen = claims::claim_first(&self.core, &*txn, &ranked, thick, model.size_gib).await?;
        let Some(to) = chosen else {
            return Err(ServiceError::new(
                ErrorCode::NoCapacity,
                format!("{why}: every pool that could take it is fully booked"),
            ));
        };
        let action = if new_type.is_some() { VolumeAction::RetypeMigrate } else { VolumeAction::Migrate };
        let (before, moving) = status::transition::<volume::Model>(&*txn, model.id, action, "").await?;
        migration::set_status(&*txn, model.id, Some(MIGRATING)).await?;
        let operation = MigrationOperation::MigrateVolume {
            volume_id: model.id,
            project_id: model.project_id.clone(),
            size_gib: model.size_gib,
            from: Box::new(Place {
                node_id: from_node,
                backend: model.backend.clone().unwrap_or_default(),
                pool: from_pool,
                availability_zone: model.availability_zone.clone(),
            }),
            to: Box::new(Place {
                node_id: NodeId::parse(to.node_id())?,
                backend: to.identity.backend.clone(),
                pool: to.identity.pool.clone(),
                availability_zone: to.identity.availability_zone.clone(),
            }),
            transit_backup_id: BackupId::new_random(),
            old_type_id: model.volume_type_id,
            new_type_id,
        };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        tracing::info!(volume_id = %model.id, destination = %to.host(), "volume moving to another node");
        self.core.publish([status::changed(before, &moving)]).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(moving)
    }
}

/// A volume moves only detached (nothing may write it while it is copied) and without snapshots
/// (they stay on its node).
async fn check_movable(model: &volume::Model, why: &str, db: &impl ConnectionTrait) -> Result<(), ServiceError> {
    if model.status != VolumeStatus::Available {
        return Err(ServiceError::invalid(format!(
            "{why}, and volume {} is {}: a volume moves to another node only while detached (available), so nothing writes it while it is copied",
            model.id,
            model.status.cinder_name()
        )));
    }
    let snapshots =
        snapshot::Entity::find().filter(snapshot::Column::VolumeId.eq(model.id)).count(db).await.map_err(db_error)?;
    if snapshots > 0 {
        return Err(ServiceError::invalid(format!(
            "{why}, and volume {} has {snapshots} snapshots, which stay with it on its node; delete them to move it",
            model.id
        )));
    }
    Ok(())
}

/// What a new volume copies.
struct Source {
    description: String,
    size_gib: i64,
    node_id: NodeId,
    pool: String,
    snapshot_id: Option<SnapshotId>,
    volume_id: Option<VolumeId>,
    volume_type_id: Option<VolumeTypeId>,
    bootable: bool,
}

impl Source {
    /// Holds the source row in a status it may be copied from until the commit: a concurrent
    /// delete of it waits for us.
    async fn lock(&self, txn: &impl ConnectionTrait) -> Result<(), ServiceError> {
        let doing = format!("creating a volume from {}", self.description);
        if let Some(snapshot_id) = self.snapshot_id {
            let allowed = lifecycle::snapshot(SnapshotAction::VolumeSource).from;
            status::lock::<snapshot::Model>(txn, snapshot_id, allowed, &doing).await?;
        } else if let Some(volume_id) = self.volume_id {
            let allowed = lifecycle::volume(VolumeAction::CloneSource).from;
            status::lock::<volume::Model>(txn, volume_id, allowed, &doing).await?;
        }
        Ok(())
    }
}

status::stateful! {
    volume: kind crate::events::VOLUME, id VolumeId, status VolumeStatus, action VolumeAction, rule lifecycle::volume,
    reason Some(volume::Column::ErrorReason), updated_at Some(volume::Column::UpdatedAt);
    /// The quota and the pool's space it held; a forced delete may take a reserved volume, whose
    /// attachments go with it.
    async fn release(&self, txn: &impl ConnectionTrait) -> Result<(), ServiceError> {
        let type_name = volume_types::name_of(txn, self.volume_type_id).await?;
        quotas::release(txn, &self.project_id, &quotas::volume_usage(&type_name, self.size_gib)).await?;
        claims::release(txn, &self.host(), self.size_gib).await?;
        attachment::Entity::delete_many()
            .filter(attachment::Column::VolumeId.eq(self.id))
            .exec(txn)
            .await
            .map_err(db_error)
            .map(drop)
    }
}

/// The volume an idempotency key already names, when the repeat asks for the same thing: the same
/// name, size (0: any), source, and, where the repeat names them, volume type and availability
/// zone. `wanted_type` is what the request's type resolves to (`Some(None)`: to none).
fn same_request_or_conflict(
    existing: volume::Model,
    request: &CreateVolumeRequest,
    wanted_type: Option<Option<VolumeTypeId>>,
) -> Result<volume::Model, ServiceError> {
    let same_size = request.size_gib == 0 || existing.size_gib as u64 == request.size_gib;
    let shown = |id: Option<String>| id.unwrap_or_default();
    let same_source = shown(existing.snapshot_id.map(|id| id.to_string())) == request.snapshot_id
        && shown(existing.source_volume_id.map(|id| id.to_string())) == request.source_volume_id;
    let same_type = wanted_type.is_none_or(|wanted| wanted.is_some() && wanted == existing.volume_type_id);
    let same_zone = request.availability_zone.is_empty() || request.availability_zone == existing.availability_zone;
    if same_size && same_source && same_type && same_zone && existing.name == request.name {
        return Ok(existing);
    }
    Err(ServiceError::new(
        ErrorCode::AlreadyExists,
        format!(
            "idempotency key {:?} already names volume {} ({} GiB, name {:?}, zone {}); repeat the original arguments or use a new key",
            request.idempotency_key, existing.id, existing.size_gib, existing.name, existing.availability_zone
        ),
    ))
}

pub fn to_proto(
    model: &volume::Model,
    type_names: &HashMap<VolumeTypeId, String>,
    attachments: &HashMap<VolumeId, Vec<proto::VolumeAttachment>>,
) -> proto::Volume {
    let pool = model.node_id.as_ref().map(|node_id| PoolRef {
        node_id: node_id.to_string(),
        backend: model.backend.clone().unwrap_or_default(),
        pool: model.pool.clone().unwrap_or_default(),
    });
    proto::Volume {
        id: model.id.to_string(),
        project_id: model.project_id.to_string(),
        user_id: model.user_id.clone(),
        name: model.name.clone(),
        description: model.description.clone(),
        size_gib: model.size_gib as u64,
        status: model.status as i32,
        attach_status: model.attach_status as i32,
        availability_zone: model.availability_zone.clone(),
        volume_type_name: model.volume_type_id.and_then(|id| type_names.get(&id).cloned()).unwrap_or_default(),
        volume_type_id: model.volume_type_id.map(|id| id.to_string()).unwrap_or_default(),
        pool,
        snapshot_id: model.snapshot_id.map(|id| id.to_string()).unwrap_or_default(),
        source_volume_id: model.source_volume_id.map(|id| id.to_string()).unwrap_or_default(),
        metadata: model.metadata.to_hash_map(),
        bootable: model.bootable,
        readonly: model.readonly,
        multiattach: model.multiattach,
        attachments: attachments.get(&model.id).cloned().unwrap_or_default(),
        error_reason: model.error_reason.clone(),
        consumes_quota: true,
        created_at: Some(std::time::SystemTime::from(model.created_at).into()),
        updated_at: Some(std::time::SystemTime::from(model.updated_at).into()),
        idempotency_key: model.idempotency_key.clone().unwrap_or_default(),
        group_id: model.group_id.map(|id| id.to_string()).unwrap_or_default(),
        migration_status: model.migration_status.clone().unwrap_or_default(),
        ..Default::default()
    }
}
