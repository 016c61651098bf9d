//! Storage backends. A backend owns the bytes of volumes and snapshots in its pools; it knows
//! nothing of exports, projects or statuses. Selected by configuration, no dynamic loading.
//!
//! Every operation is idempotent by UUID: a repeated create of the same size succeeds, a repeated
//! delete of a missing volume succeeds, an extend to a size already reached succeeds. The
//! scheduler relies on that to re-drive work after a crash.

pub mod block;
pub mod conformance;
pub mod file;
pub mod lvm;
pub mod nfs;
pub mod sparse;

use basalt::{
    ServiceError,
    ids::{SnapshotId, VolumeId},
    proto::PoolCapacity,
};

/// What a delete does to a volume's bytes before its space is given back (Cinder's
/// `volume_clear`). `Zero` is the default and the only choice that keeps one tenant's bytes from
/// the next on ordinary media; `None` is for media that guarantee it themselves (self-encrypting
/// drives with a per-volume key, thin pools that zero new blocks, devices that zero on discard)
/// and is taken at the operator's word.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VolumeClear {
    #[default]
    Zero,
    None,
}

impl std::str::FromStr for VolumeClear {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "zero" => Ok(Self::Zero),
            "none" => Ok(Self::None),
            _ => Err(format!("volume clear {text:?}: choose zero (the default) or none")),
        }
    }
}

pub use file::FileBackend;
pub use lvm::LvmBackend;
pub use nfs::NfsBackend;

/// Runs blocking storage work (file and device I/O) off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ServiceError::internal(format!("a blocking storage task failed: {error}")))?
}

/// A volume as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendVolume {
    pub volume_id: VolumeId,
    pub pool: String,
    pub size_bytes: u64,
    pub path: String,
    pub allocated_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSnapshot {
    pub snapshot_id: SnapshotId,
    pub pool: String,
    pub size_bytes: u64,
    pub path: String,
}

/// An object in a pool that a volume could be adopted from (Cinder's manageable volumes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manageable {
    /// The name it has in the pool: a file name, an LV name.
    pub name: String,
    pub size_bytes: u64,
    /// Why it can never be adopted, when it cannot (a symbolic link, an LV in use, ...).
    pub reason_not_safe: Option<String>,
}

/// A snapshot in a pool that a snapshot row could be adopted from (Cinder's manageable
/// snapshots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManageableSnapshot {
    pub name: String,
    pub size_bytes: u64,
    /// The name of the volume it is a snapshot of, where the backend records it (LVM's origin).
    pub origin: Option<String>,
    pub reason_not_safe: Option<String>,
}

/// Checks a name a client gave for an object to adopt: one plain name within the pool, never a
/// path, never one of the backend's own snapshot or work-in-progress names (those starting with
/// one of `reserved_prefixes` or holding one of `reserved_marks`).
pub fn check_manageable_name(
    name: &str,
    reserved_prefixes: &[&str],
    reserved_marks: &[&str],
) -> Result<(), ServiceError> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control);
    if !plain {
        return Err(ServiceError::invalid(format!(
            "{:?} is not a name in the pool: give the file or LV name alone (1 to 255 characters, no '/')",
            basalt::error::excerpt(name)
        )));
    }
    let reserved = reserved_prefixes.iter().find(|prefix| name.starts_with(*prefix));
    if let Some(reserved) = reserved.or_else(|| reserved_marks.iter().find(|mark| name.contains(*mark))) {
        return Err(ServiceError::invalid(format!(
            "{:?} is one of the backend's own objects (named with {reserved:?}), not a volume to adopt",
            basalt::error::excerpt(name)
        )));
    }
    Ok(())
}

/// Refusals of an adoption every backend words the same.
pub mod adoption {
    use basalt::{ErrorCode, ServiceError, ids::VolumeId};

    pub fn grew(source_name: &str, bytes: u64, listed_bytes: u64) -> ServiceError {
        ServiceError::conflict(format!(
            "{source_name:?} holds {bytes} bytes, more than the {listed_bytes} it was listed with; list it again"
        ))
    }

    pub fn target_exists(volume_id: VolumeId, source_name: &str) -> ServiceError {
        ServiceError::new(
            ErrorCode::AlreadyExists,
            format!("volume {volume_id} already exists; {source_name:?} was not adopted"),
        )
    }

    pub fn unsafe_object(source_name: &str, reason: &str) -> ServiceError {
        ServiceError::invalid(format!("{source_name:?} cannot be adopted: {reason}"))
    }

