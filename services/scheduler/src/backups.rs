//! Backups (Cinder's backup API): the control plane's side. The volume node that holds the volume
//! reads it into the backup store (shared by the nodes) through a journalled operation, so a
//! crash of the scheduler or the node re-drives it; the volume shows `backing-up` meanwhile and
//! returns to its status. Restores write a backup onto an available volume at least as large
//! (`restoring-backup`), deletes sweep chunks no other backup uses, and a backup's record can be
//! exported and imported into another deployment, whose nodes read the rest from the store.

use std::{collections::HashSet, sync::Arc, time::Duration};

use basalt::{
    ErrorCode, ServiceError,
    context::CallContext,
    ids::{BackupId, SnapshotId},
    proto::{
        self, BackupRecord, BackupStatus, CreateBackupRequest, CreateVolumeRequest, DeleteBackupRequest,
        ListBackupsRequest, NodeBackup, NodeBackupRef, PageInfo, ResetBackupStatusRequest, RestoreBackupRequest,
        RestoreBackupResponse, UpdateBackupRequest, VolumeStatus,
    },
};
use base64::Engine;
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    sea_query::Expr,
};
use serde::{Deserialize, Serialize};

use crate::{
    Core,
    db::{backup, db_error},
    events,
    journal::{self, Operation, PendingEvent},
    lifecycle::{self, BackupAction, VolumeAction},
    listing, quotas, snapshots, string_map,
    volumes::{self, Volumes, placement_of},
};

const GIB: u64 = 1 << 30;
/// The `backup_service` of exported records.
const BACKUP_SERVICE: &str = "basalt.backup.posix";
/// How long a restore into a new volume waits for the volume to be created (Cinder polls too).
const NEW_VOLUME_WAIT: Duration = Duration::from_secs(120);

pub struct Backups {
    core: Arc<Core>,
    volumes: Volumes,
}

/// What an exported record carries: enough to find the backup in the store of another deployment.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    id: String,
    project_id: String,
    volume_id: String,
    name: String,
    description: String,
    container: String,
    availability_zone: String,
}

impl Backups {
    pub fn new(core: Arc<Core>) -> Self {
        Self { volumes: Volumes::new(core.clone()), core }
    }

