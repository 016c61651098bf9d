//! What the node does to its host, each through the command runner (with a timeout, stderr in the
//! error, arguments never logged): loop devices over local volume files, iSCSI sessions with
//! `iscsiadm`, filesystems (made only on blank devices), mounts and bind mounts. Mount points are
//! read from `/proc/self/mountinfo`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use basalt::command::{Finished, Runner};
use tonic::Status;

/// How long a login waits for the kernel to show the LUN's device.
const DEVICE_WAIT: Duration = Duration::from_secs(30);

pub struct Host<R: Runner> {
    runner: R,
    /// `/dev/disk/by-path`, where the kernel names iSCSI LUNs (a test may point it elsewhere).
    by_path: PathBuf,
    /// open-iscsi's node records (`/etc/iscsi/nodes` on Debian, `/var/lib/iscsi/nodes` on some
    /// distributions): the CHAP password is written there, never passed to `iscsiadm`.
    iscsi_nodes: Vec<PathBuf>,
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// A command that must succeed, its stderr in the error otherwise.
fn checked(program: &str, finished: Finished) -> Result<Finished, Status> {
    if finished.success() {
        return Ok(finished);
    }
    Err(Status::internal(format!("{program} failed ({}): {}", finished.code, finished.stderr)))
}

/// One mount, as `/proc/self/mountinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub mount_point: String,
    pub fs_type: String,
    pub options: Vec<String>,
    /// The device's `major:minor`.
    pub device: String,
}

impl Mount {
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|option| option == "ro")
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes.get(index + 1..index + 4).filter(|digits| digits.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[index], octal) {
            (b'\\', Some(digits)) => {
                out.push(digits.iter().fold(0u8, |value, digit| value.wrapping_mul(8) + (digit - b'0')));
                index += 4;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let tail: Vec<&str> = after.split(' ').collect();
            Some(Mount {
                device: (*fields.get(2)?).to_owned(),
                mount_point: unescape(fields.get(4)?),
                options: fields.get(5)?.split(',').map(str::to_owned).collect(),
                fs_type: (*tail.first()?).to_owned(),
                source: unescape(tail.get(1)?),
            })
        })
        .collect()
}

impl<R: Runner> Host<R> {
    pub fn new(runner: R) -> Self {
        Self {
            runner,
            by_path: PathBuf::from("/dev/disk/by-path"),
            iscsi_nodes: vec![PathBuf::from("/etc/iscsi/nodes"), PathBuf::from("/var/lib/iscsi/nodes")],
        }
    }

    async fn run(&self, program: &str, arguments: &[&str]) -> Result<Finished, Status> {
        self.runner.run(program, &args(arguments)).await.map_err(Status::from)
    }

    async fn must(&self, program: &str, arguments: &[&str]) -> Result<Finished, Status> {
        checked(program, self.run(program, arguments).await?)
    }

