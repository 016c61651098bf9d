//! The `nfs` backend: each configured share (`host:/export`) is one pool, mounted by the node
//! under its mount base and holding volumes as sparse raw files, exactly as the `file` backend
//! keeps them (atomic staging, sparse copies, wipe before unlink). The node mounts what is not
//! mounted when it starts, so a restarted node finds its shares again.

use std::path::{Path, PathBuf};

use basalt::{
    ServiceError,
    ids::{SnapshotId, VolumeId},
    proto::PoolCapacity,
};

use super::{
    Backend, BackendSnapshot, BackendVolume, Manageable, ManageableSnapshot, VolumeClear, VolumeSource,
    file::{FileBackend, FileBackendConfig},
};
use basalt::command::Runner;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsShare {
    /// `host:/export`; also the pool's name, as in Cinder's NFS driver.
    pub address: String,
    /// Mount options (`-o`), e.g. `vers=4.2`.
    pub options: String,
}

impl NfsShare {
    /// Parses `host:/export` with optional ` options` after a space or `;`.
    pub fn parse(text: &str, default_options: &str) -> Result<Self, ServiceError> {
        let (address, options) = match text.split_once([' ', ';']) {
            Some((address, options)) => (address.trim(), options.trim()),
            None => (text.trim(), default_options),
        };
        let valid = address.split_once(":/").is_some_and(|(host, _)| !host.is_empty())
            && !address.contains(char::is_whitespace)
            && !address.starts_with('-');
        if !valid {
            return Err(ServiceError::invalid(format!(
                "invalid NFS share {text:?}: expected host:/export, e.g. 192.0.2.10:/srv/basalt"
            )));
        }
        Ok(Self { address: address.to_owned(), options: options.to_owned() })
    }
}

#[derive(Debug, Clone)]
pub struct NfsBackendConfig {
    pub shares: Vec<NfsShare>,
    /// Shares are mounted in subdirectories of this one.
    pub mount_base: PathBuf,
    pub max_over_subscription_ratio: f64,
    pub reserved_percentage: u32,
    pub clear: VolumeClear,
}

#[derive(Debug)]
struct NfsPool {
    share: NfsShare,
    mount_point: PathBuf,
    files: FileBackend,
}

#[derive(Debug)]
pub struct NfsBackend {
    pools: Vec<NfsPool>,
}

/// The mount point of a share: its address with every byte outside `[A-Za-z0-9.-]` escaped, so
/// two shares never share a directory.
pub fn mount_point(base: &Path, address: &str) -> PathBuf {
    let mut name = String::with_capacity(address.len() * 2);
    for byte in address.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-' {
            name.push(byte as char);
        } else {
            name.push_str(&format!("_{byte:02x}"));
        }
    }
    base.join(name)
}

/// The filesystem type mounted at `path` according to `/proc/self/mountinfo`, if any.
pub fn mounted_type(mountinfo: &str, path: &Path) -> Option<String> {
    let wanted = path.to_string_lossy();
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let mount_point = fields.get(4)?.replace("\\040", " ");
        let separator = fields.iter().position(|field| *field == "-")?;
        (mount_point == wanted).then(|| fields.get(separator + 1).map(|kind| (*kind).to_owned())).flatten()
    })
}

impl NfsBackend {
    /// Mounts every share that is not mounted yet, then opens its pool.
    pub async fn open(config: NfsBackendConfig, runner: &impl Runner) -> Result<Self, ServiceError> {
        if config.shares.is_empty() {
            return Err(ServiceError::invalid("the nfs backend needs at least one share (--nfs-share host:/export)"));
        }
        let mut pools = Vec::with_capacity(config.shares.len());
        for share in &config.shares {
            let mount_point = mount_point(&config.mount_base, &share.address);
            std::fs::create_dir_all(&mount_point).map_err(|error| {
                ServiceError::internal(format!("cannot create the mount point {}: {error}", mount_point.display()))
            })?;
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            match mounted_type(&mountinfo, &mount_point) {
                Some(kind) if kind.starts_with("nfs") => {}
                Some(kind) => {
                    return Err(ServiceError::unavailable(format!(
                        "{} holds a {kind} filesystem, not the NFS share {}",
                        mount_point.display(),
                        share.address
                    )));
                }
                None => mount(runner, share, &mount_point).await?,
            }
            let files = FileBackend::open(FileBackendConfig {
                root: mount_point.clone(),
                pool: share.address.clone(),
                max_over_subscription_ratio: config.max_over_subscription_ratio,
                reserved_percentage: config.reserved_percentage,
                max_capacity_bytes: None,
                driver: "nfs",
                clear: config.clear,
            })?;
            tracing::info!(share = %share.address, mount_point = %mount_point.display(), "NFS share ready");
            pools.push(NfsPool { share: share.clone(), mount_point, files });
        }
        Ok(Self { pools })
    }

