//! The volume lifecycle over gRPC against three volume nodes: every transition and every refusal,
//! with the exact gRPC code and a message that says what is allowed.

use std::collections::HashSet;

use anyhow::{Context, Result};
use basalt::proto::{
    CreateSnapshotRequest, CreateVolumeRequest, CreateVolumeTypeRequest, DeleteSnapshotRequest, DeleteVolumeRequest,
    DeleteVolumeTypeRequest, ExtendVolumeRequest, GetQuotasRequest, GetVolumeRequest, GetVolumeTypeRequest,
    ListAvailabilityZonesRequest, ListSnapshotsRequest, ListVolumesRequest, MetadataUpdate, PageRequest,
    ResetVolumeStatusRequest, RevertVolumeRequest, SetVolumeTypeExtraSpecsRequest, SnapshotStatus, SortKey,
    UpdateQuotasRequest, UpdateVolumeRequest, VolumeStatus, VolumeTypeAccessRequest,
};
use basalt_integration::*;
use futures::StreamExt;
use tonic::Code;

const MIB: u64 = 1 << 20;

fn create(size_gib: u64, name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest { size_gib, name: name.into(), ..Default::default() }
}

#[tokio::test]
async fn every_volume_and_snapshot_transition_over_three_nodes() -> Result<()> {
    let mesh = InProcessMesh::start(3).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("lifecycle");
    let mut events = mesh.bus.subscribe_events().await?;

    // creating -> available, spread over the three nodes by the capacity weigher.
    let mut volumes = Vec::new();
    for index in 0..3 {
        let created = client.create_volume(owner.request(create(1, &format!("v{index}")))).await?.into_inner();
        assert_eq!(created.status(), VolumeStatus::Creating);
        volumes.push(wait_for_status(&mut client, &owner, &created.id, VolumeStatus::Available).await?);
    }
    let nodes: HashSet<String> = volumes.iter().map(|volume| volume.pool.clone().unwrap().node_id).collect();
    assert_eq!(nodes.len(), 3, "three volumes on three idle nodes land on three nodes");
    assert_eq!(volumes[0].volume_type_name, "__DEFAULT__");
    let first = volumes[0].clone();
    let first_node = first.pool.clone().unwrap().node_id;
    let first_file = mesh.node_dir(&first_node).join(format!("volume-{}", first.id));

    // Status events follow the transitions.
    let event = events.next().await.context("an event")?;
    assert_eq!(
        (event.resource_kind.as_str(), event.from_status.as_str(), event.to_status.as_str()),
        ("volume", "", "creating")
    );
    let mut seen_available = false;
    while let Some(event) = tokio::time::timeout(WAIT, events.next()).await? {
        if event.resource_id == first.id && event.from_status == "creating" && event.to_status == "available" {
            seen_available = true;
            break;
        }
    }
    assert!(seen_available, "creating -> available was published");

    // Update: name, description, metadata.
    let updated = client
        .update_volume(owner.request(UpdateVolumeRequest {
            volume_id: first.id.clone(),
            name: Some("renamed".into()),
            description: Some("about it".into()),
            metadata: Some(MetadataUpdate { items: [("tier".to_owned(), "gold".to_owned())].into() }),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!((updated.name.as_str(), updated.description.as_str()), ("renamed", "about it"));
    assert_eq!(updated.metadata.get("tier").map(String::as_str), Some("gold"));

    // Extend: available -> extending -> available; only growth is allowed.
    let refused =
        client.extend_volume(owner.request(ExtendVolumeRequest { volume_id: first.id.clone(), new_size_gib: 1 })).await;
    expect_refusal(refused, Code::InvalidArgument, "must be larger than the current 1 GiB");
    client.extend_volume(owner.request(ExtendVolumeRequest { volume_id: first.id.clone(), new_size_gib: 2 })).await?;
    let extended = wait_for_status(&mut client, &owner, &first.id, VolumeStatus::Available).await?;
    assert_eq!(extended.size_gib, 2);
    assert_eq!(std::fs::metadata(&first_file)?.len(), 2 * GIB);

    // Snapshot: the bytes at snapshot time are kept.
    write_at(&first_file, 5 * MIB, &pattern(1, 4096))?;
    let snapshot = client
        .create_snapshot(owner.request(CreateSnapshotRequest {
            volume_id: first.id.clone(),
            name: "s1".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(snapshot.status(), SnapshotStatus::Creating);
    let snapshot = wait_for_snapshot(&mut client, &owner, &snapshot.id, SnapshotStatus::Available).await?;
    assert_eq!((snapshot.size_gib, snapshot.progress), (2, 100));
    assert!(mesh.node_dir(&first_node).join(format!("snapshot-{}", snapshot.id)).exists());
    write_at(&first_file, 5 * MIB, &pattern(2, 4096))?;

    // Refusals around snapshots.
    let missing = client
        .create_snapshot(
            owner.request(CreateSnapshotRequest { volume_id: uuid::Uuid::new_v4().to_string(), ..Default::default() }),
        )
        .await;
    expect_refusal(missing, Code::NotFound, "not found");
    let with_snapshots = client
        .delete_volume(owner.request(DeleteVolumeRequest { volume_id: first.id.clone(), ..Default::default() }))
        .await;
    expect_refusal(
        with_snapshots,
        Code::FailedPrecondition,
        "has 1 snapshots; delete them first, or delete with cascade",
    );

    // A volume from the snapshot: larger, on the snapshot's node, with the snapshot's bytes.
    let small = client
        .create_volume(owner.request(CreateVolumeRequest {
            size_gib: 1,
            snapshot_id: snapshot.id.clone(),
            ..Default::default()
        }))
        .await;
    expect_refusal(small, Code::InvalidArgument, "must be at least 2 GiB");
    let restored = client
        .create_volume(owner.request(CreateVolumeRequest {
            size_gib: 3,
            snapshot_id: snapshot.id.clone(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let restored = wait_for_status(&mut client, &owner, &restored.id, VolumeStatus::Available).await?;
    assert_eq!(restored.pool.clone().unwrap().node_id, first_node);
    assert_eq!((restored.size_gib, restored.snapshot_id.as_str()), (3, snapshot.id.as_str()));
    let restored_file = mesh.node_dir(&first_node).join(format!("volume-{}", restored.id));
    assert_eq!(read_at(&restored_file, 5 * MIB, 4096)?, pattern(1, 4096));

    // A clone of the volume, with the bytes it has now; its size defaults to the source's.
    let clone = client
        .create_volume(owner.request(CreateVolumeRequest { source_volume_id: first.id.clone(), ..Default::default() }))
        .await?
        .into_inner();
    let clone = wait_for_status(&mut client, &owner, &clone.id, VolumeStatus::Available).await?;
    assert_eq!((clone.size_gib, clone.source_volume_id.as_str()), (2, first.id.as_str()));
    let clone_file = mesh.node_dir(&first_node).join(format!("volume-{}", clone.id));
    assert_eq!(read_at(&clone_file, 5 * MIB, 4096)?, pattern(2, 4096));

    // Revert: only to the latest snapshot.
    let second = client
        .create_snapshot(owner.request(CreateSnapshotRequest {
            volume_id: first.id.clone(),
            name: "s2".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    wait_for_snapshot(&mut client, &owner, &second.id, SnapshotStatus::Available).await?;
    let not_latest = client
        .revert_volume_to_snapshot(
            owner.request(RevertVolumeRequest { volume_id: first.id.clone(), snapshot_id: snapshot.id.clone() }),
        )
        .await;
    expect_refusal(not_latest, Code::InvalidArgument, "only be reverted to its latest snapshot");
    write_at(&first_file, 5 * MIB, &pattern(3, 4096))?;
    client
        .revert_volume_to_snapshot(
            owner.request(RevertVolumeRequest { volume_id: first.id.clone(), snapshot_id: second.id.clone() }),
        )
        .await?;
    wait_for_status(&mut client, &owner, &first.id, VolumeStatus::Available).await?;
    wait_for_snapshot(&mut client, &owner, &second.id, SnapshotStatus::Available).await?;
    assert_eq!(read_at(&first_file, 5 * MIB, 4096)?, pattern(2, 4096), "reverted to the second snapshot's bytes");

    // Admin-only actions and wrong statuses.
    let not_admin = client
        .reset_volume_status(owner.request(ResetVolumeStatusRequest {
            volume_id: first.id.clone(),
            status: VolumeStatus::Error as i32,
            ..Default::default()
        }))
        .await;
    expect_refusal(not_admin, Code::PermissionDenied, "volume_extension:volume_admin_actions:reset_status");
    let ops = admin("ops");
    let fake_operation = client
        .reset_volume_status(ops.request(ResetVolumeStatusRequest {
            volume_id: first.id.clone(),
            status: VolumeStatus::Deleting as i32,
            ..Default::default()
        }))
        .await;
    expect_refusal(fake_operation, Code::InvalidArgument, "can be reset to available, error");
    client
        .reset_volume_status(ops.request(ResetVolumeStatusRequest {
            volume_id: first.id.clone(),
            status: VolumeStatus::Error as i32,
            ..Default::default()
        }))
        .await?;
    let wrong_status =
        client.extend_volume(owner.request(ExtendVolumeRequest { volume_id: first.id.clone(), new_size_gib: 5 })).await;
    expect_refusal(wrong_status, Code::FailedPrecondition, "is error; extending needs it to be available");
    let wrong_status = client
        .create_snapshot(owner.request(CreateSnapshotRequest { volume_id: first.id.clone(), ..Default::default() }))
        .await;
    expect_refusal(wrong_status, Code::FailedPrecondition, "a snapshot needs it to be available");
    let force = client
        .delete_volume(owner.request(DeleteVolumeRequest {
            volume_id: first.id.clone(),
            force: true,
            ..Default::default()
        }))
        .await;
    expect_refusal(force, Code::PermissionDenied, "Policy doesn't allow volume:force_delete to be performed");

    // Listing: filters, sort, pagination.
    let page = client
        .list_volumes(owner.request(ListVolumesRequest {
            page: Some(PageRequest { limit: 2, ..Default::default() }),
            sort: vec![SortKey { key: "name".into(), descending: false }],
            with_count: true,
            ..Default::default()
        }))
        .await?
        .into_inner();
    let info = page.page.clone().unwrap();
    assert_eq!((page.volumes.len(), info.total_count), (2, Some(5)));
    let rest = client
        .list_volumes(owner.request(ListVolumesRequest {
            page: Some(PageRequest { marker: info.next_marker.clone(), ..Default::default() }),
            sort: vec![SortKey { key: "name".into(), descending: false }],
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(rest.volumes.len(), 3);
    let errors = client
        .list_volumes(owner.request(ListVolumesRequest { status: VolumeStatus::Error as i32, ..Default::default() }))
        .await?
        .into_inner();
    assert_eq!(errors.volumes.iter().map(|volume| volume.id.as_str()).collect::<Vec<_>>(), [first.id.as_str()]);
    let tagged =
        client
            .list_volumes(owner.request(ListVolumesRequest {
                metadata: [("tier".into(), "gold".into())].into(),
                ..Default::default()
            }))
            .await?
            .into_inner();
    assert_eq!(tagged.volumes.len(), 1);
    expect_refusal(
        client
            .list_volumes(owner.request(ListVolumesRequest {
                sort: vec![SortKey { key: "secret".into(), descending: false }],
                ..Default::default()
            }))
            .await,
        Code::InvalidArgument,
        "use created_at, updated_at, name, size, status or id",
    );

    // Cascade delete by an admin's force: the volume in error and both its snapshots go.
    client
        .delete_volume(ops.request(DeleteVolumeRequest { volume_id: first.id.clone(), force: true, cascade: true }))
        .await?;
    wait_until_gone(&mut client, &owner, &first.id).await?;
    let snapshots = client
        .list_snapshots(owner.request(ListSnapshotsRequest { volume_id: first.id.clone(), ..Default::default() }))
        .await?
        .into_inner();
    assert!(snapshots.snapshots.is_empty(), "cascade removed the snapshots");
    assert!(!first_file.exists());

    // Everything else goes; usage returns to zero, so it never drifted.
    for volume in [&volumes[1], &volumes[2], &restored, &clone] {
        client
            .delete_volume(owner.request(DeleteVolumeRequest { volume_id: volume.id.clone(), ..Default::default() }))
            .await?;
        wait_until_gone(&mut client, &owner, &volume.id).await?;
    }
    let quotas = client.get_quotas(owner.request(GetQuotasRequest::default())).await?.into_inner();
    for resource in ["volumes", "gigabytes", "snapshots"] {
        assert_eq!(quotas.quotas[resource].in_use, 0, "{resource} usage drifted");
    }
    for node in ["node-0", "node-1", "node-2"] {
        let left: Vec<_> = std::fs::read_dir(mesh.node_dir(node))?.collect();
        assert!(left.is_empty(), "{node} still holds {left:?}");
    }
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn quotas_refuse_what_would_exceed_them() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("quota");
    let ops = admin("ops");
    let not_admin = client
        .update_quotas(owner.request(UpdateQuotasRequest {
            project_id: project_id("quota"),
            limits: [("volumes".into(), 5)].into(),
            ..Default::default()
        }))
        .await;
    expect_refusal(not_admin, Code::PermissionDenied, "volume_extension:quotas:update");
    client
        .update_quotas(ops.request(UpdateQuotasRequest {
            project_id: project_id("quota"),
            limits: [("volumes".into(), 2), ("gigabytes".into(), 5), ("per_volume_gigabytes".into(), 4)].into(),
            ..Default::default()
        }))
        .await?;
    let too_big = client.create_volume(owner.request(create(5, "big"))).await;
    expect_refusal(too_big, Code::ResourceExhausted, "exceeds the per-volume quota of 4 GiB");
    let a = client.create_volume(owner.request(create(3, "a"))).await?.into_inner();
    let over_gigabytes = client.create_volume(owner.request(create(3, "b"))).await;
    expect_refusal(
        over_gigabytes,
        Code::ResourceExhausted,
        "quota exceeded for gigabytes: this needs 3, the project uses 3 of 5",
    );
    client.create_volume(owner.request(create(1, "b"))).await?;
    let over_count = client.create_volume(owner.request(create(1, "c"))).await;
    expect_refusal(over_count, Code::ResourceExhausted, "quota exceeded for volumes");
    let lower = client
        .update_quotas(ops.request(UpdateQuotasRequest {
            project_id: project_id("quota"),
            limits: [("volumes".into(), 1)].into(),
            ..Default::default()
        }))
        .await;
    expect_refusal(lower, Code::InvalidArgument, "already uses 2");
    let unknown = client
        .update_quotas(ops.request(UpdateQuotasRequest {
            project_id: project_id("quota"),
            limits: [("cores".into(), 1)].into(),
            ..Default::default()
        }))
        .await;
    expect_refusal(unknown, Code::InvalidArgument, "unknown quota \"cores\"");
    wait_for_status(&mut client, &owner, &a.id, VolumeStatus::Available).await?;
    let over_per_volume =
        client.extend_volume(owner.request(ExtendVolumeRequest { volume_id: a.id.clone(), new_size_gib: 5 })).await;
    expect_refusal(over_per_volume, Code::ResourceExhausted, "exceeds the per-volume quota of 4 GiB");
    client.extend_volume(owner.request(ExtendVolumeRequest { volume_id: a.id.clone(), new_size_gib: 4 })).await?;
    wait_for_status(&mut client, &owner, &a.id, VolumeStatus::Available).await?;
    let refused_snapshot_quota = client
        .update_quotas(ops.request(UpdateQuotasRequest {
            project_id: project_id("quota"),
            limits: [("snapshots".into(), 0)].into(),
            ..Default::default()
        }))
        .await;
    assert!(refused_snapshot_quota.is_ok());
    let snapshot = client
        .create_snapshot(owner.request(CreateSnapshotRequest { volume_id: a.id.clone(), ..Default::default() }))
        .await;
    expect_refusal(snapshot, Code::ResourceExhausted, "quota exceeded for snapshots");
    let other_project = client
        .get_quotas(owner.request(GetQuotasRequest { project_id: project_id("someone-else"), ..Default::default() }))
        .await;
    expect_refusal(other_project, Code::PermissionDenied, "another project's quotas");
    let usage = client.get_quotas(owner.request(GetQuotasRequest::default())).await?.into_inner();
    assert_eq!((usage.quotas["volumes"].in_use, usage.quotas["gigabytes"].in_use), (2, 5));
    assert_eq!(usage.quotas["volumes___DEFAULT__"].in_use, 2, "per-type usage is kept too");
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn volume_types_steer_placement_and_guard_access() -> Result<()> {
    let mesh = InProcessMesh::start(2).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let ops = admin("ops");
    let owner = project("typed");
    let stranger = project("stranger");

    let not_admin = client
        .create_volume_type(owner.request(CreateVolumeTypeRequest { name: "fast".into(), ..Default::default() }))
        .await;
    expect_refusal(not_admin, Code::PermissionDenied, "volume_extension:types_manage");
    let lvm = client
        .create_volume_type(ops.request(CreateVolumeTypeRequest {
            name: "lvm-only".into(),
            extra_specs: [("volume_backend_name".into(), "lvm".into())].into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let duplicate = client
        .create_volume_type(ops.request(CreateVolumeTypeRequest { name: "lvm-only".into(), ..Default::default() }))
        .await;
    expect_refusal(duplicate, Code::AlreadyExists, "already exists");
    let no_valid_node = client
        .create_volume(owner.request(CreateVolumeRequest {
            size_gib: 1,
            volume_type: "lvm-only".into(),
            ..Default::default()
        }))
        .await;
    expect_refusal(
        no_valid_node,
        Code::ResourceExhausted,
        "no pool has the capabilities the volume type asks for (volume_backend_name=lvm)",
    );
    client
        .set_volume_type_extra_specs(ops.request(SetVolumeTypeExtraSpecsRequest {
            volume_type_id: lvm.id.clone(),
            extra_specs: [("volume_backend_name".into(), "<or> lvm <or> file".into())].into(),
        }))
        .await?;
    let typed = client
        .create_volume(owner.request(CreateVolumeRequest {
            size_gib: 1,
            volume_type: lvm.id.clone(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(typed.volume_type_name, "lvm-only");
    wait_for_status(&mut client, &owner, &typed.id, VolumeStatus::Available).await?;
    let in_use =
        client.delete_volume_type(ops.request(DeleteVolumeTypeRequest { volume_type_id: lvm.id.clone() })).await;
    expect_refusal(in_use, Code::InvalidArgument, "is used by 1 volumes");

    // A zone nobody has.
    let zoned = client
        .create_volume(owner.request(CreateVolumeRequest {
            size_gib: 1,
            availability_zone: "az-9".into(),
            ..Default::default()
        }))
        .await;
    expect_refusal(
        zoned,
        Code::ResourceExhausted,
        "no valid node in availability zone az-9; zones with capacity: nova",
    );
    let zones = client.list_availability_zones(owner.request(ListAvailabilityZonesRequest {})).await?.into_inner();
    assert_eq!(zones.availability_zones.len(), 1);
    assert!(zones.availability_zones[0].available);

    // Private types: invisible until access is granted.
    let private = client
        .create_volume_type(ops.request(CreateVolumeTypeRequest {
            name: "private".into(),
            is_public: Some(false),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let hidden = client.get_volume_type(stranger.request(GetVolumeTypeRequest { volume_type: "private".into() })).await;
    expect_refusal(hidden, Code::NotFound, "volume type \"private\" not found");
    let hidden_use = client
        .create_volume(stranger.request(CreateVolumeRequest {
            size_gib: 1,
            volume_type: "private".into(),
            ..Default::default()
        }))
        .await;
    expect_refusal(hidden_use, Code::NotFound, "not found");
    client
        .add_volume_type_access(ops.request(VolumeTypeAccessRequest {
            volume_type_id: private.id.clone(),
            project_id: project_id("stranger"),
        }))
        .await?;
    let visible = client
        .get_volume_type(stranger.request(GetVolumeTypeRequest { volume_type: "private".into() }))
        .await?
        .into_inner();
    assert_eq!(visible.project_ids, [project_id("stranger")]);
    let default_id = client
        .get_default_volume_type(owner.request(basalt::proto::GetDefaultVolumeTypeRequest {}))
        .await?
        .into_inner()
        .id;
    let default_type =
        client.delete_volume_type(ops.request(DeleteVolumeTypeRequest { volume_type_id: default_id })).await;
    expect_refusal(default_type, Code::InvalidArgument, "is the default type");
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_deleted_volume_s_bytes_never_reach_the_next_volume() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let tenant_a = project("tenant-a");
    let tenant_b = project("tenant-b");
    let first = client.create_volume(tenant_a.request(create(1, "secret"))).await?.into_inner();
    wait_for_status(&mut client, &tenant_a, &first.id, VolumeStatus::Available).await?;
    let file = mesh.node_dirs[0].join(format!("volume-{}", first.id));
    let secret = pattern(0xA5, 8 * MIB as usize);
    for offset in [0, 100 * MIB, GIB - 8 * MIB] {
        write_at(&file, offset, &secret)?;
    }
    client
        .delete_volume(tenant_a.request(DeleteVolumeRequest { volume_id: first.id.clone(), ..Default::default() }))
        .await?;
    wait_until_gone(&mut client, &tenant_a, &first.id).await?;

    let next = client.create_volume(tenant_b.request(create(1, "fresh"))).await?.into_inner();
    let next = wait_for_status(&mut client, &tenant_b, &next.id, VolumeStatus::Available).await?;
    assert_eq!(next.pool.unwrap().node_id, "node-0");
    let next_file = mesh.node_dirs[0].join(format!("volume-{}", next.id));
    for offset in [0, 100 * MIB, GIB - 8 * MIB] {
        assert!(read_at(&next_file, offset, 8 * MIB as usize)?.iter().all(|&byte| byte == 0), "old bytes at {offset}");
    }
    let stranger_view = client.get_volume(tenant_a.request(GetVolumeRequest { volume_id: next.id.clone() })).await;
    expect_refusal(stranger_view, Code::NotFound, "not found");
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn snapshot_deletes_and_repeated_requests_are_idempotent() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("idempotent");
    let keyed = CreateVolumeRequest {
        size_gib: 1,
        name: "k".into(),
        idempotency_key: "csi-pvc-1".into(),
        ..Default::default()
    };
    let first = client.create_volume(owner.request(keyed.clone())).await?.into_inner();
    let again = client.create_volume(owner.request(keyed.clone())).await?.into_inner();
    assert_eq!(first.id, again.id, "the same key and arguments return the same volume");
    let different = client.create_volume(owner.request(CreateVolumeRequest { size_gib: 2, ..keyed })).await;
    expect_refusal(different, Code::AlreadyExists, "already names volume");
    wait_for_status(&mut client, &owner, &first.id, VolumeStatus::Available).await?;

    let snapshot = client
        .create_snapshot(owner.request(CreateSnapshotRequest { volume_id: first.id.clone(), ..Default::default() }))
        .await?
        .into_inner();
    wait_for_snapshot(&mut client, &owner, &snapshot.id, SnapshotStatus::Available).await?;
    client
        .delete_snapshot(owner.request(DeleteSnapshotRequest { snapshot_id: snapshot.id.clone(), force: false }))
        .await?;
    // A second delete while the first runs is not an error.
    client
        .delete_snapshot(owner.request(DeleteSnapshotRequest { snapshot_id: snapshot.id.clone(), force: false }))
        .await
        .ok();
    eventually("the snapshot is gone", || {
        let mut client = client.clone();
        let owner = owner.clone();
        let id = snapshot.id.clone();
        async move {
            match client.get_snapshot(owner.request(basalt::proto::GetSnapshotRequest { snapshot_id: id })).await {
                Err(status) if status.code() == Code::NotFound => Ok(true),
                Err(status) => Err(status.into()),
                Ok(_) => Ok(false),
            }
        }
    })
    .await?;
    client
        .delete_volume(owner.request(DeleteVolumeRequest { volume_id: first.id.clone(), ..Default::default() }))
        .await?;
    client
        .delete_volume(owner.request(DeleteVolumeRequest { volume_id: first.id.clone(), ..Default::default() }))
        .await
        .ok();
    wait_until_gone(&mut client, &owner, &first.id).await?;
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_attachment_reserves_the_volume_until_it_is_deleted() -> Result<()> {
    use basalt::proto::{
        AttachStatus, Connector, CreateAttachmentRequest, DeleteAttachmentRequest, ListAttachmentsRequest,
        UpdateAttachmentRequest,
    };
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("attach");
    let volume = client.create_volume(owner.request(create(1, "attached"))).await?.into_inner();
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;

    let attachment = client
        .create_attachment(owner.request(CreateAttachmentRequest {
            volume_id: volume.id.clone(),
            instance_id: "server-1".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(attachment.status(), AttachStatus::Reserved);
    let reserved =
        client.get_volume(owner.request(GetVolumeRequest { volume_id: volume.id.clone() })).await?.into_inner();
    assert_eq!((reserved.status(), reserved.attach_status()), (VolumeStatus::Reserved, AttachStatus::Reserved));
    assert_eq!(reserved.attachments.len(), 1);
    assert_eq!(reserved.attachments[0].server_id, "server-1");

    let second = client
        .create_attachment(
            owner.request(CreateAttachmentRequest { volume_id: volume.id.clone(), ..Default::default() }),
        )
        .await;
    expect_refusal(second, Code::FailedPrecondition, "is reserved now; it can become reserved only from available");
    let delete = client
        .delete_volume(owner.request(DeleteVolumeRequest { volume_id: volume.id.clone(), ..Default::default() }))
        .await;
    expect_refusal(delete, Code::FailedPrecondition, "is reserved; deleting needs it to be available");
    let connect = client
        .update_attachment(owner.request(UpdateAttachmentRequest {
            attachment_id: attachment.id.clone(),
            connector: Some(Connector { initiator: "iqn.2004-10.com.example:host".into(), ..Default::default() }),
        }))
        .await;
    expect_refusal(connect, Code::FailedPrecondition, "this node exports nothing (export target none)");
    let still = client.get_volume(owner.request(GetVolumeRequest { volume_id: volume.id.clone() })).await?.into_inner();
    assert_eq!(still.status(), VolumeStatus::Reserved, "a failed connect leaves the reservation as it was");
    let stranger = client
        .delete_attachment(
            project("stranger").request(DeleteAttachmentRequest { attachment_id: attachment.id.clone() }),
        )
        .await;
    expect_refusal(stranger, Code::NotFound, "not found");

    let remaining = client
        .delete_attachment(owner.request(DeleteAttachmentRequest { attachment_id: attachment.id.clone() }))
        .await?
        .into_inner();
    assert!(remaining.attachments.is_empty());
    let freed = client.get_volume(owner.request(GetVolumeRequest { volume_id: volume.id.clone() })).await?.into_inner();
    assert_eq!((freed.status(), freed.attach_status()), (VolumeStatus::Available, AttachStatus::Detached));
    let listed = client.list_attachments(owner.request(ListAttachmentsRequest::default())).await?.into_inner();
    assert!(listed.attachments.is_empty());
    mesh.shutdown().await;
    Ok(())
}
