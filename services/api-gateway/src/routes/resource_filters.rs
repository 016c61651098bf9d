//! `/resource_filters` (3.33): the filters each listing accepts, from the one table the listings
//! check their queries against, so what the API reports is what it does.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{Rest, fault::Fault};

/// By Cinder's resource names, the query filters each listing honours besides paging and sorting.
/// A name ending in `~` is the "like" form of the filter before it (3.34), which Cinder's report
/// leaves implied.
const RESOURCE_FILTERS: &[(&str, &[&str])] = &[
    ("volume", &["name", "name~", "status", "metadata", "availability_zone", "bootable", "size", "group_id"]),
    ("snapshot", &["name", "status", "volume_id", "metadata"]),
    ("backup", &["name", "status", "volume_id"]),
    ("attachment", &["volume_id", "instance_id", "status", "attach_status"]),
    ("volume_type", &["is_public", "name"]),
    ("pool", &["name"]),
    ("message", &["resource_uuid", "resource_type", "event_id", "request_id", "message_level"]),
    ("group", &[]),
    ("group_snapshot", &["status", "group_id"]),
];

/// The filters `resource`'s listing accepts.
pub fn accepted(resource: &str) -> &'static [&'static str] {
    RESOURCE_FILTERS.iter().find(|(name, _)| *name == resource).map_or(&[], |(_, filters)| filters)
}

pub async fn list(rest: Rest) -> Result<Response, Fault> {
    let wanted = rest.query("resource");
    let reported: Vec<Value> = RESOURCE_FILTERS
        .iter()
        .filter(|(resource, _)| wanted.is_none_or(|wanted| wanted == *resource))
        .map(|(resource, filters)| {
            let filters: Vec<&str> = filters.iter().copied().filter(|filter| !filter.ends_with('~')).collect();
            json!({"resource": resource, "filters": filters})
        })
        .collect();
    Ok(Json(json!({"resource_filters": reported})).into_response())
}
