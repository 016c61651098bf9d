//! The `lvm` backend: one pool per volume group (thick) or thin pool, driven through the `lvm` CLI
//! with JSON reports. Volumes are LVs `volume-<uuid>`, snapshots `_snapshot-<uuid>` (LVM reserves
//! names starting with `snapshot`; Cinder's LVM driver escapes them the same way), all tagged
//! `basalt` so the backend never touches an LV it did not make, unless an admin has it adopt one
//! (`manage_volume`: renamed to its volume's name and tagged).
//!
//! - Thick: a deleted volume is zeroed (`BLKZEROOUT`) before its extents return to the group, and
//!   so is the copy-on-write area of a deleted snapshot, so no tenant's bytes reach another LV.
//!   Snapshots are classic COW snapshots as large as their origin (they can never overflow).
//!   Volumes from snapshots and clones are new LVs filled by a copy that zeroes zero ranges
//!   instead of writing them. Revert copies the snapshot back in place and keeps the snapshot: a
//!   merge would free COW extents that hold tenant bytes without a chance to wipe them, and a
//!   copy can simply be repeated after a crash.
//! - Thin: the pool must zero newly provisioned blocks (checked at start), so a thin LV never
//!   reads another's old bytes and needs no wipe. Snapshots, volumes from snapshots and clones are
//!   thin snapshots; revert is `lvconvert --merge`, after which the snapshot is taken again.
//! - Anything made in steps (from a source) is built under a `staging-` name and renamed into
//!   place, so a crash never leaves a half-made volume under its real name; leftovers are wiped
//!   and removed at start.

use std::{path::Path, time::Duration};

/// How long an open LV is watched for a passing udev probe to let go: 10 × 200 ms.
const OPEN_PROBE_CHECKS: usize = 10;
const OPEN_PROBE_PAUSE: Duration = Duration::from_millis(200);

use basalt::{
    ErrorCode, ServiceError,
    ids::{SnapshotId, VolumeId},
    proto::PoolCapacity,
};
use serde::Deserialize;

use super::{
    Backend, BackendSnapshot, BackendVolume, Manageable, ManageableSnapshot, VolumeClear, VolumeSource, adoption,
    block, blocking, check_manageable_name,
};
use basalt::command::{Finished, Runner, SystemRunner};

const LVM: &str = "lvm";
const TAG: &str = "basalt";
/// Marks a thin volume whose revert merged its snapshot; the snapshot is taken again afterwards.
const REVERT_TAG_PREFIX: &str = "basalt-revert-";
const VOLUME_PREFIX: &str = "volume-";
/// LVM reserves names starting with `snapshot`; Cinder escapes them with an underscore too.
const SNAPSHOT_PREFIX: &str = "_snapshot-";
const STAGING_PREFIX: &str = "staging-";
const LV_FIELDS: &str = "lv_name,lv_size,lv_attr,lv_tags,pool_lv,origin,data_percent,lv_path";

#[derive(Debug, Clone)]
pub struct LvmBackendConfig {
    pub volume_group: String,
    /// The thin pool LV in the volume group; `None` for thick LVs.
    pub thin_pool: Option<String>,
    /// The pool's name as the scheduler sees it.
    pub pool: String,
    pub max_over_subscription_ratio: f64,
    pub reserved_percentage: u32,
    /// Whether a thick LV is zeroed before its extents go back to the group (thin LVs never are:
    /// the pool zeroes new blocks).
    pub clear: VolumeClear,
}

/// LVM commands can take minutes (a merge polls until done).
pub fn lvm_runner() -> SystemRunner {
    SystemRunner { timeout: Duration::from_secs(600), transcript: None }
}

pub struct LvmBackend<R: Runner = SystemRunner> {
    config: LvmBackendConfig,
    runner: R,
    extent_bytes: u64,
}

impl<R: Runner> std::fmt::Debug for LvmBackend<R> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("LvmBackend").field("config", &self.config).finish_non_exhaustive()
    }
}

/// One row of `lvm lvs --reportformat json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct LogicalVolume {
    pub lv_name: String,
    pub lv_size: String,
    pub lv_attr: String,
    pub lv_tags: String,
    pub pool_lv: String,
    pub origin: String,
    pub data_percent: String,
    pub lv_path: String,
}

impl LogicalVolume {
    pub fn size_bytes(&self) -> u64 {
        self.lv_size.parse().unwrap_or(0)
    }

    fn attr(&self, index: usize) -> char {
        self.lv_attr.chars().nth(index).unwrap_or('-')
    }

    /// Open by someone: mounted, exported, or held by a process.
    pub fn is_open(&self) -> bool {
        self.attr(5) == 'o'
    }

    /// A thick LV with classic snapshots.
    pub fn has_thick_snapshots(&self) -> bool {
        self.attr(0) == 'o'
    }

    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.lv_tags.split(',').filter(|tag| !tag.is_empty())
    }

    fn used_fraction(&self) -> f64 {
        self.data_percent.parse::<f64>().map_or(0.0, |percent| percent / 100.0)
    }
}

/// One row of `lvm vgs --reportformat json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct VolumeGroup {
    pub vg_name: String,
    pub vg_size: String,
    pub vg_free: String,
    pub vg_extent_size: String,
}

#[derive(Deserialize)]
struct Report<T> {
    report: Vec<T>,
}

