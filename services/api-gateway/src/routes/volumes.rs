//! `/volumes`: create, list, show, update, delete, metadata and actions.

use std::collections::HashMap;

use axum::{
    Json,
    body::Body,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use basalt::proto::{
    AttachMode, AttachStateChange, AttachVolumeRequest, ChangeAttachStateRequest, CreateVolumeRequest,
    DeleteVolumeRequest, DetachVolumeRequest, ExtendVolumeRequest, GetVolumeRequest, InitializeConnectionRequest,
    ListVolumesRequest, MetadataUpdate, MigrateVolumeRequest, ResetVolumeStatusRequest, RetypeVolumeRequest,
    RevertVolumeRequest, TerminateConnectionRequest, UnmanageVolumeRequest, UpdateVolumeRequest, Volume, VolumeStatus,
};
use serde_json::{Map, Value, json};

use super::{all_tenants, check_filters, metadata_filter, next_link, paging, query_flag, with_count};
use crate::{Rest, body, fault::Fault, views};

const CREATE_KEYS: &[&str] = &[
    "size",
    "name",
    "description",
    "display_name",
    "display_description",
    "volume_type",
    "availability_zone",
    "metadata",
    "snapshot_id",
    "source_volid",
    "backup_id",
    "imageRef",
    "consistencygroup_id",
    "group_id",
    "multiattach",
];
const UPDATE_KEYS: &[&str] = &["name", "description", "display_name", "display_description", "metadata"];
const ACTIONS: &str = "os-extend, os-reset_status, os-force_delete, os-set_bootable, os-update_readonly_flag, revert, \
                       os-reserve, os-unreserve, os-begin_detaching, os-roll_detaching, os-retype, os-migrate_volume, \
                       os-initialize_connection, os-terminate_connection, os-attach, os-detach, os-unmanage";

async fn fetch(rest: &Rest, volume_id: &str) -> Result<Volume, Fault> {
    Ok(rest.client().get_volume(rest.request(GetVolumeRequest { volume_id: volume_id.into() })).await?.into_inner())
}

/// The detail view as show and the detail list give it.
fn detail(rest: &Rest, volume: &Volume) -> Value {
    views::volume_detail(volume, rest.version, rest.context.is_admin, &rest.base, true)
}

/// The detail view as create and update give it.
fn written(rest: &Rest, volume: &Volume) -> Value {
    views::volume_detail(volume, rest.version, rest.context.is_admin, &rest.base, false)
}

pub async fn create(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let strict = rest.version.at_least(53);
    body::check_keys(body::object(&body)?, &["volume", "OS-SCH-HNT:scheduler_hints"], strict)?;
    if !matches!(body.get("OS-SCH-HNT:scheduler_hints"), None | Some(Value::Null) | Some(Value::Object(_))) {
        return Err(Fault::bad_request("OS-SCH-HNT:scheduler_hints must be an object"));
    }
    let section = body::member(&body, "volume")?;
    body::check_keys(section, CREATE_KEYS, strict)?;
    for (key, why) in [
        ("imageRef", "creating a volume from an image needs an image service, which this deployment does not have"),
        (
            "consistencygroup_id",
            "consistency groups are Cinder's deprecated kind of group; use a generic group (group_id)",
        ),
    ] {
        if section.get(key).is_some_and(|value| !value.is_null()) {
            return Err(Fault::bad_request(format!("{key} is set, but {why}; leave it out")));
        }
    }
    if body::boolean(section, "multiattach")? == Some(true) {
        return Err(Fault::bad_request(
            "multiattach is chosen by the volume type (multiattach=\"<is> True\"), not per volume",
        ));
    }
    let backup_id = if rest.version.at_least(47) { body::uuid(section, "backup_id")? } else { None };
    let group_id = if rest.version.at_least(13) { body::uuid(section, "group_id")? } else { None };
    let request = CreateVolumeRequest {
        size_gib: body::size(section, "size")?.unwrap_or(0),
        name: name_field(section, "name", "display_name")?,
        description: name_field(section, "description", "display_description")?,
        volume_type: body::string(section, "volume_type")?.unwrap_or_default(),
        availability_zone: body::string(section, "availability_zone")?.unwrap_or_default(),
        metadata: body::string_map(section, "metadata")?.unwrap_or_default(),
        snapshot_id: body::uuid(section, "snapshot_id")?.unwrap_or_default(),
        source_volume_id: body::uuid(section, "source_volid")?.unwrap_or_default(),
        backup_id: backup_id.unwrap_or_default(),
        group_id: group_id.unwrap_or_default(),
        ..Default::default()
    };
    if request.size_gib == 0
        && request.snapshot_id.is_empty()
        && request.source_volume_id.is_empty()
        && request.backup_id.is_empty()
    {
        return Err(Fault::bad_request("size is required: a whole number of GiB from 1 to 1048576"));
    }
    let volume = rest.client().create_volume(rest.request(request)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, Json(json!({"volume": written(&rest, &volume)}))).into_response())
}

