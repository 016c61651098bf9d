//! Every object view the REST API shows, at microversions 3.0, 3.27, 3.55, 3.64 and 3.71, for a
//! project admin and a project member: exactly the keys Cinder's view builders (and the controller
//! extensions that add to some of them) give for that caller at that version, no more, no fewer.
//! Strict clients (tempest's schemas, with `additionalProperties: false`) reject a response for one
//! extra key. Every GET route of the OpenAPI document is either checked here or named as one whose
//! answer is not an object view (so a new route is covered the day it is added).
//!
//! The tables are written from Cinder's views (`cinder/api/v3/views/`, `cinder/api/views/`,
//! `cinder/api/contrib/*_attribute*.py`) and `../shared/docs/cinder-api.md`, not from Basalt's code.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use axum::http::{Method, StatusCode};
use basalt_integration::*;
use serde_json::Value;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const VERSIONS: [u16; 5] = [0, 27, 55, 64, 71];

/// One kind of object a response shows.
#[derive(Debug, Clone, Copy)]
enum View {
    VolumeSummary,
    VolumeDetail,
    /// A volume as create and update answer: the detail view without the controller extensions'
    /// keys, which extend show and detail only.
    VolumeWritten,
    SnapshotSummary,
    SnapshotDetail,
    /// A snapshot as create and update answer: no extended attributes.
    SnapshotWritten,
    BackupSummary,
    BackupDetail,
    AttachmentSummary,
    AttachmentDetail,
    TransferSummary,
    TransferDetail,
    Message,
    VolumeType,
    GroupType,
    GroupSummary,
    GroupDetail,
    GroupSnapshotSummary,
    GroupSnapshotDetail,
}

/// The keys Cinder shows of `view` at microversion `3.<version>` to an admin or a member.
fn expected(view: View, version: u16, admin: bool) -> BTreeSet<&'static str> {
    let mut keys: Vec<&str> = Vec::new();
    let mut from = |since: u16, added: &[&'static str]| {
        if version >= since {
            keys.extend(added);
        }
    };
    match view {
        View::VolumeSummary => from(0, &["id", "name", "links"]),
        View::VolumeDetail | View::VolumeWritten => {
            from(
                0,
                &[
                    "id",
                    "status",
                    "size",
                    "availability_zone",
                    "created_at",
                    "updated_at",
                    "attachments",
                    "name",
                    "description",
                    "volume_type",
                    "snapshot_id",
                    "source_volid",
                    "metadata",
                    "links",
                    "user_id",
                    "bootable",
                    "encrypted",
                    "replication_status",
                    "consistencygroup_id",
                    "multiattach",
                ],
            );
            from(13, &["group_id"]);
            from(48, &["shared_targets", "service_uuid"]);
            from(63, &["volume_type_id"]);
            from(65, &["consumes_quota"]);
            if admin {
                from(0, &["migration_status"]);
                from(21, &["provider_id"]);
                from(61, &["cluster_name"]);
            }
            if matches!(view, View::VolumeDetail) {
                from(0, &["os-vol-tenant-attr:tenant_id"]);
                if admin {
                    from(
                        0,
                        &["os-vol-host-attr:host", "os-vol-mig-status-attr:migstat", "os-vol-mig-status-attr:name_id"],
                    );
                }
            }
        }
        View::SnapshotSummary | View::SnapshotDetail | View::SnapshotWritten => {
            from(
                0,
                &["id", "created_at", "updated_at", "name", "description", "volume_id", "status", "size", "metadata"],
            );
            if !matches!(view, View::SnapshotSummary) {
                from(14, &["group_snapshot_id"]);
                from(41, &["user_id"]);
                from(65, &["consumes_quota"]);
            }
            if matches!(view, View::SnapshotDetail) {
                from(0, &["os-extended-snapshot-attributes:progress", "os-extended-snapshot-attributes:project_id"]);
            }
        }
        View::BackupSummary => from(0, &["id", "name", "links"]),
        View::BackupDetail => {
            from(
                0,
                &[
                    "id",
                    "status",
                    "size",
                    "object_count",
                    "availability_zone",
                    "container",
                    "created_at",
                    "updated_at",
                    "name",
                    "description",
                    "fail_reason",
                    "volume_id",
                    "links",
                    "is_incremental",
                    "has_dependent_backups",
                    "snapshot_id",
                    "data_timestamp",
                ],
            );
            from(43, &["metadata"]);
            from(56, &["user_id"]);
            from(64, &["encryption_key_id"]);
            if admin {
                from(18, &["os-backup-project-attr:project_id"]);
            }
        }
        View::AttachmentSummary => from(27, &["id", "status", "instance", "volume_id"]),
        View::AttachmentDetail => from(
            27,
            &["id", "status", "instance", "volume_id", "attached_at", "detached_at", "attach_mode", "connection_info"],
        ),
        View::TransferSummary => from(0, &["id", "volume_id", "name", "links"]),
        View::TransferDetail => {
            from(0, &["id", "created_at", "name", "volume_id", "links"]);
            from(55, &["no_snapshots"]);
            from(57, &["destination_project_id", "source_project_id", "accepted"]);
        }
        View::Message => from(
            3,
            &[
                "id",
                "event_id",
                "user_message",
                "message_level",
                "resource_type",
                "resource_uuid",
                "created_at",
                "guaranteed_until",
                "request_id",
                "links",
            ],
        ),
        View::VolumeType => {
            from(0, &["id", "name", "description", "is_public", "os-volume-type-access:is_public", "extra_specs"]);
            if admin {
                from(0, &["qos_specs_id"]);
            }
        }
        View::GroupType => {
            from(11, &["id", "name", "description", "is_public"]);
            if admin {
                from(11, &["group_specs"]);
            }
        }
        View::GroupSummary => from(13, &["id", "name"]),
        View::GroupDetail => {
            from(
                13,
                &[
                    "id",
                    "status",
                    "availability_zone",
                    "created_at",
                    "name",
                    "description",
                    "group_type",
                    "volume_types",
                ],
            );
            from(14, &["group_snapshot_id", "source_group_id"]);
            from(38, &["replication_status"]);
            from(58, &["project_id"]);
        }
        View::GroupSnapshotSummary => from(14, &["id", "name", "group_type_id"]),
        View::GroupSnapshotDetail => {
            from(14, &["id", "group_id", "group_type_id", "status", "created_at", "name", "description"]);
            from(58, &["project_id"]);
        }
    }
    keys.into_iter().collect()
}

