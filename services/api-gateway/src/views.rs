//! JSON views of Basalt's resources in Cinder's shapes, with fields gated by microversion the way
//! Cinder's view builders gate them (`api/v3/views/volumes.py::detail`): a field appears only at
//! the microversions where Cinder shows it, because strict clients (tempest) reject extra fields.

use basalt::proto::{
    AttachMode, Attachment, Backup, BackupStatus, Snapshot, SnapshotStatus, Volume, VolumeStatus, VolumeType,
};
use serde_json::{Map, Value, json};

use crate::microversion::ApiVersion;

/// Cinder's timestamp format: ISO 8601 with microseconds, no zone.
pub fn timestamp(time: Option<&prost_types::Timestamp>) -> Value {
    let Some(time) = time else { return Value::Null };
    match chrono::DateTime::from_timestamp(time.seconds, time.nanos.max(0) as u32) {
        Some(time) => Value::String(time.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()),
        None => Value::Null,
    }
}

pub fn optional_id(id: &str) -> Value {
    if id.is_empty() { Value::Null } else { Value::String(id.to_owned()) }
}

pub fn links(base: &str, collection: &str, id: &str) -> Value {
    let bookmark = base.replacen("/v3", "", 1);
    json!([
        {"rel": "self", "href": format!("{base}/{collection}/{id}")},
        {"rel": "bookmark", "href": format!("{bookmark}/{collection}/{id}")},
    ])
}

pub fn volume_summary(volume: &Volume, base: &str) -> Value {
    json!({"id": volume.id, "name": volume.name, "links": links(base, "volumes", &volume.id)})
}

/// Cinder's volume detail view. `extended` adds what its controller extensions add to `show` and
/// the detail list (the tenant, host and migration attributes), which create, update and manage
/// answers lack.
pub fn volume_detail(volume: &Volume, version: ApiVersion, is_admin: bool, base: &str, extended: bool) -> Value {
    let status = VolumeStatus::try_from(volume.status).unwrap_or_default();
    let attachments: Vec<Value> = volume
        .attachments
        .iter()
        .map(|attachment| {
            json!({
                "id": attachment.volume_id,
                "attachment_id": attachment.id,
                "volume_id": attachment.volume_id,
                "server_id": optional_id(&attachment.server_id),
                "host_name": optional_id(&attachment.host_name),
                "device": optional_id(&attachment.device),
                "attached_at": timestamp(attachment.attached_at.as_ref()),
            })
        })
        .collect();
    let mut view = Map::new();
    let mut put = |key: &str, value: Value| {
        view.insert(key.to_owned(), value);
    };
    put("id", json!(volume.id));
    put("status", json!(status.cinder_name()));
    put("size", json!(volume.size_gib));
    put("availability_zone", json!(volume.availability_zone));
    put("created_at", timestamp(volume.created_at.as_ref()));
    put("updated_at", timestamp(volume.updated_at.as_ref()));
    put("attachments", Value::Array(attachments));
    put("name", json!(volume.name));
    put("description", json!(volume.description));
    put("volume_type", json!(volume.volume_type_name));
    put("snapshot_id", optional_id(&volume.snapshot_id));
    put("source_volid", optional_id(&volume.source_volume_id));
    put("metadata", json!(volume.metadata));
    put("links", links(base, "volumes", &volume.id));
    put("user_id", json!(volume.user_id));
    put("bootable", json!(if volume.bootable { "true" } else { "false" }));
    put("encrypted", json!(volume.encrypted));
    put("replication_status", Value::Null);
    put("consistencygroup_id", Value::Null);
    put("multiattach", json!(volume.multiattach));
    if extended {
        put("os-vol-tenant-attr:tenant_id", json!(volume.project_id));
    }
    if is_admin {
        put("migration_status", optional_id(&volume.migration_status));
    }
    if is_admin && extended {
        let host = volume.pool.as_ref().map(|pool| format!("{}@{}#{}", pool.node_id, pool.backend, pool.pool));
        put("os-vol-host-attr:host", json!(host));
        put("os-vol-mig-status-attr:migstat", optional_id(&volume.migration_status));
        put("os-vol-mig-status-attr:name_id", Value::Null);
    }
    if version.at_least(13) {
        put("group_id", optional_id(&volume.group_id));
    }
    if is_admin && version.at_least(21) {
        put("provider_id", Value::Null);
    }
    if version.at_least(48) {
        // Before 3.69 shared_targets must be a boolean; our targets are per volume.
        put("shared_targets", json!(false));
        put("service_uuid", Value::Null);
    }
    if is_admin && version.at_least(61) {
        put("cluster_name", Value::Null);
    }
    if version.at_least(63) {
        put("volume_type_id", json!(volume.volume_type_id));
    }
    if version.at_least(65) {
        put("consumes_quota", json!(volume.consumes_quota));
    }
    Value::Object(view)
}