/// `name`, or its v1 alias `display_name`.
fn name_field(section: &Map<String, Value>, key: &str, alias: &str) -> Result<String, Fault> {
    Ok(body::string(section, key)?.or(body::string(section, alias)?).unwrap_or_default())
}

async fn list(rest: &Rest) -> Result<(Vec<Volume>, String, Option<u64>), Fault> {
    check_filters(rest, "volume")?;
    let (page, sort) = paging(rest)?;
    let status = match rest.query("status") {
        None => VolumeStatus::Unspecified,
        Some(name) => VolumeStatus::from_cinder_name(name)
            .ok_or_else(|| Fault::bad_request(format!("unknown volume status {}", basalt::error::excerpt(name))))?,
    };
    let metadata = metadata_filter(rest)?;
    let size_gib = match rest.query("size") {
        None => None,
        Some(size) => Some(size.parse().map_err(|_| {
            Fault::bad_request(format!("size must be a whole number of GiB, not {}", basalt::error::excerpt(size)))
        })?),
    };
    let request = ListVolumesRequest {
        page: Some(page),
        sort,
        name: rest.query("name").unwrap_or_default().to_owned(),
        name_contains: if rest.version.at_least(34) {
            rest.query("name~").unwrap_or_default().to_owned()
        } else {
            String::new()
        },
        status: status as i32,
        availability_zone: rest.query("availability_zone").unwrap_or_default().to_owned(),
        metadata,
        all_projects: all_tenants(rest)?,
        with_count: with_count(rest)?,
        idempotency_key: String::new(),
        bootable: query_flag(rest, "bootable")?,
        size_gib,
        group_id: if rest.version.at_least(13) {
            super::query_uuid(rest, "group_id")?.unwrap_or_default()
        } else {
            String::new()
        },
    };
    let response = rest.client().list_volumes(rest.request(request)).await?.into_inner();
    let page = response.page.unwrap_or_default();
    Ok((response.volumes, page.next_marker, page.total_count))
}

fn listing(rest: &Rest, path: &str, views: Vec<Value>, next_marker: &str, count: Option<u64>) -> Response {
    let mut body = json!({ "volumes": views });
    if let Some(links) = next_link(rest, path, next_marker) {
        body["volumes_links"] = links;
    }
    if let Some(count) = count {
        body["count"] = json!(count);
    }
    Json(body).into_response()
}

pub async fn list_summary(rest: Rest) -> Result<Response, Fault> {
    let (volumes, next, count) = list(&rest).await?;
    let views = volumes.iter().map(|volume| views::volume_summary(volume, &rest.base)).collect();
    Ok(listing(&rest, "volumes", views, &next, count))
}

pub async fn list_detail(rest: Rest) -> Result<Response, Fault> {
    let (volumes, next, count) = list(&rest).await?;
    let views = volumes.iter().map(|volume| detail(&rest, volume)).collect();
    Ok(listing(&rest, "volumes/detail", views, &next, count))
}

