//! Remanence: what a tenant wrote must not outlive its volume on the disk. `basalt up` keeps its
//! file volumes on a small ext4 filesystem inside a loop device (mounted without `discard`, so
//! freed blocks keep whatever they held); a volume is filled with a marked pattern, snapshotted,
//! reverted (the replaced content is retired) and deleted with its snapshot; then the loop
//! device's backing file is searched for the marks. The search first proves it finds them while
//! the volume lives, so the test can fail. The backend-level check the VM lane runs on LVM and NFS
//! (`basalt storage-check backend --remanence-device`) runs here on the file backend too.

use std::{os::unix::fs::FileExt, process::Command};

use anyhow::{Context, Result, ensure};
use basalt::proto::{
    CreateSnapshotRequest, CreateVolumeRequest, DeleteSnapshotRequest, DeleteVolumeRequest, GetSnapshotRequest,
    ListPoolsRequest, RevertVolumeRequest, SnapshotStatus, VolumeStatus,
};
use basalt_integration::*;
use basalt_volume_node::backend::conformance::{count_marks, marked_blocks};

fn run(command: &mut Command) -> Result<()> {
    let output = command.output().with_context(|| format!("cannot run {command:?}"))?;
    ensure!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// A loop-mounted ext4 filesystem, unmounted when dropped.
struct LoopFilesystem {
    backing: std::path::PathBuf,
    mount: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopFilesystem {
    fn new(size: u64) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let backing = dir.path().join("disk.img");
        std::fs::File::create(&backing)?.set_len(size)?;
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-E", "nodiscard"]).arg(&backing))?;
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount)?;
        run(Command::new("mount").args(["-o", "loop,nodiscard"]).arg(&backing).arg(&mount))?;
        Ok(Self { backing, mount, _dir: dir })
    }

    /// Writes everything to the backing file.
    fn flush(&self) -> Result<()> {
        run(Command::new("sync").arg("-f").arg(&self.mount))?;
        run(Command::new("blockdev").arg("--flushbufs").arg(self.device()?))?;
        Ok(())
    }

    fn device(&self) -> Result<String> {
        let output = Command::new("findmnt").args(["-n", "-o", "SOURCE"]).arg(&self.mount).output()?;
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }
}

impl Drop for LoopFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_volume_s_bytes_are_gone_from_the_disk() -> Result<()> {
    let filesystem = LoopFilesystem::new(4 << 30)?;
    let data = filesystem.mount.join("basalt");
    let mut up = BasaltProcess::up(&data, &[], &[])?;
    let mut client = up.volume_client()?;
    let owner = project("remanence");
    let operator = admin("remanence");
    eventually("the embedded node reports its pool", || {
        let mut client = client.clone();
        let request = operator.request(ListPoolsRequest::default());
        async move { Ok(client.list_pools(request).await.is_ok_and(|pools| !pools.into_inner().pools.is_empty())) }
    })
    .await?;

    let volume = client
        .create_volume(owner.request(CreateVolumeRequest { name: "r".into(), size_gib: 1, ..Default::default() }))
        .await?
        .into_inner();
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;
    let path = data.join("volumes").join(format!("volume-{}", volume.id));
    let first = marked_blocks(512, 1);
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    file.write_all_at(&first, 0)?;
    file.write_all_at(&first, 300 << 20)?;
    file.sync_all()?;
    filesystem.flush()?;
    let written = count_marks(&filesystem.backing)?;
    ensure!(written >= 1024, "the search finds the volume's marks while it lives ({written})");

    // A snapshot copies the marks; new marks overwrite the volume; the revert retires them.
    let snapshot = client
        .create_snapshot(owner.request(CreateSnapshotRequest {
            volume_id: volume.id.clone(),
            name: "s".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    wait_for_snapshot(&mut client, &owner, &snapshot.id, SnapshotStatus::Available).await?;
    file.write_all_at(&marked_blocks(256, 2), 100 << 20)?;
    file.sync_all()?;
    drop(file);
    client
        .revert_volume_to_snapshot(
            owner.request(RevertVolumeRequest { volume_id: volume.id.clone(), snapshot_id: snapshot.id.clone() }),
        )
        .await?;
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;
    client
        .delete_snapshot(
            owner.request(DeleteSnapshotRequest { snapshot_id: snapshot.id.clone(), ..Default::default() }),
        )
        .await?;
    eventually("the snapshot is gone", || {
        let mut client = client.clone();
        let request = owner.request(GetSnapshotRequest { snapshot_id: snapshot.id.clone() });
        async move { Ok(client.get_snapshot(request).await.is_err_and(|status| status.code() == tonic::Code::NotFound)) }
    })
    .await?;
    client
        .delete_volume(owner.request(DeleteVolumeRequest { volume_id: volume.id.clone(), ..Default::default() }))
        .await?;
    wait_until_gone(&mut client, &owner, &volume.id).await?;
    up.kill();
    filesystem.flush()?;
    let left = count_marks(&filesystem.backing)?;
    ensure!(left == 0, "{left} marks of a deleted volume are still on the disk");
    Ok(())
}

#[test]
fn the_storage_check_finds_remanence_exactly_when_volume_clear_is_none() -> Result<()> {
    let filesystem = LoopFilesystem::new(1 << 30)?;
    let check = |clear: &str| -> Result<(bool, String)> {
        let output = Command::new(basalt_binary()?)
            .current_dir(&filesystem.mount)
            .args(["storage-check", "backend", "--backend", "file", "--case", "delete", "--volume-clear", clear])
            .arg("--remanence-device")
            .arg(&filesystem.backing)
            .output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        Ok((output.status.success(), text))
    };
    let (ok, text) = check("zero")?;
    ensure!(ok && text.contains("no byte of a deleted volume left"), "volume clear zero: {text}");
    // Freeing without overwriting leaves the bytes on the disk, and the check says so.
    let (ok, text) = check("none")?;
    ensure!(!ok && text.contains("marked blocks of a deleted volume"), "volume clear none: {text}");
    Ok(())
}
