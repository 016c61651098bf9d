//! The backend conformance suite: what every backend must do, checked through the bytes of its
//! volumes. The `file` backend runs it in CI; `lvm` (thick and thin) and `nfs` run it on a real
//! kernel in the VM lane (`scripts/vm-lane/run conformance`, through `basalt-storage-check`).
//!
//! Each case makes its own volumes and removes them, so cases are independent and capacity is
//! compared before and after.

use std::{
    fs::{File, OpenOptions},
    future::Future,
    os::unix::fs::FileExt,
    pin::Pin,
};

use basalt::{
    ErrorCode, ServiceError,
    ids::{SnapshotId, VolumeId},
    locks::KeyedLocks,
    proto::{NodeCopy, NodeCopySetRequest},
};

use super::{Backend, ConfiguredBackend, VolumeSource};
use crate::{
    copy_set::{CopyKind, CopySet},
    target::Target,
};

const MIB: u64 = 1 << 20;

type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
pub type Case = for<'a> fn(&'a ConfiguredBackend, &'a str) -> CaseFuture<'a>;

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("create_is_idempotent", |backend, pool| Box::pin(create_is_idempotent(backend, pool))),
    ("delete_wipes_so_new_volumes_read_zeros", |backend, pool| Box::pin(delete_wipes(backend, pool))),
    ("extend_keeps_data_and_is_idempotent", |backend, pool| Box::pin(extend_keeps_data(backend, pool))),
    ("snapshot_keeps_the_old_bytes", |backend, pool| Box::pin(snapshot_keeps_old_bytes(backend, pool))),
    ("volumes_from_snapshots_and_clones_copy_bytes", |backend, pool| Box::pin(copies_copy_bytes(backend, pool))),
    ("revert_restores_the_snapshot_and_keeps_the_size", |backend, pool| Box::pin(revert_restores(backend, pool))),
    ("capacity_follows_what_is_provisioned", |backend, pool| Box::pin(capacity_follows(backend, pool))),
    ("unknown_pools_and_ids_are_refused", |backend, pool| Box::pin(unknown_refused(backend, pool))),
    ("adopting_keeps_the_bytes_under_the_new_name", |backend, pool| Box::pin(adopting_keeps_bytes(backend, pool))),
    ("adopting_a_snapshot_keeps_it_a_snapshot_of_its_volume", |backend, pool| {
        Box::pin(adopting_a_snapshot(backend, pool))
    }),
    ("copy_sets_are_cut_whole_or_cut_again", |backend, pool| Box::pin(copy_sets_are_whole(backend, pool))),
];

/// Runs every case (or those whose name contains `filter`), reporting each as it finishes.
/// Returns the names of the failed cases.
pub async fn run(
    backend: &ConfiguredBackend,
    pool: &str,
    filter: Option<&str>,
    mut report: impl FnMut(&str, &Result<(), String>),
) -> Vec<String> {
    let mut failed = Vec::new();
    for (name, case) in CASES {
        if filter.is_some_and(|filter| !name.contains(filter)) {
            continue;
        }
        let result = case(backend, pool).await;
        report(name, &result);
        if result.is_err() {
            failed.push((*name).to_owned());
        }
    }
    failed
}

fn fail(what: &str, error: ServiceError) -> String {
    format!("{what}: {} ({:?})", error.message, error.code)
}

fn check(condition: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(message()) }
}

fn expect_code<T: std::fmt::Debug>(what: &str, result: Result<T, ServiceError>, code: ErrorCode) -> Result<(), String> {
    match result {
        Err(error) if error.code == code => Ok(()),
        Err(error) => Err(format!("{what}: expected {code:?}, got {:?}: {}", error.code, error.message)),
        Ok(value) => Err(format!("{what}: expected {code:?}, got success {value:?}")),
    }
}

/// A recognisable pattern: every 8-byte word holds its offset xor a seed.
fn pattern(seed: u64, offset: u64, length: usize) -> Vec<u8> {
    (0..length as u64)
        .step_by(8)
        .flat_map(|word| ((offset + word) ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes())
        .take(length)
        .collect()
}

async fn io<T: Send + 'static>(work: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(work).await.map_err(|error| error.to_string())?.map_err(|error| error.to_string())
}