#[derive(Deserialize)]
struct LvSection {
    lv: Vec<LogicalVolume>,
}

#[derive(Deserialize)]
struct VgSection {
    vg: Vec<VolumeGroup>,
}

pub fn parse_lvs(stdout: &str) -> Result<Vec<LogicalVolume>, ServiceError> {
    let report: Report<LvSection> = serde_json::from_str(stdout)
        .map_err(|error| ServiceError::internal(format!("lvm lvs printed an unexpected report: {error}")))?;
    Ok(report.report.into_iter().flat_map(|section| section.lv).collect())
}

pub fn parse_vgs(stdout: &str) -> Result<Vec<VolumeGroup>, ServiceError> {
    let report: Report<VgSection> = serde_json::from_str(stdout)
        .map_err(|error| ServiceError::internal(format!("lvm vgs printed an unexpected report: {error}")))?;
    Ok(report.report.into_iter().flat_map(|section| section.vg).collect())
}

/// LVM's error text, classified, with what we were doing; never the arguments.
pub fn lvm_error(what: &str, finished: &Finished) -> ServiceError {
    let text = finished
        .stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("WARNING"))
        .collect::<Vec<_>>()
        .join("; ");
    let lower = text.to_ascii_lowercase();
    let code = if lower.contains("insufficient free space") || lower.contains("insufficient suitable") {
        ErrorCode::NoCapacity
    } else if lower.contains(" in use") || lower.contains("is open") || lower.contains("only while inactive") {
        ErrorCode::Conflict
    } else if lower.contains("not found") || lower.contains("failed to find") {
        ErrorCode::NotFound
    } else {
        ErrorCode::Internal
    };
    ServiceError::new(code, format!("lvm could not {what}: {text}"))
}

fn volume_name(volume_id: VolumeId) -> String {
    format!("{VOLUME_PREFIX}{volume_id}")
}

fn snapshot_name(snapshot_id: SnapshotId) -> String {
    format!("{SNAPSHOT_PREFIX}{snapshot_id}")
}

/// device-mapper's name of an LV's COW device: dashes inside names are doubled.
fn cow_device(volume_group: &str, lv_name: &str) -> String {
    format!("/dev/mapper/{}-{}-cow", volume_group.replace('-', "--"), lv_name.replace('-', "--"))
}

impl<R: Runner> LvmBackend<R> {
    /// Checks the volume group (and thin pool) and removes what a crash left half made.
    pub async fn open(config: LvmBackendConfig, runner: R) -> Result<Self, ServiceError> {
        let mut backend = Self { config, runner, extent_bytes: 0 };
        let group = backend.volume_group().await.map_err(|error| {
            ServiceError::new(
                error.code,
                format!(
                    "{}; create the volume group (vgcreate {} <devices>) or fix --lvm-volume-group",
                    error.message, backend.config.volume_group
                ),
            )
        })?;
        backend.extent_bytes = group.vg_extent_size.parse().unwrap_or(4 << 20);
        if let Some(pool) = &backend.config.thin_pool {
            let volume_group = &backend.config.volume_group;
            let lvs = backend.logical_volumes().await?;
            let row = lvs.iter().find(|lv| &lv.lv_name == pool).ok_or_else(|| {
                ServiceError::unavailable(format!(
                    "thin pool {volume_group}/{pool} not found; create it (lvcreate -T {volume_group}/{pool} -L <size>) or fix --lvm-thin-pool"
                ))
            })?;
            if row.attr(0) != 't' {
                return Err(ServiceError::unavailable(format!("{volume_group}/{pool} is not a thin pool")));
            }
            // Without zeroing, a thin LV could read blocks another LV wrote and freed.
            if row.attr(7) != 'z' {
                return Err(ServiceError::unavailable(format!(
                    "thin pool {volume_group}/{pool} does not zero new blocks, so volumes could read old data; run lvchange -Zy {volume_group}/{pool}"
                )));
            }
        }
        for leftover in backend.basalt_volumes().await?.into_iter().filter(|lv| lv.lv_name.starts_with(STAGING_PREFIX))
        {
            tracing::warn!(lv = %leftover.lv_name, "removing an LV left by an interrupted operation");
            backend.wipe_and_remove(&leftover).await?;
        }
        Ok(backend)
    }

    fn thin(&self) -> bool {
        self.config.thin_pool.is_some()
    }

    fn qualified(&self, lv_name: &str) -> String {
        format!("{}/{lv_name}", self.config.volume_group)
    }

    fn check_pool(&self, pool: &str) -> Result<(), ServiceError> {
        if pool == self.config.pool {
            return Ok(());
        }
        Err(ServiceError::not_found(format!(
            "pool {pool:?} is not on this node; its LVM pool is {:?}",
            self.config.pool
        )))
    }

    async fn lvm(&self, args: &[&str], what: &str) -> Result<Finished, ServiceError> {
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let finished = self.runner.run(LVM, &args).await?;
        if finished.success() { Ok(finished) } else { Err(lvm_error(what, &finished)) }
    }

    async fn volume_group(&self) -> Result<VolumeGroup, ServiceError> {
        let shown = self
            .lvm(
                &[
                    "vgs",
                    "--reportformat",
                    "json",
                    "--units",
                    "b",
                    "--nosuffix",
                    "-o",
                    "vg_name,vg_size,vg_free,vg_extent_size",
                    &self.config.volume_group,
                ],
                "read the volume group",
            )
            .await?;
        parse_vgs(&shown.stdout)?
            .into_iter()
            .next()
            .ok_or_else(|| ServiceError::unavailable(format!("volume group {} not found", self.config.volume_group)))
    }

