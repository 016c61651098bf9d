//! The `file` backend: each volume is a sparse raw file `volume-<uuid>` and each snapshot a file
//! `snapshot-<uuid>` in the pool's directory.
//!
//! - Every change is atomic: the new content is written to a temporary file and renamed into
//!   place, so a crash leaves the old state or the new one, never half of each. Leftover temporary
//!   files are removed when the backend opens.
//! - Snapshots, clones and volumes from snapshots are reflinks where the filesystem shares extents
//!   (XFS, btrfs), else copies of the data extents only: holes are never copied.
//! - Secure delete: a file's whole range is punched out (or its data overwritten with zeros where
//!   punching is unsupported) before it is unlinked. A new volume is a fresh sparse file, which
//!   reads as zeros, so one tenant's bytes never reach the next.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use basalt::{
    ErrorCode, ServiceError,
    ids::{SnapshotId, VolumeId},
    proto::PoolCapacity,
};

use super::{
    Backend, BackendSnapshot, BackendVolume, Manageable, ManageableSnapshot, VolumeClear, VolumeSource, adoption,
    blocking, check_manageable_name, sparse,
};

const VOLUME_PREFIX: &str = "volume-";
const SNAPSHOT_PREFIX: &str = "snapshot-";
/// Temporary files carry this in their name until they are renamed into place.
const STAGING_MARK: &str = ".staging-";

#[derive(Debug, Clone)]
pub struct FileBackendConfig {
    /// The directory that holds the pool's files.
    pub root: PathBuf,
    pub pool: String,
    /// Cinder's `max_over_subscription_ratio` for this thin pool. 1.0 (the default) never promises
    /// more virtual bytes than the filesystem holds, so a sparse volume can always be filled.
    pub max_over_subscription_ratio: f64,
    pub reserved_percentage: u32,
    /// Caps the pool below the filesystem's size, for a filesystem shared with other data.
    pub max_capacity_bytes: Option<u64>,
    /// The backend name reported with the pool: `file`, or `nfs` when the directory is an NFS share.
    pub driver: &'static str,
    /// Whether freed extents are overwritten with zeros first.
    pub clear: VolumeClear,
}

#[derive(Debug)]
pub struct FileBackend {
    config: FileBackendConfig,
}

impl FileBackend {
    pub fn open(config: FileBackendConfig) -> Result<Self, ServiceError> {
        fs::create_dir_all(&config.root).map_err(|error| io_error("create the directory", &config.root, error))?;
        remove_staging_files(&config.root, config.clear)?;
        Ok(Self { config })
    }

    pub fn volume_path(&self, volume_id: VolumeId) -> PathBuf {
        self.config.root.join(format!("{VOLUME_PREFIX}{volume_id}"))
    }

    pub fn snapshot_path(&self, snapshot_id: SnapshotId) -> PathBuf {
        self.config.root.join(format!("{SNAPSHOT_PREFIX}{snapshot_id}"))
    }

    fn check_pool(&self, pool: &str) -> Result<(), ServiceError> {
        if pool == self.config.pool {
            return Ok(());
        }
        Err(ServiceError::not_found(format!(
            "pool {pool:?} is not on this node; its file pool is {:?}",
            self.config.pool
        )))
    }

    async fn describe_volume(&self, pool: &str, volume_id: VolumeId) -> Result<BackendVolume, ServiceError> {
        self.get_volume(pool, volume_id)
            .await?
            .ok_or_else(|| ServiceError::internal(format!("volume {volume_id} vanished right after it was written")))
    }
}

