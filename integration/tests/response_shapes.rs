//! Every object view the REST API shows, at microversions 3.0, 3.27, 3.55, 3.64 and 3.71, for a
//! project admin and a project member: exactly the keys Cinder's view builders (and the controller
//! extensions that add to some of them) give for that caller at that version, no more, no fewer.
//! Strict clients (tempest's schemas, with `additionalProperties: false`) reject a response for one
//! extra key. Every GET, POST and PUT route of the OpenAPI document is either checked here or named
//! as one whose answer is not an object view (so a new route is covered the day it is added): what
//! lists and shows answer, and what creates, updates and the actions that answer an object do,
//! including views whose keys depend on the deployment (a quota set's per-type keys) and admins'
//! routes (members get 403). Attachments connect through a real tgtd.
//!
//! The tables are written from Cinder's views (`cinder/api/v3/views/`, `cinder/api/views/`,
//! `cinder/api/contrib/*_attribute*.py`) and `../shared/docs/cinder-api.md`, not from Basalt's code.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use axum::http::{Method, StatusCode};
use basalt_integration::*;
use serde_json::Value;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
/// The project transfers go to.
const OTHER: &str = "fedcba9876543210fedcba9876543210";
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
    QosSpecs,
    QosAssociation,
    DefaultType,
    AvailabilityZone,
    Limits,
    AbsoluteLimits,
    VolumesSummary,
    BackupRecord,
    Extension,
    Host,
    Capabilities,
    ManageableVolumeSummary,
    ManageableVolumeDetail,
    ManageableSnapshotSummary,
    ManageableSnapshotDetail,
    /// A manage's answer: Cinder's v2 volume view builder at every microversion.
    VolumeManaged,
    /// A snapshot manage's answer: the v2 snapshot view.
    SnapshotManaged,
    /// A volume type as create answers it (the access extension's key, no QoS specs id).
    VolumeTypeCreated,
    /// A volume type as update answers it.
    VolumeTypeUpdated,
    TransferCreated,
    Restore,
    /// Show and defaults: every resource of the deployment, each volume type's three included.
    QuotaSet,
    /// An update's answer: the same without the project's id.
    QuotaSetUpdated,
    /// What enabling or disabling a service answers (the reason only with disable-log-reason).
    ServiceUpdated {
        with_reason: bool,
    },
    /// A service other than a volume service.
    Service,
    VolumeService,
    PoolSummary,
    PoolDetail,
}

/// The keys Cinder shows of `view` at microversion `3.<version>` to an admin or a member, in a
/// deployment whose volume types are named `types` (a quota set has three keys for each).
fn expected(view: View, version: u16, admin: bool, types: &[String]) -> BTreeSet<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut from = |since: u16, added: &[&str]| {
        if version >= since {
            keys.extend(added.iter().map(|key| (*key).to_owned()));
        }
    };
    match view {
        View::VolumeManaged => return expected(View::VolumeWritten, 0, admin, types),
        View::SnapshotManaged => return expected(View::SnapshotWritten, 0, admin, types),
        View::QuotaSet | View::QuotaSetUpdated => {
            if matches!(view, View::QuotaSet) {
                from(0, &["id"]);
            }
            from(
                0,
                &["volumes", "snapshots", "gigabytes", "backups", "backup_gigabytes", "per_volume_gigabytes", "groups"],
            );
            for name in types {
                keys.extend(["volumes", "snapshots", "gigabytes"].map(|prefix| format!("{prefix}_{name}")));
            }
        }
        View::Service | View::VolumeService => {
            from(0, &["binary", "host", "zone", "status", "state", "updated_at", "disabled_reason"]);
            from(7, &["cluster"]);
            if matches!(view, View::VolumeService) {
                from(0, &["replication_status", "active_backend_id", "frozen"]);
                from(49, &["backend_state"]);
            }
        }
        View::ServiceUpdated { with_reason } => {
            from(0, &["disabled", "host", "service", "binary", "status"]);
            if with_reason {
                from(0, &["disabled_reason"]);
            }
        }
        View::PoolSummary => from(0, &["name"]),
        View::PoolDetail => from(0, &["name", "capabilities"]),
        View::VolumeTypeCreated => {
            from(0, &["id", "name", "description", "is_public", "os-volume-type-access:is_public", "extra_specs"]);
        }
        View::VolumeTypeUpdated => from(0, &["id", "name", "description", "is_public", "extra_specs"]),
        View::TransferCreated => {
            from(0, &["id", "created_at", "name", "volume_id", "auth_key", "links"]);
            from(55, &["no_snapshots"]);
            from(57, &["destination_project_id", "source_project_id", "accepted"]);
        }
        View::Restore => from(0, &["backup_id", "volume_id", "volume_name"]),
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
        View::QosSpecs => from(0, &["id", "name", "consumer", "specs"]),
        View::QosAssociation => from(0, &["association_type", "id", "name"]),
        View::DefaultType => from(62, &["project_id", "volume_type_id"]),
        View::AvailabilityZone => from(0, &["zoneName", "zoneState"]),
        View::Limits => from(0, &["rate", "absolute"]),
        View::AbsoluteLimits => from(
            0,
            &[
                "maxTotalVolumes",
                "maxTotalSnapshots",
                "maxTotalVolumeGigabytes",
                "maxTotalBackups",
                "maxTotalBackupGigabytes",
                "totalVolumesUsed",
                "totalGigabytesUsed",
                "totalSnapshotsUsed",
                "totalBackupsUsed",
                "totalBackupGigabytesUsed",
            ],
        ),
        View::VolumesSummary => {
            from(12, &["total_count", "total_size"]);
            from(36, &["metadata"]);
        }
        View::BackupRecord => from(0, &["backup_service", "backup_url"]),
        View::Extension => from(0, &["alias", "description", "links", "name", "updated"]),
        View::Host => from(0, &["host_name", "last-update", "service", "service-state", "service-status", "zone"]),
        View::Capabilities => from(
            0,
            &[
                "namespace",
                "vendor_name",
                "volume_backend_name",
                "pool_name",
                "driver_version",
                "storage_protocol",
                "display_name",
                "description",
                "visibility",
                "replication_targets",
                "properties",
            ],
        ),
        View::ManageableVolumeSummary => from(0, &["reference", "size", "safe_to_manage"]),
        View::ManageableVolumeDetail => {
            from(0, &["reference", "size", "safe_to_manage", "reason_not_safe", "cinder_id", "extra_info"]);
        }
        View::ManageableSnapshotSummary => from(0, &["reference", "size", "safe_to_manage", "source_reference"]),
        View::ManageableSnapshotDetail => from(
            0,
            &["reference", "size", "safe_to_manage", "source_reference", "reason_not_safe", "cinder_id", "extra_info"],
        ),
    }
    keys.into_iter().collect()
}

