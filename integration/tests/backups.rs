//! Backups through the control plane and real nodes (in-process mesh, SQLite, the POSIX backup
//! store): restore without the source, incrementals, restore onto an existing volume, in-use
//! volumes with `force`, a damaged store, and a restore from the store alone into a deployment
//! with a new database.

use anyhow::{Context, Result, ensure};
use basalt::channel::Channel;
use basalt::{
    context::CallContext,
    proto::{
        AttachStateChange, AttachVolumeRequest, Backup, BackupStatus, ChangeAttachStateRequest, CreateBackupRequest,
        CreateVolumeRequest, DeleteVolumeRequest, GetBackupRequest, GetVolumeRequest, RestoreBackupRequest,
        VolumeStatus, volume_service_client::VolumeServiceClient,
    },
};
use basalt_integration::*;

const MIB: u64 = 1 << 20;

async fn new_volume(
    client: &mut VolumeServiceClient<Channel>,
    owner: &CallContext,
    name: &str,
    gib: u64,
) -> Result<String> {
    let request = CreateVolumeRequest { name: name.into(), size_gib: gib, ..Default::default() };
    let volume = client.create_volume(owner.request(request)).await?.into_inner();
    wait_for_status(client, owner, &volume.id, VolumeStatus::Available).await?;
    Ok(volume.id)
}

async fn back_up(
    client: &mut VolumeServiceClient<Channel>,
    owner: &CallContext,
    volume_id: &str,
    incremental: bool,
) -> Result<Backup> {
    let request = CreateBackupRequest { volume_id: volume_id.into(), incremental, ..Default::default() };
    let backup = client.create_backup(owner.request(request)).await?.into_inner();
    wait_for_backup(client, owner, &backup.id).await
}

async fn restore(
    client: &mut VolumeServiceClient<Channel>,
    owner: &CallContext,
    backup_id: &str,
    volume_id: &str,
) -> Result<String> {
    let request =
        RestoreBackupRequest { backup_id: backup_id.into(), volume_id: volume_id.into(), ..Default::default() };
    let restored = client.restore_backup(owner.request(request)).await?.into_inner();
    wait_for_status(client, owner, &restored.volume_id, VolumeStatus::Available).await?;
    wait_for_backup(client, owner, backup_id).await?;
    Ok(restored.volume_id)
}

