//! The backup engine: a volume cut into fixed chunks addressed by SHA-256, each stored once per
//! project (deduplicated across backups and volumes), zstd-compressed, with chunks of zeros and
//! holes stored as nothing; a manifest per backup, kept in the store itself, lists every chunk of
//! the volume, so a backup restores from the store alone and an incremental backup is a full list
//! that happens to reuse its parent's chunks.
//!
//! Restore checks every chunk against its hash before writing it and the whole volume against the
//! manifest's checksum, so a damaged store fails the restore with a clear error instead of writing
//! wrong bytes. Delete removes the manifest, then sweeps the project's chunks no manifest names.

use std::{
    collections::{BTreeMap, HashSet},
    fs::{File, OpenOptions},
    os::{
        fd::AsRawFd,
        unix::fs::{FileExt, FileTypeExt},
    },
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
};

use basalt::{ErrorCode, ServiceError, error::excerpt, hex, ids::BackupId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::ProjectStore;
use crate::backend::{block, sparse};

/// The chunk size: large enough for zstd and sequential I/O, small enough that a 1% change
/// stores little more than what changed.
pub const CHUNK_BYTES: u64 = 4 << 20;
const MANIFEST_VERSION: u32 = 1;
const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// What a backup is, kept in the store beside its chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub backup_id: String,
    pub project_id: String,
    pub volume_id: String,
    pub parent_id: Option<String>,
    pub size_bytes: u64,
    pub chunk_bytes: u64,
    /// One entry per chunk of the volume: its SHA-256 (hex), or `None` for a chunk of zeros.
    pub chunks: Vec<Option<String>>,
    /// SHA-256 over the SHA-256 of every chunk in order (zero chunks included), which pins
    /// every byte of the volume.
    pub checksum: String,
    /// Bytes this backup added to the store (after deduplication and compression).
    pub stored_bytes: u64,
    pub name: String,
    pub description: String,
    pub metadata: BTreeMap<String, String>,
    pub created_unix_seconds: u64,
}

/// Progress of a running backup or restore, and its cancellation.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    percent: Arc<AtomicU32>,
    cancelled: Arc<AtomicBool>,
}

impl Progress {
    pub fn percent(&self) -> u32 {
        self.percent.load(Ordering::Relaxed)
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    fn check(&self) -> Result<(), ServiceError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(ServiceError::conflict("cancelled"));
        }
        Ok(())
    }
}

/// What to back up (into the store of its project).
pub struct BackupSource<'a> {
    pub backup_id: BackupId,
    pub volume_id: &'a str,
    /// The volume's file or block device (a snapshot's, for a volume in use).
    pub path: &'a Path,
    pub size_bytes: u64,
    /// The backup this one is incremental to.
    pub parent: Option<&'a Manifest>,
    pub name: &'a str,
    pub description: &'a str,
    pub metadata: BTreeMap<String, String>,
    pub created_unix_seconds: u64,
}

const MANIFESTS: &str = "backups";
const CHUNKS: &str = "chunks";

/// A chunk's key in its project's store; `hash` is a checked SHA-256 in hex.
fn chunk_key(hash: &str) -> String {
    format!("{CHUNKS}/{}/{hash}", &hash[..2])
}

fn manifest_key(backup_id: &BackupId) -> String {
    format!("{MANIFESTS}/{backup_id}.json")
}

fn is_chunk_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// The SHA-256 of `length` zero bytes (zero chunks enter the checksum by it); a whole chunk's is
/// computed once.
fn zero_hash(length: usize) -> [u8; 32] {
    static WHOLE_CHUNK: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let compute = || Sha256::digest(vec![0u8; length]).into();
    if length as u64 == CHUNK_BYTES { *WHOLE_CHUNK.get_or_init(compute) } else { compute() }
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |count| count.get()).clamp(1, 8)
}

fn chunk_length(size_bytes: u64, index: usize) -> usize {
    (size_bytes - index as u64 * CHUNK_BYTES).min(CHUNK_BYTES) as usize
}

