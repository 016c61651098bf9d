//! Each way to deploy Basalt runs a volume's life end to end: create it, see it available, find its
//! sparse file, delete it, see the file gone. In one process (SQLite, the in-process bus), as
//! separate processes (real NATS, real PostgreSQL), and `basalt up` driven by a generic
//! reflection-only gRPC client; with placement's basics (too large, a silent node, projects apart).

use std::{os::unix::fs::MetadataExt, path::Path, process::Command};

use anyhow::{Context, Result, ensure};
use basalt::{
    ids::NodeId,
    proto::{
        CreateVolumeRequest, DeleteVolumeRequest, GetVolumeRequest, ListPoolsRequest, ListServicesRequest,
        ListVolumesRequest, VolumeStatus,
    },
    tls::Role,
};
use basalt_integration::*;

/// A volume's life, against any mesh: `node_dirs` maps node ids to their file pools.
async fn create_inspect_delete(grpc_addr: &str, node_dir: impl Fn(&str) -> std::path::PathBuf) -> Result<()> {
    let mut client = volume_client(grpc_addr).await?;
    let context = project("slice");
    let created = client
        .create_volume(context.request(CreateVolumeRequest { size_gib: 1, name: "first".into(), ..Default::default() }))
        .await?
        .into_inner();
    ensure!(created.status() == VolumeStatus::Creating, "a new volume starts in creating, got {:?}", created.status());

    let volume = wait_for_status(&mut client, &context, &created.id, VolumeStatus::Available).await?;
    let pool = volume.pool.context("an available volume has a pool")?;
    let file = node_dir(&pool.node_id).join(format!("volume-{}", volume.id));
    let metadata = std::fs::metadata(&file).with_context(|| format!("{} should exist", file.display()))?;
    ensure!(metadata.len() == GIB, "the file holds {} bytes, not 1 GiB", metadata.len());
    ensure!(metadata.blocks() == 0, "the file should be sparse, but {} blocks are allocated", metadata.blocks());

    let listed = client.list_volumes(context.request(ListVolumesRequest::default())).await?.into_inner();
    ensure!(listed.volumes.iter().any(|listed| listed.id == volume.id), "the volume is missing from the list");

    let deleting = client
        .delete_volume(context.request(DeleteVolumeRequest { volume_id: volume.id.clone(), ..Default::default() }))
        .await?
        .into_inner();
    ensure!(deleting.status() == VolumeStatus::Deleting);
    wait_until_gone(&mut client, &context, &volume.id).await?;
    ensure!(!file.exists(), "{} should be gone after the delete", file.display());
    Ok(())
}

