//! Storage backends. A backend owns the bytes of volumes in its pools; it knows nothing of exports,
//! projects or statuses. Selected by configuration, no dynamic loading.
//!
//! Every operation is idempotent by volume UUID: a repeated create of the same size succeeds, a
//! repeated delete of a missing volume succeeds. The scheduler relies on that to re-drive work
//! after a crash.

pub mod file;

use basalt::{ServiceError, ids::VolumeId, proto::PoolCapacity};

pub use file::FileBackend;

/// A volume as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendVolume {
    pub volume_id: VolumeId,
    pub pool: String,
    pub size_bytes: u64,
    pub path: String,
    pub allocated_bytes: u64,
}

#[derive(Debug)]
pub enum Backend {
    File(FileBackend),
}

impl Backend {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
        }
    }

    pub async fn create_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        size_bytes: u64,
    ) -> Result<BackendVolume, ServiceError> {
        match self {
            Self::File(backend) => backend.create_volume(pool, volume_id, size_bytes).await,
        }
    }

    /// Wipes and removes the volume; `Ok(false)` when it was already gone.
    pub async fn delete_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
    ) -> Result<bool, ServiceError> {
        match self {
            Self::File(backend) => backend.delete_volume(pool, volume_id).await,
        }
    }

    pub async fn get_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
    ) -> Result<Option<BackendVolume>, ServiceError> {
        match self {
            Self::File(backend) => backend.get_volume(pool, volume_id).await,
        }
    }

    pub async fn capacity(&self) -> Result<Vec<PoolCapacity>, ServiceError> {
        match self {
            Self::File(backend) => backend.capacity().await,
        }
    }
}
