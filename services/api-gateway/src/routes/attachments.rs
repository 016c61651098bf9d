//! `/attachments` (3.27+): reserve a volume for a server, list, show and delete attachments.

use axum::{
    Json,
    body::Body,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use basalt::proto::{
    AttachMode, AttachStatus, CompleteAttachmentRequest, Connector, CreateAttachmentRequest, DeleteAttachmentRequest,
    GetAttachmentRequest, ListAttachmentsRequest, UpdateAttachmentRequest,
};
use serde_json::{Value, json};

use super::all_tenants;
use crate::{Rest, body, fault::Fault, views};

pub async fn create(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "attachment")?;
    body::check_keys(section, &["volume_uuid", "instance_uuid", "connector", "mode"], true)?;
    let volume_id = body::uuid(section, "volume_uuid")?.ok_or_else(|| Fault::bad_request("volume_uuid is required"))?;
    let mode = match body::string(section, "mode")? {
        None => AttachMode::Unspecified,
        Some(_) if !rest.version.at_least(54) => {
            return Err(Fault::bad_request("mode needs microversion 3.54 or later"));
        }
        Some(mode) if mode == "rw" => AttachMode::ReadWrite,
        Some(mode) if mode == "ro" => AttachMode::ReadOnly,
        Some(mode) => {
            return Err(Fault::bad_request(format!("mode must be rw or ro, not {}", basalt::error::excerpt(&mode))));
        }
    };
    let connector = connector(section)?;
    let request = CreateAttachmentRequest {
        volume_id,
        instance_id: body::string(section, "instance_uuid")?.unwrap_or_default(),
        connector,
        mode: mode as i32,
    };
    let attachment = rest.client().create_attachment(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"attachment": views::attachment(&attachment)})).into_response())
}

async fn list_views(rest: &Rest) -> Result<Vec<Value>, Fault> {
    let status = match rest.query("status").or(rest.query("attach_status")) {
        None => AttachStatus::Unspecified,
        Some(name) => AttachStatus::from_cinder_name(name)
            .ok_or_else(|| Fault::bad_request(format!("unknown attach status {}", basalt::error::excerpt(name))))?,
    };
    let request = ListAttachmentsRequest {
        volume_id: super::query_uuid(rest, "volume_id")?.unwrap_or_default(),
        instance_id: rest.query("instance_id").unwrap_or_default().to_owned(),
        status: status as i32,
        all_projects: all_tenants(rest)?,
    };
    let attachments = rest.client().list_attachments(rest.request(request)).await?.into_inner().attachments;
    Ok(attachments.iter().map(views::attachment).collect())
}

pub async fn list(rest: Rest) -> Result<Response, Fault> {
    let summaries: Vec<Value> = list_views(&rest)
        .await?
        .into_iter()
        .map(|view| json!({"id": view["id"], "status": view["status"], "instance": view["instance"], "volume_id": view["volume_id"]}))
        .collect();
    Ok(Json(json!({"attachments": summaries})).into_response())
}

pub async fn list_detail(rest: Rest) -> Result<Response, Fault> {
    Ok(Json(json!({"attachments": list_views(&rest).await?})).into_response())
}

pub async fn show(rest: Rest) -> Result<Response, Fault> {
    let request = GetAttachmentRequest { attachment_id: rest.param("attachment_id").into() };
    let attachment = rest.client().get_attachment(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"attachment": views::attachment(&attachment)})).into_response())
}

/// The host's connector: `null` or `{}` means none (reserve only).
pub fn connector(section: &serde_json::Map<String, Value>) -> Result<Option<Connector>, Fault> {
    match section.get("connector") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(connector)) if connector.is_empty() => Ok(None),
        Some(Value::Object(connector)) => Ok(Some(Connector {
            initiator: body::string(connector, "initiator")?.unwrap_or_default(),
            ip: body::string(connector, "ip")?.unwrap_or_default(),
            host: body::string(connector, "host")?.unwrap_or_default(),
            platform: body::string(connector, "platform")?.unwrap_or_default(),
            os_type: body::string(connector, "os_type")?.unwrap_or_default(),
            multipath: body::boolean(connector, "multipath")?.unwrap_or(false),
            do_local_attach: body::boolean(connector, "do_local_attach")?.unwrap_or(false),
            extra: Default::default(),
        })),
        Some(_) => Err(Fault::bad_request("connector must be an object")),
    }
}

/// `PUT /attachments/{id}` with the host's connector: exports the volume to it and answers the
/// connection info.
pub async fn update(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "attachment")?;
    body::check_keys(section, &["connector"], true)?;
    let connector = connector(section)?.ok_or_else(|| Fault::bad_request("the attachment update needs a connector"))?;
    let request =
        UpdateAttachmentRequest { attachment_id: rest.param("attachment_id").into(), connector: Some(connector) };
    let attachment = rest.client().update_attachment(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"attachment": views::attachment(&attachment)})).into_response())
}

/// `os-complete` (3.44+): the host attached the volume.
pub async fn action(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let (name, _) = body::action(&body, "os-complete")?;
    if name != "os-complete" {
        return Err(Fault::bad_request(format!(
            "unknown attachment action {}; actions: os-complete",
            basalt::error::excerpt(name)
        )));
    }
    let request = CompleteAttachmentRequest { attachment_id: rest.param("attachment_id").into() };
    rest.client().complete_attachment(rest.request(request)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete(rest: Rest) -> Result<Response, Fault> {
    let request = DeleteAttachmentRequest { attachment_id: rest.param("attachment_id").into() };
    let remaining = rest.client().delete_attachment(rest.request(request)).await?.into_inner().attachments;
    Ok(Json(json!({"attachments": remaining.iter().map(views::attachment).collect::<Vec<_>>()})).into_response())
}