    pub fn missing(source_name: &str) -> ServiceError {
        ServiceError::not_found(format!("{source_name:?} is not in the pool"))
    }

    pub fn not_of_volume(source_name: &str, volume_id: VolumeId, why: &str) -> ServiceError {
        ServiceError::invalid(format!("{source_name:?} is not a snapshot of volume {volume_id}: {why}"))
    }
}

/// What a new volume starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeSource {
    Empty,
    Snapshot(SnapshotId),
    Volume(VolumeId),
}

/// What a storage backend does with the bytes of volumes and snapshots in its pools.
///
/// Every method is idempotent by id, because the scheduler re-drives an operation from its journal
/// after any crash without knowing how far the first attempt got. What each promises on a repeat
/// is written beside it, and `conformance.rs` checks it on every backend.
pub trait Backend: Send + Sync {
    /// Makes the volume, empty (reading as zeros) or as a copy of `source`. A repeat with the same
    /// size returns the volume that exists; a volume of another size under the id is an error. A
    /// crash part-way leaves nothing that a repeat trips over (copies are made aside and renamed).
    fn create_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        size_bytes: u64,
        source: VolumeSource,
    ) -> impl Future<Output = Result<BackendVolume, ServiceError>> + Send;

    /// Grows the volume to `new_size_bytes`, keeping its bytes. A repeat, or a volume already at
    /// least that large, succeeds without change; a volume never shrinks.
    fn extend_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        new_size_bytes: u64,
    ) -> impl Future<Output = Result<BackendVolume, ServiceError>> + Send;

    /// Wipes the volume's bytes (unless the backend's allocation is zeroed anyway) and removes it;
    /// `Ok(false)` when it was already gone, which a repeat is.
    fn delete_volume(&self, pool: &str, volume_id: VolumeId)
    -> impl Future<Output = Result<bool, ServiceError>> + Send;

    /// The volume, if it exists. Reads only.
    fn get_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
    ) -> impl Future<Output = Result<Option<BackendVolume>, ServiceError>> + Send;

    /// A point-in-time copy of the volume. A repeat returns the snapshot that exists, whatever
    /// the volume holds now.
    fn create_snapshot(
        &self,
        pool: &str,
        snapshot_id: SnapshotId,
        volume_id: VolumeId,
    ) -> impl Future<Output = Result<BackendSnapshot, ServiceError>> + Send;

    /// The snapshot, if it exists. Reads only.
    fn get_snapshot(
        &self,
        pool: &str,
        snapshot_id: SnapshotId,
    ) -> impl Future<Output = Result<Option<BackendSnapshot>, ServiceError>> + Send;

    /// Wipes and removes the snapshot; `Ok(false)` when it was already gone, which a repeat is.
    fn delete_snapshot(
        &self,
        pool: &str,
        snapshot_id: SnapshotId,
    ) -> impl Future<Output = Result<bool, ServiceError>> + Send;

    /// Puts the snapshot's bytes back into the volume. Repeating it gives the same bytes; the
    /// snapshot stays as it was.
    fn revert_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        snapshot_id: SnapshotId,
    ) -> impl Future<Output = Result<BackendVolume, ServiceError>> + Send;

    /// The objects in `pool` a volume could be adopted from, with their sizes: every file (LV)
    /// but snapshots and work in progress, Basalt's own volumes included by their names (the
    /// scheduler knows which of those it manages). Reads only.
    fn manageable(&self, pool: &str) -> impl Future<Output = Result<Vec<Manageable>, ServiceError>> + Send;

    /// Adopts the object `source_name` as volume `volume_id`: renamed to the volume's name, its
    /// bytes kept, grown to `size_bytes` (never shrunk: an object that grew past it since it was
    /// listed is refused). A repeat, once the rename happened, returns the volume.
    fn manage_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        source_name: &str,
        size_bytes: u64,
    ) -> impl Future<Output = Result<BackendVolume, ServiceError>> + Send;

    /// The snapshots in `pool` a snapshot could be adopted from: the backend's own snapshot
    /// objects, Basalt's included by their names (the scheduler knows which it manages). Reads
    /// only.
    fn manageable_snapshots(
        &self,
        pool: &str,
    ) -> impl Future<Output = Result<Vec<ManageableSnapshot>, ServiceError>> + Send;

    /// Adopts the snapshot object `source_name` as snapshot `snapshot_id` of volume `volume_id`:
    /// only an object that is that volume's snapshot (LVM: its origin; file: of the volume's
    /// size), renamed, bytes kept. A repeat, once the rename happened, returns the snapshot.
    fn manage_snapshot(
        &self,
        pool: &str,
        snapshot_id: SnapshotId,
        volume_id: VolumeId,
        source_name: &str,
    ) -> impl Future<Output = Result<BackendSnapshot, ServiceError>> + Send;

    /// Every volume and snapshot the backend holds, for reconciliation with the scheduler's rows.
    fn list(&self) -> impl Future<Output = Result<(Vec<BackendVolume>, Vec<BackendSnapshot>), ServiceError>> + Send;

    /// Each pool's capacity, as the node reports it (Cinder's capacity fields).
    fn capacity(&self) -> impl Future<Output = Result<Vec<PoolCapacity>, ServiceError>> + Send;
}