/// GET routes whose answer is no object view, and where each is checked instead: maps of
/// arbitrary keys (metadata, extra and group specs), association actions that answer nothing,
/// and the one-off shapes with their own exact tests.
const NOT_OBJECT_VIEWS: &[&str] = &[
    // Maps of whatever keys were set.
    "/volumes/{volume_id}/metadata",
    "/volumes/{volume_id}/metadata/{key}",
    "/snapshots/{snapshot_id}/metadata",
    "/snapshots/{snapshot_id}/metadata/{key}",
    "/types/{type_id}/extra_specs",
    "/types/{type_id}/extra_specs/{key}",
    "/group_types/{group_type_id}/group_specs",
    "/group_types/{group_type_id}/group_specs/{key}",
    // Associations (GETs that change them, answering nothing; `associations` is in the table).
    "/qos-specs/{qos_id}/associate",
    "/qos-specs/{qos_id}/disassociate",
    "/qos-specs/{qos_id}/disassociate_all",
    // Exact tests of their own: types (rest_api.rs, per caller and response), the default group
    // type (groups.rs), type access and resource filters (rest_api.rs).
    "/types/default",
    "/group_types/default",
    "/types/{type_id}/os-volume-type-access",
    "/resource_filters",
];

/// A GET route and where its answer shows objects of `view`.
struct Route {
    path: &'static str,
    /// The JSON pointer to the object, or to the list of them.
    pointer: &'static str,
    view: View,
    /// The first microversion it answers at (below it, 404).
    since: u16,
    /// Cinder's policy lets only admins call it (members get 403).
    admin_only: bool,
}

/// The objects of a response: the one at `pointer`, or each of the list there.
fn objects<'a>(body: &'a Value, pointer: &str) -> Vec<&'a Value> {
    match body.pointer(pointer) {
        Some(Value::Array(items)) => items.iter().collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(object) => vec![object],
    }
}

fn keys(object: &Value) -> BTreeSet<&str> {
    object.as_object().map(|map| map.keys().map(String::as_str).collect()).unwrap_or_default()
}

