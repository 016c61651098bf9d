//! Crash tests: SIGKILL the scheduler, or a volume node, in the middle of creates, clones,
//! snapshots, extends and deletes; restart it; within a bounded time nothing is left in a
//! transitional status, no backend file is orphaned and no volume is lost.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use basalt::channel::Channel;
use basalt::proto::{
    CreateSnapshotRequest, CreateVolumeRequest, DeleteVolumeRequest, ExtendVolumeRequest, ListSnapshotsRequest,
    ListVolumesRequest, Snapshot, SnapshotStatus, Volume, VolumeStatus, volume_service_client::VolumeServiceClient,
};
use basalt_integration::*;

const MIB: u64 = 1 << 20;
/// Enough data that copies take a while, so the kill lands while they run.
const DATA_MIB: u64 = 256;

async fn everything(client: &mut VolumeServiceClient<Channel>) -> Result<(Vec<Volume>, Vec<Snapshot>)> {
    let ops = admin("ops");
    let volumes = client
        .list_volumes(ops.request(ListVolumesRequest { all_projects: true, ..Default::default() }))
        .await?
        .into_inner()
        .volumes;
    let snapshots = client
        .list_snapshots(ops.request(ListSnapshotsRequest { all_projects: true, ..Default::default() }))
        .await?
        .into_inner()
        .snapshots;
    Ok((volumes, snapshots))
}

/// Waits until no volume or snapshot is in a transitional status.
async fn wait_until_settled(grpc: &str) -> Result<()> {
    let client = volume_client(grpc).await?;
    eventually("every operation has finished", || {
        let mut client = client.clone();
        async move {
            let (volumes, snapshots) = everything(&mut client).await?;
            let busy_volume = volumes.iter().any(|volume| {
                matches!(
                    volume.status(),
                    VolumeStatus::Creating | VolumeStatus::Deleting | VolumeStatus::Extending | VolumeStatus::Reverting
                )
            });
            let busy_snapshot = snapshots.iter().any(|snapshot| {
                matches!(
                    snapshot.status(),
                    SnapshotStatus::Creating | SnapshotStatus::Deleting | SnapshotStatus::Restoring
                )
            });
            Ok(!busy_volume && !busy_snapshot)
        }
    })
    .await
}

/// Every row has its file and every file its row: nothing lost, nothing orphaned.
async fn assert_storage_matches_records(mesh: &ProcessMesh, grpc: &str) -> Result<(Vec<Volume>, Vec<Snapshot>)> {
    let mut client = volume_client(grpc).await?;
    let (volumes, snapshots) = everything(&mut client).await?;
    for volume in &volumes {
        ensure!(
            volume.status() == VolumeStatus::Available,
            "volume {} settled in {:?}: {}",
            volume.id,
            volume.status(),
            volume.error_reason
        );
        let node = mesh.node_index(&volume.pool.clone().context("placed")?.node_id);
        let file = mesh.node_dir(node).join(format!("volume-{}", volume.id));
        let size = std::fs::metadata(&file).with_context(|| format!("volume {} lost its file", volume.id))?.len();
        ensure!(
            size == volume.size_gib * GIB,
            "volume {} is {} GiB but its file {} bytes",
            volume.id,
            volume.size_gib,
            size
        );
    }
    for snapshot in &snapshots {
        ensure!(
            snapshot.status() == SnapshotStatus::Available,
            "snapshot {} settled in {:?}",
            snapshot.id,
            snapshot.status()
        );
    }
    let expected: BTreeSet<String> = volumes
        .iter()
        .map(|volume| format!("volume-{}", volume.id))
        .chain(snapshots.iter().map(|snapshot| format!("snapshot-{}", snapshot.id)))
        .collect();
    let stored: BTreeSet<String> = mesh.stored_files()?.into_iter().collect();
    ensure!(stored == expected, "files and records differ:\n stored   {stored:?}\n recorded {expected:?}");
    Ok((volumes, snapshots))
}

