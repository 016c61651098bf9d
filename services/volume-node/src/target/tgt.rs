//! The `tgt` export target: tgtd driven through `tgtadm`. One target per volume, IQN
//! `<prefix>volume-<uuid>`, the volume at LUN 1 (LUN 0 is tgt's controller), opened with
//! `--bsoflags direct`, one random CHAP account per export, and an ACL of initiator names.
//!
//! Each export is recorded in a file of the node's state directory (mode 0600: it holds the CHAP
//! password), so a restarted node (or tgtd) re-creates its exports with the same credentials and
//! hosts reconnect with the `connection_info` they already have. Every step checks what tgtd
//! already has, so creating an export is idempotent and a half-made one is completed.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use basalt::{ErrorCode, ServiceError, ids::VolumeId};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::command::{Finished, Runner};

const TGTADM: &str = "tgtadm";
const LUN: u32 = 1;

#[derive(Debug, Clone)]
pub struct TgtConfig {
    /// tgtd's control port (`tgtd -C N`, `tgtadm -C N`); `None` for the default daemon.
    pub control_port: Option<u16>,
    /// The portal hosts connect to, `ip:port`.
    pub portal: String,
    /// Prepended to `volume-<uuid>`, Cinder's `target_prefix`.
    pub iqn_prefix: String,
    /// Where export records are kept.
    pub state_dir: PathBuf,
}

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

/// What `tgtadm --op show --mode target` says about one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetInfo {
    pub tid: u32,
    pub iqn: String,
    pub luns: Vec<u32>,
    pub accounts: Vec<String>,
    pub acls: Vec<String>,
}

pub struct TgtTarget<R: Runner> {
    config: TgtConfig,
    runner: R,
    /// tgtadm changes are serialised: target ids are allocated by looking at what exists.
    lock: Mutex<()>,
}

impl<R: Runner> TgtTarget<R> {
    pub fn new(config: TgtConfig, runner: R) -> Result<Self, ServiceError> {
        fs::create_dir_all(&config.state_dir)
            .and_then(|()| fs::set_permissions(&config.state_dir, fs::Permissions::from_mode(0o700)))
            .map_err(|error| {
                ServiceError::internal(format!("cannot prepare {}: {error}", config.state_dir.display()))
            })?;
        Ok(Self { config, runner, lock: Mutex::new(()) })
    }

    pub fn iqn(&self, volume_id: VolumeId) -> String {
        format!("{}volume-{volume_id}", self.config.iqn_prefix)
    }

    /// Runs tgtadm; `what` names the step in errors. Arguments never reach messages: some are
    /// CHAP passwords.
    async fn tgtadm(&self, args: &[&str], what: &str) -> Result<Finished, ServiceError> {
        let mut full: Vec<String> = Vec::with_capacity(args.len() + 4);
        if let Some(port) = self.config.control_port {
            full.extend(["-C".to_owned(), port.to_string()]);
        }
        full.extend(["--lld".to_owned(), "iscsi".to_owned()]);
        full.extend(args.iter().map(|arg| (*arg).to_owned()));
        let finished = self.runner.run(TGTADM, &full).await?;
        if finished.success() {
            return Ok(finished);
        }
        let code = if finished.stderr.contains("failed to send request") || finished.stderr.contains("connect") {
            ErrorCode::Unavailable
        } else {
            ErrorCode::Internal
        };
        Err(ServiceError::new(code, format!("tgtadm could not {what}: {}", finished.stderr)))
    }

    /// Fails with a clear error when tgtd does not answer.
    pub async fn check(&self) -> Result<(), ServiceError> {
        self.tgtadm(&["--op", "show", "--mode", "sys"], "reach tgtd").await.map(drop).map_err(|error| {
            let port = self.config.control_port.map_or("the default".to_owned(), |port| port.to_string());
            ServiceError::unavailable(format!(
                "tgtd is not reachable on control port {port}: {}; start tgtd (tgtd -C <port>) or fix --tgt-control-port",
                error.message
            ))
        })
    }

