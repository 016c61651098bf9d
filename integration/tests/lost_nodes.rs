//! A volume node that is gone for good: declared lost, its volumes go to error with a user
//! message and force deletes finish at once (quota back to zero), instead of retrying for the
//! node's window and ending in error_deleting; or its volumes move to the node that took over its
//! storage, and work there.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::http::{Method, StatusCode};
use basalt::proto::{DeclareNodeLostRequest, MoveNodeResourcesRequest};
use basalt_integration::*;
use tonic::Code;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";

async fn in_use(api: &RestApi, caller: &RestCaller, resource: &str) -> Result<i64> {
    let reply = caller.call(api, Method::GET, &format!("/os-quota-sets/{PROJECT}?usage=true"), "3.0", None).await?;
    reply.body["quota_set"][resource]["in_use"].as_i64().with_context(|| format!("{resource}: {:?}", reply.body))
}

#[tokio::test]
async fn a_lost_node_s_volumes_go_to_error_and_force_deletes_finish_at_once() -> Result<()> {
    // The production retry window: a delete that waited for the node would outlast the test.
    let control =
        basalt_scheduler::ControlPlaneConfig { node_retry_window: Duration::from_secs(600), ..fast_control_plane() };
    let mut mesh = InProcessMesh::start_with(1, None, control).await?;
    let api = RestApi::start(&mesh).await?;
    let rest_admin = RestCaller::new(PROJECT, "admin");
    let created = rest_admin.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 2}}"#)).await?;
    let volume = created.body["volume"]["id"].as_str().context("a volume id")?.to_owned();
    rest_admin.wait_for(&api, &format!("/volumes/{volume}"), "volume", "available").await?;
    let body = format!(r#"{{"snapshot": {{"volume_id": "{volume}"}}}}"#);
    let snapshot = rest_admin.call(&api, Method::POST, "/snapshots", "3.0", Some(&body)).await?;
    let snapshot = snapshot.body["snapshot"]["id"].as_str().context("a snapshot id")?.to_owned();
    rest_admin.wait_for(&api, &format!("/snapshots/{snapshot}"), "snapshot", "available").await?;

    let mut client = volume_client(&mesh.grpc_addr).await?;
    let operator = admin("ops");
    let declare = DeclareNodeLostRequest { node_id: "node-0".into(), reason: "disk array burnt".into() };
    let refused = client.declare_node_lost(operator.request(declare.clone())).await.unwrap_err();
    ensure!(refused.code() == Code::FailedPrecondition && refused.message().contains("is reporting"), "{refused:?}");
    let member = project("bystander");
    let denied = client.declare_node_lost(member.request(declare.clone())).await.unwrap_err();
    ensure!(denied.code() == Code::PermissionDenied, "a member declared a node lost: {denied:?}");

    mesh.stop_node(0).await;
    eventually("the stopped node can be declared lost", || {
        let (mut client, request) = (client.clone(), operator.request(declare.clone()));
        async move { Ok(client.declare_node_lost(request).await.is_ok()) }
    })
    .await?;
    let shown = rest_admin.call(&api, Method::GET, &format!("/volumes/{volume}"), "3.0", None).await?;
    ensure!(shown.body["volume"]["status"] == "error", "{:?}", shown.body);
    let messages = rest_admin.call(&api, Method::GET, "/messages", "3.3", None).await?;
    let listed = messages.body["messages"].as_array().context("messages")?;
    ensure!(
        listed.iter().any(|message| message["resource_uuid"] == volume.as_str()
            && message["event_id"] == "VOLUME_VOLUME_901_901"
            && message["user_message"].as_str().is_some_and(|text| text.contains("declared lost"))),
        "{listed:?}"
    );

    // Force-deleted with its snapshot: gone without its node, the quota back to zero.
    let path = format!("/volumes/{volume}?cascade=true&force=true");
    let deleted = rest_admin.call(&api, Method::DELETE, &path, "3.23", None).await?;
    ensure!(deleted.status == StatusCode::ACCEPTED, "{:?}", deleted.body);
    eventually("the lost node's volume is gone", || async {
        Ok(rest_admin.call(&api, Method::GET, &format!("/volumes/{volume}"), "3.0", None).await?.status == 404)
    })
    .await?;
    for resource in ["volumes", "snapshots", "gigabytes"] {
        ensure!(in_use(&api, &rest_admin, resource).await? == 0, "{resource} still in use");
    }
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_lost_node_s_backups_are_deleted_through_another_node() -> Result<()> {
    let mut mesh = InProcessMesh::start(2).await?;
    let api = RestApi::start(&mesh).await?;
    let rest_admin = RestCaller::new(PROJECT, "admin");
    let created = rest_admin.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1}}"#)).await?;
    let volume = created.body["volume"]["id"].as_str().context("a volume id")?.to_owned();
    let shown = rest_admin.wait_for(&api, &format!("/volumes/{volume}"), "volume", "available").await?;
    let host = shown["os-vol-host-attr:host"].as_str().context("the volume's host")?.to_owned();
    let node = host.split('@').next().context("a node")?.to_owned();
    let body = format!(r#"{{"backup": {{"volume_id": "{volume}"}}}}"#);
    let backup = rest_admin.call(&api, Method::POST, "/backups", "3.0", Some(&body)).await?;
    let backup = backup.body["backup"]["id"].as_str().context("a backup id")?.to_owned();
    rest_admin.wait_for(&api, &format!("/backups/{backup}"), "backup", "available").await?;

    let store = mesh.backup_store_dir().join("projects").join(PROJECT);
    let manifest = |files: &[std::path::PathBuf]| files.iter().any(|path| path.to_string_lossy().contains(&backup));
    ensure!(manifest(&walk(&store)?), "the backup's manifest is in the shared store");
    mesh.stop_node(if node == "node-0" { 0 } else { 1 }).await;
    let client = volume_client(&mesh.grpc_addr).await?;
    let operator = admin("ops");
    let declare = DeclareNodeLostRequest { node_id: node.clone(), reason: String::new() };
    eventually("the stopped node can be declared lost", || {
        let (mut client, request) = (client.clone(), operator.request(declare.clone()));
        async move { Ok(client.declare_node_lost(request).await.is_ok()) }
    })
    .await?;
    let deleted = rest_admin.call(&api, Method::DELETE, &format!("/backups/{backup}"), "3.0", None).await?;
    ensure!(deleted.status == StatusCode::ACCEPTED, "{:?}", deleted.body);
    eventually("the lost node's backup is deleted through the other node", || async {
        Ok(rest_admin.call(&api, Method::GET, &format!("/backups/{backup}"), "3.0", None).await?.status == 404)
    })
    .await?;
    ensure!(!manifest(&walk(&store)?), "the backup's manifest stayed in the store");
    mesh.shutdown().await;
    Ok(())
}

