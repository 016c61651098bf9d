//! Identity and policy with a real Keystone (started by the test): every REST operation of the
//! gateway's OpenAPI document (so a new route is covered the day it is added), and every action
//! of the action routes, called as project A's member, A's reader, project B's member, without a
//! token, with an expired token and with a revoked token, and as an admin of A. Each answer is the
//! one Cinder's policy (new defaults) gives, and no refused call changes anything.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use axum::http::Method;
use basalt::proto::{
    AttachStatus, CreateAttachmentRequest, CreateBackupRequest, CreateSnapshotRequest, CreateVolumeRequest,
    ListMessagesRequest, SnapshotStatus, VolumeStatus,
};
use basalt_integration::{keystone::Keystone, *};
use serde_json::Value;

/// Who may call an operation under Cinder's new defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Any project reader (and members, and admins).
    Read,
    /// Project members and admins.
    Write,
    /// Admins only.
    Admin,
}

/// Placeholders in paths and bodies, replaced by the ids of project A's resources.
struct Ids {
    project: String,
    volume: String,
    snapshot: String,
    backup: String,
    attachment: String,
    volume_type: String,
    qos: String,
    transfer: String,
    message: String,
    group_type: String,
    group: String,
    /// A group with a volume, and a group snapshot of it.
    snapped_group: String,
    group_snapshot: String,
}

impl Ids {
    fn fill(&self, text: &str) -> String {
        text.replace("{volume_id}", &self.volume)
            .replace("{snapshot_id}", &self.snapshot)
            .replace("{backup_id}", &self.backup)
            .replace("{attachment_id}", &self.attachment)
            .replace("{type_id}", &self.volume_type)
            .replace("{qos_id}", &self.qos)
            .replace("{transfer_id}", &self.transfer)
            .replace("{message_id}", &self.message)
            .replace("{group_type_id}", &self.group_type)
            .replace("{group_id}", &self.group)
            .replace("{snapped_group_id}", &self.snapped_group)
            .replace("{group_snapshot_id}", &self.group_snapshot)
            .replace("{target}", &self.project)
            .replace("{key}", "k")
            // The in-process mesh's one backend, as os-services lists it.
            .replace("{host}", "node-0@file")
            // Enabling an enabled service changes nothing the later calls need.
            .replace("{service_action}", "enable")
    }
}

/// Another project may accept A's transfer, but only with its key: this one is wrong, so the
/// accept is refused with a 400 whoever sends it.
const WRONG_KEY: &str = r#"{"accept": {"auth_key": "0000000000000000"}}"#;

const CONNECTOR: &str = r#"{"initiator": "iqn.1993-08.org.debian:01:matrix", "host": "matrix", "ip": "127.0.0.1"}"#;

