//! The `lio` export target: the kernel's iSCSI target, changed through `targetcli` and read from
//! configfs, where LIO keeps its whole state. One `targetcli` run per change, with its commands
//! batched on stdin (each start costs seconds on a slow host). Block devices (LVM volumes) are
//! `block` backstores, files `fileio` backstores without write-back caching; the volume is LUN 0
//! of TPG 1, whose portal is ours only (no default 0.0.0.0 portal), with CHAP per ACL.
//!
//! After every change the driver reads configfs again and fails, with targetcli's own words, if
//! anything it asked for is missing: targetcli does not stop at the first failed command of a batch.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use basalt::{ErrorCode, ServiceError, ids::VolumeId};

use super::{Export, TargetDriver, freeze::Frozen};
use basalt::command::{Finished, Runner};

const TARGETCLI: &str = "targetcli";
/// Settings for every batch: nothing written to /etc/target (our records are the truth), and no
/// portal on every address.
const PREAMBLE: &str = "set global auto_save_on_exit=false\nset global auto_add_default_portal=false\n";

/// LIO's state for one target, as configfs shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LioTarget {
    pub iqn: String,
    pub portals: Vec<String>,
    pub luns: Vec<u32>,
    pub acls: Vec<String>,
    pub authentication: bool,
    /// The session parameters below are set (checked by `InitialR2T`, the last one set).
    pub large_bursts: bool,
}

/// iSCSI session parameters offered to initiators, as for tgt: LIO's defaults (8 KiB data PDUs,
/// 256 KiB bursts, an R2T round trip before every write's data) halve large-write throughput.
const SESSION_PARAMETERS: &str = "MaxRecvDataSegmentLength=262144 MaxXmitDataSegmentLength=262144 FirstBurstLength=262144 MaxBurstLength=1048576 InitialR2T=No";

pub struct LioDriver<R: Runner> {
    /// configfs' `target` directory, `/sys/kernel/config/target`.
    configfs: PathBuf,
    pub(crate) runner: R,
}

/// The backstore kind for a path: block devices are `block`, files `fileio`.
fn backstore_kind(path: &str) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.file_type().is_block_device() => "block",
        _ => "fileio",
    }
}

/// The backstore of a volume's export, named after the volume (whatever the IQN prefix).
fn backstore_name(volume_id: &str) -> String {
    format!("volume-{volume_id}")
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.path().is_dir())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

impl<R: Runner> LioDriver<R> {
    pub fn new(configfs: PathBuf, runner: R) -> Self {
        Self { configfs, runner }
    }

    /// Runs one batch; `what` names it in errors. The batch holds CHAP passwords: it never
    /// reaches a message, only targetcli's output does.
    async fn targetcli(&self, commands: &str, what: &str) -> Result<Finished, ServiceError> {
        let input = format!("{PREAMBLE}{commands}exit\n");
        let finished = self.runner.run_with_input(TARGETCLI, &[], Some(&input)).await?;
        if finished.success() {
            return Ok(finished);
        }
        Err(ServiceError::internal(format!("targetcli could not {what}: {}", complaints(&finished))))
    }

    /// Reads one target from configfs.
    pub fn target(&self, iqn: &str) -> Option<LioTarget> {
        let tpg = self.configfs.join("iscsi").join(iqn).join("tpgt_1");
        if !tpg.is_dir() {
            return None;
        }
        let luns =
            names_in(&tpg.join("lun")).iter().filter_map(|name| name.strip_prefix("lun_")?.parse().ok()).collect();
        let authentication =
            std::fs::read_to_string(tpg.join("attrib").join("authentication")).is_ok_and(|text| text.trim() == "1");
        let large_bursts =
            std::fs::read_to_string(tpg.join("param").join("InitialR2T")).is_ok_and(|text| text.trim() == "No");
        Some(LioTarget {
            iqn: iqn.to_owned(),
            portals: names_in(&tpg.join("np")),
            luns,
            acls: names_in(&tpg.join("acls")),
            authentication,
            large_bursts,
        })
    }