/// Runs `work(index)` for every chunk on a few threads; stops at the first error.
fn for_each_chunk(
    count: usize,
    progress: &Progress,
    work: impl Fn(usize) -> Result<(), ServiceError> + Sync,
) -> Result<(), ServiceError> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failure: Mutex<Option<ServiceError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers() {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count || failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                        break;
                    }
                    if let Err(error) = progress.check().and_then(|()| work(index)) {
                        failure.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(error);
                        break;
                    }
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress.percent.store((finished * 100 / count.max(1)) as u32, Ordering::Relaxed);
                }
            });
        }
    });
    match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Backs the volume up into `store` and writes its manifest there. Blocking: run it on a thread.
pub fn backup(store: &ProjectStore, source: BackupSource<'_>, progress: &Progress) -> Result<Manifest, ServiceError> {
    let _lock = store.lock(false)?;
    let file = File::open(source.path).map_err(|error| io_error("open", source.path, error))?;
    let metadata = file.metadata().map_err(|error| io_error("inspect", source.path, error))?;
    // Holes of a sparse file are zero chunks that need no read at all.
    let extents = if metadata.file_type().is_file() {
        Some(sparse::data_extents(&file, source.size_bytes).map_err(|error| io_error("map", source.path, error))?)
    } else {
        None
    };
    let count = source.size_bytes.div_ceil(CHUNK_BYTES) as usize;
    let chunks: Mutex<Vec<Option<String>>> = Mutex::new(vec![None; count]);
    let stored = AtomicU64::new(0);
    for_each_chunk(count, progress, |index| {
        let offset = index as u64 * CHUNK_BYTES;
        let length = chunk_length(source.size_bytes, index);
        // Extents are sorted and disjoint: the first one ending after the chunk's start decides.
        let holds_data = extents.as_ref().is_none_or(|extents| {
            let first = extents.partition_point(|(_, end)| *end <= offset);
            extents.get(first).is_some_and(|(start, _)| *start < offset + length as u64)
        });
        if !holds_data {
            return Ok(());
        }
        let mut buffer = vec![0u8; length];
        file.read_exact_at(&mut buffer, offset).map_err(|error| io_error("read", source.path, error))?;
        if buffer.iter().all(|byte| *byte == 0) {
            return Ok(());
        }
        let hash = hex::encode(Sha256::digest(&buffer));
        let known =
            source.parent.is_some_and(|parent| parent.chunks.get(index).and_then(Option::as_ref) == Some(&hash));
        if !known {
            let encoded = encode(&buffer)?;
            if store.put_if_absent(&chunk_key(&hash), &encoded)? {
                stored.fetch_add(encoded.len() as u64, Ordering::Relaxed);
            }
        }
        chunks.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(hash);
        Ok(())
    })?;
    let chunks = chunks.into_inner().unwrap_or_else(|e| e.into_inner());
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        backup_id: source.backup_id.to_string(),
        project_id: store.project().to_string(),
        volume_id: source.volume_id.to_owned(),
        parent_id: source.parent.map(|parent| parent.backup_id.clone()),
        size_bytes: source.size_bytes,
        chunk_bytes: CHUNK_BYTES,
        checksum: checksum(&chunks, source.size_bytes)?,
        chunks,
        stored_bytes: stored.load(Ordering::Relaxed),
        name: source.name.to_owned(),
        description: source.description.to_owned(),
        metadata: source.metadata,
        created_unix_seconds: source.created_unix_seconds,
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|error| ServiceError::internal(error.to_string()))?;
    store.put(&manifest_key(&source.backup_id), &bytes)?;
    Ok(manifest)
}

