//! Export targets: how a volume's bytes reach a host. Independent of the backend: any volume path
//! can be exported by any target. `tgt` (tgtd through tgtadm) is built; `none` exports nothing
//! (local attach only).

pub mod tgt;

use basalt::{ServiceError, ids::VolumeId};

use crate::command::SystemRunner;

pub use tgt::{Export, TgtConfig, TgtTarget};

pub enum Target {
    None,
    Tgt(TgtTarget<SystemRunner>),
}

impl Target {
    fn tgt(&self) -> Result<&TgtTarget<SystemRunner>, ServiceError> {
        match self {
            Self::Tgt(target) => Ok(target),
            Self::None => Err(ServiceError::conflict(
                "this node exports nothing (export target none); start it with --export-target tgt",
            )),
        }
    }

    /// Creates (or finds) the volume's export; the same credentials every time.
    pub async fn export(&self, volume_id: VolumeId, path: &str) -> Result<Export, ServiceError> {
        self.tgt()?.export(volume_id, path).await
    }

    pub async fn allow(&self, volume_id: VolumeId, initiator: &str) -> Result<Export, ServiceError> {
        self.tgt()?.allow(volume_id, initiator).await
    }

    pub async fn revoke(&self, volume_id: VolumeId, initiator: &str) -> Result<(), ServiceError> {
        self.tgt()?.revoke(volume_id, initiator).await
    }

    /// Removes the export if there is one; exporting nothing is not an error here.
    pub async fn remove(&self, volume_id: VolumeId) -> Result<(), ServiceError> {
        match self {
            Self::Tgt(target) => target.remove(volume_id).await,
            Self::None => Ok(()),
        }
    }

    /// Makes an export show the volume's new size.
    pub async fn refresh(&self, volume_id: VolumeId) -> Result<(), ServiceError> {
        match self {
            Self::Tgt(target) => target.refresh(volume_id).await,
            Self::None => Ok(()),
        }
    }

    /// At start: checks the target daemon and re-creates every recorded export.
    pub async fn restore(&self) -> Result<usize, ServiceError> {
        match self {
            Self::Tgt(target) => {
                target.check().await?;
                target.restore_all().await
            }
            Self::None => Ok(0),
        }
    }
}