pub async fn summary(rest: Rest) -> Result<Response, Fault> {
    let (volumes, _, _) = list(&rest).await?;
    let total_size: u64 = volumes.iter().map(|volume| volume.size_gib).sum();
    let mut summary = json!({"total_count": volumes.len(), "total_size": total_size});
    if rest.version.at_least(36) {
        let mut metadata: HashMap<String, Vec<String>> = HashMap::new();
        for volume in &volumes {
            for (key, value) in &volume.metadata {
                let values = metadata.entry(key.clone()).or_default();
                if !values.contains(value) {
                    values.push(value.clone());
                }
            }
        }
        summary["metadata"] = json!(metadata);
    }
    Ok(Json(json!({ "volume-summary": summary })).into_response())
}

pub async fn show(rest: Rest) -> Result<Response, Fault> {
    let volume = fetch(&rest, rest.param("volume_id")).await?;
    Ok(Json(json!({"volume": detail(&rest, &volume)})).into_response())
}

pub async fn update(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let strict = rest.version.at_least(53);
    body::check_keys(body::object(&body)?, &["volume"], strict)?;
    let section = body::section(&body, "volume")?;
    body::check_keys(section, UPDATE_KEYS, strict)?;
    let name = body::string(section, "name")?.or(body::string(section, "display_name")?);
    let description = body::string(section, "description")?.or(body::string(section, "display_description")?);
    let metadata = body::string_map(section, "metadata")?.map(|items| MetadataUpdate { items });
    let request = UpdateVolumeRequest {
        volume_id: rest.param("volume_id").into(),
        name,
        description,
        metadata,
        ..Default::default()
    };
    let volume = rest.client().update_volume(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"volume": written(&rest, &volume)})).into_response())
}