fn volume_file(mesh: &InProcessMesh, volume_id: &str) -> std::path::PathBuf {
    mesh.node_dir("node-0").join(format!("volume-{volume_id}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restores_without_its_source_onto_new_and_existing_volumes() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("backups");
    let source = new_volume(&mut client, &owner, "source", 1).await?;
    let data = pattern(21, (5 * MIB) as usize);
    write_at(&volume_file(&mesh, &source), 3 * MIB, &data)?;
    write_at(&volume_file(&mesh, &source), 900 * MIB, b"the end of the volume")?;
    let backup = back_up(&mut client, &owner, &source, false).await?;
    ensure!(backup.object_count >= 2 && !backup.is_incremental, "{backup:?}");
    ensure!(backup.stored_bytes < 6 * MIB, "holes are stored as nothing: {} bytes", backup.stored_bytes);

    client
        .delete_volume(owner.request(DeleteVolumeRequest { volume_id: source.clone(), ..Default::default() }))
        .await?;
    wait_until_gone(&mut client, &owner, &source).await?;

    // Into a new volume made for it.
    let fresh = restore(&mut client, &owner, &backup.id, "").await?;
    ensure!(read_at(&volume_file(&mesh, &fresh), 3 * MIB, data.len())? == data);
    ensure!(read_at(&volume_file(&mesh, &fresh), 900 * MIB, 21)? == b"the end of the volume");

    // Onto an existing, larger volume whose old bytes in the backup's range must not survive.
    let existing = new_volume(&mut client, &owner, "existing", 2).await?;
    let junk = pattern(99, (12 * MIB) as usize);
    write_at(&volume_file(&mesh, &existing), 0, &junk)?;
    write_at(&volume_file(&mesh, &existing), 1500 * MIB, b"beyond the backup")?;
    restore(&mut client, &owner, &backup.id, &existing).await?;
    let file = volume_file(&mesh, &existing);
    ensure!(read_at(&file, 0, (3 * MIB) as usize)? == vec![0; (3 * MIB) as usize], "zeros where the backup has zeros");
    ensure!(read_at(&file, 3 * MIB, data.len())? == data);
    ensure!(read_at(&file, 1500 * MIB, 17)? == b"beyond the backup", "bytes beyond the backup's size stay");

    // A smaller volume is refused.
    let small_backup = {
        let small = new_volume(&mut client, &owner, "small", 1).await?;
        let big = new_volume(&mut client, &owner, "big", 2).await?;
        let backup = back_up(&mut client, &owner, &big, false).await?;
        (small, backup.id)
    };
    let request = RestoreBackupRequest { backup_id: small_backup.1, volume_id: small_backup.0, ..Default::default() };
    let refused = client.restore_backup(owner.request(request)).await.unwrap_err();
    ensure!(refused.code() == tonic::Code::InvalidArgument && refused.message().contains("smaller"), "{refused:?}");
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_backup_stores_little_more_than_what_changed() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("incremental");
    let volume = new_volume(&mut client, &owner, "v", 1).await?;
    let file = volume_file(&mesh, &volume);
    write_at(&file, 0, &random_bytes(31, (64 * MIB) as usize))?;
    let full = back_up(&mut client, &owner, &volume, false).await?;
    ensure!(full.stored_bytes > 60 * MIB, "random data does not compress: {}", full.stored_bytes);

    // 1% of the volume changes.
    let change = random_bytes(32, (10 * MIB) as usize);
    write_at(&file, 20 * MIB, &change)?;
    let incremental = back_up(&mut client, &owner, &volume, true).await?;
    ensure!(incremental.is_incremental && incremental.parent_id == full.id, "{incremental:?}");
    ensure!(
        incremental.stored_bytes <= 10 * MIB + 2 * 4 * MIB,
        "an incremental of a 10 MiB change stored {} bytes",
        incremental.stored_bytes
    );
    let restored = restore(&mut client, &owner, &incremental.id, "").await?;
    let restored_file = volume_file(&mesh, &restored);
    ensure!(read_at(&restored_file, 20 * MIB, change.len())? == change);
    ensure!(read_at(&restored_file, 0, (20 * MIB) as usize)? == read_at(&file, 0, (20 * MIB) as usize)?);

    // A volume that grew since its parent is backed up incrementally at its new size.
    let extend = basalt::proto::ExtendVolumeRequest { volume_id: volume.clone(), new_size_gib: 2 };
    client.extend_volume(owner.request(extend)).await?;
    wait_for_status(&mut client, &owner, &volume, VolumeStatus::Available).await?;
    write_at(&file, 1500 * MIB, b"written after the volume grew")?;
    let grown = back_up(&mut client, &owner, &volume, true).await?;
    ensure!(grown.size_gib == 2 && grown.parent_id == incremental.id, "{grown:?}");
    ensure!(grown.stored_bytes <= 4 * MIB, "only the new chunk is stored: {}", grown.stored_bytes);
    let restored = restore(&mut client, &owner, &grown.id, "").await?;
    ensure!(read_at(&volume_file(&mesh, &restored), 1500 * MIB, 29)? == b"written after the volume grew");
    ensure!(read_at(&volume_file(&mesh, &restored), 20 * MIB, change.len())? == change);
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn force_deleting_a_backup_being_made_cancels_it() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("cancel");
    let volume = new_volume(&mut client, &owner, "v", 1).await?;
    write_at(&volume_file(&mesh, &volume), 0, &random_bytes(81, (256 * MIB) as usize))?;
    let request = CreateBackupRequest { volume_id: volume.clone(), ..Default::default() };
    let backup = client.create_backup(owner.request(request)).await?.into_inner();
    let operator = admin("cancel");
    let delete = basalt::proto::DeleteBackupRequest { backup_id: backup.id.clone(), force: true };
    client.delete_backup(operator.request(delete)).await?;
    // Cancelled mid-way or finished first, the backup ends gone and the volume free again.
    eventually("the cancelled backup is gone", || {
        let mut client = client.clone();
        let owner = owner.clone();
        let backup_id = backup.id.clone();
        async move {
            let found = client.get_backup(owner.request(GetBackupRequest { backup_id })).await;
            Ok(matches!(found, Err(status) if status.code() == tonic::Code::NotFound))
        }
    })
    .await?;
    wait_for_status(&mut client, &owner, &volume, VolumeStatus::Available).await?;
    let manifest = mesh.backup_store_dir().join(format!("projects/cancel/backups/{}.json", backup.id));
    ensure!(!manifest.exists(), "no manifest is left of a cancelled backup");
    // The project can back up again, and its next delete sweeps what the cancelled one wrote.
    let next = back_up(&mut client, &owner, &volume, false).await?;
    client
        .delete_backup(owner.request(basalt::proto::DeleteBackupRequest { backup_id: next.id, force: false }))
        .await?;
    let chunks = mesh.backup_store_dir().join("projects/cancel/chunks");
    eventually("every chunk is swept", || {
        let chunks = chunks.clone();
        async move {
            let left = std::fs::read_dir(&chunks)
                .map(|dirs| dirs.flatten().filter_map(|dir| std::fs::read_dir(dir.path()).ok()).flatten().count())
                .unwrap_or(0);
            Ok(left == 0)
        }
    })
    .await?;
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_in_use_volume_is_backed_up_only_with_force() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("in-use");
    let volume = new_volume(&mut client, &owner, "attached", 1).await?;
    write_at(&volume_file(&mesh, &volume), MIB, b"written while attached")?;
    let reserve = ChangeAttachStateRequest { volume_id: volume.clone(), change: AttachStateChange::Reserve as i32 };
    client.change_attach_state(owner.request(reserve)).await?;
    let attach = AttachVolumeRequest {
        volume_id: volume.clone(),
        instance_id: "11111111-2222-3333-4444-555555555555".into(),
        mountpoint: "/dev/vdb".into(),
        ..Default::default()
    };
    client.attach_volume(owner.request(attach)).await?;
    wait_for_status(&mut client, &owner, &volume, VolumeStatus::InUse).await?;

    let request = CreateBackupRequest { volume_id: volume.clone(), ..Default::default() };
    let refused = client.create_backup(owner.request(request)).await.unwrap_err();
    ensure!(refused.message().contains("pass force"), "{refused:?}");
    let request = CreateBackupRequest { volume_id: volume.clone(), force: true, ..Default::default() };
    let backup = client.create_backup(owner.request(request)).await?.into_inner();
    let backup = wait_for_backup(&mut client, &owner, &backup.id).await?;
    wait_for_status(&mut client, &owner, &volume, VolumeStatus::InUse).await?;
    let leftovers: Vec<_> = std::fs::read_dir(mesh.node_dir("node-0"))?
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("snapshot-"))
        .collect();
    ensure!(leftovers.is_empty(), "the temporary snapshot is removed: {leftovers:?}");
    let restored = restore(&mut client, &owner, &backup.id, "").await?;
    ensure!(read_at(&volume_file(&mesh, &restored), MIB, 22)? == b"written while attached");
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_store_fails_the_restore_instead_of_writing_wrong_bytes() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("damaged");
    let volume = new_volume(&mut client, &owner, "v", 1).await?;
    write_at(&volume_file(&mesh, &volume), 0, &pattern(41, (8 * MIB) as usize))?;
    let backup = back_up(&mut client, &owner, &volume, false).await?;
    let chunks = mesh.backup_store_dir().join("projects").join(owner.project_id.as_str()).join("chunks");
    let chunk = std::fs::read_dir(std::fs::read_dir(&chunks)?.next().context("a chunk dir")??.path())?
        .next()
        .context("a chunk")??
        .path();
    let mut bytes = std::fs::read(&chunk)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&chunk, bytes)?;

    let target = new_volume(&mut client, &owner, "target", 1).await?;
    let request =
        RestoreBackupRequest { backup_id: backup.id.clone(), volume_id: target.clone(), ..Default::default() };
    client.restore_backup(owner.request(request)).await?;
    wait_for_status(&mut client, &owner, &target, VolumeStatus::ErrorRestoring).await?;
    let failed = client.get_volume(owner.request(GetVolumeRequest { volume_id: target.clone() })).await?.into_inner();
    ensure!(
        failed.error_reason.contains("cannot be restored exactly") && failed.error_reason.contains("damaged"),
        "{}",
        failed.error_reason
    );
    ensure!(wait_for_backup(&mut client, &owner, &backup.id).await?.status() == BackupStatus::Available);
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restores_from_the_store_alone_into_a_new_deployment() -> Result<()> {
    let first = InProcessMesh::start(1).await?;
    let mut client = volume_client(&first.grpc_addr).await?;
    let owner = project("moved");
    let volume = new_volume(&mut client, &owner, "v", 1).await?;
    let data = pattern(51, (6 * MIB) as usize);
    write_at(&volume_file(&first, &volume), 7 * MIB, &data)?;
    let backup = back_up(&mut client, &owner, &volume, false).await?;
    let operator = admin("moved");
    let record = client
        .export_backup_record(operator.request(GetBackupRequest { backup_id: backup.id.clone() }))
        .await?
        .into_inner();
    let store = first.backup_store_dir();

    // A new deployment: a new database, its own node, the same backup store.
    let mut second = InProcessMesh::start(0).await?;
    second
        .add_node_with("node-0", |config| {
            config.backup_store = Some(basalt_volume_node::BackupStoreSettings::Posix(store.clone()))
        })
        .await?;
    let mut client = volume_client(&second.grpc_addr).await?;
    let imported = client.import_backup_record(operator.request(record.clone())).await?.into_inner();
    ensure!(imported.id == backup.id && imported.status() == BackupStatus::Available, "{imported:?}");
    let again = client.import_backup_record(operator.request(record)).await.unwrap_err();
    ensure!(again.code() == tonic::Code::AlreadyExists, "{again:?}");
    let restored = restore(&mut client, &owner, &backup.id, "").await?;
    ensure!(read_at(&volume_file(&second, &restored), 7 * MIB, data.len())? == data);
    second.shutdown().await;
    first.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_is_created_from_a_backup() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("from-backup");
    let source = new_volume(&mut client, &owner, "source", 1).await?;
    let data = pattern(61, (2 * MIB) as usize);
    write_at(&volume_file(&mesh, &source), 11 * MIB, &data)?;
    let backup = back_up(&mut client, &owner, &source, false).await?;

    let default_size = CreateVolumeRequest { backup_id: backup.id.clone(), size_gib: 0, ..Default::default() };
    let created = client.create_volume(owner.request(default_size)).await?.into_inner();
    ensure!(created.size_gib == 1, "the size defaults to the backup's: {created:?}");
    wait_for_status(&mut client, &owner, &created.id, VolumeStatus::Available).await?;
    ensure!(read_at(&volume_file(&mesh, &created.id), 11 * MIB, data.len())? == data);
    ensure!(wait_for_backup(&mut client, &owner, &backup.id).await?.status() == BackupStatus::Available);

    let larger = CreateVolumeRequest { backup_id: backup.id.clone(), size_gib: 3, ..Default::default() };
    let larger = client.create_volume(owner.request(larger)).await?.into_inner();
    wait_for_status(&mut client, &owner, &larger.id, VolumeStatus::Available).await?;
    ensure!(read_at(&volume_file(&mesh, &larger.id), 11 * MIB, data.len())? == data);
    let both =
        CreateVolumeRequest { backup_id: backup.id.clone(), source_volume_id: source.clone(), ..Default::default() };
    let refused = client.create_volume(owner.request(both)).await.unwrap_err();
    ensure!(refused.code() == tonic::Code::InvalidArgument, "{refused:?}");
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_count_against_the_backup_quotas() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("quota");
    let limits = basalt::proto::UpdateQuotasRequest {
        project_id: project_id("quota"),
        limits: [("backups".into(), 1), ("backup_gigabytes".into(), 10)].into(),
        ..Default::default()
    };
    client.update_quotas(admin("ops").request(limits)).await?;
    let volume = new_volume(&mut client, &owner, "v", 1).await?;
    let first = back_up(&mut client, &owner, &volume, false).await?;
    let request = CreateBackupRequest { volume_id: volume.clone(), ..Default::default() };
    let refused = client.create_backup(owner.request(request)).await.unwrap_err();
    ensure!(refused.code() == tonic::Code::ResourceExhausted && refused.message().contains("backups"), "{refused:?}");
    ensure!(
        wait_for_status(&mut client, &owner, &volume, VolumeStatus::Available).await.is_ok(),
        "a refused backup leaves the volume as it was"
    );

    let delete = basalt::proto::DeleteBackupRequest { backup_id: first.id.clone(), force: false };
    client.delete_backup(owner.request(delete)).await?;
    eventually("the backup is deleted and its quota returned", || {
        let mut client = client.clone();
        let owner = owner.clone();
        let volume = volume.clone();
        async move {
            let request = CreateBackupRequest { volume_id: volume, ..Default::default() };
            Ok(client.create_backup(owner.request(request)).await.is_ok())
        }
    })
    .await?;
    mesh.shutdown().await;
    Ok(())
}

/// The data-loss report: project `.` deleting one of its backups swept `projects/./chunks`, the
/// store of the project named `chunks`. Such ids are refused at the edges now (see
/// `hostile_input.rs`); this checks the property itself: two projects back up the same bytes
/// (so their chunks have the same names), one deletes its backup, the other's restores intact.
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_in_one_project_never_touches_another_projects_backups() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let victim = project("chunks");
    let deleter = project("deleter");
    let shared = random_bytes(7, (9 * MIB) as usize);
    let own = random_bytes(8, MIB as usize);
    let victim_volume = new_volume(&mut client, &victim, "victim", 1).await?;
    write_at(&volume_file(&mesh, &victim_volume), 0, &shared)?;
    write_at(&volume_file(&mesh, &victim_volume), 100 * MIB, &own)?;
    let deleter_volume = new_volume(&mut client, &deleter, "deleter", 1).await?;
    write_at(&volume_file(&mesh, &deleter_volume), 0, &shared)?;
    let kept = back_up(&mut client, &victim, &victim_volume, false).await?;
    let doomed = back_up(&mut client, &deleter, &deleter_volume, false).await?;

    let request = basalt::proto::DeleteBackupRequest { backup_id: doomed.id.clone(), force: false };
    client.delete_backup(deleter.request(request)).await?;
    eventually("the deleted backup is gone", || {
        let mut client = client.clone();
        let request = GetBackupRequest { backup_id: doomed.id.clone() };
        let deleter = deleter.clone();
        async move { Ok(client.get_backup(deleter.request(request)).await.is_err()) }
    })
    .await?;
    let swept = mesh.backup_store_dir().join("projects").join(deleter.project_id.as_str()).join("chunks");
    let left: usize = std::fs::read_dir(&swept)
        .map_or(0, |dirs| dirs.flatten().map(|dir| std::fs::read_dir(dir.path()).map_or(0, Iterator::count)).sum());
    ensure!(left == 0, "the deleter's own chunks are swept ({left} left)");

    let fresh = restore(&mut client, &victim, &kept.id, "").await?;
    ensure!(read_at(&volume_file(&mesh, &fresh), 0, shared.len())? == shared, "the shared bytes restore intact");
    ensure!(
        read_at(&volume_file(&mesh, &fresh), 100 * MIB, own.len())? == own,
        "the victim's own bytes restore intact"
    );
    let shown = client.get_backup(victim.request(GetBackupRequest { backup_id: kept.id.clone() })).await?.into_inner();
    ensure!(shown.status() == BackupStatus::Available && shown.fail_reason.is_empty(), "{shown:?}");
    mesh.shutdown().await;
    Ok(())
}