impl Backend for FileBackend {
    async fn create_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        size_bytes: u64,
        source: VolumeSource,
    ) -> Result<BackendVolume, ServiceError> {
        self.check_pool(pool)?;
        if size_bytes == 0 {
            return Err(ServiceError::invalid("a volume needs a size of at least 1 byte"));
        }
        let path = self.volume_path(volume_id);
        let source_path = match source {
            VolumeSource::Empty => None,
            VolumeSource::Snapshot(snapshot_id) => Some(self.snapshot_path(snapshot_id)),
            VolumeSource::Volume(source_id) => Some(self.volume_path(source_id)),
        };
        let clear = self.config.clear;
        blocking(move || create_file(&path, size_bytes, source_path.as_deref(), clear)).await?;
        self.describe_volume(pool, volume_id).await
    }

    async fn extend_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        new_size_bytes: u64,
    ) -> Result<BackendVolume, ServiceError> {
        self.check_pool(pool)?;
        let path = self.volume_path(volume_id);
        blocking(move || {
            let file = OpenOptions::new().write(true).open(&path).map_err(|error| io_error("open", &path, error))?;
            let current = file.metadata().map_err(|error| io_error("inspect", &path, error))?.len();
            // A repeated extend finds the file already grown: success.
            if current < new_size_bytes {
                file.set_len(new_size_bytes).map_err(|error| io_error("extend", &path, error))?;
                file.sync_all().map_err(|error| io_error("sync", &path, error))?;
            }
            Ok(())
        })
        .await?;
        self.describe_volume(pool, volume_id).await
    }

    async fn delete_volume(&self, pool: &str, volume_id: VolumeId) -> Result<bool, ServiceError> {
        self.check_pool(pool)?;
        let path = self.volume_path(volume_id);
        let clear = self.config.clear;
        blocking(move || wipe_and_remove(&path, clear)).await
    }

    async fn get_volume(&self, pool: &str, volume_id: VolumeId) -> Result<Option<BackendVolume>, ServiceError> {
        self.check_pool(pool)?;
        let path = self.volume_path(volume_id);
        let pool = pool.to_owned();
        blocking(move || {
            Ok(inspect(&path)?.map(|(size_bytes, allocated_bytes)| BackendVolume {
                volume_id,
                pool,
                size_bytes,
                path: path.display().to_string(),
                allocated_bytes,
            }))
        })
        .await
    }

    async fn create_snapshot(
        &self,
        pool: &str,
        snapshot_id: SnapshotId,
        volume_id: VolumeId,
    ) -> Result<BackendSnapshot, ServiceError> {
        self.check_pool(pool)?;
        let path = self.snapshot_path(snapshot_id);
        let source = self.volume_path(volume_id);
        let clear = self.config.clear;
        blocking(move || {
            if inspect(&path)?.is_some() {
                // A repeated snapshot request: the snapshot was already taken.
                return Ok(());
            }
            let size = inspect(&source)?
                .ok_or_else(|| ServiceError::not_found(format!("volume {volume_id} is not on this node")))?
                .0;
            create_file(&path, size, Some(&source), clear)
        })
        .await?;
        self.get_snapshot(pool, snapshot_id)
            .await?
            .ok_or_else(|| ServiceError::internal(format!("snapshot {snapshot_id} vanished right after it was taken")))
    }

    async fn get_snapshot(&self, pool: &str, snapshot_id: SnapshotId) -> Result<Option<BackendSnapshot>, ServiceError> {
        self.check_pool(pool)?;
        let path = self.snapshot_path(snapshot_id);
        let pool = pool.to_owned();
        blocking(move || {
            Ok(inspect(&path)?.map(|(size_bytes, _)| BackendSnapshot {
                snapshot_id,
                pool,
                size_bytes,
                path: path.display().to_string(),
            }))
        })
        .await
    }

    async fn delete_snapshot(&self, pool: &str, snapshot_id: SnapshotId) -> Result<bool, ServiceError> {
        self.check_pool(pool)?;
        let path = self.snapshot_path(snapshot_id);
        let clear = self.config.clear;
        blocking(move || wipe_and_remove(&path, clear)).await
    }

    /// Replaces the volume's content with the snapshot's; the volume keeps its own size if it grew
    /// after the snapshot (Cinder's revert keeps the current size).
    async fn revert_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        snapshot_id: SnapshotId,
    ) -> Result<BackendVolume, ServiceError> {
        self.check_pool(pool)?;
        let path = self.volume_path(volume_id);
        let snapshot = self.snapshot_path(snapshot_id);
        let clear = self.config.clear;
        blocking(move || {
            let size = inspect(&path)?
                .ok_or_else(|| ServiceError::not_found(format!("volume {volume_id} is not on this node")))?
                .0;
            if inspect(&snapshot)?.is_none() {
                return Err(ServiceError::not_found(format!("snapshot {snapshot_id} is not on this node")));
            }
            // The old content is replaced by a rename, and wiped (write_atomically).
            write_atomically(&path, clear, |staging| {
                let source = File::open(&snapshot)?;
                sparse::copy_sparse(&source, staging)?;
                if staging.metadata()?.len() < size {
                    staging.set_len(size)?;
                }
                Ok(())
            })
        })
        .await?;
        self.describe_volume(pool, volume_id).await
    }

    /// Every volume and snapshot in the pool.
    async fn manageable(&self, pool: &str) -> Result<Vec<Manageable>, ServiceError> {
        self.check_pool(pool)?;
        let root = self.config.root.clone();
        blocking(move || {
            let entries = fs::read_dir(&root).map_err(|error| io_error("list", &root, error))?;
            let mut found = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|error| io_error("list", &root, error))?;
                let Ok(name) = entry.file_name().into_string() else { continue };
                if check_manageable_name(&name, &[SNAPSHOT_PREFIX], &[STAGING_MARK]).is_err() {
                    continue;
                }
                let metadata = entry.metadata().map_err(|error| io_error("inspect", &entry.path(), error))?;
                if metadata.is_dir() {
                    continue;
                }
                found.push(Manageable {
                    size_bytes: metadata.len(),
                    reason_not_safe: unsafe_to_adopt(&metadata),
                    name,
                });
            }
            found.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(found)
        })
        .await
    }

    async fn manage_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        source_name: &str,
        size_bytes: u64,
    ) -> Result<BackendVolume, ServiceError> {
        self.check_pool(pool)?;
        check_manageable_name(source_name, &[SNAPSHOT_PREFIX], &[STAGING_MARK])?;
        let source = self.config.root.join(source_name);
        let path = self.volume_path(volume_id);
        let source_name = source_name.to_owned();
        blocking(move || {
            if source != path {
                match fs::symlink_metadata(&source) {
                    Ok(metadata) => {
                        if let Some(reason) = unsafe_to_adopt(&metadata) {
                            return Err(adoption::unsafe_object(&source_name, &reason));
                        }
                        if metadata.len() > size_bytes {
                            return Err(adoption::grew(&source_name, metadata.len(), size_bytes));
                        }
                        if inspect(&path)?.is_some() {
                            return Err(adoption::target_exists(volume_id, &source_name));
                        }
                        // One rename: the object is the volume or still itself, never both or neither.
                        fs::rename(&source, &path).map_err(|error| io_error("rename", &source, error))?;
                        sync_parent(&path).map_err(|error| io_error("sync the directory of", &path, error))?;
                    }
                    // A repeat after the rename finds the volume in its place.
                    Err(error) if error.kind() == io::ErrorKind::NotFound && inspect(&path)?.is_some() => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {
                        return Err(adoption::missing(&source_name));
                    }
                    Err(error) => return Err(io_error("inspect", &source, error)),
                }
            }
            let file = OpenOptions::new().write(true).open(&path).map_err(|error| io_error("open", &path, error))?;
            let current = file.metadata().map_err(|error| io_error("inspect", &path, error))?.len();
            if current < size_bytes {
                file.set_len(size_bytes).map_err(|error| io_error("extend", &path, error))?;
                file.sync_all().map_err(|error| io_error("sync", &path, error))?;
            }
            Ok(())
        })
        .await?;
        self.describe_volume(pool, volume_id).await
    }

    async fn manageable_snapshots(&self, pool: &str) -> Result<Vec<ManageableSnapshot>, ServiceError> {
        self.check_pool(pool)?;
        let root = self.config.root.clone();
        blocking(move || {
            let mut found = Vec::new();
            for (name, path) in pool_files(&root)? {
                if !name.starts_with(SNAPSHOT_PREFIX) {
                    continue;
                }
                let metadata = fs::symlink_metadata(&path).map_err(|error| io_error("inspect", &path, error))?;
                // A file snapshot does not record its volume: the admin names it when adopting.
                let reason_not_safe = unsafe_to_adopt(&metadata);
                found.push(ManageableSnapshot { name, size_bytes: metadata.len(), origin: None, reason_not_safe });
            }
            found.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(found)
        })
        .await
    }

    async fn manage_snapshot(
        &self,
        pool: &str,
        snapshot_id: SnapshotId,
        volume_id: VolumeId,
        source_name: &str,
    ) -> Result<BackendSnapshot, ServiceError> {
        self.check_pool(pool)?;
        check_manageable_name(source_name, &[], &[STAGING_MARK])?;
        if !source_name.starts_with(SNAPSHOT_PREFIX) {
            return Err(adoption::unsafe_object(source_name, "the file backend's snapshots are named snapshot-..."));
        }
        let source = self.config.root.join(source_name);
        let path = self.snapshot_path(snapshot_id);
        let volume = self.volume_path(volume_id);
        let source_name = source_name.to_owned();
        blocking(move || {
            if source == path {
                return Ok(());
            }
            let metadata = match fs::symlink_metadata(&source) {
                Ok(metadata) => metadata,
                // A repeat after the rename finds the snapshot in its place.
                Err(error) if error.kind() == io::ErrorKind::NotFound && inspect(&path)?.is_some() => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(adoption::missing(&source_name)),
                Err(error) => return Err(io_error("inspect", &source, error)),
            };
            if let Some(reason) = unsafe_to_adopt(&metadata) {
                return Err(adoption::unsafe_object(&source_name, &reason));
            }
            let (volume_bytes, _) = inspect(&volume)?
                .ok_or_else(|| ServiceError::not_found(format!("volume {volume_id} is not on this node")))?;
            if metadata.len() != volume_bytes {
                let why = format!("it holds {} bytes, the volume {volume_bytes}", metadata.len());
                return Err(adoption::not_of_volume(&source_name, volume_id, &why));
            }
            fs::rename(&source, &path).map_err(|error| io_error("rename", &source, error))?;
            sync_parent(&path).map_err(|error| io_error("sync the directory of", &path, error))
        })
        .await?;
        self.get_snapshot(pool, snapshot_id).await?.ok_or_else(|| {
            ServiceError::internal(format!("snapshot {snapshot_id} vanished right after it was adopted"))
        })
    }

    async fn list(&self) -> Result<(Vec<BackendVolume>, Vec<BackendSnapshot>), ServiceError> {
        let root = self.config.root.clone();
        let pool = self.config.pool.clone();
        blocking(move || {
            let mut volumes = Vec::new();
            let mut snapshots = Vec::new();
            for (name, path) in pool_files(&root)? {
                let Some((size_bytes, allocated_bytes)) = inspect(&path)? else {
                    continue;
                };
                if let Some(id) = name.strip_prefix(VOLUME_PREFIX).and_then(|id| VolumeId::parse(id).ok()) {
                    volumes.push(BackendVolume {
                        volume_id: id,
                        pool: pool.clone(),
                        size_bytes,
                        path: path.display().to_string(),
                        allocated_bytes,
                    });
                } else if let Some(id) = name.strip_prefix(SNAPSHOT_PREFIX).and_then(|id| SnapshotId::parse(id).ok()) {
                    snapshots.push(BackendSnapshot {
                        snapshot_id: id,
                        pool: pool.clone(),
                        size_bytes,
                        path: path.display().to_string(),
                    });
                }
            }
            Ok((volumes, snapshots))
        })
        .await
    }

    async fn capacity(&self) -> Result<Vec<PoolCapacity>, ServiceError> {
        let config = self.config.clone();
        let (volumes, snapshots) = self.list().await?;
        blocking(move || {
            let (filesystem_total, filesystem_free) = filesystem_space(&config.root)?;
            let volume_bytes: u64 = volumes.iter().map(|volume| volume.size_bytes).sum();
            let snapshot_bytes: u64 = snapshots.iter().map(|snapshot| snapshot.size_bytes).sum();
            let used_bytes: u64 = volumes.iter().map(|volume| volume.allocated_bytes).sum();
            let (total_bytes, free_bytes) = match config.max_capacity_bytes {
                Some(cap) => (filesystem_total.min(cap), filesystem_free.min(cap.saturating_sub(used_bytes))),
                None => (filesystem_total, filesystem_free),
            };
            Ok(vec![PoolCapacity {
                name: config.pool.clone(),
                backend: config.driver.into(),
                total_bytes,
                free_bytes,
                provisioned_bytes: volume_bytes + snapshot_bytes,
                allocated_bytes: volume_bytes,
                thin_provisioning_support: true,
                thick_provisioning_support: false,
                max_over_subscription_ratio: config.max_over_subscription_ratio,
                reserved_percentage: config.reserved_percentage,
                total_volumes: volumes.len() as u64,
                multiattach: true,
                capabilities: [
                    ("volume_backend_name".to_owned(), config.driver.to_owned()),
                    ("storage_protocol".to_owned(), if config.driver == "nfs" { "nfs" } else { "iSCSI" }.to_owned()),
                    ("sparse_copy_volume".to_owned(), "True".to_owned()),
                ]
                .into(),
            }])
        })
        .await
    }
}