/// Which of Cinder's snapshot views an answer shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotView {
    /// The plain list: the base keys only, at every microversion.
    Summary,
    /// Show and the detail list: with the microversions' keys and the extended attributes.
    Detail,
    /// Create, update and manage: the microversions' keys, no extended attributes (the controller
    /// extension adds them to show and the detail list only).
    Written,
}

pub fn snapshot_view(snapshot: &Snapshot, version: ApiVersion, form: SnapshotView) -> Value {
    let status = SnapshotStatus::try_from(snapshot.status).unwrap_or_default();
    let mut view = json!({
        "id": snapshot.id,
        "created_at": timestamp(snapshot.created_at.as_ref()),
        "updated_at": timestamp(snapshot.updated_at.as_ref()),
        "name": snapshot.name,
        "description": snapshot.description,
        "volume_id": snapshot.volume_id,
        "status": status.cinder_name(),
        "size": snapshot.size_gib,
        "metadata": snapshot.metadata,
    });
    if form == SnapshotView::Summary {
        return view;
    }
    if form == SnapshotView::Detail {
        view["os-extended-snapshot-attributes:progress"] = json!(format!("{}%", snapshot.progress));
        view["os-extended-snapshot-attributes:project_id"] = json!(snapshot.project_id);
    }
    if version.at_least(14) {
        view["group_snapshot_id"] = optional_id(&snapshot.group_snapshot_id);
    }
    if version.at_least(41) {
        view["user_id"] = json!(snapshot.user_id);
    }
    if version.at_least(65) {
        view["consumes_quota"] = json!(true);
    }
    view
}

/// A backup as Cinder's view builder shows it (`api/views/backups.py`).
pub fn backup_detail(backup: &Backup, version: ApiVersion, is_admin: bool, base: &str) -> Value {
    let status = BackupStatus::try_from(backup.status).unwrap_or_default();
    let mut view = json!({
        "id": backup.id,
        "status": status.cinder_name(),
        "size": backup.size_gib,
        "object_count": backup.object_count,
        "availability_zone": backup.availability_zone,
        "container": backup.container,
        "created_at": timestamp(backup.created_at.as_ref()),
        "updated_at": timestamp(backup.updated_at.as_ref()),
        "data_timestamp": timestamp(backup.data_timestamp.as_ref()),
        "name": backup.name,
        "description": backup.description,
        "fail_reason": if backup.fail_reason.is_empty() { Value::Null } else { json!(backup.fail_reason) },
        "volume_id": backup.volume_id,
        "snapshot_id": optional_id(&backup.snapshot_id),
        "is_incremental": backup.is_incremental,
        "has_dependent_backups": backup.has_dependent_backups,
        "links": links(base, "backups", &backup.id),
    });
    if version.at_least(18) && is_admin {
        view["os-backup-project-attr:project_id"] = json!(backup.project_id);
    }
    if version.at_least(43) {
        view["metadata"] = json!(backup.metadata);
    }
    if version.at_least(56) {
        view["user_id"] = json!(backup.user_id);
    }
    if version.at_least(64) {
        view["encryption_key_id"] = Value::Null;
    }
    view
}

/// Which of Cinder's volume-type responses a view is for: their keys differ (Cinder's API samples),
/// and strict clients refuse a key the response they asked for does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeTypeResponse {
    /// `GET /types` and `GET /types/{id}`: the type-access extension's `is_public`, and the QoS
    /// specs id for admins.
    Shown,
    /// `POST /types`: the type-access extension's `is_public`, no QoS specs id.
    Created,
    /// `PUT /types/{id}`: neither.
    Updated,
    /// `GET /types/default`: the QoS specs id for admins, not the extension's `is_public`.
    Default,
}