/// The checksum of a volume whose chunks have these hashes.
fn checksum(chunks: &[Option<String>], size_bytes: u64) -> Result<String, ServiceError> {
    let mut whole = Sha256::new();
    for (index, chunk) in chunks.iter().enumerate() {
        match chunk {
            Some(hash) => whole.update(decode_hex(hash)?),
            None => whole.update(zero_hash(chunk_length(size_bytes, index))),
        }
    }
    Ok(hex::encode(whole.finalize()))
}

fn decode_hex(hash: &str) -> Result<Vec<u8>, ServiceError> {
    hex::decode(hash)
        .filter(|_| is_chunk_hash(hash))
        .ok_or_else(|| ServiceError::internal(format!("the manifest names an invalid chunk hash {}", excerpt(hash))))
}

fn encode(chunk: &[u8]) -> Result<Vec<u8>, ServiceError> {
    let compressed =
        zstd::bulk::compress(chunk, 1).map_err(|error| ServiceError::internal(format!("zstd: {error}")))?;
    let mut encoded = Vec::with_capacity(compressed.len().min(chunk.len()) + 1);
    // Stored as it is when compression does not shrink it.
    if compressed.len() < chunk.len() {
        encoded.push(ZSTD);
        encoded.extend_from_slice(&compressed);
    } else {
        encoded.push(RAW);
        encoded.extend_from_slice(chunk);
    }
    Ok(encoded)
}

fn decode(encoded: &[u8], length: usize) -> Result<Vec<u8>, String> {
    match encoded.split_first() {
        Some((&RAW, bytes)) => Ok(bytes.to_vec()),
        Some((&ZSTD, bytes)) => zstd::bulk::decompress(bytes, length).map_err(|error| error.to_string()),
        _ => Err("unknown encoding".into()),
    }
}

/// Reads a backup's manifest and checks it before anything trusts it: it must be this backup's and
/// this project's, and describe exactly the chunks its size needs, each named by a SHA-256.
pub fn read_manifest(store: &ProjectStore, backup_id: &BackupId) -> Result<Manifest, ServiceError> {
    let bytes = store.get(&manifest_key(backup_id)).map_err(|error| {
        ServiceError::new(
            error.code,
            format!("backup {backup_id} has no manifest in the backup store: {}", error.message),
        )
    })?;
    let damaged = |why: String| ServiceError::internal(format!("the manifest of backup {backup_id} is damaged: {why}"));
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|error| damaged(error.to_string()))?;
    if manifest.backup_id != backup_id.to_string() || manifest.project_id != store.project().as_str() {
        return Err(damaged("it names another backup or project".into()));
    }
    if manifest.chunk_bytes != CHUNK_BYTES || manifest.version != MANIFEST_VERSION {
        return Err(ServiceError::invalid(format!(
            "backup {backup_id} was made with chunks of {} bytes (format {}); this node reads {CHUNK_BYTES}-byte chunks (format {MANIFEST_VERSION})",
            manifest.chunk_bytes, manifest.version
        )));
    }
    if manifest.chunks.len() as u64 != manifest.size_bytes.div_ceil(CHUNK_BYTES) {
        return Err(damaged("its chunk list does not match its size".into()));
    }
    if !manifest.chunks.iter().flatten().all(|hash| is_chunk_hash(hash)) {
        return Err(damaged("it names a chunk that is not a SHA-256".into()));
    }
    if manifest.parent_id.as_deref().is_some_and(|parent| BackupId::parse(parent).is_err()) {
        return Err(damaged("its parent is not a backup id".into()));
    }
    Ok(manifest)
}

