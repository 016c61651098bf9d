//! The `lio` export target: the kernel's iSCSI target, changed through `targetcli` and read from
//! configfs, where LIO keeps its whole state. One `targetcli` run per change, with its commands
//! batched on stdin (each start costs seconds on a slow host). Block devices (LVM volumes) are
//! `block` backstores, files `fileio` backstores without write-back caching; the volume is LUN 0
//! of TPG 1, whose portal is ours only (no default 0.0.0.0 portal), with CHAP per ACL.
//!
//! After every change the driver reads configfs again and fails, with targetcli's own words, if
//! anything it asked for is missing: targetcli does not stop at the first failed command of a batch.

use std::path::{Path, PathBuf};

use basalt::{ErrorCode, ServiceError};

use super::{Export, TargetDriver};
use crate::command::Runner;

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
}

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

fn backstore_name(export: &Export) -> String {
    format!("volume-{}", export.volume_id)
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
    async fn targetcli(&self, commands: &str, what: &str) -> Result<String, ServiceError> {
        let input = format!("{PREAMBLE}{commands}exit\n");
        let finished = self.runner.run_with_input(TARGETCLI, &[], Some(&input)).await?;
        let output = format!("{}\n{}", finished.stdout, finished.stderr);
        if finished.success() {
            return Ok(output);
        }
        Err(ServiceError::internal(format!("targetcli could not {what}: {}", complaints(&output))))
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
        Some(LioTarget {
            iqn: iqn.to_owned(),
            portals: names_in(&tpg.join("np")),
            luns,
            acls: names_in(&tpg.join("acls")),
            authentication,
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

    /// The commands that bring LIO from what it has to what `export` describes.
    fn missing(&self, export: &Export) -> String {
        let iqn = &export.iqn;
        let tpg = format!("/iscsi/{iqn}/tpg1");
        let name = backstore_name(export);
        let kind = backstore_kind(&export.path);
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

/// targetcli's error lines, without the prompts and chatter of a batch.
fn complaints(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            !line.is_empty()
                && (lower.contains("error")
                    || lower.contains("no such")
                    || lower.contains("cannot")
                    || lower.contains("failed")
                    || lower.contains("not "))
                && !lower.contains("password")
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
        let commands = self.missing(export);
        if commands.is_empty() {
            return Ok(());
        }
        let output = self.targetcli(&commands, "export the volume").await?;
        let still_missing = self.missing(export);
        if still_missing.is_empty() {
            return Ok(());
        }
        let steps: Vec<&str> =
            still_missing.lines().map(|line| line.split(" set auth ").next().unwrap_or(line)).collect();
        Err(ServiceError::new(
            ErrorCode::Internal,
            format!("targetcli left the export incomplete ({}): {}", steps.join(", "), complaints(&output)),
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

    async fn remove(&self, iqn: &str, record: Option<&Export>) -> Result<(), ServiceError> {
        let mut commands = String::new();
        if self.target(iqn).is_some() {
            commands += &format!("/iscsi delete {iqn}\n");
        }
        let name = iqn.rsplit_once(':').map_or(iqn, |(_, name)| name).to_owned();
        let name = record.map_or(name, backstore_name);
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
        if backstore_kind(&export.path) == "fileio" && self.backstore(&backstore_name(export)).is_some() {
            let commands = format!(
                "/iscsi/{}/tpg1/luns delete lun={}\n/backstores/fileio delete {}\n",
                export.iqn,
                export.lun,
                backstore_name(export)
            );
            self.targetcli(&commands, "detach the LUN to resize it").await?;
        }
        self.ensure(export).await
    }

    async fn exported(&self) -> Result<Vec<String>, ServiceError> {
        Ok(names_in(&self.configfs.join("iscsi")).into_iter().filter(|name| name.contains(':')).collect())
    }
}
