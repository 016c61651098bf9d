//! What NodeStageVolume did, kept on disk (`<state dir>/<volume id>.json`, written whole and
//! renamed into place), so NodeUnstageVolume, NodePublishVolume and expansion find the device and
//! how it was attached after the plugin restarts.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tonic::Status;

/// How the volume reached this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Attachment {
    /// The volume's file on this host, through a loop device.
    Local { file: String },
    /// An iSCSI session to the volume's target.
    Iscsi { portal: String, iqn: String, lun: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub volume_id: String,
    pub staging_path: String,
    pub attachment: Attachment,
    /// The block device (`/dev/loopN`, `/dev/sdX`).
    pub device: String,
    pub block: bool,
    /// Empty for raw block.
    pub fs_type: String,
    pub mount_flags: Vec<String>,
    /// The filesystem is mounted at the staging path (set once the mount is done).
    pub mounted: bool,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

fn state_error(action: &str, error: impl std::fmt::Display) -> Status {
    Status::internal(format!("cannot {action} the node's staging records: {error}"))
}

impl StateDir {
    pub fn open(dir: &Path) -> Result<Self, Status> {
        fs::create_dir_all(dir).map_err(|error| state_error("create the directory of", error))?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// The record's file; volume ids are UUIDs here (checked by the caller), so the name is safe.
    fn path(&self, volume_id: &str) -> PathBuf {
        self.dir.join(format!("{volume_id}.json"))
    }

    pub fn load(&self, volume_id: &str) -> Result<Option<Staged>, Status> {
        match fs::read(self.path(volume_id)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| state_error("read", error)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(state_error("read", error)),
        }
    }

    pub fn save(&self, staged: &Staged) -> Result<(), Status> {
        let path = self.path(&staged.volume_id);
        let staging = self.dir.join(format!(".{}.{}", staged.volume_id, uuid::Uuid::new_v4().simple()));
        let bytes = serde_json::to_vec_pretty(staged).map_err(|error| state_error("encode", error))?;
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&staging)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&staging, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|error| {
            let _ = fs::remove_file(&staging);
            state_error("write", error)
        })
    }

    pub fn remove(&self, volume_id: &str) -> Result<(), Status> {
        match fs::remove_file(self.path(volume_id)) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(state_error("remove", error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let staged = Staged {
            volume_id: "3f2a6c1e-8d4b-4c2e-9a7f-0b1c2d3e4f50".into(),
            staging_path: "/var/lib/kubelet/x".into(),
            attachment: Attachment::Iscsi { portal: "192.0.2.1:3260".into(), iqn: "iqn.x:volume-1".into(), lun: 1 },
            device: "/dev/sdb".into(),
            block: false,
            fs_type: "ext4".into(),
            mount_flags: vec![],
            mounted: true,
        };
        StateDir::open(dir.path()).unwrap().save(&staged).unwrap();
        let reopened = StateDir::open(dir.path()).unwrap();
        assert_eq!(reopened.load(&staged.volume_id).unwrap(), Some(staged.clone()));
        reopened.remove(&staged.volume_id).unwrap();
        assert_eq!(reopened.load(&staged.volume_id).unwrap(), None);
    }
}
