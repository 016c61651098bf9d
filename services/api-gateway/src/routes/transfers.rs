//! `/os-volume-transfer` and, from 3.55, `/volume-transfers`: a project offers a volume, another
//! accepts it with the key shown once at creation.

use axum::{
    Json,
    body::Body,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use basalt::proto::{
    AcceptTransferRequest, CreateTransferRequest, DeleteTransferRequest, GetTransferRequest, ListTransfersRequest,
    Transfer,
};
use serde_json::{Value, json};

use super::all_tenants;
use crate::{Rest, body, fault::Fault, views};

/// Cinder names transfer links after its legacy collection, whichever path was called.
const COLLECTION: &str = "os-volume-transfer";

/// A transfer made without a name shows `null`, as Cinder's do.
fn name(transfer: &Transfer) -> Option<&str> {
    Some(transfer.name.as_str()).filter(|name| !name.is_empty())
}

fn summary(rest: &Rest, transfer: &Transfer) -> Value {
    json!({
        "id": transfer.id,
        "volume_id": transfer.volume_id,
        "name": name(transfer),
        "links": views::links(&rest.base, COLLECTION, &transfer.id),
    })
}

fn detail(rest: &Rest, transfer: &Transfer) -> Value {
    let mut view = json!({
        "id": transfer.id,
        "created_at": views::timestamp(transfer.created_at.as_ref()),
        "name": name(transfer),
        "volume_id": transfer.volume_id,
        "links": views::links(&rest.base, COLLECTION, &transfer.id),
    });
    if rest.version.at_least(55) {
        view["no_snapshots"] = json!(transfer.no_snapshots);
    }
    if rest.version.at_least(57) {
        let destination = Some(transfer.destination_project_id.as_str()).filter(|id| !id.is_empty());
        view["destination_project_id"] = json!(destination);
        view["source_project_id"] = json!(transfer.source_project_id);
        view["accepted"] = json!(transfer.accepted);
    }
    view
}

pub async fn create(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "transfer")?;
    let keys: &[&str] =
        if rest.version.at_least(55) { &["volume_id", "name", "no_snapshots"] } else { &["volume_id", "name"] };
    body::check_keys(section, keys, true)?;
    let volume_id = body::uuid(section, "volume_id")?
        .ok_or_else(|| Fault::bad_request("a transfer needs volume_id: the id of the volume to offer"))?;
    let request = CreateTransferRequest {
        volume_id,
        name: body::string(section, "name")?.unwrap_or_default(),
        no_snapshots: body::boolean(section, "no_snapshots")?.unwrap_or(false),
    };
    let created = rest.client().create_transfer(rest.request(request)).await?.into_inner();
    let mut view = detail(&rest, &created);
    view["auth_key"] = json!(created.auth_key);
    Ok((StatusCode::ACCEPTED, Json(json!({"transfer": view}))).into_response())
}

async fn listed(rest: &Rest) -> Result<Vec<Transfer>, Fault> {
    let request = ListTransfersRequest { all_projects: all_tenants(rest)? };
    Ok(rest.client().list_transfers(rest.request(request)).await?.into_inner().transfers)
}

pub async fn list(rest: Rest) -> Result<Response, Fault> {
    let views: Vec<Value> = listed(&rest).await?.iter().map(|transfer| summary(&rest, transfer)).collect();
    Ok(Json(json!({"transfers": views})).into_response())
}

pub async fn list_detail(rest: Rest) -> Result<Response, Fault> {
    let views: Vec<Value> = listed(&rest).await?.iter().map(|transfer| detail(&rest, transfer)).collect();
    Ok(Json(json!({"transfers": views})).into_response())
}

pub async fn show(rest: Rest) -> Result<Response, Fault> {
    let request = GetTransferRequest { transfer_id: rest.param("transfer_id").to_owned() };
    let shown = rest.client().get_transfer(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"transfer": detail(&rest, &shown)})).into_response())
}

pub async fn accept(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "accept")?;
    body::check_keys(section, &["auth_key"], true)?;
    let auth_key =
        body::string(section, "auth_key")?.ok_or_else(|| Fault::bad_request("accept needs the transfer's auth_key"))?;
    let request = AcceptTransferRequest { transfer_id: rest.param("transfer_id").to_owned(), auth_key };
    let accepted = rest.client().accept_transfer(rest.request(request)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, Json(json!({"transfer": summary(&rest, &accepted)}))).into_response())
}

pub async fn delete(rest: Rest) -> Result<Response, Fault> {
    let request = DeleteTransferRequest { transfer_id: rest.param("transfer_id").to_owned() };
    rest.client().delete_transfer(rest.request(request)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