/// The pool's volume and snapshot files (not staging files), by name.
fn pool_files(root: &Path) -> Result<Vec<(String, PathBuf)>, ServiceError> {
    let entries = fs::read_dir(root).map_err(|error| io_error("list", root, error))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| io_error("list", root, error))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(STAGING_MARK) {
            continue;
        }
        if name.starts_with(VOLUME_PREFIX) || name.starts_with(SNAPSHOT_PREFIX) {
            files.push((name, entry.path()));
        }
    }
    Ok(files)
}

/// Why a directory entry must never become a volume: a link would hand a tenant whatever it
/// points at (a host file), a second name would let the file change behind the volume's back.
fn unsafe_to_adopt(metadata: &fs::Metadata) -> Option<String> {
    if metadata.file_type().is_symlink() {
        return Some("it is a symbolic link".into());
    }
    if !metadata.is_file() {
        return Some("it is not a regular file".into());
    }
    if metadata.nlink() > 1 {
        return Some(format!("it has {} names (hard links)", metadata.nlink()));
    }
    None
}

/// Size and allocated bytes of `path`, or `None` when it does not exist.
fn inspect(path: &Path) -> Result<Option<(u64, u64)>, ServiceError> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(Some((metadata.len(), metadata.blocks() * 512))),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error("inspect", path, error)),
    }
}