    pub async fn create(
        &self,
        context: &CallContext,
        request: CreateBackupRequest,
    ) -> Result<backup::Model, ServiceError> {
        crate::fields::check_common(&request.name, &request.description, &request.metadata)?;
        let volume = volumes::load(&self.core.db, context, &request.volume_id).await?;
        let status = VolumeStatus::from_cinder_name(&volume.status).unwrap_or_default();
        let action = match status {
            VolumeStatus::InUse if request.force => VolumeAction::BackupAttached,
            VolumeStatus::InUse => {
                return Err(ServiceError::conflict(format!(
                    "volume {} is in-use; pass force to back up an in-use volume (it is read from a temporary snapshot)",
                    volume.id
                )));
            }
            _ => VolumeAction::Backup,
        };
        let snapshot_id = if request.snapshot_id.is_empty() {
            None
        } else {
            let snapshot =
                snapshots::load(&self.core.db, context, &SnapshotId::parse(&request.snapshot_id)?.to_string()).await?;
            if snapshot.volume_id != volume.id || snapshot.status != proto::SnapshotStatus::Available.cinder_name() {
                return Err(ServiceError::invalid(format!(
                    "snapshot {} is not an available snapshot of volume {}",
                    snapshot.id, volume.id
                )));
            }
            Some(snapshot.id)
        };
        let parent = if request.incremental {
            let latest = backup::Entity::find()
                .filter(backup::Column::VolumeId.eq(volume.id.as_str()))
                .filter(backup::Column::Status.eq(BackupStatus::Available.cinder_name()))
                .order_by_desc(backup::Column::DataTimestamp)
                .one(&self.core.db)
                .await
                .map_err(db_error)?;
            Some(latest.ok_or_else(|| {
                ServiceError::invalid(format!(
                    "volume {} has no available backup to be incremental to; make a full backup first",
                    volume.id
                ))
            })?)
        } else {
            None
        };
        let (node_id, pool) = placement_of(&volume);
        let txn = self.core.begin_write().await?;
        let (volume_before, volume_after) = volumes::transition(&*txn, &volume.id, action, "").await?;
        quotas::reserve(
            &*txn,
            &self.core.config.quota_defaults,
            context.project_id.as_str(),
            &quotas::backup_usage(volume.size_gib),
        )
        .await?;
        exclude(&*txn, &volume.project_id, SWEEPING, "back up once it is deleted").await?;
        let now = Utc::now();
        let model = backup::ActiveModel {
            id: Set(BackupId::new_random().to_string()),
            project_id: Set(volume.project_id.clone()),
            user_id: Set(context.user_id.clone()),
            volume_id: Set(volume.id.clone()),
            snapshot_id: Set(snapshot_id.clone()),
            name: Set(request.name),
            description: Set(request.description),
            status: Set(BackupStatus::Creating.cinder_name().into()),
            size_gib: Set(volume.size_gib),
            object_count: Set(0),
            stored_bytes: Set(0),
            container: Set(if request.container.is_empty() { "backups".into() } else { request.container }),
            availability_zone: Set(volume.availability_zone.clone()),
            parent_id: Set(parent.as_ref().map(|parent| parent.id.clone())),
            metadata: Set(string_map::to_json(&request.metadata)),
            progress: Set(0),
            fail_reason: Set(String::new()),
            node_id: Set(node_id.clone()),
            created_at: Set(now),
            updated_at: Set(now),
            data_timestamp: Set(now),
        }
        .insert(&*txn)
        .await
        .map_err(db_error)?;
        let operation = Operation::CreateBackup {
            backup_id: model.id.clone(),
            project_id: model.project_id.clone(),
            volume_id: volume.id.clone(),
            node_id,
            pool,
            snapshot_id,
            parent_id: model.parent_id.clone(),
            attached: action == VolumeAction::BackupAttached,
        };
        let record = journal::record(&*txn, &self.core, &operation).await?;
        txn.commit().await?;
        self.core
            .publish_status(events::VOLUME, &volume.id, &volume.project_id, &volume_before, &volume_after.status, "")
            .await;
        self.core.publish_status(events::BACKUP, &model.id, &model.project_id, "", &model.status, "").await;
        journal::launch(self.core.clone(), record);
        Ok(model)
    }

    pub async fn get(&self, context: &CallContext, backup_id: &str) -> Result<backup::Model, ServiceError> {
        load(&self.core.db, context, backup_id).await
    }

    pub async fn list(
        &self,
        context: &CallContext,
        request: &ListBackupsRequest,
    ) -> Result<(Vec<backup::Model>, PageInfo), ServiceError> {
        let mut condition =
            listing::project_scope(context, request.all_projects, backup::Column::ProjectId, "backups")?;
        if !request.volume_id.is_empty() {
            condition = condition.add(backup::Column::VolumeId.eq(request.volume_id.as_str()));
        }
        if !request.name.is_empty() {
            condition = condition.add(backup::Column::Name.eq(request.name.as_str()));
        }
        if request.status != BackupStatus::Unspecified as i32 {
            let status = BackupStatus::try_from(request.status)
                .map_err(|_| ServiceError::invalid(format!("unknown backup status {}", request.status)))?;
            condition = condition.add(backup::Column::Status.eq(status.cinder_name()));
        }
        let rows = backup::Entity::find().filter(condition).all(&self.core.db).await.map_err(db_error)?;
        listing::page(rows, &request.sort, request.page.as_ref(), request.with_count, "backup")
    }

