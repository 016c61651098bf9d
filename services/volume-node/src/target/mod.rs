//! Export targets: how a volume's bytes reach a host. Independent of the backend: any volume path
//! can be exported by any target. `tgt` (tgtd through tgtadm) and `lio` (the kernel target through
//! targetcli) are drivers under one export manager; `none` exports nothing (local attach only).
//!
//! One target per volume, IQN `<prefix>volume-<uuid>`, one random CHAP account per export, and an
//! ACL of initiator names. Each export is recorded in a file of the node's state directory (mode
//! 0600: it holds the CHAP password), so a restarted node (or target daemon) re-creates its exports
//! with the same credentials and hosts reconnect with the `connection_info` they already have.

pub mod freeze;
pub mod lio;
pub mod tgt;

use std::{
    fs,
    future::Future,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use basalt::{ServiceError, ids::VolumeId};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OwnedMutexGuard};

use self::freeze::Frozen;
use crate::metrics;

use basalt::command::SystemRunner;

pub use lio::LioDriver;
pub use tgt::TgtDriver;

/// An export as recorded on disk and reported to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    pub volume_id: String,
    pub iqn: String,
    pub lun: u32,
    pub portal: String,
    pub username: String,
    pub password: String,
    pub path: String,
    pub initiators: Vec<String>,
}

/// What a target daemon must do; the export manager keeps records, credentials and locking.
/// Every method is idempotent: it looks at what the target has and changes only the difference.
pub trait TargetDriver: Send + Sync + 'static {
    /// The LUN a volume is exported at.
    const LUN: u32;
    /// Fails with a clear error when the target cannot be driven.
    fn check(&self) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Makes the target hold everything `export` describes.
    fn ensure(&self, export: &Export) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Takes `initiator` out of the export's ACL on the target.
    fn revoke(&self, export: &Export, initiator: &str) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Deletes the volume's target `iqn` and what belongs to it (`record`, when there is one).
    fn remove(
        &self,
        volume_id: VolumeId,
        iqn: &str,
        record: Option<&Export>,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Makes the export show the volume's current size.
    fn refresh(&self, export: &Export) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// The IQNs of the targets the daemon has now.
    fn exported(&self) -> impl Future<Output = Result<Vec<String>, ServiceError>> + Send;
    /// Stops every write through the target's LUNs until the result is thawed (`freeze.rs`), at
    /// most for `limit`; `Err` when this target cannot.
    fn freeze(&self, limit: Duration) -> impl Future<Output = Result<Frozen, ServiceError>> + Send;
}

#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// The portal hosts connect to, `ip:port`.
    pub portal: String,
    /// Prepended to `volume-<uuid>`, Cinder's `target_prefix`.
    pub iqn_prefix: String,
    /// Where export records are kept.
    pub state_dir: PathBuf,
}

/// Exports through one driver.
pub struct Exports<D: TargetDriver> {
    config: ExportConfig,
    pub(crate) driver: D,
    /// Record changes are serialised.
    lock: Arc<Mutex<()>>,
}

impl<D: TargetDriver> Exports<D> {
    pub fn new(config: ExportConfig, driver: D) -> Result<Self, ServiceError> {
        fs::create_dir_all(&config.state_dir)
            .and_then(|()| fs::set_permissions(&config.state_dir, fs::Permissions::from_mode(0o700)))
            .map_err(|error| {
                ServiceError::internal(format!("cannot prepare {}: {error}", config.state_dir.display()))
            })?;
        Ok(Self { config, driver, lock: Arc::default() })
    }

    pub fn iqn(&self, volume_id: VolumeId) -> String {
        format!("{}volume-{volume_id}", self.config.iqn_prefix)
    }

    fn record_path(&self, volume_id: VolumeId) -> PathBuf {
        self.config.state_dir.join(format!("export-{volume_id}.json"))
    }

