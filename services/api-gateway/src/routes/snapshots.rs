//! `/snapshots`: create, list, show, update, delete, metadata and admin actions.

use std::collections::HashMap;

use axum::{
    Json,
    body::Body,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use basalt::proto::{
    CreateSnapshotRequest, DeleteSnapshotRequest, GetSnapshotRequest, ListSnapshotsRequest, MetadataUpdate,
    ResetSnapshotStatusRequest, Snapshot, SnapshotStatus, UnmanageSnapshotRequest, UpdateSnapshotRequest,
};
use serde_json::{Value, json};

use super::{all_tenants, check_filters, metadata_filter, next_link, paging, with_count};
use crate::{
    Rest, body,
    fault::Fault,
    views::{self, SnapshotView},
};

const CREATE_KEYS: &[&str] =
    &["volume_id", "name", "description", "display_name", "display_description", "force", "metadata"];
const UPDATE_KEYS: &[&str] = &["name", "description", "display_name", "display_description"];

fn view(rest: &Rest, snapshot: &Snapshot, form: SnapshotView) -> Value {
    views::snapshot_view(snapshot, rest.version, form)
}

pub async fn create(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "snapshot")?;
    body::check_keys(section, CREATE_KEYS, rest.version.at_least(53))?;
    let volume_id = body::uuid(section, "volume_id")?.ok_or_else(|| Fault::bad_request("volume_id is required"))?;
    // From 3.66 an in-use volume needs no force.
    let force = body::boolean(section, "force")?.unwrap_or(false) || rest.version.at_least(66);
    let request = CreateSnapshotRequest {
        volume_id,
        name: body::string(section, "name")?.or(body::string(section, "display_name")?).unwrap_or_default(),
        description: body::string(section, "description")?
            .or(body::string(section, "display_description")?)
            .unwrap_or_default(),
        force,
        metadata: body::string_map(section, "metadata")?.unwrap_or_default(),
        idempotency_key: String::new(),
    };
    let snapshot = rest.client().create_snapshot(rest.request(request)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, Json(json!({"snapshot": view(&rest, &snapshot, SnapshotView::Written)}))).into_response())
}

pub async fn list(rest: Rest) -> Result<Response, Fault> {
    listed(rest, SnapshotView::Summary, "snapshots").await
}

pub async fn list_detail(rest: Rest) -> Result<Response, Fault> {
    listed(rest, SnapshotView::Detail, "snapshots/detail").await
}

async fn listed(rest: Rest, form: SnapshotView, path: &str) -> Result<Response, Fault> {
    check_filters(&rest, "snapshot")?;
    let (page, sort) = paging(&rest)?;
    let status = match rest.query("status") {
        None => SnapshotStatus::Unspecified,
        Some(name) => SnapshotStatus::from_cinder_name(name)
            .ok_or_else(|| Fault::bad_request(format!("unknown snapshot status {}", basalt::error::excerpt(name))))?,
    };
    let request = ListSnapshotsRequest {
        page: Some(page),
        sort,
        volume_id: super::query_uuid(&rest, "volume_id")?.unwrap_or_default(),
        name: rest.query("name").unwrap_or_default().to_owned(),
        status: status as i32,
        all_projects: all_tenants(&rest)?,
        with_count: with_count(&rest)?,
        metadata: metadata_filter(&rest)?,
    };
    let response = rest.client().list_snapshots(rest.request(request)).await?.into_inner();
    let page = response.page.unwrap_or_default();
    let mut body =
        json!({"snapshots": response.snapshots.iter().map(|snapshot| view(&rest, snapshot, form)).collect::<Vec<_>>()});
    if let Some(links) = next_link(&rest, path, &page.next_marker) {
        body["snapshots_links"] = links;
    }
    if let Some(count) = page.total_count {
        body["count"] = json!(count);
    }
    Ok(Json(body).into_response())
}

async fn fetch(rest: &Rest) -> Result<Snapshot, Fault> {
    let request = GetSnapshotRequest { snapshot_id: rest.param("snapshot_id").into() };
    Ok(rest.client().get_snapshot(rest.request(request)).await?.into_inner())
}

pub async fn show(rest: Rest) -> Result<Response, Fault> {
    let snapshot = fetch(&rest).await?;
    Ok(Json(json!({"snapshot": view(&rest, &snapshot, SnapshotView::Detail)})).into_response())
}

