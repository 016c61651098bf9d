//! The `file` backend: each volume is a sparse raw file `volume-<uuid>` in the pool's directory.
//!
//! Secure delete: before a file is unlinked its whole range is punched out (`FALLOC_FL_PUNCH_HOLE`),
//! so the filesystem discards the blocks instead of leaving old bytes on the disk; where punching is
//! unsupported every data extent is overwritten with zeros first. A new volume is a fresh sparse
//! file, which reads as zeros, so one tenant's bytes never reach the next.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use basalt::{ErrorCode, ServiceError, ids::VolumeId, proto::PoolCapacity};

use super::BackendVolume;

const VOLUME_PREFIX: &str = "volume-";
const ZERO_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct FileBackendConfig {
    /// The directory that holds the pool's volume files.
    pub root: PathBuf,
    pub pool: String,
    /// Cinder's `max_over_subscription_ratio` for this thin pool. 1.0 (the default) never promises
    /// more virtual bytes than the filesystem holds, so a sparse volume can always be filled.
    pub max_over_subscription_ratio: f64,
    pub reserved_percentage: u32,
}

#[derive(Debug)]
pub struct FileBackend {
    config: FileBackendConfig,
}

impl FileBackend {
    pub fn open(config: FileBackendConfig) -> Result<Self, ServiceError> {
        fs::create_dir_all(&config.root).map_err(|error| {
            ServiceError::internal(format!(
                "cannot create the file backend directory {}: {error}",
                config.root.display()
            ))
        })?;
        Ok(Self { config })
    }

    pub fn volume_path(&self, volume_id: VolumeId) -> PathBuf {
        self.config.root.join(format!("{VOLUME_PREFIX}{volume_id}"))
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

    pub async fn create_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        size_bytes: u64,
    ) -> Result<BackendVolume, ServiceError> {
        self.check_pool(pool)?;
        if size_bytes == 0 {
            return Err(ServiceError::invalid(
                "a volume needs a size of at least 1 byte",
            ));
        }
        let path = self.volume_path(volume_id);
        let pool = pool.to_owned();
        blocking(move || create_sparse_file(&path, size_bytes)).await?;
        self.describe(&pool, volume_id).await?.ok_or_else(|| {
            ServiceError::internal(format!(
                "volume {volume_id} vanished right after its creation"
            ))
        })
    }

    pub async fn delete_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
    ) -> Result<bool, ServiceError> {
        self.check_pool(pool)?;
        let path = self.volume_path(volume_id);
        blocking(move || wipe_and_remove(&path)).await
    }

    pub async fn get_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
    ) -> Result<Option<BackendVolume>, ServiceError> {
        self.check_pool(pool)?;
        self.describe(pool, volume_id).await
    }

    async fn describe(
        &self,
        pool: &str,
        volume_id: VolumeId,
    ) -> Result<Option<BackendVolume>, ServiceError> {
        let path = self.volume_path(volume_id);
        let pool = pool.to_owned();
        blocking(move || match fs::metadata(&path) {
            Ok(metadata) => Ok(Some(BackendVolume {
                volume_id,
                pool,
                size_bytes: metadata.len(),
                path: path.display().to_string(),
                allocated_bytes: metadata.blocks() * 512,
            })),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error("inspect", &path, error)),
        })
        .await
    }

    pub async fn capacity(&self) -> Result<Vec<PoolCapacity>, ServiceError> {
        let config = self.config.clone();
        blocking(move || {
            let (total_bytes, free_bytes) = filesystem_space(&config.root)?;
            let mut provisioned_bytes = 0;
            let mut total_volumes = 0;
            let entries = fs::read_dir(&config.root)
                .map_err(|error| io_error("list", &config.root, error))?;
            for entry in entries {
                let entry = entry.map_err(|error| io_error("list", &config.root, error))?;
                if !entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(VOLUME_PREFIX)
                {
                    continue;
                }
                let metadata = entry
                    .metadata()
                    .map_err(|error| io_error("inspect", &entry.path(), error))?;
                provisioned_bytes += metadata.len();
                total_volumes += 1;
            }
            Ok(vec![PoolCapacity {
                name: config.pool.clone(),
                backend: "file".into(),
                total_bytes,
                free_bytes,
                provisioned_bytes,
                allocated_bytes: provisioned_bytes,
                thin_provisioning_support: true,
                thick_provisioning_support: false,
                max_over_subscription_ratio: config.max_over_subscription_ratio,
                reserved_percentage: config.reserved_percentage,
                total_volumes,
                multiattach: true,
                capabilities: [("volume_backend_name".to_owned(), "file".to_owned())].into(),
            }])
        })
        .await
    }
}

/// Creates `path` as a sparse file of `size_bytes`, atomically: a crash leaves either no file or a
/// complete one. An existing file of the same size is success (idempotent create).
fn create_sparse_file(path: &Path, size_bytes: u64) -> Result<(), ServiceError> {
    match fs::metadata(path) {
        Ok(metadata) if metadata.len() == size_bytes => return Ok(()),
        Ok(metadata) => {
            return Err(ServiceError::new(
                ErrorCode::AlreadyExists,
                format!(
                    "{} already exists with {} bytes, not the {size_bytes} requested",
                    path.display(),
                    metadata.len()
                ),
            ));
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error("inspect", path, error)),
    }
    let staging = path.with_extension(format!("creating-{}", uuid::Uuid::new_v4()));
    let result = (|| {
        // Owner-only: a volume file holds a tenant's bytes.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staging)?;
        file.set_len(size_bytes)?;
        file.sync_all()?;
        fs::rename(&staging, path)?;
        sync_parent(path)
    })();
    if let Err(error) = result {
        let _ = fs::remove_file(&staging);
        return Err(io_error("create", path, error));
    }
    Ok(())
}

