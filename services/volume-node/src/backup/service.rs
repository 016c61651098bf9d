//! The node's backup work: which bytes a backup reads (the volume, a snapshot of it, or a
//! temporary snapshot for a volume in use), the backups and restores running here with their
//! progress, and cancellation.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use basalt::{
    ErrorCode, ServiceError,
    ids::{BackupId, ProjectId, SnapshotId, VolumeId},
};

use super::{
    engine::{self, BackupSource, Manifest, Progress},
    s3::{S3Settings, S3Store},
    store::{BackupStore, PosixStore},
};

/// Where a node keeps backups.
#[derive(Debug, Clone)]
pub enum BackupStoreSettings {
    /// A directory shared by the nodes (an NFS mount in production).
    Posix(PathBuf),
    S3(S3Settings),
}
use crate::{
    backend::{Backend, blocking},
    metrics,
};

pub struct Backups {
    store: Option<Arc<BackupStore>>,
    running: Mutex<HashMap<BackupId, Progress>>,
}

/// What to back up, as the scheduler asks for it.
pub struct BackupOrder {
    pub backup_id: BackupId,
    pub project_id: ProjectId,
    pub volume_id: VolumeId,
    pub pool: String,
    pub snapshot_id: Option<SnapshotId>,
    pub from_temporary_snapshot: bool,
    pub parent_id: Option<BackupId>,
    pub name: String,
    pub description: String,
    pub metadata: BTreeMap<String, String>,
}

/// Removes a running entry when the work ends, however it ends.
struct Running<'a> {
    backups: &'a Backups,
    backup_id: BackupId,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.backups.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.backup_id);
    }
}

impl Backups {
    /// `None` when this node takes no backups. Opened inside the node's runtime.
    pub fn open(settings: Option<&BackupStoreSettings>) -> Result<Self, ServiceError> {
        let store = match settings {
            None => None,
            Some(BackupStoreSettings::Posix(dir)) => Some(BackupStore::Posix(PosixStore::open(dir)?)),
            Some(BackupStoreSettings::S3(s3)) => Some(BackupStore::S3(S3Store::open(s3)?)),
        };
        Ok(Self { store: store.map(Arc::new), running: Mutex::new(HashMap::new()) })
    }

    fn store(&self) -> Result<Arc<BackupStore>, ServiceError> {
        self.store.clone().ok_or_else(|| {
            ServiceError::new(
                ErrorCode::Unavailable,
                "this node has no backup store; start it with --backup-store-dir <directory> or --backup-s3-bucket <bucket>",
            )
        })
    }

