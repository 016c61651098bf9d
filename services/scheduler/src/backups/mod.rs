//! Backups (Cinder's backup API): the control plane's side. The volume node that holds the volume
//! reads it into the backup store (shared by the nodes) through a journalled operation
//! (`operations.rs`), so a crash of the scheduler or the node re-drives it; the volume shows
//! `backing-up` meanwhile and returns to its status. Restores write a backup onto an available
//! volume at least as large (`restoring-backup`); a restore that names no volume is a volume
//! created from the backup (`Volumes::create`). Deletes sweep chunks no other backup uses, and a
//! backup's record can be exported and imported into another deployment, whose nodes read the rest
//! from the store.

pub mod operations;

use std::{collections::HashSet, sync::Arc};

use basalt::{
    ErrorCode, ServiceError,
    context::CallContext,
    ids::{BackupId, NodeId, ProjectId, VolumeId},
    proto::{
        self, BackupRecord, BackupStatus, CreateBackupRequest, DeleteBackupRequest, ListBackupsRequest, NodeBackup,
        NodeBackupRef, PageInfo, ResetBackupStatusRequest, RestoreBackupRequest, RestoreBackupResponse,
        UpdateBackupRequest, VolumeStatus,
    },
};
use base64::Engine;
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};

use self::operations::BackupOperation;
use crate::{
    Core,
    db::{backup, db_error, json::StringMap, snapshot, volume},
    journal,
    lifecycle::{self, BackupAction, VolumeAction},
    listing, quotas, status, sweeps,
};

const GIB: u64 = 1 << 30;
/// The `backup_service` of exported records.
const BACKUP_SERVICE: &str = "basalt.backup.posix";

/// The columns Cinder's sort keys name.
const SORT_COLUMNS: listing::SortColumns<backup::Column> = listing::SortColumns {
    created_at: backup::Column::CreatedAt,
    updated_at: Some(backup::Column::UpdatedAt),
    name: backup::Column::Name,
    size: Some(backup::Column::SizeGib),
    status: backup::Column::Status,
    id: backup::Column::Id,
};