/// A volume holding `DATA_MIB` of a known pattern; returns it with its node index.
async fn volume_with_data(
    mesh: &ProcessMesh,
    client: &mut VolumeServiceClient<Channel>,
    name: &str,
) -> Result<(Volume, usize)> {
    let owner = project("crash");
    let created = client
        .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, name: name.into(), ..Default::default() }))
        .await?
        .into_inner();
    let volume = wait_for_status(client, &owner, &created.id, VolumeStatus::Available).await?;
    let node = mesh.node_index(&volume.pool.clone().context("placed")?.node_id);
    let file = mesh.node_dir(node).join(format!("volume-{}", volume.id));
    let chunk = pattern(7, MIB as usize);
    for index in 0..DATA_MIB {
        write_at(&file, index * MIB, &chunk)?;
    }
    Ok((volume, node))
}

/// Starts copies of `source` and other work at once; returns the ids of the accepted creates.
async fn start_a_burst(
    client: &VolumeServiceClient<Channel>,
    source: &Volume,
    extend: &Volume,
    delete: &Volume,
) -> Result<Vec<String>> {
    let owner = project("crash");
    let mut calls = Vec::new();
    for index in 0..3 {
        let mut client = client.clone();
        let request = owner.request(CreateSnapshotRequest {
            volume_id: source.id.clone(),
            name: format!("s{index}"),
            ..Default::default()
        });
        calls.push(tokio::spawn(
            async move { client.create_snapshot(request).await.map(|reply| reply.into_inner().id) },
        ));
    }
    for index in 0..2 {
        let mut client = client.clone();
        let request = owner.request(CreateVolumeRequest {
            source_volume_id: source.id.clone(),
            name: format!("clone{index}"),
            ..Default::default()
        });
        calls.push(tokio::spawn(async move { client.create_volume(request).await.map(|reply| reply.into_inner().id) }));
    }
    for index in 0..4 {
        let mut client = client.clone();
        let request =
            owner.request(CreateVolumeRequest { size_gib: 1, name: format!("empty{index}"), ..Default::default() });
        calls.push(tokio::spawn(async move { client.create_volume(request).await.map(|reply| reply.into_inner().id) }));
    }
    {
        let mut client = client.clone();
        let request = owner.request(ExtendVolumeRequest { volume_id: extend.id.clone(), new_size_gib: 3 });
        calls.push(tokio::spawn(async move { client.extend_volume(request).await.map(|reply| reply.into_inner().id) }));
    }
    {
        let mut client = client.clone();
        let request = owner.request(DeleteVolumeRequest { volume_id: delete.id.clone(), ..Default::default() });
        calls.push(tokio::spawn(async move { client.delete_volume(request).await.map(|reply| reply.into_inner().id) }));
    }
    let mut accepted = Vec::new();
    for call in calls {
        accepted.push(call.await??);
    }
    Ok(accepted)
}

async fn plain_volume(client: &mut VolumeServiceClient<Channel>, name: &str) -> Result<Volume> {
    let owner = project("crash");
    let created = client
        .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, name: name.into(), ..Default::default() }))
        .await?
        .into_inner();
    wait_for_status(client, &owner, &created.id, VolumeStatus::Available).await
}

