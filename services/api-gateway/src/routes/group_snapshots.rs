//! `/group_snapshots` (3.14): a snapshot of every volume of a group, cut at one point in time.

use axum::{
    Json,
    body::Body,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use basalt::proto::{
    CreateGroupSnapshotRequest, DeleteGroupSnapshotRequest, GetGroupSnapshotRequest, GroupSnapshot,
    GroupSnapshotStatus, ListGroupSnapshotsRequest, ResetGroupSnapshotStatusRequest,
};
use serde_json::{Value, json};

use super::{all_tenants, check_filters, next_link, paging, query_uuid};
use crate::{Rest, body, fault::Fault, views};

fn summary(group_snapshot: &GroupSnapshot) -> Value {
    json!({"id": group_snapshot.id, "name": group_snapshot.name, "group_type_id": group_snapshot.group_type_id})
}

/// Cinder's group snapshot detail view at the request's microversion.
fn detail(rest: &Rest, group_snapshot: &GroupSnapshot) -> Value {
    let status = GroupSnapshotStatus::try_from(group_snapshot.status).unwrap_or_default();
    let mut view = json!({
        "id": group_snapshot.id,
        "group_id": group_snapshot.group_id,
        "group_type_id": group_snapshot.group_type_id,
        "status": status.cinder_name(),
        "created_at": views::timestamp(group_snapshot.created_at.as_ref()),
        "name": group_snapshot.name,
        "description": group_snapshot.description,
    });
    if rest.version.at_least(58) {
        view["project_id"] = json!(group_snapshot.project_id);
    }
    view
}

pub async fn create(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "group_snapshot")?;
    body::check_keys(section, &["group_id", "name", "description"], true)?;
    let group_id = body::string(section, "group_id")?
        .ok_or_else(|| Fault::bad_request("a group snapshot needs group_id: the group to snapshot"))?;
    let request = CreateGroupSnapshotRequest {
        group_id,
        name: body::string(section, "name")?.unwrap_or_default(),
        description: body::string(section, "description")?.unwrap_or_default(),
    };
    let created = rest.client().create_group_snapshot(rest.request(request)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, Json(json!({"group_snapshot": summary(&created)}))).into_response())
}

async fn listed(rest: &Rest, path: &str, view: impl Fn(&GroupSnapshot) -> Value) -> Result<Response, Fault> {
    check_filters(rest, "group_snapshot")?;
    let (page, sort) = paging(rest)?;
    let status = match rest.query("status") {
        None => GroupSnapshotStatus::Unspecified,
        Some(name) => GroupSnapshotStatus::from_cinder_name(name).ok_or_else(|| {
            Fault::bad_request(format!("unknown group snapshot status {}", basalt::error::excerpt(name)))
        })?,
    };
    let request = ListGroupSnapshotsRequest {
        page: Some(page),
        sort,
        all_projects: all_tenants(rest)?,
        name: rest.query("name").unwrap_or_default().to_owned(),
        status: status as i32,
        group_id: query_uuid(rest, "group_id")?.unwrap_or_default(),
    };
    let response = rest.client().list_group_snapshots(rest.request(request)).await?.into_inner();
    let mut body = json!({"group_snapshots": response.group_snapshots.iter().map(view).collect::<Vec<_>>()});
    if let Some(links) = next_link(rest, path, &response.page.unwrap_or_default().next_marker) {
        body["group_snapshot_links"] = links;
    }
    Ok(Json(body).into_response())
}

pub async fn list(rest: Rest) -> Result<Response, Fault> {
    listed(&rest, "group_snapshots", summary).await
}

pub async fn list_detail(rest: Rest) -> Result<Response, Fault> {
    listed(&rest, "group_snapshots/detail", |group_snapshot| detail(&rest, group_snapshot)).await
}

pub async fn show(rest: Rest) -> Result<Response, Fault> {
    let request = GetGroupSnapshotRequest { group_snapshot_id: rest.param("group_snapshot_id").into() };
    let group_snapshot = rest.client().get_group_snapshot(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"group_snapshot": detail(&rest, &group_snapshot)})).into_response())
}

pub async fn delete(rest: Rest) -> Result<Response, Fault> {
    let request = DeleteGroupSnapshotRequest { group_snapshot_id: rest.param("group_snapshot_id").into() };
    rest.client().delete_group_snapshot(rest.request(request)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub async fn action(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    const ACTIONS: &str = "reset_status";
    let body = body::read_json(request_body).await?;
    let (name, arguments) = body::action(&body, ACTIONS)?;
    if name != "reset_status" {
        return Err(Fault::bad_request(format!(
            "unknown group snapshot action {}; actions: {ACTIONS}",
            basalt::error::excerpt(name)
        )));
    }
    rest.require_version(19, "resetting a group snapshot's status")?;
    let arguments = arguments.with(&["status"])?;
    let name = body::string(arguments, "status")?
        .ok_or_else(|| Fault::bad_request("reset_status needs status: available or error"))?;
    let status = GroupSnapshotStatus::from_cinder_name(&name).ok_or_else(|| {
        Fault::bad_request(format!("unknown group snapshot status {}", basalt::error::excerpt(&name)))
    })?;
    let request = ResetGroupSnapshotStatusRequest {
        group_snapshot_id: rest.param("group_snapshot_id").into(),
        status: status as i32,
    };
    rest.client().reset_group_snapshot_status(rest.request(request)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