    /// The backstore `name`'s directory in configfs (`core/<kind>_<n>/<name>`), if it exists.
    fn backstore(&self, name: &str) -> Option<PathBuf> {
        names_in(&self.configfs.join("core"))
            .into_iter()
            .map(|hba| self.configfs.join("core").join(hba).join(name))
            .find(|path| path.is_dir())
    }

    fn acl_user(&self, iqn: &str, initiator: &str) -> Option<String> {
        let path = self.configfs.join("iscsi").join(iqn).join("tpgt_1/acls").join(initiator).join("auth/userid");
        std::fs::read_to_string(path).ok().map(|text| text.trim().to_owned())
    }

    /// The commands that bring LIO from what it has to what `export` describes; `kind` is the
    /// backstore kind for the export's path.
    fn missing(&self, export: &Export, kind: &str) -> String {
        let iqn = &export.iqn;
        let tpg = format!("/iscsi/{iqn}/tpg1");
        let name = backstore_name(&export.volume_id);
        let mut commands = String::new();
        if self.backstore(&name).is_none() {
            commands += &match kind {
                "block" => format!("/backstores/block create name={name} dev={}\n", export.path),
                _ => format!("/backstores/fileio create name={name} file_or_dev={} write_back=false\n", export.path),
            };
        }
        let target = self.target(iqn).unwrap_or_default();
        if target.iqn.is_empty() {
            commands += &format!("/iscsi create {iqn}\n");
        }
        let portal = export.portal.clone();
        if !target.portals.contains(&portal) {
            let (address, port) = portal.rsplit_once(':').unwrap_or((portal.as_str(), "3260"));
            commands += &format!("{tpg}/portals create {address} {port}\n");
        }
        if !target.luns.contains(&export.lun) {
            commands += &format!("{tpg}/luns create /backstores/{kind}/{name} lun={}\n", export.lun);
        }
        if !target.authentication {
            commands +=
                &format!("{tpg} set attribute authentication=1 generate_node_acls=0 demo_mode_write_protect=1\n");
        }
        if !target.large_bursts {
            commands += &format!("{tpg} set parameter {SESSION_PARAMETERS}\n");
        }
        for initiator in &export.initiators {
            if !target.acls.contains(initiator) {
                commands += &format!("{tpg}/acls create {initiator}\n");
            }
            if self.acl_user(iqn, initiator).as_deref() != Some(export.username.as_str()) {
                commands += &format!(
                    "{tpg}/acls/{initiator} set auth userid={} password={}\n",
                    export.username, export.password
                );
            }
        }
        commands
    }
}

/// targetcli's complaints: in a batch it goes on after a failed command and exits 0, writing each
/// error to stderr. Its note about a missing preferences file is not one; a line naming a password
/// never reaches a message.
fn complaints(finished: &Finished) -> String {
    let lines: Vec<&str> = finished
        .stderr
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty() && !line.contains("preferences file") && !line.to_ascii_lowercase().contains("password")
        })
        .collect();
    if lines.is_empty() { "no error message".into() } else { lines.join("; ") }
}

impl<R: Runner> TargetDriver for LioDriver<R> {
    const LUN: u32 = 0;

    async fn check(&self) -> Result<(), ServiceError> {
        // targetcli loads target_core_mod and iscsi_target_mod when it starts.
        let listed = self.targetcli("ls / 1\n", "reach LIO").await;
        if self.configfs.join("core").is_dir() {
            return listed.map(drop);
        }
        Err(ServiceError::unavailable(format!(
            "LIO is not available: {} has no core/ (mount configfs and load target_core_mod and iscsi_target_mod){}",
            self.configfs.display(),
            listed.err().map(|error| format!("; {}", error.message)).unwrap_or_default()
        )))
    }

    async fn ensure(&self, export: &Export) -> Result<(), ServiceError> {
        let kind = backstore_kind(&export.path);
        let commands = self.missing(export, kind);
        if commands.is_empty() {
            return Ok(());
        }
        let finished = self.targetcli(&commands, "export the volume").await?;
        let still_missing = self.missing(export, kind);
        if still_missing.is_empty() {
            return Ok(());
        }
        let steps: Vec<&str> =
            still_missing.lines().map(|line| line.split(" set auth ").next().unwrap_or(line)).collect();
        Err(ServiceError::new(
            ErrorCode::Internal,
            format!("targetcli left the export incomplete ({}): {}", steps.join(", "), complaints(&finished)),
        ))
    }