async fn check_outcome(
    mesh: &ProcessMesh,
    grpc: &str,
    source: &Volume,
    extended: &Volume,
    deleted: &Volume,
    accepted: &[String],
) -> Result<()> {
    wait_until_settled(grpc).await?;
    let (volumes, snapshots) = assert_storage_matches_records(mesh, grpc).await?;
    let present: BTreeSet<&str> = volumes
        .iter()
        .map(|volume| volume.id.as_str())
        .chain(snapshots.iter().map(|snapshot| snapshot.id.as_str()))
        .collect();
    for id in accepted.iter().filter(|id| **id != deleted.id && **id != extended.id) {
        ensure!(present.contains(id.as_str()), "accepted create {id} was lost");
    }
    ensure!(!present.contains(deleted.id.as_str()), "the deleted volume came back");
    let grown = volumes.iter().find(|volume| volume.id == extended.id).context("the extended volume is kept")?;
    ensure!(grown.size_gib == 3, "the extend finished at {} GiB", grown.size_gib);
    // Every copy of the source holds its data.
    let source_node = mesh.node_index(&source.pool.clone().context("placed")?.node_id);
    let expected = pattern(7, MIB as usize);
    for volume in volumes.iter().filter(|volume| volume.source_volume_id == source.id) {
        let file = mesh.node_dir(source_node).join(format!("volume-{}", volume.id));
        ensure!(read_at(&file, (DATA_MIB - 1) * MIB, MIB as usize)? == expected, "clone {} lost data", volume.id);
    }
    for snapshot in &snapshots {
        let file = mesh.node_dir(source_node).join(format!("snapshot-{}", snapshot.id));
        ensure!(read_at(&file, 0, MIB as usize)? == expected, "snapshot {} lost data", snapshot.id);
    }
    Ok(())
}

#[tokio::test]
async fn killing_the_scheduler_mid_operation_loses_nothing() -> Result<()> {
    let mut mesh = ProcessMesh::start(None, 1, 3, &[])?;
    mesh.wait_for_nodes(0).await?;
    let mut client = volume_client(&mesh.scheduler_addr(0)).await?;
    let (source, _) = volume_with_data(&mesh, &mut client, "source").await?;
    let extend = plain_volume(&mut client, "to-extend").await?;
    let delete = plain_volume(&mut client, "to-delete").await?;

    let accepted = start_a_burst(&client, &source, &extend, &delete).await?;
    mesh.kill_scheduler(0);

    mesh.restart_scheduler(0)?;
    check_outcome(&mesh, &mesh.scheduler_addr(0), &source, &extend, &delete, &accepted).await
}

#[tokio::test]
async fn killing_a_volume_node_mid_operation_loses_nothing() -> Result<()> {
    let mut mesh = ProcessMesh::start(None, 1, 3, &[])?;
    mesh.wait_for_nodes(0).await?;
    let grpc = mesh.scheduler_addr(0);
    let mut client = volume_client(&grpc).await?;
    let (source, source_node) = volume_with_data(&mesh, &mut client, "source").await?;
    let extend = plain_volume(&mut client, "to-extend").await?;
    let delete = plain_volume(&mut client, "to-delete").await?;

    let accepted = start_a_burst(&client, &source, &extend, &delete).await?;
    mesh.kill_node(source_node);
    // The scheduler keeps retrying the node's operations; they finish once it is back.
    mesh.restart_node(source_node)?;
    check_outcome(&mesh, &grpc, &source, &extend, &delete, &accepted).await
}

#[tokio::test]
async fn killing_both_at_once_loses_nothing() -> Result<()> {
    let mut mesh = ProcessMesh::start(None, 1, 3, &[])?;
    mesh.wait_for_nodes(0).await?;
    let mut client = volume_client(&mesh.scheduler_addr(0)).await?;
    let (source, source_node) = volume_with_data(&mesh, &mut client, "source").await?;
    let extend = plain_volume(&mut client, "to-extend").await?;
    let delete = plain_volume(&mut client, "to-delete").await?;

    let accepted = start_a_burst(&client, &source, &extend, &delete).await?;
    mesh.kill_node(source_node);
    mesh.kill_scheduler(0);
    mesh.restart_scheduler(0)?;
    mesh.restart_node(source_node)?;
    check_outcome(&mesh, &mesh.scheduler_addr(0), &source, &extend, &delete, &accepted).await
}

