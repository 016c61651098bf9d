//! iSCSI export through a real tgtd: a volume exported by its node is written and read through
//! the iSCSI protocol by a userspace initiator (qemu's libiscsi driver and libiscsi's tools), CHAP
//! and the initiator ACL refuse strangers, an extend shows through the LUN, and exports come back
//! with the same credentials after the node and tgtd restart.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use basalt::proto::{
    CreateVolumeRequest, DeleteVolumeRequest, ExtendVolumeRequest, NodeExport, NodeExportRequest, NodeInitiatorRequest,
    VolumeStatus,
};
use basalt_integration::*;

const HOST: &str = "iqn.2024-01.org.basalt.test:host1";
const STRANGER: &str = "iqn.2024-01.org.basalt.test:stranger";
const MIB: usize = 1 << 20;

/// Writes `source` to the start of the LUN through iSCSI (`opts`: qemu's image options).
fn write_through(opts: &str, source: &std::path::Path) -> Result<()> {
    qemu_img(&["convert", "-n", "-f", "raw", "--target-image-opts", source.to_str().context("utf-8")?, opts])
}

/// Reads the first `mib` MiB of the LUN through iSCSI into `destination`.
fn read_through(opts: &str, mib: u32, destination: &std::path::Path) -> Result<()> {
    let (count, input, output) =
        (format!("count={mib}"), format!("if={opts}"), format!("of={}", destination.display()));
    qemu_img(&["dd", "--image-opts", "-O", "raw", "bs=1M", &count, &input, &output])
}

fn image_opts(export: &NodeExport, initiator: &str, password: &str) -> String {
    format!(
        "driver=iscsi,transport=tcp,portal={},target={},lun={},user={},password={password},initiator-name={initiator}",
        export.target_portal, export.target_iqn, export.target_lun, export.auth_username
    )
}

fn url(export: &NodeExport, password: Option<&str>) -> String {
    let credentials = password.map(|password| format!("{}%{password}@", export.auth_username)).unwrap_or_default();
    format!("iscsi://{credentials}{}/{}/{}", export.target_portal, export.target_iqn, export.target_lun)
}

/// The LUN's size in bytes, as an initiator reads it; `Err` with the tool's output on failure.
fn read_capacity(export: &NodeExport, initiator: &str, password: Option<&str>) -> Result<u64> {
    let output = Command::new("iscsi-readcapacity16")
        .args(["-i", initiator, &url(export, password)])
        .output()
        .context("iscsi-readcapacity16 is required: install Debian's libiscsi-bin (./scripts/test does)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "login refused: {text}");
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse().ok())
            .with_context(|| format!("no {name} in {text}"))
    };
    Ok((field("RETURNED LOGICAL BLOCK ADDRESS:")? + 1) * field("LOGICAL BLOCK LENGTH IN BYTES:")?)
}