    async fn revoke(&self, export: &Export, initiator: &str) -> Result<(), ServiceError> {
        let present = self.target(&export.iqn).is_some_and(|target| target.acls.iter().any(|acl| acl == initiator));
        if present {
            self.targetcli(&format!("/iscsi/{}/tpg1/acls delete {initiator}\n", export.iqn), "revoke the initiator")
                .await?;
        }
        Ok(())
    }

    async fn remove(&self, volume_id: VolumeId, iqn: &str, _record: Option<&Export>) -> Result<(), ServiceError> {
        let mut commands = String::new();
        if self.target(iqn).is_some() {
            commands += &format!("/iscsi delete {iqn}\n");
        }
        let name = backstore_name(&volume_id.to_string());
        if let Some(backstore) = self.backstore(&name) {
            let kind = backstore.parent().and_then(|hba| hba.file_name()).map(|hba| hba.to_string_lossy().into_owned());
            let kind = kind.as_deref().and_then(|hba| hba.split('_').next()).unwrap_or("block");
            let kind = if kind == "iblock" { "block" } else { kind };
            commands += &format!("/backstores/{kind} delete {name}\n");
        }
        if commands.is_empty() {
            return Ok(());
        }
        self.targetcli(&commands, "remove the export").await?;
        if self.target(iqn).is_some() || self.backstore(&name).is_some() {
            return Err(ServiceError::internal(format!("targetcli did not remove the export {iqn}")));
        }
        Ok(())
    }

    /// A `block` backstore reads the device's size live; a `fileio` one fixed it when it was made,
    /// so it is made again.
    async fn refresh(&self, export: &Export) -> Result<(), ServiceError> {
        if backstore_kind(&export.path) == "fileio" && self.backstore(&backstore_name(&export.volume_id)).is_some() {
            let commands = format!(
                "/iscsi/{}/tpg1/luns delete lun={}\n/backstores/fileio delete {}\n",
                export.iqn,
                export.lun,
                backstore_name(&export.volume_id)
            );
            self.targetcli(&commands, "detach the LUN to resize it").await?;
        }
        self.ensure(export).await
    }

    async fn exported(&self) -> Result<Vec<String>, ServiceError> {
        Ok(names_in(&self.configfs.join("iscsi")).into_iter().filter(|name| name.contains(':')).collect())
    }