    /// The topmost mount at exactly `path`, if any.
    pub fn mount_at(&self, path: &str) -> Result<Option<Mount>, Status> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|error| Status::internal(format!("cannot read the mount table: {error}")))?;
        let wanted = Path::new(path);
        Ok(parse_mountinfo(&text).into_iter().rev().find(|mount| Path::new(&mount.mount_point) == wanted))
    }

    // ---- local volumes: loop devices

    /// The loop device over `file`, attaching one if none is.
    pub async fn loop_attach(&self, file: &str) -> Result<String, Status> {
        if let Some(device) = self.loop_device(file).await? {
            return Ok(device);
        }
        let attached = self.must("losetup", &["--find", "--show", file]).await?;
        Ok(attached.stdout.trim().to_owned())
    }

    /// The loop device already over `file`, if any (`losetup -j` lists `/dev/loopN: []: (file)`).
    pub async fn loop_device(&self, file: &str) -> Result<Option<String>, Status> {
        let listed = self.must("losetup", &["-j", file]).await?;
        Ok(listed.stdout.lines().find_map(|line| line.split_once(':').map(|(device, _)| device.trim().to_owned())))
    }

    pub async fn loop_detach(&self, file: &str) -> Result<(), Status> {
        while let Some(device) = self.loop_device(file).await? {
            self.must("losetup", &["-d", &device]).await?;
        }
        Ok(())
    }

    /// Makes the loop device see its file's new size.
    pub async fn loop_refresh(&self, device: &str) -> Result<(), Status> {
        self.must("losetup", &["-c", device]).await.map(drop)
    }

    // ---- iSCSI

    /// The device of `lun` of `iqn` at `portal` once logged in, as udev names it.
    fn iscsi_device_link(&self, portal: &str, iqn: &str, lun: u32) -> PathBuf {
        self.by_path.join(format!("ip-{portal}-iscsi-{iqn}-lun-{lun}"))
    }

    /// Logs in to the target (CHAP when credentials are given) and waits for the LUN's device.
    /// A session already there is reused, so a repeat does not log in twice.
    pub async fn iscsi_login(
        &self,
        portal: &str,
        iqn: &str,
        lun: u32,
        chap: Option<(&str, &str)>,
    ) -> Result<String, Status> {
        let node = ["-m", "node", "-T", iqn, "-p", portal];
        let created = self.run("iscsiadm", &[&node[..], &["-o", "new"]].concat()).await?;
        // 15: the record exists already (a repeat).
        if !created.success() && created.code != 15 {
            return Err(checked("iscsiadm", created).unwrap_err());
        }
        let mut settings = vec![("node.startup", "manual")];
        if let Some((username, _)) = chap {
            settings.extend([("node.session.auth.authmethod", "CHAP"), ("node.session.auth.username", username)]);
        }
        for (name, value) in settings {
            self.must("iscsiadm", &[&node[..], &["-o", "update", "-n", name, "-v", value]].concat()).await?;
        }
        if let Some((_, password)) = chap {
            self.write_chap_password(portal, iqn, password)?;
        }
        let login = self.run("iscsiadm", &[&node[..], &["--login"]].concat()).await?;
        // 15: already logged in.
        if !login.success() && login.code != 15 {
            return Err(checked("iscsiadm", login).unwrap_err());
        }
        let link = self.iscsi_device_link(portal, iqn, lun);
        let deadline = tokio::time::Instant::now() + DEVICE_WAIT;
        loop {
            if let Ok(device) = std::fs::canonicalize(&link) {
                return Ok(device.to_string_lossy().into_owned());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "logged in to {iqn}, but LUN {lun} did not appear within {}s",
                    DEVICE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Adds the CHAP password to the target's node record, the file `iscsiadm` reads at login
    /// (owner-only), instead of `iscsiadm -o update -v <password>`, whose arguments any local user
    /// reads in `/proc/<pid>/cmdline`. The record was just made or updated by `iscsiadm`, which
    /// keeps it `<nodes>/<iqn>/<address>,<port>[,<tpgt>]/<interface>` (or, for a record made without
    /// a tpgt, possibly the file `<nodes>/<iqn>/<address>,<port>`); the last setting of a name in
    /// the file is the one that counts, so appending after the other updates is enough.
    fn write_chap_password(&self, portal: &str, iqn: &str, password: &str) -> Result<(), Status> {
        use std::{io::Write, os::unix::fs::PermissionsExt};
        // `<address>,<port>,<tpgt>`, or `<address>,<port>` for a record made without a tpgt.
        let address = portal.replace(':', ",");
        let prefix = format!("{address},");
        let mut records = Vec::new();
        for nodes in &self.iscsi_nodes {
            let Ok(entries) = std::fs::read_dir(nodes.join(iqn)) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name != address && !name.starts_with(&prefix) {
                    continue;
                }
                if path.is_dir() {
                    records.extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|file| file.path()));
                } else {
                    records.push(path);
                }
            }
        }
        if records.is_empty() {
            return Err(Status::internal(format!(
                "iscsiadm made no node record for {iqn} at {portal} under {:?}",
                self.iscsi_nodes
            )));
        }
        for record in records {
            let failed = |error: std::io::Error| {
                Status::internal(format!("cannot add the CHAP password to {}: {error}", record.display()))
            };
            std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
            let mut file = std::fs::OpenOptions::new().append(true).open(&record).map_err(failed)?;
            writeln!(file, "node.session.auth.password = {password}").and_then(|()| file.sync_all()).map_err(failed)?;
        }
        Ok(())
    }

    /// Logs out of the target and forgets its record. Each target holds one volume, so the last
    /// LUN of the target goes with it.
    pub async fn iscsi_logout(&self, portal: &str, iqn: &str) -> Result<(), Status> {
        let node = ["-m", "node", "-T", iqn, "-p", portal];
        let logout = self.run("iscsiadm", &[&node[..], &["--logout"]].concat()).await?;
        // 21: no session (a repeat).
        if !logout.success() && logout.code != 21 {
            return Err(checked("iscsiadm", logout).unwrap_err());
        }
        let delete = self.run("iscsiadm", &[&node[..], &["-o", "delete"]].concat()).await?;
        if !delete.success() && delete.code != 21 {
            return Err(checked("iscsiadm", delete).unwrap_err());
        }
        Ok(())
    }

    /// Makes the session see a LUN's new size.
    pub async fn iscsi_rescan(&self, portal: &str, iqn: &str) -> Result<(), Status> {
        self.must("iscsiadm", &["-m", "node", "-T", iqn, "-p", portal, "--rescan"]).await.map(drop)
    }

    // ---- filesystems and mounts

    /// The filesystem on `device`, or `None` when it is blank.
    pub async fn filesystem(&self, device: &str) -> Result<Option<String>, Status> {
        let probed = self.run("blkid", &["-p", "-s", "TYPE", "-o", "value", device]).await?;
        match probed.code {
            0 => Ok(Some(probed.stdout.trim().to_owned()).filter(|fs| !fs.is_empty())),
            // 2: nothing found.
            2 => Ok(None),
            _ => Err(checked("blkid", probed).unwrap_err()),
        }
    }

    pub async fn make_filesystem(&self, device: &str, fs_type: &str) -> Result<(), Status> {
        let program = format!("mkfs.{fs_type}");
        let arguments: &[&str] = match fs_type {
            "ext4" => &["-F", "-q", "-E", "nodiscard", device],
            "xfs" => &["-q", "-K", device],
            _ => &["-q", device],
        };
        self.must(&program, arguments).await.map(drop)
    }

    pub async fn mount(&self, device: &str, path: &str, fs_type: &str, flags: &[String]) -> Result<(), Status> {
        let options = flags.join(",");
        let mut arguments = vec!["-t", fs_type];
        if !options.is_empty() {
            arguments.extend(["-o", options.as_str()]);
        }
        arguments.extend([device, path]);
        self.must("mount", &arguments).await.map(drop)
    }

    /// Binds `source` at `target`, read-only when asked (a bind mount takes `ro` only on remount).
    pub async fn bind(&self, source: &str, target: &str, read_only: bool) -> Result<(), Status> {
        self.must("mount", &["--bind", source, target]).await?;
        if read_only {
            self.must("mount", &["-o", "remount,bind,ro", target]).await?;
        }
        Ok(())
    }

    /// Unmounts everything stacked at `path`.
    pub async fn unmount_all(&self, path: &str) -> Result<(), Status> {
        while self.mount_at(path)?.is_some() {
            self.must("umount", &[path]).await?;
        }
        Ok(())
    }

    /// Grows the filesystem mounted at `path` from `device` to the device's size.
    pub async fn grow_filesystem(&self, fs_type: &str, device: &str, path: &str) -> Result<(), Status> {
        match fs_type {
            "ext4" => self.must("resize2fs", &[device]).await.map(drop),
            "xfs" => self.must("xfs_growfs", &[path]).await.map(drop),
            "btrfs" => self.must("btrfs", &["filesystem", "resize", "max", path]).await.map(drop),
            other => Err(Status::invalid_argument(format!("cannot grow a {other} filesystem"))),
        }
    }

    pub async fn device_size(&self, device: &str) -> Result<u64, Status> {
        let size = self.must("blockdev", &["--getsize64", device]).await?;
        size.stdout.trim().parse().map_err(|_| Status::internal(format!("blockdev printed no size for {device}")))
    }
}