/// Creates `path` of `size_bytes`, empty or as a copy of `source` grown to that size. An existing
/// file of the same size is success (idempotent create); of another size, a conflict.
fn create_file(path: &Path, size_bytes: u64, source: Option<&Path>, clear: VolumeClear) -> Result<(), ServiceError> {
    if let Some((existing, _)) = inspect(path)? {
        if existing == size_bytes {
            return Ok(());
        }
        return Err(ServiceError::new(
            ErrorCode::AlreadyExists,
            format!("{} already exists with {existing} bytes, not the {size_bytes} requested", path.display()),
        ));
    }
    let source = match source {
        None => None,
        Some(source) => Some(File::open(source).map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => {
                ServiceError::not_found(format!("the source {} is not on this node", source.display()))
            }
            _ => io_error("open", source, error),
        })?),
    };
    if let Some(source) = &source {
        let source_size = source.metadata().map_err(|error| ServiceError::internal(error.to_string()))?.len();
        if source_size > size_bytes {
            return Err(ServiceError::invalid(format!(
                "the new volume ({size_bytes} bytes) cannot be smaller than its source ({source_size} bytes)"
            )));
        }
    }
    write_atomically(path, clear, |staging| {
        if let Some(source) = &source {
            sparse::copy_sparse(source, staging)?;
        }
        staging.set_len(size_bytes)
    })
}