/// The first version a view exists at (below it, its routes answer 404).
fn since(view: View) -> u16 {
    match view {
        View::AttachmentSummary | View::AttachmentDetail => 27,
        View::Message => 3,
        View::VolumeType => 0,
        View::GroupType => 11,
        View::GroupSummary | View::GroupDetail => 13,
        View::GroupSnapshotSummary | View::GroupSnapshotDetail => 14,
        _ => 0,
    }
}

/// GET routes whose answer is not one of the object views above: version documents, lists of
/// names or figures, and routes checked by their own tests (quotas, limits, pools, services,
/// extensions, capabilities, hosts, manageable objects, metadata, specs, QoS, default types).
const NOT_OBJECT_VIEWS: &[&str] = &[
    "/backups/{backup_id}/export_record",
    "/capabilities/{host}",
    "/default-types",
    "/default-types/{target}",
    "/extensions",
    "/group_types/default",
    "/group_types/{group_type_id}/group_specs",
    "/group_types/{group_type_id}/group_specs/{key}",
    "/limits",
    "/manageable_snapshots",
    "/manageable_snapshots/detail",
    "/manageable_volumes",
    "/manageable_volumes/detail",
    "/os-availability-zone",
    "/os-hosts",
    "/os-quota-sets/{target}",
    "/os-quota-sets/{target}/defaults",
    "/os-services",
    "/os-snapshot-manage",
    "/os-snapshot-manage/detail",
    "/os-volume-manage",
    "/os-volume-manage/detail",
    "/qos-specs",
    "/qos-specs/{qos_id}",
    "/qos-specs/{qos_id}/associate",
    "/qos-specs/{qos_id}/associations",
    "/qos-specs/{qos_id}/disassociate",
    "/qos-specs/{qos_id}/disassociate_all",
    "/resource_filters",
    "/scheduler-stats/get_pools",
    "/snapshots/{snapshot_id}/metadata",
    "/snapshots/{snapshot_id}/metadata/{key}",
    "/types/default",
    "/types/{type_id}/extra_specs",
    "/types/{type_id}/extra_specs/{key}",
    "/types/{type_id}/os-volume-type-access",
    "/volumes/summary",
    "/volumes/{volume_id}/metadata",
    "/volumes/{volume_id}/metadata/{key}",
];