async fn write_at(path: &str, offset: u64, bytes: Vec<u8>) -> Result<(), String> {
    let path = path.to_owned();
    io(move || {
        let file = OpenOptions::new().write(true).open(&path)?;
        file.write_all_at(&bytes, offset)?;
        file.sync_all()
    })
    .await
    .map_err(|error| format!("cannot write the volume: {error}"))
}

async fn read_at(path: &str, offset: u64, length: u64) -> Result<Vec<u8>, String> {
    let path = path.to_owned();
    io(move || {
        let file = File::open(&path)?;
        let mut bytes = vec![0; length as usize];
        file.read_exact_at(&mut bytes, offset)?;
        Ok(bytes)
    })
    .await
    .map_err(|error| format!("cannot read the volume: {error}"))
}

async fn expect_bytes(path: &str, offset: u64, expected: &[u8], what: &str) -> Result<(), String> {
    let found = read_at(path, offset, expected.len() as u64).await?;
    if found == expected {
        return Ok(());
    }
    let first = found.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(0);
    Err(format!("{what}: bytes differ at offset {}", offset + first as u64))
}

async fn expect_zeros(path: &str, offset: u64, length: u64, what: &str) -> Result<(), String> {
    let mut position = offset;
    while position < offset + length {
        let step = (offset + length - position).min(8 * MIB);
        let bytes = read_at(path, position, step).await?;
        if let Some(index) = bytes.iter().position(|byte| *byte != 0) {
            return Err(format!("{what}: a non-zero byte at offset {}", position + index as u64));
        }
        position += step;
    }
    Ok(())
}

async fn create(
    backend: &ConfiguredBackend,
    pool: &str,
    size: u64,
    source: VolumeSource,
) -> Result<(VolumeId, String), String> {
    let id = VolumeId::new_random();
    let volume = backend.create_volume(pool, id, size, source).await.map_err(|error| fail("create", error))?;
    check(volume.size_bytes == size, || format!("created {} bytes, asked for {size}", volume.size_bytes))?;
    Ok((id, volume.path))
}

async fn remove(
    backend: &ConfiguredBackend,
    pool: &str,
    volumes: &[VolumeId],
    snapshots: &[SnapshotId],
) -> Result<(), String> {
    for snapshot in snapshots {
        backend.delete_snapshot(pool, *snapshot).await.map_err(|error| fail("delete a snapshot", error))?;
    }
    for volume in volumes {
        backend.delete_volume(pool, *volume).await.map_err(|error| fail("delete a volume", error))?;
    }
    Ok(())
}

async fn create_is_idempotent(backend: &ConfiguredBackend, pool: &str) -> Result<(), String> {
    let (id, _) = create(backend, pool, 64 * MIB, VolumeSource::Empty).await?;
    let first = backend.get_volume(pool, id).await.map_err(|error| fail("get", error))?;
    let again = backend.create_volume(pool, id, 64 * MIB, VolumeSource::Empty).await.map_err(|e| fail("repeat", e))?;
    check(first.as_ref() == Some(&again), || {
        format!("a repeated create changed the volume: {first:?} then {again:?}")
    })?;
    expect_code(
        "create again with another size",
        backend.create_volume(pool, id, 128 * MIB, VolumeSource::Empty).await,
        ErrorCode::AlreadyExists,
    )?;
    let (volumes, _) = backend.list().await.map_err(|error| fail("list", error))?;
    check(volumes.iter().any(|volume| volume.volume_id == id), || "list does not show the new volume".into())?;
    check(backend.delete_volume(pool, id).await.map_err(|e| fail("delete", e))?, || {
        "delete said the volume was not there".into()
    })?;
    check(!backend.delete_volume(pool, id).await.map_err(|e| fail("delete again", e))?, || {
        "a repeated delete found the volume".into()
    })?;
    check(backend.get_volume(pool, id).await.map_err(|e| fail("get", e))?.is_none(), || {
        "the deleted volume is still there".into()
    })
}