/// Every operation (with a query string where it needs one): who may call it, and a body the gateway accepts (a refusal must come from the
/// policy, not from validation). A route the OpenAPI document has and this table lacks fails the
/// test: say who may call it.
fn operations() -> Vec<(Method, &'static str, Access, Option<String>)> {
    use Access::*;
    let body = |text: &str| Some(text.to_owned());
    let action = |name: &str, arguments: &str| Some(format!(r#"{{"{name}": {arguments}}}"#));
    vec![
        (Method::GET, "/volumes", Read, None),
        (Method::GET, "/volumes/detail", Read, None),
        (Method::GET, "/volumes/summary", Read, None),
        (Method::POST, "/volumes", Write, body(r#"{"volume": {"size": 1, "name": "matrix"}}"#)),
        (Method::GET, "/volumes/{volume_id}", Read, None),
        (Method::PUT, "/volumes/{volume_id}", Write, body(r#"{"volume": {"name": "renamed"}}"#)),
        (Method::GET, "/volumes/{volume_id}/metadata", Read, None),
        (Method::POST, "/volumes/{volume_id}/metadata", Write, body(r#"{"metadata": {"k": "v2"}}"#)),
        (Method::PUT, "/volumes/{volume_id}/metadata", Write, body(r#"{"metadata": {"k": "v3"}}"#)),
        (Method::GET, "/volumes/{volume_id}/metadata/{key}", Read, None),
        (Method::PUT, "/volumes/{volume_id}/metadata/{key}", Write, body(r#"{"meta": {"k": "v4"}}"#)),
        (Method::DELETE, "/volumes/{volume_id}/metadata/{key}", Write, None),
        (Method::GET, "/snapshots", Read, None),
        (Method::GET, "/snapshots/detail", Read, None),
        (Method::POST, "/snapshots", Write, body(r#"{"snapshot": {"volume_id": "{volume_id}", "name": "matrix"}}"#)),
        (Method::GET, "/snapshots/{snapshot_id}", Read, None),
        (Method::PUT, "/snapshots/{snapshot_id}", Write, body(r#"{"snapshot": {"name": "renamed"}}"#)),
        (Method::GET, "/snapshots/{snapshot_id}/metadata", Read, None),
        (Method::POST, "/snapshots/{snapshot_id}/metadata", Write, body(r#"{"metadata": {"k": "v2"}}"#)),
        (Method::PUT, "/snapshots/{snapshot_id}/metadata", Write, body(r#"{"metadata": {"k": "v3"}}"#)),
        (Method::GET, "/snapshots/{snapshot_id}/metadata/{key}", Read, None),
        (Method::PUT, "/snapshots/{snapshot_id}/metadata/{key}", Write, body(r#"{"meta": {"k": "v4"}}"#)),
        (Method::DELETE, "/snapshots/{snapshot_id}/metadata/{key}", Write, None),
        (Method::GET, "/backups", Read, None),
        (Method::GET, "/backups/detail", Read, None),
        (Method::POST, "/backups", Write, body(r#"{"backup": {"volume_id": "{volume_id}", "name": "matrix"}}"#)),
        (Method::GET, "/backups/{backup_id}", Read, None),
        (Method::PUT, "/backups/{backup_id}", Write, body(r#"{"backup": {"name": "renamed"}}"#)),
        (Method::POST, "/backups/{backup_id}/restore", Write, body(r#"{"restore": {"volume_id": "{volume_id}"}}"#)),
        (Method::GET, "/backups/{backup_id}/export_record", Admin, None),
        (
            Method::POST,
            "/backups/import_record",
            Admin,
            body(r#"{"backup-record": {"backup_service": "basalt", "backup_url": "e30="}}"#),
        ),
        (Method::GET, "/attachments", Read, None),
        (Method::GET, "/attachments/detail", Read, None),
        (
            Method::POST,
            "/attachments",
            Write,
            body(
                r#"{"attachment": {"volume_uuid": "{volume_id}", "instance_uuid": "11111111-2222-3333-4444-555555555555"}}"#,
            ),
        ),
        (Method::GET, "/attachments/{attachment_id}", Read, None),
        (
            Method::PUT,
            "/attachments/{attachment_id}",
            Write,
            Some(format!(r#"{{"attachment": {{"connector": {CONNECTOR}}}}}"#)),
        ),
        (Method::GET, "/types", Read, None),
        (Method::GET, "/types/default", Read, None),
        (Method::POST, "/types", Admin, body(r#"{"volume_type": {"name": "matrix-type"}}"#)),
        (Method::GET, "/types/{type_id}", Read, None),
        (Method::PUT, "/types/{type_id}", Admin, body(r#"{"volume_type": {"description": "changed"}}"#)),
        (Method::GET, "/types/{type_id}/extra_specs", Read, None),
        (Method::POST, "/types/{type_id}/extra_specs", Admin, body(r#"{"extra_specs": {"k": "v2"}}"#)),
        (Method::GET, "/types/{type_id}/extra_specs/{key}", Read, None),
        (Method::PUT, "/types/{type_id}/extra_specs/{key}", Admin, body(r#"{"k": "v3"}"#)),
        (Method::DELETE, "/types/{type_id}/extra_specs/{key}", Admin, None),
        (Method::GET, "/types/{type_id}/os-volume-type-access", Read, None),
        (Method::GET, "/qos-specs", Admin, None),
        (Method::POST, "/qos-specs", Admin, body(r#"{"qos_specs": {"name": "matrix-qos", "read_iops_sec": "100"}}"#)),
        (Method::GET, "/qos-specs/{qos_id}", Admin, None),
        (Method::PUT, "/qos-specs/{qos_id}", Admin, body(r#"{"qos_specs": {"write_iops_sec": "50"}}"#)),
        (Method::PUT, "/qos-specs/{qos_id}/delete_keys", Admin, body(r#"{"keys": ["write_iops_sec"]}"#)),
        (Method::GET, "/qos-specs/{qos_id}/associations", Admin, None),
        (Method::GET, "/os-quota-sets/{target}", Read, None),
        (Method::GET, "/os-quota-sets/{target}/defaults", Read, None),
        (Method::PUT, "/os-quota-sets/{target}", Admin, body(r#"{"quota_set": {"volumes": 20}}"#)),
        (Method::GET, "/limits", Read, None),
        (Method::GET, "/extensions", Read, None),
        (Method::GET, "/os-availability-zone", Read, None),
        (Method::GET, "/resource_filters", Read, None),
        (Method::POST, "/os-volume-transfer", Write, body(r#"{"transfer": {"volume_id": "{volume_id}"}}"#)),
        (Method::GET, "/os-volume-transfer", Read, None),
        (Method::GET, "/os-volume-transfer/detail", Read, None),
        (Method::GET, "/os-volume-transfer/{transfer_id}", Read, None),
        (Method::DELETE, "/os-volume-transfer/{transfer_id}", Write, None),
        (Method::POST, "/os-volume-transfer/{transfer_id}/accept", Write, body(WRONG_KEY)),
        (Method::POST, "/volume-transfers", Write, body(r#"{"transfer": {"volume_id": "{volume_id}"}}"#)),
        (Method::GET, "/volume-transfers", Read, None),
        (Method::GET, "/volume-transfers/detail", Read, None),
        (Method::GET, "/volume-transfers/{transfer_id}", Read, None),
        (Method::DELETE, "/volume-transfers/{transfer_id}", Write, None),
        (Method::POST, "/volume-transfers/{transfer_id}/accept", Write, body(WRONG_KEY)),
        (
            Method::POST,
            "/os-volume-manage",
            Admin,
            body(r#"{"volume": {"host": "{host}", "ref": {"source-name": "matrix-none"}}}"#),
        ),
        (
            Method::POST,
            "/manageable_volumes",
            Admin,
            body(r#"{"volume": {"host": "{host}", "ref": {"source-name": "matrix-none"}}}"#),
        ),
        (Method::GET, "/os-volume-manage?host={host}", Admin, None),
        (
            Method::POST,
            "/os-snapshot-manage",
            Admin,
            body(r#"{"snapshot": {"volume_id": "{volume_id}", "ref": {"source-name": "snapshot-none"}}}"#),
        ),
        (
            Method::POST,
            "/manageable_snapshots",
            Admin,
            body(r#"{"snapshot": {"volume_id": "{volume_id}", "ref": {"source-name": "snapshot-none"}}}"#),
        ),
        (Method::GET, "/os-snapshot-manage?host={host}", Admin, None),
        (Method::GET, "/os-snapshot-manage/detail?host={host}", Admin, None),
        (Method::GET, "/manageable_snapshots?host={host}", Admin, None),
        (Method::GET, "/manageable_snapshots/detail?host={host}", Admin, None),
        (Method::GET, "/os-volume-manage/detail?host={host}", Admin, None),
        (Method::GET, "/manageable_volumes?host={host}", Admin, None),
        (Method::GET, "/manageable_volumes/detail?host={host}", Admin, None),
        (Method::GET, "/group_types", Read, None),
        (Method::POST, "/group_types", Admin, body(r#"{"group_type": {"name": "matrix-made"}}"#)),
        (Method::GET, "/group_types/default", Read, None),
        (Method::GET, "/group_types/{group_type_id}", Read, None),
        (Method::PUT, "/group_types/{group_type_id}", Admin, body(r#"{"group_type": {"description": "d"}}"#)),
        (Method::GET, "/group_types/{group_type_id}/group_specs", Admin, None),
        (Method::POST, "/group_types/{group_type_id}/group_specs", Admin, body(r#"{"group_specs": {"k": "v"}}"#)),
        (Method::GET, "/group_types/{group_type_id}/group_specs/{key}", Admin, None),
        (Method::PUT, "/group_types/{group_type_id}/group_specs/{key}", Admin, body(r#"{"k": "w"}"#)),
        (Method::DELETE, "/group_types/{group_type_id}/group_specs/{key}", Admin, None),
        (Method::GET, "/groups", Read, None),
        (
            Method::POST,
            "/groups",
            Write,
            body(r#"{"group": {"group_type": "{group_type_id}", "volume_types": ["__DEFAULT__"]}}"#),
        ),
        (Method::GET, "/groups/detail", Read, None),
        (Method::GET, "/groups/{group_id}", Read, None),
        (Method::PUT, "/groups/{group_id}", Write, body(r#"{"group": {"description": "d"}}"#)),
        (Method::POST, "/groups/{group_id}/action", Admin, action("reset_status", r#"{"status": "available"}"#)),
        (Method::POST, "/groups/{group_id}/action", Write, action("delete", r#"{"delete-volumes": false}"#)),
        (Method::GET, "/group_snapshots", Read, None),
        (Method::GET, "/group_snapshots/detail", Read, None),
        (Method::GET, "/group_snapshots/{group_snapshot_id}", Read, None),
        (Method::POST, "/group_snapshots", Write, body(r#"{"group_snapshot": {"group_id": "{snapped_group_id}"}}"#)),
        (
            Method::POST,
            "/group_snapshots/{group_snapshot_id}/action",
            Admin,
            action("reset_status", r#"{"status": "available"}"#),
        ),
        (
            Method::POST,
            "/groups/action",
            Write,
            action("create-from-src", r#"{"group_snapshot_id": "{group_snapshot_id}"}"#),
        ),
        (Method::DELETE, "/group_snapshots/{group_snapshot_id}", Write, None),
        // Last: it goes once its group has gone.
        (Method::DELETE, "/group_types/{group_type_id}", Admin, None),
        // Late: an admin's unmanage forgets A's snapshot, which the calls above use.
        (Method::POST, "/snapshots/{snapshot_id}/action", Admin, action("os-unmanage", "null")),
        (Method::GET, "/messages", Read, None),
        (Method::GET, "/messages/{message_id}", Read, None),
        (Method::DELETE, "/messages/{message_id}", Write, None),
        (Method::GET, "/default-types", Admin, None),
        (Method::GET, "/default-types/{target}", Admin, None),
        (Method::PUT, "/default-types/{target}", Admin, body(r#"{"default_type": {"volume_type": "{type_id}"}}"#)),
        (Method::DELETE, "/default-types/{target}", Admin, None),
        (Method::GET, "/os-hosts", Admin, None),
        (Method::GET, "/capabilities/{host}", Admin, None),
        (Method::GET, "/os-services", Admin, None),
        (
            Method::PUT,
            "/os-services/{service_action}",
            Admin,
            body(r#"{"host": "node-0@file", "binary": "cinder-volume"}"#),
        ),
        (Method::GET, "/scheduler-stats/get_pools", Admin, None),
        // Actions, one line each.
        (Method::POST, "/volumes/{volume_id}/action", Write, action("os-extend", r#"{"new_size": 2}"#)),
        (Method::POST, "/volumes/{volume_id}/action", Admin, action("os-reset_status", r#"{"status": "available"}"#)),
        (Method::POST, "/volumes/{volume_id}/action", Write, action("os-set_bootable", r#"{"bootable": true}"#)),
        (
            Method::POST,
            "/volumes/{volume_id}/action",
            Write,
            action("os-update_readonly_flag", r#"{"readonly": false}"#),
        ),
        (Method::POST, "/volumes/{volume_id}/action", Write, action("revert", r#"{"snapshot_id": "{snapshot_id}"}"#)),
        (Method::POST, "/volumes/{volume_id}/action", Write, action("os-reserve", "{}")),
        (Method::POST, "/volumes/{volume_id}/action", Write, action("os-unreserve", "{}")),
        (Method::POST, "/volumes/{volume_id}/action", Write, action("os-begin_detaching", "{}")),
        (Method::POST, "/volumes/{volume_id}/action", Write, action("os-roll_detaching", "{}")),
        (
            Method::POST,
            "/volumes/{volume_id}/action",
            Write,
            action("os-initialize_connection", &format!(r#"{{"connector": {CONNECTOR}}}"#)),
        ),
        (
            Method::POST,
            "/volumes/{volume_id}/action",
            Write,
            action("os-terminate_connection", &format!(r#"{{"connector": {CONNECTOR}}}"#)),
        ),
        (
            Method::POST,
            "/volumes/{volume_id}/action",
            Write,
            action(
                "os-attach",
                r#"{"instance_uuid": "11111111-2222-3333-4444-555555555555", "mountpoint": "/dev/vdb"}"#,
            ),
        ),
        (Method::POST, "/volumes/{volume_id}/action", Write, action("os-detach", "{}")),
        (Method::POST, "/volumes/{volume_id}/action", Write, action("os-retype", r#"{"new_type": "{type_id}"}"#)),
        (
            Method::POST,
            "/volumes/{volume_id}/action",
            Admin,
            action("os-migrate_volume", r#"{"host": "node-0@file#default"}"#),
        ),
        (
            Method::POST,
            "/snapshots/{snapshot_id}/action",
            Admin,
            action("os-reset_status", r#"{"status": "available"}"#),
        ),
        (Method::POST, "/backups/{backup_id}/action", Admin, action("os-reset_status", r#"{"status": "available"}"#)),
        (Method::POST, "/attachments/{attachment_id}/action", Write, action("os-complete", "null")),
        (Method::POST, "/types/{type_id}/action", Admin, action("addProjectAccess", r#"{"project": "{target}"}"#)),
        (Method::POST, "/types/{type_id}/action", Admin, action("removeProjectAccess", r#"{"project": "{target}"}"#)),
        // Deletes and force-deletes last: they take the fixtures away.
        // A volume with a snapshot is never unmanaged: refused for the admin too, after the policy.
        (Method::POST, "/volumes/{volume_id}/action", Admin, action("os-unmanage", "null")),
        (Method::POST, "/volumes/{volume_id}/action", Admin, action("os-force_delete", "{}")),
        (Method::POST, "/snapshots/{snapshot_id}/action", Admin, action("os-force_delete", "{}")),
        (Method::POST, "/backups/{backup_id}/action", Admin, action("os-force_delete", "{}")),
        (Method::GET, "/qos-specs/{qos_id}/associate?vol_type_id={type_id}", Admin, None),
        (Method::GET, "/qos-specs/{qos_id}/disassociate?vol_type_id={type_id}", Admin, None),
        (Method::GET, "/qos-specs/{qos_id}/disassociate_all", Admin, None),
        (Method::DELETE, "/attachments/{attachment_id}", Write, None),
        (Method::DELETE, "/backups/{backup_id}", Write, None),
        (Method::DELETE, "/snapshots/{snapshot_id}", Write, None),
        (Method::DELETE, "/volumes/{volume_id}", Write, None),
        (Method::DELETE, "/qos-specs/{qos_id}", Admin, None),
        (Method::DELETE, "/types/{type_id}", Admin, None),
        (Method::DELETE, "/os-quota-sets/{target}", Admin, None),
    ]
}

/// The action names the OpenAPI document lists for an action route's body.
fn documented_actions(operation: &Value) -> Vec<String> {
    let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
    schema["oneOf"]
        .as_array()
        .map(|alternatives| {
            alternatives
                .iter()
                .filter_map(|alternative| alternative["required"][0].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Project A's resources and the deployment's types and QoS specs, as A's admin sees them, to
/// prove refused calls changed nothing (project B's member may change B's own project).
async fn state(api: &RestApi, admin: &str, project: &str) -> Result<Vec<Value>> {
    let mut seen = Vec::new();
    for path in [
        "/volumes/detail",
        "/snapshots/detail",
        "/backups/detail",
        "/attachments/detail",
        "/types?is_public=None",
        "/qos-specs",
        "/volume-transfers/detail",
        "/default-types",
        "/messages",
        "/group_types",
        "/groups/detail",
        "/group_snapshots/detail",
        &format!("/os-quota-sets/{project}?usage=True"),
    ] {
        let reply = api.call(Method::GET, &format!("/v3/{project}{path}"), Some(admin), Some("3.71"), None).await?;
        ensure!(reply.status.is_success(), "admin GET {path}: {} {}", reply.status, reply.body);
        seen.push(reply.body);
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_each_caller_as_cinder_s_policy_says() -> Result<()> {
    let keystone = Keystone::start().await?;
    let project_a = keystone.project("matrix-a").await?;
    let project_b = keystone.project("matrix-b").await?;
    let service = keystone.project("service").await?;
    let basalt_user = keystone.user("basalt", &service, &["service", "admin"]).await?;
    let alice = keystone.user("alice", &project_a, &["member"]).await?;
    let bob = keystone.user("bob", &project_a, &["reader"]).await?;
    let carol = keystone.user("carol", &project_b, &["member"]).await?;
    let ops = keystone.user("ops", &project_a, &["admin"]).await?;

    let mesh = InProcessMesh::start(1).await?;
    let gateway = |cache: Duration| {
        let auth = basalt_api_gateway::AuthConfig {
            keystone: Some(keystone.gateway_config(&basalt_user, "service", cache)),
            ..Default::default()
        };
        RestApi::start_with_auth(&mesh, auth)
    };
    let api = gateway(Duration::from_secs(300)).await?;
    let uncached = gateway(Duration::ZERO).await?;

    // A token revoked after use: refused at once by a gateway that caches nothing (a caching one
    // believes it until its cache entry expires, as keystonemiddleware does).
    let used = keystone.token(&alice, &project_a).await?;
    let volumes = format!("/v3/{project_a}/volumes");
    ensure!(uncached.call(Method::GET, &volumes, Some(&used), None, None).await?.status == 200);
    keystone.revoke(&used).await?;
    let after_revoke = uncached.call(Method::GET, &volumes, Some(&used), None, None).await?;
    ensure!(after_revoke.status == 401, "a revoked token: {} {}", after_revoke.status, after_revoke.body);

    let member = keystone.token(&alice, &project_a).await?;
    let reader = keystone.token(&bob, &project_a).await?;
    let other = keystone.token(&carol, &project_b).await?;
    let admin = keystone.token(&ops, &project_a).await?;
    let revoked = keystone.token(&alice, &project_a).await?;
    keystone.revoke(&revoked).await?;
    let expired = keystone.expired_token(&alice, &project_a).await?;

    // Project A's resources, made as its admin over gRPC with the identity Keystone gave.
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = basalt::context::CallContext::new(
        basalt::ids::ProjectId::parse(&project_a)?,
        "ops",
        basalt::context::ADMIN_ROLES,
    );
    let make_volume = |name: &str| CreateVolumeRequest { name: name.into(), size_gib: 1, ..Default::default() };
    let volume = client.create_volume(owner.request(make_volume("matrix-volume"))).await?.into_inner();
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;
    let attached = client.create_volume(owner.request(make_volume("matrix-attached"))).await?.into_inner();
    wait_for_status(&mut client, &owner, &attached.id, VolumeStatus::Available).await?;
    let snapshot = client
        .create_snapshot(owner.request(CreateSnapshotRequest {
            volume_id: volume.id.clone(),
            name: "s".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    wait_for_snapshot(&mut client, &owner, &snapshot.id, SnapshotStatus::Available).await?;
    let backup = client
        .create_backup(owner.request(CreateBackupRequest {
            volume_id: attached.id.clone(),
            name: "b".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    wait_for_backup(&mut client, &owner, &backup.id).await?;
    let attachment = client
        .create_attachment(owner.request(CreateAttachmentRequest {
            volume_id: attached.id.clone(),
            instance_id: "11111111-2222-3333-4444-555555555555".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    ensure!(attachment.status == AttachStatus::Reserved as i32);
    let setup = |path: &str, body: &str| {
        let api = &api;
        let admin = admin.clone();
        let path = format!("/v3/{project_a}{path}");
        let body = body.to_owned();
        async move {
            let reply = api.call(Method::POST, &path, Some(&admin), Some("3.71"), Some(&body)).await?;
            ensure!(reply.status.is_success(), "POST {path}: {} {}", reply.status, reply.body);
            Ok::<_, anyhow::Error>(reply.body)
        }
    };
    let volume_type = setup("/types", r#"{"volume_type": {"name": "matrix", "extra_specs": {"k": "v"}}}"#).await?;
    let qos = setup("/qos-specs", r#"{"qos_specs": {"name": "matrix", "read_iops_sec": "1"}}"#).await?;
    setup(&format!("/volumes/{}/metadata", volume.id), r#"{"metadata": {"k": "v"}}"#).await?;
    setup(&format!("/snapshots/{}/metadata", snapshot.id), r#"{"metadata": {"k": "v"}}"#).await?;
    let offered = client.create_volume(owner.request(make_volume("matrix-offered"))).await?.into_inner();
    wait_for_status(&mut client, &owner, &offered.id, VolumeStatus::Available).await?;
    let transfer = setup("/volume-transfers", &format!(r#"{{"transfer": {{"volume_id": "{}"}}}}"#, offered.id)).await?;
    let group_type =
        setup("/group_types", r#"{"group_type": {"name": "matrix-group-type", "group_specs": {"k": "v"}}}"#).await?;
    let group_type = group_type["group_type"]["id"].as_str().context("group type id")?.to_owned();
    let group =
        setup("/groups", &format!(r#"{{"group": {{"group_type": "{group_type}", "volume_types": ["__DEFAULT__"]}}}}"#))
            .await?;
    let snapped_group =
        setup("/groups", &format!(r#"{{"group": {{"group_type": "{group_type}", "volume_types": ["__DEFAULT__"]}}}}"#))
            .await?;
    let snapped_group = snapped_group["group"]["id"].as_str().context("group id")?.to_owned();
    let member_volume = CreateVolumeRequest { group_id: snapped_group.clone(), ..make_volume("matrix-grouped") };
    let member_volume = client.create_volume(owner.request(member_volume)).await?.into_inner();
    wait_for_status(&mut client, &owner, &member_volume.id, VolumeStatus::Available).await?;
    let group_snapshot =
        setup("/group_snapshots", &format!(r#"{{"group_snapshot": {{"group_id": "{snapped_group}"}}}}"#)).await?;
    let group_snapshot = group_snapshot["group_snapshot"]["id"].as_str().context("group snapshot id")?.to_owned();
    let shown = format!("/v3/{project_a}/group_snapshots/{group_snapshot}");
    eventually("the matrix's group snapshot is made", || async {
        let reply = api.call(Method::GET, &shown, Some(&admin), Some("3.71"), None).await?;
        Ok(reply.body["group_snapshot"]["status"] == "available")
    })
    .await?;
    // A snapshot the node cannot take (its volume's file is gone) leaves A a user message.
    let lost = client.create_volume(owner.request(make_volume("matrix-lost"))).await?.into_inner();
    wait_for_status(&mut client, &owner, &lost.id, VolumeStatus::Available).await?;
    std::fs::remove_file(mesh.node_dir("node-0").join(format!("volume-{}", lost.id)))?;
    let failed = CreateSnapshotRequest { volume_id: lost.id.clone(), ..Default::default() };
    let failed = client.create_snapshot(owner.request(failed)).await?.into_inner();
    wait_for_snapshot(&mut client, &owner, &failed.id, SnapshotStatus::Error).await?;
    let messages = client.list_messages(owner.request(ListMessagesRequest::default())).await?.into_inner().messages;
    let message = messages.first().context("a user message for the failed snapshot")?;
    let ids = Ids {
        project: project_a.clone(),
        volume: volume.id.clone(),
        snapshot: snapshot.id.clone(),
        backup: backup.id.clone(),
        attachment: attachment.id.clone(),
        volume_type: volume_type["volume_type"]["id"].as_str().context("type id")?.to_owned(),
        qos: qos["qos_specs"]["id"].as_str().context("qos id")?.to_owned(),
        transfer: transfer["transfer"]["id"].as_str().context("transfer id")?.to_owned(),
        message: message.id.clone(),
        group_type,
        group: group["group"]["id"].as_str().context("group id")?.to_owned(),
        snapped_group,
        group_snapshot,
    };

    // The table covers the document: every operation, and every action of every action route.
    let operations = operations();
    let document = api.call(Method::GET, "/openapi.json", None, None, None).await?.body;
    let mut missing = Vec::new();
    for (path, methods) in document["paths"].as_object().context("paths")? {
        for (method, operation) in methods.as_object().context("methods")? {
            let method: Method = method.to_ascii_uppercase().parse()?;
            let listed: Vec<_> = operations
                .iter()
                .filter(|(m, p, ..)| *m == method && p.split('?').next() == Some(path.as_str()))
                .collect();
            if listed.is_empty() {
                missing.push(format!("{method} {path}"));
            }
            for name in documented_actions(operation) {
                let quoted = format!("{{\"{name}\":");
                if !listed.iter().any(|(.., body)| body.as_deref().is_some_and(|body| body.starts_with(&quoted))) {
                    missing.push(format!("{method} {path} {name}"));
                }
            }
        }
    }
    ensure!(missing.is_empty(), "operations without an expected answer (say who may call them): {missing:?}");

    let call = |token: Option<String>, project: String, method: Method, path: &'static str, body: Option<String>| {
        let api = &api;
        let ids = &ids;
        async move {
            let url = format!("/v3/{project}{}", ids.fill(path));
            let body = body.map(|body| ids.fill(&body));
            api.call(method, &url, token.as_deref(), Some("3.71"), body.as_deref()).await
        }
    };

    // The refused: nobody, an expired and a revoked token, project B on A's URL, and A's reader
    // for everything but reads. None of them may change anything.
    let before = state(&api, &admin, &project_a).await?;
    let mut cells = 0;
    for (method, path, access, body) in &operations {
        let what = format!("{method} {path} {}", body.as_deref().unwrap_or_default());
        for (who, token) in [("no token", None), ("expired", Some(expired.clone())), ("revoked", Some(revoked.clone()))]
        {
            let reply = call(token, project_a.clone(), method.clone(), path, body.clone()).await?;
            ensure!(reply.status == 401, "{who}: {what}: {} {}", reply.status, reply.body);
            ensure!(
                reply.headers.get("www-authenticate").and_then(|value| value.to_str().ok())
                    == Some(&format!("Keystone uri=\"{}\"", keystone.url)),
                "{who}: {what}: no WWW-Authenticate naming Keystone"
            );
            cells += 1;
        }
        let crossed = call(Some(other.clone()), project_a.clone(), method.clone(), path, body.clone()).await?;
        ensure!(crossed.status == 400, "project B on A's url: {what}: {} {}", crossed.status, crossed.body);
        let as_b = call(Some(other.clone()), project_b.clone(), method.clone(), path, body.clone()).await?;
        let names_a_resource = [
            "{volume_id}",
            "{snapshot_id}",
            "{backup_id}",
            "{attachment_id}",
            "{target}",
            "{transfer_id}",
            "{message_id}",
            "{group_id}",
            "{snapped_group_id}",
            "{group_snapshot_id}",
        ]
        .iter()
        .any(|placeholder| {
            path.contains(placeholder) || body.as_deref().is_some_and(|body| body.contains(placeholder))
        });
        if path.ends_with("/accept") {
            // Accepting is what another project does; without the key it gets nothing.
            ensure!(as_b.status == 400, "project B accepting with a wrong key: {} {}", as_b.status, as_b.body);
        } else if *access == Access::Admin || names_a_resource {
            ensure!(
                matches!(as_b.status.as_u16(), 403 | 404),
                "project B on A's {what}: {} {}",
                as_b.status,
                as_b.body
            );
        }
        // Listings in B's own project show nothing of A's (a refusal may quote the id B sent).
        let shown = as_b.body.to_string();
        ensure!(
            names_a_resource
                || ![&ids.volume, &ids.snapshot, &ids.backup, &ids.attachment]
                    .iter()
                    .any(|id| shown.contains(id.as_str())),
            "project B sees A's resources through {what}: {shown}"
        );
        let as_reader = call(Some(reader.clone()), project_a.clone(), method.clone(), path, body.clone()).await?;
        if *access == Access::Read {
            ensure!(
                !matches!(as_reader.status.as_u16(), 401 | 403),
                "reader: {what}: {} {}",
                as_reader.status,
                as_reader.body
            );
        } else {
            ensure!(as_reader.status == 403, "reader: {what}: {} {}", as_reader.status, as_reader.body);
        }
        if *access == Access::Admin {
            let as_member = call(Some(member.clone()), project_a.clone(), method.clone(), path, body.clone()).await?;
            ensure!(as_member.status == 403, "member: {what}: {} {}", as_member.status, as_member.body);
        }
        cells += 3;
    }
    let after = state(&api, &admin, &project_a).await?;
    ensure!(before == after, "refused calls changed state:\nbefore {before:?}\nafter {after:?}");

    // The allowed: A's member for reads and writes, then A's admin for admin calls.
    for (method, path, access, body) in &operations {
        let token = match access {
            Access::Admin => admin.clone(),
            Access::Read | Access::Write => member.clone(),
        };
        let reply = call(Some(token), project_a.clone(), method.clone(), path, body.clone()).await?;
        if matches!(reply.status.as_u16(), 401 | 403) || reply.status.is_server_error() {
            bail!("{access:?} caller refused: {method} {path}: {} {}", reply.status, reply.body);
        }
        cells += 1;
    }
    println!("{cells} cells of {} operations checked", operations.len());
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cinder_and_openstack_clients_log_in_with_keystone_passwords() -> Result<()> {
    let keystone = Keystone::start().await?;
    let project = keystone.project("demo").await?;
    let service = keystone.project("service").await?;
    let basalt_user = keystone.user("basalt", &service, &["service", "admin"]).await?;
    let alice = keystone.user("alice", &project, &["member"]).await?;
    let bob = keystone.user("bob", &project, &["reader"]).await?;

    let data = tempfile::tempdir()?;
    let flags = [
        "--auth",
        "keystone",
        "--keystone-url",
        &keystone.url,
        "--keystone-user",
        "basalt",
        "--keystone-project",
        "service",
    ];
    let up = BasaltProcess::up(data.path(), &flags, &[("BASALT_KEYSTONE_PASSWORD", &basalt_user.password)])?;
    ensure!(up.endpoint("auth").starts_with("keystone"), "basalt up says how it authenticates: {:?}", up.endpoints);
    // The clients find Basalt in Keystone's catalog, as they find Cinder.
    let endpoint = format!("{}/%(project_id)s", up.endpoint("rest"));
    keystone.register_service("block-storage", &endpoint).await?;
    keystone.register_service("volumev3", &endpoint).await?;

    let bin = cinder_clients()?;
    let home = tempfile::tempdir()?;
    let client = |program: &str, user: &basalt_integration::keystone::KeystoneUser, args: &[&str]| {
        let mut command = std::process::Command::new(bin.join(program));
        command.env("HOME", home.path()).env_remove("OS_CLOUD").envs(keystone.client_env(user, &project)).args(args);
        run_client(command, &format!("{program} as {} {args:?}", user.name))
    };
    let cinder = |args: &[&str]| client("cinder", &alice, args);
    let wait = |what: &str, check: &dyn Fn() -> Result<bool>| -> Result<()> {
        let deadline = std::time::Instant::now() + WAIT;
        while !check()? {
            ensure!(std::time::Instant::now() < deadline, "{what} did not happen in time");
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(())
    };

    // The clients block: keep them off the runtime's other threads.
    tokio::task::block_in_place(|| -> Result<()> {
        let created = cinder(&["create", "--name", "k1", "1"])?;
        let volume = cliff_field(&created, "id").context("the created volume's id")?;
        wait("k1 available", &|| {
            Ok(cliff_field(&cinder(&["show", &volume])?, "status").as_deref() == Some("available"))
        })?;

        let server = "11111111-2222-3333-4444-555555555555";
        let attached = cinder(&["--os-volume-api-version", "3.27", "attachment-create", &volume, server])?;
        let attachment = cliff_field(&attached, "id").context("the attachment's id")?;
        wait(
            "k1 reserved",
            &|| Ok(cliff_field(&cinder(&["show", &volume])?, "status").as_deref() == Some("reserved")),
        )?;
        cinder(&["--os-volume-api-version", "3.27", "attachment-delete", &attachment])?;
        wait("k1 available again", &|| {
            Ok(cliff_field(&cinder(&["show", &volume])?, "status").as_deref() == Some("available"))
        })?;

        let backup =
            cliff_field(&cinder(&["backup-create", "--name", "kb1", &volume])?, "id").context("the backup's id")?;
        wait("kb1 available", &|| {
            Ok(cliff_field(&cinder(&["backup-show", &backup])?, "status").as_deref() == Some("available"))
        })?;
        cinder(&["backup-delete", &backup])?;
        wait("kb1 gone", &|| Ok(!cinder(&["backup-list"])?.contains(&backup)))?;

        // The openstack CLI, and a reader who may look but not change.
        let listed = client("openstack", &alice, &["volume", "list"])?;
        ensure!(listed.contains(&volume), "openstack volume list: {listed}");
        let shown = client("openstack", &bob, &["volume", "show", &volume])?;
        ensure!(cliff_field(&shown, "name").as_deref() == Some("k1"), "a reader reads: {shown}");
        let refused =
            client("openstack", &bob, &["volume", "create", "--size", "1", "by-reader"]).unwrap_err().to_string();
        ensure!(
            refused.contains("403") || refused.contains("Policy doesn't allow"),
            "a reader may not create: {refused}"
        );
        client("openstack", &alice, &["volume", "delete", &volume])?;
        wait("k1 gone", &|| Ok(!cinder(&["list"])?.contains(&volume)))?;
        Ok(())
    })?;
    drop(up);
    Ok(())
}

/// Every command line on the machine, sampled until `stop` is set.
fn sample_command_lines(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashSet::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if let Ok(bytes) = std::fs::read(entry.path().join("cmdline"))
                && !bytes.is_empty()
            {
                seen.insert(String::from_utf8_lossy(&bytes).replace('\0', " "));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn chap_passwords_and_tokens_reach_no_log_error_or_command_line() -> Result<()> {
    let keystone = Keystone::start().await?;
    let project = keystone.project("secrets").await?;
    let service = keystone.project("service").await?;
    let basalt_user = keystone.user("basalt", &service, &["service", "admin"]).await?;
    let alice = keystone.user("alice", &project, &["member"]).await?;
    let bob = keystone.user("bob", &project, &["reader"]).await?;
    let tgtd = Tgtd::start()?;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let stop = stop.clone();
        move || sample_command_lines(stop)
    });
    let data = tempfile::tempdir()?;
    let log_path = data.path().join("basalt.log");
    let mut flags = vec!["--auth", "keystone", "--keystone-url", &keystone.url, "--keystone-project", "service"];
    let export_flags = tgtd.export_flags();
    flags.extend(export_flags.iter().map(String::as_str));
    let up = BasaltProcess::up_logging(
        &data.path().join("up"),
        &flags,
        &[("BASALT_KEYSTONE_PASSWORD", &basalt_user.password), ("RUST_LOG", "debug,sqlx=warn,h2=info,hyper=info")],
        std::fs::File::create(&log_path)?.into(),
    )?;
    let base = format!("{}/{project}", up.endpoint("rest"));
    let member = keystone.token(&alice, &project).await?;
    let reader = keystone.token(&bob, &project).await?;
    let http = reqwest::Client::new();
    let mut error_bodies = Vec::new();
    let mut passwords = Vec::new();
    let call = |method: reqwest::Method, path: &str, token: &str, body: Option<String>| {
        let mut request = http
            .request(method, format!("{base}{path}"))
            .header("x-auth-token", token)
            .header("openstack-api-version", "volume 3.71");
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        async move {
            let response = request.send().await?;
            let status = response.status();
            let text = response.text().await?;
            Ok::<_, anyhow::Error>((status, text))
        }
    };

    let (_, created) =
        call(reqwest::Method::POST, "/volumes", &member, Some(r#"{"volume": {"size": 1}}"#.into())).await?;
    let volume = serde_json::from_str::<Value>(&created)?["volume"]["id"].as_str().context("volume id")?.to_owned();
    eventually("the volume is available", || {
        let shown = call(reqwest::Method::GET, &format!("/volumes/{volume}"), &member, None);
        async move { Ok(shown.await?.1.contains("\"available\"")) }
    })
    .await?;
    // Two hosts attach (a CHAP account each), through both connection flows.
    let connector = |host: &str| {
        format!(r#"{{"initiator": "iqn.1993-08.org.debian:01:{host}", "host": "{host}", "ip": "127.0.0.1"}}"#)
    };
    let (status, attached) = call(
        reqwest::Method::POST,
        "/attachments",
        &member,
        Some(format!(r#"{{"attachment": {{"volume_uuid": "{volume}", "instance_uuid": "11111111-2222-3333-4444-555555555555", "connector": {}}}}}"#, connector("one"))),
    )
    .await?;
    ensure!(status.is_success(), "attach: {status} {attached}");
    let attachment: Value = serde_json::from_str(&attached)?;
    passwords.push(
        attachment["attachment"]["connection_info"]["data"]["auth_password"]
            .as_str()
            .context("a CHAP password")?
            .to_owned(),
    );
    let attachment_id = attachment["attachment"]["id"].as_str().context("attachment id")?.to_owned();
    let (status, initialized) = call(
        reqwest::Method::POST,
        &format!("/volumes/{volume}/action"),
        &member,
        Some(format!(r#"{{"os-initialize_connection": {{"connector": {}}}}}"#, connector("two"))),
    )
    .await?;
    ensure!(status.is_success(), "initialize: {status} {initialized}");
    let initialized: Value = serde_json::from_str(&initialized)?;
    passwords
        .push(initialized["connection_info"]["data"]["auth_password"].as_str().context("a CHAP password")?.to_owned());

    // Refusals of every kind, whose bodies are scanned.
    for (method, path, token, body) in [
        (reqwest::Method::POST, "/volumes".to_owned(), reader.as_str(), Some(r#"{"volume": {"size": 1}}"#.to_owned())),
        (reqwest::Method::GET, "/volumes/00000000-0000-0000-0000-000000000000".to_owned(), member.as_str(), None),
        (
            reqwest::Method::POST,
            format!("/volumes/{volume}/action"),
            member.as_str(),
            Some(r#"{"os-extend": {"new_size": "x"}}"#.to_owned()),
        ),
        (reqwest::Method::DELETE, format!("/volumes/{volume}"), member.as_str(), None),
        (reqwest::Method::GET, "/volumes".to_owned(), "not-a-token", None),
        (reqwest::Method::GET, "/volumes".to_owned(), &format!("{member}x"), None),
    ] {
        let (status, text) = call(method, &path, token, body).await?;
        ensure!(!status.is_success(), "{path}: expected a refusal, got {status}");
        error_bodies.push(text);
    }
    let (status, text) = call(reqwest::Method::DELETE, &format!("/attachments/{attachment_id}"), &member, None).await?;
    ensure!(status.is_success(), "detach: {status} {text}");
    let (status, text) = call(
        reqwest::Method::POST,
        &format!("/volumes/{volume}/action"),
        &member,
        Some(format!(r#"{{"os-terminate_connection": {{"connector": {}}}}}"#, connector("two"))),
    )
    .await?;
    ensure!(status.is_success(), "terminate: {status} {text}");
    call(reqwest::Method::DELETE, &format!("/volumes/{volume}"), &member, None).await?;
    eventually("the volume is gone", || {
        let shown = call(reqwest::Method::GET, &format!("/volumes/{volume}"), &member, None);
        async move { Ok(shown.await?.0 == reqwest::StatusCode::NOT_FOUND) }
    })
    .await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let command_lines = sampler.join().map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
    drop(up);

    let log = std::fs::read_to_string(&log_path)?;
    ensure!(command_lines.iter().any(|line| line.contains("tgtadm")), "the sampler saw tgtadm run");
    ensure!(log.lines().count() > 20, "the log has lines to scan");
    let secrets = passwords.iter().map(|password| ("a CHAP password", password.as_str())).chain([
        ("a member's token", member.as_str()),
        ("a reader's token", reader.as_str()),
        ("the service user's password", basalt_user.password.as_str()),
    ]);
    for (what, secret) in secrets {
        ensure!(!log.contains(secret), "{what} is in the log");
        ensure!(!error_bodies.iter().any(|body| body.contains(secret)), "{what} is in an error body");
        if let Some(line) = command_lines.iter().find(|line| line.contains(secret)) {
            bail!("{what} is on a command line: {line}");
        }
    }
    Ok(())
}