    fn start(&self, backup_id: BackupId) -> Result<(Progress, Running<'_>), ServiceError> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.contains_key(&backup_id) {
            return Err(ServiceError::conflict(format!("backup {backup_id} is already being worked on here")));
        }
        let progress = Progress::default();
        running.insert(backup_id, progress.clone());
        Ok((progress, Running { backups: self, backup_id }))
    }

    /// Percent done of a backup or restore running here, if one is.
    pub fn progress(&self, backup_id: &BackupId) -> Option<u32> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).get(backup_id).map(Progress::percent)
    }

    /// Cancels a running backup; `false` when none runs here.
    pub fn cancel(&self, backup_id: &BackupId) -> bool {
        match self.running.lock().unwrap_or_else(|e| e.into_inner()).get(backup_id) {
            Some(progress) => {
                progress.cancel();
                true
            }
            None => false,
        }
    }

    pub async fn manifest(&self, project_id: &ProjectId, backup_id: BackupId) -> Result<Manifest, ServiceError> {
        let store = self.store()?;
        let project_id = project_id.clone();
        blocking(move || engine::read_manifest(&store.project(&project_id), &backup_id)).await
    }

    pub async fn backup(&self, backend: &impl Backend, order: BackupOrder) -> Result<Manifest, ServiceError> {
        let store = self.store()?;
        if let Ok(existing) = self.manifest(&order.project_id, order.backup_id).await {
            return Ok(existing);
        }
        let parent = match order.parent_id {
            Some(parent_id) => Some(self.manifest(&order.project_id, parent_id).await?),
            None => None,
        };
        let (progress, _running) = self.start(order.backup_id)?;
        // A volume in use is read through a snapshot taken for this backup (named by its id).
        let temporary =
            if order.from_temporary_snapshot { Some(SnapshotId::parse(&order.backup_id.to_string())?) } else { None };
        let (path, size_bytes) = match (order.snapshot_id, temporary) {
            (Some(snapshot_id), _) => {
                let snapshot = backend.get_snapshot(&order.pool, snapshot_id).await?.ok_or_else(|| {
                    ServiceError::not_found(format!("snapshot {snapshot_id} is not in pool {:?}", order.pool))
                })?;
                (snapshot.path, snapshot.size_bytes)
            }
            (None, Some(snapshot_id)) => {
                let snapshot = backend.create_snapshot(&order.pool, snapshot_id, order.volume_id).await?;
                (snapshot.path, snapshot.size_bytes)
            }
            (None, None) => {
                let volume = backend.get_volume(&order.pool, order.volume_id).await?.ok_or_else(|| {
                    ServiceError::not_found(format!("volume {} is not in pool {:?}", order.volume_id, order.pool))
                })?;
                (volume.path, volume.size_bytes)
            }
        };
        let backup_id = order.backup_id;
        let started = Instant::now();
        let outcome = blocking(move || {
            let source = BackupSource {
                backup_id: order.backup_id,
                volume_id: &order.volume_id.to_string(),
                path: &PathBuf::from(&path),
                size_bytes,
                parent: parent.as_ref(),
                name: &order.name,
                description: &order.description,
                metadata: order.metadata,
                created_unix_seconds: unix_seconds(),
            };
            engine::backup(&store.project(&order.project_id), source, &progress)
        })
        .await;
        metrics::backup_finished("backup", started, outcome.as_ref().ok().map(|manifest| manifest.size_bytes));
        if let Some(snapshot_id) = temporary
            && let Err(error) = backend.delete_snapshot(&order.pool, snapshot_id).await
        {
            tracing::warn!(%backup_id, %error, "cannot remove the backup's temporary snapshot");
        }
        outcome
    }

    pub async fn restore(
        &self,
        backend: &impl Backend,
        project_id: &ProjectId,
        backup_id: BackupId,
        pool: &str,
        volume_id: VolumeId,
    ) -> Result<(), ServiceError> {
        let store = self.store()?;
        let manifest = self.manifest(project_id, backup_id).await?;
        let volume = backend
            .get_volume(pool, volume_id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("volume {volume_id} is not in pool {pool:?}")))?;
        let (progress, _running) = self.start(backup_id)?;
        let project_id = project_id.clone();
        let (started, size_bytes) = (Instant::now(), manifest.size_bytes);
        let outcome = blocking(move || {
            engine::restore(&store.project(&project_id), &manifest, Path::new(&volume.path), &progress)
        })
        .await;
        metrics::backup_finished("restore", started, outcome.as_ref().ok().map(|()| size_bytes));
        outcome
    }

    /// Deletes the backup, and with `sweep` the chunks no other backup names; `(existed, freed bytes)`.
    pub async fn delete(
        &self,
        project_id: &ProjectId,
        backup_id: BackupId,
        sweep: bool,
    ) -> Result<(bool, u64), ServiceError> {
        if self.progress(&backup_id).is_some() {
            return Err(ServiceError::conflict(format!("backup {backup_id} is running here; cancel it first")));
        }
        let store = self.store()?;
        let existed = self.manifest(project_id, backup_id).await.is_ok();
        let project_id = project_id.clone();
        let freed = blocking(move || engine::delete(&store.project(&project_id), &backup_id, sweep)).await?;
        Ok((existed, freed))
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs())
}