    fn load(&self, volume_id: VolumeId) -> Result<Option<Export>, ServiceError> {
        let path = self.record_path(volume_id);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
                ServiceError::internal(format!("export record {} is damaged: {error}", path.display()))
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(ServiceError::internal(format!("cannot read {}: {error}", path.display()))),
        }
    }

    fn save(&self, export: &Export) -> Result<(), ServiceError> {
        let volume_id = VolumeId::parse(&export.volume_id)?;
        let path = self.record_path(volume_id);
        let staging = path.with_extension("json.staging");
        let bytes = serde_json::to_vec_pretty(export).map_err(|error| ServiceError::internal(error.to_string()))?;
        let write = || -> std::io::Result<()> {
            let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&staging)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&staging, &path)
        };
        write()
            .map_err(|error| ServiceError::internal(format!("cannot record the export in {}: {error}", path.display())))
    }

    pub async fn check(&self) -> Result<(), ServiceError> {
        self.driver.check().await
    }

    /// Creates the export of `path` (or returns the existing one, credentials unchanged).
    pub async fn export(&self, volume_id: VolumeId, path: &str) -> Result<Export, ServiceError> {
        let _guard = self.lock.lock().await;
        let existing = self.load(volume_id)?;
        let new = existing.is_none();
        let export = match existing {
            Some(mut existing) => {
                existing.path = path.to_owned();
                existing.portal = self.config.portal.clone();
                existing
            }
            None => Export {
                volume_id: volume_id.to_string(),
                iqn: self.iqn(volume_id),
                lun: D::LUN,
                portal: self.config.portal.clone(),
                username: random_secret(20),
                password: random_secret(16),
                path: path.to_owned(),
                initiators: Vec::new(),
            },
        };
        // Recorded first: a crash between the two leaves a record that the next start completes.
        self.save(&export)?;
        if new {
            metrics::EXPORTS.inc();
        }
        self.driver.ensure(&export).await?;
        Ok(export)
    }

    /// Lets `initiator` (an iSCSI initiator name) log in to the volume's export.
    pub async fn allow(&self, volume_id: VolumeId, initiator: &str) -> Result<Export, ServiceError> {
        check_initiator(initiator)?;
        let _guard = self.lock.lock().await;
        let mut export = self
            .load(volume_id)?
            .ok_or_else(|| ServiceError::not_found(format!("volume {volume_id} is not exported on this node")))?;
        if !export.initiators.iter().any(|known| known == initiator) {
            export.initiators.push(initiator.to_owned());
            self.save(&export)?;
            metrics::INITIATORS.inc();
        }
        self.driver.ensure(&export).await?;
        Ok(export)
    }

    /// Removes `initiator` from the volume's ACL; unknown initiators and exports are no error.
    pub async fn revoke(&self, volume_id: VolumeId, initiator: &str) -> Result<(), ServiceError> {
        let _guard = self.lock.lock().await;
        let Some(mut export) = self.load(volume_id)? else { return Ok(()) };
        let before = export.initiators.len();
        export.initiators.retain(|known| known != initiator);
        self.save(&export)?;
        metrics::INITIATORS.sub((before - export.initiators.len()) as i64);
        self.driver.revoke(&export, initiator).await
    }

    /// Deletes the target, its credentials and its record; a missing export is no error.
    pub async fn remove(&self, volume_id: VolumeId) -> Result<(), ServiceError> {
        let _guard = self.lock.lock().await;
        let record = self.load(volume_id)?;
        self.driver.remove(volume_id, &self.iqn(volume_id), record.as_ref()).await?;
        match fs::remove_file(self.record_path(volume_id)) {
            Ok(()) => {
                if let Some(record) = record {
                    metrics::EXPORTS.dec();
                    metrics::INITIATORS.sub(record.initiators.len() as i64);
                }
                Ok(())
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(ServiceError::internal(format!("cannot remove the export record: {error}"))),
        }
    }

    /// Makes the export show the volume's new size.
    pub async fn refresh(&self, volume_id: VolumeId) -> Result<(), ServiceError> {
        let _guard = self.lock.lock().await;
        let Some(export) = self.load(volume_id)? else { return Ok(()) };
        self.driver.refresh(&export).await
    }

    /// Re-creates every recorded export (after a node or target restart). Returns how many.
    pub async fn restore_all(&self) -> Result<usize, ServiceError> {
        let _guard = self.lock.lock().await;
        let entries = fs::read_dir(&self.config.state_dir).map_err(|error| {
            ServiceError::internal(format!("cannot list {}: {error}", self.config.state_dir.display()))
        })?;
        let mut restored = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix("export-").and_then(|rest| rest.strip_suffix(".json")) else { continue };
            let Some(export) = self.load(VolumeId::parse(id)?)? else { continue };
            // The gauges count records, as `remove` does, restored or not.
            metrics::EXPORTS.inc();
            metrics::INITIATORS.add(export.initiators.len() as i64);
            if !Path::new(&export.path).exists() {
                tracing::warn!(volume_id = %export.volume_id, "an export's volume is gone; not restoring it");
                continue;
            }
            self.driver.ensure(&export).await?;
            restored += 1;
        }
        Ok(restored)
    }

    /// The IQNs the target daemon has now.
    pub async fn exported(&self) -> Result<Vec<String>, ServiceError> {
        self.driver.exported().await
    }

    /// No export is made or removed until the result is released; with `writers`, no write
    /// reaches any LUN either.
    async fn hold_still(&self, writers: bool, limit: Duration) -> Result<Held, ServiceError> {
        let exports = self.lock.clone().lock_owned().await;
        let frozen = if writers { Some(self.driver.freeze(limit).await?) } else { None };
        Ok(Held { _exports: Some(exports), frozen })
    }
}

/// Volumes held still while copies of several of them are cut (`Target::hold_still`).
#[derive(Debug)]
pub struct Held {
    _exports: Option<OwnedMutexGuard<()>>,
    frozen: Option<Frozen>,
}