    async fn targets(&self) -> Result<Vec<TargetInfo>, ServiceError> {
        let shown = self.tgtadm(&["--op", "show", "--mode", "target"], "list targets").await?;
        Ok(parse_targets(&shown.stdout))
    }

    async fn target(&self, iqn: &str) -> Result<Option<TargetInfo>, ServiceError> {
        Ok(self.targets().await?.into_iter().find(|target| target.iqn == iqn))
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

    /// Creates the export of `path` (or returns the existing one, credentials unchanged).
    pub async fn export(&self, volume_id: VolumeId, path: &str) -> Result<Export, ServiceError> {
        let _guard = self.lock.lock().await;
        let export = match self.load(volume_id)? {
            Some(mut existing) => {
                existing.path = path.to_owned();
                existing.portal = self.config.portal.clone();
                existing
            }
            None => Export {
                volume_id: volume_id.to_string(),
                iqn: self.iqn(volume_id),
                lun: LUN,
                portal: self.config.portal.clone(),
                username: random_secret(20),
                password: random_secret(16),
                path: path.to_owned(),
                initiators: Vec::new(),
            },
        };
        // Recorded first: a crash between the two leaves a record that the next start completes.
        self.save(&export)?;
        self.ensure(&export).await?;
        Ok(export)
    }

    /// Makes tgtd hold everything `export` describes, adding only what is missing.
    async fn ensure(&self, export: &Export) -> Result<(), ServiceError> {
        let existing = self.target(&export.iqn).await?;
        let target = match existing {
            Some(target) => target,
            None => {
                let tid = self.targets().await?.iter().map(|target| target.tid).max().unwrap_or(0) + 1;
                let tid_text = tid.to_string();
                self.tgtadm(
                    &["--op", "new", "--mode", "target", "--tid", &tid_text, "-T", &export.iqn],
                    "create the target",
                )
                .await?;
                TargetInfo { tid, iqn: export.iqn.clone(), ..Default::default() }
            }
        };
        let tid = target.tid.to_string();
        if !target.luns.contains(&export.lun) {
            let lun = export.lun.to_string();
            self.tgtadm(
                &[
                    "--op",
                    "new",
                    "--mode",
                    "logicalunit",
                    "--tid",
                    &tid,
                    "--lun",
                    &lun,
                    "-b",
                    &export.path,
                    "--bsoflags",
                    "direct",
                ],
                "add the volume as a LUN",
            )
            .await?;
        }
        if !target.accounts.contains(&export.username) {
            let accounts = self.tgtadm(&["--op", "show", "--mode", "account"], "list CHAP accounts").await?;
            if !accounts.stdout.lines().any(|line| line.trim() == export.username) {
                self.tgtadm(
                    &["--op", "new", "--mode", "account", "--user", &export.username, "--password", &export.password],
                    "create the CHAP account",
                )
                .await?;
            }
            self.tgtadm(
                &["--op", "bind", "--mode", "account", "--tid", &tid, "--user", &export.username],
                "bind the CHAP account",
            )
            .await?;
        }
        for initiator in &export.initiators {
            if !target.acls.contains(initiator) {
                self.tgtadm(
                    &["--op", "bind", "--mode", "target", "--tid", &tid, "--initiator-name", initiator],
                    "allow the initiator",
                )
                .await?;
            }
        }
        Ok(())
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
        }
        self.ensure(&export).await?;
        Ok(export)
    }