    pub async fn update(
        &self,
        context: &CallContext,
        request: UpdateBackupRequest,
    ) -> Result<backup::Model, ServiceError> {
        let model = self.get(context, &request.backup_id).await?;
        let name = request.name.unwrap_or(model.name.clone());
        let description = request.description.unwrap_or(model.description.clone());
        let mut metadata = string_map::from_json(&model.metadata);
        if request.replace_metadata {
            metadata = request.metadata;
        } else {
            metadata.extend(request.metadata);
        }
        crate::fields::check_common(&name, &description, &metadata)?;
        let mut active: backup::ActiveModel = model.into();
        active.name = Set(name);
        active.description = Set(description);
        active.metadata = Set(string_map::to_json(&metadata));
        active.updated_at = Set(Utc::now());
        active.update(&self.core.db).await.map_err(db_error)
    }

    pub async fn delete(
        &self,
        context: &CallContext,
        request: DeleteBackupRequest,
    ) -> Result<backup::Model, ServiceError> {
        if request.force && !context.is_admin {
            return Err(ServiceError::new(ErrorCode::Forbidden, "only an admin may force-delete a backup"));
        }
        let model = self.get(context, &request.backup_id).await?;
        if let Some(dependent) = dependents(&self.core.db, std::slice::from_ref(&model.id)).await?.into_iter().next() {
            return Err(ServiceError::conflict(format!(
                "backup {} has dependent incremental backups ({dependent} among them); delete them first",
                model.id
            )));
        }
        let action = if request.force { BackupAction::ForceDelete } else { BackupAction::Delete };
        let creating = model.status == BackupStatus::Creating.cinder_name();
        let txn = self.core.begin_write().await?;
        if !creating {
            let busy = [BackupStatus::Creating, BackupStatus::Restoring];
            exclude(&*txn, &model.project_id, &busy, "delete once it is done").await?;
        }
        let (before, after) = transition(&*txn, &model.id, action, "").await?;
        // A running backup is cancelled; its own operation then removes what it wrote.
        let record = if creating {
            None
        } else {
            let operation = Operation::DeleteBackup {
                backup_id: model.id.clone(),
                project_id: model.project_id.clone(),
                node_id: model.node_id.clone(),
            };
            Some(journal::record(&*txn, &self.core, &operation).await?)
        };
        txn.commit().await?;
        self.core.publish_status(events::BACKUP, &model.id, &model.project_id, &before, &after.status, "").await;
        match record {
            Some(record) => journal::launch(self.core.clone(), record),
            None => self.cancel_on_node(&model).await,
        }
        Ok(after)
    }

    async fn cancel_on_node(&self, model: &backup::Model) {
        let reference = NodeBackupRef { backup_id: model.id.clone(), project_id: model.project_id.clone() };
        let cancelled = match self.core.nodes.client(&self.core.capacity, &model.node_id) {
            Ok(mut client) => client.cancel_backup(reference).await.map(drop).map_err(ServiceError::from),
            Err(error) => Err(error),
        };
        if let Err(error) = cancelled {
            // The backup finishes on its own then; its operation still finds `deleting` and removes it.
            tracing::warn!(backup_id = %model.id, %error, "cannot cancel the running backup on its node");
        }
    }

    pub async fn restore(
        &self,
        context: &CallContext,
        request: RestoreBackupRequest,
    ) -> Result<RestoreBackupResponse, ServiceError> {
        let model = self.get(context, &request.backup_id).await?;
        if model.status != BackupStatus::Available.cinder_name() {
            return Err(ServiceError::conflict(format!(
                "backup {} is {}; only an available backup can be restored",
                model.id, model.status
            )));
        }
        let volume = if request.volume_id.is_empty() {
            let name = if request.name.is_empty() { format!("restore_backup_{}", model.id) } else { request.name };
            let created = self
                .volumes
                .create(
                    context,
                    CreateVolumeRequest {
                        name,
                        size_gib: model.size_gib as u64,
                        availability_zone: model.availability_zone.clone(),
                        ..Default::default()
                    },
                )
                .await?;
            self.wait_created(context, &created.id).await?
        } else {
            volumes::load(&self.core.db, context, &request.volume_id).await?
        };
        if volume.size_gib < model.size_gib {
            return Err(ServiceError::invalid(format!(
                "volume {} ({} GiB) is smaller than backup {} ({} GiB)",
                volume.id, volume.size_gib, model.id, model.size_gib
            )));
        }
        let (node_id, pool) = placement_of(&volume);
        let txn = self.core.begin_write().await?;
        exclude(&*txn, &model.project_id, SWEEPING, "restore once it is deleted").await?;
        let (volume_before, volume_after) =
            volumes::transition(&*txn, &volume.id, VolumeAction::RestoreBackup, "").await?;
        let (before, after) = transition(&*txn, &model.id, BackupAction::Restore, "").await?;
        let operation = Operation::RestoreBackup {
            backup_id: model.id.clone(),
            project_id: model.project_id.clone(),
            volume_id: volume.id.clone(),
            node_id,
            pool,
        };
        let record = journal::record(&*txn, &self.core, &operation).await?;
        txn.commit().await?;
        self.core
            .publish_status(events::VOLUME, &volume.id, &volume.project_id, &volume_before, &volume_after.status, "")
            .await;
        self.core.publish_status(events::BACKUP, &model.id, &model.project_id, &before, &after.status, "").await;
        journal::launch(self.core.clone(), record);
        Ok(RestoreBackupResponse { backup_id: model.id, volume_id: volume.id, volume_name: volume.name })
    }