async fn delete_wipes(backend: &ConfiguredBackend, pool: &str) -> Result<(), String> {
    let size = 64 * MIB;
    let (first, path) = create(backend, pool, size, VolumeSource::Empty).await?;
    for chunk in 0..size / (8 * MIB) {
        write_at(&path, chunk * 8 * MIB, pattern(1, chunk * 8 * MIB, (8 * MIB) as usize)).await?;
    }
    remove(backend, pool, &[first], &[]).await?;
    // The next volumes of the same size are where the old one's blocks most likely went.
    let mut made = Vec::new();
    let mut outcome = Ok(());
    for _ in 0..2 {
        let (id, path) = create(backend, pool, size, VolumeSource::Empty).await?;
        made.push(id);
        outcome = outcome.and(expect_zeros(&path, 0, size, "a new volume after a delete").await);
    }
    remove(backend, pool, &made, &[]).await?;
    outcome
}

async fn extend_keeps_data(backend: &ConfiguredBackend, pool: &str) -> Result<(), String> {
    let (id, path) = create(backend, pool, 32 * MIB, VolumeSource::Empty).await?;
    write_at(&path, MIB, pattern(2, MIB, 4096)).await?;
    let outcome = async {
        let extended = backend.extend_volume(pool, id, 64 * MIB).await.map_err(|error| fail("extend", error))?;
        check(extended.size_bytes == 64 * MIB, || format!("extended to {} bytes", extended.size_bytes))?;
        let again = backend.extend_volume(pool, id, 64 * MIB).await.map_err(|error| fail("extend again", error))?;
        check(again.size_bytes == 64 * MIB, || format!("a repeated extend gave {} bytes", again.size_bytes))?;
        let smaller = backend.extend_volume(pool, id, 32 * MIB).await.map_err(|error| fail("extend smaller", error))?;
        check(smaller.size_bytes == 64 * MIB, || {
            format!("an extend to a smaller size shrank to {}", smaller.size_bytes)
        })?;
        let path = extended.path;
        expect_bytes(&path, MIB, &pattern(2, MIB, 4096), "data after the extend").await?;
        expect_zeros(&path, 32 * MIB, 32 * MIB, "the grown part").await
    }
    .await;
    remove(backend, pool, &[id], &[]).await?;
    outcome
}

/// A volume released by its row (unmanaged) is adopted under a new id: listed as manageable by
/// its name, renamed with its bytes, grown to the size asked; repeats and refusals change nothing.
async fn adopting_keeps_bytes(backend: &ConfiguredBackend, pool: &str) -> Result<(), String> {
    let (released, path) = create(backend, pool, 32 * MIB, VolumeSource::Empty).await?;
    write_at(&path, MIB, pattern(9, MIB, 4096)).await?;
    let (other, _) = create(backend, pool, 32 * MIB, VolumeSource::Empty).await?;
    let adopted = VolumeId::new_random();
    let (released_name, other_name) = (format!("volume-{released}"), format!("volume-{other}"));
    let outcome = async {
        let listed = backend.manageable(pool).await.map_err(|error| fail("list manageable", error))?;
        let entry = listed.iter().find(|entry| entry.name == released_name);
        check(entry.is_some_and(|entry| entry.size_bytes == 32 * MIB && entry.reason_not_safe.is_none()), || {
            format!("the released volume is not listed as manageable with its size: {listed:?}")
        })?;
        expect_code(
            "adopt an object that grew past its listed size",
            backend.manage_volume(pool, adopted, &released_name, 16 * MIB).await,
            ErrorCode::Conflict,
        )?;
        let volume = backend
            .manage_volume(pool, adopted, &released_name, 64 * MIB)
            .await
            .map_err(|error| fail("adopt", error))?;
        check(volume.volume_id == adopted && volume.size_bytes == 64 * MIB, || format!("adopted as {volume:?}"))?;
        expect_bytes(&volume.path, MIB, &pattern(9, MIB, 4096), "the adopted volume's bytes").await?;
        expect_zeros(&volume.path, 32 * MIB, 32 * MIB, "the adopted volume's grown part").await?;
        let again = backend
            .manage_volume(pool, adopted, &released_name, 64 * MIB)
            .await
            .map_err(|error| fail("adopt again", error))?;
        check(again == volume, || format!("a repeated adoption changed the volume: {again:?}"))?;
        let gone = backend.get_volume(pool, released).await.map_err(|error| fail("get", error))?;
        check(gone.is_none(), || "the adopted object still answers to its old id".into())?;
        expect_code(
            "adopt onto a volume that exists",
            backend.manage_volume(pool, adopted, &other_name, 64 * MIB).await,
            ErrorCode::AlreadyExists,
        )?;
        expect_code(
            "adopt an object that is not there",
            backend.manage_volume(pool, VolumeId::new_random(), "basalt-no-such-object", 64 * MIB).await,
            ErrorCode::NotFound,
        )?;
        for hostile in ["", "..", "../etc/passwd", "a/b", "x\nbad"] {
            expect_code(
                &format!("adopt {hostile:?}"),
                backend.manage_volume(pool, VolumeId::new_random(), hostile, 64 * MIB).await,
                ErrorCode::InvalidArgument,
            )?;
        }
        let still = backend.get_volume(pool, other).await.map_err(|error| fail("get", error))?;
        check(still.is_some_and(|volume| volume.size_bytes == 32 * MIB), || {
            "a refused adoption changed a volume".into()
        })
    }
    .await;
    let cleaned = remove(backend, pool, &[adopted, released, other], &[]).await;
    outcome.and(cleaned)
}

