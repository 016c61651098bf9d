//! The `tgt` export target: tgtd driven through `tgtadm`. One target per volume, the volume at
//! LUN 1 (LUN 0 is tgt's controller), opened with `--bsoflags direct`, one CHAP account per export
//! bound to the target, and an ACL of initiator names. Every step checks what tgtd already has,
//! so ensuring an export is idempotent and a half-made one is completed.
//!
//! CHAP accounts are the one step not run through `tgtadm`: its `--password` argument would sit in
//! `/proc/<pid>/cmdline` for any local user to read. The account is made by writing tgtadm's own
//! request to tgtd's management socket (root-only, `/var/run/tgtd/socket.<control port>`), the
//! bytes tgtadm 1.0.85 sends (read off the wire with strace): a 120-byte header (mode, operation,
//! the driver name, the total length, target id -1, LUN all ones) and `user=...,password=...\0`;
//! the answer is an error number and a length.

use std::{path::PathBuf, time::Duration};

use basalt::{ErrorCode, ServiceError, ids::VolumeId};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    sync::Mutex,
};

use super::{Export, TargetDriver, freeze::Frozen};
use basalt::command::{Finished, Runner};

const TGTADM: &str = "tgtadm";
/// iSCSI session parameters offered to initiators. tgt's defaults (8 KiB data PDUs, 256 KiB
/// bursts, an R2T round trip before every write's data) halve large-write throughput; these let a
/// 1 MiB write go as a few 256 KiB PDUs without waiting (docs/benchmarks.md).
const SESSION_PARAMETERS: [(&str, &str); 5] = [
    ("MaxRecvDataSegmentLength", "262144"),
    ("MaxXmitDataSegmentLength", "262144"),
    ("FirstBurstLength", "262144"),
    ("MaxBurstLength", "1048576"),
    ("InitialR2T", "No"),
];

/// What `tgtadm --op show --mode target` says about one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetInfo {
    pub tid: u32,
    pub iqn: String,
    pub luns: Vec<u32>,
    pub accounts: Vec<String>,
    pub acls: Vec<String>,
}

/// tgtd's management protocol: the request header's size and the fields Basalt sets.
const REQUEST_HEADER: usize = 120;
const MODE_ACCOUNT: u32 = 7;
const OP_NEW: u32 = 0;
/// tgtd's answer when the account exists already.
const ERROR_ACCOUNT_EXISTS: u32 = 14;
/// The longest answer text read back.
const MAX_ANSWER: usize = 64 << 10;

pub struct TgtDriver<R: Runner> {
    /// tgtd's control port (`tgtd -C N`, `tgtadm -C N`); `None` for the default daemon.
    control_port: Option<u16>,
    /// tgtd's management socket for that port.
    socket: PathBuf,
    pub(crate) runner: R,
    /// Target ids are allocated by looking at what exists: one allocation at a time.
    allocation: Mutex<()>,
}

impl<R: Runner> TgtDriver<R> {
    pub fn new(control_port: Option<u16>, runner: R) -> Self {
        let socket = PathBuf::from(format!("/var/run/tgtd/socket.{}", control_port.unwrap_or(0)));
        Self { control_port, socket, runner, allocation: Mutex::new(()) }
    }

    /// Creates a CHAP account through the management socket, so the password is on no command
    /// line. An account that exists already is left as it is.
    async fn new_account(&self, username: &str, password: &str) -> Result<(), ServiceError> {
        let parameters = format!("user={username},password={password}\0");
        let total = u32::try_from(REQUEST_HEADER + parameters.len())
            .map_err(|_| ServiceError::invalid("the CHAP account's name and password are too long"))?;
        let mut request = vec![0u8; REQUEST_HEADER];
        request[0..4].copy_from_slice(&MODE_ACCOUNT.to_ne_bytes());
        request[4..8].copy_from_slice(&OP_NEW.to_ne_bytes());
        request[8..13].copy_from_slice(b"iscsi");
        request[72..76].copy_from_slice(&total.to_ne_bytes());
        request[76..80].copy_from_slice(&(-1i32).to_ne_bytes());
        request[88..96].copy_from_slice(&u64::MAX.to_ne_bytes());
        request.extend_from_slice(parameters.as_bytes());
        let unreachable = |error| self.unreachable(error);
        let mut stream = UnixStream::connect(&self.socket).await.map_err(unreachable)?;
        stream.write_all(&request).await.map_err(unreachable)?;
        let mut header = [0u8; 8];
        stream.read_exact(&mut header).await.map_err(unreachable)?;
        let error = u32::from_ne_bytes(header[0..4].try_into().expect("four bytes"));
        let length = u32::from_ne_bytes(header[4..8].try_into().expect("four bytes")) as usize;
        let mut answer = vec![0u8; length.saturating_sub(header.len()).min(MAX_ANSWER)];
        stream.read_exact(&mut answer).await.map_err(unreachable)?;
        match error {
            0 | ERROR_ACCOUNT_EXISTS => Ok(()),
            // The answer never holds the password; it is tgtd's text for the error number.
            _ => Err(ServiceError::internal(format!(
                "tgtd could not create the CHAP account (error {error}) {}",
                String::from_utf8_lossy(&answer).trim_matches(char::from(0)).trim()
            ))),
        }
    }

