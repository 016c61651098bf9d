//! Conformance of the CSI plugin over its unix socket, with a real Basalt mesh behind it: every RPC
//! against the spec's error-code tables (missing fields INVALID_ARGUMENT, unknown ids NOT_FOUND,
//! deletes of what is gone OK), mutating calls repeated ten times at once with one effect, names
//! of 128 bytes, pagination, capacity; and the node service for real on this host: loop devices,
//! mkfs, mounts, bind mounts, raw block devices, filesystem growth, and a node plugin killed
//! between stage and publish.

use std::{collections::HashSet, time::Duration};

use anyhow::{Context, Result, ensure};
use basalt::csi::{
    ControllerExpandVolumeRequest, ControllerGetVolumeRequest, ControllerModifyVolumeRequest,
    ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest, CreateSnapshotRequest, CreateVolumeRequest,
    DeleteSnapshotRequest, DeleteVolumeRequest, GetCapacityRequest, GetPluginCapabilitiesRequest, GetPluginInfoRequest,
    GetSnapshotRequest, ListSnapshotsRequest, ListVolumesRequest, NodeExpandVolumeRequest, NodeGetInfoRequest,
    NodeGetVolumeStatsRequest, NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest,
    NodeUnstageVolumeRequest, ProbeRequest, Topology, ValidateVolumeCapabilitiesRequest, VolumeCapability,
    VolumeContentSource, volume_capability::access_mode::Mode, volume_content_source, volume_usage::Unit,
};
use basalt_integration::{csi::*, *};
use futures::future::join_all;
use tonic::Code;

const MODE: Mode = Mode::SingleNodeWriter;

fn create_request(name: &str, gib: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: gib_range(gib),
        volume_capabilities: vec![mount_capability("", MODE)],
        ..Default::default()
    }
}

fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn create(clients: &CsiClients, name: &str, gib: i64) -> Result<String> {
    let volume = clients.controller.clone().create_volume(create_request(name, gib)).await?.into_inner();
    Ok(volume.volume.context("a volume")?.volume_id)
}

async fn node_id(clients: &CsiClients) -> Result<String> {
    Ok(clients.node.clone().node_get_info(NodeGetInfoRequest {}).await?.into_inner().node_id)
}

async fn publish(
    clients: &CsiClients,
    volume_id: &str,
    capability: &VolumeCapability,
) -> Result<std::collections::HashMap<String, String>> {
    let request = ControllerPublishVolumeRequest {
        volume_id: volume_id.into(),
        node_id: node_id(clients).await?,
        volume_capability: Some(capability.clone()),
        ..Default::default()
    };
    Ok(clients.controller.clone().controller_publish_volume(request).await?.into_inner().publish_context)
}

fn stage_request(
    volume_id: &str,
    staging: &str,
    capability: &VolumeCapability,
    context: &std::collections::HashMap<String, String>,
) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: volume_id.into(),
        publish_context: context.clone(),
        staging_target_path: staging.into(),
        volume_capability: Some(capability.clone()),
        ..Default::default()
    }
}

fn publish_request(
    volume_id: &str,
    staging: &str,
    target: &str,
    capability: &VolumeCapability,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.into(),
        target_path: target.into(),
        volume_capability: Some(capability.clone()),
        ..Default::default()
    }
}

/// Stages and publishes a volume at fresh paths named after `name`; returns (staging, target).
async fn attach(
    harness: &CsiHarness,
    volume_id: &str,
    name: &str,
    capability: &VolumeCapability,
) -> Result<(String, String)> {
    let clients = &harness.clients;
    let context = publish(clients, volume_id, capability).await?;
    let staging = harness.dir(&format!("{name}-staging"))?;
    let target = harness.path(&format!("{name}-target"));
    clients.node.clone().node_stage_volume(stage_request(volume_id, &staging, capability, &context)).await?;
    clients.node.clone().node_publish_volume(publish_request(volume_id, &staging, &target, capability)).await?;
    Ok((staging, target))
}

