//! The OpenAPI 3 document of the REST surface, served at `/openapi.json`. Built from one table of
//! routes so the document and the router are reviewed side by side.

use axum::{Json, response::IntoResponse};
use serde_json::{Map, Value, json};

/// (path under `/v3/{project_id}`, method, summary, success status).
const ROUTES: &[(&str, &str, &str, u16)] = &[
    ("/volumes", "get", "List volumes (id, name, links)", 200),
    ("/volumes", "post", "Create a volume: empty, from a snapshot or from a source volume", 202),
    ("/volumes/detail", "get", "List volumes with details, filters, sorting and pagination", 200),
    ("/volumes/summary", "get", "Count and total size of volumes (3.12+)", 200),
    ("/volumes/{volume_id}", "get", "Show a volume", 200),
    ("/volumes/{volume_id}", "put", "Update a volume's name, description or metadata", 200),
    ("/volumes/{volume_id}", "delete", "Delete a volume (cascade; force from 3.23)", 202),
    (
        "/volumes/{volume_id}/action",
        "post",
        "os-extend, os-reset_status, os-force_delete, os-set_bootable, os-update_readonly_flag, revert (3.40+), os-reserve, os-unreserve, os-begin_detaching, os-roll_detaching, os-retype, os-initialize_connection (200 with connection_info), os-terminate_connection, os-attach, os-detach",
        202,
    ),
    ("/volumes/{volume_id}/metadata", "get", "Show a volume's metadata", 200),
    ("/volumes/{volume_id}/metadata", "post", "Add or change metadata items", 200),
    ("/volumes/{volume_id}/metadata", "put", "Replace all metadata", 200),
    ("/volumes/{volume_id}/metadata/{key}", "get", "Show one metadata item", 200),
    ("/volumes/{volume_id}/metadata/{key}", "put", "Set one metadata item", 200),
    ("/volumes/{volume_id}/metadata/{key}", "delete", "Delete one metadata item", 200),
    ("/snapshots", "get", "List snapshots", 200),
    ("/snapshots", "post", "Create a snapshot", 202),
    ("/snapshots/detail", "get", "List snapshots with details", 200),
    ("/snapshots/{snapshot_id}", "get", "Show a snapshot", 200),
    ("/snapshots/{snapshot_id}", "put", "Update a snapshot", 200),
    ("/snapshots/{snapshot_id}", "delete", "Delete a snapshot", 202),
    ("/snapshots/{snapshot_id}/action", "post", "os-reset_status, os-force_delete", 202),
    ("/snapshots/{snapshot_id}/metadata", "get", "Show a snapshot's metadata", 200),
    ("/snapshots/{snapshot_id}/metadata", "post", "Add or change snapshot metadata", 200),
    ("/snapshots/{snapshot_id}/metadata", "put", "Replace all snapshot metadata", 200),
    ("/snapshots/{snapshot_id}/metadata/{key}", "get", "Show one snapshot metadata item", 200),
    ("/snapshots/{snapshot_id}/metadata/{key}", "put", "Set one snapshot metadata item", 200),
    ("/snapshots/{snapshot_id}/metadata/{key}", "delete", "Delete one snapshot metadata item", 200),
    ("/types", "get", "List volume types", 200),
    ("/types", "post", "Create a volume type (admin)", 200),
    ("/types/default", "get", "Show the default volume type", 200),
    ("/types/{type_id}", "get", "Show a volume type", 200),
    ("/types/{type_id}", "put", "Update a volume type (admin)", 200),
    ("/types/{type_id}", "delete", "Delete a volume type (admin)", 202),
    ("/types/{type_id}/extra_specs", "get", "Show extra specs", 200),
    ("/types/{type_id}/extra_specs", "post", "Set extra specs (admin)", 200),
    ("/types/{type_id}/extra_specs/{key}", "get", "Show one extra spec", 200),
    ("/types/{type_id}/extra_specs/{key}", "put", "Set one extra spec (admin)", 200),
    ("/types/{type_id}/extra_specs/{key}", "delete", "Unset one extra spec (admin)", 202),
    ("/types/{type_id}/action", "post", "addProjectAccess, removeProjectAccess (admin)", 202),
    ("/types/{type_id}/os-volume-type-access", "get", "List the projects of a private type", 200),
    ("/qos-specs", "get", "List QoS specs (admin)", 200),
    ("/qos-specs", "post", "Create QoS specs (admin)", 200),
    ("/qos-specs/{qos_id}", "get", "Show QoS specs (admin)", 200),
    ("/qos-specs/{qos_id}", "put", "Set QoS spec keys (admin)", 200),
    ("/qos-specs/{qos_id}", "delete", "Delete QoS specs; force=true disassociates first (admin)", 202),
    ("/qos-specs/{qos_id}/delete_keys", "put", "Delete QoS spec keys (admin)", 202),
    ("/qos-specs/{qos_id}/associate", "get", "Associate with vol_type_id (admin)", 202),
    ("/qos-specs/{qos_id}/disassociate", "get", "Disassociate from vol_type_id (admin)", 202),
    ("/qos-specs/{qos_id}/disassociate_all", "get", "Disassociate from every type (admin)", 202),
    ("/qos-specs/{qos_id}/associations", "get", "List associated volume types (admin)", 200),
    ("/attachments", "get", "List attachments (3.27+)", 200),
    ("/attachments", "post", "Create an attachment; without a connector it reserves the volume (3.27+)", 200),
    ("/attachments/detail", "get", "List attachments with details (3.27+)", 200),
    ("/attachments/{attachment_id}", "get", "Show an attachment (3.27+)", 200),
    (
        "/attachments/{attachment_id}",
        "delete",
        "Delete an attachment; returns the volume's remaining ones (3.27+)",
        200,
    ),
    ("/os-quota-sets/{project}", "get", "Show quotas (usage=true adds in_use)", 200),
    ("/os-quota-sets/{project}", "put", "Update quotas (admin)", 200),
    ("/os-quota-sets/{project}", "delete", "Reset a project's quotas to the defaults (admin)", 200),
    ("/os-quota-sets/{project}/defaults", "get", "Show default quotas", 200),
    ("/limits", "get", "Absolute limits of the project", 200),
    ("/os-availability-zone", "get", "List availability zones", 200),
    ("/os-services", "get", "List services (admin)", 200),
    ("/scheduler-stats/get_pools", "get", "List pools; detail=true adds capabilities (admin)", 200),
    ("/extensions", "get", "List API extensions", 200),
];