/// The backend a node was configured with.
#[derive(Debug)]
pub enum ConfiguredBackend {
    File(FileBackend),
    Lvm(LvmBackend),
    Nfs(NfsBackend),
}

/// Calls the same method on whichever backend this is.
macro_rules! dispatch {
    ($self:ident, $backend:ident => $call:expr) => {
        match $self {
            Self::File($backend) => $call,
            Self::Lvm($backend) => $call,
            Self::Nfs($backend) => $call,
        }
    };
}

impl Backend for ConfiguredBackend {
    async fn create_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        size_bytes: u64,
        source: VolumeSource,
    ) -> Result<BackendVolume, ServiceError> {
        dispatch!(self, backend => backend.create_volume(pool, volume_id, size_bytes, source).await)
    }

    async fn extend_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        new_size_bytes: u64,
    ) -> Result<BackendVolume, ServiceError> {
        dispatch!(self, backend => backend.extend_volume(pool, volume_id, new_size_bytes).await)
    }

    async fn delete_volume(&self, pool: &str, volume_id: VolumeId) -> Result<bool, ServiceError> {
        dispatch!(self, backend => backend.delete_volume(pool, volume_id).await)
    }

    async fn get_volume(&self, pool: &str, volume_id: VolumeId) -> Result<Option<BackendVolume>, ServiceError> {
        dispatch!(self, backend => backend.get_volume(pool, volume_id).await)
    }

    async fn create_snapshot(
        &self,
        pool: &str,
        snapshot_id: SnapshotId,
        volume_id: VolumeId,
    ) -> Result<BackendSnapshot, ServiceError> {
        dispatch!(self, backend => backend.create_snapshot(pool, snapshot_id, volume_id).await)
    }

    async fn get_snapshot(&self, pool: &str, snapshot_id: SnapshotId) -> Result<Option<BackendSnapshot>, ServiceError> {
        dispatch!(self, backend => backend.get_snapshot(pool, snapshot_id).await)
    }

    async fn delete_snapshot(&self, pool: &str, snapshot_id: SnapshotId) -> Result<bool, ServiceError> {
        dispatch!(self, backend => backend.delete_snapshot(pool, snapshot_id).await)
    }

    async fn revert_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        snapshot_id: SnapshotId,
    ) -> Result<BackendVolume, ServiceError> {
        dispatch!(self, backend => backend.revert_volume(pool, volume_id, snapshot_id).await)
    }

    async fn manageable(&self, pool: &str) -> Result<Vec<Manageable>, ServiceError> {
        dispatch!(self, backend => backend.manageable(pool).await)
    }

    async fn manage_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        source_name: &str,
        size_bytes: u64,
    ) -> Result<BackendVolume, ServiceError> {
        dispatch!(self, backend => backend.manage_volume(pool, volume_id, source_name, size_bytes).await)
    }

    async fn manageable_snapshots(&self, pool: &str) -> Result<Vec<ManageableSnapshot>, ServiceError> {
        dispatch!(self, backend => backend.manageable_snapshots(pool).await)
    }

    async fn manage_snapshot(
        &self,
        pool: &str,
        snapshot_id: SnapshotId,
        volume_id: VolumeId,
        source_name: &str,
    ) -> Result<BackendSnapshot, ServiceError> {
        dispatch!(self, backend => backend.manage_snapshot(pool, snapshot_id, volume_id, source_name).await)
    }

    async fn list(&self) -> Result<(Vec<BackendVolume>, Vec<BackendSnapshot>), ServiceError> {
        dispatch!(self, backend => backend.list().await)
    }

    async fn capacity(&self) -> Result<Vec<PoolCapacity>, ServiceError> {
        dispatch!(self, backend => backend.capacity().await)
    }
}