    /// Runs tgtadm; `what` names the step in errors. Arguments never reach messages: some are
    /// CHAP passwords.
    async fn tgtadm(&self, args: &[&str], what: &str) -> Result<Finished, ServiceError> {
        let mut full: Vec<String> = Vec::with_capacity(args.len() + 4);
        if let Some(port) = self.control_port {
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

    async fn targets(&self) -> Result<Vec<TargetInfo>, ServiceError> {
        let shown = self.tgtadm(&["--op", "show", "--mode", "target"], "list targets").await?;
        Ok(parse_targets(&shown.stdout))
    }

    async fn target(&self, iqn: &str) -> Result<Option<TargetInfo>, ServiceError> {
        Ok(self.targets().await?.into_iter().find(|target| target.iqn == iqn))
    }

    /// tgtd's management socket failed us: tgtd is down, or not on this control port.
    fn unreachable(&self, error: std::io::Error) -> ServiceError {
        ServiceError::new(
            ErrorCode::Unavailable,
            format!("tgtd's management socket {} is not reachable: {error}", self.socket.display()),
        )
    }

    /// The process of the tgtd behind the control port: the peer of its management socket.
    async fn daemon_pid(&self) -> Result<i32, ServiceError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|error| self.unreachable(error))?;
        let credentials = stream.peer_cred().map_err(|error| self.unreachable(error))?;
        credentials.pid().ok_or_else(|| ServiceError::internal("the kernel did not name tgtd's process"))
    }

    async fn has_account(&self, username: &str) -> Result<bool, ServiceError> {
        let accounts = self.tgtadm(&["--op", "show", "--mode", "account"], "list CHAP accounts").await?;
        Ok(accounts.stdout.lines().any(|line| line.trim() == username))
    }
}

impl<R: Runner> TargetDriver for TgtDriver<R> {
    const LUN: u32 = 1;

    async fn check(&self) -> Result<(), ServiceError> {
        self.tgtadm(&["--op", "show", "--mode", "sys"], "reach tgtd").await.map(drop).map_err(|error| {
            let port = self.control_port.map_or("the default".to_owned(), |port| port.to_string());
            ServiceError::unavailable(format!(
                "tgtd is not reachable on control port {port}: {}; start tgtd (tgtd -C <port>) or fix --tgt-control-port",
                error.message
            ))
        })
    }