pub fn volume_type(volume_type: &VolumeType, response: VolumeTypeResponse, is_admin: bool) -> Value {
    let mut view = json!({
        "id": volume_type.id,
        "name": volume_type.name,
        "description": volume_type.description,
        "is_public": volume_type.is_public,
        "extra_specs": volume_type.extra_specs,
    });
    if matches!(response, VolumeTypeResponse::Shown | VolumeTypeResponse::Created) {
        view["os-volume-type-access:is_public"] = json!(volume_type.is_public);
    }
    // Cinder's `volume_extension:access_types_qos_specs_id` is admin-only.
    if is_admin && matches!(response, VolumeTypeResponse::Shown | VolumeTypeResponse::Default) {
        view["qos_specs_id"] = optional_id(&volume_type.qos_specs_id);
    }
    view
}

pub fn attachment(attachment: &Attachment) -> Value {
    let status = basalt::proto::AttachStatus::try_from(attachment.status).unwrap_or_default();
    let mode = if attachment.mode == AttachMode::ReadOnly as i32 { "ro" } else { "rw" };
    json!({
        "id": attachment.id,
        "status": status.cinder_name(),
        "instance": optional_id(&attachment.instance_id),
        "volume_id": attachment.volume_id,
        "attach_mode": mode,
        "attached_at": timestamp(attachment.attached_at.as_ref()),
        "detached_at": timestamp(attachment.detached_at.as_ref()),
        "connection_info": attachment.connection_info.as_ref().map(connection_info).unwrap_or(Value::Null),
    })
}

/// Cinder's `connection_info`: `driver_volume_type` and the `data` of its kind, as Cinder's
/// targets and drivers build it.
pub fn connection_info(info: &basalt::proto::ConnectionInfo) -> Value {
    use basalt::proto::connection_info::Target;
    let mut data = match &info.target {
        Some(Target::Iscsi(iscsi)) => json!({
            "target_discovered": iscsi.target_discovered,
            "target_iqn": iscsi.target_iqn,
            "target_portal": iscsi.target_portal,
            "target_lun": iscsi.target_lun,
            "auth_method": iscsi.auth_method,
            "auth_username": iscsi.auth_username,
            "auth_password": iscsi.auth_password,
            "encrypted": iscsi.encrypted,
            "discard": iscsi.discard,
            "cacheable": iscsi.cacheable,
        }),
        Some(Target::Nfs(nfs)) => {
            let mut data = json!({"export": nfs.export, "name": nfs.name, "format": nfs.format});
            if let Some(options) = &nfs.options {
                data["options"] = json!(options);
            }
            data
        }
        Some(Target::Local(local)) => json!({"device_path": local.device_path}),
        None => json!({}),
    };
    data["volume_id"] = json!(info.volume_id);
    data["access_mode"] = json!(info.access_mode);
    json!({"driver_volume_type": info.driver_volume_type, "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume() -> Volume {
        Volume {
            id: "v".into(),
            status: VolumeStatus::Available as i32,
            volume_type_id: "t".into(),
            ..Default::default()
        }
    }

    #[test]
    fn fields_appear_only_at_their_microversions() {
        let old = volume_detail(&volume(), ApiVersion::new(0), false, "http://h/v3/p", true);
        for absent in ["group_id", "volume_type_id", "consumes_quota", "shared_targets", "os-vol-host-attr:host"] {
            assert!(old.get(absent).is_none(), "{absent} at 3.0");
        }
        assert_eq!(old["bootable"], "false");
        assert_eq!(old["status"], "available");
        let new = volume_detail(&volume(), ApiVersion::MAX, true, "http://h/v3/p", true);
        for present in ["group_id", "volume_type_id", "consumes_quota", "shared_targets", "cluster_name", "provider_id"]
        {
            assert!(new.get(present).is_some(), "{present} at 3.71");
        }
        let member = volume_detail(&volume(), ApiVersion::MAX, false, "http://h/v3/p", true);
        assert!(member.get("os-vol-host-attr:host").is_none() && member.get("provider_id").is_none());
    }

    #[test]
    fn timestamps_use_cinder_s_format() {
        let time = prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5_000 };
        assert_eq!(timestamp(Some(&time)), "2023-11-14T22:13:20.000005");
    }
}