fn walk(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(files) };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() { files.extend(walk(&path)?) } else { files.push(path) }
    }
    Ok(files)
}

#[tokio::test]
async fn a_node_s_volumes_move_to_the_node_that_took_over_its_storage() -> Result<()> {
    let mut mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let rest_admin = RestCaller::new(PROJECT, "admin");
    let created = rest_admin.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1}}"#)).await?;
    let volume = created.body["volume"]["id"].as_str().context("a volume id")?.to_owned();
    rest_admin.wait_for(&api, &format!("/volumes/{volume}"), "volume", "available").await?;
    let bytes = pattern(81, 1 << 20);
    let name = format!("volume-{volume}");
    write_at(&mesh.node_dir("node-0").join(&name), 0, &bytes)?;

    // node-0 stops; node-1 comes up with node-0's storage.
    mesh.stop_node(0).await;
    mesh.add_node("node-1").await?;
    std::fs::copy(mesh.node_dir("node-0").join(&name), mesh.node_dir("node-1").join(&name))?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let operator = admin("ops");
    let request = MoveNodeResourcesRequest { from_node_id: "node-0".into(), to_node_id: "node-1".into() };
    // The move needs node-0 silent and node-1 fresh at the same moment; on a loaded machine a
    // report of node-1 can come late enough to make it briefly stale, so both refusals are waited out.
    let deadline = tokio::time::Instant::now() + WAIT;
    let moved = loop {
        match client.move_node_resources(operator.request(request.clone())).await {
            Ok(done) => break done.into_inner(),
            Err(status) if status.message().contains("reporting") => {
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "node-0 never went silent with node-1 reporting: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(status.into()),
        }
    };
    ensure!(moved.volumes == 1, "moved {moved:?}");
    let backwards = MoveNodeResourcesRequest { from_node_id: "node-1".into(), to_node_id: "node-0".into() };
    let refused = client.move_node_resources(operator.request(backwards)).await.unwrap_err();
    // Refused because node-1 reports (or, should its report come late, because node-0 does not).
    ensure!(refused.message().contains("reporting"), "{refused:?}");

    // The volume works on its new node: it grows there, bytes kept.
    let extend = r#"{"os-extend": {"new_size": 2}}"#;
    let extended =
        rest_admin.call(&api, Method::POST, &format!("/volumes/{volume}/action"), "3.0", Some(extend)).await?;
    ensure!(extended.status == StatusCode::ACCEPTED, "{:?}", extended.body);
    let shown = rest_admin.wait_for(&api, &format!("/volumes/{volume}"), "volume", "available").await?;
    ensure!(shown["size"] == 2 && shown["os-vol-host-attr:host"] == "node-1@file#default", "{shown:?}");
    let file = mesh.node_dir("node-1").join(&name);
    ensure!(std::fs::metadata(&file)?.len() == 2 << 30 && read_at(&file, 0, bytes.len())? == bytes);
    mesh.shutdown().await;
    Ok(())
}

/// `basalt admin` reaches `basalt up`'s scheduler with the client certificate it issued.
#[test]
fn basalt_admin_declares_a_node_lost_over_the_mesh() -> Result<()> {
    let data = tempfile::tempdir()?;
    let up = BasaltProcess::up(data.path(), &[], &[])?;
    let files = basalt::tls::TlsFiles::in_dir(&up.tls_dir(), &basalt::tls::Role::Csi);
    let admin = |args: &[&str]| {
        let mut command = std::process::Command::new(basalt_binary()?);
        command.arg("admin").args(args).args(["--scheduler-endpoint", up.endpoint("grpc")]);
        command.arg("--tls-ca").arg(&files.ca).arg("--tls-cert").arg(&files.cert).arg("--tls-key").arg(&files.key);
        let output = command.output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        Ok::<_, anyhow::Error>((output.status.success(), text))
    };
    let (ok, text) = admin(&["node-lost", "ghost", "--reason", "never came back"])?;
    ensure!(ok && text.contains("volume node ghost declared lost: 0 volumes"), "{text}");
    let (ok, text) = admin(&["node-lost", "ghost"])?;
    ensure!(ok, "declaring a lost node lost again is not an error: {text}");
    let (ok, text) = admin(&["move-node", "ghost", "ghost-2"])?;
    ensure!(!ok && text.contains("not reporting"), "moving to a node that does not report: {text}");
    Ok(())
}