impl Held {
    /// Lets writes and exports go on; `Err` when the writers were held longer than the limit, so
    /// the copies cut meanwhile are not at one point in time.
    pub fn release(self) -> Result<(), ServiceError> {
        self.frozen.map_or(Ok(()), Frozen::thaw)
    }
}

/// How a node exports volumes.
pub enum Target {
    None,
    Tgt(Exports<TgtDriver<SystemRunner>>),
    Lio(Exports<LioDriver<SystemRunner>>),
}

/// Calls the same method on whichever export manager this is, or answers `$none` for `none`.
macro_rules! dispatch {
    ($self:ident, $none:expr, $exports:ident => $call:expr) => {
        match $self {
            Self::None => $none,
            Self::Tgt($exports) => $call,
            Self::Lio($exports) => $call,
        }
    };
}

fn exports_nothing<T>() -> Result<T, ServiceError> {
    Err(ServiceError::conflict(
        "this node exports nothing (export target none); start it with --export-target tgt or lio",
    ))
}

impl Target {
    /// Creates (or finds) the volume's export; the same credentials every time.
    pub async fn export(&self, volume_id: VolumeId, path: &str) -> Result<Export, ServiceError> {
        dispatch!(self, exports_nothing(), exports => exports.export(volume_id, path).await)
    }

    pub async fn allow(&self, volume_id: VolumeId, initiator: &str) -> Result<Export, ServiceError> {
        dispatch!(self, exports_nothing(), exports => exports.allow(volume_id, initiator).await)
    }

    /// Takes `initiator`'s access away; a node that exports nothing granted nothing, so there is
    /// nothing to take back.
    pub async fn revoke(&self, volume_id: VolumeId, initiator: &str) -> Result<(), ServiceError> {
        dispatch!(self, Ok(()), exports => exports.revoke(volume_id, initiator).await)
    }

    /// Removes the export if there is one; exporting nothing is not an error here.
    pub async fn remove(&self, volume_id: VolumeId) -> Result<(), ServiceError> {
        dispatch!(self, Ok(()), exports => exports.remove(volume_id).await)
    }

    /// Makes an export show the volume's new size.
    pub async fn refresh(&self, volume_id: VolumeId) -> Result<(), ServiceError> {
        dispatch!(self, Ok(()), exports => exports.refresh(volume_id).await)
    }

    /// At start: checks the target daemon and re-creates every recorded export.
    pub async fn restore(&self) -> Result<usize, ServiceError> {
        dispatch!(self, Ok(0), exports => {
            exports.check().await?;
            exports.restore_all().await
        })
    }

    /// The IQNs the target daemon has now.
    pub async fn exported(&self) -> Result<Vec<String>, ServiceError> {
        dispatch!(self, Ok(Vec::new()), exports => exports.exported().await)
    }

    /// Holds the node's exports still, and with `writers` every write through them, so that
    /// copies of several volumes are cut at one point in time.
    pub async fn hold_still(&self, writers: bool, limit: Duration) -> Result<Held, ServiceError> {
        match self {
            Self::None if writers => Err(ServiceError::conflict(
                "this node exports nothing (export target none): its in-use volumes are attached locally, where Basalt cannot hold their writes still for a consistent copy; detach them first",
            )),
            Self::None => Ok(Held { _exports: None, frozen: None }),
            Self::Tgt(exports) => exports.hold_still(writers, limit).await,
            Self::Lio(exports) => exports.hold_still(writers, limit).await,
        }
    }
}

/// Initiator names go to target tools: keep them to the IQN/EUI alphabet.
fn check_initiator(initiator: &str) -> Result<(), ServiceError> {
    let valid = !initiator.is_empty()
        && initiator.len() <= 223
        && initiator.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    if valid {
        return Ok(());
    }
    Err(ServiceError::invalid(format!(
        "invalid initiator name {initiator:?}: an iSCSI name such as iqn.1993-08.org.debian:01:abcdef"
    )))
}

/// Letters and digits from the system's random source (UUIDv4 draws from it).
fn random_secret(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut secret = String::with_capacity(length);
    while secret.len() < length {
        for byte in uuid::Uuid::new_v4().as_bytes() {
            if secret.len() == length {
                break;
            }
            secret.push(ALPHABET[*byte as usize % ALPHABET.len()] as char);
        }
    }
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initiator_names_are_checked_and_secrets_are_random() {
        assert!(check_initiator("iqn.1993-08.org.debian:01:abc").is_ok());
        for bad in ["", "iqn x", "iqn;rm", &"i".repeat(224)] {
            assert!(check_initiator(bad).is_err(), "{bad:?}");
        }
        let first = random_secret(16);
        assert_eq!(first.len(), 16);
        assert_ne!(first, random_secret(16));
        assert!(first.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