    fn pool(&self, pool: &str) -> Result<&NfsPool, ServiceError> {
        self.pools.iter().find(|candidate| candidate.share.address == pool).ok_or_else(|| {
            let known: Vec<&str> = self.pools.iter().map(|candidate| candidate.share.address.as_str()).collect();
            ServiceError::not_found(format!("pool {pool:?} is not on this node; its NFS pools are {known:?}"))
        })
    }

    /// The share and mount options a host uses to reach the pool's files.
    pub fn share(&self, pool: &str) -> Result<(&NfsShare, &Path), ServiceError> {
        let pool = self.pool(pool)?;
        Ok((&pool.share, &pool.mount_point))
    }
}

impl Backend for NfsBackend {
    async fn create_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        size_bytes: u64,
        source: VolumeSource,
    ) -> Result<BackendVolume, ServiceError> {
        self.pool(pool)?.files.create_volume(pool, volume_id, size_bytes, source).await
    }

    async fn extend_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        new_size_bytes: u64,
    ) -> Result<BackendVolume, ServiceError> {
        self.pool(pool)?.files.extend_volume(pool, volume_id, new_size_bytes).await
    }

    async fn delete_volume(&self, pool: &str, volume_id: VolumeId) -> Result<bool, ServiceError> {
        self.pool(pool)?.files.delete_volume(pool, volume_id).await
    }

    async fn get_volume(&self, pool: &str, volume_id: VolumeId) -> Result<Option<BackendVolume>, ServiceError> {
        self.pool(pool)?.files.get_volume(pool, volume_id).await
    }

    async fn create_snapshot(
        &self,
        pool: &str,
        snapshot_id: SnapshotId,
        volume_id: VolumeId,
    ) -> Result<BackendSnapshot, ServiceError> {
        self.pool(pool)?.files.create_snapshot(pool, snapshot_id, volume_id).await
    }

    async fn get_snapshot(&self, pool: &str, snapshot_id: SnapshotId) -> Result<Option<BackendSnapshot>, ServiceError> {
        self.pool(pool)?.files.get_snapshot(pool, snapshot_id).await
    }

    async fn delete_snapshot(&self, pool: &str, snapshot_id: SnapshotId) -> Result<bool, ServiceError> {
        self.pool(pool)?.files.delete_snapshot(pool, snapshot_id).await
    }

    async fn revert_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        snapshot_id: SnapshotId,
    ) -> Result<BackendVolume, ServiceError> {
        self.pool(pool)?.files.revert_volume(pool, volume_id, snapshot_id).await
    }

    async fn manageable(&self, pool: &str) -> Result<Vec<Manageable>, ServiceError> {
        self.pool(pool)?.files.manageable(pool).await
    }

    async fn manage_volume(
        &self,
        pool: &str,
        volume_id: VolumeId,
        source_name: &str,
        size_bytes: u64,
    ) -> Result<BackendVolume, ServiceError> {
        self.pool(pool)?.files.manage_volume(pool, volume_id, source_name, size_bytes).await
    }

    async fn manageable_snapshots(&self, pool: &str) -> Result<Vec<ManageableSnapshot>, ServiceError> {
        self.pool(pool)?.files.manageable_snapshots(pool).await
    }

    async fn manage_snapshot(
        &self,
        pool: &str,
        snapshot_id: SnapshotId,
        volume_id: VolumeId,
        source_name: &str,
    ) -> Result<BackendSnapshot, ServiceError> {
        self.pool(pool)?.files.manage_snapshot(pool, snapshot_id, volume_id, source_name).await
    }

    async fn list(&self) -> Result<(Vec<BackendVolume>, Vec<BackendSnapshot>), ServiceError> {
        let mut volumes = Vec::new();
        let mut snapshots = Vec::new();
        for pool in &self.pools {
            let (pool_volumes, pool_snapshots) = pool.files.list().await?;
            volumes.extend(pool_volumes);
            snapshots.extend(pool_snapshots);
        }
        Ok((volumes, snapshots))
    }

    async fn capacity(&self) -> Result<Vec<PoolCapacity>, ServiceError> {
        let mut pools = Vec::with_capacity(self.pools.len());
        for pool in &self.pools {
            pools.extend(pool.files.capacity().await?);
        }
        Ok(pools)
    }
}