#[tokio::test]
async fn in_one_process_on_sqlite_and_the_local_bus() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let dir = mesh.node_dirs[0].clone();
    create_inspect_delete(&mesh.grpc_addr, |_| dir.clone()).await?;
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn as_processes_on_postgres_and_nats() -> Result<()> {
    let database = PostgresDatabase::create().await?;
    let namespace = bus_namespace();
    let node_dir = tempfile::tempdir()?;
    let bus_args = ["--nats-url", NATS_URL, "--bus-namespace", &namespace];
    let key = node_dir.path().join("secret.key");
    let key = key.to_str().context("utf-8 temp dir")?;

    let scheduler_tls = pki().args(&Role::Scheduler);
    let node_tls = pki().args(&Role::Node(NodeId::parse("proc-node")?));
    let scheduler = BasaltProcess::spawn(
        &[
            &["scheduler", "--listen", "127.0.0.1:0", "--database-url", &database.url, "--secret-key-file", key][..],
            &bus_args,
            &scheduler_tls.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
        &[],
        &["grpc"],
    )?;
    let node_path = node_dir.path().to_str().context("utf-8 temp dir")?;
    let mut node = BasaltProcess::spawn(
        &[
            &[
                "volume-node",
                "--node-id",
                "proc-node",
                "--data-dir",
                node_path,
                "--listen",
                "127.0.0.1:0",
                "--report-interval-ms",
                "200",
            ][..],
            &bus_args,
            &node_tls.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
        &[],
        &["grpc"],
    )?;
    let grpc = scheduler.endpoint("grpc").to_owned();
    let mut client = volume_client(&grpc).await?;
    let admin = admin("ops");
    eventually("the scheduler hears the node over nats", || {
        let mut client = client.clone();
        let admin = admin.clone();
        async move {
            let pools = client.list_pools(admin.request(ListPoolsRequest::default())).await?.into_inner().pools;
            Ok(pools.iter().any(|pool| pool.name == "proc-node@file#default" && pool.schedulable))
        }
    })
    .await?;

    // Status events reach NATS subscribers outside the mesh.
    let bus = basalt::bus::Bus::connect_nats(NATS_URL, &namespace, &Default::default()).await?;
    let mut events = bus.subscribe_events().await?;
    create_inspect_delete(&grpc, |_| node_dir.path().to_path_buf()).await?;
    let mut transitions = Vec::new();
    while transitions.len() < 4 {
        let event = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut events))
            .await?
            .context("the event stream ended")?;
        transitions.push(format!("{}->{}", event.from_status, event.to_status));
    }
    ensure!(
        transitions == ["->creating", "creating->available", "available->deleting", "deleting->deleted"],
        "events seen on nats: {transitions:?}"
    );

    // A node killed without warning stops reporting; after three intervals it is unschedulable.
    node.kill();
    eventually("the silent node's pool is unschedulable", || {
        let mut client = client.clone();
        let admin = admin.clone();
        async move {
            let pools = client.list_pools(admin.request(ListPoolsRequest::default())).await?.into_inner().pools;
            Ok(pools.iter().all(|pool| !pool.schedulable))
        }
    })
    .await?;
    let services = client.list_services(admin.request(ListServicesRequest::default())).await?.into_inner().services;
    let node_service =
        services.iter().find(|service| service.host == "proc-node@file").context("the node is listed")?;
    ensure!(node_service.state == "down", "a silent node shows as down, got {}", node_service.state);
    let refused = client
        .create_volume(project("slice").request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
        .await
        .expect_err("no node is schedulable");
    ensure!(refused.code() == tonic::Code::ResourceExhausted, "got {refused:?}");
    ensure!(refused.message().contains("no volume node is reporting capacity"), "{}", refused.message());

    drop(scheduler);
    database.drop_database().await
}

#[tokio::test]
async fn a_generic_reflection_client_drives_basalt_up() -> Result<()> {
    let python = python_with("grpc-reflection", &["grpcio", "grpcio-reflection", "protobuf"], "grpc_reflection")?;
    let client_script = repo_root().join("integration/clients/grpc_reflect.py");
    let data_dir = tempfile::tempdir()?;
    let mut up = BasaltProcess::up(data_dir.path(), &["--max-capacity-gib", "100"], &[])?;
    let grpc = up.endpoint("grpc").to_owned();
    // The client certificate `basalt up` issues for gRPC clients, as its start-up lines say.
    let tls_dir = up.tls_dir();
    let tls = [
        format!("--cacert={}", tls_dir.join("ca.pem").display()),
        format!("--cert={}", tls_dir.join("csi.pem").display()),
        format!("--key={}", tls_dir.join("csi.key").display()),
        format!("--server-name={}", Role::Scheduler.dns_name()),
    ];
    let call = |args: &[&str]| -> Result<(bool, String, String)> {
        let output = Command::new(&python).arg(&client_script).args(&tls).arg(&grpc).args(args).output()?;
        Ok((output.status.success(), String::from_utf8(output.stdout)?, String::from_utf8(output.stderr)?))
    };
    let project_header = format!("-H=x-basalt-project-id={}", project_id("reflection"));
    let call_as_member = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend([project_header.as_str(), "-H=x-basalt-roles=member,reader"]);
        call(&args)
    };

    let (ok, services, errors) = call(&["list"])?;
    ensure!(ok, "listing services failed: {errors}");
    for expected in ["basalt.v1.VolumeService", "grpc.health.v1.Health"] {
        ensure!(services.lines().any(|line| line == expected), "{expected} missing from {services}");
    }

    let (ok, created, errors) = call_as_member(&[
        "call",
        "basalt.v1.VolumeService/CreateVolume",
        r#"{"size_gib": 1, "name": "by-reflection"}"#,
    ])?;
    ensure!(ok, "create failed: {errors}");
    let id = json_field(&created, "id")?;
    // The embedded node's id is pinned in the data directory, so a host rename orphans nothing.
    let pinned = std::fs::read_to_string(Path::new(up.endpoint("data")).join("node-id"))?;
    ensure!(json_field(&created, "node_id")? == pinned.trim(), "the volume's node is the pinned node id");
    let get_body = format!(r#"{{"volume_id": "{id}"}}"#);
    eventually("the volume is available", || {
        let result = call_as_member(&["call", "basalt.v1.VolumeService/GetVolume", &get_body]);
        async move {
            let (ok, shown, errors) = result?;
            ensure!(ok, "get failed: {errors}");
            Ok(json_field(&shown, "status")? == "VOLUME_STATUS_AVAILABLE")
        }
    })
    .await?;
    let file = Path::new(up.endpoint("data")).join("volumes").join(format!("volume-{id}"));
    let metadata = std::fs::metadata(&file).with_context(|| format!("{} should exist", file.display()))?;
    ensure!(metadata.len() == GIB && metadata.blocks() == 0, "expected a sparse 1 GiB file");

    let (ok, _, errors) = call_as_member(&["call", "basalt.v1.VolumeService/DeleteVolume", &get_body])?;
    ensure!(ok, "delete failed: {errors}");
    eventually("the volume is gone", || {
        let result = call_as_member(&["call", "basalt.v1.VolumeService/GetVolume", &get_body]);
        async move {
            let (ok, _, errors) = result?;
            Ok(!ok && errors.starts_with("ERROR NOT_FOUND"))
        }
    })
    .await?;
    ensure!(!file.exists(), "the volume file should be gone");

    let (ok, _, errors) = call_as_member(&["call", "basalt.v1.VolumeService/CreateVolume", r#"{"size_gib": 500}"#])?;
    ensure!(
        !ok && errors.starts_with("ERROR RESOURCE_EXHAUSTED no valid node"),
        "a huge volume must be refused, got: {errors}"
    );

    // Ctrl-C (SIGINT) or SIGTERM stops every part cleanly.
    ensure!(up.terminate()?, "basalt up should exit cleanly on SIGTERM");
    Ok(())
}

fn json_field(json: &str, field: &str) -> Result<String> {
    let needle = format!("\"{field}\": \"");
    let start = json.find(&needle).with_context(|| format!("no {field} in {json}"))? + needle.len();
    let end = json[start..].find('"').context("unterminated string")? + start;
    Ok(json[start..end].to_owned())
}

#[tokio::test]
async fn a_volume_larger_than_every_pool_is_resource_exhausted() -> Result<()> {
    let mesh = InProcessMesh::start(2).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let context = project("big");
    // Quota would refuse 512 TiB first; lift it, so placement is what refuses.
    client
        .update_quotas(admin("ops").request(basalt::proto::UpdateQuotasRequest {
            project_id: project_id("big"),
            limits: [("gigabytes".into(), -1)].into(),
            ..Default::default()
        }))
        .await?;
    let refused = client
        .create_volume(context.request(CreateVolumeRequest { size_gib: 512 * 1024, ..Default::default() }))
        .await
        .expect_err("512 TiB fits no test machine");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(refused.message().contains("no pool can fit a 524288 GiB volume"), "{}", refused.message());
    let listed = client.list_volumes(context.request(ListVolumesRequest::default())).await?.into_inner();
    assert!(listed.volumes.is_empty(), "a refused create leaves no volume behind");
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_node_that_stops_reporting_becomes_unschedulable() -> Result<()> {
    let mut mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let context = project("quiet");
    let created = client
        .create_volume(context.request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
        .await?
        .into_inner();
    wait_for_status(&mut client, &context, &created.id, VolumeStatus::Available).await?;

    mesh.stop_node(0).await;
    eventually("creates are refused once the node is stale", || {
        let mut client = client.clone();
        let context = context.clone();
        async move {
            match client.create_volume(context.request(CreateVolumeRequest { size_gib: 1, ..Default::default() })).await
            {
                Err(status) if status.code() == tonic::Code::ResourceExhausted => Ok(true),
                Err(status) => Err(status.into()),
                Ok(volume) => {
                    // Placed while the last report was still fresh; it will finish or fail on its own.
                    let _ = volume;
                    Ok(false)
                }
            }
        }
    })
    .await?;
    let pools = client.list_pools(admin("ops").request(ListPoolsRequest::default())).await?.into_inner().pools;
    assert!(pools.iter().all(|pool| !pool.schedulable));
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn projects_are_isolated_and_the_caller_must_name_one() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("owner");
    let stranger = project("stranger");
    let volume = client
        .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
        .await?
        .into_inner();
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;

    let hidden =
        client.get_volume(stranger.request(GetVolumeRequest { volume_id: volume.id.clone() })).await.unwrap_err();
    assert_eq!(hidden.code(), tonic::Code::NotFound);
    let refused = client
        .delete_volume(stranger.request(DeleteVolumeRequest { volume_id: volume.id.clone(), ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    let listed = client.list_volumes(stranger.request(ListVolumesRequest::default())).await?.into_inner();
    assert!(listed.volumes.is_empty());
    let all = client
        .list_volumes(stranger.request(ListVolumesRequest { all_projects: true, ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(all.code(), tonic::Code::PermissionDenied);
    let pools = client.list_pools(stranger.request(ListPoolsRequest::default())).await.unwrap_err();
    assert_eq!(pools.code(), tonic::Code::PermissionDenied);

    let anonymous =
        client.get_volume(tonic::Request::new(GetVolumeRequest { volume_id: volume.id.clone() })).await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let bad_id = client.get_volume(owner.request(GetVolumeRequest { volume_id: "nope".into() })).await.unwrap_err();
    assert_eq!(bad_id.code(), tonic::Code::InvalidArgument);
    assert!(bad_id.message().contains("expected a UUID"), "{}", bad_id.message());

    // The owner still has it, untouched.
    let kept = client.get_volume(owner.request(GetVolumeRequest { volume_id: volume.id.clone() })).await?.into_inner();
    assert_eq!(kept.status(), VolumeStatus::Available);
    mesh.shutdown().await;
    Ok(())
}
