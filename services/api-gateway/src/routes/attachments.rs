//! `/attachments` (3.27+): reserve a volume for a server, list, show and delete attachments.

use axum::{
    Json,
    body::Body,
    response::{IntoResponse, Response},
};
use basalt::proto::{
    AttachMode, AttachStatus, Connector, CreateAttachmentRequest, DeleteAttachmentRequest, GetAttachmentRequest,
    ListAttachmentsRequest,
};
use serde_json::{Value, json};

use super::all_tenants;
use crate::{Rest, body, fault::Fault, views};

const MIN_VERSION: u16 = 27;
const CONNECT_HINT: &str = "connecting a host needs an export target on the volume node, and this deployment's nodes \
                            export nothing yet; create the attachment without a connector to reserve the volume";

pub async fn create(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    rest.require_version(MIN_VERSION, "attachments")?;
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
        Some(mode) => return Err(Fault::bad_request(format!("mode must be rw or ro, not {mode:?}"))),
    };
    let connector = match section.get("connector") {
        None | Some(Value::Null) => None,
        Some(Value::Object(connector)) if connector.is_empty() => None,
        Some(Value::Object(connector)) => Some(Connector {
            initiator: body::string(connector, "initiator")?.unwrap_or_default(),
            ip: body::string(connector, "ip")?.unwrap_or_default(),
            host: body::string(connector, "host")?.unwrap_or_default(),
            ..Default::default()
        }),
        Some(_) => return Err(Fault::bad_request("connector must be an object")),
    };
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
    rest.require_version(MIN_VERSION, "attachments")?;
    let status = match rest.query("status").or(rest.query("attach_status")) {
        None => AttachStatus::Unspecified,
        Some(name) => AttachStatus::from_cinder_name(name)
            .ok_or_else(|| Fault::bad_request(format!("unknown attach status {name:?}")))?,
    };
    let request = ListAttachmentsRequest {
        volume_id: rest.query("volume_id").unwrap_or_default().to_owned(),
        instance_id: rest.query("instance_id").unwrap_or_default().to_owned(),
        status: status as i32,
        all_projects: all_tenants(rest),
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
    rest.require_version(MIN_VERSION, "attachments")?;
    let request = GetAttachmentRequest { attachment_id: rest.param("attachment_id").into() };
    let attachment = rest.client().get_attachment(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"attachment": views::attachment(&attachment)})).into_response())
}

pub async fn update(rest: Rest) -> Result<Response, Fault> {
    rest.require_version(MIN_VERSION, "attachments")?;
    Err(Fault::bad_request(CONNECT_HINT))
}

pub async fn action(rest: Rest) -> Result<Response, Fault> {
    rest.require_version(44, "attachment actions")?;
    Err(Fault::bad_request(CONNECT_HINT))
}

pub async fn delete(rest: Rest) -> Result<Response, Fault> {
    rest.require_version(MIN_VERSION, "attachments")?;
    let request = DeleteAttachmentRequest { attachment_id: rest.param("attachment_id").into() };
    let remaining = rest.client().delete_attachment(rest.request(request)).await?.into_inner().attachments;
    Ok(Json(json!({"attachments": remaining.iter().map(views::attachment).collect::<Vec<_>>()})).into_response())
}