async fn mount(runner: &impl Runner, share: &NfsShare, mount_point: &Path) -> Result<(), ServiceError> {
    let mut args = vec!["-t".to_owned(), "nfs".to_owned()];
    if !share.options.is_empty() {
        args.extend(["-o".to_owned(), share.options.clone()]);
    }
    args.extend([share.address.clone(), mount_point.display().to_string()]);
    let finished = runner.run("mount", &args).await?;
    if finished.success() {
        return Ok(());
    }
    Err(ServiceError::unavailable(format!(
        "cannot mount the NFS share {} on {}: {}",
        share.address,
        mount_point.display(),
        finished.stderr
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt::command::recorded::{RecordedRunner, reply, transcript};

    #[test]
    fn shares_parse_and_mount_points_never_collide() {
        let share = NfsShare::parse("192.0.2.10:/srv/basalt", "vers=4.2").unwrap();
        assert_eq!((share.address.as_str(), share.options.as_str()), ("192.0.2.10:/srv/basalt", "vers=4.2"));
        let own = NfsShare::parse("host:/a vers=3,soft", "vers=4.2").unwrap();
        assert_eq!(own.options, "vers=3,soft");
        for bad in ["", "host", ":/export", "-o:/x", "host:relative"] {
            assert!(NfsShare::parse(bad, "").is_err(), "{bad:?}");
        }
        let base = Path::new("/mnt");
        assert_ne!(mount_point(base, "a:/b_c"), mount_point(base, "a:/b/c"));
        assert_eq!(mount_point(base, "127.0.0.1:/srv/nfs"), Path::new("/mnt/127.0.0.1_3a_2fsrv_2fnfs"));
    }

    #[test]
    fn mountinfo_shows_the_share_recorded() {
        let mountinfo = include_str!("../../tests/fixtures/recorded/nfs-mountinfo.txt");
        let mounted = mount_point(Path::new("/run/basalt-mnt"), "127.0.0.1:/srv/nfs");
        assert_eq!(mounted_type(mountinfo, &mounted).as_deref(), Some("nfs4"));
        assert_eq!(mounted_type(mountinfo, Path::new("/run/basalt-mnt")), None);
    }

    #[tokio::test]
    async fn a_mount_failure_is_a_clear_error_recorded() {
        let calls = transcript(include_str!("../../tests/fixtures/recorded/nfs-failures.jsonl"));
        let runner = RecordedRunner::new(vec![("mount -t nfs", reply(&calls, &["mount -t nfs", "/srv/missing"]))]);
        let base = tempfile::tempdir().unwrap();
        let config = NfsBackendConfig {
            shares: vec![NfsShare::parse("127.0.0.1:/srv/missing", "vers=4.2").unwrap()],
            mount_base: base.path().to_path_buf(),
            max_over_subscription_ratio: 1.0,
            reserved_percentage: 0,
            clear: VolumeClear::Zero,
        };
        let error = NfsBackend::open(config, &runner).await.unwrap_err();
        assert_eq!(error.code, basalt::ErrorCode::Unavailable);
        assert!(error.message.contains("cannot mount the NFS share 127.0.0.1:/srv/missing"), "{}", error.message);
        assert!(error.message.contains("reason given by server: No such file or directory"), "{}", error.message);
    }
}