/// The objects of a response: the one under `key`, or each of the list under it.
fn objects<'a>(body: &'a Value, key: &str) -> Vec<&'a Value> {
    match &body[key] {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        object => vec![object],
    }
}

fn keys(object: &Value) -> BTreeSet<&str> {
    object.as_object().map(|map| map.keys().map(String::as_str).collect()).unwrap_or_default()
}

/// The differences between what `object` has and what `view` should have, in words.
fn difference(object: &Value, view: View, version: u16, admin: bool) -> Option<String> {
    let (got, wanted) = (keys(object), expected(view, version, admin));
    if got == wanted {
        return None;
    }
    let extra: Vec<_> = got.difference(&wanted).collect();
    let missing: Vec<_> = wanted.difference(&got).collect();
    Some(format!(
        "{view:?} at 3.{version} as {}: extra {extra:?}, missing {missing:?}",
        if admin { "admin" } else { "member" }
    ))
}

async fn created(reply: RestReply, key: &str) -> Result<String> {
    ensure!(reply.status.is_success(), "{:?}", reply.body);
    Ok(reply.body[key]["id"].as_str().with_context(|| format!("no {key} id in {:?}", reply.body))?.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_view_has_exactly_cinder_s_keys_at_each_microversion_for_each_caller() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let admin = RestCaller::new(PROJECT, "admin");
    let member = RestCaller::new(PROJECT, "alice");

    let quotas = format!("/os-quota-sets/{PROJECT}");
    let lifted = r#"{"quota_set": {"volumes": 100, "snapshots": 100, "gigabytes": 1000}}"#;
    ensure!(admin.call(&api, Method::PUT, &quotas, "3.0", Some(lifted)).await?.status == StatusCode::OK);

    // One of everything, in the member's project.
    let volume = created(
        member.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1}}"#)).await?,
        "volume",
    )
    .await?;
    member.wait_for(&api, &format!("/volumes/{volume}"), "volume", "available").await?;
    let body = format!(r#"{{"snapshot": {{"volume_id": "{volume}"}}}}"#);
    let snapshot =
        created(member.call(&api, Method::POST, "/snapshots", "3.0", Some(&body)).await?, "snapshot").await?;
    member.wait_for(&api, &format!("/snapshots/{snapshot}"), "snapshot", "available").await?;
    let body = format!(r#"{{"backup": {{"volume_id": "{volume}"}}}}"#);
    let backup = created(member.call(&api, Method::POST, "/backups", "3.0", Some(&body)).await?, "backup").await?;
    member.wait_for(&api, &format!("/backups/{backup}"), "backup", "available").await?;
    let attached = created(
        member.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1}}"#)).await?,
        "volume",
    )
    .await?;
    member.wait_for(&api, &format!("/volumes/{attached}"), "volume", "available").await?;
    let body = format!(r#"{{"attachment": {{"volume_uuid": "{attached}", "instance_uuid": "vm-1"}}}}"#);
    let attachment =
        created(member.call(&api, Method::POST, "/attachments", "3.27", Some(&body)).await?, "attachment").await?;
    let offered = created(
        member.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1}}"#)).await?,
        "volume",
    )
    .await?;
    member.wait_for(&api, &format!("/volumes/{offered}"), "volume", "available").await?;
    let body = format!(r#"{{"transfer": {{"volume_id": "{offered}"}}}}"#);
    let transfer =
        created(member.call(&api, Method::POST, "/volume-transfers", "3.55", Some(&body)).await?, "transfer").await?;
    let volume_type = created(
        admin.call(&api, Method::POST, "/types", "3.0", Some(r#"{"volume_type": {"name": "shapes"}}"#)).await?,
        "volume_type",
    )
    .await?;
    let body = r#"{"group_type": {"name": "shapes"}}"#;
    let group_type =
        created(admin.call(&api, Method::POST, "/group_types", "3.11", Some(body)).await?, "group_type").await?;
    let body = format!(r#"{{"group": {{"group_type": "{group_type}", "volume_types": ["__DEFAULT__"]}}}}"#);
    let group = created(member.call(&api, Method::POST, "/groups", "3.13", Some(&body)).await?, "group").await?;
    let body = format!(r#"{{"volume": {{"size": 1, "group_id": "{group}"}}}}"#);
    let grouped = created(member.call(&api, Method::POST, "/volumes", "3.13", Some(&body)).await?, "volume").await?;
    member.wait_for(&api, &format!("/volumes/{grouped}"), "volume", "available").await?;
    let body = format!(r#"{{"group_snapshot": {{"group_id": "{group}"}}}}"#);
    let group_snapshot =
        created(member.call(&api, Method::POST, "/group_snapshots", "3.14", Some(&body)).await?, "group_snapshot")
            .await?;
    member
        .wait_for_at(&api, &format!("/group_snapshots/{group_snapshot}"), "3.14", "group_snapshot", "available")
        .await?;
    // A snapshot the node cannot take leaves a user message.
    let lost = created(
        member.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1}}"#)).await?,
        "volume",
    )
    .await?;
    member.wait_for(&api, &format!("/volumes/{lost}"), "volume", "available").await?;
    std::fs::remove_file(mesh.node_dir("node-0").join(format!("volume-{lost}")))?;
    let body = format!(r#"{{"snapshot": {{"volume_id": "{lost}"}}}}"#);
    let failed = created(member.call(&api, Method::POST, "/snapshots", "3.0", Some(&body)).await?, "snapshot").await?;
    member.wait_for(&api, &format!("/snapshots/{failed}"), "snapshot", "error").await?;
    let messages = member.call(&api, Method::GET, "/messages", "3.3", None).await?;
    let message = messages.body["messages"][0]["id"].as_str().context("a user message")?.to_owned();

    let fill = |path: &str| {
        path.replace("{volume_id}", &volume)
            .replace("{snapshot_id}", &snapshot)
            .replace("{backup_id}", &backup)
            .replace("{attachment_id}", &attachment)
            .replace("{transfer_id}", &transfer)
            .replace("{message_id}", &message)
            .replace("{type_id}", &volume_type)
            .replace("{group_type_id}", &group_type)
            .replace("{group_id}", &group)
            .replace("{group_snapshot_id}", &group_snapshot)
    };
    let routes: &[(&str, &str, View)] = &[
        ("/volumes", "volumes", View::VolumeSummary),
        ("/volumes/detail", "volumes", View::VolumeDetail),
        ("/volumes/{volume_id}", "volume", View::VolumeDetail),
        ("/snapshots", "snapshots", View::SnapshotSummary),
        ("/snapshots/detail", "snapshots", View::SnapshotDetail),
        ("/snapshots/{snapshot_id}", "snapshot", View::SnapshotDetail),
        ("/backups", "backups", View::BackupSummary),
        ("/backups/detail", "backups", View::BackupDetail),
        ("/backups/{backup_id}", "backup", View::BackupDetail),
        ("/attachments", "attachments", View::AttachmentSummary),
        ("/attachments/detail", "attachments", View::AttachmentDetail),
        ("/attachments/{attachment_id}", "attachment", View::AttachmentDetail),
        ("/os-volume-transfer", "transfers", View::TransferSummary),
        ("/os-volume-transfer/detail", "transfers", View::TransferDetail),
        ("/os-volume-transfer/{transfer_id}", "transfer", View::TransferDetail),
        ("/volume-transfers", "transfers", View::TransferSummary),
        ("/volume-transfers/detail", "transfers", View::TransferDetail),
        ("/volume-transfers/{transfer_id}", "transfer", View::TransferDetail),
        ("/messages", "messages", View::Message),
        ("/messages/{message_id}", "message", View::Message),
        ("/types", "volume_types", View::VolumeType),
        ("/types/{type_id}", "volume_type", View::VolumeType),
        ("/group_types", "group_types", View::GroupType),
        ("/group_types/{group_type_id}", "group_type", View::GroupType),
        ("/groups", "groups", View::GroupSummary),
        ("/groups/detail", "groups", View::GroupDetail),
        ("/groups/{group_id}", "group", View::GroupDetail),
        ("/group_snapshots", "group_snapshots", View::GroupSnapshotSummary),
        ("/group_snapshots/detail", "group_snapshots", View::GroupSnapshotDetail),
        ("/group_snapshots/{group_snapshot_id}", "group_snapshot", View::GroupSnapshotDetail),
    ];

    // The table covers the document's GET routes.
    let document = api.call(Method::GET, "/openapi.json", None, None, None).await?.body;
    let mut uncovered = Vec::new();
    for (path, methods) in document["paths"].as_object().context("paths")? {
        if methods.get("get").is_none() || path.starts_with("/v3") || path == "/" {
            continue;
        }
        if !routes.iter().any(|(route, ..)| route == path) && !NOT_OBJECT_VIEWS.contains(&path.as_str()) {
            uncovered.push(path.clone());
        }
    }
    ensure!(uncovered.is_empty(), "GET routes neither checked nor named as not object views: {uncovered:?}");

    let mut wrong = Vec::new();
    let mut checked = 0;
    for (caller, is_admin) in [(&admin, true), (&member, false)] {
        for version in VERSIONS {
            let header = format!("3.{version}");
            for (path, key, view) in routes {
                // The legacy transfer paths are not versioned; the new ones exist from 3.55.
                let first = if path.starts_with("/volume-transfers") { 55 } else { since(*view) };
                let reply = caller.call(&api, Method::GET, &fill(path), &header, None).await?;
                if version < first {
                    ensure!(reply.status == StatusCode::NOT_FOUND, "{path} at {header}: {:?}", reply.body);
                    continue;
                }
                ensure!(reply.status == StatusCode::OK, "{path} at {header}: {} {:?}", reply.status, reply.body);
                let shown = objects(&reply.body, key);
                ensure!(!shown.is_empty(), "{path} at {header} shows nothing: {:?}", reply.body);
                for object in shown {
                    if let Some(difference) = difference(object, *view, version, is_admin) {
                        wrong.push(format!("GET {path}: {difference}"));
                    }
                    checked += 1;
                }
            }

            // What create and update answer.
            let made = caller.call(&api, Method::POST, "/volumes", &header, Some(r#"{"volume": {"size": 1}}"#)).await?;
            let body = r#"{"volume": {"name": "renamed"}}"#;
            let renamed = caller.call(&api, Method::PUT, &format!("/volumes/{volume}"), &header, Some(body)).await?;
            let body = r#"{"snapshot": {"name": "renamed"}}"#;
            let snapshot_renamed =
                caller.call(&api, Method::PUT, &format!("/snapshots/{snapshot}"), &header, Some(body)).await?;
            let body = format!(r#"{{"snapshot": {{"volume_id": "{volume}"}}}}"#);
            let snapshot_made = caller.call(&api, Method::POST, "/snapshots", &header, Some(&body)).await?;
            for (what, reply, key, view) in [
                ("POST /volumes", &made, "volume", View::VolumeWritten),
                ("PUT /volumes/{id}", &renamed, "volume", View::VolumeWritten),
                ("PUT /snapshots/{id}", &snapshot_renamed, "snapshot", View::SnapshotWritten),
                ("POST /snapshots", &snapshot_made, "snapshot", View::SnapshotWritten),
            ] {
                ensure!(reply.status.is_success(), "{what} at {header}: {:?}", reply.body);
                if let Some(difference) = difference(&reply.body[key], view, version, is_admin) {
                    wrong.push(format!("{what}: {difference}"));
                }
                checked += 1;
            }
            let created_snapshot = snapshot_made.body["snapshot"]["id"].as_str().context("a snapshot id")?.to_owned();
            member.wait_for(&api, &format!("/snapshots/{created_snapshot}"), "snapshot", "available").await?;
            member.call(&api, Method::DELETE, &format!("/snapshots/{created_snapshot}"), "3.0", None).await?;
        }
    }
    ensure!(wrong.is_empty(), "{} of {checked} objects differ from Cinder's views:\n{}", wrong.len(), wrong.join("\n"));
    mesh.shutdown().await;
    Ok(())
}