/// Writes `path` through a staging file renamed into place once complete and synced.
fn write_atomically(
    path: &Path,
    clear: VolumeClear,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), ServiceError> {
    let marked = |what: &str| {
        path.with_file_name(format!(
            "{}{STAGING_MARK}{what}-{}",
            path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default(),
            uuid::Uuid::new_v4().simple()
        ))
    };
    let staging = marked("new");
    // The content being replaced keeps a name until it is wiped: the rename alone would free its
    // blocks with the tenant's old bytes on them. Marked as staging, a crash leaves it to the
    // start-up sweep, which wipes it.
    let retired = marked("old");
    let result = (|| {
        // Owner-only: the file holds a tenant's bytes.
        let mut file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&staging)?;
        fill(&mut file)?;
        file.sync_all()?;
        let replacing = match fs::hard_link(path, &retired) {
            Ok(()) => true,
            Err(error) if error.kind() == io::ErrorKind::NotFound => false,
            Err(error) => return Err(error),
        };
        fs::rename(&staging, path)?;
        sync_parent(path)?;
        Ok(replacing)
    })();
    match result {
        Ok(true) => wipe_and_remove(&retired, clear).map(|_| ()),
        Ok(false) => Ok(()),
        Err(error) => {
            let _ = wipe_and_remove(&staging, clear);
            let _ = discard_retired(path, &retired, clear);
            Err(io_error("write", path, error))
        }
    }
}