    async fn logical_volumes(&self) -> Result<Vec<LogicalVolume>, ServiceError> {
        let shown = self
            .lvm(
                &[
                    "lvs",
                    "--reportformat",
                    "json",
                    "--units",
                    "b",
                    "--nosuffix",
                    "-o",
                    LV_FIELDS,
                    &self.config.volume_group,
                ],
                "list logical volumes",
            )
            .await?;
        parse_lvs(&shown.stdout)
    }

    /// The LVs this backend made (tagged), in its pool.
    async fn basalt_volumes(&self) -> Result<Vec<LogicalVolume>, ServiceError> {
        let thin_pool = self.config.thin_pool.clone().unwrap_or_default();
        Ok(self
            .logical_volumes()
            .await?
            .into_iter()
            .filter(|lv| lv.tags().any(|tag| tag == TAG) && lv.pool_lv == thin_pool)
            .collect())
    }

    async fn find(&self, lv_name: &str) -> Result<Option<LogicalVolume>, ServiceError> {
        Ok(self.basalt_volumes().await?.into_iter().find(|lv| lv.lv_name == lv_name))
    }

    /// Why `lv` cannot become a volume of this pool, if it cannot: only a plain LV (thick pools)
    /// or a thin volume of the pool (thin pools), with no snapshots, that nothing holds open.
    fn unsafe_to_adopt(&self, lv: &LogicalVolume) -> Option<String> {
        let kind = lv.attr(0);
        let plain = if self.thin() { kind == 'V' } else { kind == '-' };
        if !plain {
            return Some(format!(
                "it is not a plain {} volume (LVM type {kind:?})",
                if self.thin() { "thin" } else { "thick" }
            ));
        }
        if lv.is_open() {
            return Some("it is in use (open by a process, a mount or an export)".into());
        }
        None
    }

    /// The LVs of the volume group that belong in this pool (thin ones in its thin pool, thick
    /// ones outside any), whoever made them.
    async fn pool_lvs(&self) -> Result<Vec<LogicalVolume>, ServiceError> {
        let thin_pool = self.config.thin_pool.clone().unwrap_or_default();
        Ok(self.logical_volumes().await?.into_iter().filter(|lv| lv.pool_lv == thin_pool).collect())
    }

    fn round_up(&self, size_bytes: u64) -> u64 {
        size_bytes.div_ceil(self.extent_bytes) * self.extent_bytes
    }

    fn describe_volume(&self, volume_id: VolumeId, lv: &LogicalVolume) -> BackendVolume {
        let size_bytes = lv.size_bytes();
        let allocated_bytes = if self.thin() { (size_bytes as f64 * lv.used_fraction()) as u64 } else { size_bytes };
        BackendVolume {
            volume_id,
            pool: self.config.pool.clone(),
            size_bytes,
            path: lv.lv_path.clone(),
            allocated_bytes,
        }
    }

    fn describe_snapshot(&self, snapshot_id: SnapshotId, lv: &LogicalVolume) -> BackendSnapshot {
        // A thick snapshot's LV size is its COW area's; what it shows is the device's size.
        let shown_bytes = if self.thin() {
            None
        } else {
            std::fs::File::open(&lv.lv_path).and_then(|device| block::size(&device)).ok()
        };
        BackendSnapshot {
            snapshot_id,
            pool: self.config.pool.clone(),
            size_bytes: shown_bytes.unwrap_or_else(|| lv.size_bytes()),
            path: lv.lv_path.clone(),
        }
    }

    async fn require(&self, lv_name: &str, what: &str) -> Result<LogicalVolume, ServiceError> {
        self.find(lv_name).await?.ok_or_else(|| ServiceError::not_found(format!("{what} is not on this node")))
    }

    /// A new empty LV of `size_bytes` (thick, or thin in the pool).
    async fn create_empty(&self, lv_name: &str, size_bytes: u64) -> Result<(), ServiceError> {
        let size = format!("{size_bytes}b");
        match &self.config.thin_pool {
            Some(pool) => {
                self.lvm(
                    &[
                        "lvcreate",
                        "--yes",
                        "-n",
                        lv_name,
                        "-V",
                        &size,
                        "--thinpool",
                        pool,
                        "--addtag",
                        TAG,
                        &self.config.volume_group,
                    ],
                    "create the volume",
                )
                .await?
            }
            None => {
                self.lvm(
                    &["lvcreate", "--yes", "-n", lv_name, "-L", &size, "--addtag", TAG, &self.config.volume_group],
                    "create the volume",
                )
                .await?
            }
        };
        Ok(())
    }

    /// A thin snapshot of `origin` named `lv_name`, active like any volume.
    async fn thin_snapshot(&self, origin: &str, lv_name: &str, what: &str) -> Result<(), ServiceError> {
        self.lvm(
            &[
                "lvcreate",
                "--yes",
                "-s",
                "--setactivationskip",
                "n",
                "-n",
                lv_name,
                "--addtag",
                TAG,
                &self.qualified(origin),
            ],
            what,
        )
        .await
        .map(drop)
    }

