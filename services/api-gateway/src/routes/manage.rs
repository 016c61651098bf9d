//! Manage existing (`os-volume-manage`, `os-snapshot-manage`) and what can be managed
//! (`manageable_volumes` and `manageable_snapshots`, 3.8, and their legacy paths): an admin adopts
//! an object a pool holds as a volume, or a snapshot object as a snapshot of its volume. Unmanage
//! is the action `os-unmanage` of volumes and snapshots (`volumes.rs`, `snapshots.rs`).

use axum::{
    Json,
    body::Body,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use basalt::proto::{
    ListManageableVolumesRequest, ManageSnapshotRequest, ManageVolumeRequest, ManageableSnapshot, ManageableVolume,
};
use serde_json::{Value, json};

use super::{next_link, paging_by_name};
use crate::{Rest, body, fault::Fault, microversion::ApiVersion, views};

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
    let source_name = source_name(section)?;
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
    // Cinder answers a manage with its v2 view builder at every microversion: the 3.0 keys.
    let view = views::volume_detail(&volume, ApiVersion::MIN, rest.context.is_admin, &rest.base, false);
    Ok((StatusCode::ACCEPTED, Json(json!({"volume": view}))).into_response())
}

/// Cinder's manageable views: the summary, and the detail's three more keys.
fn view(source_name: &str, size_gib: u64, safe: bool, detail: Option<(&str, &str)>) -> Value {
    let mut view = json!({"reference": {"source-name": source_name}, "size": size_gib, "safe_to_manage": safe});
    if let Some((reason, cinder_id)) = detail {
        view["reason_not_safe"] = json!(Some(reason).filter(|reason| !reason.is_empty()));
        view["cinder_id"] = json!(Some(cinder_id).filter(|id| !id.is_empty()));
        view["extra_info"] = Value::Null;
    }
    view
}

fn volume_view(volume: &ManageableVolume, detail: bool) -> Value {
    let detail = detail.then_some((volume.reason_not_safe.as_str(), volume.volume_id.as_str()));
    view(&volume.source_name, volume.size_gib, volume.safe_to_manage, detail)
}

/// A snapshot's views add the volume it is of, when the backend records it.
fn snapshot_view(snapshot: &ManageableSnapshot, detail: bool) -> Value {
    let details = detail.then_some((snapshot.reason_not_safe.as_str(), snapshot.snapshot_id.as_str()));
    let mut view = view(&snapshot.source_name, snapshot.size_gib, snapshot.safe_to_manage, details);
    view["source_reference"] = match snapshot.source_volume_name.as_str() {
        "" => Value::Null,
        origin => json!({"source-name": origin}),
    };
    view
}

/// The host and paging of a manageable listing.
fn manageable_request(rest: &Rest) -> Result<ListManageableVolumesRequest, Fault> {
    let host = rest.query("host").ok_or_else(|| {
        Fault::bad_request("listing manageable objects needs host=node@backend#pool, as get_pools names it")
    })?;
    if rest.query("cluster").is_some() {
        return Err(Fault::bad_request("Basalt has no clusters: give host=node@backend#pool"));
    }
    let (page, sort) = paging_by_name(rest)?;
    Ok(ListManageableVolumesRequest { host: host.to_owned(), page: Some(page), sort })
}

/// `{"<key>": [...]}` with its next link, when there is one.
fn page_body(rest: &Rest, path: &str, key: &str, views: Vec<Value>, next_marker: &str) -> Response {
    let mut body = json!({ key: views });
    if let Some(links) = next_link(rest, path, next_marker) {
        body[format!("{key}_links")] = links;
    }
    Json(body).into_response()
}

async fn volumes_listed(rest: &Rest, path: &str, detail: bool) -> Result<Response, Fault> {
    let request = manageable_request(rest)?;
    let response = rest.client().list_manageable_volumes(rest.request(request)).await?.into_inner();
    let views = response.volumes.iter().map(|volume| volume_view(volume, detail)).collect();
    let next_marker = response.page_info.unwrap_or_default().next_marker;
    Ok(page_body(rest, path, "manageable-volumes", views, &next_marker))
}

async fn snapshots_listed(rest: &Rest, path: &str, detail: bool) -> Result<Response, Fault> {
    let request = manageable_request(rest)?;
    let response = rest.client().list_manageable_snapshots(rest.request(request)).await?.into_inner();
    let views = response.snapshots.iter().map(|snapshot| snapshot_view(snapshot, detail)).collect();
    let next_marker = response.page_info.unwrap_or_default().next_marker;
    Ok(page_body(rest, path, "manageable-snapshots", views, &next_marker))
}

pub async fn list(rest: Rest) -> Result<Response, Fault> {
    volumes_listed(&rest, "manageable_volumes", false).await
}

pub async fn list_detail(rest: Rest) -> Result<Response, Fault> {
    volumes_listed(&rest, "manageable_volumes/detail", true).await
}

pub async fn snapshots_list(rest: Rest) -> Result<Response, Fault> {
    snapshots_listed(&rest, "manageable_snapshots", false).await
}

pub async fn snapshots_list_detail(rest: Rest) -> Result<Response, Fault> {
    snapshots_listed(&rest, "manageable_snapshots/detail", true).await
}

pub async fn manage_snapshot(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "snapshot")?;
    body::check_keys(section, &["volume_id", "ref", "name", "description", "metadata"], true)?;
    let volume_id = body::uuid(section, "volume_id")?
        .ok_or_else(|| Fault::bad_request("managing a snapshot needs volume_id: the volume it is a snapshot of"))?;
    let source_name = source_name(section)?;
    let request = ManageSnapshotRequest {
        volume_id,
        source_name,
        name: body::string(section, "name")?.unwrap_or_default(),
        description: body::string(section, "description")?.unwrap_or_default(),
        metadata: body::string_map(section, "metadata")?.unwrap_or_default(),
    };
    let snapshot = rest.client().manage_snapshot(rest.request(request)).await?.into_inner();
    // Likewise a snapshot's: the v2 snapshot view, without 3.14's and later keys.
    let view = views::snapshot_view(&snapshot, ApiVersion::MIN, views::SnapshotView::Written);
    Ok((StatusCode::ACCEPTED, Json(json!({"snapshot": view}))).into_response())
}

/// `ref: {"source-name": ...}`: the object's name in the pool.
fn source_name(section: &serde_json::Map<String, Value>) -> Result<String, Fault> {
    let reference = match section.get("ref") {
        Some(Value::Object(reference)) => reference,
        _ => return Err(Fault::bad_request("managing needs ref: {\"source-name\": \"<name in the pool>\"}")),
    };
    body::check_keys(reference, &["source-name", "source-id"], true)?;
    body::string(reference, "source-name")?.ok_or_else(|| {
        Fault::bad_request(
            "ref needs source-name: the object's name in the pool (Basalt's backends name objects, not ids)",
        )
    })
}