/// Backup listings page, sort and count as volume listings do (REST, as clients call them).
#[tokio::test(flavor = "multi_thread")]
async fn backup_listings_page_and_sort() -> Result<()> {
    use axum::http::Method;
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("paged");
    let volume = new_volume(&mut client, &owner, "paged", 1).await?;
    for name in ["b", "c", "a"] {
        let request = CreateBackupRequest { volume_id: volume.clone(), name: name.into(), ..Default::default() };
        let backup = client.create_backup(owner.request(request)).await?.into_inner();
        wait_for_backup(&mut client, &owner, &backup.id).await?;
    }
    let token = format!("admin:{}", owner.project_id);
    let base = format!("/v3/{}/backups", owner.project_id);
    let names = |body: &serde_json::Value| -> Vec<String> {
        body["backups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| b["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let sorted = api.call(Method::GET, &format!("{base}/detail?sort=name:asc"), Some(&token), None, None).await?;
    ensure!(names(&sorted.body) == ["a", "b", "c"], "{:?}", sorted.body);
    let first = api.call(Method::GET, &format!("{base}?sort=name:asc&limit=2"), Some(&token), None, None).await?;
    ensure!(names(&first.body) == ["a", "b"], "{:?}", first.body);
    let next = first.body["backups_links"][0]["href"].as_str().context("a next link")?;
    let marker = next.split("marker=").nth(1).context("a marker")?;
    let second = api
        .call(Method::GET, &format!("{base}?sort=name:asc&limit=2&marker={marker}"), Some(&token), None, None)
        .await?;
    ensure!(names(&second.body) == ["c"] && second.body.get("backups_links").is_none(), "{:?}", second.body);
    let offset =
        api.call(Method::GET, &format!("{base}?sort=name:desc&offset=1&limit=1"), Some(&token), None, None).await?;
    ensure!(names(&offset.body) == ["b"], "{:?}", offset.body);
    let counted = api
        .call(Method::GET, &format!("{base}/detail?with_count=true&limit=1"), Some(&token), Some("3.45"), None)
        .await?;
    ensure!(counted.body["count"] == 3, "{:?}", counted.body);
    mesh.shutdown().await;
    Ok(())
}