    /// LIO serves its LUNs in the kernel, with no handle to pause them.
    async fn freeze(&self, _limit: Duration) -> Result<Frozen, ServiceError> {
        Err(ServiceError::conflict(
            "the lio target serves in-use volumes from the kernel, where Basalt cannot hold their writes still for a consistent copy; detach them first, or export through tgt",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt::command::recorded::{RecordedRunner, reply, transcript};

    const CONFIGFS: &str = include_str!("../../tests/fixtures/recorded/lio-configfs.txt");
    const EXPORT: &str = include_str!("../../tests/fixtures/recorded/lio.jsonl");
    const FAILURES: &str = include_str!("../../tests/fixtures/recorded/lio-failures.jsonl");

    /// Rebuilds configfs' target directory as the VM lane recorded it while an export was up.
    fn recorded_configfs(root: &Path) {
        for line in CONFIGFS.lines() {
            match line.split_once(' ') {
                Some(("d", path)) => std::fs::create_dir_all(root.join(path)).unwrap(),
                Some(("f", rest)) => {
                    let (path, content) = rest.split_once(' ').unwrap_or((rest, ""));
                    std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
                    std::fs::write(root.join(path), format!("{content}\n")).unwrap();
                }
                _ => panic!("unexpected line {line:?}"),
            }
        }
    }

    /// The export the recording shows, its password as the recording redacted it.
    fn recorded_export(driver: &LioDriver<RecordedRunner>) -> Export {
        let iqn = names_in(&driver.configfs.join("iscsi")).into_iter().next().expect("a recorded target");
        let target = driver.target(&iqn).expect("the recorded target parses");
        let initiator = target.acls[0].clone();
        let volume_id = iqn.rsplit_once(":volume-").unwrap().1.to_owned();
        Export {
            // The lane's LVM volume group is `basalt`.
            path: format!("/dev/basalt/volume-{volume_id}"),
            volume_id,
            username: driver.acl_user(&iqn, &initiator).expect("the recorded CHAP user"),
            password: "<redacted>".into(),
            iqn,
            lun: 0,
            portal: target.portals[0].clone(),
            initiators: vec![initiator],
        }
    }

    fn driver(root: &Path, replies: Vec<(&str, Finished)>) -> LioDriver<RecordedRunner> {
        LioDriver::new(root.to_path_buf(), RecordedRunner::new(replies))
    }

    /// A recorded batch as the driver writes it: without the preamble and the final `exit`.
    fn batch(input: &str) -> String {
        input.strip_prefix(PREAMBLE).unwrap().strip_suffix("exit\n").unwrap().to_owned()
    }

    #[test]
    fn configfs_state_parses_recorded() {
        let root = tempfile::tempdir().unwrap();
        recorded_configfs(root.path());
        let driver = driver(root.path(), vec![]);
        let export = recorded_export(&driver);
        let target = driver.target(&export.iqn).unwrap();
        assert_eq!(target.portals, vec!["10.77.0.1:3260".to_owned()]);
        assert_eq!(target.luns, vec![0]);
        assert!(target.authentication);
        assert!(driver.backstore(&backstore_name(&export.volume_id)).is_some());
        // Everything is there: ensuring the export again changes nothing.
        assert_eq!(driver.missing(&export, "block"), "");
    }

    #[test]
    fn a_new_export_is_the_batches_lio_accepted_recorded() {
        let calls = transcript(EXPORT);
        let recorded = calls
            .iter()
            .filter_map(|call| call.input.as_deref())
            .filter(|input| input.contains("create"))
            .collect::<Vec<_>>();
        assert_eq!(recorded.len(), 2, "the target batch, then the ACL batch");
        let full = tempfile::tempdir().unwrap();
        recorded_configfs(full.path());
        let mut export = recorded_export(&driver(full.path(), vec![]));

        // From nothing: the backstore, the target, its portal, the LUN and CHAP enforcement.
        let empty = tempfile::tempdir().unwrap();
        let initiators = std::mem::take(&mut export.initiators);
        assert_eq!(driver(empty.path(), vec![]).missing(&export, "block"), batch(recorded[0]));

        // With the target in place: the initiator's ACL and its CHAP account.
        export.initiators = initiators;
        let acl = full.path().join("iscsi").join(&export.iqn).join("tpgt_1/acls");
        std::fs::remove_dir_all(&acl).unwrap();
        std::fs::create_dir_all(&acl).unwrap();
        assert_eq!(driver(full.path(), vec![]).missing(&export, "block"), batch(recorded[1]));
    }

    #[tokio::test]
    async fn targetcli_failures_are_reported_without_secrets_recorded() {
        let calls = transcript(FAILURES);
        let failed = reply(&calls, &["targetcli"]);
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("core")).unwrap();
        let driver = driver(root.path(), vec![("targetcli", failed.clone())]);
        let export = Export {
            volume_id: "missing".into(),
            iqn: "iqn.2010-10.org.basalt:volume-missing".into(),
            lun: 0,
            portal: "10.77.0.1:3260".into(),
            username: "user".into(),
            password: "s3cret-password".into(),
            path: "/dev/basalt/missing".into(),
            initiators: vec!["iqn.2026-11.dev.basalt:initiator".into()],
        };
        let error = driver.ensure(&export).await.unwrap_err();
        assert!(error.message.starts_with("targetcli left the export incomplete"), "{}", error.message);
        assert!(!error.message.contains("s3cret-password"), "{}", error.message);
        assert!(
            error.message.ends_with("Could not open /dev/basalt/missing; This Target already exists in configFS"),
            "{}",
            error.message
        );
    }
}