    /// Waits until a volume made for a restore leaves `creating`.
    async fn wait_created(
        &self,
        context: &CallContext,
        volume_id: &str,
    ) -> Result<crate::db::volume::Model, ServiceError> {
        let deadline = tokio::time::Instant::now() + NEW_VOLUME_WAIT;
        loop {
            let volume = volumes::load(&self.core.db, context, volume_id).await?;
            if volume.status == VolumeStatus::Available.cinder_name() {
                return Ok(volume);
            }
            if volume.status != VolumeStatus::Creating.cinder_name() || tokio::time::Instant::now() > deadline {
                return Err(ServiceError::conflict(format!(
                    "the volume made for the restore, {volume_id}, is {}, not available",
                    volume.status
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn reset_status(
        &self,
        context: &CallContext,
        request: ResetBackupStatusRequest,
    ) -> Result<backup::Model, ServiceError> {
        if !context.is_admin {
            return Err(ServiceError::new(ErrorCode::Forbidden, "only an admin may reset a backup's status"));
        }
        let model = self.get(context, &request.backup_id).await?;
        let status = BackupStatus::try_from(request.status).unwrap_or_default();
        if !lifecycle::BACKUP_RESETTABLE.contains(&status) {
            return Err(ServiceError::invalid(format!(
                "a backup can be reset to {} only",
                lifecycle::backup_names(lifecycle::BACKUP_RESETTABLE)
            )));
        }
        if journal::in_flight(&self.core.db, &model.id).await? {
            return Err(ServiceError::conflict(format!(
                "backup {} has an operation in flight; wait for it to finish",
                model.id
            )));
        }
        let mut active: backup::ActiveModel = model.into();
        active.status = Set(status.cinder_name().into());
        active.updated_at = Set(Utc::now());
        active.update(&self.core.db).await.map_err(db_error)
    }

    pub async fn export_record(&self, context: &CallContext, backup_id: &str) -> Result<BackupRecord, ServiceError> {
        if !context.is_admin {
            return Err(ServiceError::new(ErrorCode::Forbidden, "only an admin may export a backup record"));
        }
        let model = self.get(context, backup_id).await?;
        if model.status != BackupStatus::Available.cinder_name() {
            return Err(ServiceError::conflict(format!(
                "backup {} is {}; export needs it available",
                model.id, model.status
            )));
        }
        let record = Record {
            id: model.id,
            project_id: model.project_id,
            volume_id: model.volume_id,
            name: model.name,
            description: model.description,
            container: model.container,
            availability_zone: model.availability_zone,
        };
        let json = serde_json::to_vec(&record).map_err(|error| ServiceError::internal(error.to_string()))?;
        Ok(BackupRecord {
            backup_service: BACKUP_SERVICE.into(),
            backup_url: base64::engine::general_purpose::STANDARD.encode(json),
        })
    }

    /// Creates the backup's row from an exported record, after a node found its manifest in the
    /// store: the store alone is enough to restore it.
    pub async fn import_record(
        &self,
        context: &CallContext,
        record: BackupRecord,
    ) -> Result<backup::Model, ServiceError> {
        if !context.is_admin {
            return Err(ServiceError::new(ErrorCode::Forbidden, "only an admin may import a backup record"));
        }
        if record.backup_service != BACKUP_SERVICE {
            return Err(ServiceError::invalid(format!(
                "backup_service {:?} is not this deployment's ({BACKUP_SERVICE})",
                record.backup_service
            )));
        }
        let json = base64::engine::general_purpose::STANDARD
            .decode(record.backup_url.trim())
            .map_err(|error| ServiceError::invalid(format!("backup_url is not base64: {error}")))?;
        let record: Record = serde_json::from_slice(&json)
            .map_err(|error| ServiceError::invalid(format!("backup_url does not hold a backup record: {error}")))?;
        let backup_id = BackupId::parse(&record.id)?.to_string();
        if backup::Entity::find_by_id(backup_id.clone()).one(&self.core.db).await.map_err(db_error)?.is_some() {
            return Err(ServiceError::new(ErrorCode::AlreadyExists, format!("backup {backup_id} exists already")));
        }
        let (node_id, manifest) = self.find_manifest(&record.project_id, &backup_id).await?;
        let now = Utc::now();
        let created_at =
            manifest.created_at.and_then(|at| chrono::DateTime::from_timestamp(at.seconds, 0)).unwrap_or(now);
        let txn = self.core.begin_write().await?;
        let size_gib = manifest.size_bytes.div_ceil(GIB) as i64;
        quotas::reserve(&*txn, &self.core.config.quota_defaults, &record.project_id, &quotas::backup_usage(size_gib))
            .await?;
        let model = backup::ActiveModel {
            id: Set(backup_id),
            project_id: Set(record.project_id),
            user_id: Set(context.user_id.clone()),
            volume_id: Set(record.volume_id),
            snapshot_id: Set(None),
            name: Set(record.name),
            description: Set(record.description),
            status: Set(BackupStatus::Available.cinder_name().into()),
            size_gib: Set(size_gib),
            object_count: Set(manifest.object_count as i64),
            stored_bytes: Set(manifest.stored_bytes as i64),
            container: Set(record.container),
            availability_zone: Set(record.availability_zone),
            parent_id: Set((!manifest.parent_id.is_empty()).then_some(manifest.parent_id)),
            metadata: Set(string_map::to_json(&manifest.metadata)),
            progress: Set(100),
            fail_reason: Set(String::new()),
            node_id: Set(node_id),
            created_at: Set(created_at),
            updated_at: Set(now),
            data_timestamp: Set(created_at),
        }
        .insert(&*txn)
        .await
        .map_err(db_error)?;
        txn.commit().await?;
        Ok(model)
    }

    /// Asks the nodes, freshest report first, for the backup's manifest.
    async fn find_manifest(&self, project_id: &str, backup_id: &str) -> Result<(String, NodeBackup), ServiceError> {
        let mut last = ServiceError::unavailable("no volume node is reporting; none can read the backup store");
        for node in self.core.capacity.nodes() {
            let node_id = node.report.node_id.clone();
            let reference = NodeBackupRef { backup_id: backup_id.to_owned(), project_id: project_id.to_owned() };
            let found = match self.core.nodes.client(&self.core.capacity, &node_id) {
                Ok(mut client) => client.get_backup_manifest(reference).await.map_err(ServiceError::from),
                Err(error) => Err(error),
            };
            match found {
                Ok(manifest) => return Ok((node_id, manifest.into_inner())),
                Err(error) => last = error,
            }
        }
        Err(ServiceError::new(
            last.code,
            format!("backup {backup_id} cannot be found in the backup store: {}", last.message),
        ))
    }
}

/// Keeps a delete's sweep of a project's chunks apart from backups and restores of the project: a
/// running backup relies on chunks its manifest does not name yet, a restore reads them. Backups
/// and restores refuse while a backup of the project is deleting; a delete refuses while one is
/// being made or restored. Inside the write transaction, after locking the project's backup
/// counter, so two such transactions of a project never interleave.
pub async fn exclude(
    txn: &impl ConnectionTrait,
    project: &str,
    busy: &[BackupStatus],
    advice: &str,
) -> Result<(), ServiceError> {
    quotas::lock(txn, project, quotas::BACKUPS).await?;
    let running = backup::Entity::find()
        .filter(backup::Column::ProjectId.eq(project))
        .filter(backup::Column::Status.is_in(busy.iter().map(|status| status.cinder_name())))
        .one(txn)
        .await
        .map_err(db_error)?;
    match running {
        Some(running) => Err(ServiceError::conflict(format!(
            "backup {} of this project is {}; {advice}",
            running.id, running.status
        ))),
        None => Ok(()),
    }
}

/// What a backup or restore must wait for.
pub const SWEEPING: &[BackupStatus] = &[BackupStatus::Deleting];

pub async fn load(
    db: &impl ConnectionTrait,
    context: &CallContext,
    backup_id: &str,
) -> Result<backup::Model, ServiceError> {
    let id = BackupId::parse(backup_id)?;
    match backup::Entity::find_by_id(id.to_string()).one(db).await.map_err(db_error)? {
        Some(model) if context.is_admin || model.project_id == context.project_id.as_str() => Ok(model),
        _ => Err(ServiceError::not_found(format!("backup {id} not found"))),
    }
}

/// The backups among `ids` that incremental backups depend on.
pub async fn dependents(db: &impl ConnectionTrait, ids: &[String]) -> Result<HashSet<String>, ServiceError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let children = backup::Entity::find()
        .filter(backup::Column::ParentId.is_in(ids.iter().map(String::as_str)))
        .all(db)
        .await
        .map_err(db_error)?;
    Ok(children.into_iter().filter_map(|child| child.parent_id).collect())
}

/// Applies `action`'s start by compare-and-set inside `txn`.
pub async fn transition(
    txn: &impl ConnectionTrait,
    backup_id: &str,
    action: BackupAction,
    reason: &str,
) -> Result<(String, backup::Model), ServiceError> {
    let rule = lifecycle::backup(action);
    let before = backup::Entity::find_by_id(backup_id.to_owned())
        .one(txn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ServiceError::not_found(format!("backup {backup_id} not found")))?;
    let Some(during) = rule.during else { return Ok((before.status.clone(), before)) };
    set_status(txn, backup_id, rule.from, during, reason).await?;
    let after = backup::Entity::find_by_id(backup_id.to_owned())
        .one(txn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ServiceError::not_found(format!("backup {backup_id} not found")))?;
    Ok((before.status, after))
}

async fn set_status(
    txn: &impl ConnectionTrait,
    backup_id: &str,
    from: &[BackupStatus],
    to: BackupStatus,
    reason: &str,
) -> Result<(), ServiceError> {
    let updated = backup::Entity::update_many()
        .col_expr(backup::Column::Status, Expr::value(to.cinder_name()))
        .col_expr(backup::Column::FailReason, Expr::value(reason))
        .col_expr(backup::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(backup::Column::Id.eq(backup_id))
        .filter(Condition::all().add(backup::Column::Status.is_in(from.iter().map(|status| status.cinder_name()))))
        .exec(txn)
        .await
        .map_err(db_error)?;
    if updated.rows_affected == 1 {
        return Ok(());
    }
    let current = backup::Entity::find_by_id(backup_id.to_owned()).one(txn).await.map_err(db_error)?;
    match current {
        Some(model) => Err(ServiceError::conflict(format!(
            "backup {backup_id} is {}; it can become {} only from {}",
            model.status,
            to.cinder_name(),
            lifecycle::backup_names(from)
        ))),
        None => Err(ServiceError::not_found(format!("backup {backup_id} not found"))),
    }
}

/// A volume made from the backup exists now (or failed): the backup is available again.
pub async fn finish_restore(txn: &impl ConnectionTrait, backup_id: &str) -> Result<Option<PendingEvent>, ServiceError> {
    let Some(model) = backup::Entity::find_by_id(backup_id.to_owned()).one(txn).await.map_err(db_error)? else {
        return Ok(None);
    };
    set_status(txn, backup_id, &[BackupStatus::Restoring], BackupStatus::Available, "").await?;
    Ok(Some(PendingEvent {
        kind: events::BACKUP,
        id: model.id,
        project: model.project_id,
        from: model.status,
        to: BackupStatus::Available.cinder_name().into(),
        reason: String::new(),
    }))
}

/// Records a running backup's or restore's progress.
pub async fn set_progress(db: &impl ConnectionTrait, backup_id: &str, percent: u32) -> Result<(), ServiceError> {
    backup::Entity::update_many()
        .col_expr(backup::Column::Progress, Expr::value(percent.min(100) as i32))
        .filter(backup::Column::Id.eq(backup_id))
        .exec(db)
        .await
        .map_err(db_error)
        .map(drop)
}

/// Whether the backup was asked to go while its operation ran.
pub async fn is_deleting(db: &impl ConnectionTrait, backup_id: &str) -> Result<bool, ServiceError> {
    let model = backup::Entity::find_by_id(backup_id.to_owned()).one(db).await.map_err(db_error)?;
    Ok(model.is_none_or(|model| model.status == BackupStatus::Deleting.cinder_name()))
}

/// Applies a finished backup operation's outcome inside the completion transaction. For a backup,
/// `Ok(None)` means it was deleted while it ran.
pub async fn complete(
    txn: &impl ConnectionTrait,
    operation: &Operation,
    outcome: &Result<Option<NodeBackup>, ServiceError>,
) -> Result<Vec<PendingEvent>, ServiceError> {
    let backup_id = operation.resource_id();
    let Some(model) = backup::Entity::find_by_id(backup_id.to_owned()).one(txn).await.map_err(db_error)? else {
        tracing::warn!(backup_id, "the backup of a finished operation is gone");
        return Ok(Vec::new());
    };
    let reason = outcome.as_ref().err().map(|error| error.message.clone()).unwrap_or_default();
    let event = |to: &str| PendingEvent {
        kind: events::BACKUP,
        id: model.id.clone(),
        project: model.project_id.clone(),
        from: model.status.clone(),
        to: to.to_owned(),
        reason: reason.clone(),
    };
    let mut pending = Vec::new();
    match (operation, outcome) {
        (Operation::CreateBackup { volume_id, attached, .. }, outcome) => {
            let action = if *attached { VolumeAction::BackupAttached } else { VolumeAction::Backup };
            pending.extend(volumes::finish(txn, volume_id, action, outcome.is_ok(), &reason).await?);
            match outcome {
                Ok(None) => {
                    remove(txn, &model).await?;
                    pending.push(event(events::DELETED));
                }
                Ok(Some(written)) => {
                    let mut active: backup::ActiveModel = model.clone().into();
                    active.status = Set(BackupStatus::Available.cinder_name().into());
                    active.object_count = Set(written.object_count as i64);
                    active.stored_bytes = Set(written.stored_bytes as i64);
                    active.progress = Set(100);
                    active.updated_at = Set(Utc::now());
                    active.update(txn).await.map_err(db_error)?;
                    pending.push(event(BackupStatus::Available.cinder_name()));
                }
                Err(_) => {
                    set_status(txn, &model.id, &[BackupStatus::Creating], BackupStatus::Error, &reason).await?;
                    pending.push(event(BackupStatus::Error.cinder_name()));
                }
            }
        }
        (Operation::RestoreBackup { volume_id, .. }, outcome) => {
            pending
                .extend(volumes::finish(txn, volume_id, VolumeAction::RestoreBackup, outcome.is_ok(), &reason).await?);
            set_status(txn, &model.id, &[BackupStatus::Restoring], BackupStatus::Available, &reason).await?;
            pending.push(event(BackupStatus::Available.cinder_name()));
        }
        (Operation::DeleteBackup { .. }, Ok(_)) => {
            remove(txn, &model).await?;
            pending.push(event(events::DELETED));
        }
        (Operation::DeleteBackup { .. }, Err(_)) => {
            set_status(txn, &model.id, &[BackupStatus::Deleting], BackupStatus::ErrorDeleting, &reason).await?;
            pending.push(event(BackupStatus::ErrorDeleting.cinder_name()));
        }
        _ => return Err(ServiceError::internal("a volume or snapshot operation reached the backup completion")),
    }
    Ok(pending)
}

async fn remove(txn: &impl ConnectionTrait, model: &backup::Model) -> Result<(), ServiceError> {
    quotas::release(txn, &model.project_id, &quotas::backup_usage(model.size_gib)).await?;
    backup::Entity::delete_by_id(model.id.clone()).exec(txn).await.map_err(db_error)?;
    Ok(())
}

pub fn to_proto(model: &backup::Model, has_dependents: bool) -> proto::Backup {
    proto::Backup {
        id: model.id.clone(),
        project_id: model.project_id.clone(),
        user_id: model.user_id.clone(),
        volume_id: model.volume_id.clone(),
        snapshot_id: model.snapshot_id.clone().unwrap_or_default(),
        name: model.name.clone(),
        description: model.description.clone(),
        status: BackupStatus::from_cinder_name(&model.status).unwrap_or_default() as i32,
        size_gib: model.size_gib as u64,
        object_count: model.object_count as u64,
        container: model.container.clone(),
        availability_zone: model.availability_zone.clone(),
        is_incremental: model.parent_id.is_some(),
        has_dependent_backups: has_dependents,
        parent_id: model.parent_id.clone().unwrap_or_default(),
        metadata: string_map::from_json(&model.metadata),
        progress: model.progress as u32,
        stored_bytes: model.stored_bytes as u64,
        fail_reason: model.fail_reason.clone(),
        created_at: Some(volumes::timestamp(model.created_at)),
        updated_at: Some(volumes::timestamp(model.updated_at)),
        data_timestamp: Some(volumes::timestamp(model.data_timestamp)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db;

    async fn insert(db: &impl ConnectionTrait, id: &str, project: &str, status: BackupStatus) {
        let now = Utc::now();
        backup::ActiveModel {
            id: Set(id.into()),
            project_id: Set(project.into()),
            user_id: Set("u".into()),
            volume_id: Set("v".into()),
            snapshot_id: Set(None),
            name: Set(String::new()),
            description: Set(String::new()),
            status: Set(status.cinder_name().into()),
            size_gib: Set(1),
            object_count: Set(0),
            stored_bytes: Set(0),
            container: Set("backups".into()),
            availability_zone: Set("nova".into()),
            parent_id: Set(None),
            metadata: Set("{}".into()),
            progress: Set(0),
            fail_reason: Set(String::new()),
            node_id: Set("n".into()),
            created_at: Set(now),
            updated_at: Set(now),
            data_timestamp: Set(now),
        }
        .insert(db)
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_sweep_never_runs_beside_a_backup_or_restore_of_its_project() {
        let dir = tempfile::tempdir().unwrap();
        let db = db::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display())).await.unwrap();
        insert(&db, "creating-1", "p1", BackupStatus::Creating).await;
        insert(&db, "deleting-2", "p2", BackupStatus::Deleting).await;

        let busy = [BackupStatus::Creating, BackupStatus::Restoring];
        let refused = exclude(&db, "p1", &busy, "delete once it is done").await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::Conflict);
        assert_eq!(refused.message, "backup creating-1 of this project is creating; delete once it is done");
        let refused = exclude(&db, "p2", SWEEPING, "back up once it is deleted").await.unwrap_err();
        assert!(refused.message.contains("deleting-2 of this project is deleting"), "{}", refused.message);
        // Other projects are not held up.
        exclude(&db, "p2", &busy, "").await.unwrap();
        exclude(&db, "p1", SWEEPING, "").await.unwrap();
        exclude(&db, "p3", &busy, "").await.unwrap();
    }
}