    /// Removes `initiator` from the volume's ACL; unknown initiators and exports are no error.
    pub async fn revoke(&self, volume_id: VolumeId, initiator: &str) -> Result<(), ServiceError> {
        let _guard = self.lock.lock().await;
        let Some(mut export) = self.load(volume_id)? else { return Ok(()) };
        export.initiators.retain(|known| known != initiator);
        self.save(&export)?;
        if let Some(target) = self.target(&export.iqn).await?
            && target.acls.iter().any(|acl| acl == initiator)
        {
            let tid = target.tid.to_string();
            self.tgtadm(
                &["--op", "unbind", "--mode", "target", "--tid", &tid, "--initiator-name", initiator],
                "revoke the initiator",
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes the target, its CHAP account and its record; a missing export is no error.
    pub async fn remove(&self, volume_id: VolumeId) -> Result<(), ServiceError> {
        let _guard = self.lock.lock().await;
        let iqn = self.iqn(volume_id);
        let record = self.load(volume_id)?;
        if let Some(target) = self.target(&iqn).await? {
            let tid = target.tid.to_string();
            // --force ends sessions still logged in: by now the control plane has detached them.
            self.tgtadm(&["--op", "delete", "--force", "--mode", "target", "--tid", &tid], "delete the target").await?;
        }
        if let Some(record) = &record {
            let accounts = self.tgtadm(&["--op", "show", "--mode", "account"], "list CHAP accounts").await?;
            if accounts.stdout.lines().any(|line| line.trim() == record.username) {
                self.tgtadm(
                    &["--op", "delete", "--mode", "account", "--user", &record.username],
                    "delete the CHAP account",
                )
                .await?;
            }
        }
        match fs::remove_file(self.record_path(volume_id)) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(ServiceError::internal(format!("cannot remove the export record: {error}"))),
        }
    }

    /// Re-reads the volume's size: tgt reads it when the LUN is created, so the LUN is re-added.
    pub async fn refresh(&self, volume_id: VolumeId) -> Result<(), ServiceError> {
        let _guard = self.lock.lock().await;
        let Some(export) = self.load(volume_id)? else { return Ok(()) };
        if let Some(target) = self.target(&export.iqn).await?
            && target.luns.contains(&export.lun)
        {
            let (tid, lun) = (target.tid.to_string(), export.lun.to_string());
            self.tgtadm(
                &["--op", "delete", "--mode", "logicalunit", "--tid", &tid, "--lun", &lun],
                "detach the LUN to resize it",
            )
            .await?;
        }
        self.ensure(&export).await
    }

    /// Re-creates every recorded export (after a node or tgtd restart). Returns how many.
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
            if !Path::new(&export.path).exists() {
                tracing::warn!(volume_id = %export.volume_id, "an export's volume is gone; not restoring it");
                continue;
            }
            self.ensure(&export).await?;
            restored += 1;
        }
        Ok(restored)
    }
}

/// Initiator names go to tgtadm: keep them to the IQN/EUI alphabet.
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

