//! The backup store: objects by key, independent of the volume's storage (a directory or an S3
//! bucket, `s3.rs`). The POSIX store keeps them as files under a directory (an NFS mount in
//! production): every object is written to a temporary file, synced and renamed into place, so a
//! reader sees a whole object or none.
//!
//! Keys (one namespace per project, so chunks are shared only between a project's backups):
//! `projects/<project>/chunks/<aa>/<sha256>` and `projects/<project>/backups/<backup id>.json` (the
//! manifest). The engine reaches the store only through a [`ProjectStore`], which builds every key
//! from a parsed project id and refuses any key that would leave that project's part of the store;
//! the POSIX store checks again that each path stays under its root.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Component, Path, PathBuf},
};

use basalt::{ErrorCode, ServiceError, error::excerpt, ids::ProjectId};

/// The longest key the store accepts; ours are under 200 bytes.
const MAX_KEY_BYTES: usize = 512;

/// Where backups are kept: a directory (an NFS mount shared by the nodes) or an S3 bucket.
#[derive(Debug)]
pub enum BackupStore {
    Posix(PosixStore),
    S3(super::s3::S3Store),
}

impl BackupStore {
    /// The part of the store that belongs to `project`.
    pub fn project(&self, project: &ProjectId) -> ProjectStore<'_> {
        ProjectStore { store: self, project: project.clone(), prefix: format!("projects/{project}/") }
    }

    fn exists(&self, key: &str) -> Result<bool, ServiceError> {
        match self {
            Self::Posix(store) => store.exists(key),
            Self::S3(store) => Ok(store.exists(key)),
        }
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), ServiceError> {
        match self {
            Self::Posix(store) => store.put(key, bytes),
            Self::S3(store) => store.put(key, bytes),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, ServiceError> {
        match self {
            Self::Posix(store) => store.get(key),
            Self::S3(store) => store.get(key),
        }
    }

    fn delete(&self, key: &str) -> Result<(), ServiceError> {
        match self {
            Self::Posix(store) => store.delete(key),
            Self::S3(store) => store.delete(key),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ServiceError> {
        match self {
            Self::Posix(store) => store.list(prefix),
            Self::S3(store) => store.list(prefix),
        }
    }
}

/// One project's part of the store. Keys given to it are relative to the project
/// (`chunks/ab/ab12...`, `backups/<id>.json`) and may not climb out of it.
pub struct ProjectStore<'a> {
    store: &'a BackupStore,
    project: ProjectId,
    prefix: String,
}

impl ProjectStore<'_> {
    pub fn project(&self) -> &ProjectId {
        &self.project
    }

    fn key(&self, relative: &str) -> Result<String, ServiceError> {
        check_key(relative).map_err(|why| {
            ServiceError::invalid(format!(
                "backup store key {} is refused: {why}; keys stay inside their project",
                excerpt(relative)
            ))
        })?;
        Ok(format!("{}{relative}", self.prefix))
    }

    /// Writes `bytes` under `key` unless an object is there already; returns whether it wrote.
    /// Keys of chunks name their content, so a concurrent identical write changes nothing.
    pub fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool, ServiceError> {
        let key = self.key(key)?;
        if self.store.exists(&key)? {
            return Ok(false);
        }
        self.store.put(&key, bytes)?;
        Ok(true)
    }

    pub fn put(&self, key: &str, bytes: &[u8]) -> Result<(), ServiceError> {
        self.store.put(&self.key(key)?, bytes)
    }

    pub fn get(&self, key: &str) -> Result<Vec<u8>, ServiceError> {
        self.store.get(&self.key(key)?)
    }

    /// Removes the object; a missing one is no error.
    pub fn delete(&self, key: &str) -> Result<(), ServiceError> {
        self.store.delete(&self.key(key)?)
    }

    /// The keys under the directory `dir` (relative to the project, as the other calls take them),
    /// with their sizes. Objects whose names are not keys this store makes are left out.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, ServiceError> {
        let prefix = self.key(dir)?;
        let listed = self.store.list(&prefix)?;
        Ok(listed
            .into_iter()
            .filter_map(|(key, size)| {
                let relative = key.strip_prefix(&self.prefix)?;
                (relative.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/')) && check_key(relative).is_ok())
                    .then(|| (relative.to_owned(), size))
            })
            .collect())
    }

    /// A lock on the project's part of a POSIX store (S3 has none: the scheduler never lets a
    /// delete's sweep run beside a backup or restore of the same project).
    pub fn lock(&self, exclusive: bool) -> Result<Option<ProjectLock>, ServiceError> {
        match self.store {
            BackupStore::Posix(store) => store.lock(&self.key("lock")?, exclusive).map(Some),
            BackupStore::S3(_) => Ok(None),
        }
    }
}

/// A key is `/`-separated names of letters, digits, '.', '_' and '-', none of them `.` or `..`.
fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err("a key has 1 to 512 bytes");
    }
    for name in key.split('/') {
        if name.is_empty() || name == "." || name == ".." {
            return Err("empty, '.' and '..' names are not allowed");
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err("names hold letters, digits, '.', '_' and '-' only");
        }
    }
    Ok(())
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
        fs::create_dir_all(root).map_err(|error| store_error("create", "the store's directory", root, error))?;
        Ok(Self { root: root.to_path_buf() })
    }

    /// The file of `key`, which must stay under the store's root.
    fn path(&self, key: &str) -> Result<PathBuf, ServiceError> {
        let refused = || ServiceError::invalid(format!("backup store key {} is outside the store", excerpt(key)));
        check_key(key).map_err(|_| refused())?;
        let path = self.root.join(key);
        let stays_inside = path.starts_with(&self.root)
            && path
                .strip_prefix(&self.root)
                .is_ok_and(|rest| rest.components().all(|c| matches!(c, Component::Normal(_))));
        if !stays_inside {
            return Err(refused());
        }
        Ok(path)
    }

    fn exists(&self, key: &str) -> Result<bool, ServiceError> {
        Ok(self.path(key)?.is_file())
    }

    /// Writes `bytes` under `key`, replacing what was there, atomically.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), ServiceError> {
        let path = self.path(key)?;
        let parent = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(|error| store_error("create", key, parent, error))?;
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
            store_error("write", key, &path, error)
        })
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, ServiceError> {
        let path = self.path(key)?;
        fs::read(&path).map_err(|error| store_error("read", key, &path, error))
    }

    fn delete(&self, key: &str) -> Result<(), ServiceError> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(store_error("remove", key, &path, error)),
        }
    }

    /// The keys under `prefix` (a directory of keys), with their sizes, recursively. Symbolic
    /// links are neither followed nor listed.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ServiceError> {
        let mut keys = Vec::new();
        let mut pending = vec![self.path(prefix)?];
        while let Some(dir) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(store_error("list", prefix, &dir, error)),
            };
            for entry in entries {
                let entry = entry.map_err(|error| store_error("list", prefix, &dir, error))?;
                let path = entry.path();
                let metadata = entry.metadata().map_err(|error| store_error("inspect", prefix, &path, error))?;
                let Some(key) = path.strip_prefix(&self.root).ok().and_then(Path::to_str) else { continue };
                if metadata.is_dir() {
                    pending.push(path);
                } else if metadata.is_file() && check_key(key).is_ok() && !key.contains("/.staging-") {
                    keys.push((key.to_owned(), metadata.len()));
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Locks the file `key`: `exclusive` for a sweep, shared for a backup.
    fn lock(&self, key: &str, exclusive: bool) -> Result<ProjectLock, ServiceError> {
        let path = self.path(key)?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|error| store_error("create", key, dir, error))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|error| store_error("open", key, &path, error))?;
        let operation = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        // SAFETY: flock on a descriptor we own; it blocks until the lock is granted.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } != 0 {
            return Err(store_error("lock", key, &path, io::Error::last_os_error()));
        }
        Ok(ProjectLock { _file: file })
    }
}