    async fn ensure(&self, export: &Export) -> Result<(), ServiceError> {
        let _allocation = self.allocation.lock().await;
        let target = match self.target(&export.iqn).await? {
            Some(target) => target,
            None => {
                let tid = self.targets().await?.iter().map(|target| target.tid).max().unwrap_or(0) + 1;
                let tid_text = tid.to_string();
                self.tgtadm(
                    &["--op", "new", "--mode", "target", "--tid", &tid_text, "-T", &export.iqn],
                    "create the target",
                )
                .await?;
                for (name, value) in SESSION_PARAMETERS {
                    self.tgtadm(
                        &["--op", "update", "--mode", "target", "--tid", &tid_text, "--name", name, "--value", value],
                        "set the target's session parameters",
                    )
                    .await?;
                }
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
            if !self.has_account(&export.username).await? {
                self.new_account(&export.username, &export.password).await?;
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

    async fn revoke(&self, export: &Export, initiator: &str) -> Result<(), ServiceError> {
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

    async fn remove(&self, _volume_id: VolumeId, iqn: &str, record: Option<&Export>) -> Result<(), ServiceError> {
        if let Some(target) = self.target(iqn).await? {
            let tid = target.tid.to_string();
            // --force ends sessions still logged in: by now the control plane has detached them.
            self.tgtadm(&["--op", "delete", "--force", "--mode", "target", "--tid", &tid], "delete the target").await?;
        }
        if let Some(record) = record
            && self.has_account(&record.username).await?
        {
            self.tgtadm(
                &["--op", "delete", "--mode", "account", "--user", &record.username],
                "delete the CHAP account",
            )
            .await?;
        }
        Ok(())
    }

    /// tgt reads the size when the LUN is created, so the LUN is re-added.
    async fn refresh(&self, export: &Export) -> Result<(), ServiceError> {
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
        self.ensure(export).await
    }

    async fn exported(&self) -> Result<Vec<String>, ServiceError> {
        Ok(self.targets().await?.into_iter().map(|target| target.iqn).collect())
    }

    async fn freeze(&self, limit: Duration) -> Result<Frozen, ServiceError> {
        let pid = self.daemon_pid().await?;
        tokio::task::spawn_blocking(move || Frozen::stop(pid, limit))
            .await
            .map_err(|error| ServiceError::internal(format!("the freeze task failed: {error}")))?
    }
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
    use std::{os::unix::fs::PermissionsExt, path::Path};

    use basalt::ids::VolumeId;

    use super::*;
    use basalt::command::recorded::{RecordedRunner, failed, ok};

    use crate::target::{ExportConfig, Exports};

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

    fn exports(dir: &Path, runner: RecordedRunner) -> Exports<TgtDriver<RecordedRunner>> {
        let config = ExportConfig {
            portal: "127.0.0.1:3260".into(),
            iqn_prefix: "iqn.2010-10.org.basalt:".into(),
            state_dir: dir.to_path_buf(),
        };
        let mut driver = TgtDriver::new(Some(7), runner);
        driver.socket = dir.join("tgtd.socket");
        Exports::new(config, driver).unwrap()
    }

    /// A stand-in for tgtd's management socket (the real one is exercised by the iSCSI tests):
    /// answers `error` to one request and hands the request's bytes back.
    fn management_socket(path: &Path, error: u32) -> tokio::task::JoinHandle<Vec<u8>> {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut header = vec![0u8; REQUEST_HEADER];
            stream.read_exact(&mut header).await.unwrap();
            let total = u32::from_ne_bytes(header[72..76].try_into().unwrap()) as usize;
            let mut parameters = vec![0u8; total - REQUEST_HEADER];
            stream.read_exact(&mut parameters).await.unwrap();
            let mut answer = error.to_ne_bytes().to_vec();
            answer.extend_from_slice(&8u32.to_ne_bytes());
            stream.write_all(&answer).await.unwrap();
            header.extend(parameters);
            header
        })
    }

    #[tokio::test]
    async fn a_new_export_takes_the_next_target_id_and_never_logs_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let runner = RecordedRunner::new(vec![
            ("--op show --mode target", ok(SHOW_RECORDED)),
            ("--op show --mode target", ok(SHOW_RECORDED)),
            ("--op new --mode target --tid 2", ok("")),
            ("--op update --mode target --tid 2 --name MaxRecvDataSegmentLength --value 262144", ok("")),
            ("--op update --mode target --tid 2 --name MaxXmitDataSegmentLength --value 262144", ok("")),
            ("--op update --mode target --tid 2 --name FirstBurstLength --value 262144", ok("")),
            ("--op update --mode target --tid 2 --name MaxBurstLength --value 1048576", ok("")),
            ("--op update --mode target --tid 2 --name InitialR2T --value No", ok("")),
            ("--op new --mode logicalunit --tid 2 --lun 1", ok("")),
            ("--op show --mode account", ok("Account list:\n    u1\n")),
            ("--op bind --mode account --tid 2", ok("")),
        ]);
        let tgtd = management_socket(&dir.path().join("tgtd.socket"), 0);
        let exports = exports(dir.path(), runner);
        let volume = VolumeId::new_random();
        let export = exports.export(volume, "/pool/volume-x").await.unwrap();
        assert_eq!((export.lun, export.username.len(), export.password.len()), (1, 20, 16));
        assert_eq!(export.iqn, format!("iqn.2010-10.org.basalt:volume-{volume}"));
        let calls = exports.driver.runner.calls.lock().unwrap().clone();
        assert!(calls.iter().all(|call| call.starts_with("tgtadm -C 7 --lld iscsi")), "{calls:?}");
        assert!(calls.iter().any(|call| call.contains("--bsoflags direct")));
        assert!(!calls.iter().any(|call| call.contains(&export.password)), "a password on a command line: {calls:?}");
        let request = tgtd.await.unwrap();
        assert_eq!(request[0..8], [7, 0, 0, 0, 0, 0, 0, 0], "mode account, operation new");
        let parameters = format!("user={},password={}\0", export.username, export.password);
        assert!(request.ends_with(parameters.as_bytes()));
        let record = std::fs::metadata(dir.path().join(format!("export-{volume}.json"))).unwrap();
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
        let exports = exports(dir.path(), runner);
        let error = exports.export(VolumeId::new_random(), "/pool/v").await.unwrap_err();
        assert!(
            error.message.contains("could not create the target: tgtadm: this target already exists"),
            "{}",
            error.message
        );
        let record: Export = serde_json::from_slice(
            &std::fs::read(std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path()).unwrap(),
        )
        .unwrap();
        assert!(!error.message.contains(&record.password));
    }

    #[tokio::test]
    async fn an_unreachable_tgtd_is_a_clear_error() {
        let runner = RecordedRunner::new(vec![(
            "--op show --mode sys",
            failed(107, "tgtadm: failed to send request hdr to tgt daemon, Transport endpoint is not connected"),
        )]);
        let error = TgtDriver::new(Some(7), runner).check().await.unwrap_err();
        assert_eq!(error.code, ErrorCode::Unavailable);
        assert!(error.message.contains("tgtd is not reachable on control port 7"), "{}", error.message);
    }
}
