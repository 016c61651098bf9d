//! Manage existing (`os-volume-manage`) and what can be managed (`manageable_volumes`, 3.8, and
//! its legacy path `os-volume-manage` GET): an admin adopts an object a pool holds as a volume.
//! Unmanage is the volume action `os-unmanage` (`volumes.rs`).

use axum::{
    Json,
    body::Body,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use basalt::proto::{ListManageableVolumesRequest, ManageVolumeRequest, ManageableVolume};
use serde_json::{Value, json};

use super::{next_link, paging_by_name};
use crate::{Rest, body, fault::Fault, views};

pub async fn manage(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "volume")?;
    let keys =
        ["host", "cluster", "ref", "name", "description", "volume_type", "availability_zone", "bootable", "metadata"];
    body::check_keys(section, &keys, true)?;
    if section.get("cluster").is_some_and(|cluster| !cluster.is_null()) {
        return Err(Fault::bad_request("Basalt has no clusters: give the host, node@backend#pool"));
    }
    let host = body::string(section, "host")?.ok_or_else(|| {
        Fault::bad_request("managing a volume needs its host: node@backend#pool, as get_pools names it")
    })?;
    let reference = match section.get("ref") {
        Some(Value::Object(reference)) => reference,
        _ => return Err(Fault::bad_request("managing a volume needs ref: {\"source-name\": \"<name in the pool>\"}")),
    };
    body::check_keys(reference, &["source-name", "source-id"], true)?;
    let source_name = body::string(reference, "source-name")?.ok_or_else(|| {
        Fault::bad_request(
            "ref needs source-name: the object's name in the pool (Basalt's backends name objects, not ids)",
        )
    })?;
    let request = ManageVolumeRequest {
        host,
        source_name,
        name: body::string(section, "name")?.unwrap_or_default(),
        description: body::string(section, "description")?.unwrap_or_default(),
        volume_type: body::string(section, "volume_type")?.unwrap_or_default(),
        availability_zone: body::string(section, "availability_zone")?.unwrap_or_default(),
        metadata: body::string_map(section, "metadata")?.unwrap_or_default(),
        bootable: body::boolean(section, "bootable")?.unwrap_or(false),
    };
    let volume = rest.client().manage_volume(rest.request(request)).await?.into_inner();
    let view = views::volume_detail(&volume, rest.version, rest.context.is_admin, &rest.base);
    Ok((StatusCode::ACCEPTED, Json(json!({"volume": view}))).into_response())
}

fn summary(volume: &ManageableVolume) -> Value {
    json!({
        "reference": {"source-name": volume.source_name},
        "size": volume.size_gib,
        "safe_to_manage": volume.safe_to_manage,
    })
}

fn detail(volume: &ManageableVolume) -> Value {
    let mut view = summary(volume);
    let reason = Some(volume.reason_not_safe.as_str()).filter(|reason| !reason.is_empty());
    let cinder_id = Some(volume.volume_id.as_str()).filter(|id| !id.is_empty());
    view["reason_not_safe"] = json!(reason);
    view["cinder_id"] = json!(cinder_id);
    view["extra_info"] = Value::Null;
    view
}

async fn listed(rest: &Rest, path: &str, view: fn(&ManageableVolume) -> Value) -> Result<Response, Fault> {
    let host = rest.query("host").ok_or_else(|| {
        Fault::bad_request("listing manageable volumes needs host=node@backend#pool, as get_pools names it")
    })?;
    if rest.query("cluster").is_some() {
        return Err(Fault::bad_request("Basalt has no clusters: give host=node@backend#pool"));
    }
    let (page, sort) = paging_by_name(rest)?;
    let request = ListManageableVolumesRequest { host: host.to_owned(), page: Some(page), sort };
    let response = rest.client().list_manageable_volumes(rest.request(request)).await?.into_inner();
    let mut body = json!({"manageable-volumes": response.volumes.iter().map(view).collect::<Vec<_>>()});
    let next_marker = response.page_info.unwrap_or_default().next_marker;
    if let Some(links) = next_link(rest, path, &next_marker) {
        body["manageable-volumes_links"] = links;
    }
    Ok(Json(body).into_response())
}

pub async fn list(rest: Rest) -> Result<Response, Fault> {
    listed(&rest, "manageable_volumes", summary).await
}

pub async fn list_detail(rest: Rest) -> Result<Response, Fault> {
    listed(&rest, "manageable_volumes/detail", detail).await
}