pub async fn update(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "snapshot")?;
    body::check_keys(section, UPDATE_KEYS, rest.version.at_least(53))?;
    let request = UpdateSnapshotRequest {
        snapshot_id: rest.param("snapshot_id").into(),
        name: body::string(section, "name")?.or(body::string(section, "display_name")?),
        description: body::string(section, "description")?.or(body::string(section, "display_description")?),
        metadata: None,
    };
    let snapshot = rest.client().update_snapshot(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"snapshot": view(&rest, &snapshot, SnapshotView::Written)})).into_response())
}

pub async fn delete(rest: Rest) -> Result<Response, Fault> {
    let request = DeleteSnapshotRequest { snapshot_id: rest.param("snapshot_id").into(), force: false };
    rest.client().delete_snapshot(rest.request(request)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub async fn action(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let (name, arguments) = body::action(&body, "os-reset_status, os-force_delete, os-unmanage")?;
    let snapshot_id = rest.param("snapshot_id").to_owned();
    match name {
        "os-reset_status" => {
            let arguments = arguments.with(&["status"])?;
            let status =
                body::string(arguments, "status")?.ok_or_else(|| Fault::bad_request("os-reset_status needs status"))?;
            let status = SnapshotStatus::from_cinder_name(&status).ok_or_else(|| {
                Fault::bad_request(format!("unknown snapshot status {}", basalt::error::excerpt(&status)))
            })?;
            rest.client()
                .reset_snapshot_status(rest.request(ResetSnapshotStatusRequest { snapshot_id, status: status as i32 }))
                .await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-force_delete" => {
            rest.client().delete_snapshot(rest.request(DeleteSnapshotRequest { snapshot_id, force: true })).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-unmanage" => {
            rest.client().unmanage_snapshot(rest.request(UnmanageSnapshotRequest { snapshot_id })).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        other => Err(Fault::bad_request(format!(
            "unknown snapshot action {other:?}; actions: os-reset_status, os-force_delete, os-unmanage"
        ))),
    }
}

pub async fn metadata_show(rest: Rest) -> Result<Response, Fault> {
    Ok(Json(json!({"metadata": fetch(&rest).await?.metadata})).into_response())
}

async fn write_metadata(rest: &Rest, items: HashMap<String, String>) -> Result<HashMap<String, String>, Fault> {
    let request = UpdateSnapshotRequest {
        snapshot_id: rest.param("snapshot_id").into(),
        metadata: Some(MetadataUpdate { items }),
        ..Default::default()
    };
    Ok(rest.client().update_snapshot(rest.request(request)).await?.into_inner().metadata)
}

async fn metadata_body(request_body: Body) -> Result<HashMap<String, String>, Fault> {
    let body = body::read_json(request_body).await?;
    body::map_body(&body, "metadata")
}

pub async fn metadata_merge(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let items = metadata_body(request_body).await?;
    let mut merged = fetch(&rest).await?.metadata;
    merged.extend(items);
    Ok(Json(json!({"metadata": write_metadata(&rest, merged).await?})).into_response())
}

pub async fn metadata_replace(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let items = metadata_body(request_body).await?;
    Ok(Json(json!({"metadata": write_metadata(&rest, items).await?})).into_response())
}

pub async fn metadata_item(rest: Rest) -> Result<Response, Fault> {
    let key = rest.param("key").to_owned();
    let metadata = fetch(&rest).await?.metadata;
    let value = metadata
        .get(&key)
        .ok_or_else(|| Fault::not_found(format!("metadata key {} not found", basalt::error::excerpt(&key))))?;
    Ok(Json(json!({"meta": {key: value}})).into_response())
}

pub async fn metadata_item_set(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let key = rest.param("key").to_owned();
    let value = body::meta_item(&body::read_json(request_body).await?, &key)?;
    let mut merged = fetch(&rest).await?.metadata;
    merged.insert(key.clone(), value.clone());
    write_metadata(&rest, merged).await?;
    Ok(Json(json!({"meta": {key: value}})).into_response())
}

pub async fn metadata_item_delete(rest: Rest) -> Result<Response, Fault> {
    let key = rest.param("key").to_owned();
    let mut metadata = fetch(&rest).await?.metadata;
    if metadata.remove(&key).is_none() {
        return Err(Fault::not_found(format!("metadata key {} not found", basalt::error::excerpt(&key))));
    }
    write_metadata(&rest, metadata).await?;
    Ok(StatusCode::OK.into_response())
}