    async fn extend_lv(&self, lv_name: &str, size_bytes: u64) -> Result<(), ServiceError> {
        let size = format!("{size_bytes}b");
        self.lvm(&["lvextend", "--yes", "-L", &size, &self.qualified(lv_name)], "extend the volume").await.map(drop)
    }

    /// `lv` as it is once nothing but a passing probe holds it: closing a device that was written
    /// makes udev probe it (blkid opens it for a moment), so an LV seen open right after its last
    /// user went is looked at again for a short while before it counts as in use.
    async fn settled(&self, lv: &LogicalVolume) -> Result<LogicalVolume, ServiceError> {
        let mut current = lv.clone();
        for _ in 0..OPEN_PROBE_CHECKS {
            if !current.is_open() {
                break;
            }
            tokio::time::sleep(OPEN_PROBE_PAUSE).await;
            match self.find(&lv.lv_name).await? {
                Some(found) => current = found,
                None => break,
            }
        }
        Ok(current)
    }

    /// Wipes a thick LV (or a thick snapshot's COW area), then removes it.
    async fn wipe_and_remove(&self, lv: &LogicalVolume) -> Result<(), ServiceError> {
        let lv = &self.settled(lv).await?;
        if lv.is_open() {
            return Err(ServiceError::conflict(format!(
                "logical volume {} is in use (open by a process, a mount or an export); detach it first",
                self.qualified(&lv.lv_name)
            )));
        }
        if !self.thin() && self.config.clear == VolumeClear::Zero {
            let device = if lv.origin.is_empty() {
                lv.lv_path.clone()
            } else {
                cow_device(&self.config.volume_group, &lv.lv_name)
            };
            if !Path::new(&device).exists() {
                self.lvm(&["lvchange", "-ay", &self.qualified(&lv.lv_name)], "activate the LV to wipe it").await?;
            }
            blocking_io(move || block::wipe(Path::new(&device)), "wipe the logical volume").await?;
        }
        self.lvm(&["lvremove", "--yes", &self.qualified(&lv.lv_name)], "remove the logical volume").await.map(drop)
    }

    async fn describe_created(&self, volume_id: VolumeId) -> Result<BackendVolume, ServiceError> {
        let lv = self.require(&volume_name(volume_id), &format!("volume {volume_id}, just created,")).await?;
        Ok(self.describe_volume(volume_id, &lv))
    }

    async fn take_snapshot(&self, origin: &str, name: &str, origin_bytes: u64) -> Result<(), ServiceError> {
        if self.thin() {
            return self.thin_snapshot(origin, name, "take the snapshot").await;
        }
        // The origin's size plus room for the exception table (16 bytes per 4 KiB chunk, in 4 KiB
        // blocks): a COW snapshot that fills up is invalidated, this one never can.
        let size = format!("{}b", self.round_up(origin_bytes + origin_bytes / 128 + self.extent_bytes));
        self.lvm(
            &["lvcreate", "--yes", "-s", "-n", name, "-L", &size, "--addtag", TAG, &self.qualified(origin)],
            "take the snapshot",
        )
        .await
        .map(drop)
    }
}