/// The scheduler killed while a volume moves to another node (a retype with on-demand
/// migration): the restarted scheduler takes the move over from its journal, and the volume ends
/// on the new node, its bytes whole, the old copy removed, or (had it failed) where it was.
#[tokio::test]
async fn killing_the_scheduler_mid_migration_moves_the_volume_whole() -> Result<()> {
    use basalt::proto::{CreateVolumeTypeRequest, GetVolumeRequest, RetypeVolumeRequest};
    let store = tempfile::tempdir()?;
    let store = store.path().to_str().context("utf-8 temp dir")?.to_owned();
    let near: [&str; 4] = ["--backup-store-dir", &store, "--availability-zone", "nova"];
    let far: [&str; 4] = ["--backup-store-dir", &store, "--availability-zone", "far"];
    let mut mesh = ProcessMesh::start_with_node_args(None, 1, &[&near, &far])?;
    mesh.wait_for_nodes(0).await?;
    let mut client = volume_client(&mesh.scheduler_addr(0)).await?;
    let owner = project("crash");
    let far_type = CreateVolumeTypeRequest {
        name: "far".into(),
        extra_specs: [("RESKEY:availability_zones".to_owned(), "far".to_owned())].into(),
        ..Default::default()
    };
    client.create_volume_type(admin("ops").request(far_type)).await?;
    let created = CreateVolumeRequest {
        size_gib: 1,
        name: "mover".into(),
        availability_zone: "nova".into(),
        ..Default::default()
    };
    let created = client.create_volume(owner.request(created)).await?.into_inner();
    wait_for_status(&mut client, &owner, &created.id, VolumeStatus::Available).await?;
    let (old_file, new_file) = (
        mesh.node_dir(0).join(format!("volume-{}", created.id)),
        mesh.node_dir(1).join(format!("volume-{}", created.id)),
    );
    for index in 0..DATA_MIB {
        write_at(&old_file, index * MIB, &pattern(index as u8, MIB as usize))?;
    }

    let retype = RetypeVolumeRequest {
        volume_id: created.id.clone(),
        new_type: "far".into(),
        migration_policy: "on-demand".into(),
    };
    client.retype_volume(owner.request(retype)).await?;
    mesh.kill_scheduler(0);
    mesh.restart_scheduler(0)?;

    let mut client = volume_client(&mesh.scheduler_addr(0)).await?;
    let moved = wait_for_status(&mut client, &owner, &created.id, VolumeStatus::Available).await?;
    ensure!(moved.pool.as_ref().is_some_and(|pool| pool.node_id == "node-1"), "the volume stayed: {moved:?}");
    for index in 0..DATA_MIB {
        ensure!(read_at(&new_file, index * MIB, MIB as usize)? == pattern(index as u8, MIB as usize), "MiB {index}");
    }
    eventually("the old copy is removed", || {
        let gone = !old_file.exists();
        async move { Ok(gone) }
    })
    .await?;
    let shown = client.get_volume(owner.request(GetVolumeRequest { volume_id: created.id.clone() })).await?;
    ensure!(shown.into_inner().volume_type_name == "far");
    Ok(())
}