/// Parses `tgtadm --op show --mode target`.
pub fn parse_targets(output: &str) -> Vec<TargetInfo> {
    #[derive(PartialEq)]
    enum Section {
        Other,
        Accounts,
        Acls,
    }
    let mut targets: Vec<TargetInfo> = Vec::new();
    let mut section = Section::Other;
    for line in output.lines() {
        let trimmed = line.trim();
        if let Some(rest) = line.strip_prefix("Target ") {
            let (tid, iqn) = rest.split_once(": ").unwrap_or((rest, ""));
            targets.push(TargetInfo {
                tid: tid.trim().parse().unwrap_or(0),
                iqn: iqn.trim().to_owned(),
                ..Default::default()
            });
            section = Section::Other;
            continue;
        }
        let Some(target) = targets.last_mut() else { continue };
        match trimmed {
            "Account information:" => section = Section::Accounts,
            "ACL information:" => section = Section::Acls,
            _ if trimmed.ends_with(':') && !trimmed.contains(' ') => section = Section::Other,
            _ if trimmed.ends_with("information:") => section = Section::Other,
            _ => {
                if let Some(lun) = trimmed.strip_prefix("LUN: ") {
                    section = Section::Other;
                    if let Ok(lun) = lun.parse() {
                        target.luns.push(lun);
                    }
                } else if !trimmed.is_empty() && section == Section::Accounts {
                    target.accounts.push(trimmed.to_owned());
                } else if !trimmed.is_empty() && section == Section::Acls {
                    target.acls.push(trimmed.to_owned());
                }
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::recorded::{RecordedRunner, failed, ok};

    const SHOW_RECORDED: &str = include_str!("../../tests/fixtures/tgtadm-show-target.txt");

    #[test]
    fn show_output_recorded_from_tgtd_parses() {
        let targets = parse_targets(SHOW_RECORDED);
        assert_eq!(
            targets,
            vec![TargetInfo {
                tid: 1,
                iqn: "iqn.2010-10.org.basalt:volume-test".into(),
                luns: vec![0, 1],
                accounts: vec!["u1".into()],
                acls: vec!["iqn.2024-01.org.test:host1".into()],
            }]
        );
        assert!(parse_targets("").is_empty());
    }

    fn target(dir: &Path, runner: RecordedRunner) -> TgtTarget<RecordedRunner> {
        let config = TgtConfig {
            control_port: Some(7),
            portal: "127.0.0.1:3260".into(),
            iqn_prefix: "iqn.2010-10.org.basalt:".into(),
            state_dir: dir.to_path_buf(),
        };
        TgtTarget::new(config, runner).unwrap()
    }

    #[tokio::test]
    async fn a_new_export_takes_the_next_target_id_and_never_logs_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let runner = RecordedRunner::new(vec![
            ("--op show --mode target", ok(SHOW_RECORDED)),
            ("--op show --mode target", ok(SHOW_RECORDED)),
            ("--op new --mode target --tid 2", ok("")),
            ("--op new --mode logicalunit --tid 2 --lun 1", ok("")),
            ("--op show --mode account", ok("Account list:\n    u1\n")),
            ("--op new --mode account", ok("")),
            ("--op bind --mode account --tid 2", ok("")),
        ]);
        let target = target(dir.path(), runner);
        let volume = VolumeId::new_random();
        let export = target.export(volume, "/pool/volume-x").await.unwrap();
        assert_eq!((export.lun, export.username.len(), export.password.len()), (1, 20, 16));
        assert_eq!(export.iqn, format!("iqn.2010-10.org.basalt:volume-{volume}"));
        let calls = target.runner.calls.lock().unwrap().clone();
        assert!(calls.iter().all(|call| call.starts_with("tgtadm -C 7 --lld iscsi")), "{calls:?}");
        assert!(calls.iter().any(|call| call.contains("--bsoflags direct")));
        let record = fs::metadata(target.record_path(volume)).unwrap();
        assert_eq!(record.permissions().mode() & 0o777, 0o600, "the record holds the CHAP password");
    }

    #[tokio::test]
    async fn tgtadm_failures_are_reported_without_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let runner = RecordedRunner::new(vec![
            ("--op show --mode target", ok("")),
            ("--op show --mode target", ok("")),
            ("--op new --mode target", failed(22, "tgtadm: this target already exists")),
        ]);
        let target = target(dir.path(), runner);
        let error = target.export(VolumeId::new_random(), "/pool/v").await.unwrap_err();
        assert!(
            error.message.contains("could not create the target: tgtadm: this target already exists"),
            "{}",
            error.message
        );
        let record: Export = serde_json::from_slice(
            &fs::read(fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path()).unwrap(),
        )
        .unwrap();
        assert!(!error.message.contains(&record.password));
    }

    #[tokio::test]
    async fn an_unreachable_tgtd_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let runner = RecordedRunner::new(vec![(
            "--op show --mode sys",
            failed(107, "tgtadm: failed to send request hdr to tgt daemon, Transport endpoint is not connected"),
        )]);
        let error = target(dir.path(), runner).check().await.unwrap_err();
        assert_eq!(error.code, ErrorCode::Unavailable);
        assert!(error.message.contains("tgtd is not reachable on control port 7"), "{}", error.message);
    }

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