/// A snapshot released by its row is adopted under a new id, as a snapshot of its own volume
/// only; the adopted snapshot still holds the volume's bytes of when it was taken.
async fn adopting_a_snapshot(backend: &ConfiguredBackend, pool: &str) -> Result<(), String> {
    let (volume, path) = create(backend, pool, 32 * MIB, VolumeSource::Empty).await?;
    let (other, _) = create(backend, pool, 16 * MIB, VolumeSource::Empty).await?;
    let (released, adopted) = (SnapshotId::new_random(), SnapshotId::new_random());
    let outcome = async {
        write_at(&path, MIB, pattern(10, MIB, 4096)).await?;
        backend.create_snapshot(pool, released, volume).await.map_err(|error| fail("snapshot", error))?;
        write_at(&path, MIB, pattern(11, MIB, 4096)).await?;
        let listed = backend.manageable_snapshots(pool).await.map_err(|error| fail("list snapshots", error))?;
        let entry = listed.iter().find(|entry| entry.name.ends_with(&released.to_string()));
        let name = entry
            .filter(|entry| entry.reason_not_safe.is_none())
            .map(|entry| entry.name.clone())
            .ok_or_else(|| format!("the released snapshot is not listed as manageable: {listed:?}"))?;
        expect_code(
            "adopt it as a snapshot of another volume",
            backend.manage_snapshot(pool, adopted, other, &name).await,
            ErrorCode::InvalidArgument,
        )?;
        let snapshot =
            backend.manage_snapshot(pool, adopted, volume, &name).await.map_err(|error| fail("adopt", error))?;
        check(snapshot.snapshot_id == adopted, || format!("adopted as {snapshot:?}"))?;
        let again =
            backend.manage_snapshot(pool, adopted, volume, &name).await.map_err(|error| fail("adopt again", error))?;
        check(again == snapshot, || format!("a repeated adoption changed the snapshot: {again:?}"))?;
        let gone = backend.get_snapshot(pool, released).await.map_err(|error| fail("get", error))?;
        check(gone.is_none(), || "the adopted snapshot still answers to its old id".into())?;
        // Reverting to it gives the bytes of when it was taken.
        backend.revert_volume(pool, volume, adopted).await.map_err(|error| fail("revert", error))?;
        expect_bytes(&path, MIB, &pattern(10, MIB, 4096), "the volume reverted to the adopted snapshot").await
    }
    .await;
    let cleaned = remove(backend, pool, &[volume, other], &[adopted, released]).await;
    outcome.and(cleaned)
}