pub struct Backups {
    core: Arc<Core>,
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
        Self { core }
    }

    pub async fn create(
        &self,
        context: &CallContext,
        request: CreateBackupRequest,
    ) -> Result<backup::Model, ServiceError> {
        crate::fields::check_common(&request.name, &request.description, &request.metadata)?;
        let volume = status::load::<volume::Model>(&self.core.db, context, &request.volume_id).await?;
        let action = match volume.status {
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
            let snapshot = status::load::<snapshot::Model>(&self.core.db, context, &request.snapshot_id).await?;
            if snapshot.volume_id != volume.id || snapshot.status != proto::SnapshotStatus::Available {
                return Err(ServiceError::invalid(format!(
                    "snapshot {} is not an available snapshot of volume {}",
                    snapshot.id, volume.id
                )));
            }
            Some(snapshot.id)
        };
        let parent = if request.incremental {
            let latest = backup::Entity::find()
                .filter(backup::Column::VolumeId.eq(volume.id))
                .filter(backup::Column::Status.eq(BackupStatus::Available))
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
        status::check(&volume, action, "a backup")?;
        let (node_id, pool) = volume.placement()?;
        let txn = self.core.begin_write().await?;
        let (volume_before, volume_after) = status::transition::<volume::Model>(&*txn, volume.id, action, "").await?;
        quotas::reserve(
            &*txn,
            &self.core.config.quota_defaults,
            &context.project_id,
            &quotas::backup_usage(volume.size_gib),
        )
        .await?;
        sweeps::exclude(&*txn, &volume.project_id, sweeps::SWEEPING, "back up once it is deleted").await?;
        let now = Utc::now();
        let model = backup::ActiveModel {
            id: Set(BackupId::new_random()),
            project_id: Set(volume.project_id.clone()),
            user_id: Set(context.user_id.clone()),
            volume_id: Set(volume.id),
            snapshot_id: Set(snapshot_id),
            name: Set(request.name),
            description: Set(request.description),
            status: Set(BackupStatus::Creating),
            size_gib: Set(volume.size_gib),
            object_count: Set(0),
            stored_bytes: Set(0),
            container: Set(if request.container.is_empty() { "backups".into() } else { request.container }),
            availability_zone: Set(volume.availability_zone.clone()),
            parent_id: Set(parent.as_ref().map(|parent| parent.id)),
            metadata: Set(StringMap::from(request.metadata)),
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
        let operation = BackupOperation::CreateBackup {
            backup_id: model.id,
            project_id: model.project_id.clone(),
            volume_id: volume.id,
            node_id,
            pool,
            snapshot_id,
            parent_id: model.parent_id,
            attached: action == VolumeAction::BackupAttached,
        };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        self.core.publish([status::changed(volume_before, &volume_after), status::created(&model)]).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(model)
    }

    pub async fn get(&self, context: &CallContext, backup_id: &str) -> Result<backup::Model, ServiceError> {
        status::load(&self.core.db, context, backup_id).await
    }

    pub async fn list(
        &self,
        context: &CallContext,
        request: &ListBackupsRequest,
    ) -> Result<(Vec<backup::Model>, PageInfo), ServiceError> {
        let mut condition =
            listing::project_scope(context, request.all_projects, backup::Column::ProjectId, "backups")?;
        if !request.volume_id.is_empty() {
            condition = condition.add(backup::Column::VolumeId.eq(VolumeId::parse(&request.volume_id)?));
        }
        if !request.name.is_empty() {
            condition = condition.add(backup::Column::Name.eq(request.name.as_str()));
        }
        if request.status != BackupStatus::Unspecified as i32 {
            let status = BackupStatus::try_from(request.status)
                .map_err(|_| ServiceError::invalid(format!("unknown backup status {}", request.status)))?;
            condition = condition.add(backup::Column::Status.eq(status));
        }
        let keyset = listing::Keyset::<backup::Entity> {
            order: SORT_COLUMNS.order(&request.sort, "backups")?,
            id: backup::Column::Id,
            id_of: |row| row.id.to_string(),
        };
        keyset.page(&self.core.db, condition, request.page.as_ref(), request.with_count, "backup").await
    }

    pub async fn update(
        &self,
        context: &CallContext,
        request: UpdateBackupRequest,
    ) -> Result<backup::Model, ServiceError> {
        let model = self.get(context, &request.backup_id).await?;
        let name = request.name.unwrap_or(model.name.clone());
        let description = request.description.unwrap_or(model.description.clone());
        let mut metadata = model.metadata.to_hash_map();
        if request.replace_metadata {
            metadata = request.metadata;
        } else {
            metadata.extend(request.metadata);
        }
        crate::fields::check_common(&name, &description, &metadata)?;
        let mut active: backup::ActiveModel = model.into();
        active.name = Set(name);
        active.description = Set(description);
        active.metadata = Set(StringMap::from(metadata));
        active.updated_at = Set(Utc::now());
        active.update(&self.core.db).await.map_err(db_error)
    }

    pub async fn delete(
        &self,
        context: &CallContext,
        request: DeleteBackupRequest,
    ) -> Result<backup::Model, ServiceError> {
        if request.force {
            context.authorize("volume_extension:backup_admin_actions:force_delete")?;
        }
        let model = self.get(context, &request.backup_id).await?;
        if let Some(dependent) = dependents(&self.core.db, &[model.id]).await?.into_iter().next() {
            return Err(ServiceError::conflict(format!(
                "backup {} has dependent incremental backups ({dependent} among them); delete them first",
                model.id
            )));
        }
        let action = if request.force { BackupAction::ForceDelete } else { BackupAction::Delete };
        let creating = model.status == BackupStatus::Creating;
        let txn = self.core.begin_write().await?;
        if !creating {
            sweeps::exclude(&*txn, &model.project_id, sweeps::READING_OR_WRITING, "delete once it is done").await?;
        }
        let (before, after) = status::transition::<backup::Model>(&*txn, model.id, action, "").await?;
        // A running backup is cancelled; its own operation then removes what it wrote.
        let recorded = if creating {
            None
        } else {
            let operation = BackupOperation::DeleteBackup {
                backup_id: model.id,
                project_id: model.project_id.clone(),
                node_id: model.node_id.clone(),
            };
            Some((journal::record(&*txn, &self.core, context, &operation).await?, operation))
        };
        txn.commit().await?;
        self.core.publish([status::changed(before, &after)]).await;
        match recorded {
            Some((record, operation)) => journal::launch(self.core.clone(), record, operation),
            None => self.cancel_on_node(&model).await,
        }
        Ok(after)
    }

    async fn cancel_on_node(&self, model: &backup::Model) {
        let reference = NodeBackupRef { backup_id: model.id.to_string(), project_id: model.project_id.to_string() };
        let cancelled = match self.core.nodes.client(&self.core.capacity, model.node_id.as_str()) {
            Ok(mut client) => client.cancel_backup(reference).await.map(drop).map_err(ServiceError::from),
            Err(error) => Err(error),
        };
        if let Err(error) = cancelled {
            // The backup finishes on its own then; its operation still finds `deleting` and removes it.
            tracing::warn!(backup_id = %model.id, %error, "cannot cancel the running backup on its node");
        }
    }

    /// Writes the backup onto an existing volume. (A restore that names no volume is a volume
    /// created from the backup: `Volumes::create` with its `backup_id`.)
    pub async fn restore(
        &self,
        context: &CallContext,
        request: RestoreBackupRequest,
    ) -> Result<RestoreBackupResponse, ServiceError> {
        let model = self.get(context, &request.backup_id).await?;
        status::check(&model, BackupAction::Restore, "restoring")?;
        let volume = status::load::<volume::Model>(&self.core.db, context, &request.volume_id).await?;
        if volume.size_gib < model.size_gib {
            return Err(ServiceError::invalid(format!(
                "volume {} ({} GiB) is smaller than backup {} ({} GiB)",
                volume.id, volume.size_gib, model.id, model.size_gib
            )));
        }
        let (node_id, pool) = volume.placement()?;
        let txn = self.core.begin_write().await?;
        sweeps::exclude(&*txn, &model.project_id, sweeps::SWEEPING, "restore once it is deleted").await?;
        let (volume_before, volume_after) =
            status::transition::<volume::Model>(&*txn, volume.id, VolumeAction::RestoreBackup, "").await?;
        let (before, after) = status::transition::<backup::Model>(&*txn, model.id, BackupAction::Restore, "").await?;
        let operation = BackupOperation::RestoreBackup {
            backup_id: model.id,
            project_id: model.project_id.clone(),
            volume_id: volume.id,
            node_id,
            pool,
        };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        self.core.publish([status::changed(volume_before, &volume_after), status::changed(before, &after)]).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(RestoreBackupResponse {
            backup_id: model.id.to_string(),
            volume_id: volume.id.to_string(),
            volume_name: volume.name,
        })
    }

    pub async fn reset_status(
        &self,
        context: &CallContext,
        request: ResetBackupStatusRequest,
    ) -> Result<backup::Model, ServiceError> {
        let target = BackupStatus::try_from(request.status).unwrap_or_default();
        status::resettable::<backup::Model>(target, lifecycle::BACKUP_RESETTABLE)?;
        let model = self.get(context, &request.backup_id).await?;
        let txn = self.core.begin_write().await?;
        status::reset(&*txn, &model, target, lifecycle::BACKUP_RESETTABLE).await?;
        txn.commit().await?;
        self.core.publish([status::event(&model, target.cinder_name(), "reset by an admin")]).await;
        self.get(context, &model.id.to_string()).await
    }

    pub async fn export_record(&self, context: &CallContext, backup_id: &str) -> Result<BackupRecord, ServiceError> {
        let model = self.get(context, backup_id).await?;
        if model.status != BackupStatus::Available {
            return Err(ServiceError::conflict(format!(
                "backup {} is {}; export needs it available",
                model.id,
                model.status.cinder_name()
            )));
        }
        let record = Record {
            id: model.id.to_string(),
            project_id: model.project_id.to_string(),
            volume_id: model.volume_id.to_string(),
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
        // The record is the client's: every id in it is parsed before it names anything.
        let backup_id = BackupId::parse(&record.id)?;
        let project_id = ProjectId::parse(&record.project_id)?;
        let volume_id = VolumeId::parse(&record.volume_id)?;
        if status::find::<backup::Model>(&self.core.db, backup_id).await?.is_some() {
            return Err(ServiceError::new(ErrorCode::AlreadyExists, format!("backup {backup_id} exists already")));
        }
        let (node_id, manifest) = self.find_manifest(&project_id, backup_id).await?;
        let now = Utc::now();
        let created_at =
            manifest.created_at.and_then(|at| chrono::DateTime::from_timestamp(at.seconds, 0)).unwrap_or(now);
        let txn = self.core.begin_write().await?;
        let size_gib = manifest.size_bytes.div_ceil(GIB) as i64;
        quotas::reserve(&*txn, &self.core.config.quota_defaults, &project_id, &quotas::backup_usage(size_gib)).await?;
        let parent_id = match manifest.parent_id.as_str() {
            "" => None,
            parent => Some(BackupId::parse(parent)?),
        };
        let model = backup::ActiveModel {
            id: Set(backup_id),
            project_id: Set(project_id),
            user_id: Set(context.user_id.clone()),
            volume_id: Set(volume_id),
            snapshot_id: Set(None),
            name: Set(record.name),
            description: Set(record.description),
            status: Set(BackupStatus::Available),
            size_gib: Set(size_gib),
            object_count: Set(manifest.object_count as i64),
            stored_bytes: Set(manifest.stored_bytes as i64),
            container: Set(record.container),
            availability_zone: Set(record.availability_zone),
            parent_id: Set(parent_id),
            metadata: Set(StringMap::from(manifest.metadata)),
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
    async fn find_manifest(
        &self,
        project_id: &ProjectId,
        backup_id: BackupId,
    ) -> Result<(NodeId, NodeBackup), ServiceError> {
        let mut last = ServiceError::unavailable("no volume node is reporting; none can read the backup store");
        for node in self.core.capacity.nodes() {
            let Ok(node_id) = NodeId::parse(&node.report.node_id) else { continue };
            let reference = NodeBackupRef { backup_id: backup_id.to_string(), project_id: project_id.to_string() };
            let found = match self.core.nodes.client(&self.core.capacity, node_id.as_str()) {
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

/// The backups among `ids` that incremental backups depend on.
pub async fn dependents(db: &impl ConnectionTrait, ids: &[BackupId]) -> Result<HashSet<BackupId>, ServiceError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let children = backup::Entity::find()
        .filter(backup::Column::ParentId.is_in(ids.iter().copied()))
        .all(db)
        .await
        .map_err(db_error)?;
    Ok(children.into_iter().filter_map(|child| child.parent_id).collect())
}

status::stateful! {
    backup: kind crate::events::BACKUP, id BackupId, status BackupStatus, action BackupAction, rule lifecycle::backup,
    reason Some(backup::Column::FailReason), updated_at Some(backup::Column::UpdatedAt);
    /// The backup quota it held.
    async fn release(&self, txn: &impl ConnectionTrait) -> Result<(), ServiceError> {
        quotas::release(txn, &self.project_id, &quotas::backup_usage(self.size_gib)).await
    }
}

pub fn to_proto(model: &backup::Model, has_dependents: bool) -> proto::Backup {
    proto::Backup {
        id: model.id.to_string(),
        project_id: model.project_id.to_string(),
        user_id: model.user_id.clone(),
        volume_id: model.volume_id.to_string(),
        snapshot_id: model.snapshot_id.map(|id| id.to_string()).unwrap_or_default(),
        name: model.name.clone(),
        description: model.description.clone(),
        status: model.status as i32,
        size_gib: model.size_gib as u64,
        object_count: model.object_count as u64,
        container: model.container.clone(),
        availability_zone: model.availability_zone.clone(),
        is_incremental: model.parent_id.is_some(),
        has_dependent_backups: has_dependents,
        parent_id: model.parent_id.map(|id| id.to_string()).unwrap_or_default(),
        metadata: model.metadata.to_hash_map(),
        progress: model.progress as u32,
        stored_bytes: model.stored_bytes as u64,
        fail_reason: model.fail_reason.clone(),
        created_at: Some(std::time::SystemTime::from(model.created_at).into()),
        updated_at: Some(std::time::SystemTime::from(model.updated_at).into()),
        data_timestamp: Some(std::time::SystemTime::from(model.data_timestamp).into()),
    }
}