/// Removes a retired name: wiped when it holds replaced content, only unlinked while it is still
/// a second name of the live file (a crash before the rename), whose bytes must stay.
fn discard_retired(live: &Path, retired: &Path, clear: VolumeClear) -> Result<(), ServiceError> {
    use std::os::unix::fs::MetadataExt;
    let same_file = match (fs::metadata(live), fs::metadata(retired)) {
        (Ok(live), Ok(retired)) => live.dev() == retired.dev() && live.ino() == retired.ino(),
        (_, Err(error)) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        _ => false,
    };
    if same_file {
        return fs::remove_file(retired).map_err(|error| io_error("remove", retired, error));
    }
    wipe_and_remove(retired, clear).map(|_| ())
}

/// Removes staging files a crash left behind, wiping them first: they may hold tenant bytes.
fn remove_staging_files(root: &Path, clear: VolumeClear) -> Result<(), ServiceError> {
    let entries = fs::read_dir(root).map_err(|error| io_error("list", root, error))?;
    for entry in entries {
        let entry = entry.map_err(|error| io_error("list", root, error))?;
        if entry.file_name().to_string_lossy().contains(STAGING_MARK) {
            tracing::warn!(path = %entry.path().display(), "removing a staging file left by an interrupted operation");
            let name = entry.file_name().to_string_lossy().into_owned();
            let live = root.join(name.split(STAGING_MARK).next().unwrap_or_default());
            discard_retired(&live, &entry.path(), clear)?;
        }
    }
    Ok(())
}

/// Discards the file's bytes, then unlinks it. `Ok(false)` when it did not exist.
fn wipe_and_remove(path: &Path, clear: VolumeClear) -> Result<bool, ServiceError> {
    let mut file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(io_error("open", path, error)),
    };
    let wiped = match clear {
        VolumeClear::Zero => sparse::wipe(&mut file),
        VolumeClear::None => sparse::release(&mut file),
    };
    wiped.map_err(|error| io_error("wipe", path, error))?;
    drop(file);
    fs::remove_file(path).map_err(|error| io_error("remove", path, error))?;
    sync_parent(path).map_err(|error| io_error("sync the directory of", path, error))?;
    Ok(true)
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

/// Total and available bytes of the filesystem holding `path`.
fn filesystem_space(path: &Path) -> Result<(u64, u64), ServiceError> {
    use std::{ffi::CString, os::unix::ffi::OsStrExt};
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ServiceError::internal(format!("path {} contains a NUL byte", path.display())))?;
    // SAFETY: statvfs is plain old data; zeroes are a valid value.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid C string and stats a valid out-pointer.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
        return Err(io_error("statvfs", path, io::Error::last_os_error()));
    }
    let fragment = stats.f_frsize as u64;
    Ok((stats.f_blocks as u64 * fragment, stats.f_bavail as u64 * fragment))
}

