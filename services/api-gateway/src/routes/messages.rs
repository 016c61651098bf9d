//! `/messages` (3.3+): why an asynchronous operation failed, as Cinder's user messages; filters,
//! sorting and paging from 3.5.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use basalt::proto::{DeleteMessageRequest, GetMessageRequest, ListMessagesRequest, UserMessage};
use serde_json::{Value, json};

use super::{check_filters, next_link, paging, query_uuid};
use crate::{Rest, fault::Fault, views};

const COLLECTION: &str = "messages";
/// The resources a message may be about, by Cinder's names.
pub const RESOURCE_TYPES: [&str; 3] = ["VOLUME", "VOLUME_SNAPSHOT", "VOLUME_BACKUP"];

/// Cinder's message view: the resource keys only when the message names a resource.
fn view(rest: &Rest, message: &UserMessage) -> Value {
    let mut view = json!({
        "id": message.id,
        "event_id": message.event_id,
        "user_message": message.user_message,
        "message_level": message.message_level,
        "created_at": views::timestamp(message.created_at.as_ref()),
        "guaranteed_until": views::timestamp(message.expires_at.as_ref()),
        "request_id": message.request_id,
        "links": views::links(&rest.base, COLLECTION, &message.id),
    });
    if !message.resource_type.is_empty() {
        view["resource_type"] = json!(message.resource_type);
    }
    if !message.resource_uuid.is_empty() {
        view["resource_uuid"] = json!(message.resource_uuid);
    }
    view
}

pub async fn list(rest: Rest) -> Result<Response, Fault> {
    // Before 3.5 Cinder reads no query at all: every message, newest first.
    let request = if rest.version.at_least(5) {
        check_filters(&rest, "message")?;
        let (page, sort) = paging(&rest)?;
        let filter = |name: &str| rest.query(name).unwrap_or_default().to_owned();
        let resource_type = filter("resource_type");
        if !resource_type.is_empty() && !RESOURCE_TYPES.contains(&resource_type.as_str()) {
            return Err(Fault::bad_request(format!(
                "resource_type {} is not one of {}",
                basalt::error::excerpt(&resource_type),
                RESOURCE_TYPES.join(", ")
            )));
        }
        ListMessagesRequest {
            page: Some(page),
            sort,
            with_count: false,
            resource_type,
            resource_uuid: query_uuid(&rest, "resource_uuid")?.unwrap_or_default(),
            event_id: filter("event_id"),
            request_id: filter("request_id"),
            message_level: filter("message_level"),
        }
    } else {
        ListMessagesRequest::default()
    };
    let response = rest.client().list_messages(rest.request(request)).await?.into_inner();
    let views: Vec<Value> = response.messages.iter().map(|message| view(&rest, message)).collect();
    let mut body = json!({"messages": views});
    let next_marker = response.page_info.unwrap_or_default().next_marker;
    if let Some(links) = next_link(&rest, COLLECTION, &next_marker) {
        body["messages_links"] = links;
    }
    Ok(Json(body).into_response())
}

pub async fn show(rest: Rest) -> Result<Response, Fault> {
    let request = GetMessageRequest { message_id: rest.param("message_id").to_owned() };
    let message = rest.client().get_message(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"message": view(&rest, &message)})).into_response())
}

pub async fn delete(rest: Rest) -> Result<Response, Fault> {
    let request = DeleteMessageRequest { message_id: rest.param("message_id").to_owned() };
    rest.client().delete_message(rest.request(request)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