async fn snapshot_keeps_old_bytes(backend: &ConfiguredBackend, pool: &str) -> Result<(), String> {
    let (id, path) = create(backend, pool, 32 * MIB, VolumeSource::Empty).await?;
    let snapshot = SnapshotId::new_random();
    let outcome = async {
        write_at(&path, 4096, pattern(3, 4096, 8192)).await?;
        let taken = backend.create_snapshot(pool, snapshot, id).await.map_err(|error| fail("snapshot", error))?;
        write_at(&path, 4096, pattern(4, 4096, 8192)).await?;
        let repeated =
            backend.create_snapshot(pool, snapshot, id).await.map_err(|error| fail("snapshot again", error))?;
        check(repeated == taken, || "a repeated snapshot changed it".into())?;
        let found = backend.get_snapshot(pool, snapshot).await.map_err(|error| fail("get snapshot", error))?;
        check(found.as_ref() == Some(&taken), || format!("get_snapshot gave {found:?}"))?;
        expect_bytes(&taken.path, 4096, &pattern(3, 4096, 8192), "the snapshot after the volume changed").await?;
        expect_bytes(&path, 4096, &pattern(4, 4096, 8192), "the volume after its snapshot").await?;
        expect_code(
            "snapshot of an unknown volume",
            backend.create_snapshot(pool, SnapshotId::new_random(), VolumeId::new_random()).await,
            ErrorCode::NotFound,
        )
    }
    .await;
    remove(backend, pool, &[id], &[snapshot]).await?;
    check(!backend.delete_snapshot(pool, snapshot).await.map_err(|e| fail("delete again", e))?, || {
        "a repeated snapshot delete found it".into()
    })?;
    outcome
}

async fn copies_copy_bytes(backend: &ConfiguredBackend, pool: &str) -> Result<(), String> {
    let (source, path) = create(backend, pool, 32 * MIB, VolumeSource::Empty).await?;
    let snapshot = SnapshotId::new_random();
    let mut made = vec![source];
    let outcome = async {
        write_at(&path, 0, pattern(5, 0, 4096)).await?;
        write_at(&path, 31 * MIB, pattern(5, 31 * MIB, 4096)).await?;
        backend.create_snapshot(pool, snapshot, source).await.map_err(|error| fail("snapshot", error))?;
        write_at(&path, 0, pattern(6, 0, 4096)).await?;

        let (restored, restored_path) = create(backend, pool, 64 * MIB, VolumeSource::Snapshot(snapshot)).await?;
        made.push(restored);
        expect_bytes(&restored_path, 0, &pattern(5, 0, 4096), "a volume from the snapshot").await?;
        expect_bytes(&restored_path, 31 * MIB, &pattern(5, 31 * MIB, 4096), "a volume from the snapshot").await?;
        expect_zeros(&restored_path, 32 * MIB, 32 * MIB, "the part beyond the snapshot").await?;
        let again = backend.create_volume(pool, restored, 64 * MIB, VolumeSource::Snapshot(snapshot)).await;
        check(again.is_ok(), || format!("a repeated create from the snapshot failed: {again:?}"))?;

        let (clone, clone_path) = create(backend, pool, 32 * MIB, VolumeSource::Volume(source)).await?;
        made.push(clone);
        expect_bytes(&clone_path, 0, &pattern(6, 0, 4096), "a clone").await?;
        expect_bytes(&clone_path, 31 * MIB, &pattern(5, 31 * MIB, 4096), "a clone").await?;
        // Copies are independent of their source.
        write_at(&clone_path, 0, pattern(7, 0, 4096)).await?;
        expect_bytes(&path, 0, &pattern(6, 0, 4096), "the source after its clone changed").await?;

        expect_code(
            "a copy smaller than its source",
            backend.create_volume(pool, VolumeId::new_random(), 16 * MIB, VolumeSource::Volume(source)).await,
            ErrorCode::InvalidArgument,
        )?;
        expect_code(
            "a copy of an unknown snapshot",
            backend
                .create_volume(pool, VolumeId::new_random(), 64 * MIB, VolumeSource::Snapshot(SnapshotId::new_random()))
                .await,
            ErrorCode::NotFound,
        )
    }
    .await;
    // Copies first, then the snapshot, then its volume.
    remove(backend, pool, &made[1..], &[snapshot]).await?;
    remove(backend, pool, &made[..1], &[]).await?;
    outcome
}