pub async fn delete(rest: Rest) -> Result<Response, Fault> {
    let force = rest.version.at_least(23) && query_flag(&rest, "force")?.unwrap_or(false);
    let cascade = query_flag(&rest, "cascade")?.unwrap_or(false);
    let request = DeleteVolumeRequest { volume_id: rest.param("volume_id").into(), force, cascade };
    rest.client().delete_volume(rest.request(request)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub async fn action(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let (name, arguments) = body::action(&body, ACTIONS)?;
    let volume_id = rest.param("volume_id").to_owned();
    let mut client = rest.client();
    match name {
        "os-extend" => {
            let arguments = arguments.with(&["new_size"])?;
            let new_size = body::size(arguments, "new_size")?
                .ok_or_else(|| Fault::bad_request("os-extend needs new_size, a whole number of GiB"))?;
            if !rest.version.at_least(42) && fetch(&rest, &volume_id).await?.status == VolumeStatus::InUse as i32 {
                return Err(Fault::bad_request("extending an in-use volume needs microversion 3.42 or later"));
            }
            client.extend_volume(rest.request(ExtendVolumeRequest { volume_id, new_size_gib: new_size })).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-reset_status" => {
            let arguments = arguments.with(&["status", "attach_status", "migration_status"])?;
            let status = match body::string(arguments, "status")? {
                None => None,
                Some(name) => Some(VolumeStatus::from_cinder_name(&name).ok_or_else(|| {
                    Fault::bad_request(format!("unknown volume status {}", basalt::error::excerpt(&name)))
                })?),
            };
            let migration_status = body::string(arguments, "migration_status")?;
            let attach_status = match body::string(arguments, "attach_status")? {
                None => basalt::proto::AttachStatus::Unspecified,
                Some(name) => basalt::proto::AttachStatus::from_cinder_name(&name).ok_or_else(|| {
                    Fault::bad_request(format!("unknown attach status {}", basalt::error::excerpt(&name)))
                })?,
            };
            if status.is_none()
                && attach_status == basalt::proto::AttachStatus::Unspecified
                && migration_status.is_none()
            {
                return Err(Fault::bad_request("os-reset_status needs status, attach_status or migration_status"));
            }
            let current = fetch(&rest, &volume_id).await?;
            let status = status.unwrap_or_else(|| VolumeStatus::try_from(current.status).unwrap_or_default());
            let request = ResetVolumeStatusRequest {
                volume_id,
                status: status as i32,
                attach_status: attach_status as i32,
                migration_status,
            };
            client.reset_volume_status(rest.request(request)).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-unmanage" => {
            client.unmanage_volume(rest.request(UnmanageVolumeRequest { volume_id })).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-force_delete" => {
            client.delete_volume(rest.request(DeleteVolumeRequest { volume_id, force: true, cascade: false })).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-set_bootable" => {
            let arguments = arguments.with(&["bootable"])?;
            let bootable = body::boolean(arguments, "bootable")?
                .ok_or_else(|| Fault::bad_request("os-set_bootable needs bootable: true or false"))?;
            let request = UpdateVolumeRequest { volume_id, bootable: Some(bootable), ..Default::default() };
            client.update_volume(rest.request(request)).await?;
            Ok(StatusCode::OK.into_response())
        }
        "os-update_readonly_flag" => {
            let arguments = arguments.with(&["readonly"])?;
            let readonly = body::boolean(arguments, "readonly")?
                .ok_or_else(|| Fault::bad_request("os-update_readonly_flag needs readonly: true or false"))?;
            let request = UpdateVolumeRequest { volume_id, readonly: Some(readonly), ..Default::default() };
            client.update_volume(rest.request(request)).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "revert" => {
            let arguments = arguments.with(&["snapshot_id"])?;
            rest.require_version(40, "revert")?;
            let snapshot_id =
                body::uuid(arguments, "snapshot_id")?.ok_or_else(|| Fault::bad_request("revert needs snapshot_id"))?;
            client.revert_volume_to_snapshot(rest.request(RevertVolumeRequest { volume_id, snapshot_id })).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-reserve" | "os-unreserve" | "os-begin_detaching" | "os-roll_detaching" => {
            let change = match name {
                "os-reserve" => AttachStateChange::Reserve,
                "os-unreserve" => AttachStateChange::Unreserve,
                "os-begin_detaching" => AttachStateChange::BeginDetaching,
                _ => AttachStateChange::RollDetaching,
            };
            client
                .change_attach_state(rest.request(ChangeAttachStateRequest { volume_id, change: change as i32 }))
                .await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-initialize_connection" => {
            let arguments = arguments.with(&["connector"])?;
            let connector = super::attachments::connector(arguments)?;
            let request = InitializeConnectionRequest { volume_id, connector };
            let info = client.initialize_connection(rest.request(request)).await?.into_inner();
            Ok(Json(json!({"connection_info": views::connection_info(&info)})).into_response())
        }
        "os-terminate_connection" => {
            let arguments = arguments.with(&["connector"])?;
            let connector = super::attachments::connector(arguments)?;
            client.terminate_connection(rest.request(TerminateConnectionRequest { volume_id, connector })).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-attach" => {
            let arguments = arguments.with(&["instance_uuid", "host_name", "mountpoint", "mode"])?;
            let mode = match body::string(arguments, "mode")?.as_deref() {
                None | Some("rw") => AttachMode::ReadWrite,
                Some("ro") => AttachMode::ReadOnly,
                Some(other) => {
                    return Err(Fault::bad_request(format!(
                        "mode must be rw or ro, not {}",
                        basalt::error::excerpt(other)
                    )));
                }
            };
            let request = AttachVolumeRequest {
                volume_id,
                instance_id: body::string(arguments, "instance_uuid")?.unwrap_or_default(),
                host_name: body::string(arguments, "host_name")?.unwrap_or_default(),
                mountpoint: body::string(arguments, "mountpoint")?.unwrap_or_default(),
                mode: mode as i32,
            };
            client.attach_volume(rest.request(request)).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-detach" => {
            let arguments = arguments.with(&["attachment_id"])?;
            let attachment_id = body::string(arguments, "attachment_id")?.unwrap_or_default();
            client.detach_volume(rest.request(DetachVolumeRequest { volume_id, attachment_id })).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-migrate_volume" => {
            // Basalt always copies through the hosts and holds the volume (maintenance) meanwhile,
            // so the two flags are accepted and change nothing.
            let arguments = arguments.with(&["host", "force_host_copy", "lock_volume"])?;
            body::boolean(arguments, "force_host_copy")?;
            body::boolean(arguments, "lock_volume")?;
            let host = body::string(arguments, "host")?
                .ok_or_else(|| Fault::bad_request("os-migrate_volume needs host: a pool as node@backend#pool"))?;
            client.migrate_volume(rest.request(MigrateVolumeRequest { volume_id, host })).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-retype" => {
            let arguments = arguments.with(&["new_type", "migration_policy"])?;
            let new_type =
                body::string(arguments, "new_type")?.ok_or_else(|| Fault::bad_request("os-retype needs new_type"))?;
            let migration_policy = body::string(arguments, "migration_policy")?.unwrap_or_default();
            client.retype_volume(rest.request(RetypeVolumeRequest { volume_id, new_type, migration_policy })).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        other => Err(Fault::bad_request(format!(
            "unknown volume action {}; actions: {ACTIONS}",
            basalt::error::excerpt(other)
        ))),
    }
}

async fn metadata_reply(rest: &Rest) -> Result<HashMap<String, String>, Fault> {
    Ok(fetch(rest, rest.param("volume_id")).await?.metadata)
}

async fn write_metadata(rest: &Rest, items: HashMap<String, String>) -> Result<HashMap<String, String>, Fault> {
    let request = UpdateVolumeRequest {
        volume_id: rest.param("volume_id").into(),
        metadata: Some(MetadataUpdate { items }),
        ..Default::default()
    };
    Ok(rest.client().update_volume(rest.request(request)).await?.into_inner().metadata)
}

pub async fn metadata_show(rest: Rest) -> Result<Response, Fault> {
    Ok(Json(json!({"metadata": metadata_reply(&rest).await?})).into_response())
}

pub async fn metadata_merge(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let items = body::map_body(&body, "metadata")?;
    let mut merged = metadata_reply(&rest).await?;
    merged.extend(items);
    Ok(Json(json!({"metadata": write_metadata(&rest, merged).await?})).into_response())
}

pub async fn metadata_replace(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let items = body::map_body(&body, "metadata")?;
    Ok(Json(json!({"metadata": write_metadata(&rest, items).await?})).into_response())
}

pub async fn metadata_item(rest: Rest) -> Result<Response, Fault> {
    let key = rest.param("key").to_owned();
    let metadata = metadata_reply(&rest).await?;
    let value = metadata
        .get(&key)
        .ok_or_else(|| Fault::not_found(format!("metadata key {} not found", basalt::error::excerpt(&key))))?;
    Ok(Json(json!({"meta": {key: value}})).into_response())
}

pub async fn metadata_item_set(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let key = rest.param("key").to_owned();
    let value = body::meta_item(&body::read_json(request_body).await?, &key)?;
    let mut merged = metadata_reply(&rest).await?;
    merged.insert(key.clone(), value.clone());
    write_metadata(&rest, merged).await?;
    Ok(Json(json!({"meta": {key: value}})).into_response())
}

pub async fn metadata_item_delete(rest: Rest) -> Result<Response, Fault> {
    let key = rest.param("key").to_owned();
    let mut metadata = metadata_reply(&rest).await?;
    if metadata.remove(&key).is_none() {
        return Err(Fault::not_found(format!("metadata key {} not found", basalt::error::excerpt(&key))));
    }
    write_metadata(&rest, metadata).await?;
    Ok(StatusCode::OK.into_response())
}