fn io_error(action: &str, path: &Path, error: io::Error) -> ServiceError {
    let code = if error.kind() == io::ErrorKind::NotFound { ErrorCode::NotFound } else { ErrorCode::Internal };
    ServiceError::new(code, format!("cannot {action} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use super::*;

    fn backend(dir: &Path) -> FileBackend {
        FileBackend::open(FileBackendConfig {
            root: dir.to_path_buf(),
            pool: "default".into(),
            max_over_subscription_ratio: 1.0,
            reserved_percentage: 0,
            max_capacity_bytes: None,
            driver: "file",
            clear: VolumeClear::Zero,
        })
        .unwrap()
    }

    fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
        let mut file = OpenOptions::new().write(true).open(path).unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(bytes).unwrap();
        file.sync_all().unwrap();
    }

    fn read_at(path: &Path, offset: u64, length: usize) -> Vec<u8> {
        let mut file = File::open(path).unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        let mut bytes = vec![0; length];
        file.read_exact(&mut bytes).unwrap();
        bytes
    }

    #[tokio::test]
    async fn create_is_sparse_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let backend = backend(dir.path());
        let id = VolumeId::new_random();
        let created = backend.create_volume("default", id, 1 << 30, VolumeSource::Empty).await.unwrap();
        assert_eq!(created.size_bytes, 1 << 30);
        assert_eq!(created.allocated_bytes, 0, "a new volume must not allocate blocks");
        assert_eq!(fs::metadata(backend.volume_path(id)).unwrap().mode() & 0o777, 0o600);
        let again = backend.create_volume("default", id, 1 << 30, VolumeSource::Empty).await.unwrap();
        assert_eq!(again, created);
        let conflict = backend.create_volume("default", id, 2 << 30, VolumeSource::Empty).await.unwrap_err();
        assert_eq!(conflict.code, ErrorCode::AlreadyExists);
    }

    #[tokio::test]
    async fn only_plain_files_of_the_pool_are_adopted_and_links_never() {
        let outside = tempfile::tempdir().unwrap();
        let host_file = outside.path().join("host-secret");
        fs::write(&host_file, b"host bytes").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let backend = backend(dir.path());
        std::os::unix::fs::symlink(&host_file, dir.path().join("evil")).unwrap();
        fs::hard_link(&host_file, dir.path().join("twin")).unwrap_or_else(|_| {
            // Another filesystem: a second name inside the pool shows the same refusal.
            fs::write(dir.path().join("twin"), b"x").unwrap();
            fs::hard_link(dir.path().join("twin"), dir.path().join("twin-2")).unwrap();
        });
        fs::create_dir(dir.path().join("subdir")).unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, vec![7u8; 1536 * 1024]).unwrap();

        let listed = backend.manageable("default").await.unwrap();
        let names: Vec<&str> = listed.iter().map(|object| object.name.as_str()).collect();
        assert!(!names.contains(&"subdir"), "{listed:?}");
        let reason =
            |name: &str| listed.iter().find(|object| object.name == name).and_then(|o| o.reason_not_safe.clone());
        assert!(reason("evil").is_some_and(|reason| reason.contains("symbolic link")), "{listed:?}");
        assert!(reason("twin").is_some_and(|reason| reason.contains("names")), "{listed:?}");
        assert!(listed.iter().any(|object| object.name == "plain" && object.size_bytes == 1536 * 1024));
        assert_eq!(reason("plain"), None);

        for refused in ["evil", "twin", "subdir"] {
            let error = backend.manage_volume("default", VolumeId::new_random(), refused, 4 << 20).await.unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidArgument, "{refused}: {error:?}");
        }
        assert_eq!(fs::read(&host_file).unwrap(), b"host bytes", "the host file is untouched");

        let id = VolumeId::new_random();
        let adopted = backend.manage_volume("default", id, "plain", 2 << 20).await.unwrap();
        assert_eq!(adopted.size_bytes, 2 << 20);
        assert!(!plain.exists(), "the object now lives under the volume's name only");
        assert_eq!(read_at(&backend.volume_path(id), 0, 4), vec![7u8; 4]);
        assert_eq!(read_at(&backend.volume_path(id), 1536 * 1024, 4), vec![0u8; 4], "the grown part reads zeros");
    }

    #[tokio::test]
    async fn delete_is_idempotent_and_unknown_pools_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let backend = backend(dir.path());
        let id = VolumeId::new_random();
        backend.create_volume("default", id, 4096, VolumeSource::Empty).await.unwrap();
        assert!(backend.delete_volume("default", id).await.unwrap());
        assert!(!backend.delete_volume("default", id).await.unwrap());
        assert_eq!(backend.get_volume("default", id).await.unwrap(), None);
        let elsewhere = backend.create_volume("other", id, 4096, VolumeSource::Empty).await.unwrap_err();
        assert_eq!(elsewhere.code, ErrorCode::NotFound);
    }

    #[tokio::test]
    async fn snapshots_clones_and_reverts_keep_the_right_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let backend = backend(dir.path());
        let volume = VolumeId::new_random();
        backend.create_volume("default", volume, 8 << 20, VolumeSource::Empty).await.unwrap();
        write_at(&backend.volume_path(volume), 4096, b"before");

        let snapshot = SnapshotId::new_random();
        backend.create_snapshot("default", snapshot, volume).await.unwrap();
        // Idempotent: a repeat does not retake the snapshot after the volume changed.
        write_at(&backend.volume_path(volume), 4096, b"after!");
        backend.create_snapshot("default", snapshot, volume).await.unwrap();
        assert_eq!(read_at(&backend.snapshot_path(snapshot), 4096, 6), b"before");

        let from_snapshot = VolumeId::new_random();
        let restored =
            backend.create_volume("default", from_snapshot, 16 << 20, VolumeSource::Snapshot(snapshot)).await.unwrap();
        assert_eq!(restored.size_bytes, 16 << 20);
        assert_eq!(read_at(&backend.volume_path(from_snapshot), 4096, 6), b"before");

        let clone = VolumeId::new_random();
        backend.create_volume("default", clone, 8 << 20, VolumeSource::Volume(volume)).await.unwrap();
        assert_eq!(read_at(&backend.volume_path(clone), 4096, 6), b"after!");
        let too_small = backend
            .create_volume("default", VolumeId::new_random(), 4 << 20, VolumeSource::Volume(volume))
            .await
            .unwrap_err();
        assert_eq!(too_small.code, ErrorCode::InvalidArgument);

        backend.extend_volume("default", volume, 12 << 20).await.unwrap();
        let reverted = backend.revert_volume("default", volume, snapshot).await.unwrap();
        assert_eq!(reverted.size_bytes, 12 << 20, "revert keeps the grown size");
        assert_eq!(read_at(&backend.volume_path(volume), 4096, 6), b"before");

        let (volumes, snapshots) = backend.list().await.unwrap();
        assert_eq!(volumes.len(), 3);
        assert_eq!(snapshots.len(), 1);
        assert!(backend.delete_snapshot("default", snapshot).await.unwrap());
        assert!(!backend.delete_snapshot("default", snapshot).await.unwrap());
    }

    #[tokio::test]
    async fn extend_is_idempotent_and_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let backend = backend(dir.path());
        let id = VolumeId::new_random();
        backend.create_volume("default", id, 1 << 20, VolumeSource::Empty).await.unwrap();
        assert_eq!(backend.extend_volume("default", id, 2 << 20).await.unwrap().size_bytes, 2 << 20);
        assert_eq!(backend.extend_volume("default", id, 2 << 20).await.unwrap().size_bytes, 2 << 20);
        assert_eq!(backend.extend_volume("default", id, 1 << 20).await.unwrap().size_bytes, 2 << 20);
    }

    #[tokio::test]
    async fn staging_files_of_a_crash_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let leftover = dir.path().join(format!("volume-x{STAGING_MARK}abc"));
        fs::write(&leftover, b"tenant bytes").unwrap();
        let backend = backend(dir.path());
        assert!(!leftover.exists());
        assert!(backend.list().await.unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn a_crash_between_retiring_and_replacing_a_volume_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let id = VolumeId::new_random();
        backend(dir.path()).create_volume("default", id, 1 << 20, VolumeSource::Empty).await.unwrap();
        let live = dir.path().join(format!("volume-{id}"));
        write_at(&live, 0, b"keep me");
        // What a crash right after the hard link leaves: a second name of the live file.
        let retired = dir.path().join(format!("volume-{id}{STAGING_MARK}old-1"));
        fs::hard_link(&live, &retired).unwrap();
        let reopened = backend(dir.path());
        assert!(!retired.exists());
        assert_eq!(read_at(&reopened.volume_path(id), 0, 7), b"keep me");
    }

    #[tokio::test]
    async fn capacity_counts_provisioned_volumes_and_honours_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = backend(dir.path()).config;
        config.max_capacity_bytes = Some(10 << 30);
        let backend = FileBackend::open(config).unwrap();
        backend.create_volume("default", VolumeId::new_random(), 1 << 30, VolumeSource::Empty).await.unwrap();
        backend.create_volume("default", VolumeId::new_random(), 2 << 30, VolumeSource::Empty).await.unwrap();
        let pools = backend.capacity().await.unwrap();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].provisioned_bytes, 3 << 30);
        assert_eq!(pools[0].total_volumes, 2);
        assert_eq!(pools[0].total_bytes, 10 << 30);
        assert!(pools[0].free_bytes <= 10 << 30);
    }
}