/// Discards the file's bytes, then unlinks it. `Ok(false)` when it did not exist.
fn wipe_and_remove(path: &Path) -> Result<bool, ServiceError> {
    let mut file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(io_error("open", path, error)),
    };
    wipe(&mut file).map_err(|error| io_error("wipe", path, error))?;
    drop(file);
    fs::remove_file(path).map_err(|error| io_error("remove", path, error))?;
    sync_parent(path).map_err(|error| io_error("sync the directory of", path, error))?;
    Ok(true)
}

/// Punches the whole file out; falls back to overwriting its data extents with zeros.
fn wipe(file: &mut File) -> io::Result<()> {
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(());
    }
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on a file descriptor we own, with a range inside the file.
    let punched = unsafe { libc::fallocate(file.as_raw_fd(), mode, 0, length as libc::off_t) } == 0;
    if !punched {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(error);
        }
        zero_data_extents(file, length)?;
    }
    file.sync_all()
}

fn zero_data_extents(file: &mut File, length: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut offset = 0u64;
    while offset < length {
        let Some(data_start) = seek_data(file, offset, libc::SEEK_DATA)? else {
            break;
        };
        let data_end = seek_data(file, data_start, libc::SEEK_HOLE)?.unwrap_or(length);
        file.seek(SeekFrom::Start(data_start))?;
        let mut position = data_start;
        while position < data_end {
            let chunk = ZERO_CHUNK.min((data_end - position) as usize);
            file.write_all(&zeros[..chunk])?;
            position += chunk as u64;
        }
        offset = data_end;
    }
    Ok(())
}

/// `lseek` with SEEK_DATA/SEEK_HOLE; `None` when there is no more data after `offset`.
fn seek_data(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek on a file descriptor we own.
    let position = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
    if position >= 0 {
        return Ok(Some(position as u64));
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(error)
    }
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
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        ServiceError::internal(format!("path {} contains a NUL byte", path.display()))
    })?;
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid C string and stats a valid out-pointer.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
        return Err(io_error("statvfs", path, io::Error::last_os_error()));
    }
    let fragment = stats.f_frsize as u64;
    Ok((
        stats.f_blocks as u64 * fragment,
        stats.f_bavail as u64 * fragment,
    ))
}

fn io_error(action: &str, path: &Path, error: io::Error) -> ServiceError {
    ServiceError::internal(format!("cannot {action} {}: {error}", path.display()))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        ServiceError::internal(format!("a blocking storage task failed: {error}"))
    })?
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom};

    use super::*;

    fn backend(dir: &Path) -> FileBackend {
        FileBackend::open(FileBackendConfig {
            root: dir.to_path_buf(),
            pool: "default".into(),
            max_over_subscription_ratio: 1.0,
            reserved_percentage: 0,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn create_is_sparse_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let backend = backend(dir.path());
        let id = VolumeId::new_random();
        let created = backend.create_volume("default", id, 1 << 30).await.unwrap();
        assert_eq!(created.size_bytes, 1 << 30);
        assert_eq!(
            created.allocated_bytes, 0,
            "a new volume must not allocate blocks"
        );
        assert_eq!(
            backend.create_volume("default", id, 1 << 30).await.unwrap(),
            created
        );
        let conflict = backend
            .create_volume("default", id, 2 << 30)
            .await
            .unwrap_err();
        assert_eq!(conflict.code, ErrorCode::AlreadyExists);
    }

    #[tokio::test]
    async fn delete_is_idempotent_and_unknown_pools_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let backend = backend(dir.path());
        let id = VolumeId::new_random();
        backend.create_volume("default", id, 4096).await.unwrap();
        assert!(backend.delete_volume("default", id).await.unwrap());
        assert!(!backend.delete_volume("default", id).await.unwrap());
        assert_eq!(backend.get_volume("default", id).await.unwrap(), None);
        assert_eq!(
            backend
                .create_volume("other", id, 4096)
                .await
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn wipe_leaves_only_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(8 << 20).unwrap();
        file.seek(SeekFrom::Start(3 << 20)).unwrap();
        file.write_all(&[0xAB; 65536]).unwrap();
        wipe(&mut file).unwrap();
        let mut contents = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut contents).unwrap();
        assert_eq!(contents.len(), 8 << 20);
        assert!(contents.iter().all(|&b| b == 0));
    }

    #[test]
    fn zero_fallback_overwrites_every_data_extent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(4 << 20).unwrap();
        for offset in [0u64, 2 << 20, (4 << 20) - 10] {
            file.seek(SeekFrom::Start(offset)).unwrap();
            file.write_all(&[0x5A; 10]).unwrap();
        }
        zero_data_extents(&mut file, 4 << 20).unwrap();
        let mut contents = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut contents).unwrap();
        assert!(contents.iter().all(|&b| b == 0));
    }

    #[tokio::test]
    async fn capacity_counts_provisioned_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let backend = backend(dir.path());
        backend
            .create_volume("default", VolumeId::new_random(), 1 << 30)
            .await
            .unwrap();
        backend
            .create_volume("default", VolumeId::new_random(), 2 << 30)
            .await
            .unwrap();
        let pools = backend.capacity().await.unwrap();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].provisioned_bytes, 3 << 30);
        assert_eq!(pools[0].total_volumes, 2);
        assert!(pools[0].total_bytes >= pools[0].free_bytes && pools[0].total_bytes > 0);
    }
}
