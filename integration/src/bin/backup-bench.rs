//! Benchmark (not a test): backups and restores through the control plane and a node, against
//! references measured in the same run on the same bytes.
//!
//! - a full backup of a 1 GiB mixed-content volume (random, text-like and zero thirds) against
//!   `zstd -1 -T2` of the same bytes to a file;
//! - a backup of a 10 GiB volume holding 100 MiB against a backup of a 100 MiB volume with the same
//!   data (the cost of the empty space);
//! - a restore of the mixed volume into a new volume against two `dd bs=4M conv=sparse,fsync` of
//!   the same bytes into a new file, one per half: the same bytes written the same way (through the
//!   page cache on two threads, 4 MiB chunks of zeros left as holes, a sync at the end), which is
//!   what a restore does, and each
//!   side's input (the backup's chunks, the volume's bytes) read into memory first, so neither
//!   ratio side pays for reading a different number of bytes from the disk.
//!
//!     cargo run --release -p basalt-integration --bin backup-bench

use std::{process::Command, time::Instant};

use anyhow::{Context, Result, bail, ensure};
use basalt::channel::Channel;
use basalt::{
    context::CallContext,
    proto::{
        BackupStatus, CreateBackupRequest, CreateVolumeRequest, GetBackupRequest, RestoreBackupRequest, VolumeStatus,
        volume_service_client::VolumeServiceClient,
    },
};
use basalt_integration::{
    InProcessMesh, lift_volume_quotas, project, random_bytes, volume_client, wait_for_status, write_at,
};

const MIB: u64 = 1 << 20;

/// Text-like bytes: words from a small vocabulary, compressible as logs and documents are.
fn text_bytes(seed: u64, length: usize) -> Vec<u8> {
    const WORDS: &[&str] = &["volume", "backup", "basalt", "chunk", "restore", "node", "pool", "snapshot", "zstd"];
    let mut state = seed | 1;
    let mut text = Vec::with_capacity(length + 16);
    while text.len() < length {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.extend_from_slice(WORDS[(state % WORDS.len() as u64) as usize].as_bytes());
        text.push(if state.is_multiple_of(11) { b'\n' } else { b' ' });
    }
    text.truncate(length);
    text
}

async fn create_volume(client: &mut VolumeServiceClient<Channel>, owner: &CallContext, gib: u64) -> Result<String> {
    let request = CreateVolumeRequest { size_gib: gib, ..Default::default() };
    let volume = client.create_volume(owner.request(request)).await?.into_inner();
    wait_for_status(client, owner, &volume.id, VolumeStatus::Available).await?;
    Ok(volume.id)
}