pub fn build() -> Value {
    let mut paths = Map::new();
    for (path, method, summary, status) in ROUTES {
        let full = format!("/v3/{{project_id}}{path}");
        let entry = paths.entry(full).or_insert_with(|| json!({}));
        entry[*method] = json!({
            "summary": summary,
            "parameters": [{"name": "OpenStack-API-Version", "in": "header", "required": false,
                            "schema": {"type": "string", "example": "volume 3.71"}}],
            "responses": {
                status.to_string(): {"description": "success"},
                "400": {"description": "badRequest fault"},
                "401": {"description": "unauthorized fault"},
                "403": {"description": "forbidden fault"},
                "404": {"description": "itemNotFound fault"},
                "406": {"description": "unsupported microversion"},
                "413": {"description": "overLimit fault (quota, body size)"}
            }
        });
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Basalt Block Storage API (Cinder v3)",
            "version": "3.71",
            "description": "Cinder's Block Storage API v3, microversions 3.0 to 3.71. Every path is also served without {project_id} (3.67)."
        },
        "components": {"securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}}},
        "security": [{"token": []}],
        "paths": paths,
    })
}

pub async fn document() -> impl IntoResponse {
    Json(build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once() {
        let document = build();
        let paths = document["paths"].as_object().unwrap();
        let operations: usize = paths.values().map(|methods| methods.as_object().unwrap().len()).sum();
        assert_eq!(operations, ROUTES.len(), "a path and method listed twice");
    }
}