#[cfg(test)]
mod tests {
    use basalt::command::recorded::{RecordedRunner, failed, ok};

    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let text = "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - ext4 /dev/loop3 rw,errors=continue\n\
                    37 35 98:0 / /target ro,relatime shared:2 - ext4 /dev/loop3 rw";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts[0].mount_point, "/mnt/a b");
        assert_eq!((mounts[0].source.as_str(), mounts[0].fs_type.as_str()), ("/dev/loop3", "ext4"));
        assert!(!mounts[0].read_only() && mounts[1].read_only());
        assert_eq!(mounts[1].device, "98:0");
    }

    #[tokio::test]
    async fn a_repeated_iscsi_login_reuses_the_session_with_fake_iscsiadm() {
        // A fake iscsiadm (this kernel has no initiator; the VM lane logs in for real), with
        // open-iscsi's exit codes: 15 for "already exists" or "already logged in".
        let runner = RecordedRunner::new(vec![
            ("-o new", failed(15, "iscsiadm: node record already exists")),
            ("node.startup", ok("")),
            ("authmethod", ok("")),
            ("auth.username", ok("")),
            ("--login", failed(15, "iscsiadm: default: 1 session requested, but 1 already present.")),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("sdb");
        std::fs::write(&device, b"").unwrap();
        let link = dir.path().join("ip-192.0.2.1:3260-iscsi-iqn.x:volume-1-lun-1");
        std::os::unix::fs::symlink(&device, &link).unwrap();
        // The record as iscsiadm keeps it.
        let nodes = dir.path().join("nodes");
        // The record as `iscsiadm -o new` leaves it, without a portal group tag.
        let record = nodes.join("iqn.x:volume-1/192.0.2.1,3260/default");
        std::fs::create_dir_all(record.parent().unwrap()).unwrap();
        std::fs::write(&record, "node.name = iqn.x:volume-1\n# END RECORD\n").unwrap();
        let host = Host { runner, by_path: dir.path().to_path_buf(), iscsi_nodes: vec![nodes] };
        let found = host.iscsi_login("192.0.2.1:3260", "iqn.x:volume-1", 1, Some(("u", "s3cret"))).await.unwrap();
        assert_eq!(found, device.to_string_lossy());
        let calls = host.runner.calls.lock().unwrap().clone();
        assert!(!calls.iter().any(|call| call.contains("s3cret")), "a password on a command line: {calls:?}");
        let written = std::fs::read_to_string(&record).unwrap();
        assert!(written.ends_with("node.session.auth.password = s3cret\n"), "{written}");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&record).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn a_logout_without_a_session_is_done_with_fake_iscsiadm() {
        let runner = RecordedRunner::new(vec![
            ("--logout", failed(21, "iscsiadm: No matching sessions found")),
            ("-o delete", failed(21, "iscsiadm: No records found")),
        ]);
        let host = Host::new(runner);
        host.iscsi_logout("192.0.2.1:3260", "iqn.x:volume-1").await.unwrap();
    }
}