async fn revert_restores(backend: &ConfiguredBackend, pool: &str) -> Result<(), String> {
    let (id, path) = create(backend, pool, 32 * MIB, VolumeSource::Empty).await?;
    let snapshot = SnapshotId::new_random();
    let outcome = async {
        write_at(&path, 8192, pattern(8, 8192, 4096)).await?;
        backend.create_snapshot(pool, snapshot, id).await.map_err(|error| fail("snapshot", error))?;
        write_at(&path, 8192, pattern(9, 8192, 4096)).await?;
        let grown =
            backend.extend_volume(pool, id, 64 * MIB).await.map_err(|error| fail("extend with a snapshot", error))?;
        write_at(&grown.path, 40 * MIB, pattern(9, 40 * MIB, 4096)).await?;
        let reverted = backend.revert_volume(pool, id, snapshot).await.map_err(|error| fail("revert", error))?;
        check(reverted.size_bytes == 64 * MIB, || format!("revert changed the size to {}", reverted.size_bytes))?;
        expect_bytes(&reverted.path, 8192, &pattern(8, 8192, 4096), "the reverted volume").await?;
        expect_zeros(&reverted.path, 32 * MIB, 32 * MIB, "the part grown after the snapshot, reverted").await?;
        let kept = backend.get_snapshot(pool, snapshot).await.map_err(|error| fail("get snapshot", error))?;
        let kept = kept.ok_or("the snapshot is gone after the revert")?;
        expect_bytes(&kept.path, 8192, &pattern(8, 8192, 4096), "the snapshot after the revert").await?;
        // A repeated revert (a retry after a crash) gives the same result.
        let again = backend.revert_volume(pool, id, snapshot).await.map_err(|error| fail("revert again", error))?;
        expect_bytes(&again.path, 8192, &pattern(8, 8192, 4096), "the volume reverted twice").await
    }
    .await;
    remove(backend, pool, &[id], &[snapshot]).await?;
    outcome
}

async fn capacity_follows(backend: &ConfiguredBackend, pool: &str) -> Result<(), String> {
    let pool_capacity = |pools: Vec<basalt::proto::PoolCapacity>| {
        pools.into_iter().find(|candidate| candidate.name == pool).ok_or(format!("capacity does not list pool {pool}"))
    };
    let before = pool_capacity(backend.capacity().await.map_err(|error| fail("capacity", error))?)?;
    let (first, _) = create(backend, pool, 64 * MIB, VolumeSource::Empty).await?;
    let (second, _) = create(backend, pool, 32 * MIB, VolumeSource::Empty).await?;
    let during = pool_capacity(backend.capacity().await.map_err(|error| fail("capacity", error))?)?;
    remove(backend, pool, &[first, second], &[]).await?;
    let after = pool_capacity(backend.capacity().await.map_err(|error| fail("capacity", error))?)?;
    check(during.provisioned_bytes == before.provisioned_bytes + 96 * MIB, || {
        format!(
            "provisioned went from {} to {} for 96 MiB of volumes",
            before.provisioned_bytes, during.provisioned_bytes
        )
    })?;
    check(during.total_volumes == before.total_volumes + 2, || {
        format!("total_volumes {} then {}", before.total_volumes, during.total_volumes)
    })?;
    check(during.free_bytes <= during.total_bytes, || "more free than total".into())?;
    if during.thick_provisioning_support {
        check(before.free_bytes - during.free_bytes == 96 * MIB, || {
            format!("a thick pool's free space went from {} to {} for 96 MiB", before.free_bytes, during.free_bytes)
        })?;
    }
    check(after.provisioned_bytes == before.provisioned_bytes && after.total_volumes == before.total_volumes, || {
        format!(
            "after the deletes: provisioned {} (was {}), volumes {} (was {})",
            after.provisioned_bytes, before.provisioned_bytes, after.total_volumes, before.total_volumes
        )
    })
}