fn qemu_img(args: &[&str]) -> Result<()> {
    let output = Command::new("qemu-img").args(args).output().context("qemu-img is required (Debian's qemu-utils)")?;
    ensure!(output.status.success(), "qemu-img {:?} failed: {}", args[0], String::from_utf8_lossy(&output.stderr));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_reach_the_host_through_the_tgt_export() -> Result<()> {
    let mut tgtd = Tgtd::start()?;
    let mut mesh = InProcessMesh::start(0).await?;
    let settings = tgtd.settings();
    let configure = |config: &mut basalt_volume_node::NodeConfig| {
        config.export = basalt_volume_node::ExportSettings::Tgt(settings.clone())
    };
    mesh.add_node_with("iscsi-node", configure).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("iscsi");
    let volume = client
        .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
        .await?
        .into_inner();
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;

    let mut node = mesh.node_client(0)?;
    let request = NodeExportRequest { volume_id: volume.id.clone(), pool: "default".into(), ..Default::default() };
    let export = node.export_volume(request.clone()).await?.into_inner();
    assert_eq!(export.target_iqn, format!("iqn.2010-10.org.basalt:volume-{}", volume.id));
    assert_eq!((export.target_lun, export.auth_username.len(), export.auth_password.len()), (1, 20, 16));
    assert_eq!(node.export_volume(request.clone()).await?.into_inner(), export, "exporting again changes nothing");
    let allow = NodeInitiatorRequest { volume_id: volume.id.clone(), pool: "default".into(), initiator: HOST.into() };
    node.allow_initiator(allow.clone()).await?;

    // Strangers are refused: no password, a wrong one, an initiator outside the ACL.
    let password = export.auth_password.clone();
    assert!(read_capacity(&export, HOST, None).unwrap_err().to_string().contains("Login"));
    assert!(
        read_capacity(&export, HOST, Some("wrong-password-1"))
            .unwrap_err()
            .to_string()
            .contains("Authentication failure")
    );
    assert!(read_capacity(&export, STRANGER, Some(&password)).is_err());
    assert_eq!(read_capacity(&export, HOST, Some(&password))?, GIB);

    // 64 MiB of random bytes written through iSCSI, read back through iSCSI.
    let work = tempfile::tempdir()?;
    let written = work.path().join("written.raw");
    let random: Vec<u8> =
        (0..64 * MIB).map(|index| (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) as u8).collect();
    std::fs::write(&written, &random)?;
    let opts = image_opts(&export, HOST, &password);
    write_through(&opts, &written)?;
    let read_back = work.path().join("read.raw");
    let read = |path: &std::path::Path| read_through(&opts, 64, path);
    read(&read_back)?;
    ensure!(std::fs::read(&read_back)? == random, "the bytes read through iSCSI differ from those written");
    let backing = mesh.node_dir("iscsi-node").join(format!("volume-{}", volume.id));
    ensure!(read_at(&backing, 0, 64 * MIB)? == random, "the volume file does not hold what the host wrote");

    // An extend shows through the LUN.
    client.extend_volume(owner.request(ExtendVolumeRequest { volume_id: volume.id.clone(), new_size_gib: 2 })).await?;
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;
    assert_eq!(read_capacity(&export, HOST, Some(&password))?, 2 * GIB);

    // The node and tgtd restart (a host reboot): the export comes back with the same credentials.
    mesh.stop_node(0).await;
    let (portal_port, control_port) = (tgtd.portal_port, tgtd.control_port);
    drop(tgtd);
    tgtd = Tgtd::start_on(portal_port, control_port)?;
    assert!(!tgtd.show_targets()?.contains(&export.target_iqn), "a new tgtd starts empty");
    mesh.add_node_with("iscsi-node", configure).await?;
    assert_eq!(read_capacity(&export, HOST, Some(&password))?, 2 * GIB, "the same connection info works again");
    let again = work.path().join("again.raw");
    read(&again)?;
    ensure!(std::fs::read(&again)? == random, "the data survived the restart");
    assert!(read_capacity(&export, STRANGER, Some(&password)).is_err(), "the ACL came back too");

    // Deleting the volume removes its target: no stale export is left.
    let mut node = mesh.node_client(0)?;
    node.revoke_initiator(allow).await?;
    assert!(read_capacity(&export, HOST, Some(&password)).is_err(), "a revoked initiator is refused");
    client
        .delete_volume(owner.request(DeleteVolumeRequest { volume_id: volume.id.clone(), ..Default::default() }))
        .await?;
    wait_until_gone(&mut client, &owner, &volume.id).await?;
    let left = tgtd.show_targets()?;
    ensure!(!left.contains(&export.target_iqn), "a target outlived its volume:\n{left}");
    node.unexport_volume(request).await?;
    mesh.shutdown().await;
    Ok(())
}

fn export_from(info: &basalt::proto::ConnectionInfo) -> Result<NodeExport> {
    let Some(basalt::proto::connection_info::Target::Iscsi(iscsi)) = &info.target else {
        anyhow::bail!("connection_info is not iSCSI: {}", info.driver_volume_type);
    };
    Ok(NodeExport {
        volume_id: info.volume_id.clone(),
        target_iqn: iscsi.target_iqn.clone(),
        target_portal: iscsi.target_portal.clone(),
        target_lun: iscsi.target_lun,
        auth_username: iscsi.auth_username.clone(),
        auth_password: iscsi.auth_password.clone(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn attachments_connect_hosts_through_iscsi_and_clean_up_after_them() -> Result<()> {
    use basalt::proto::{
        AttachStatus, CompleteAttachmentRequest, Connector, CreateAttachmentRequest, DeleteAttachmentRequest,
        GetVolumeRequest, UpdateAttachmentRequest,
    };
    let tgtd = Tgtd::start()?;
    let mut mesh = InProcessMesh::start(0).await?;
    let settings = tgtd.settings();
    let configure = |config: &mut basalt_volume_node::NodeConfig| {
        config.export = basalt_volume_node::ExportSettings::Tgt(settings.clone())
    };
    mesh.add_node_with("attach-node", configure).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("attach");
    let volume = client
        .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
        .await?
        .into_inner();
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;
    let connector =
        Connector { initiator: HOST.into(), host: "host1".into(), ip: "127.0.0.1".into(), ..Default::default() };

    // Reserve, then connect: the attachment carries Cinder's iSCSI connection_info.
    let reserved = client
        .create_attachment(owner.request(CreateAttachmentRequest {
            volume_id: volume.id.clone(),
            instance_id: "vm-1".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let connected = client
        .update_attachment(owner.request(UpdateAttachmentRequest {
            attachment_id: reserved.id.clone(),
            connector: Some(connector.clone()),
        }))
        .await?
        .into_inner();
    assert_eq!(connected.status(), AttachStatus::Attaching);
    let info = connected.connection_info.clone().context("a connected attachment has connection_info")?;
    assert_eq!(info.driver_volume_type, "iscsi");
    assert_eq!(info.access_mode, "rw");
    let export = export_from(&info)?;
    let Some(basalt::proto::connection_info::Target::Iscsi(iscsi)) = &info.target else { unreachable!() };
    assert_eq!((iscsi.auth_method.as_str(), iscsi.target_discovered, iscsi.target_lun), ("CHAP", false, 1));
    let password = export.auth_password.clone();
    assert!(read_capacity(&export, STRANGER, Some(&password)).is_err(), "only the connector's initiator may log in");

    let work = tempfile::tempdir()?;
    let written = work.path().join("written.raw");
    let pattern: Vec<u8> =
        (0..8 * MIB).map(|index| (index as u64).wrapping_mul(0x2545_F491_4F6C_DD1D).rotate_left(29) as u8).collect();
    std::fs::write(&written, &pattern)?;
    let opts = image_opts(&export, HOST, &password);
    write_through(&opts, &written)?;
    client.complete_attachment(owner.request(CompleteAttachmentRequest { attachment_id: reserved.id.clone() })).await?;
    let in_use =
        client.get_volume(owner.request(GetVolumeRequest { volume_id: volume.id.clone() })).await?.into_inner();
    assert_eq!((in_use.status(), in_use.attach_status()), (VolumeStatus::InUse, AttachStatus::Attached));
    // Extend while attached (Cinder 3.42): the host sees the new capacity, the volume stays in-use.
    client.extend_volume(owner.request(ExtendVolumeRequest { volume_id: volume.id.clone(), new_size_gib: 3 })).await?;
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::InUse).await?;
    assert_eq!(read_capacity(&export, HOST, Some(&password))?, 3 * GIB);
    let refused = client
        .delete_volume(owner.request(DeleteVolumeRequest { volume_id: volume.id.clone(), ..Default::default() }))
        .await;
    expect_refusal(refused, tonic::Code::FailedPrecondition, "is in-use; deleting needs it to be available");

    // Detach: the host's access and the target go with the last attachment.
    client.delete_attachment(owner.request(DeleteAttachmentRequest { attachment_id: reserved.id.clone() })).await?;
    ensure!(!tgtd.show_targets()?.contains(&export.target_iqn), "no target may outlive the last attachment");
    let detached =
        client.get_volume(owner.request(GetVolumeRequest { volume_id: volume.id.clone() })).await?.into_inner();
    assert_eq!(detached.status(), VolumeStatus::Available);

    // Attach again (a connector at creation connects at once): the bytes are still there.
    let again = client
        .create_attachment(owner.request(CreateAttachmentRequest {
            volume_id: volume.id.clone(),
            connector: Some(connector),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let export = export_from(&again.connection_info.clone().context("connection_info")?)?;
    assert_ne!(export.auth_password, password, "each export has fresh CHAP credentials");
    assert!(read_capacity(&export, HOST, Some(&password)).is_err(), "the old export's password no longer works");
    let read_back = work.path().join("read.raw");
    let opts = image_opts(&export, HOST, &export.auth_password);
    read_through(&opts, 8, &read_back)?;
    ensure!(std::fs::read(&read_back)? == pattern, "the bytes written in the first attachment read back differently");

    client.delete_attachment(owner.request(DeleteAttachmentRequest { attachment_id: again.id.clone() })).await?;
    client
        .delete_volume(owner.request(DeleteVolumeRequest { volume_id: volume.id.clone(), ..Default::default() }))
        .await?;
    wait_until_gone(&mut client, &owner, &volume.id).await?;
    ensure!(!tgtd.show_targets()?.contains("volume-"), "targets left behind");
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rest_attachment_flow_returns_cinder_connection_info() -> Result<()> {
    use axum::http::{Method, StatusCode};
    let RestSetup { tgtd, mesh, api, token, base, volume } = rest_setup("rest-node").await?;

    let body =
        format!(r#"{{"attachment": {{"volume_uuid": "{volume}", "instance_uuid": "vm-9", "connector": {{}}}}}}"#);
    let reserved =
        api.call(Method::POST, &format!("{base}/attachments"), Some(&token), Some("3.44"), Some(&body)).await?;
    assert_eq!(reserved.status, StatusCode::OK, "{:?}", reserved.body);
    assert_eq!(reserved.body["attachment"]["status"], "reserved");
    let id = reserved.body["attachment"]["id"].as_str().context("attachment id")?.to_owned();
    let connector = format!(
        r#"{{"attachment": {{"connector": {{"initiator": "{HOST}", "host": "host9", "ip": "127.0.0.1", "multipath": false}}}}}}"#
    );
    let connected = api
        .call(Method::PUT, &format!("{base}/attachments/{id}"), Some(&token), Some("3.44"), Some(&connector))
        .await?;
    assert_eq!(connected.status, StatusCode::OK, "{:?}", connected.body);
    let info = &connected.body["attachment"]["connection_info"];
    assert_eq!(info["driver_volume_type"], "iscsi");
    assert_eq!(info["data"]["target_lun"], 1, "target_lun is a number, as in Cinder");
    assert_eq!(info["data"]["target_discovered"], false);
    assert_eq!(info["data"]["target_portal"], tgtd.portal().as_str());
    assert_eq!(info["data"]["auth_method"], "CHAP");
    let completed = api
        .call(
            Method::POST,
            &format!("{base}/attachments/{id}/action"),
            Some(&token),
            Some("3.44"),
            Some(r#"{"os-complete": {}}"#),
        )
        .await?;
    assert_eq!(completed.status, StatusCode::NO_CONTENT);
    let shown = api.call(Method::GET, &format!("{base}/volumes/{volume}"), Some(&token), None, None).await?;
    assert_eq!(shown.body["volume"]["status"], "in-use");
    assert_eq!(shown.body["volume"]["attachments"][0]["server_id"], "vm-9");
    let deleted =
        api.call(Method::DELETE, &format!("{base}/attachments/{id}"), Some(&token), Some("3.44"), None).await?;
    assert_eq!(deleted.body, serde_json::json!({"attachments": []}));
    let shown = api.call(Method::GET, &format!("{base}/volumes/{volume}"), Some(&token), None, None).await?;
    assert_eq!(shown.body["volume"]["status"], "available");
    ensure!(!tgtd.show_targets()?.contains(&volume), "the target went with the attachment");
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_process_brings_its_exports_back() -> Result<()> {
    use basalt::proto::{Connector, CreateAttachmentRequest, DeleteAttachmentRequest};
    let tgtd = Tgtd::start()?;
    let (portal_port, control_port) = (tgtd.portal_port, tgtd.control_port);
    let control = control_port.to_string();
    let portal = tgtd.portal();
    let mut mesh = ProcessMesh::start(
        None,
        1,
        1,
        &["--export-target", "tgt", "--tgt-control-port", &control, "--iscsi-portal", &portal],
    )?;
    mesh.wait_for_nodes(0).await?;
    let mut client = volume_client(&mesh.scheduler_addr(0)).await?;
    let owner = project("restart");
    let volume = client
        .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
        .await?
        .into_inner();
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;
    let attachment = client
        .create_attachment(owner.request(CreateAttachmentRequest {
            volume_id: volume.id.clone(),
            connector: Some(Connector { initiator: HOST.into(), ..Default::default() }),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let export = export_from(&attachment.connection_info.clone().context("connection_info")?)?;
    let password = export.auth_password.clone();
    let work = tempfile::tempdir()?;
    let written = work.path().join("written.raw");
    let pattern: Vec<u8> =
        (0..4 * MIB).map(|index| (index as u64).wrapping_mul(0xA24B_AED4_963E_E407).rotate_left(11) as u8).collect();
    std::fs::write(&written, &pattern)?;
    let opts = image_opts(&export, HOST, &password);
    write_through(&opts, &written)?;

    // SIGKILL the node, and lose tgtd's state with it (a host reboot): both come back.
    mesh.kill_node(0);
    drop(tgtd);
    let tgtd = Tgtd::start_on(portal_port, control_port)?;
    mesh.restart_node(0)?;
    mesh.wait_for_nodes(0).await?;
    let read_back = work.path().join("read.raw");
    read_through(&opts, 4, &read_back)?;
    ensure!(std::fs::read(&read_back)? == pattern, "the same connection_info reads the same bytes after the restart");

    client.delete_attachment(owner.request(DeleteAttachmentRequest { attachment_id: attachment.id.clone() })).await?;
    ensure!(!tgtd.show_targets()?.contains(&export.target_iqn), "no stale target after the detach");
    Ok(())
}

#[test]
fn a_node_without_its_tgtd_refuses_to_start_with_a_clear_error() -> Result<()> {
    let data = tempfile::tempdir()?;
    let unused_control_port = (1000 + free_port()? % 9000).to_string();
    let output = Command::new(basalt_binary()?)
        .args(["volume-node", "--node-id", "lonely", "--listen", "127.0.0.1:0", "--nats-url", NATS_URL])
        .args(["--data-dir", data.path().to_str().context("utf-8")?, "--bus-namespace", &bus_namespace()])
        .args(pki().args(&basalt::tls::Role::Node(basalt::ids::NodeId::parse("lonely")?)))
        .args([
            "--export-target",
            "tgt",
            "--tgt-control-port",
            &unused_control_port,
            "--iscsi-portal",
            "127.0.0.1:3260",
        ])
        .output()?;
    ensure!(!output.status.success(), "the node started without tgtd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.contains("tgtd is not reachable on control port"), "unclear error: {stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_legacy_connection_flow_works_over_rest() -> Result<()> {
    use axum::http::{Method, StatusCode};
    let RestSetup { tgtd, mesh, api, token, base, volume } = rest_setup("legacy-node").await?;
    let action = format!("{base}/volumes/{volume}/action");
    let volume_path = format!("{base}/volumes/{volume}");

    assert_eq!(
        api.call(Method::POST, &action, Some(&token), None, Some(r#"{"os-reserve": null}"#)).await?.status,
        StatusCode::ACCEPTED
    );
    let connector =
        format!(r#"{{"os-initialize_connection": {{"connector": {{"initiator": "{HOST}", "host": "legacy"}}}}}}"#);
    let initialized = api.call(Method::POST, &action, Some(&token), None, Some(&connector)).await?;
    assert_eq!(initialized.status, StatusCode::OK, "{:?}", initialized.body);
    let data = &initialized.body["connection_info"]["data"];
    let export = NodeExport {
        volume_id: volume.clone(),
        target_iqn: data["target_iqn"].as_str().context("iqn")?.to_owned(),
        target_portal: data["target_portal"].as_str().context("portal")?.to_owned(),
        target_lun: data["target_lun"].as_u64().context("lun")? as u32,
        auth_username: data["auth_username"].as_str().context("user")?.to_owned(),
        auth_password: data["auth_password"].as_str().context("password")?.to_owned(),
        ..Default::default()
    };
    assert_eq!(read_capacity(&export, HOST, Some(&export.auth_password))?, GIB);
    let attach = r#"{"os-attach": {"instance_uuid": "11111111-2222-3333-4444-555555555555", "mountpoint": "/dev/vdb", "mode": "rw"}}"#;
    assert_eq!(api.call(Method::POST, &action, Some(&token), None, Some(attach)).await?.status, StatusCode::ACCEPTED);
    assert_eq!(status(&api, &volume_path, &token).await?, "in-use");
    assert_eq!(
        api.call(Method::POST, &action, Some(&token), None, Some(r#"{"os-begin_detaching": null}"#)).await?.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(status(&api, &volume_path, &token).await?, "detaching");
    let terminate = format!(r#"{{"os-terminate_connection": {{"connector": {{"initiator": "{HOST}"}}}}}}"#);
    assert_eq!(
        api.call(Method::POST, &action, Some(&token), None, Some(&terminate)).await?.status,
        StatusCode::ACCEPTED
    );
    ensure!(!tgtd.show_targets()?.contains(&export.target_iqn), "the target went with the last connection");
    assert_eq!(
        api.call(Method::POST, &action, Some(&token), None, Some(r#"{"os-detach": {}}"#)).await?.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(status(&api, &volume_path, &token).await?, "available");
    mesh.shutdown().await;
    Ok(())
}

async fn status(api: &RestApi, volume_path: &str, token: &str) -> Result<serde_json::Value> {
    Ok(api.call(axum::http::Method::GET, volume_path, Some(token), None, None).await?.body["volume"]["status"].clone())
}

/// A tgtd, a mesh whose node exports through it, the REST API, and one available volume.
struct RestSetup {
    tgtd: Tgtd,
    mesh: InProcessMesh,
    api: RestApi,
    token: String,
    base: String,
    volume: String,
}

async fn rest_setup(node: &str) -> Result<RestSetup> {
    let tgtd = Tgtd::start()?;
    let mut mesh = InProcessMesh::start(0).await?;
    let settings = tgtd.settings();
    mesh.add_node_with(node, |config| config.export = basalt_volume_node::ExportSettings::Tgt(settings)).await?;
    let api = RestApi::start(&mesh).await?;
    let project = project_id("rest-iscsi");
    let token = format!("admin:{project}");
    let base = format!("/v3/{project}");
    let body = r#"{"volume": {"size": 1}}"#;
    let created =
        api.call(axum::http::Method::POST, &format!("{base}/volumes"), Some(&token), None, Some(body)).await?;
    let volume = created.body["volume"]["id"].as_str().context("volume id")?.to_owned();
    let mut client = volume_client(&mesh.grpc_addr).await?;
    wait_for_status(&mut client, &admin("rest-iscsi"), &volume, VolumeStatus::Available).await?;
    Ok(RestSetup { tgtd, mesh, api, token, base, volume })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multiattach_type_lets_two_hosts_share_a_volume() -> Result<()> {
    use basalt::proto::{
        CompleteAttachmentRequest, Connector, CreateAttachmentRequest, CreateVolumeTypeRequest,
        DeleteAttachmentRequest, GetVolumeRequest,
    };
    const SECOND: &str = "iqn.2024-01.org.basalt.test:host2";
    let tgtd = Tgtd::start()?;
    let mut mesh = InProcessMesh::start(0).await?;
    let settings = tgtd.settings();
    mesh.add_node_with("shared-node", |config| config.export = basalt_volume_node::ExportSettings::Tgt(settings))
        .await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("shared");
    client
        .create_volume_type(admin("ops").request(CreateVolumeTypeRequest {
            name: "shared".into(),
            extra_specs: [("multiattach".into(), "<is> True".into())].into(),
            ..Default::default()
        }))
        .await?;
    let volume = client
        .create_volume(owner.request(CreateVolumeRequest {
            size_gib: 1,
            volume_type: "shared".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert!(volume.multiattach, "the type makes the volume multiattach");
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;

    let attach = |initiator: &'static str| {
        let mut client = client.clone();
        let owner = owner.clone();
        let volume_id = volume.id.clone();
        async move {
            let connector = Connector { initiator: initiator.into(), ..Default::default() };
            let request = CreateAttachmentRequest { volume_id, connector: Some(connector), ..Default::default() };
            let attachment = client.create_attachment(owner.request(request)).await?.into_inner();
            let request = CompleteAttachmentRequest { attachment_id: attachment.id.clone() };
            client.complete_attachment(owner.request(request)).await?;
            anyhow::Ok(attachment)
        }
    };
    let first = attach(HOST).await?;
    let second = attach(SECOND).await?;
    let shown = client.get_volume(owner.request(GetVolumeRequest { volume_id: volume.id.clone() })).await?.into_inner();
    assert_eq!((shown.status(), shown.attachments.len()), (VolumeStatus::InUse, 2));
    let export = export_from(&second.connection_info.clone().context("connection_info")?)?;
    assert_eq!(read_capacity(&export, HOST, Some(&export.auth_password))?, GIB);
    assert_eq!(read_capacity(&export, SECOND, Some(&export.auth_password))?, GIB);

    client.delete_attachment(owner.request(DeleteAttachmentRequest { attachment_id: first.id.clone() })).await?;
    assert!(read_capacity(&export, HOST, Some(&export.auth_password)).is_err(), "the first host lost its access");
    assert_eq!(read_capacity(&export, SECOND, Some(&export.auth_password))?, GIB, "the second host keeps it");
    let shown = client.get_volume(owner.request(GetVolumeRequest { volume_id: volume.id.clone() })).await?.into_inner();
    assert_eq!(shown.status(), VolumeStatus::InUse);
    client.delete_attachment(owner.request(DeleteAttachmentRequest { attachment_id: second.id.clone() })).await?;
    ensure!(!tgtd.show_targets()?.contains(&export.target_iqn), "the target went with the last host");
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;
    mesh.shutdown().await;
    Ok(())
}