/// An error naming the key, never the host path (users see these messages); the path goes to the
/// node's log.
fn store_error(action: &str, key: &str, path: &Path, error: io::Error) -> ServiceError {
    let code = if error.kind() == io::ErrorKind::NotFound { ErrorCode::NotFound } else { ErrorCode::Internal };
    // A missing object is an answer (a backup not written yet), not a fault of the store.
    if code != ErrorCode::NotFound {
        tracing::warn!(path = %path.display(), %error, "backup store: cannot {action}");
    }
    ServiceError::new(code, format!("backup store: cannot {action} {key}: {}", error.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINE: &str = "0123456789abcdef0123456789abcdef";
    const THEIRS: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn a_project_store_refuses_every_key_outside_its_project() {
        let dir = tempfile::tempdir().unwrap();
        let store = BackupStore::Posix(PosixStore::open(&dir.path().join("store")).unwrap());
        let theirs = store.project(&ProjectId::parse(THEIRS).unwrap());
        theirs.put("backups/b.json", b"their manifest").unwrap();
        let mine = store.project(&ProjectId::parse(MINE).unwrap());
        let escapes = [
            format!("../{THEIRS}/backups/b.json"),
            format!("chunks/../../{THEIRS}/backups/b.json"),
            "..".into(),
            ".".into(),
            "./chunks".into(),
            "/etc/passwd".into(),
            "chunks//x".into(),
            "chunks/%2e%2e/x".into(),
            "chunks/a\0b".into(),
            "chunks\\..\\x".into(),
            String::new(),
            "x".repeat(600),
        ];
        for key in &escapes {
            for outcome in [mine.get(key).map(drop), mine.put(key, b"x"), mine.delete(key), mine.list(key).map(drop)] {
                let error = outcome.expect_err(key);
                assert_eq!(error.code, ErrorCode::InvalidArgument, "{key:?}: {}", error.message);
                assert!(!error.message.contains(dir.path().to_str().unwrap()), "{}", error.message);
            }
        }
        assert_eq!(theirs.get("backups/b.json").unwrap(), b"their manifest", "nothing of theirs changed");
        assert!(mine.list("backups").unwrap().is_empty());
    }

    #[test]
    fn errors_name_keys_not_host_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = BackupStore::Posix(PosixStore::open(&dir.path().join("store")).unwrap());
        let mine = store.project(&ProjectId::parse(MINE).unwrap());
        let error = mine.get("backups/missing.json").unwrap_err();
        assert_eq!(error.code, ErrorCode::NotFound);
        assert!(error.message.contains(&format!("projects/{MINE}/backups/missing.json")), "{}", error.message);
        assert!(!error.message.contains(dir.path().to_str().unwrap()), "{}", error.message);
    }

    #[test]
    fn listings_skip_names_the_store_does_not_make() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = BackupStore::Posix(PosixStore::open(&root).unwrap());
        let mine = store.project(&ProjectId::parse(MINE).unwrap());
        mine.put("chunks/ab/abcd", b"chunk").unwrap();
        let chunks = root.join("projects").join(MINE).join("chunks").join("ab");
        fs::write(chunks.join("odd name"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path(), chunks.join("link")).unwrap();
        assert_eq!(mine.list("chunks").unwrap(), vec![("chunks/ab/abcd".to_owned(), 5)]);
    }
}
