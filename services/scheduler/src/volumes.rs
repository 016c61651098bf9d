//! Volume operations: validation, placement with its capacity claim and quota in the same
//! transaction as the row, status changes by compare-and-set through the lifecycle table, and an
//! operation in the journal for everything a node must do.

use std::{collections::HashMap, sync::Arc, time::Instant};

use basalt::{
    ErrorCode, ServiceError,
    context::CallContext,
    ids::{SnapshotId, VolumeId},
    proto::{
        self, AttachStateChange, ChangeAttachStateRequest, CreateVolumeRequest, DeleteVolumeRequest,
        ExtendVolumeRequest, ListVolumesRequest, PageInfo, PoolRef, ResetVolumeStatusRequest, RetypeVolumeRequest,
        RevertVolumeRequest, SnapshotStatus, UpdateVolumeRequest, VolumeStatus,
    },
};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    sea_query::Expr,
};

use crate::{
    Core, backups, claims,
    db::{attachment, db_error, snapshot, volume, volume_type},
    events, fields,
    journal::{self, Operation, PendingEvent, SourceBackup},
    lifecycle::{self, BackupAction, SnapshotAction, VolumeAction},
    listing,
    placement::{self, PlacementRequest, PoolCandidate},
    quotas, snapshots, string_map, types,
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
        // A volume from a backup (3.47) is a new empty volume the backup is then restored onto.
        let backup = if request.backup_id.is_empty() {
            None
        } else {
            let backup = backups::load(&self.core.db, context, &request.backup_id).await?;
            if backup.status != proto::BackupStatus::Available.cinder_name() {
                return Err(ServiceError::conflict(format!(
                    "backup {} is {}; a volume can be created only from an available backup",
                    backup.id, backup.status
                )));
            }
            Some(backup)
        };
        if !request.idempotency_key.is_empty()
            && let Some(existing) = self.find_by_idempotency_key(context, &request.idempotency_key).await?
        {
            let wanted_type = match request.volume_type.as_str() {
                "" => None,
                // A type that no longer resolves cannot be the one the volume has.
                wanted => Some(types::resolve(&self.core.db, context, wanted).await.map(|found| found.id).ok()),
            };
            return same_request_or_conflict(existing, &request, wanted_type);
        }

        let db = &self.core.db;
        let source = self.source(context, &request).await?;
        // A copy keeps its source's type unless the request names another, as in Cinder.
        let volume_type =
            match (request.volume_type.as_str(), source.as_ref().and_then(|source| source.volume_type_id.as_deref())) {
                ("", Some(source_type)) => types::resolve(db, context, source_type).await?,
                ("", None) => types::default_type(db).await?,
                (wanted, _) => types::resolve(db, context, wanted).await?,
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
        quotas::check_volume_size(db, &self.core.config.quota_defaults, context.project_id.as_str(), size_gib).await?;

        let usage = quotas::volume_usage(&volume_type.name, size_gib);
        quotas::precheck(db, &self.core.config.quota_defaults, context.project_id.as_str(), &usage).await?;
        let specs = types::extra_specs(&volume_type);
        let placement_request = PlacementRequest {
            size_gib: size_gib as f64,
            availability_zones: match request.availability_zone.as_str() {
                "" => types::zones(&specs),
                zone => vec![zone.to_owned()],
            },
            thick: types::wants_thick(&specs),
            extra_specs: specs,
        };
        let ranked = match &source {
            // A copy is made by the node that holds the source, in the source's pool.
            Some(source) => vec![self.source_pool(source)?],
            None => {
                let candidates = self.candidates().await?;
                placement::rank(&candidates, &placement_request, &self.core.config.weighers)?
            }
        };

        let txn = self.core.begin_write().await?;
        if let Some(source) = &source {
            source.lock(&*txn).await?;
        }
        quotas::reserve(
            &*txn,
            &self.core.config.quota_defaults,
            context.project_id.as_str(),
            &quotas::volume_usage(&volume_type.name, size_gib),
        )
        .await?;
        let mut chosen = None;
        for pool in &ranked {
            let capacity = claims::capacity_gib(pool, placement_request.thick);
            if claims::claim(&*txn, &pool.host(), capacity, size_gib).await? {
                chosen = Some(pool.clone());
                break;
            }
        }
        let Some(pool) = chosen else {
            return Err(ServiceError::new(
                ErrorCode::NoCapacity,
                format!("no valid node: every pool that could take a {size_gib} GiB volume is fully booked"),
            ));
        };
        let now = Utc::now();
        let model = volume::ActiveModel {
            id: Set(VolumeId::new_random().to_string()),
            project_id: Set(context.project_id.to_string()),
            user_id: Set(context.user_id.clone()),
            name: Set(request.name.clone()),
            description: Set(request.description.clone()),
            size_gib: Set(size_gib),
            status: Set(VolumeStatus::Creating.cinder_name().into()),
            attach_status: Set(proto::AttachStatus::Detached.cinder_name().into()),
            availability_zone: Set(pool.availability_zone.clone()),
            volume_type_id: Set(Some(volume_type.id.clone())),
            node_id: Set(Some(pool.node_id.clone())),
            backend: Set(Some(pool.backend.clone())),
            pool: Set(Some(pool.pool.clone())),
            snapshot_id: Set(source.as_ref().and_then(|source| source.snapshot_id.clone())),
            source_volume_id: Set(source.as_ref().and_then(|source| source.volume_id.clone())),
            metadata: Set(string_map::to_json(&request.metadata)),
            bootable: Set(source.as_ref().is_some_and(|source| source.bootable)),
            readonly: Set(false),
            multiattach: Set(types::allows_multiattach(&placement_request.extra_specs)),
            error_reason: Set(String::new()),
            idempotency_key: Set((!request.idempotency_key.is_empty()).then(|| request.idempotency_key.clone())),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&*txn)
        .await
        .map_err(|error| {
            if matches!(error.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) {
                ServiceError::new(
                    ErrorCode::AlreadyExists,
                    "a volume with this idempotency key was created concurrently; retry to get it",
                )
            } else {
                db_error(error)
            }
        })?;
        let restoring = match &backup {
            Some(backup) => {
                backups::exclude(&*txn, &backup.project_id, backups::SWEEPING, "restore once it is deleted").await?;
                Some(backups::transition(&*txn, &backup.id, BackupAction::Restore, "").await?)
            }
            None => None,
        };
        let operation = Operation::CreateVolume {
            volume_id: model.id.clone(),
            node_id: pool.node_id.clone(),
            pool: pool.pool.clone(),
            size_gib,
            source_snapshot_id: model.snapshot_id.clone(),
            source_volume_id: model.source_volume_id.clone(),
            source_backup: backup
                .as_ref()
                .map(|backup| SourceBackup { backup_id: backup.id.clone(), project_id: backup.project_id.clone() }),
        };
        let record = journal::record(&*txn, &self.core, &operation).await?;
        txn.commit().await?;
        tracing::info!(volume_id = %model.id, host = %pool.host(), size_gib, "volume placed");
        self.core.publish_status(events::VOLUME, &model.id, &model.project_id, "", &model.status, "").await;
        if let Some((before, after)) = restoring {
            self.core.publish_status(events::BACKUP, &after.id, &after.project_id, &before, &after.status, "").await;
        }
        journal::launch(self.core.clone(), record);
        Ok(model)
    }

    async fn find_by_idempotency_key(
        &self,
        context: &CallContext,
        key: &str,
    ) -> Result<Option<volume::Model>, ServiceError> {
        volume::Entity::find()
            .filter(volume::Column::ProjectId.eq(context.project_id.as_str()))
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
            let snapshot = snapshots::load(&self.core.db, context, &request.snapshot_id).await?;
            let allowed = lifecycle::snapshot(SnapshotAction::VolumeSource).from;
            let status = SnapshotStatus::from_cinder_name(&snapshot.status).unwrap_or_default();
            if !allowed.contains(&status) {
                return Err(ServiceError::conflict(format!(
                    "snapshot {} is {}; a volume can be created from it only when it is {}",
                    snapshot.id,
                    snapshot.status,
                    lifecycle::snapshot_names(allowed)
                )));
            }
            let source_volume =
                volume::Entity::find_by_id(snapshot.volume_id.clone()).one(&self.core.db).await.map_err(db_error)?;
            return Ok(Some(Source {
                description: format!("snapshot {}", snapshot.id),
                size_gib: snapshot.size_gib,
                node_id: snapshot.node_id.clone(),
                pool: snapshot.pool.clone(),
                snapshot_id: Some(snapshot.id.clone()),
                volume_id: None,
                volume_type_id: snapshot.volume_type_id.clone(),
                bootable: source_volume.is_some_and(|volume| volume.bootable),
            }));
        }
        if !request.source_volume_id.is_empty() {
            let source = self.get(context, &request.source_volume_id).await?;
            check_action(&source, VolumeAction::CloneSource, "cloning")?;
            let (node_id, pool) = placement_of(&source);
            return Ok(Some(Source {
                description: format!("volume {}", source.id),
                size_gib: source.size_gib,
                node_id,
                pool,
                snapshot_id: None,
                volume_id: Some(source.id.clone()),
                volume_type_id: source.volume_type_id.clone(),
                bootable: source.bootable,
            }));
        }
        Ok(None)
    }

    /// The pool of a copy's source, from its node's latest report.
    fn source_pool(&self, source: &Source) -> Result<PoolCandidate, ServiceError> {
        if self.core.capacity.node(&source.node_id).is_none() {
            return Err(ServiceError::unavailable(format!(
                "node {} holding {} has not reported since this scheduler started; retry shortly",
                source.node_id, source.description
            )));
        }
        self.core.capacity.pool(&source.node_id, &source.pool).ok_or_else(|| {
            ServiceError::unavailable(format!("node {} no longer reports pool {}", source.node_id, source.pool))
        })
    }

    /// Every pool of every fresh report, with what the database has booked on it.
    async fn candidates(&self) -> Result<Vec<PoolCandidate>, ServiceError> {
        let booked = claims::claimed(&self.core.db).await?;
        let now = Instant::now();
        let mut candidates = Vec::new();
        for node in self.core.capacity.nodes().into_iter().filter(|node| node.is_fresh(now)) {
            for pool in &node.report.pools {
                let candidate = PoolCandidate::from_report(&node.report.node_id, &node.report.availability_zone, pool);
                let booked_gib = booked.get(&candidate.host()).copied().unwrap_or(0) as f64;
                candidates.push(candidate.with_booked(booked_gib));
            }
        }
        Ok(candidates)
    }

    pub async fn get(&self, context: &CallContext, volume_id: &str) -> Result<volume::Model, ServiceError> {
        load(&self.core.db, context, volume_id).await
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
            condition = condition.add(volume::Column::Status.eq(status.cinder_name()));
        }
        if !request.availability_zone.is_empty() {
            condition = condition.add(volume::Column::AvailabilityZone.eq(request.availability_zone.as_str()));
        }
        if !request.idempotency_key.is_empty() {
            condition = condition.add(volume::Column::IdempotencyKey.eq(request.idempotency_key.as_str()));
        }
        let db = &self.core.db;
        let mut rows = volume::Entity::find().filter(condition.clone()).all(db).await.map_err(db_error)?;
        listing::retain_metadata(&mut rows, &request.metadata, |row| &row.metadata);
        listing::page(rows, &request.sort, request.page.as_ref(), request.with_count, "volume")
    }

    pub async fn update(
        &self,
        context: &CallContext,
        request: UpdateVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        let model = self.get(context, &request.volume_id).await?;
        check_action(&model, VolumeAction::Update, "updating")?;
        let metadata = request.metadata.map(|update| update.items);
        fields::check_common(
            request.name.as_deref().unwrap_or_default(),
            request.description.as_deref().unwrap_or_default(),
            metadata.as_ref().unwrap_or(&HashMap::new()),
        )?;
        let mut update = volume::Entity::update_many()
            .col_expr(volume::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(volume::Column::Id.eq(model.id.as_str()))
            .filter(statuses_condition(lifecycle::volume(VolumeAction::Update).from));
        if let Some(name) = request.name {
            update = update.col_expr(volume::Column::Name, Expr::value(name));
        }
        if let Some(description) = request.description {
            update = update.col_expr(volume::Column::Description, Expr::value(description));
        }
        if let Some(metadata) = metadata {
            update = update.col_expr(volume::Column::Metadata, Expr::value(string_map::to_json(&metadata)));
        }
        if let Some(bootable) = request.bootable {
            update = update.col_expr(volume::Column::Bootable, Expr::value(bootable));
        }
        if let Some(readonly) = request.readonly {
            update = update.col_expr(volume::Column::Readonly, Expr::value(readonly));
        }
        let updated = update.exec(&self.core.db).await.map_err(db_error)?;
        if updated.rows_affected == 0 {
            return Err(ServiceError::conflict(format!(
                "volume {} changed status meanwhile; it can no longer be updated",
                model.id
            )));
        }
        self.get(context, &model.id).await
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
        let attached = model.status == VolumeStatus::InUse.cinder_name();
        let action = if attached { VolumeAction::ExtendAttached } else { VolumeAction::Extend };
        check_action(&model, action, "extending")?;
        quotas::check_volume_size(&self.core.db, &self.core.config.quota_defaults, &model.project_id, new_size).await?;
        let delta = new_size - model.size_gib;
        let type_name = self.type_name(&model).await?;
        let (node_id, pool_name) = placement_of(&model);
        let host = host_of(&model);
        let pool = self.core.capacity.pool(&node_id, &pool_name);

        let txn = self.core.begin_write().await?;
        let (before, model) = transition(&*txn, &model.id, action, "").await?;
        quotas::reserve(
            &*txn,
            &self.core.config.quota_defaults,
            &model.project_id,
            &quotas::extend_usage(&type_name, delta),
        )
        .await?;
        let capacity = pool.map(|pool| claims::capacity_gib(&pool, false)).unwrap_or(0);
        if !claims::claim(&*txn, &host, capacity, delta).await? {
            return Err(ServiceError::new(
                ErrorCode::NoCapacity,
                format!("pool {host} cannot take {delta} GiB more; the volume stays at {} GiB", model.size_gib),
            ));
        }
        let operation = Operation::ExtendVolume {
            volume_id: model.id.clone(),
            node_id,
            pool: pool_name,
            old_size_gib: model.size_gib,
            new_size_gib: new_size,
            attached,
        };
        let record = journal::record(&*txn, &self.core, &operation).await?;
        txn.commit().await?;
        self.core.publish_status(events::VOLUME, &model.id, &model.project_id, &before, &model.status, "").await;
        journal::launch(self.core.clone(), record);
        Ok(model)
    }

    pub async fn delete(
        &self,
        context: &CallContext,
        request: &DeleteVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        if request.force {
            context.require_admin("force delete")?;
        }
        let model = self.get(context, &request.volume_id).await?;
        if model.status == VolumeStatus::Deleting.cinder_name() {
            // A repeated delete of a volume on its way out is not an error.
            return Ok(model);
        }
        let action = if request.force { VolumeAction::ForceDelete } else { VolumeAction::Delete };
        check_action(&model, action, "deleting")?;

        let txn = self.core.begin_write().await?;
        let (before, model) = transition(&*txn, &model.id, action, "").await?;
        // Counted after the compare-and-set, which locks the row: a snapshot created meanwhile
        // either committed before (and is seen here) or waits and then finds the volume deleting.
        let volume_snapshots = snapshot::Entity::find()
            .filter(snapshot::Column::VolumeId.eq(model.id.as_str()))
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
        let snapshot_action = if request.force { SnapshotAction::ForceDelete } else { SnapshotAction::Delete };
        let mut cascaded = Vec::new();
        for volume_snapshot in &volume_snapshots {
            let (snapshot_before, deleting) =
                snapshots::transition(&*txn, &volume_snapshot.id, snapshot_action, "").await?;
            cascaded.push((snapshot_before, deleting));
        }
        let (node_id, pool) = placement_of(&model);
        let operation = Operation::DeleteVolume {
            volume_id: model.id.clone(),
            node_id,
            pool,
            snapshot_ids: volume_snapshots.iter().map(|snapshot| snapshot.id.clone()).collect(),
        };
        let record = journal::record(&*txn, &self.core, &operation).await?;
        txn.commit().await?;
        for (snapshot_before, deleting) in cascaded {
            self.core
                .publish_status(
                    events::SNAPSHOT,
                    &deleting.id,
                    &deleting.project_id,
                    &snapshot_before,
                    &deleting.status,
                    "",
                )
                .await;
        }
        self.core.publish_status(events::VOLUME, &model.id, &model.project_id, &before, &model.status, "").await;
        journal::launch(self.core.clone(), record);
        Ok(model)
    }

    pub async fn reset_status(
        &self,
        context: &CallContext,
        request: ResetVolumeStatusRequest,
    ) -> Result<volume::Model, ServiceError> {
        context.require_admin("resetting a volume's status")?;
        let target = VolumeStatus::try_from(request.status).unwrap_or_default();
        if !lifecycle::VOLUME_RESETTABLE.contains(&target) {
            return Err(ServiceError::invalid(format!(
                "a volume can be reset to {} only",
                lifecycle::volume_names(lifecycle::VOLUME_RESETTABLE)
            )));
        }
        let attach_status = proto::AttachStatus::try_from(request.attach_status).unwrap_or_default();
        if attach_status == proto::AttachStatus::Attached || target == VolumeStatus::InUse {
            return Err(ServiceError::invalid("a volume without attachments cannot be reset to attached or in-use"));
        }
        let model = self.get(context, &request.volume_id).await?;
        let txn = self.core.begin_write().await?;
        if journal::in_flight(&*txn, &model.id).await? {
            return Err(ServiceError::conflict(format!(
                "volume {} is {} with an operation in flight; wait for it to finish rather than reset it",
                model.id, model.status
            )));
        }
        let mut update = volume::Entity::update_many()
            .col_expr(volume::Column::Status, Expr::value(target.cinder_name()))
            .col_expr(volume::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(volume::Column::Id.eq(model.id.as_str()))
            .filter(volume::Column::Status.eq(model.status.as_str()));
        if attach_status != proto::AttachStatus::Unspecified {
            update = update.col_expr(volume::Column::AttachStatus, Expr::value(attach_status.cinder_name()));
        }
        if update.exec(&*txn).await.map_err(db_error)?.rows_affected == 0 {
            return Err(ServiceError::conflict(format!(
                "volume {} changed status meanwhile; look again and retry",
                model.id
            )));
        }
        txn.commit().await?;
        tracing::warn!(volume_id = %model.id, from = %model.status, to = target.cinder_name(), "volume status reset by an admin");
        self.core
            .publish_status(
                events::VOLUME,
                &model.id,
                &model.project_id,
                &model.status,
                target.cinder_name(),
                "reset by an admin",
            )
            .await;
        self.get(context, &model.id).await
    }

    pub async fn revert(
        &self,
        context: &CallContext,
        request: RevertVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        let model = self.get(context, &request.volume_id).await?;
        let snapshot_id = SnapshotId::parse(&request.snapshot_id)?.to_string();
        let latest = snapshot::Entity::find()
            .filter(snapshot::Column::VolumeId.eq(model.id.as_str()))
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
        check_action(&model, VolumeAction::Revert, "reverting")?;
        let txn = self.core.begin_write().await?;
        let (before, model) = transition(&*txn, &model.id, VolumeAction::Revert, "").await?;
        let (snapshot_before, snapshot) =
            snapshots::transition(&*txn, &snapshot_id, SnapshotAction::Revert, "").await?;
        let (node_id, pool) = placement_of(&model);
        let operation =
            Operation::RevertVolume { volume_id: model.id.clone(), snapshot_id: snapshot.id.clone(), node_id, pool };
        let record = journal::record(&*txn, &self.core, &operation).await?;
        txn.commit().await?;
        self.core.publish_status(events::VOLUME, &model.id, &model.project_id, &before, &model.status, "").await;
        self.core
            .publish_status(
                events::SNAPSHOT,
                &snapshot.id,
                &snapshot.project_id,
                &snapshot_before,
                &snapshot.status,
                "",
            )
            .await;
        journal::launch(self.core.clone(), record);
        Ok(model)
    }

    /// The legacy attach-state actions, by compare-and-set through the lifecycle table.
    pub async fn change_attach_state(
        &self,
        context: &CallContext,
        request: ChangeAttachStateRequest,
    ) -> Result<volume::Model, ServiceError> {
        let (action, doing, attach_status) = match AttachStateChange::try_from(request.change).unwrap_or_default() {
            AttachStateChange::Reserve => (VolumeAction::LegacyReserve, "reserving", proto::AttachStatus::Attaching),
            AttachStateChange::Unreserve => {
                (VolumeAction::LegacyUnreserve, "unreserving", proto::AttachStatus::Detached)
            }
            AttachStateChange::BeginDetaching => {
                (VolumeAction::BeginDetaching, "detaching", proto::AttachStatus::Detaching)
            }
            AttachStateChange::RollDetaching => {
                (VolumeAction::RollDetaching, "rolling back a detach", proto::AttachStatus::Attached)
            }
            AttachStateChange::Unspecified => {
                return Err(ServiceError::invalid(
                    "change must be reserve, unreserve, begin_detaching or roll_detaching",
                ));
            }
        };
        let model = self.get(context, &request.volume_id).await?;
        check_action(&model, action, doing)?;
        let txn = self.core.begin_write().await?;
        let (before, after) = transition(&*txn, &model.id, action, "").await?;
        volume::Entity::update_many()
            .col_expr(volume::Column::AttachStatus, Expr::value(attach_status.cinder_name()))
            .filter(volume::Column::Id.eq(model.id.as_str()))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        txn.commit().await?;
        self.core.publish_status(events::VOLUME, &after.id, &after.project_id, &before, &after.status, "").await;
        self.get(context, &model.id).await
    }

    /// Gives the volume a new type when its pool already satisfies it. A retype that needs the
    /// volume moved to another pool is refused: Basalt does not migrate volumes.
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
        check_action(&model, VolumeAction::Retype, "retyping")?;
        let db = &self.core.db;
        let new_type = types::resolve(db, context, &request.new_type).await?;
        if model.volume_type_id.as_deref() == Some(new_type.id.as_str()) {
            return Err(ServiceError::invalid(format!("volume {} is already of type {}", model.id, new_type.name)));
        }
        let specs = types::extra_specs(&new_type);
        let (node_id, pool_name) = placement_of(&model);
        let pool = self.core.capacity.pool(&node_id, &pool_name).ok_or_else(|| {
            ServiceError::unavailable(format!("node {node_id} holding the volume is not reporting; retry shortly"))
        })?;
        let zones = types::zones(&specs);
        let fits = placement::filters::capabilities(&pool, &specs)
            && (zones.is_empty() || zones.contains(&model.availability_zone))
            && (pool.thick_provisioning_support || !types::wants_thick(&specs));
        if !fits {
            let reason = format!("pool {} does not satisfy volume type {}", pool.host(), new_type.name);
            return Err(ServiceError::invalid(match policy {
                "on-demand" => {
                    format!("{reason}, and moving the volume to another pool (migration) is not something Basalt does")
                }
                _ => format!("{reason}; with migration_policy never the volume must stay where it is"),
            }));
        }
        let old_type = self.type_name(&model).await?;
        let txn = self.core.begin_write().await?;
        // The new type's per-type quotas take the volume; the old type's give it back.
        let per_type = |name: &str| vec![(format!("volumes_{name}"), 1), (format!("gigabytes_{name}"), model.size_gib)];
        quotas::reserve(&*txn, &self.core.config.quota_defaults, &model.project_id, &per_type(&new_type.name)).await?;
        quotas::release(&*txn, &model.project_id, &per_type(&old_type)).await?;
        let updated = volume::Entity::update_many()
            .col_expr(volume::Column::VolumeTypeId, Expr::value(new_type.id.as_str()))
            .col_expr(volume::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(volume::Column::Id.eq(model.id.as_str()))
            .filter(statuses_condition(lifecycle::volume(VolumeAction::Retype).from))
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
        self.get(context, &model.id).await
    }

    pub async fn type_name(&self, model: &volume::Model) -> Result<String, ServiceError> {
        type_name_of(&self.core.db, model.volume_type_id.as_deref()).await
    }
}

pub async fn type_name_of(db: &impl ConnectionTrait, type_id: Option<&str>) -> Result<String, ServiceError> {
    let Some(type_id) = type_id else {
        return Ok(String::new());
    };
    Ok(volume_type::Entity::find_by_id(type_id.to_owned())
        .one(db)
        .await
        .map_err(db_error)?
        .map(|model| model.name)
        .unwrap_or_default())
}

/// What a new volume copies.
struct Source {
    description: String,
    size_gib: i64,
    node_id: String,
    pool: String,
    snapshot_id: Option<String>,
    volume_id: Option<String>,
    volume_type_id: Option<String>,
    bootable: bool,
}

impl Source {
    /// Touches the source row inside `txn` with a compare-and-set on its status: it stays a valid
    /// source until the commit, and a concurrent delete of it waits for us.
    async fn lock(&self, txn: &impl ConnectionTrait) -> Result<(), ServiceError> {
        let locked = if let Some(snapshot_id) = &self.snapshot_id {
            snapshot::Entity::update_many()
                .col_expr(snapshot::Column::UpdatedAt, Expr::value(Utc::now()))
                .filter(snapshot::Column::Id.eq(snapshot_id.as_str()))
                .filter(snapshots::statuses_condition(lifecycle::snapshot(SnapshotAction::VolumeSource).from))
                .exec(txn)
                .await
                .map_err(db_error)?
                .rows_affected
        } else if let Some(volume_id) = &self.volume_id {
            volume::Entity::update_many()
                .col_expr(volume::Column::UpdatedAt, Expr::value(Utc::now()))
                .filter(volume::Column::Id.eq(volume_id.as_str()))
                .filter(statuses_condition(lifecycle::volume(VolumeAction::CloneSource).from))
                .exec(txn)
                .await
                .map_err(db_error)?
                .rows_affected
        } else {
            1
        };
        if locked == 0 {
            return Err(ServiceError::conflict(format!(
                "{} changed status meanwhile; it can no longer be copied",
                self.description
            )));
        }
        Ok(())
    }
}

/// Loads a volume the caller may see; another project's volume is reported like a missing one.
pub async fn load(
    db: &impl ConnectionTrait,
    context: &CallContext,
    volume_id: &str,
) -> Result<volume::Model, ServiceError> {
    let id = VolumeId::parse(volume_id)?;
    let found = volume::Entity::find_by_id(id.to_string()).one(db).await.map_err(db_error)?;
    match found {
        Some(model) if context.is_admin || model.project_id == context.project_id.as_str() => Ok(model),
        _ => Err(ServiceError::not_found(format!("volume {id} not found"))),
    }
}

/// Fails with the statuses the action accepts when the volume is in another.
fn check_action(model: &volume::Model, action: VolumeAction, doing: &str) -> Result<(), ServiceError> {
    let allowed = lifecycle::volume(action).from;
    let status = VolumeStatus::from_cinder_name(&model.status).unwrap_or_default();
    if allowed.contains(&status) {
        return Ok(());
    }
    Err(ServiceError::conflict(format!(
        "volume {} is {}; {doing} needs it to be {}",
        model.id,
        model.status,
        lifecycle::volume_names(allowed)
    )))
}

pub fn statuses_condition(statuses: &[VolumeStatus]) -> Condition {
    Condition::all().add(volume::Column::Status.is_in(statuses.iter().map(|status| status.cinder_name())))
}

/// Applies `action`'s start by compare-and-set inside `txn`; returns the status before and the
/// updated row.
pub async fn transition(
    txn: &impl ConnectionTrait,
    volume_id: &str,
    action: VolumeAction,
    reason: &str,
) -> Result<(String, volume::Model), ServiceError> {
    let rule = lifecycle::volume(action);
    let before = volume::Entity::find_by_id(volume_id.to_owned())
        .one(txn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ServiceError::not_found(format!("volume {volume_id} not found")))?;
    let Some(during) = rule.during else {
        return Ok((before.status.clone(), before));
    };
    set_status(txn, volume_id, rule.from, during, reason).await?;
    let after = volume::Entity::find_by_id(volume_id.to_owned())
        .one(txn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ServiceError::not_found(format!("volume {volume_id} not found")))?;
    Ok((before.status, after))
}

/// `UPDATE volumes SET status = to WHERE id = ? AND status IN (from)`, failing when nothing matched.
async fn set_status(
    txn: &impl ConnectionTrait,
    volume_id: &str,
    from: &[VolumeStatus],
    to: VolumeStatus,
    reason: &str,
) -> Result<(), ServiceError> {
    let updated = volume::Entity::update_many()
        .col_expr(volume::Column::Status, Expr::value(to.cinder_name()))
        .col_expr(volume::Column::ErrorReason, Expr::value(reason))
        .col_expr(volume::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(volume::Column::Id.eq(volume_id))
        .filter(statuses_condition(from))
        .exec(txn)
        .await
        .map_err(db_error)?;
    if updated.rows_affected == 1 {
        return Ok(());
    }
    let current = volume::Entity::find_by_id(volume_id.to_owned()).one(txn).await.map_err(db_error)?;
    match current {
        Some(model) => Err(ServiceError::conflict(format!(
            "volume {volume_id} is {} now; it can become {} only from {}",
            model.status,
            to.cinder_name(),
            lifecycle::volume_names(from)
        ))),
        None => Err(ServiceError::not_found(format!("volume {volume_id} not found"))),
    }
}

/// Ends an action that ran an operation on another resource (a backup reading the volume, a
/// restore writing it): the volume moves from the action's status to its success or failure.
pub async fn finish(
    txn: &impl ConnectionTrait,
    volume_id: &str,
    action: VolumeAction,
    succeeded: bool,
    reason: &str,
) -> Result<Option<PendingEvent>, ServiceError> {
    let rule = lifecycle::volume(action);
    let (Some(during), Some(success)) = (rule.during, rule.success) else { return Ok(None) };
    let Some(model) = volume::Entity::find_by_id(volume_id.to_owned()).one(txn).await.map_err(db_error)? else {
        return Ok(None);
    };
    let to = if succeeded { success } else { rule.failure };
    set_status(txn, volume_id, &[during], to, if succeeded { "" } else { reason }).await?;
    Ok(Some(PendingEvent {
        kind: events::VOLUME,
        id: model.id,
        project: model.project_id,
        from: model.status,
        to: to.cinder_name().into(),
        reason: reason.into(),
    }))
}

/// Applies a finished volume operation's outcome inside the completion transaction.
pub async fn complete(
    txn: &impl ConnectionTrait,
    operation: &Operation,
    outcome: &Result<(), ServiceError>,
) -> Result<Vec<PendingEvent>, ServiceError> {
    let volume_id = operation.resource_id();
    let Some(model) = volume::Entity::find_by_id(volume_id.to_owned()).one(txn).await.map_err(db_error)? else {
        tracing::warn!(volume_id, "the volume of a finished operation is gone");
        return Ok(Vec::new());
    };
    let reason = outcome.as_ref().err().map(|error| error.message.clone()).unwrap_or_default();
    let event = |to: &str| PendingEvent {
        kind: events::VOLUME,
        id: model.id.clone(),
        project: model.project_id.clone(),
        from: model.status.clone(),
        to: to.to_owned(),
        reason: reason.clone(),
    };
    let (action, during) = match operation {
        Operation::CreateVolume { .. } => (VolumeAction::Create, VolumeStatus::Creating),
        Operation::DeleteVolume { .. } => (VolumeAction::Delete, VolumeStatus::Deleting),
        Operation::ExtendVolume { attached: true, .. } => (VolumeAction::ExtendAttached, VolumeStatus::Extending),
        Operation::ExtendVolume { .. } => (VolumeAction::Extend, VolumeStatus::Extending),
        Operation::RevertVolume { .. } => (VolumeAction::Revert, VolumeStatus::Reverting),
        _ => {
            return Err(ServiceError::internal("a snapshot operation reached the volume completion"));
        }
    };
    let rule = lifecycle::volume(action);
    let mut pending = Vec::new();
    match (operation, outcome) {
        (Operation::DeleteVolume { snapshot_ids, .. }, Ok(())) => {
            for snapshot_id in snapshot_ids {
                if let Some(removed) = snapshots::remove(txn, snapshot_id).await? {
                    pending.push(removed);
                }
            }
            let type_name = type_name_of(txn, model.volume_type_id.as_deref()).await?;
            quotas::release(txn, &model.project_id, &quotas::volume_usage(&type_name, model.size_gib)).await?;
            claims::release(txn, &host_of(&model), model.size_gib).await?;
            // A forced delete may take a reserved volume: its attachments go with it.
            attachment::Entity::delete_many()
                .filter(attachment::Column::VolumeId.eq(model.id.as_str()))
                .exec(txn)
                .await
                .map_err(db_error)?;
            volume::Entity::delete_by_id(model.id.clone()).exec(txn).await.map_err(db_error)?;
            pending.push(event(events::DELETED));
        }
        (Operation::DeleteVolume { snapshot_ids, .. }, Err(_)) => {
            for snapshot_id in snapshot_ids {
                if let Some(failed) = snapshots::fail_deletion(txn, snapshot_id, &reason).await? {
                    pending.push(failed);
                }
            }
            set_status(txn, &model.id, &[during], rule.failure, &reason).await?;
            pending.push(event(rule.failure.cinder_name()));
        }
        (Operation::ExtendVolume { old_size_gib, new_size_gib, .. }, Ok(())) => {
            let success = rule.success.unwrap_or(VolumeStatus::Available);
            volume::Entity::update_many()
                .col_expr(volume::Column::SizeGib, Expr::value(*new_size_gib))
                .filter(volume::Column::Id.eq(model.id.as_str()))
                .filter(volume::Column::SizeGib.eq(*old_size_gib))
                .exec(txn)
                .await
                .map_err(db_error)?;
            set_status(txn, &model.id, &[during], success, "").await?;
            pending.push(event(success.cinder_name()));
        }
        (Operation::ExtendVolume { old_size_gib, new_size_gib, .. }, Err(_)) => {
            // The volume keeps its old size; the space and quota taken for the growth go back.
            let delta = new_size_gib - old_size_gib;
            let type_name = type_name_of(txn, model.volume_type_id.as_deref()).await?;
            quotas::release(txn, &model.project_id, &quotas::extend_usage(&type_name, delta)).await?;
            claims::release(txn, &host_of(&model), delta).await?;
            set_status(txn, &model.id, &[during], rule.failure, &reason).await?;
            pending.push(event(rule.failure.cinder_name()));
        }
        (Operation::RevertVolume { snapshot_id, .. }, outcome) => {
            if let Some(restored) = snapshots::finish_revert(txn, snapshot_id).await? {
                pending.push(restored);
            }
            let to = if outcome.is_ok() { rule.success.unwrap_or(VolumeStatus::Available) } else { rule.failure };
            set_status(txn, &model.id, &[during], to, &reason).await?;
            pending.push(event(to.cinder_name()));
        }
        (operation, outcome) => {
            if let Operation::CreateVolume { source_backup: Some(source), .. } = operation {
                pending.extend(backups::finish_restore(txn, &source.backup_id).await?);
            }
            let to = if outcome.is_ok() { rule.success.unwrap_or(VolumeStatus::Available) } else { rule.failure };
            set_status(txn, &model.id, &[during], to, &reason).await?;
            pending.push(event(to.cinder_name()));
        }
    }
    Ok(pending)
}

pub fn placement_of(model: &volume::Model) -> (String, String) {
    (model.node_id.clone().unwrap_or_default(), model.pool.clone().unwrap_or_default())
}

/// The volume's pool as `host@backend#pool`, the key of its capacity claim.
pub fn host_of(model: &volume::Model) -> String {
    match (&model.node_id, &model.backend, &model.pool) {
        (Some(node), Some(backend), Some(pool)) => format!("{node}@{backend}#{pool}"),
        _ => String::new(),
    }
}

/// The volume an idempotency key already names, when the repeat asks for the same thing: the same
/// name, size (0: any), source, and, where the repeat names them, volume type and availability
/// zone. `wanted_type` is the id the request's type resolves to (`Some(None)`: it resolves to none).
fn same_request_or_conflict(
    existing: volume::Model,
    request: &CreateVolumeRequest,
    wanted_type: Option<Option<String>>,
) -> Result<volume::Model, ServiceError> {
    let same_size = request.size_gib == 0 || existing.size_gib as u64 == request.size_gib;
    let same_source = existing.snapshot_id.clone().unwrap_or_default() == request.snapshot_id
        && existing.source_volume_id.clone().unwrap_or_default() == request.source_volume_id;
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

pub fn timestamp(time: chrono::DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
}

pub fn to_proto(
    model: &volume::Model,
    type_names: &HashMap<String, String>,
    attachments: &HashMap<String, Vec<proto::VolumeAttachment>>,
) -> proto::Volume {
    let status = VolumeStatus::from_cinder_name(&model.status).unwrap_or(VolumeStatus::Unspecified);
    let attach_status =
        proto::AttachStatus::from_cinder_name(&model.attach_status).unwrap_or(proto::AttachStatus::Unspecified);
    let pool = model.node_id.as_ref().map(|node_id| PoolRef {
        node_id: node_id.clone(),
        backend: model.backend.clone().unwrap_or_default(),
        pool: model.pool.clone().unwrap_or_default(),
    });
    let type_id = model.volume_type_id.clone().unwrap_or_default();
    proto::Volume {
        id: model.id.clone(),
        project_id: model.project_id.clone(),
        user_id: model.user_id.clone(),
        name: model.name.clone(),
        description: model.description.clone(),
        size_gib: model.size_gib as u64,
        status: status as i32,
        attach_status: attach_status as i32,
        availability_zone: model.availability_zone.clone(),
        volume_type_name: type_names.get(&type_id).cloned().unwrap_or_default(),
        volume_type_id: type_id,
        pool,
        snapshot_id: model.snapshot_id.clone().unwrap_or_default(),
        source_volume_id: model.source_volume_id.clone().unwrap_or_default(),
        metadata: string_map::from_json(&model.metadata),
        bootable: model.bootable,
        readonly: model.readonly,
        multiattach: model.multiattach,
        attachments: attachments.get(&model.id).cloned().unwrap_or_default(),
        error_reason: model.error_reason.clone(),
        consumes_quota: true,
        created_at: Some(timestamp(model.created_at)),
        updated_at: Some(timestamp(model.updated_at)),
        idempotency_key: model.idempotency_key.clone().unwrap_or_default(),
        ..Default::default()
    }
}