/// Seconds from the request to `available`.
async fn timed_backup(
    client: &mut VolumeServiceClient<Channel>,
    owner: &CallContext,
    volume_id: &str,
) -> Result<(String, f64)> {
    let started = Instant::now();
    let request = CreateBackupRequest { volume_id: volume_id.into(), ..Default::default() };
    let backup = client.create_backup(owner.request(request)).await?.into_inner();
    loop {
        let shown =
            client.get_backup(owner.request(GetBackupRequest { backup_id: backup.id.clone() })).await?.into_inner();
        match shown.status() {
            BackupStatus::Available => return Ok((backup.id, started.elapsed().as_secs_f64())),
            BackupStatus::Error => bail!("backup failed: {}", shown.fail_reason),
            _ => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
}

fn timed_command(program: &str, args: &[&str]) -> Result<f64> {
    let started = Instant::now();
    let status = Command::new(program).args(args).status().with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("{program} {args:?} failed");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Copies the `chunks` 4 MiB chunks of `from` into `to` with two `dd bs=4M conv=sparse,fsync`
/// at once, one per half, as a restore writes its chunks on two threads; the seconds until both
/// are done.
fn timed_halves(from: &str, to: &str, chunks: u64) -> Result<f64> {
    let half = chunks / 2;
    let started = Instant::now();
    let copies = [(0, half), (half, chunks - half)]
        .into_iter()
        .map(|(start, count)| {
            Command::new("dd")
                .args([format!("if={from}"), format!("of={to}"), "bs=4M".into(), format!("count={count}")])
                .args([format!("skip={start}"), format!("seek={start}"), "conv=sparse,notrunc,fsync".into()])
                .arg("status=none")
                .spawn()
                .context("cannot run dd")
        })
        .collect::<Result<Vec<_>>>()?;
    for mut copy in copies {
        ensure!(copy.wait()?.success(), "dd failed");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Reads every file under `dir`, so what a restore reads comes from memory.
fn read_everything_under(dir: &std::path::Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            read_everything_under(&path)?;
        } else {
            warm(&path)?;
        }
    }
    Ok(())
}

/// Reads `path` through the page cache without keeping it.
fn warm(path: &std::path::Path) -> Result<()> {
    std::io::copy(&mut std::fs::File::open(path)?, &mut std::io::sink())?;
    Ok(())
}

fn drop_caches() {
    // Each side reads from the page cache alike; dropping it (root only) makes both read the disk.
    // What an earlier step left dirty is written first, so no side's sync pays for it.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

#[tokio::main]
async fn main() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("bench");
    lift_volume_quotas(&client, &owner).await?;
    let node_dir = mesh.node_dir("node-0");
    let file_of = |volume_id: &str| node_dir.join(format!("volume-{volume_id}"));

    // 1. Full backup of a mixed volume vs zstd -1 -T2 of the same bytes.
    let mixed = create_volume(&mut client, &owner, 1).await?;
    let third = (GIB_BYTES / 3 / MIB) * MIB;
    write_at(&file_of(&mixed), 0, &random_bytes(1, third as usize))?;
    write_at(&file_of(&mixed), third, &text_bytes(2, third as usize))?;
    std::fs::OpenOptions::new().write(true).open(file_of(&mixed))?.sync_all()?;
    let size_mb = GIB_BYTES as f64 / 1e6;
    drop_caches();
    let (mixed_backup, backup_seconds) = timed_backup(&mut client, &owner, &mixed).await?;
    let zstd_out = tempfile::NamedTempFile::new_in(&node_dir)?;
    let mixed_path = file_of(&mixed).display().to_string();
    let zstd_path = zstd_out.path().display().to_string();
    drop_caches();
    let zstd_seconds = timed_command("zstd", &["-q", "-f", "-1", "-T2", &mixed_path, "-o", &zstd_path])?;
    let backup_mbs = size_mb / backup_seconds;
    let zstd_mbs = size_mb / zstd_seconds;

    // 2. A 10 GiB volume holding 100 MiB vs a volume of just those 100 MiB.
    let data = random_bytes(3, (100 * MIB) as usize);
    let big = create_volume(&mut client, &owner, 10).await?;
    for (index, piece) in data.chunks((10 * MIB) as usize).enumerate() {
        write_at(&file_of(&big), index as u64 * GIB_BYTES, piece)?;
    }
    // Another project: chunks are shared within a project, and neither side may reuse the other's.
    let other = project("bench-reference");
    lift_volume_quotas(&client, &other).await?;
    let small = create_volume(&mut client, &other, 1).await?;
    write_at(&file_of(&small), 0, &data)?;
    drop_caches();
    let (_, big_seconds) = timed_backup(&mut client, &owner, &big).await?;
    drop_caches();
    let (_, small_seconds) = timed_backup(&mut client, &other, &small).await?;

    // 3. Restore of the mixed backup into a new volume vs dd of the same bytes, written the same way.
    let target = create_volume(&mut client, &owner, 1).await?;
    drop_caches();
    read_everything_under(&mesh.backup_store_dir())?;
    let started = Instant::now();
    let request =
        RestoreBackupRequest { backup_id: mixed_backup.clone(), volume_id: target.clone(), ..Default::default() };
    client.restore_backup(owner.request(request)).await?;
    loop {
        let shown =
            client.get_backup(owner.request(GetBackupRequest { backup_id: mixed_backup.clone() })).await?.into_inner();
        if shown.status() == BackupStatus::Available {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let restore_seconds = started.elapsed().as_secs_f64();
    wait_for_status(&mut client, &owner, &target, VolumeStatus::Available).await?;
    // Sparse and full-sized, as the volume a restore writes into is.
    let dd_target = tempfile::NamedTempFile::new_in(&node_dir)?;
    dd_target.as_file().set_len(GIB_BYTES)?;
    drop_caches();
    warm(std::path::Path::new(&mixed_path))?;
    let dd_seconds = timed_halves(&mixed_path, &dd_target.path().display().to_string(), GIB_BYTES / (4 << 20))?;
    let restore_mbs = size_mb / restore_seconds;
    let dd_mbs = size_mb / dd_seconds;

    println!("| measurement | Basalt | reference | ratio | better |");
    println!("|---|---|---|---|---|");
    println!(
        "| full backup, 1 GiB mixed volume | {backup_mbs:.0} MB/s | {zstd_mbs:.0} MB/s (`zstd -1 -T2`) | {:.2}× | higher |",
        backup_mbs / zstd_mbs
    );
    println!(
        "| backup of 10 GiB holding 100 MiB | {big_seconds:.2} s | {small_seconds:.2} s (a 1 GiB volume, the same 100 MiB) | {:.2}× | lower |",
        big_seconds / small_seconds
    );
    println!(
        "| restore, 1 GiB mixed volume | {restore_mbs:.0} MB/s | {dd_mbs:.0} MB/s (two `dd bs=4M conv=sparse,fsync`) | {:.2}× | higher |",
        restore_mbs / dd_mbs
    );
    mesh.shutdown().await;
    Ok(())
}

const GIB_BYTES: u64 = 1 << 30;