impl<R: Runner> Backend for LvmBackend<R> {
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
        let name = volume_name(volume_id);
        let size_bytes = self.round_up(size_bytes);
        if let Some(existing) = self.find(&name).await? {
            if existing.size_bytes() == size_bytes {
                return Ok(self.describe_volume(volume_id, &existing));
            }
            return Err(ServiceError::new(
                ErrorCode::AlreadyExists,
                format!(
                    "{} already exists with {} bytes, not the {size_bytes} requested",
                    self.qualified(&name),
                    existing.size_bytes()
                ),
            ));
        }
        let source_name = match source {
            VolumeSource::Empty => {
                self.create_empty(&name, size_bytes).await?;
                return self.describe_created(volume_id).await;
            }
            VolumeSource::Snapshot(snapshot_id) => snapshot_name(snapshot_id),
            VolumeSource::Volume(source_id) => volume_name(source_id),
        };
        let source = self.require(&source_name, &format!("the source {source_name}")).await?;
        let source_bytes = match source_name.strip_prefix(SNAPSHOT_PREFIX).and_then(|id| SnapshotId::parse(id).ok()) {
            Some(snapshot_id) => self.describe_snapshot(snapshot_id, &source).size_bytes,
            None => source.size_bytes(),
        };
        if source_bytes > size_bytes {
            return Err(ServiceError::invalid(format!(
                "the new volume ({size_bytes} bytes) cannot be smaller than its source ({source_bytes} bytes)"
            )));
        }
        let staging = format!("{STAGING_PREFIX}{name}");
        if let Some(leftover) = self.find(&staging).await? {
            self.wipe_and_remove(&leftover).await?;
        }
        let built = async {
            if self.thin() {
                self.thin_snapshot(&source_name, &staging, "snapshot the source").await?;
                if size_bytes > source_bytes {
                    self.extend_lv(&staging, size_bytes).await?;
                }
            } else {
                self.create_empty(&staging, size_bytes).await?;
                let staged = self.require(&staging, "the new volume").await?;
                let (from, to, copied) = (source.lv_path.clone(), staged.lv_path.clone(), source_bytes);
                copy_then_zero(from, to, copied, size_bytes, "copy the source").await?;
            }
            self.lvm(&["lvrename", &self.config.volume_group, &staging, &name], "rename the new volume into place")
                .await
                .map(drop)
        }
        .await;
        if let Err(error) = built {
            if let Ok(Some(leftover)) = self.find(&staging).await {
                let _ = self.wipe_and_remove(&leftover).await;
            }
            return Err(error);
        }
        self.describe_created(volume_id).await
    }

    async fn extend_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        new_size_bytes: u64,
    ) -> Result<BackendVolume, ServiceError> {
        self.check_pool(pool)?;
        let name = volume_name(volume_id);
        let lv = self.require(&name, &format!("volume {volume_id}")).await?;
        let new_size_bytes = self.round_up(new_size_bytes);
        if lv.size_bytes() >= new_size_bytes {
            return Ok(self.describe_volume(volume_id, &lv));
        }
        match self.extend_lv(&name, new_size_bytes).await {
            Ok(()) => {}
            // LVM resizes a thick snapshot origin only while it is inactive.
            Err(error) if lv.has_thick_snapshots() && error.code == ErrorCode::Conflict => {
                if lv.is_open() {
                    return Err(ServiceError::conflict(format!(
                        "volume {volume_id} has snapshots and is in use: LVM extends a thick volume with snapshots only while it is inactive; detach it or delete its snapshots first"
                    )));
                }
                let qualified = self.qualified(&name);
                self.lvm(&["lvchange", "-an", &qualified], "deactivate the volume to extend it").await?;
                let extended = self.extend_lv(&name, new_size_bytes).await;
                self.lvm(&["lvchange", "-ay", &qualified], "activate the volume again").await?;
                extended?;
            }
            Err(error) => return Err(error),
        }
        self.describe_created(volume_id).await
    }

    async fn delete_volume(&self, pool: &str, volume_id: VolumeId) -> Result<bool, ServiceError> {
        self.check_pool(pool)?;
        let Some(lv) = self.find(&volume_name(volume_id)).await? else { return Ok(false) };
        if lv.has_thick_snapshots() {
            return Err(ServiceError::conflict(format!("volume {volume_id} still has snapshots; delete them first")));
        }
        self.wipe_and_remove(&lv).await?;
        Ok(true)
    }

    async fn get_volume(&self, pool: &str, volume_id: VolumeId) -> Result<Option<BackendVolume>, ServiceError> {
        self.check_pool(pool)?;
        Ok(self.find(&volume_name(volume_id)).await?.map(|lv| self.describe_volume(volume_id, &lv)))
    }

    async fn create_snapshot(
        &self,
        pool: &str,
        snapshot_id: SnapshotId,
        volume_id: VolumeId,
    ) -> Result<BackendSnapshot, ServiceError> {
        self.check_pool(pool)?;
        let name = snapshot_name(snapshot_id);
        if let Some(existing) = self.find(&name).await? {
            return Ok(self.describe_snapshot(snapshot_id, &existing));
        }
        let origin = volume_name(volume_id);
        let volume = self.require(&origin, &format!("volume {volume_id}")).await?;
        self.take_snapshot(&origin, &name, volume.size_bytes()).await?;
        let lv = self.require(&name, &format!("snapshot {snapshot_id}, just taken,")).await?;
        Ok(self.describe_snapshot(snapshot_id, &lv))
    }

    async fn get_snapshot(&self, pool: &str, snapshot_id: SnapshotId) -> Result<Option<BackendSnapshot>, ServiceError> {
        self.check_pool(pool)?;
        Ok(self.find(&snapshot_name(snapshot_id)).await?.map(|lv| self.describe_snapshot(snapshot_id, &lv)))
    }

    async fn delete_snapshot(&self, pool: &str, snapshot_id: SnapshotId) -> Result<bool, ServiceError> {
        self.check_pool(pool)?;
        let Some(lv) = self.find(&snapshot_name(snapshot_id)).await? else { return Ok(false) };
        self.wipe_and_remove(&lv).await?;
        Ok(true)
    }

    /// Gives the volume the snapshot's content, keeping the volume's current size and the snapshot.
    async fn revert_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        snapshot_id: SnapshotId,
    ) -> Result<BackendVolume, ServiceError> {
        self.check_pool(pool)?;
        let name = volume_name(volume_id);
        let snapshot = snapshot_name(snapshot_id);
        let volume = self.require(&name, &format!("volume {volume_id}")).await?;
        if volume.is_open() {
            return Err(ServiceError::conflict(format!(
                "volume {volume_id} is in use; it can be reverted only while detached"
            )));
        }
        let size_bytes = volume.size_bytes();
        if self.thin() {
            let revert_tag = format!("{REVERT_TAG_PREFIX}{snapshot_id}");
            let merged_before = volume.tags().any(|tag| tag == revert_tag);
            if !merged_before {
                self.require(&snapshot, &format!("snapshot {snapshot_id}")).await?;
                // Recorded first: if we crash after the merge, a retry knows the merge happened.
                let qualified = self.qualified(&name);
                self.lvm(&["lvchange", "--addtag", &revert_tag, &qualified], "mark the revert").await?;
                self.lvm(&["lvconvert", "--yes", "--merge", &self.qualified(&snapshot)], "merge the snapshot").await?;
            }
            let merged = self.require(&name, &format!("volume {volume_id}")).await?;
            if merged.size_bytes() < size_bytes {
                self.extend_lv(&name, size_bytes).await?;
            }
            if self.find(&snapshot).await?.is_none() {
                self.take_snapshot(&name, &snapshot, merged.size_bytes()).await?;
            }
            let qualified = self.qualified(&name);
            self.lvm(&["lvchange", "--addtag", TAG, "--deltag", &revert_tag, &qualified], "finish the revert").await?;
        } else {
            let source = self.require(&snapshot, &format!("snapshot {snapshot_id}")).await?;
            let copied = self.describe_snapshot(snapshot_id, &source).size_bytes;
            let (from, to) = (source.lv_path.clone(), volume.lv_path.clone());
            copy_then_zero(from, to, copied, size_bytes, "copy the snapshot back").await?;
        }
        self.describe_created(volume_id).await
    }

    async fn manageable(&self, pool: &str) -> Result<Vec<Manageable>, ServiceError> {
        self.check_pool(pool)?;
        let mut found: Vec<Manageable> = self
            .pool_lvs()
            .await?
            .into_iter()
            .filter(|lv| check_manageable_name(&lv.lv_name, &[SNAPSHOT_PREFIX, STAGING_PREFIX], &[]).is_ok())
            .filter(|lv| !lv.lv_name.starts_with('[') && Some(&lv.lv_name) != self.config.thin_pool.as_ref())
            .map(|lv| Manageable {
                reason_not_safe: self.unsafe_to_adopt(&lv),
                size_bytes: lv.size_bytes(),
                name: lv.lv_name,
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    async fn manage_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        source_name: &str,
        size_bytes: u64,
    ) -> Result<BackendVolume, ServiceError> {
        self.check_pool(pool)?;
        check_manageable_name(source_name, &[SNAPSHOT_PREFIX, STAGING_PREFIX], &[])?;
        let name = volume_name(volume_id);
        let lvs = self.pool_lvs().await?;
        let target = lvs.iter().find(|lv| lv.lv_name == name);
        if source_name != name {
            match (lvs.iter().find(|lv| lv.lv_name == source_name), target) {
                (Some(_), Some(_)) => return Err(adoption::target_exists(volume_id, source_name)),
                (Some(source), None) => {
                    if let Some(reason) = self.unsafe_to_adopt(source) {
                        return Err(adoption::unsafe_object(source_name, &reason));
                    }
                    if source.size_bytes() > self.round_up(size_bytes) {
                        return Err(adoption::grew(source_name, source.size_bytes(), size_bytes));
                    }
                    let group = self.config.volume_group.as_str();
                    self.lvm(&["lvrename", group, source_name, &name], "rename the adopted LV").await?;
                }
                // A repeat after the rename finds the volume in its place.
                (None, Some(_)) => {}
                (None, None) => return Err(adoption::missing(source_name)),
            }
        }
        // Tagged after the rename, so a crash between the two is finished by the repeat.
        let adopted = self.pool_lvs().await?.into_iter().find(|lv| lv.lv_name == name);
        let adopted =
            adopted.ok_or_else(|| ServiceError::not_found(format!("volume {volume_id} is not on this node")))?;
        if !adopted.tags().any(|tag| tag == TAG) {
            self.lvm(&["lvchange", "--addtag", TAG, &self.qualified(&name)], "tag the adopted LV").await?;
        }
        self.extend_volume(pool, volume_id, size_bytes).await
    }

    async fn manageable_snapshots(&self, pool: &str) -> Result<Vec<ManageableSnapshot>, ServiceError> {
        self.check_pool(pool)?;
        let mut found: Vec<ManageableSnapshot> = self
            .pool_lvs()
            .await?
            .into_iter()
            .filter(|lv| !lv.origin.is_empty() && !lv.lv_name.starts_with(STAGING_PREFIX))
            .map(|lv| ManageableSnapshot {
                reason_not_safe: lv.is_open().then(|| "it is in use (open by a process, a mount or an export)".into()),
                size_bytes: lv.size_bytes(),
                origin: Some(lv.origin.clone()),
                name: lv.lv_name,
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    async fn manage_snapshot(
        &self,
        pool: &str,
        snapshot_id: SnapshotId,
        volume_id: VolumeId,
        source_name: &str,
    ) -> Result<BackendSnapshot, ServiceError> {
        self.check_pool(pool)?;
        check_manageable_name(source_name, &[STAGING_PREFIX], &[])?;
        let name = snapshot_name(snapshot_id);
        let lvs = self.pool_lvs().await?;
        if source_name != name {
            match (lvs.iter().find(|lv| lv.lv_name == source_name), lvs.iter().any(|lv| lv.lv_name == name)) {
                (Some(_), true) => {
                    return Err(ServiceError::new(
                        ErrorCode::AlreadyExists,
                        format!("snapshot {snapshot_id} already exists; {source_name:?} was not adopted"),
                    ));
                }
                (Some(source), false) => {
                    if source.origin != volume_name(volume_id) {
                        let why = match source.origin.as_str() {
                            "" => "it is not a snapshot".to_owned(),
                            origin => format!("its origin is {origin}"),
                        };
                        return Err(adoption::not_of_volume(source_name, volume_id, &why));
                    }
                    if source.is_open() {
                        return Err(adoption::unsafe_object(source_name, "it is in use"));
                    }
                    let group = self.config.volume_group.as_str();
                    self.lvm(&["lvrename", group, source_name, &name], "rename the adopted snapshot").await?;
                }
                (None, true) => {}
                (None, false) => return Err(adoption::missing(source_name)),
            }
        }
        let adopted = self.pool_lvs().await?.into_iter().find(|lv| lv.lv_name == name);
        let adopted =
            adopted.ok_or_else(|| ServiceError::not_found(format!("snapshot {snapshot_id} is not on this node")))?;
        if !adopted.tags().any(|tag| tag == TAG) {
            self.lvm(&["lvchange", "--addtag", TAG, &self.qualified(&name)], "tag the adopted snapshot").await?;
        }
        let lv = self.require(&name, &format!("snapshot {snapshot_id}, just adopted,")).await?;
        Ok(self.describe_snapshot(snapshot_id, &lv))
    }

    async fn list(&self) -> Result<(Vec<BackendVolume>, Vec<BackendSnapshot>), ServiceError> {
        let mut volumes = Vec::new();
        let mut snapshots = Vec::new();
        for lv in self.basalt_volumes().await? {
            if let Some(id) = lv.lv_name.strip_prefix(VOLUME_PREFIX).and_then(|id| VolumeId::parse(id).ok()) {
                volumes.push(self.describe_volume(id, &lv));
            } else if let Some(id) = lv.lv_name.strip_prefix(SNAPSHOT_PREFIX).and_then(|id| SnapshotId::parse(id).ok())
            {
                snapshots.push(self.describe_snapshot(id, &lv));
            }
        }
        Ok((volumes, snapshots))
    }

    /// Cinder's LVM numbers: thick pools report the volume group's size and free space; thin pools
    /// the pool's size, its unused data space, and the virtual sizes provisioned in it.
    async fn capacity(&self) -> Result<Vec<PoolCapacity>, ServiceError> {
        let (volumes, snapshots) = self.list().await?;
        let provisioned_bytes = volumes.iter().map(|volume| volume.size_bytes).sum::<u64>()
            + snapshots.iter().map(|snapshot| snapshot.size_bytes).sum::<u64>();
        let (total_bytes, free_bytes) = match &self.config.thin_pool {
            Some(pool) => {
                let lvs = self.logical_volumes().await?;
                let row = lvs
                    .iter()
                    .find(|lv| &lv.lv_name == pool)
                    .ok_or_else(|| ServiceError::unavailable(format!("thin pool {pool} is gone")))?;
                let total = row.size_bytes();
                (total, (total as f64 * (1.0 - row.used_fraction())) as u64)
            }
            None => {
                let group = self.volume_group().await?;
                (group.vg_size.parse().unwrap_or(0), group.vg_free.parse().unwrap_or(0))
            }
        };
        let thin = self.thin();
        Ok(vec![PoolCapacity {
            name: self.config.pool.clone(),
            backend: "lvm".into(),
            total_bytes,
            free_bytes,
            provisioned_bytes,
            allocated_bytes: volumes.iter().map(|volume| volume.size_bytes).sum(),
            thin_provisioning_support: thin,
            thick_provisioning_support: !thin,
            max_over_subscription_ratio: if thin { self.config.max_over_subscription_ratio } else { 1.0 },
            reserved_percentage: self.config.reserved_percentage,
            total_volumes: volumes.len() as u64,
            multiattach: true,
            capabilities: [
                ("volume_backend_name".to_owned(), "lvm".to_owned()),
                ("storage_protocol".to_owned(), "iSCSI".to_owned()),
                ("lvm_type".to_owned(), if thin { "thin" } else { "default" }.to_owned()),
            ]
            .into(),
        }])
    }
}

/// Makes `to` hold the first `copied` bytes of `from`, then zeroes it up to `size_bytes`.
async fn copy_then_zero(
    from: String,
    to: String,
    copied: u64,
    size_bytes: u64,
    what: &str,
) -> Result<(), ServiceError> {
    blocking_io(
        move || {
            block::copy(Path::new(&from), Path::new(&to), copied)?;
            let device = std::fs::OpenOptions::new().write(true).open(&to)?;
            block::zero_range(&device, copied, size_bytes.saturating_sub(copied))?;
            device.sync_all()
        },
        what,
    )
    .await
}

/// Device I/O off the runtime; its error says what was being done.
async fn blocking_io(
    work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    what: &str,
) -> Result<(), ServiceError> {
    let what = what.to_owned();
    blocking(move || work().map_err(|error| ServiceError::internal(format!("cannot {what}: {error}")))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt::command::recorded::{RecordedRunner, ok, reply, transcript};

    const THICK: &str = include_str!("../../tests/fixtures/recorded/lvm-thick.jsonl");
    const THIN: &str = include_str!("../../tests/fixtures/recorded/lvm-thin.jsonl");
    const FAILURES: &str = include_str!("../../tests/fixtures/recorded/lvm-failures.jsonl");

    fn config(thin_pool: Option<&str>) -> LvmBackendConfig {
        LvmBackendConfig {
            volume_group: if thin_pool.is_some() { "basalt-thin" } else { "basalt-thick" }.into(),
            thin_pool: thin_pool.map(str::to_owned),
            pool: "test".into(),
            max_over_subscription_ratio: 20.0,
            reserved_percentage: 0,
            clear: VolumeClear::Zero,
        }
    }

    #[test]
    fn lvm_reports_parse_recorded() {
        let thick = transcript(THICK);
        let groups = parse_vgs(&reply(&thick, &["lvm vgs", "basalt-thick"]).stdout).unwrap();
        assert_eq!(groups[0].vg_name, "basalt-thick");
        assert_eq!(groups[0].vg_extent_size, "4194304");
        let thin = transcript(THIN);
        let lvs = parse_lvs(&reply(&thin, &["lvm lvs", "basalt-thin"]).stdout).unwrap();
        let pool = lvs.iter().find(|lv| lv.lv_name == "pool").expect("the thin pool is listed");
        assert_eq!((pool.attr(0), pool.attr(7)), ('t', 'z'), "a zeroing thin pool: {}", pool.lv_attr);
        // Every LV the backend listed with its tag is one of ours, with a device path.
        for call in thin.iter().filter(|call| call.command.starts_with("lvm lvs") && call.code == 0) {
            for lv in parse_lvs(&call.stdout).unwrap().iter().filter(|lv| lv.tags().any(|tag| tag == TAG)) {
                assert!(lv.lv_path.starts_with("/dev/basalt-thin/"), "{lv:?}");
                assert_eq!(lv.pool_lv, "pool");
            }
        }
        assert!(parse_lvs("Volume group not found").is_err());
    }

    #[test]
    fn lvm_failures_are_classified_recorded() {
        let failures = transcript(FAILURES);
        let full = lvm_error("create the volume", &reply(&failures, &["lvcreate", "-L 100g"]));
        assert_eq!(full.code, ErrorCode::NoCapacity);
        assert!(full.message.contains("insufficient free space"), "{}", full.message);
        let in_use = lvm_error("remove the logical volume", &reply(&failures, &["lvremove"]));
        assert_eq!(in_use.code, ErrorCode::Conflict);
        assert!(in_use.message.ends_with("in use."), "{}", in_use.message);
        let missing = lvm_error("read the volume group", &reply(&failures, &["lvm vgs", "basalt-missing"]));
        assert_eq!(missing.code, ErrorCode::NotFound);
        assert!(missing.message.starts_with("lvm could not read the volume group: "), "{}", missing.message);
    }

    #[tokio::test]
    async fn a_volume_held_only_by_a_passing_probe_is_deleted_and_one_held_on_is_refused_recorded() {
        let thin = transcript(THIN);
        let group = reply(&thin, &["lvm vgs", "basalt-thin"]);
        let id = "5cbe2c9c-b3d4-4429-bc40-1fb7ced3f3e2";
        let listing = thin
            .iter()
            .find(|call| call.command.starts_with("lvm lvs") && call.code == 0 && call.stdout.contains(id))
            .map(|call| ok(&call.stdout))
            .expect("a listing with the volume");
        let open = ok(&listing.stdout.replace("Vwi-a-tz--", "Vwi-aotz--"));
        let volume_id = VolumeId::parse(id).unwrap();

        // Open when the delete looks, closed a moment later: removed.
        // Opening the backend lists the volume group twice.
        let opening = |group: &Finished| {
            vec![("lvm vgs", group.clone()), ("lvm lvs", listing.clone()), ("lvm lvs", listing.clone())]
        };
        let mut replies = opening(&group);
        replies.extend([("lvm lvs", open.clone()), ("lvm lvs", open.clone()), ("lvm lvs", listing.clone())]);
        replies.push(("lvremove", ok("")));
        let backend = LvmBackend::open(config(Some("pool")), RecordedRunner::new(replies)).await.unwrap();
        assert!(backend.delete_volume("test", volume_id).await.unwrap());

        // Open all along: refused, and nothing is removed.
        let mut replies = opening(&group);
        replies.extend(std::iter::repeat_n(("lvm lvs", open), OPEN_PROBE_CHECKS + 1));
        let backend = LvmBackend::open(config(Some("pool")), RecordedRunner::new(replies)).await.unwrap();
        let refused = backend.delete_volume("test", volume_id).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::Conflict, "{}", refused.message);
        let calls = backend.runner.calls.lock().unwrap().clone();
        assert!(!calls.iter().any(|call| call.contains("lvremove")), "{calls:?}");
    }

    #[tokio::test]
    async fn a_thin_pool_opens_and_one_that_does_not_zero_is_refused_recorded() {
        let thin = transcript(THIN);
        let group = reply(&thin, &["lvm vgs", "basalt-thin"]);
        let listing = reply(&thin, &["lvm lvs", "basalt-thin"]);
        let runner = RecordedRunner::new(vec![
            ("lvm vgs", group.clone()),
            ("lvm lvs", listing.clone()),
            ("lvm lvs", listing.clone()),
        ]);
        let backend = LvmBackend::open(config(Some("pool")), runner).await.unwrap();
        assert_eq!(backend.extent_bytes, 4 << 20);
        assert_eq!(backend.round_up(1), 4 << 20);

        let mut not_zeroing = listing.clone();
        not_zeroing.stdout = not_zeroing.stdout.replace("twi-a-tz--", "twi-a-t---");
        let runner = RecordedRunner::new(vec![("lvm vgs", group), ("lvm lvs", not_zeroing)]);
        let refused = LvmBackend::open(config(Some("pool")), runner).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::Unavailable);
        assert!(refused.message.contains("lvchange -Zy basalt-thin/pool"), "{}", refused.message);
    }

    #[test]
    fn cow_devices_are_named_as_device_mapper_names_them() {
        assert_eq!(cow_device("basalt-thick", "_snapshot-ab-c"), "/dev/mapper/basalt--thick-_snapshot--ab--c-cow");
    }
}
