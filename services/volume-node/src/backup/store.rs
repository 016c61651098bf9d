//! The backup store: objects by key, independent of the volume's storage (a directory or an S3
//! bucket, `s3.rs`). The POSIX store keeps
//! them as files under a directory (an NFS mount in production): every object is written to a
//! temporary file, synced and renamed into place, so a reader sees a whole object or none.
//!
//! Keys (one namespace per project, so chunks are shared only between a project's backups):
//! `projects/<project>/chunks/<aa>/<sha256>`, `projects/<project>/backups/<backup id>.json` (the
//! manifest), `projects/<project>/pending/<backup id>.json` (chunks a running backup relies on).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
};

use basalt::{ErrorCode, ServiceError};

/// Where backups are kept: a directory (an NFS mount shared by the nodes) or an S3 bucket.
#[derive(Debug)]
pub enum BackupStore {
    Posix(PosixStore),
    S3(super::s3::S3Store),
}

impl BackupStore {
    pub fn exists(&self, key: &str) -> bool {
        match self {
            Self::Posix(store) => store.exists(key),
            Self::S3(store) => store.exists(key),
        }
    }

    /// Writes `bytes` under `key` unless an object is there already; returns whether it wrote.
    /// Keys of chunks name their content, so a concurrent identical write changes nothing.
    pub fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool, ServiceError> {
        if self.exists(key) {
            return Ok(false);
        }
        self.put(key, bytes)?;
        Ok(true)
    }

    pub fn put(&self, key: &str, bytes: &[u8]) -> Result<(), ServiceError> {
        match self {
            Self::Posix(store) => store.put(key, bytes),
            Self::S3(store) => store.put(key, bytes),
        }
    }

    pub fn get(&self, key: &str) -> Result<Vec<u8>, ServiceError> {
        match self {
            Self::Posix(store) => store.get(key),
            Self::S3(store) => store.get(key),
        }
    }

    pub fn delete(&self, key: &str) -> Result<(), ServiceError> {
        match self {
            Self::Posix(store) => store.delete(key),
            Self::S3(store) => store.delete(key),
        }
    }

    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ServiceError> {
        match self {
            Self::Posix(store) => store.list(prefix),
            Self::S3(store) => store.list(prefix),
        }
    }

    /// A lock on the project's part of a POSIX store (S3 has none: the scheduler never lets a
    /// delete's sweep run beside a backup or restore of the same project).
    pub fn lock_project(&self, project: &str, exclusive: bool) -> Result<Option<ProjectLock>, ServiceError> {
        match self {
            Self::Posix(store) => store.lock_project(project, exclusive).map(Some),
            Self::S3(_) => Ok(None),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PosixStore {
    root: PathBuf,
}

/// A lock on a project's part of the store, released on drop. Backups hold it shared, a delete's
/// sweep exclusive, so the sweep never removes a chunk a running backup is about to rely on.
pub struct ProjectLock {
    _file: File,
}

impl PosixStore {
    pub fn open(root: &Path) -> Result<Self, ServiceError> {
        fs::create_dir_all(root).map_err(|error| store_error("create", root, error))?;
        Ok(Self { root: root.to_path_buf() })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub fn exists(&self, key: &str) -> bool {
        self.path(key).is_file()
    }

    /// Writes `bytes` under `key`, replacing what was there, atomically.
    pub fn put(&self, key: &str, bytes: &[u8]) -> Result<(), ServiceError> {
        let path = self.path(key);
        let parent = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(|error| store_error("create", parent, error))?;
        let staging = parent.join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staging)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&staging, &path)?;
            File::open(parent)?.sync_all()
        };
        write().map_err(|error| {
            let _ = fs::remove_file(&staging);
            store_error("write", &path, error)
        })
    }

    pub fn get(&self, key: &str) -> Result<Vec<u8>, ServiceError> {
        let path = self.path(key);
        fs::read(&path).map_err(|error| store_error("read", &path, error))
    }

    /// Removes the object; a missing one is no error.
    pub fn delete(&self, key: &str) -> Result<(), ServiceError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(store_error("remove", &path, error)),
        }
    }

    /// The keys under `prefix` (a directory of keys), with their sizes, recursively.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ServiceError> {
        let mut keys = Vec::new();
        let mut pending = vec![self.path(prefix)];
        while let Some(dir) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(store_error("list", &dir, error)),
            };
            for entry in entries {
                let entry = entry.map_err(|error| store_error("list", &dir, error))?;
                let path = entry.path();
                let metadata = entry.metadata().map_err(|error| store_error("inspect", &path, error))?;
                if metadata.is_dir() {
                    pending.push(path);
                } else if !entry.file_name().to_string_lossy().starts_with(".staging-") {
                    let key = path.strip_prefix(&self.root).unwrap_or(&path).to_string_lossy().into_owned();
                    keys.push((key, metadata.len()));
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Locks the project's part of the store: `exclusive` for a sweep, shared for a backup.
    pub fn lock_project(&self, project: &str, exclusive: bool) -> Result<ProjectLock, ServiceError> {
        let dir = self.path(&format!("projects/{project}"));
        fs::create_dir_all(&dir).map_err(|error| store_error("create", &dir, error))?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|error| store_error("open", &path, error))?;
        let operation = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        // SAFETY: flock on a descriptor we own; it blocks until the lock is granted.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } != 0 {
            return Err(store_error("lock", &path, io::Error::last_os_error()));
        }
        Ok(ProjectLock { _file: file })
    }
}

fn store_error(action: &str, path: &Path, error: io::Error) -> ServiceError {
    let code = if error.kind() == io::ErrorKind::NotFound { ErrorCode::NotFound } else { ErrorCode::Internal };
    ServiceError::new(code, format!("backup store: cannot {action} {}: {error}", path.display()))
}