/// The differences between what `object` has and what `view` should have, in words.
fn difference(object: &Value, view: View, version: u16, admin: bool, types: &[String]) -> Option<String> {
    let wanted = expected(view, version, admin, types);
    let got: BTreeSet<String> = keys(object).into_iter().map(str::to_owned).collect();
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

/// The id of the `key` object a successful create answered.
fn id_in(reply: &RestReply, key: &str) -> Result<String> {
    ensure!(reply.status.is_success(), "{:?}", reply.body);
    Ok(reply.body[key]["id"].as_str().with_context(|| format!("no {key} id in {:?}", reply.body))?.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_view_has_exactly_cinder_s_keys_at_each_microversion_for_each_caller() -> Result<()> {
    let database = tempfile::tempdir()?;
    let database_url = format!("sqlite://{}?mode=rwc", database.path().join("basalt.db").display());
    // A real tgtd, so that attachments connect.
    let tgtd = Tgtd::start()?;
    let mut mesh = InProcessMesh::start_with_database(0, Some(database_url.clone())).await?;
    let settings = tgtd.settings();
    mesh.add_node_with("node-0", |config| config.export = basalt_volume_node::ExportSettings::Tgt(settings)).await?;
    let api = RestApi::start(&mesh).await?;
    let admin = RestCaller::new(PROJECT, "admin");
    let member = RestCaller::new(PROJECT, "alice");

    let quotas = format!("/os-quota-sets/{PROJECT}");
    ensure!(admin.call(&api, Method::PUT, &quotas, "3.0", Some(LIFTED)).await?.status == StatusCode::OK);
    let receiving = format!("/os-quota-sets/{OTHER}");
    ensure!(admin.call(&api, Method::PUT, &receiving, "3.0", Some(LIFTED)).await?.status == StatusCode::OK);

    // One of everything, in the member's project.
    let volume = id_in(
        &member.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1}}"#)).await?,
        "volume",
    )?;
    member.wait_for(&api, &format!("/volumes/{volume}"), "volume", "available").await?;
    let body = format!(r#"{{"snapshot": {{"volume_id": "{volume}"}}}}"#);
    let snapshot = id_in(&member.call(&api, Method::POST, "/snapshots", "3.0", Some(&body)).await?, "snapshot")?;
    member.wait_for(&api, &format!("/snapshots/{snapshot}"), "snapshot", "available").await?;
    let body = format!(r#"{{"backup": {{"volume_id": "{volume}"}}}}"#);
    let backup = id_in(&member.call(&api, Method::POST, "/backups", "3.0", Some(&body)).await?, "backup")?;
    member.wait_for(&api, &format!("/backups/{backup}"), "backup", "available").await?;
    let attached = id_in(
        &member.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1}}"#)).await?,
        "volume",
    )?;
    member.wait_for(&api, &format!("/volumes/{attached}"), "volume", "available").await?;
    let body = format!(r#"{{"attachment": {{"volume_uuid": "{attached}", "instance_uuid": "vm-1"}}}}"#);
    let attachment = id_in(&member.call(&api, Method::POST, "/attachments", "3.27", Some(&body)).await?, "attachment")?;
    let offered = id_in(
        &member.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1}}"#)).await?,
        "volume",
    )?;
    member.wait_for(&api, &format!("/volumes/{offered}"), "volume", "available").await?;
    let body = format!(r#"{{"transfer": {{"volume_id": "{offered}"}}}}"#);
    let transfer =
        id_in(&member.call(&api, Method::POST, "/volume-transfers", "3.55", Some(&body)).await?, "transfer")?;
    let volume_type = id_in(
        &admin.call(&api, Method::POST, "/types", "3.0", Some(r#"{"volume_type": {"name": "shapes"}}"#)).await?,
        "volume_type",
    )?;
    let body = r#"{"group_type": {"name": "shapes"}}"#;
    let group_type = id_in(&admin.call(&api, Method::POST, "/group_types", "3.11", Some(body)).await?, "group_type")?;
    let body = format!(r#"{{"group": {{"group_type": "{group_type}", "volume_types": ["__DEFAULT__"]}}}}"#);
    let group = id_in(&member.call(&api, Method::POST, "/groups", "3.13", Some(&body)).await?, "group")?;
    let body = format!(r#"{{"volume": {{"size": 1, "group_id": "{group}"}}}}"#);
    let grouped = id_in(&member.call(&api, Method::POST, "/volumes", "3.13", Some(&body)).await?, "volume")?;
    member.wait_for(&api, &format!("/volumes/{grouped}"), "volume", "available").await?;
    let body = format!(r#"{{"group_snapshot": {{"group_id": "{group}"}}}}"#);
    let group_snapshot =
        id_in(&member.call(&api, Method::POST, "/group_snapshots", "3.14", Some(&body)).await?, "group_snapshot")?;
    member
        .wait_for_at(&api, &format!("/group_snapshots/{group_snapshot}"), "3.14", "group_snapshot", "available")
        .await?;
    let body = r#"{"qos_specs": {"name": "shapes", "read_iops_sec": "100"}}"#;
    let qos = admin.call(&api, Method::POST, "/qos-specs", "3.0", Some(body)).await?;
    let qos = qos.body["qos_specs"]["id"].as_str().with_context(|| format!("no qos id in {:?}", qos.body))?.to_owned();
    let associate = format!("/qos-specs/{qos}/associate?vol_type_id={volume_type}");
    ensure!(admin.call(&api, Method::GET, &associate, "3.0", None).await?.status.is_success());
    let body = format!(r#"{{"default_type": {{"volume_type": "{volume_type}"}}}}"#);
    let set = admin.call(&api, Method::PUT, &format!("/default-types/{PROJECT}"), "3.62", Some(&body)).await?;
    ensure!(set.status.is_success(), "{:?}", set.body);
    // A snapshot the node cannot take leaves a user message.
    let lost = id_in(
        &member.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1}}"#)).await?,
        "volume",
    )?;
    member.wait_for(&api, &format!("/volumes/{lost}"), "volume", "available").await?;
    std::fs::remove_file(mesh.node_dir("node-0").join(format!("volume-{lost}")))?;
    let body = format!(r#"{{"snapshot": {{"volume_id": "{lost}"}}}}"#);
    let failed = id_in(&member.call(&api, Method::POST, "/snapshots", "3.0", Some(&body)).await?, "snapshot")?;
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
            .replace("{qos_id}", &qos)
            .replace("{target}", PROJECT)
            .replace("{host}", "node-0@file")
            .replace("{pool}", "node-0@file%23default")
    };
    let routes = [
        Route {
            path: "/volumes/summary",
            pointer: "/volume-summary",
            view: View::VolumesSummary,
            since: 12,
            admin_only: false,
        },
        Route { path: "/limits", pointer: "/limits", view: View::Limits, since: 0, admin_only: false },
        Route {
            path: "/os-quota-sets/{target}",
            pointer: "/quota_set",
            view: View::QuotaSet,
            since: 0,
            admin_only: false,
        },
        Route {
            path: "/os-quota-sets/{target}?usage=true",
            pointer: "/quota_set",
            view: View::QuotaSet,
            since: 0,
            admin_only: false,
        },
        Route {
            path: "/os-quota-sets/{target}/defaults",
            pointer: "/quota_set",
            view: View::QuotaSet,
            since: 0,
            admin_only: false,
        },
        Route {
            path: "/os-services?binary=cinder-scheduler",
            pointer: "/services",
            view: View::Service,
            since: 0,
            admin_only: true,
        },
        Route {
            path: "/os-services?binary=cinder-volume",
            pointer: "/services",
            view: View::VolumeService,
            since: 0,
            admin_only: true,
        },
        Route {
            path: "/scheduler-stats/get_pools",
            pointer: "/pools",
            view: View::PoolSummary,
            since: 0,
            admin_only: true,
        },
        Route {
            path: "/scheduler-stats/get_pools?detail=true",
            pointer: "/pools",
            view: View::PoolDetail,
            since: 0,
            admin_only: true,
        },
        Route { path: "/limits", pointer: "/limits/absolute", view: View::AbsoluteLimits, since: 0, admin_only: false },
        Route {
            path: "/os-availability-zone",
            pointer: "/availabilityZoneInfo",
            view: View::AvailabilityZone,
            since: 0,
            admin_only: false,
        },
        Route { path: "/extensions", pointer: "/extensions", view: View::Extension, since: 0, admin_only: false },
        Route { path: "/os-hosts", pointer: "/hosts", view: View::Host, since: 0, admin_only: true },
        Route { path: "/capabilities/{host}", pointer: "", view: View::Capabilities, since: 0, admin_only: true },
        Route {
            path: "/backups/{backup_id}/export_record",
            pointer: "/backup-record",
            view: View::BackupRecord,
            since: 0,
            admin_only: true,
        },
        Route { path: "/qos-specs", pointer: "/qos_specs", view: View::QosSpecs, since: 0, admin_only: true },
        Route { path: "/qos-specs/{qos_id}", pointer: "/qos_specs", view: View::QosSpecs, since: 0, admin_only: true },
        Route {
            path: "/qos-specs/{qos_id}/associations",
            pointer: "/qos_associations",
            view: View::QosAssociation,
            since: 0,
            admin_only: true,
        },
        Route {
            path: "/default-types",
            pointer: "/default_types",
            view: View::DefaultType,
            since: 62,
            admin_only: true,
        },
        Route {
            path: "/default-types/{target}",
            pointer: "/default_type",
            view: View::DefaultType,
            since: 62,
            admin_only: true,
        },
        Route {
            path: "/os-volume-manage?host={pool}",
            pointer: "/manageable-volumes",
            view: View::ManageableVolumeSummary,
            since: 0,
            admin_only: true,
        },
        Route {
            path: "/os-volume-manage/detail?host={pool}",
            pointer: "/manageable-volumes",
            view: View::ManageableVolumeDetail,
            since: 0,
            admin_only: true,
        },
        Route {
            path: "/manageable_volumes?host={pool}",
            pointer: "/manageable-volumes",
            view: View::ManageableVolumeSummary,
            since: 8,
            admin_only: true,
        },
        Route {
            path: "/manageable_volumes/detail?host={pool}",
            pointer: "/manageable-volumes",
            view: View::ManageableVolumeDetail,
            since: 8,
            admin_only: true,
        },
        Route {
            path: "/os-snapshot-manage?host={pool}",
            pointer: "/manageable-snapshots",
            view: View::ManageableSnapshotSummary,
            since: 0,
            admin_only: true,
        },
        Route {
            path: "/os-snapshot-manage/detail?host={pool}",
            pointer: "/manageable-snapshots",
            view: View::ManageableSnapshotDetail,
            since: 0,
            admin_only: true,
        },
        Route {
            path: "/manageable_snapshots?host={pool}",
            pointer: "/manageable-snapshots",
            view: View::ManageableSnapshotSummary,
            since: 8,
            admin_only: true,
        },
        Route {
            path: "/manageable_snapshots/detail?host={pool}",
            pointer: "/manageable-snapshots",
            view: View::ManageableSnapshotDetail,
            since: 8,
            admin_only: true,
        },
        Route { path: "/volumes", pointer: "/volumes", view: View::VolumeSummary, since: 0, admin_only: false },
        Route { path: "/volumes/detail", pointer: "/volumes", view: View::VolumeDetail, since: 0, admin_only: false },
        Route {
            path: "/volumes/{volume_id}",
            pointer: "/volume",
            view: View::VolumeDetail,
            since: 0,
            admin_only: false,
        },
        Route { path: "/snapshots", pointer: "/snapshots", view: View::SnapshotSummary, since: 0, admin_only: false },
        Route {
            path: "/snapshots/detail",
            pointer: "/snapshots",
            view: View::SnapshotDetail,
            since: 0,
            admin_only: false,
        },
        Route {
            path: "/snapshots/{snapshot_id}",
            pointer: "/snapshot",
            view: View::SnapshotDetail,
            since: 0,
            admin_only: false,
        },
        Route { path: "/backups", pointer: "/backups", view: View::BackupSummary, since: 0, admin_only: false },
        Route { path: "/backups/detail", pointer: "/backups", view: View::BackupDetail, since: 0, admin_only: false },
        Route {
            path: "/backups/{backup_id}",
            pointer: "/backup",
            view: View::BackupDetail,
            since: 0,
            admin_only: false,
        },
        Route {
            path: "/attachments",
            pointer: "/attachments",
            view: View::AttachmentSummary,
            since: 27,
            admin_only: false,
        },
        Route {
            path: "/attachments/detail",
            pointer: "/attachments",
            view: View::AttachmentDetail,
            since: 27,
            admin_only: false,
        },
        Route {
            path: "/attachments/{attachment_id}",
            pointer: "/attachment",
            view: View::AttachmentDetail,
            since: 27,
            admin_only: false,
        },
        Route {
            path: "/os-volume-transfer",
            pointer: "/transfers",
            view: View::TransferSummary,
            since: 0,
            admin_only: false,
        },
        Route {
            path: "/os-volume-transfer/detail",
            pointer: "/transfers",
            view: View::TransferDetail,
            since: 0,
            admin_only: false,
        },
        Route {
            path: "/os-volume-transfer/{transfer_id}",
            pointer: "/transfer",
            view: View::TransferDetail,
            since: 0,
            admin_only: false,
        },
        Route {
            path: "/volume-transfers",
            pointer: "/transfers",
            view: View::TransferSummary,
            since: 55,
            admin_only: false,
        },
        Route {
            path: "/volume-transfers/detail",
            pointer: "/transfers",
            view: View::TransferDetail,
            since: 55,
            admin_only: false,
        },
        Route {
            path: "/volume-transfers/{transfer_id}",
            pointer: "/transfer",
            view: View::TransferDetail,
            since: 55,
            admin_only: false,
        },
        Route { path: "/messages", pointer: "/messages", view: View::Message, since: 3, admin_only: false },
        Route { path: "/messages/{message_id}", pointer: "/message", view: View::Message, since: 3, admin_only: false },
        Route { path: "/types", pointer: "/volume_types", view: View::VolumeType, since: 0, admin_only: false },
        Route {
            path: "/types/{type_id}",
            pointer: "/volume_type",
            view: View::VolumeType,
            since: 0,
            admin_only: false,
        },
        Route { path: "/group_types", pointer: "/group_types", view: View::GroupType, since: 11, admin_only: false },
        Route {
            path: "/group_types/{group_type_id}",
            pointer: "/group_type",
            view: View::GroupType,
            since: 11,
            admin_only: false,
        },
        Route { path: "/groups", pointer: "/groups", view: View::GroupSummary, since: 13, admin_only: false },
        Route { path: "/groups/detail", pointer: "/groups", view: View::GroupDetail, since: 13, admin_only: false },
        Route { path: "/groups/{group_id}", pointer: "/group", view: View::GroupDetail, since: 13, admin_only: false },
        Route {
            path: "/group_snapshots",
            pointer: "/group_snapshots",
            view: View::GroupSnapshotSummary,
            since: 14,
            admin_only: false,
        },
        Route {
            path: "/group_snapshots/detail",
            pointer: "/group_snapshots",
            view: View::GroupSnapshotDetail,
            since: 14,
            admin_only: false,
        },
        Route {
            path: "/group_snapshots/{group_snapshot_id}",
            pointer: "/group_snapshot",
            view: View::GroupSnapshotDetail,
            since: 14,
            admin_only: false,
        },
    ];

    // The table covers the document's GET routes.
    let document = api.call(Method::GET, "/openapi.json", None, None, None).await?.body;
    let paths = document["paths"].as_object().context("paths")?;
    let mut uncovered = Vec::new();
    for (path, methods) in paths {
        if methods.get("get").is_none() || path.starts_with("/v3") || path == "/" {
            continue;
        }
        let in_table = routes.iter().any(|route| route.path.split('?').next() == Some(path.as_str()));
        if !in_table && !NOT_OBJECT_VIEWS.contains(&path.as_str()) {
            uncovered.push(path.clone());
        }
    }
    ensure!(uncovered.is_empty(), "GET routes neither checked nor named as not object views: {uncovered:?}");

    let fixtures = Fixtures {
        api: &api,
        admin: &admin,
        database_url: &database_url,
        pool_dir: mesh.node_dir("node-0"),
        volume: &volume,
        snapshot: &snapshot,
        volume_type: &volume_type,
        group_type: &group_type,
        group: &group,
    };
    let mut wrong = Vec::new();
    let mut checked = 0;
    let mut writes_checked = BTreeSet::new();
    for (caller, is_admin) in [(&admin, true), (&member, false)] {
        for version in VERSIONS {
            let header = format!("3.{version}");
            let types = type_names(&api, &admin).await?;
            for Route { path, pointer, view, since, admin_only } in &routes {
                let reply = caller.call(&api, Method::GET, &fill(path), &header, None).await?;
                if version < *since {
                    ensure!(reply.status == StatusCode::NOT_FOUND, "{path} at {header}: {:?}", reply.body);
                    continue;
                }
                if *admin_only && !is_admin {
                    ensure!(reply.status == StatusCode::FORBIDDEN, "a member's {path}: {:?}", reply.body);
                    continue;
                }
                ensure!(reply.status == StatusCode::OK, "{path} at {header}: {} {:?}", reply.status, reply.body);
                let shown = objects(&reply.body, pointer);
                ensure!(!shown.is_empty(), "{path} at {header} shows nothing: {:?}", reply.body);
                for object in shown {
                    if let Some(difference) = difference(object, *view, version, is_admin, &types) {
                        wrong.push(format!("GET {path}: {difference}"));
                    }
                    checked += 1;
                }
            }

            let answers = write_answers(&fixtures, caller, is_admin, version).await?;
            let types = type_names(&api, &admin).await?;
            for Written { what, reply, pointer, view, since, admin_only } in answers {
                writes_checked.insert(what);
                if version < since {
                    ensure!(reply.status == StatusCode::NOT_FOUND, "{what} at {header}: {:?}", reply.body);
                    continue;
                }
                if admin_only && !is_admin {
                    ensure!(reply.status == StatusCode::FORBIDDEN, "a member's {what}: {:?}", reply.body);
                    continue;
                }
                ensure!(reply.status.is_success(), "{what} at {header}: {} {:?}", reply.status, reply.body);
                let object = reply.body.pointer(pointer).with_context(|| format!("{what}: {:?}", reply.body))?;
                if let Some(difference) = difference(object, view, version, is_admin, &types) {
                    wrong.push(format!("{what}: {difference}"));
                }
                checked += 1;
            }
        }
    }
    ensure!(wrong.is_empty(), "{} of {checked} objects differ from Cinder's views:\n{}", wrong.len(), wrong.join("\n"));

    // The writes cover the document's POST and PUT routes.
    let mut unchecked = Vec::new();
    for (path, methods) in paths {
        for method in ["post", "put"] {
            let route = format!("{} {path}", method.to_uppercase());
            if methods.get(method).is_some()
                && !path.starts_with("/v3")
                && !writes_checked.contains(route.as_str())
                && !NO_OBJECT_WRITES.iter().any(|(named, _)| *named == route)
            {
                unchecked.push(route);
            }
        }
    }
    ensure!(unchecked.is_empty(), "writes neither checked nor named as answering no object view: {unchecked:?}");
    mesh.shutdown().await;
    Ok(())
}

const LIFTED: &str = r#"{"quota_set": {"volumes": 1000, "snapshots": 1000, "gigabytes": 10000, "backups": 100,
    "backup_gigabytes": 1000, "groups": 100}}"#;

/// POST and PUT routes whose answer is no object view, and why.
const NO_OBJECT_WRITES: &[(&str, &str)] = &[
    ("POST /volumes/{volume_id}/metadata", "the metadata map"),
    ("PUT /volumes/{volume_id}/metadata", "the metadata map"),
    ("PUT /volumes/{volume_id}/metadata/{key}", "the one key's map"),
    ("POST /snapshots/{snapshot_id}/metadata", "the metadata map"),
    ("PUT /snapshots/{snapshot_id}/metadata", "the metadata map"),
    ("PUT /snapshots/{snapshot_id}/metadata/{key}", "the one key's map"),
    ("POST /types/{type_id}/extra_specs", "the extra specs map"),
    ("PUT /types/{type_id}/extra_specs/{key}", "the one key's map"),
    ("POST /group_types/{group_type_id}/group_specs", "the group specs map"),
    ("PUT /group_types/{group_type_id}/group_specs/{key}", "the one key's map"),
    ("PUT /qos-specs/{qos_id}", "the specs map"),
    ("PUT /qos-specs/{qos_id}/delete_keys", "no body"),
    (
        "POST /volumes/{volume_id}/action",
        "no body, but for os-initialize_connection's connection_info: the target's keys, which iscsi.rs checks",
    ),
    ("POST /snapshots/{snapshot_id}/action", "no body"),
    ("POST /types/{type_id}/action", "no body"),
    ("POST /attachments/{attachment_id}/action", "no body"),
    ("POST /backups/{backup_id}/action", "no body"),
    ("PUT /groups/{group_id}", "no body"),
    ("POST /groups/{group_id}/action", "no body"),
    ("POST /group_snapshots/{group_snapshot_id}/action", "no body"),
];

/// A write, and where its answer shows an object of `view`.
struct Written {
    /// The method and path as the OpenAPI document names them.
    what: &'static str,
    reply: RestReply,
    pointer: &'static str,
    view: View,
    since: u16,
    admin_only: bool,
}

impl Written {
    fn new(what: &'static str, reply: RestReply, pointer: &'static str, view: View) -> Self {
        Self { what, reply, pointer, view, since: 0, admin_only: false }
    }

    fn since(self, since: u16) -> Self {
        Self { since, ..self }
    }

    fn admin_only(self) -> Self {
        Self { admin_only: true, ..self }
    }
}

/// What the writes work on, made once.
struct Fixtures<'a> {
    api: &'a RestApi,
    admin: &'a RestCaller,
    database_url: &'a str,
    pool_dir: std::path::PathBuf,
    volume: &'a str,
    snapshot: &'a str,
    volume_type: &'a str,
    group_type: &'a str,
    group: &'a str,
}

impl Fixtures<'_> {
    /// A new available volume of the project, made by its admin.
    async fn available_volume(&self) -> Result<String> {
        let reply = self.admin.call(self.api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1}}"#));
        let volume = id_in(&reply.await?, "volume")?;
        self.admin.wait_for(self.api, &format!("/volumes/{volume}"), "volume", "available").await?;
        Ok(volume)
    }

    /// An object in the pool that no volume or snapshot row names: a snapshot taken and unmanaged.
    async fn unmanaged_snapshot(&self) -> Result<String> {
        let body = format!(r#"{{"snapshot": {{"volume_id": "{}"}}}}"#, self.volume);
        let snapshot =
            id_in(&self.admin.call(self.api, Method::POST, "/snapshots", "3.0", Some(&body)).await?, "snapshot")?;
        self.admin.wait_for(self.api, &format!("/snapshots/{snapshot}"), "snapshot", "available").await?;
        let action = format!("/snapshots/{snapshot}/action");
        let released =
            self.admin.call(self.api, Method::POST, &action, "3.0", Some(r#"{"os-unmanage": null}"#)).await?;
        ensure!(released.status == StatusCode::ACCEPTED, "{:?}", released.body);
        Ok(format!("snapshot-{snapshot}"))
    }
}

/// Every volume type's name, public or not: a quota set has keys for each.
async fn type_names(api: &RestApi, admin: &RestCaller) -> Result<Vec<String>> {
    let listed = admin.call(api, Method::GET, "/types?is_public=None", "3.0", None).await?;
    let types = listed.body["volume_types"].as_array().with_context(|| format!("{:?}", listed.body))?;
    Ok(types.iter().filter_map(|volume_type| volume_type["name"].as_str().map(str::to_owned)).collect())
}

/// Calls every POST and PUT route whose answer shows an object, as `caller` at `3.<version>`,
/// making what each needs first (new names each time, so every call can succeed).
async fn write_answers(
    fixtures: &Fixtures<'_>,
    caller: &RestCaller,
    is_admin: bool,
    version: u16,
) -> Result<Vec<Written>> {
    let Fixtures { api, admin, volume, snapshot, volume_type, group_type, group, .. } = *fixtures;
    let header = format!("3.{version}");
    let unique = format!("{}-{version}", if is_admin { "admin" } else { "member" });
    let call = |method: Method, path: String, body: String| {
        let header = header.clone();
        async move { caller.call(api, method, &path, &header, Some(&body)).await }
    };
    let mut answers = Vec::new();

    // Volumes and snapshots.
    let reply = call(Method::POST, "/volumes".into(), r#"{"volume": {"size": 1}}"#.into()).await?;
    answers.push(Written::new("POST /volumes", reply, "/volume", View::VolumeWritten));
    let reply = call(Method::PUT, format!("/volumes/{volume}"), r#"{"volume": {"name": "renamed"}}"#.into()).await?;
    answers.push(Written::new("PUT /volumes/{volume_id}", reply, "/volume", View::VolumeWritten));
    let reply =
        call(Method::PUT, format!("/snapshots/{snapshot}"), r#"{"snapshot": {"name": "renamed"}}"#.into()).await?;
    answers.push(Written::new("PUT /snapshots/{snapshot_id}", reply, "/snapshot", View::SnapshotWritten));
    let body = format!(r#"{{"snapshot": {{"volume_id": "{volume}"}}}}"#);
    let reply = call(Method::POST, "/snapshots".into(), body).await?;
    let made = id_in(&reply, "snapshot")?;
    answers.push(Written::new("POST /snapshots", reply, "/snapshot", View::SnapshotWritten));
    admin.wait_for(api, &format!("/snapshots/{made}"), "snapshot", "available").await?;
    admin.call(api, Method::DELETE, &format!("/snapshots/{made}"), "3.0", None).await?;

    // Types, QoS specs, group types, default types and quotas: admins'.
    let body = format!(r#"{{"volume_type": {{"name": "type-{unique}"}}}}"#);
    let reply = call(Method::POST, "/types".into(), body).await?;
    answers.push(Written::new("POST /types", reply, "/volume_type", View::VolumeTypeCreated).admin_only());
    let body = r#"{"volume_type": {"description": "updated"}}"#.to_owned();
    let reply = call(Method::PUT, format!("/types/{volume_type}"), body).await?;
    answers.push(Written::new("PUT /types/{type_id}", reply, "/volume_type", View::VolumeTypeUpdated).admin_only());
    let body = format!(r#"{{"qos_specs": {{"name": "qos-{unique}", "total_iops_sec": "500"}}}}"#);
    let reply = call(Method::POST, "/qos-specs".into(), body).await?;
    answers.push(Written::new("POST /qos-specs", reply, "/qos_specs", View::QosSpecs).admin_only());
    let body = format!(r#"{{"group_type": {{"name": "group-type-{unique}"}}}}"#);
    let reply = call(Method::POST, "/group_types".into(), body).await?;
    answers.push(Written::new("POST /group_types", reply, "/group_type", View::GroupType).since(11).admin_only());
    let body = r#"{"group_type": {"description": "updated"}}"#.to_owned();
    let reply = call(Method::PUT, format!("/group_types/{group_type}"), body).await?;
    let written = Written::new("PUT /group_types/{group_type_id}", reply, "/group_type", View::GroupType);
    answers.push(written.since(11).admin_only());
    let body = format!(r#"{{"default_type": {{"volume_type": "{volume_type}"}}}}"#);
    let reply = call(Method::PUT, format!("/default-types/{PROJECT}"), body).await?;
    let written = Written::new("PUT /default-types/{target}", reply, "/default_type", View::DefaultType);
    answers.push(written.since(62).admin_only());
    let reply = call(Method::PUT, format!("/os-quota-sets/{PROJECT}"), LIFTED.into()).await?;
    let written = Written::new("PUT /os-quota-sets/{target}", reply, "/quota_set", View::QuotaSetUpdated);
    answers.push(written.admin_only());

    // Manage: an object of the pool adopted, under both paths.
    for (what, path, since) in
        [("POST /os-volume-manage", "/os-volume-manage", 0), ("POST /manageable_volumes", "/manageable_volumes", 8)]
    {
        let source = format!("legacy-{unique}-{since}");
        std::fs::write(fixtures.pool_dir.join(&source), pattern(7, 1 << 20))?;
        let body = format!(r#"{{"volume": {{"host": "node-0@file#default", "ref": {{"source-name": "{source}"}}}}}}"#);
        let reply = call(Method::POST, path.into(), body).await?;
        answers.push(Written::new(what, reply, "/volume", View::VolumeManaged).since(since).admin_only());
    }
    for (what, path, since) in [
        ("POST /os-snapshot-manage", "/os-snapshot-manage", 0),
        ("POST /manageable_snapshots", "/manageable_snapshots", 8),
    ] {
        let source = fixtures.unmanaged_snapshot().await?;
        let body = format!(r#"{{"snapshot": {{"volume_id": "{volume}", "ref": {{"source-name": "{source}"}}}}}}"#);
        let reply = call(Method::POST, path.into(), body).await?;
        answers.push(Written::new(what, reply, "/snapshot", View::SnapshotManaged).since(since).admin_only());
    }

    // Backups: create, update, restore, and a record imported after the database lost its row.
    let body = format!(r#"{{"backup": {{"volume_id": "{volume}"}}}}"#);
    let reply = call(Method::POST, "/backups".into(), body).await?;
    let backup = id_in(&reply, "backup")?;
    answers.push(Written::new("POST /backups", reply, "/backup", View::BackupSummary));
    admin.wait_for(api, &format!("/backups/{backup}"), "backup", "available").await?;
    let body = r#"{"backup": {"name": "renamed"}}"#.to_owned();
    let reply = call(Method::PUT, format!("/backups/{backup}"), body).await?;
    answers.push(Written::new("PUT /backups/{backup_id}", reply, "/backup", View::BackupSummary).since(9));
    let reply = call(Method::POST, format!("/backups/{backup}/restore"), r#"{"restore": {}}"#.into()).await?;
    answers.push(Written::new("POST /backups/{backup_id}/restore", reply, "/restore", View::Restore));
    admin.wait_for(api, &format!("/backups/{backup}"), "backup", "available").await?;
    let record = admin.call(api, Method::GET, &format!("/backups/{backup}/export_record"), "3.0", None).await?;
    ensure!(record.status == StatusCode::OK, "{:?}", record.body);
    let database = sea_orm::Database::connect(fixtures.database_url).await?;
    let lost = format!("DELETE FROM backups WHERE id = '{backup}'");
    sea_orm::ConnectionTrait::execute_unprepared(&database, &lost).await?;
    database.close().await?;
    let body = serde_json::json!({"backup-record": record.body["backup-record"]}).to_string();
    let reply = call(Method::POST, "/backups/import_record".into(), body).await?;
    answers.push(Written::new("POST /backups/import_record", reply, "/backup", View::BackupSummary).admin_only());

    // Transfers, under both paths, accepted by the other project's caller of the same role.
    let receiver = RestCaller::new(OTHER, if is_admin { "admin" } else { "bob" });
    for (prefix, since) in [("/os-volume-transfer", 0), ("/volume-transfers", 55)] {
        let offered = fixtures.available_volume().await?;
        let body = format!(r#"{{"transfer": {{"volume_id": "{offered}"}}}}"#);
        let reply = call(Method::POST, prefix.into(), body).await?;
        let (what, accept_what) = if since == 0 {
            ("POST /os-volume-transfer", "POST /os-volume-transfer/{transfer_id}/accept")
        } else {
            ("POST /volume-transfers", "POST /volume-transfers/{transfer_id}/accept")
        };
        let (transfer, key) = (reply.body["transfer"]["id"].clone(), reply.body["transfer"]["auth_key"].clone());
        answers.push(Written::new(what, reply, "/transfer", View::TransferCreated).since(since));
        let body = serde_json::json!({"accept": {"auth_key": key}}).to_string();
        let path = format!("{prefix}/{}/accept", transfer.as_str().unwrap_or("none"));
        let reply = receiver.call(api, Method::POST, &path, &header, Some(&body)).await?;
        answers.push(Written::new(accept_what, reply, "/transfer", View::TransferSummary).since(since));
    }

    // Groups: create, create from a source group, and a group snapshot.
    let body = format!(r#"{{"group": {{"group_type": "{group_type}", "volume_types": ["__DEFAULT__"]}}}}"#);
    let reply = call(Method::POST, "/groups".into(), body).await?;
    answers.push(Written::new("POST /groups", reply, "/group", View::GroupSummary).since(13));
    let body = format!(r#"{{"create-from-src": {{"source_group_id": "{group}"}}}}"#);
    let reply = call(Method::POST, "/groups/action".into(), body).await?;
    if let Some(copy) = reply.body["group"]["id"].as_str() {
        admin.wait_for_at(api, &format!("/groups/{copy}"), "3.14", "group", "available").await?;
    }
    answers.push(Written::new("POST /groups/action", reply, "/group", View::GroupSummary).since(14));
    let body = format!(r#"{{"group_snapshot": {{"group_id": "{group}"}}}}"#);
    let reply = call(Method::POST, "/group_snapshots".into(), body).await?;
    if let Some(cut) = reply.body["group_snapshot"]["id"].as_str() {
        let path = format!("/group_snapshots/{cut}");
        admin.wait_for_at(api, &path, "3.14", "group_snapshot", "available").await?;
    }
    answers.push(Written::new("POST /group_snapshots", reply, "/group_snapshot", View::GroupSnapshotSummary).since(14));

    // Attachments: reserved, then connected.
    let attached = fixtures.available_volume().await?;
    let body = format!(r#"{{"attachment": {{"volume_uuid": "{attached}", "instance_uuid": "vm-{unique}"}}}}"#);
    let reply = call(Method::POST, "/attachments".into(), body).await?;
    let attachment = reply.body["attachment"]["id"].as_str().unwrap_or("none").to_owned();
    answers.push(Written::new("POST /attachments", reply, "/attachment", View::AttachmentDetail).since(27));
    let body = r#"{"attachment": {"connector": {"initiator": "iqn.2004-10.com.example:vm", "host": "vm"}}}"#;
    let reply = call(Method::PUT, format!("/attachments/{attachment}"), body.into()).await?;
    let written = Written::new("PUT /attachments/{attachment_id}", reply, "/attachment", View::AttachmentDetail);
    answers.push(written.since(27));

    // Services: the node's volume service disabled with a reason, then enabled again.
    for (action, with_reason) in [("disable-log-reason", true), ("enable", false)] {
        let body = r#"{"host": "node-0@file", "binary": "cinder-volume", "disabled_reason": "shapes"}"#;
        let body = if with_reason { body.to_owned() } else { body.replace(r#", "disabled_reason": "shapes""#, "") };
        let reply = call(Method::PUT, format!("/os-services/{action}"), body).await?;
        let written =
            Written::new("PUT /os-services/{service_action}", reply, "", View::ServiceUpdated { with_reason });
        answers.push(written.admin_only());
    }
    Ok(answers)
}