/// An attach whose node is down fails, and the volume does not stay reserved by the attachment
/// the failed call made: it is marked `error_attaching` and taken back as soon as the node can
/// revoke whatever it may have granted, by whichever scheduler runs then (here the one that made
/// it, killed and restarted in between).
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_attach_gives_its_reservation_back_once_the_node_returns() -> Result<()> {
    let mut mesh = ProcessMesh::start(None, 1, 1, &[])?;
    mesh.wait_for_nodes(0).await?;
    let grpc = mesh.scheduler_addr(0);
    let mut client = volume_client(&grpc).await?;
    let owner = project("take-back");
    let volume = client
        .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
        .await?
        .into_inner();
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;

    mesh.kill_node(0);
    let connector = basalt::proto::Connector {
        initiator: "iqn.2004-10.org.debian:take-back".into(),
        host: "take-back".into(),
        ..Default::default()
    };
    let request = basalt::proto::CreateAttachmentRequest {
        volume_id: volume.id.clone(),
        instance_id: "vm-take-back".into(),
        connector: Some(connector),
        ..Default::default()
    };
    let refused = client.create_attachment(owner.request(request)).await;
    ensure!(refused.is_err(), "an attach to a node that is down cannot succeed: {refused:?}");
    let list = || basalt::proto::ListAttachmentsRequest { volume_id: volume.id.clone(), ..Default::default() };
    let failed = client.list_attachments(owner.request(list())).await?.into_inner().attachments;
    ensure!(
        failed.len() == 1 && failed[0].status() == basalt::proto::AttachStatus::ErrorAttaching,
        "the failed attach is marked for its take-back: {failed:?}"
    );

    mesh.kill_scheduler(0);
    mesh.restart_scheduler(0)?;
    mesh.restart_node(0)?;
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;
    let listed = client.list_attachments(owner.request(list())).await?.into_inner().attachments;
    ensure!(listed.is_empty(), "the failed attach left {listed:?}");
    Ok(())
}

/// A volume or snapshot that a new volume is still being copied from cannot be deleted (its node
/// would find nothing to copy): the delete is refused until the copy is done, then succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_cannot_be_deleted_while_a_volume_is_copied_from_it() -> Result<()> {
    let mesh = ProcessMesh::start(None, 1, 1, &["--report-interval-ms", "5000"])?;
    mesh.wait_for_nodes(0).await?;
    let mut client = volume_client(&mesh.scheduler_addr(0)).await?;
    let owner = project("copy-source");
    let source = client
        .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
        .await?
        .into_inner();
    wait_for_status(&mut client, &owner, &source.id, VolumeStatus::Available).await?;
    let snapshot = client
        .create_snapshot(owner.request(CreateSnapshotRequest { volume_id: source.id.clone(), ..Default::default() }))
        .await?
        .into_inner();
    wait_for_snapshot(&mut client, &owner, &snapshot.id, SnapshotStatus::Available).await?;

    // The node holds still, so both copies stay `creating`.
    let node = mesh.nodes[0].as_ref().context("node")?.pid().to_string();
    let signal = |name: &str| std::process::Command::new("kill").args([name, &node]).status();
    ensure!(signal("-STOP")?.success());
    let clone = client
        .create_volume(owner.request(CreateVolumeRequest {
            size_gib: 1,
            source_volume_id: source.id.clone(),
            ..Default::default()
        }))
        .await;
    let from_snapshot = client
        .create_volume(owner.request(CreateVolumeRequest {
            size_gib: 1,
            snapshot_id: snapshot.id.clone(),
            ..Default::default()
        }))
        .await;
    let refused_snapshot = client
        .delete_snapshot(
            owner.request(basalt::proto::DeleteSnapshotRequest { snapshot_id: snapshot.id.clone(), force: false }),
        )
        .await;
    let delete_source = || DeleteVolumeRequest { volume_id: source.id.clone(), cascade: true, ..Default::default() };
    let refused_volume = client.delete_volume(owner.request(delete_source())).await;
    ensure!(signal("-CONT")?.success());
    let (clone, from_snapshot) = (clone?.into_inner(), from_snapshot?.into_inner());
    expect_refusal(refused_snapshot, tonic::Code::FailedPrecondition, "is being copied into 1 new volume(s)");
    expect_refusal(refused_volume, tonic::Code::FailedPrecondition, "is being copied into 1 new volume(s)");

    wait_for_status(&mut client, &owner, &clone.id, VolumeStatus::Available).await?;
    wait_for_status(&mut client, &owner, &from_snapshot.id, VolumeStatus::Available).await?;
    client.delete_volume(owner.request(delete_source())).await?;
    wait_until_gone(&mut client, &owner, &source.id).await?;
    Ok(())
}