/// Writes the backup's bytes onto `dest` (a file or block device at least as large), verifying
/// every chunk and the whole. `manifest` comes from [`read_manifest`] of the same store.
/// Blocking: run it on a thread.
pub fn restore(
    store: &ProjectStore,
    manifest: &Manifest,
    dest: &Path,
    progress: &Progress,
) -> Result<(), ServiceError> {
    let file = OpenOptions::new().write(true).open(dest).map_err(|error| io_error("open", dest, error))?;
    let metadata = file.metadata().map_err(|error| io_error("inspect", dest, error))?;
    let is_device = metadata.file_type().is_block_device();
    let capacity = if is_device { block::size(&file).map_err(|e| io_error("size", dest, e))? } else { metadata.len() };
    if capacity < manifest.size_bytes {
        return Err(ServiceError::invalid(format!(
            "the volume ({capacity} bytes) is smaller than backup {} ({} bytes)",
            manifest.backup_id, manifest.size_bytes
        )));
    }
    let hashes: Mutex<Vec<[u8; 32]>> = Mutex::new(vec![[0; 32]; manifest.chunks.len()]);
    for_each_chunk(manifest.chunks.len(), progress, |index| {
        let offset = index as u64 * CHUNK_BYTES;
        let length = chunk_length(manifest.size_bytes, index);
        let Some(hash) = &manifest.chunks[index] else {
            zero(&file, is_device, offset, length as u64).map_err(|error| io_error("zero", dest, error))?;
            hashes.lock().unwrap_or_else(|e| e.into_inner())[index] = zero_hash(length);
            return Ok(());
        };
        let encoded = store.get(&chunk_key(hash)).map_err(|error| corrupt(manifest, hash, &error.message))?;
        let bytes = decode(&encoded, length).map_err(|error| corrupt(manifest, hash, &error))?;
        let found: [u8; 32] = Sha256::digest(&bytes).into();
        if bytes.len() != length || hex::encode(found) != *hash {
            return Err(corrupt(manifest, hash, "its content no longer matches its hash"));
        }
        file.write_all_at(&bytes, offset).map_err(|error| io_error("write", dest, error))?;
        hashes.lock().unwrap_or_else(|e| e.into_inner())[index] = found;
        Ok(())
    })?;
    file.sync_all().map_err(|error| io_error("sync", dest, error))?;
    let mut whole = Sha256::new();
    for hash in hashes.into_inner().unwrap_or_else(|e| e.into_inner()) {
        whole.update(hash);
    }
    if hex::encode(whole.finalize()) != manifest.checksum {
        return Err(ServiceError::new(
            ErrorCode::Internal,
            format!("backup {}: the restored bytes do not match the manifest's checksum", manifest.backup_id),
        ));
    }
    Ok(())
}

fn corrupt(manifest: &Manifest, hash: &str, why: &str) -> ServiceError {
    ServiceError::internal(format!(
        "backup {} cannot be restored exactly: chunk {hash} in the backup store is damaged or missing ({why})",
        manifest.backup_id
    ))
}

/// Zeroes a range of the destination: a hole in a file, the device's zero-out on a block device.
fn zero(file: &File, is_device: bool, offset: u64, length: u64) -> std::io::Result<()> {
    if is_device {
        return block::zero_range(file, offset, length);
    }
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on a descriptor we own, with a range inside the file.
    if unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as libc::off_t, length as libc::off_t) } == 0 {
        return Ok(());
    }
    // Filesystems without punch: write the zeros.
    file.write_all_at(&vec![0u8; length as usize], offset)
}

/// Deletes a backup and, with `sweep`, the chunks no other backup of its project uses (only when
/// no backup of the project runs: one relies on chunks its manifest does not name yet). Refused
/// while an incremental backup depends on it. Returns the bytes freed. Blocking: run it on a thread.
pub fn delete(store: &ProjectStore, backup_id: &BackupId, sweep: bool) -> Result<u64, ServiceError> {
    let _lock = store.lock(true)?;
    let mut remaining = Vec::new();
    for (key, _) in store.list(MANIFESTS)? {
        let name = key.rsplit('/').next().and_then(|name| name.strip_suffix(".json"));
        let Some(id) = name.and_then(|name| BackupId::parse(name).ok()) else {
            tracing::warn!(key, "backup store: skipping an object that is not a manifest");
            continue;
        };
        if id == *backup_id {
            continue;
        }
        let manifest = read_manifest(store, &id)?;
        if manifest.parent_id.as_deref() == Some(backup_id.to_string().as_str()) {
            return Err(ServiceError::conflict(format!(
                "backup {backup_id} has dependent incremental backups ({id}); delete them first"
            )));
        }
        remaining.push(manifest);
    }
    store.delete(&manifest_key(backup_id))?;
    if !sweep {
        return Ok(0);
    }
    let referenced: HashSet<&str> =
        remaining.iter().flat_map(|manifest| manifest.chunks.iter().flatten().map(String::as_str)).collect();
    let mut freed = 0;
    for (key, size) in store.list(CHUNKS)? {
        let hash = key.rsplit('/').next().unwrap_or_default();
        if !referenced.contains(hash) {
            store.delete(&key)?;
            freed += size;
        }
    }
    Ok(freed)
}