async fn unknown_refused(backend: &ConfiguredBackend, pool: &str) -> Result<(), String> {
    let elsewhere = format!("{pool}-elsewhere");
    expect_code(
        "create in an unknown pool",
        backend.create_volume(&elsewhere, VolumeId::new_random(), MIB, VolumeSource::Empty).await,
        ErrorCode::NotFound,
    )?;
    expect_code(
        "extend an unknown volume",
        backend.extend_volume(pool, VolumeId::new_random(), 64 * MIB).await,
        ErrorCode::NotFound,
    )?;
    expect_code(
        "revert an unknown volume",
        backend.revert_volume(pool, VolumeId::new_random(), SnapshotId::new_random()).await,
        ErrorCode::NotFound,
    )?;
    expect_code(
        "a volume of no bytes",
        backend.create_volume(pool, VolumeId::new_random(), 0, VolumeSource::Empty).await,
        ErrorCode::InvalidArgument,
    )
}
/// The mark at the start of every 4 KiB block a remanence check writes.
pub const REMANENCE_MARK: &[u8] = b"BASALT-REMANENCE-MARK";

/// `count` 4 KiB blocks, each beginning with the mark and its number, the rest a pattern.
pub fn marked_blocks(count: usize, seed: u64) -> Vec<u8> {
    let mut bytes = pattern(seed, 0, count * 4096);
    for (index, block) in bytes.chunks_mut(4096).enumerate() {
        block[..REMANENCE_MARK.len()].copy_from_slice(REMANENCE_MARK);
        block[REMANENCE_MARK.len()..REMANENCE_MARK.len() + 8].copy_from_slice(&(index as u64).to_le_bytes());
    }
    bytes
}

/// How many 4 KiB blocks of `device` (a disk, or a loop device's backing file) begin with the
/// mark, read after everything is synced and the device's own cache is dropped. A filesystem or
/// LVM keeps data in 4 KiB-aligned blocks of its device, so a surviving marked block begins at
/// such a boundary.
pub fn count_marks(device: &std::path::Path) -> std::io::Result<usize> {
    use std::{io::Read, os::fd::AsRawFd};
    /// `BLKFLSBUF` from `linux/fs.h`: drop the block device's buffer cache.
    const BLKFLSBUF: libc::c_ulong = 0x1261;
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let mut file = File::open(device)?;
    // SAFETY: BLKFLSBUF on a descriptor we own; on a regular file it fails harmlessly.
    unsafe { libc::ioctl(file.as_raw_fd(), BLKFLSBUF, 0) };
    let mut buffer = vec![0u8; 4 << 20];
    let mut found = 0;
    loop {
        let mut filled = 0;
        while filled < buffer.len() {
            let read = file.read(&mut buffer[filled..])?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        if filled == 0 {
            return Ok(found);
        }
        found += buffer[..filled].chunks(4096).filter(|block| block.starts_with(REMANENCE_MARK)).count();
    }
}

/// Remanence: a volume is filled with marked blocks, snapshotted, overwritten with other marked
/// blocks (so a copy-on-write snapshot holds the first ones), and deleted with its snapshot;
/// then `device`, the disk under the pool, must hold no marked block. The scan first has to find
/// the marks while the volume lives, so the check can fail.
pub async fn remanence(backend: &ConfiguredBackend, pool: &str, device: &std::path::Path) -> Result<(), String> {
    const BLOCKS: usize = 2048;
    let (id, path) = create(backend, pool, 64 * MIB, VolumeSource::Empty).await?;
    let snapshot = SnapshotId::new_random();
    let scan = |what: &'static str| {
        let device = device.to_owned();
        async move { io(move || count_marks(&device)).await.map_err(|error| format!("cannot scan {what}: {error}")) }
    };
    let outcome = async {
        write_at(&path, 0, marked_blocks(BLOCKS, 1)).await?;
        let live = scan("the device").await?;
        check(live >= BLOCKS, || format!("the scan finds {live} of the {BLOCKS} marked blocks a live volume holds"))?;
        backend.create_snapshot(pool, snapshot, id).await.map_err(|error| fail("snapshot", error))?;
        write_at(&path, 0, marked_blocks(BLOCKS, 2)).await
    }
    .await;
    remove(backend, pool, &[id], &[snapshot]).await?;
    outcome?;
    let left = scan("the device").await?;
    check(left == 0, || {
        format!("{left} marked blocks of a deleted volume and its snapshot are still on {}", device.display())
    })
}