async fn detach(harness: &CsiHarness, volume_id: &str, staging: &str, target: &str) -> Result<()> {
    let clients = &harness.clients;
    clients
        .node
        .clone()
        .node_unpublish_volume(NodeUnpublishVolumeRequest { volume_id: volume_id.into(), target_path: target.into() })
        .await?;
    clients
        .node
        .clone()
        .node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: volume_id.into(),
            staging_target_path: staging.into(),
        })
        .await?;
    let unpublish = ControllerUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        node_id: node_id(clients).await?,
        ..Default::default()
    };
    clients.controller.clone().controller_unpublish_volume(unpublish).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_names_the_driver_and_probes_the_control_plane() -> Result<()> {
    let harness = CsiHarness::start().await?;
    let mut identity = harness.clients.identity.clone();
    let info = identity.get_plugin_info(GetPluginInfoRequest {}).await?.into_inner();
    ensure!(info.name == "csi.basalt.dev" && !info.vendor_version.is_empty(), "{info:?}");
    let capabilities = identity.get_plugin_capabilities(GetPluginCapabilitiesRequest {}).await?.into_inner();
    ensure!(capabilities.capabilities.len() == 3, "{capabilities:?}");
    ensure!(identity.probe(ProbeRequest {}).await?.into_inner().ready == Some(true));
    let mut harness = harness;
    harness.mesh.stop_scheduler().await;
    let ready = identity.probe(ProbeRequest {}).await?.into_inner().ready;
    ensure!(ready == Some(false), "the probe must fail while the control plane is gone: {ready:?}");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_refuses_missing_fields_and_unknown_ids_by_the_spec() -> Result<()> {
    let harness = CsiHarness::start().await?;
    let mut controller = harness.clients.controller.clone();
    let mut node = harness.clients.node.clone();
    let capability = mount_capability("", MODE);
    let unknown = uuid::Uuid::new_v4().to_string();
    let staging = harness.dir("staging")?;
    let target = harness.path("target");
    let volume = create(&harness.clients, "known", 1).await?;
    let node_id = node_id(&harness.clients).await?;

    let invalid = [
        code(controller.create_volume(CreateVolumeRequest { name: String::new(), ..create_request("", 1) }).await),
        code(
            controller
                .create_volume(CreateVolumeRequest { volume_capabilities: vec![], ..create_request("x", 1) })
                .await,
        ),
        code(controller.delete_volume(DeleteVolumeRequest::default()).await),
        code(
            controller
                .controller_publish_volume(ControllerPublishVolumeRequest {
                    node_id: node_id.clone(),
                    volume_capability: Some(capability.clone()),
                    ..Default::default()
                })
                .await,
        ),
        code(
            controller
                .controller_publish_volume(ControllerPublishVolumeRequest {
                    volume_id: volume.clone(),
                    volume_capability: Some(capability.clone()),
                    ..Default::default()
                })
                .await,
        ),
        code(
            controller
                .controller_publish_volume(ControllerPublishVolumeRequest {
                    volume_id: volume.clone(),
                    node_id: node_id.clone(),
                    ..Default::default()
                })
                .await,
        ),
        code(controller.controller_unpublish_volume(ControllerUnpublishVolumeRequest::default()).await),
        code(controller.validate_volume_capabilities(ValidateVolumeCapabilitiesRequest::default()).await),
        code(
            controller
                .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
                    volume_id: volume.clone(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            controller
                .create_snapshot(CreateSnapshotRequest { source_volume_id: volume.clone(), ..Default::default() })
                .await,
        ),
        code(controller.create_snapshot(CreateSnapshotRequest { name: "s".into(), ..Default::default() }).await),
        code(controller.delete_snapshot(DeleteSnapshotRequest::default()).await),
        code(
            controller
                .controller_expand_volume(ControllerExpandVolumeRequest {
                    volume_id: volume.clone(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            controller
                .controller_expand_volume(ControllerExpandVolumeRequest {
                    capacity_range: gib_range(2),
                    ..Default::default()
                })
                .await,
        ),
        code(controller.controller_get_volume(ControllerGetVolumeRequest::default()).await),
        code(controller.get_snapshot(GetSnapshotRequest::default()).await),
        code(controller.list_volumes(ListVolumesRequest { max_entries: -1, ..Default::default() }).await),
        code(
            controller
                .create_volume(CreateVolumeRequest {
                    parameters: [("replicas".into(), "3".into())].into(),
                    ..create_request("p", 1)
                })
                .await,
        ),
        code(
            controller
                .controller_modify_volume(ControllerModifyVolumeRequest {
                    volume_id: volume.clone(),
                    mutable_parameters: [("iops".into(), "9".into())].into(),
                    ..Default::default()
                })
                .await,
        ),
        code(node.node_stage_volume(stage_request("", &staging, &capability, &Default::default())).await),
        code(node.node_stage_volume(stage_request(&volume, "", &capability, &Default::default())).await),
        code(
            node.node_stage_volume(NodeStageVolumeRequest {
                volume_capability: None,
                ..stage_request(&volume, &staging, &capability, &Default::default())
            })
            .await,
        ),
        code(node.node_stage_volume(stage_request(&volume, &staging, &capability, &Default::default())).await),
        code(node.node_publish_volume(publish_request("", &staging, &target, &capability)).await),
        code(node.node_publish_volume(publish_request(&volume, &staging, "", &capability)).await),
        code(
            node.node_publish_volume(NodePublishVolumeRequest {
                volume_capability: None,
                ..publish_request(&volume, &staging, &target, &capability)
            })
            .await,
        ),
        code(
            node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: volume.clone(),
                target_path: String::new(),
            })
            .await,
        ),
        code(
            node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: String::new(),
                target_path: target.clone(),
            })
            .await,
        ),
        code(
            node.node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: volume.clone(),
                staging_target_path: String::new(),
            })
            .await,
        ),
        code(
            node.node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: String::new(),
                staging_target_path: staging.clone(),
            })
            .await,
        ),
        code(
            node.node_get_volume_stats(NodeGetVolumeStatsRequest { volume_id: volume.clone(), ..Default::default() })
                .await,
        ),
        code(
            node.node_expand_volume(NodeExpandVolumeRequest { volume_id: volume.clone(), ..Default::default() }).await,
        ),
        code(
            node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: volume.clone(),
                target_path: "relative/path".into(),
            })
            .await,
        ),
    ];
    for (index, code) in invalid.iter().enumerate() {
        ensure!(*code == Code::InvalidArgument, "case {index} answered {code:?}, not INVALID_ARGUMENT");
    }

    let not_found = [
        code(
            controller
                .controller_publish_volume(ControllerPublishVolumeRequest {
                    volume_id: unknown.clone(),
                    node_id: node_id.clone(),
                    volume_capability: Some(capability.clone()),
                    ..Default::default()
                })
                .await,
        ),
        code(
            controller
                .controller_publish_volume(ControllerPublishVolumeRequest {
                    volume_id: volume.clone(),
                    node_id: "some fake node".into(),
                    volume_capability: Some(capability.clone()),
                    ..Default::default()
                })
                .await,
        ),
        code(
            controller
                .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
                    volume_id: unknown.clone(),
                    volume_capabilities: vec![capability.clone()],
                    ..Default::default()
                })
                .await,
        ),
        code(
            controller
                .controller_expand_volume(ControllerExpandVolumeRequest {
                    volume_id: unknown.clone(),
                    capacity_range: gib_range(2),
                    ..Default::default()
                })
                .await,
        ),
        code(controller.controller_get_volume(ControllerGetVolumeRequest { volume_id: unknown.clone() }).await),
        code(controller.get_snapshot(GetSnapshotRequest { snapshot_id: unknown.clone(), ..Default::default() }).await),
        code(
            controller
                .create_volume(CreateVolumeRequest {
                    volume_content_source: Some(VolumeContentSource {
                        r#type: Some(volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
                            snapshot_id: unknown.clone(),
                        })),
                    }),
                    ..create_request("from-nothing", 1)
                })
                .await,
        ),
        code(
            controller
                .create_volume(CreateVolumeRequest {
                    volume_content_source: Some(VolumeContentSource {
                        r#type: Some(volume_content_source::Type::Volume(volume_content_source::VolumeSource {
                            volume_id: unknown.clone(),
                        })),
                    }),
                    ..create_request("clone-of-nothing", 1)
                })
                .await,
        ),
        code(
            controller
                .create_snapshot(CreateSnapshotRequest {
                    name: "of-nothing".into(),
                    source_volume_id: unknown.clone(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            controller
                .controller_modify_volume(ControllerModifyVolumeRequest {
                    volume_id: unknown.clone(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            node.node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: unknown.clone(),
                volume_path: harness.path("nowhere"),
                ..Default::default()
            })
            .await,
        ),
        code(
            node.node_expand_volume(NodeExpandVolumeRequest {
                volume_id: unknown.clone(),
                volume_path: staging.clone(),
                ..Default::default()
            })
            .await,
        ),
    ];
    for (index, code) in not_found.iter().enumerate() {
        ensure!(*code == Code::NotFound, "case {index} answered {code:?}, not NOT_FOUND");
    }

    let done = [
        code(controller.delete_volume(DeleteVolumeRequest { volume_id: unknown.clone(), ..Default::default() }).await),
        code(
            controller
                .delete_volume(DeleteVolumeRequest { volume_id: "not-a-basalt-id".into(), ..Default::default() })
                .await,
        ),
        code(
            controller
                .delete_snapshot(DeleteSnapshotRequest { snapshot_id: unknown.clone(), ..Default::default() })
                .await,
        ),
        code(
            controller
                .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                    volume_id: unknown.clone(),
                    node_id: node_id.clone(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            controller
                .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                    volume_id: volume.clone(),
                    node_id: node_id.clone(),
                    ..Default::default()
                })
                .await,
        ),
        code(
            node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: volume.clone(),
                target_path: target.clone(),
            })
            .await,
        ),
        code(
            node.node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: volume.clone(),
                staging_target_path: staging.clone(),
            })
            .await,
        ),
    ];
    for (index, code) in done.iter().enumerate() {
        ensure!(*code == Code::Ok, "case {index} answered {code:?}, not OK");
    }
    let published_nowhere =
        code(node.node_publish_volume(publish_request(&volume, &staging, &target, &capability)).await);
    ensure!(published_nowhere == Code::FailedPrecondition, "publish before stage: {published_nowhere:?}");
    let too_big = CreateVolumeRequest {
        capacity_range: Some(basalt::csi::CapacityRange { required_bytes: 10, limit_bytes: 20 }),
        ..create_request("tiny", 1)
    };
    ensure!(code(controller.create_volume(too_big).await) == Code::OutOfRange);
    let bad_token =
        controller.list_volumes(ListVolumesRequest { max_entries: 1, starting_token: "nonsense".into() }).await;
    ensure!(code(bad_token) == Code::Aborted);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn creates_are_keyed_by_name_and_ten_repeats_have_one_effect() -> Result<()> {
    let mut harness = CsiHarness::start().await?;
    let clients = harness.clients.clone();
    let name = "n".repeat(128);
    let created = join_all((0..10).map(|_| {
        let mut controller = clients.controller.clone();
        let request = create_request(&name, 2);
        async move { controller.create_volume(request).await }
    }))
    .await;
    let ids: HashSet<String> = created
        .into_iter()
        .map(|reply| Ok(reply?.into_inner().volume.context("a volume")?.volume_id))
        .collect::<Result<_>>()?;
    ensure!(ids.len() == 1, "ten creates of one name made {} volumes", ids.len());
    let volume = ids.into_iter().next().context("a volume")?;
    let listed = clients.controller.clone().list_volumes(ListVolumesRequest::default()).await?.into_inner();
    ensure!(listed.entries.len() == 1, "{} volumes listed", listed.entries.len());
    let other_size = clients.controller.clone().create_volume(create_request(&name, 3)).await;
    ensure!(code(other_size) == Code::AlreadyExists);
    let grpc = volume_client(&harness.mesh.grpc_addr).await?;
    let request = basalt::proto::CreateVolumeTypeRequest { name: "silver".into(), ..Default::default() };
    grpc.clone().create_volume_type(admin("ops").request(request)).await?;
    let mut other_type = create_request(&name, 2);
    other_type.parameters.insert("type".into(), "silver".into());
    ensure!(code(clients.controller.clone().create_volume(other_type).await) == Code::AlreadyExists);
    let mut other_zone = create_request(&name, 2);
    other_zone.parameters.insert("availabilityZone".into(), "elsewhere".into());
    ensure!(code(clients.controller.clone().create_volume(other_zone).await) == Code::AlreadyExists);

    // The name is kept in Basalt, not in the plugin: a new controller finds the volume by it.
    if let Some(running) = harness.take_plugin() {
        running.shutdown().await;
    }
    let socket = harness.root.path().join("second.sock");
    let config = plugin_config(
        &harness.mesh.grpc_addr,
        &socket,
        &harness.root.path().join("state2"),
        basalt_csi_plugin::Mode::Controller,
    );
    let second = basalt_csi_plugin::start(config).await?;
    let restarted = CsiClients::connect(&socket).await?;
    let again = restarted.controller.clone().create_volume(create_request(&name, 2)).await?.into_inner();
    ensure!(again.volume.context("a volume")?.volume_id == volume, "a restarted controller made a second volume");

    let snapshot_name = "s".repeat(128);
    let snapshots = join_all((0..10).map(|_| {
        let mut controller = restarted.controller.clone();
        let request = CreateSnapshotRequest {
            name: snapshot_name.clone(),
            source_volume_id: volume.clone(),
            ..Default::default()
        };
        async move { controller.create_snapshot(request).await }
    }))
    .await;
    let snapshot_ids: HashSet<String> = snapshots
        .into_iter()
        .map(|reply| {
            let snapshot = reply?.into_inner().snapshot.context("a snapshot")?;
            ensure!(
                snapshot.ready_to_use && snapshot.size_bytes == 2 << 30 && snapshot.creation_time.is_some(),
                "{snapshot:?}"
            );
            Ok(snapshot.snapshot_id)
        })
        .collect::<Result<_>>()?;
    ensure!(snapshot_ids.len() == 1, "ten snapshots of one name made {}", snapshot_ids.len());
    let snapshot = snapshot_ids.into_iter().next().context("a snapshot")?;
    let of_other = CreateSnapshotRequest {
        name: snapshot_name.clone(),
        source_volume_id: create(&restarted, "other", 1).await?,
        ..Default::default()
    };
    ensure!(code(restarted.controller.clone().create_snapshot(of_other).await) == Code::AlreadyExists);
    let listed = restarted
        .controller
        .clone()
        .list_snapshots(ListSnapshotsRequest { source_volume_id: volume.clone(), ..Default::default() })
        .await?
        .into_inner();
    ensure!(listed.entries.len() == 1, "{listed:?}");
    let busy = restarted
        .controller
        .clone()
        .delete_volume(DeleteVolumeRequest { volume_id: volume.clone(), ..Default::default() })
        .await;
    ensure!(code(busy) == Code::FailedPrecondition, "a volume with snapshots is not deleted");

    let deletes = join_all((0..10).map(|_| {
        let mut controller = restarted.controller.clone();
        let request = DeleteSnapshotRequest { snapshot_id: snapshot.clone(), ..Default::default() };
        async move { controller.delete_snapshot(request).await }
    }))
    .await;
    ensure!(deletes.into_iter().all(|reply| reply.is_ok()), "ten deletes of one snapshot all succeed");
    eventually("the snapshot is gone", || {
        let mut controller = restarted.controller.clone();
        let request = GetSnapshotRequest { snapshot_id: snapshot.clone(), ..Default::default() };
        async move { Ok(code(controller.get_snapshot(request).await) == Code::NotFound) }
    })
    .await?;
    let deletes = join_all((0..10).map(|_| {
        let mut controller = restarted.controller.clone();
        let request = DeleteVolumeRequest { volume_id: volume.clone(), ..Default::default() };
        async move { controller.delete_volume(request).await }
    }))
    .await;
    ensure!(deletes.into_iter().all(|reply| reply.is_ok()), "ten deletes of one volume all succeed");
    second.shutdown().await;
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn listings_page_and_capacity_shrinks_as_volumes_are_made() -> Result<()> {
    let harness = CsiHarness::start().await?;
    let mut controller = harness.clients.controller.clone();
    let capacity = |topology: Option<Topology>| {
        let mut controller = controller.clone();
        async move {
            let request = GetCapacityRequest { accessible_topology: topology, ..Default::default() };
            Ok::<_, anyhow::Error>(controller.get_capacity(request).await?.into_inner())
        }
    };
    let before = capacity(Some(node_topology())).await?;
    ensure!(before.available_capacity > 0 && before.minimum_volume_size == Some(1 << 30), "{before:?}");
    let mut made = HashSet::new();
    for index in 0..5 {
        made.insert(create(&harness.clients, &format!("paged-{index}"), 5).await?);
    }
    let after = capacity(Some(node_topology())).await?;
    ensure!(
        after.available_capacity <= before.available_capacity - (25 << 30),
        "capacity went from {} to {} after 25 GiB of volumes",
        before.available_capacity,
        after.available_capacity
    );
    let elsewhere =
        Topology { segments: [(basalt_csi_plugin::topology::ZONE_KEY.to_owned(), "az-none".to_owned())].into() };
    ensure!(capacity(Some(elsewhere)).await?.available_capacity == 0);

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = controller
            .list_volumes(ListVolumesRequest { max_entries: 2, starting_token: token.clone() })
            .await?
            .into_inner();
        ensure!(page.entries.len() <= 2, "a page holds at most max_entries");
        for entry in page.entries {
            seen.push(entry.volume.context("a volume")?.volume_id);
        }
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    ensure!(seen.len() == 5 && seen.iter().cloned().collect::<HashSet<_>>() == made, "pages listed {seen:?}");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_is_an_attachment_and_repeats_have_one_effect() -> Result<()> {
    let harness = CsiHarness::start().await?;
    let clients = harness.clients.clone();
    let capability = mount_capability("", MODE);
    let volume = create(&clients, "published", 1).await?;
    let node = node_id(&clients).await?;
    let publishes = join_all((0..10).map(|_| {
        let mut controller = clients.controller.clone();
        let request = ControllerPublishVolumeRequest {
            volume_id: volume.clone(),
            node_id: node.clone(),
            volume_capability: Some(capability.clone()),
            ..Default::default()
        };
        async move { controller.controller_publish_volume(request).await }
    }))
    .await;
    let contexts: Vec<_> =
        publishes.into_iter().map(|reply| Ok(reply?.into_inner().publish_context)).collect::<Result<_>>()?;
    ensure!(contexts.windows(2).all(|pair| pair[0] == pair[1]), "every repeat answers the same context");
    ensure!(
        contexts[0]["kind"] == "local" && contexts[0]["device_path"].ends_with(&format!("volume-{volume}")),
        "{:?}",
        contexts[0]
    );
    let shown = clients
        .controller
        .clone()
        .controller_get_volume(ControllerGetVolumeRequest { volume_id: volume.clone() })
        .await?
        .into_inner();
    let status = shown.status.context("a status")?;
    ensure!(status.published_node_ids == [basalt_integration::csi::CSI_NODE], "{status:?}");
    ensure!(!status.volume_condition.context("a condition")?.abnormal);
    let read_only = ControllerPublishVolumeRequest {
        volume_id: volume.clone(),
        node_id: node.clone(),
        volume_capability: Some(capability.clone()),
        readonly: true,
        ..Default::default()
    };
    ensure!(code(clients.controller.clone().controller_publish_volume(read_only).await) == Code::AlreadyExists);
    let other_node = ControllerPublishVolumeRequest {
        volume_id: volume.clone(),
        node_id: "node-9".into(),
        volume_capability: Some(capability.clone()),
        ..Default::default()
    };
    ensure!(code(clients.controller.clone().controller_publish_volume(other_node).await) == Code::FailedPrecondition);
    let unpublishes = join_all((0..10).map(|_| {
        let mut controller = clients.controller.clone();
        let request =
            ControllerUnpublishVolumeRequest { volume_id: volume.clone(), node_id: node.clone(), ..Default::default() };
        async move { controller.controller_unpublish_volume(request).await }
    }))
    .await;
    ensure!(unpublishes.into_iter().all(|reply| reply.is_ok()));
    let shown = clients
        .controller
        .clone()
        .controller_get_volume(ControllerGetVolumeRequest { volume_id: volume.clone() })
        .await?
        .into_inner();
    ensure!(shown.status.context("a status")?.published_node_ids.is_empty());
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filesystem_volume_lives_its_whole_life_on_a_node() -> Result<()> {
    let harness = CsiHarness::start().await?;
    let clients = harness.clients.clone();
    // xfs: growing ext4 online needs CAP_SYS_RESOURCE, which this sandbox does not grant (the VM
    // lane grows ext4); the stage, mount and stats are the same for every filesystem.
    let capability = mount_capability("xfs", MODE);
    let volume = create(&clients, "filesystem", 1).await?;
    let context = publish(&clients, &volume, &capability).await?;
    let staging = harness.dir("fs-staging")?;
    let target = harness.path("fs-target");
    let stages = join_all((0..10).map(|_| {
        let mut node = clients.node.clone();
        let request = stage_request(&volume, &staging, &capability, &context);
        async move { node.node_stage_volume(request).await }
    }))
    .await;
    ensure!(stages.into_iter().all(|reply| reply.is_ok()), "ten stages at once all succeed");
    let publishes = join_all((0..10).map(|_| {
        let mut node = clients.node.clone();
        let request = publish_request(&volume, &staging, &target, &capability);
        async move { node.node_publish_volume(request).await }
    }))
    .await;
    ensure!(publishes.into_iter().all(|reply| reply.is_ok()), "ten publishes at once all succeed");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    ensure!(
        mounts.lines().filter(|line| line.split(' ').nth(4) == Some(target.as_str())).count() == 1,
        "one mount at the target"
    );
    std::fs::write(format!("{target}/hello.txt"), b"written through the CSI mount")?;
    std::fs::File::open(format!("{target}/hello.txt"))?.sync_all()?;

    let stats = clients
        .node
        .clone()
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: volume.clone(),
            volume_path: target.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let bytes = stats.usage.iter().find(|usage| usage.unit == Unit::Bytes as i32).context("bytes")?;
    let inodes = stats.usage.iter().find(|usage| usage.unit == Unit::Inodes as i32).context("inodes")?;
    ensure!(bytes.total > 900 << 20 && bytes.used > 0 && inodes.used > 0, "{stats:?}");
    ensure!(!stats.volume_condition.context("a condition")?.abnormal);

    let expanded = clients
        .controller
        .clone()
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: volume.clone(),
            capacity_range: gib_range(2),
            volume_capability: Some(capability.clone()),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(expanded.capacity_bytes == 2 << 30 && expanded.node_expansion_required, "{expanded:?}");
    let grown = clients
        .node
        .clone()
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: volume.clone(),
            volume_path: target.clone(),
            capacity_range: gib_range(2),
            volume_capability: Some(capability.clone()),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(grown.capacity_bytes == 2 << 30, "{grown:?}");
    let stats = clients
        .node
        .clone()
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: volume.clone(),
            volume_path: target.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let grown_total = stats.usage.iter().find(|usage| usage.unit == Unit::Bytes as i32).context("bytes")?.total;
    ensure!(grown_total > bytes.total + (900 << 20), "the filesystem grew from {} to {grown_total}", bytes.total);
    ensure!(std::fs::read(format!("{target}/hello.txt"))? == b"written through the CSI mount");

    detach(&harness, &volume, &staging, &target).await?;
    ensure!(!std::path::Path::new(&target).exists(), "unpublish removes the target");
    let again = clients
        .node
        .clone()
        .node_unpublish_volume(NodeUnpublishVolumeRequest { volume_id: volume.clone(), target_path: target.clone() })
        .await;
    ensure!(again.is_ok(), "unpublishing a path that is gone is fine");
    let gone = clients
        .node
        .clone()
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: volume.clone(),
            volume_path: target.clone(),
            ..Default::default()
        })
        .await;
    ensure!(code(gone) == Code::NotFound);
    clients
        .controller
        .clone()
        .delete_volume(DeleteVolumeRequest { volume_id: volume.clone(), ..Default::default() })
        .await?;
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raw_block_volume_is_a_device_at_the_target() -> Result<()> {
    let harness = CsiHarness::start().await?;
    let capability = block_capability(Mode::SingleNodeSingleWriter);
    let volume = create(&harness.clients, "block", 1).await?;
    let (staging, target) = attach(&harness, &volume, "block", &capability).await?;
    let data = random_bytes(17, 1 << 20);
    write_at(std::path::Path::new(&target), 64 << 20, &data)?;
    ensure!(read_at(std::path::Path::new(&target), 64 << 20, data.len())? == data);
    let stats = harness
        .clients
        .node
        .clone()
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: volume.clone(),
            volume_path: target.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(stats.usage.first().map(|usage| usage.total) == Some(1 << 30), "{stats:?}");
    detach(&harness, &volume, &staging, &target).await?;
    // The bytes are in the volume's own file.
    let file = harness.mesh.node_dir(CSI_NODE).join(format!("volume-{volume}"));
    ensure!(read_at(&file, 64 << 20, data.len())? == data, "the bytes written at the target are the volume's");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_from_a_snapshot_and_clones_hold_what_was_written() -> Result<()> {
    let harness = CsiHarness::start().await?;
    let clients = harness.clients.clone();
    let capability = mount_capability("ext4", MODE);
    let source = create(&clients, "source", 1).await?;
    let (staging, target) = attach(&harness, &source, "source", &capability).await?;
    std::fs::write(format!("{target}/before.txt"), b"taken before the snapshot")?;
    detach(&harness, &source, &staging, &target).await?;
    let snapshot = clients
        .controller
        .clone()
        .create_snapshot(CreateSnapshotRequest {
            name: "snap".into(),
            source_volume_id: source.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .snapshot
        .context("a snapshot")?;
    let from = |kind: volume_content_source::Type, name: &str| CreateVolumeRequest {
        volume_content_source: Some(VolumeContentSource { r#type: Some(kind) }),
        ..create_request(name, 1)
    };
    let restored = clients
        .controller
        .clone()
        .create_volume(from(
            volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
                snapshot_id: snapshot.snapshot_id.clone(),
            }),
            "restored",
        ))
        .await?
        .into_inner()
        .volume
        .context("a volume")?;
    ensure!(restored.content_source.is_some(), "the response names the source");
    let clone = clients
        .controller
        .clone()
        .create_volume(from(
            volume_content_source::Type::Volume(volume_content_source::VolumeSource { volume_id: source.clone() }),
            "clone",
        ))
        .await?
        .into_inner()
        .volume
        .context("a volume")?;
    for (volume, name) in [(&restored.volume_id, "restored"), (&clone.volume_id, "clone")] {
        let (staging, target) = attach(&harness, volume, name, &capability).await?;
        let found = std::fs::read(format!("{target}/before.txt")).with_context(|| format!("{name} lacks the file"))?;
        ensure!(found == b"taken before the snapshot", "{name}");
        detach(&harness, volume, &staging, &target).await?;
    }
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_are_validated_and_types_modified() -> Result<()> {
    let harness = CsiHarness::start().await?;
    let mut controller = harness.clients.controller.clone();
    let volume = create(&harness.clients, "validated", 1).await?;
    let supported = ValidateVolumeCapabilitiesRequest {
        volume_id: volume.clone(),
        volume_capabilities: vec![
            mount_capability("xfs", Mode::SingleNodeWriter),
            block_capability(Mode::SingleNodeReaderOnly),
        ],
        ..Default::default()
    };
    ensure!(controller.validate_volume_capabilities(supported).await?.into_inner().confirmed.is_some());
    let shared_filesystem = ValidateVolumeCapabilitiesRequest {
        volume_id: volume.clone(),
        volume_capabilities: vec![mount_capability("ext4", Mode::MultiNodeMultiWriter)],
        ..Default::default()
    };
    let refused = controller.validate_volume_capabilities(shared_filesystem).await?.into_inner();
    ensure!(refused.confirmed.is_none() && refused.message.contains("cluster filesystems"), "{refused:?}");
    let many_writers = CreateVolumeRequest {
        volume_capabilities: vec![block_capability(Mode::MultiNodeMultiWriter)],
        ..create_request("shared", 1)
    };
    ensure!(
        code(controller.create_volume(many_writers).await) == Code::InvalidArgument,
        "the default type is not multiattach"
    );

    let mut grpc = volume_client(&harness.mesh.grpc_addr).await?;
    let request = basalt::proto::CreateVolumeTypeRequest { name: "gold".into(), ..Default::default() };
    grpc.create_volume_type(admin("ops").request(request)).await?;
    let modify = ControllerModifyVolumeRequest {
        volume_id: volume.clone(),
        mutable_parameters: [("type".into(), "gold".into())].into(),
        ..Default::default()
    };
    controller.controller_modify_volume(modify).await?;
    let shown = grpc
        .get_volume(admin("csi").request(basalt::proto::GetVolumeRequest { volume_id: volume.clone() }))
        .await?
        .into_inner();
    ensure!(shown.volume_type_name == "gold", "the volume's type is now {}", shown.volume_type_name);
    let no_such = ControllerModifyVolumeRequest {
        volume_id: volume.clone(),
        mutable_parameters: [("type".into(), "platinum".into())].into(),
        ..Default::default()
    };
    ensure!(code(controller.controller_modify_volume(no_such).await) == Code::InvalidArgument);
    harness.shutdown().await;
    Ok(())
}

/// `basalt csi --mode node` as its own process against `harness`'s mesh, serving on `socket` and
/// keeping its records in `state`, with `extra` flags; ready once it printed `ready_keys`.
fn node_plugin(
    harness: &CsiHarness,
    socket: &std::path::Path,
    state: &std::path::Path,
    extra: &[&str],
    ready_keys: &[&str],
) -> Result<BasaltProcess> {
    let tls = pki().args(&basalt::tls::Role::Csi);
    let (endpoint, project) = (format!("unix://{}", socket.display()), project_id("csi"));
    let mut args = vec![
        "csi",
        "--mode",
        "node",
        "--endpoint",
        &endpoint,
        "--scheduler-endpoint",
        &harness.mesh.grpc_addr,
        "--project-id",
        &project,
        "--node-id",
        CSI_NODE,
        "--state-dir",
        state.to_str().unwrap_or_default(),
    ];
    args.extend(extra);
    args.extend(tls.iter().map(String::as_str));
    BasaltProcess::spawn(&args, &[], ready_keys)
}

/// The node plugin as its own process: SIGKILL between stage and publish, then a restart, and
/// publish and unstage still work from what stage recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_plugin_killed_between_stage_and_publish_carries_on_after_restart() -> Result<()> {
    let harness = CsiHarness::start().await?;
    let capability = mount_capability("ext4", MODE);
    let volume = create(&harness.clients, "survivor", 1).await?;
    let context = publish(&harness.clients, &volume, &capability).await?;
    let socket = harness.root.path().join("node.sock");
    let state = harness.root.path().join("node-state");
    let spawn = || node_plugin(&harness, &socket, &state, &[], &["socket"]);
    let mut plugin = spawn()?;
    let node = CsiClients::connect(&socket).await?.node;
    let staging = harness.dir("killed-staging")?;
    let target = harness.path("killed-target");
    node.clone().node_stage_volume(stage_request(&volume, &staging, &capability, &context)).await?;
    plugin.kill();
    let _ = std::fs::remove_file(&socket);
    let _plugin = spawn()?;
    let node = CsiClients::connect(&socket).await?.node;
    node.clone().node_stage_volume(stage_request(&volume, &staging, &capability, &context)).await?;
    node.clone().node_publish_volume(publish_request(&volume, &staging, &target, &capability)).await?;
    std::fs::write(format!("{target}/after-restart.txt"), b"still here")?;
    node.clone()
        .node_unpublish_volume(NodeUnpublishVolumeRequest { volume_id: volume.clone(), target_path: target.clone() })
        .await?;
    node.clone()
        .node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: volume.clone(),
            staging_target_path: staging.clone(),
        })
        .await?;
    let file = harness.mesh.node_dir(CSI_NODE).join(format!("volume-{volume}"));
    let loops = std::process::Command::new("losetup").arg("-j").arg(&file).output()?;
    ensure!(
        loops.stdout.is_empty(),
        "no loop device is left over the volume: {}",
        String::from_utf8_lossy(&loops.stdout)
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_filesystem_on_offer_is_made_mounted_and_kept() -> Result<()> {
    let harness = CsiHarness::start().await?;
    for fs_type in ["ext4", "xfs", "btrfs"] {
        let capability = mount_capability(fs_type, MODE);
        let volume = create(&harness.clients, fs_type, 1).await?;
        let (staging, target) = attach(&harness, &volume, fs_type, &capability).await?;
        let mount = std::fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .find(|line| line.split(' ').nth(4) == Some(staging.as_str()))
            .map(str::to_owned)
            .with_context(|| format!("{fs_type} is not mounted at the staging path"))?;
        ensure!(mount.contains(&format!(" - {fs_type} ")), "{mount}");
        std::fs::write(format!("{target}/kept"), fs_type.as_bytes())?;
        detach(&harness, &volume, &staging, &target).await?;
        // A second stage finds the filesystem and keeps it: mkfs runs on blank devices only.
        let (staging, target) = attach(&harness, &volume, &format!("{fs_type}-again"), &capability).await?;
        ensure!(std::fs::read(format!("{target}/kept"))? == fs_type.as_bytes(), "{fs_type} lost its file");
        detach(&harness, &volume, &staging, &target).await?;
        // Asked for another filesystem, the node refuses rather than formatting over it.
        let other = mount_capability(if fs_type == "ext4" { "xfs" } else { "ext4" }, MODE);
        let context = publish(&harness.clients, &volume, &other).await?;
        let staging = harness.dir(&format!("{fs_type}-other"))?;
        let refused =
            harness.clients.node.clone().node_stage_volume(stage_request(&volume, &staging, &other, &context)).await;
        ensure!(code(refused) == Code::FailedPrecondition, "{fs_type}: staging as another filesystem must fail");
        harness
            .clients
            .node
            .clone()
            .node_unstage_volume(NodeUnstageVolumeRequest { volume_id: volume.clone(), staging_target_path: staging })
            .await?;
    }
    harness.shutdown().await;
    Ok(())
}

/// `basalt storage-check csi`, the operator's check of a host's plugin that the VM lane runs over
/// iSCSI, here on a local volume: bytes written through one attach are found by the next.
#[tokio::test(flavor = "multi_thread")]
async fn the_storage_check_drives_the_plugin_as_an_orchestrator_would() -> Result<()> {
    let harness = CsiHarness::start().await?;
    let endpoint = format!("unix://{}", harness.root.path().join("csi.sock").display());
    let check = |args: &[&str]| -> Result<String> {
        let output = std::process::Command::new(basalt_binary()?)
            .args(["storage-check", "csi", "--endpoint", &endpoint])
            .args(args)
            .output()?;
        ensure!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        Ok(String::from_utf8(output.stdout)?)
    };
    let volume = check(&["create", "--name", "checked", "--size-gib", "1"])?.trim().to_owned();
    let context = harness.root.path().join("context.json");
    let context = context.to_str().context("utf-8")?;
    check(&["publish", "--volume-id", &volume, "--node-id", CSI_NODE, "--context-file", context])?;
    let pattern = harness.root.path().join("pattern.bin");
    std::fs::write(&pattern, random_bytes(5, 1 << 20))?;
    let pattern = pattern.to_str().context("utf-8")?;
    // xfs, as the second round also grows the volume online (ext4 would need CAP_SYS_RESOURCE,
    // which this sandbox lacks; the VM lane grows ext4 the same way).
    for (round, flag, growth) in [("write", "--write", &[][..]), ("read", "--expect", &["--expand-gib", "2"][..])] {
        let staging = harness.dir(&format!("check-{round}-staging"))?;
        let target = harness.path(&format!("check-{round}-target"));
        let mut args = vec![
            "attach",
            "--volume-id",
            &volume,
            "--context-file",
            context,
            "--staging",
            &staging,
            "--target",
            &target,
            "--fs-type",
            "xfs",
            flag,
            pattern,
        ];
        args.extend(growth);
        let said = check(&args)?;
        ensure!(said.contains("unpublished and unstaged"), "{said}");
        ensure!(growth.is_empty() || said.contains("grew to 2 GiB online"), "{said}");
    }
    check(&["unpublish", "--volume-id", &volume, "--node-id", CSI_NODE])?;
    check(&["delete", "--volume-id", &volume])?;
    harness.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn another_project_s_volume_is_out_of_the_plugin_s_reach() -> Result<()> {
    // A static PersistentVolume can name any volume handle: the plugin acts as a member of its
    // own project, so one naming another project's volume finds nothing to publish or change.
    let harness = CsiHarness::start().await?;
    let mut clients = harness.clients.clone();
    let mut grpc = volume_client(&harness.mesh.grpc_addr).await?;
    let owner = project("elsewhere");
    let request = basalt::proto::CreateVolumeRequest { size_gib: 1, name: "theirs".into(), ..Default::default() };
    let theirs = grpc.create_volume(owner.request(request)).await?.into_inner();
    wait_for_status(&mut grpc, &owner, &theirs.id, basalt::proto::VolumeStatus::Available).await?;

    let capability = mount_capability("ext4", MODE);
    let node = node_id(&clients).await?;
    let publish = ControllerPublishVolumeRequest {
        volume_id: theirs.id.clone(),
        node_id: node,
        volume_capability: Some(capability.clone()),
        ..Default::default()
    };
    ensure!(code(clients.controller.controller_publish_volume(publish).await) == Code::NotFound);
    let expand = ControllerExpandVolumeRequest {
        volume_id: theirs.id.clone(),
        capacity_range: gib_range(2),
        ..Default::default()
    };
    ensure!(code(clients.controller.controller_expand_volume(expand).await) == Code::NotFound);
    let snapshot =
        CreateSnapshotRequest { source_volume_id: theirs.id.clone(), name: "theirs-snap".into(), ..Default::default() };
    ensure!(code(clients.controller.create_snapshot(snapshot).await) == Code::NotFound);
    let get = ControllerGetVolumeRequest { volume_id: theirs.id.clone() };
    ensure!(code(clients.controller.controller_get_volume(get).await) == Code::NotFound);
    // A delete of a volume the plugin cannot see succeeds, as CSI asks, and deletes nothing.
    clients
        .controller
        .delete_volume(DeleteVolumeRequest { volume_id: theirs.id.clone(), ..Default::default() })
        .await?;

    let after = grpc
        .get_volume(owner.request(basalt::proto::GetVolumeRequest { volume_id: theirs.id.clone() }))
        .await?
        .into_inner();
    ensure!(after.status() == basalt::proto::VolumeStatus::Available && after.size_gib == 1, "{after:?}");
    ensure!(after.attachments.is_empty(), "another project's volume was attached: {after:?}");
    let snapshots = grpc
        .list_snapshots(owner.request(basalt::proto::ListSnapshotsRequest::default()))
        .await?
        .into_inner()
        .snapshots;
    ensure!(snapshots.is_empty(), "a snapshot was taken of another project's volume: {snapshots:?}");
    Ok(())
}

/// The plugin as its own process serves Prometheus metrics like every other service: its CSI
/// calls are counted by service, method and code.
#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_s_metrics_count_its_csi_calls() -> Result<()> {
    let harness = CsiHarness::start().await?;
    let socket = harness.root.path().join("metered.sock");
    let state = harness.root.path().join("metered-state");
    let metrics = ["--metrics-listen", "127.0.0.1:0"];
    let plugin = node_plugin(&harness, &socket, &state, &metrics, &["socket", "metrics"])?;
    let clients = CsiClients::connect(&socket).await?;
    let call = [("service", "csi.v1.Identity"), ("method", "GetPluginInfo"), ("code", "Ok")];
    let before = Scraped::from(&plugin).await?.value("basalt_grpc_server_calls_total", &call);
    for _ in 0..3 {
        clients.identity.clone().get_plugin_info(GetPluginInfoRequest {}).await?;
    }
    let after = Scraped::from(&plugin).await?.value("basalt_grpc_server_calls_total", &call);
    ensure!(after == before + 3.0, "three GetPluginInfo calls counted as {before} -> {after}");
    Ok(())
}