/// An error about the volume being read or written; the host path goes to the log only.
fn io_error(action: &str, path: &Path, error: std::io::Error) -> ServiceError {
    tracing::warn!(path = %path.display(), %error, "backup: cannot {action} the volume");
    ServiceError::internal(format!("cannot {action} the volume: {}", error.kind()))
}

#[cfg(test)]
mod tests {
    use basalt::ids::ProjectId;

    use super::{super::store::BackupStore, *};

    const PROJECT: &str = "0123456789abcdef0123456789abcdef";

    fn id(n: u8) -> BackupId {
        BackupId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02x}")).unwrap()
    }

    fn open_store(dir: &Path) -> BackupStore {
        BackupStore::Posix(super::super::store::PosixStore::open(&dir.join("store")).unwrap())
    }

    fn project() -> ProjectId {
        ProjectId::parse(PROJECT).unwrap()
    }

    fn source<'a>(id: BackupId, path: &'a Path, size: u64, parent: Option<&'a Manifest>) -> BackupSource<'a> {
        BackupSource {
            backup_id: id,
            volume_id: "v1",
            path,
            size_bytes: size,
            parent,
            name: "",
            description: "",
            metadata: BTreeMap::new(),
            created_unix_seconds: 1_764_000_000,
        }
    }

    fn random(length: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn a_backup_restores_byte_identical_and_stores_no_holes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let project = project();
        let store = store.project(&project);
        let volume = dir.path().join("volume");
        let size = 64 << 20;
        let file = File::create(&volume).unwrap();
        file.set_len(size).unwrap();
        file.write_all_at(&random(5 << 20, 1), 3 << 20).unwrap();
        file.write_all_at(&vec![7u8; 1 << 20], 40 << 20).unwrap();
        let progress = Progress::default();
        let manifest = backup(&store, source(id(1), &volume, size, None), &progress).unwrap();
        assert_eq!(progress.percent(), 100, "progress reaches 100% with the last chunk");
        assert_eq!(manifest.chunks.iter().flatten().count(), 3, "only chunks holding data are stored");
        assert!(manifest.stored_bytes < (6 << 20) + 4096, "{} bytes stored", manifest.stored_bytes);

        let restored = dir.path().join("restored");
        File::create(&restored).unwrap().set_len(size).unwrap();
        restore(&store, &read_manifest(&store, &id(1)).unwrap(), &restored, &Progress::default()).unwrap();
        assert_eq!(std::fs::read(&restored).unwrap(), std::fs::read(&volume).unwrap());
    }

    #[test]
    fn an_incremental_backup_stores_only_what_changed_and_deletes_keep_shared_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let project = project();
        let store = store.project(&project);
        let volume = dir.path().join("volume");
        let size = 32 << 20;
        std::fs::write(&volume, random(size as usize, 2)).unwrap();
        let full = backup(&store, source(id(2), &volume, size, None), &Progress::default()).unwrap();
        let file = OpenOptions::new().write(true).open(&volume).unwrap();
        file.write_all_at(&random(4096, 3), 9 << 20).unwrap();
        let incremental = backup(&store, source(id(3), &volume, size, Some(&full)), &Progress::default()).unwrap();
        assert_eq!(incremental.parent_id, Some(id(2).to_string()));
        assert!(incremental.stored_bytes <= CHUNK_BYTES + 64, "{} bytes stored", incremental.stored_bytes);

        let error = delete(&store, &id(2), true).unwrap_err();
        assert_eq!(error.code, ErrorCode::Conflict);
        assert!(error.message.contains("dependent incremental"), "{}", error.message);
        let freed = delete(&store, &id(3), true).unwrap();
        assert!(freed > 0 && freed <= CHUNK_BYTES + 64, "only the changed chunk goes: {freed}");
        // The full backup still restores: its chunks survived the sweep.
        let restored = dir.path().join("restored");
        File::create(&restored).unwrap().set_len(size).unwrap();
        restore(&store, &full, &restored, &Progress::default()).unwrap();
        assert_eq!(std::fs::read(&restored).unwrap(), random(size as usize, 2));
        delete(&store, &id(2), true).unwrap();
        assert!(store.list(CHUNKS).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_chunk_fails_the_restore_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let project = project();
        let store = store.project(&project);
        let volume = dir.path().join("volume");
        std::fs::write(&volume, random(8 << 20, 4)).unwrap();
        let manifest = backup(&store, source(id(1), &volume, 8 << 20, None), &Progress::default()).unwrap();
        let (key, _) = store.list(CHUNKS).unwrap().remove(1);
        let mut bytes = store.get(&key).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        store.put(&key, &bytes).unwrap();
        let restored = dir.path().join("restored");
        File::create(&restored).unwrap().set_len(8 << 20).unwrap();
        let error = restore(&store, &manifest, &restored, &Progress::default()).unwrap_err();
        assert!(error.message.contains("cannot be restored exactly"), "{}", error.message);
        assert!(error.message.contains("damaged or missing"), "{}", error.message);
    }

    #[test]
    fn a_cancelled_backup_stops() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let project = project();
        let store = store.project(&project);
        let volume = dir.path().join("volume");
        std::fs::write(&volume, random(8 << 20, 5)).unwrap();
        let progress = Progress::default();
        progress.cancel();
        let error = backup(&store, source(id(1), &volume, 8 << 20, None), &progress).unwrap_err();
        assert_eq!(error.message, "cancelled");
        assert!(read_manifest(&store, &id(1)).is_err(), "no manifest for a cancelled backup");
    }

    #[test]
    fn a_manifest_is_checked_before_it_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let project = project();
        let mine = store.project(&project);
        let volume = dir.path().join("volume");
        std::fs::write(&volume, random(8 << 20, 6)).unwrap();
        let honest = backup(&mine, source(id(1), &volume, 8 << 20, None), &Progress::default()).unwrap();
        let forged = |edit: &dyn Fn(&mut Manifest)| {
            let mut manifest = honest.clone();
            edit(&mut manifest);
            mine.put(&manifest_key(&id(9)), &serde_json::to_vec(&manifest).unwrap()).unwrap();
            read_manifest(&mine, &id(9)).unwrap_err().message
        };
        let other_project = forged(&|m| {
            m.backup_id = id(9).to_string();
            m.project_id = "fedcba9876543210fedcba9876543210".into();
        });
        assert!(other_project.contains("names another backup or project"), "{other_project}");
        let copied = forged(&|_| {});
        assert!(copied.contains("names another backup or project"), "another backup's manifest: {copied}");
        let climbing = forged(&|m| {
            m.backup_id = id(9).to_string();
            m.chunks[0] = Some("../../../../etc/passwd".into());
        });
        assert!(climbing.contains("not a SHA-256"), "{climbing}");
        let short = forged(&|m| {
            m.backup_id = id(9).to_string();
            m.chunks.pop();
        });
        assert!(short.contains("does not match its size"), "{short}");
        assert!(read_manifest(&mine, &id(1)).is_ok(), "the honest manifest still reads");
    }
}