/// A set of snapshots, then of clones, of two volumes: a set found cut part-way (one snapshot
/// taken at an earlier moment) is cut again whole, a repeat of a whole set changes nothing, and
/// every copy holds its own source's bytes.
async fn copy_sets_are_whole(backend: &ConfiguredBackend, pool: &str) -> Result<(), String> {
    let (first, first_path) = create(backend, pool, 32 * MIB, VolumeSource::Empty).await?;
    let (second, second_path) = create(backend, pool, 32 * MIB, VolumeSource::Empty).await?;
    let snapshots = [SnapshotId::new_random(), SnapshotId::new_random()];
    let clones = [VolumeId::new_random(), VolumeId::new_random()];
    let locks = KeyedLocks::default();
    let set =
        CopySet { backend, target: &Target::None, locks: &locks, freeze_limit: std::time::Duration::from_secs(30) };
    let request = |copies: [String; 2]| NodeCopySetRequest {
        pool: pool.to_owned(),
        copies: [first, second]
            .iter()
            .zip(copies)
            .map(|(source, copy_id)| NodeCopy {
                source_volume_id: source.to_string(),
                copy_id,
                size_bytes: 32 * MIB,
                in_use: false,
            })
            .collect(),
    };
    let outcome = async {
        write_at(&first_path, 0, pattern(5, 0, 4096)).await?;
        backend.create_snapshot(pool, snapshots[0], first).await.map_err(|error| fail("early snapshot", error))?;
        write_at(&first_path, 0, pattern(6, 0, 4096)).await?;
        write_at(&second_path, 0, pattern(7, 0, 4096)).await?;
        let snapshot_set = request(snapshots.map(|id| id.to_string()));
        set.cut(CopyKind::Snapshot, &snapshot_set).await.map_err(|error| fail("snapshot set", error))?;
        let paths = [
            backend.get_snapshot(pool, snapshots[0]).await.map_err(|error| fail("get snapshot", error))?,
            backend.get_snapshot(pool, snapshots[1]).await.map_err(|error| fail("get snapshot", error))?,
        ]
        .map(|found| found.map(|snapshot| snapshot.path));
        let [Some(first_snapshot), Some(second_snapshot)] = paths else {
            return Err(format!("the snapshot set is not whole: {paths:?}"));
        };
        expect_bytes(&first_snapshot, 0, &pattern(6, 0, 4096), "the set's snapshot of the first volume").await?;
        expect_bytes(&second_snapshot, 0, &pattern(7, 0, 4096), "the set's snapshot of the second").await?;
        write_at(&first_path, 0, pattern(8, 0, 4096)).await?;
        set.cut(CopyKind::Snapshot, &snapshot_set).await.map_err(|error| fail("snapshot set again", error))?;
        expect_bytes(&first_snapshot, 0, &pattern(6, 0, 4096), "a repeated set").await?;

        let clone_set = request(clones.map(|id| id.to_string()));
        set.cut(CopyKind::Clone, &clone_set).await.map_err(|error| fail("clone set", error))?;
        for (clone, expected) in clones.iter().zip([8, 7]) {
            let volume = backend.get_volume(pool, *clone).await.map_err(|error| fail("get clone", error))?;
            let volume = volume.ok_or_else(|| format!("clone {clone} of the set is missing"))?;
            check(volume.size_bytes == 32 * MIB, || format!("clone of {} bytes", volume.size_bytes))?;
            expect_bytes(&volume.path, 0, &pattern(expected, 0, 4096), "a clone of the set").await?;
        }
        Ok(())
    }
    .await;
    remove(backend, pool, &clones, &[]).await?;
    remove(backend, pool, &[first, second], &snapshots).await?;
    outcome
}
