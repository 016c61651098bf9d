//! The OpenAPI 3.1 document of the REST surface, served at `/openapi.json`, made from the same route
//! table as the router (`routes::table`): every operation with its path and query parameters, its
//! request body, its responses with their schemas (`schemas.rs`), and every error status it can
//! answer, each a Cinder fault.

use axum::{Json, http::Method, response::IntoResponse};
use serde_json::{Map, Value, json};

use crate::{
    routes::{self, Route},
    schemas,
};

/// The errors every `/v3` operation can answer: a malformed request or version header (400), no
/// token (401), not allowed (403), not found or not at this microversion (404), a microversion
/// out of range (406), a URL over 16 KiB (414), the control plane unreachable (503).
const COMMON_ERRORS: &[(u16, &str)] = &[
    (400, "badRequest: the request is malformed, or the resource's state forbids it"),
    (401, "unauthorized: no token"),
    (403, "forbidden: the caller may not do this"),
    (404, "itemNotFound: no such resource, or not at this microversion"),
    (406, "notAcceptable: the microversion is out of range"),
    (414, "the request URL is longer than 16 KiB"),
    (503, "serviceUnavailable: the control plane is unreachable; retry shortly"),
];

/// The errors of operations that take a body, on top of the common ones.
const BODY_ERRORS: &[(u16, &str)] = &[
    (408, "the request body did not arrive within the body timeout"),
    (409, "conflictingRequest: a resource with this identity already exists"),
    (413, "overLimit: a quota would be exceeded, or the body is larger than 1 MiB"),
    (415, "badMediaType: the body is not JSON"),
];

/// The errors of deletes, on top of the common ones.
const DELETE_ERRORS: &[(u16, &str)] = &[(409, "conflictingRequest: the resource is in use")];

fn operation_id(route: &Route) -> String {
    let mut id = route.method.as_str().to_ascii_lowercase();
    for segment in route.path.split('/').filter(|segment| !segment.is_empty()) {
        id.push('_');
        id.extend(
            segment
                .chars()
                .filter(|c| !matches!(c, '{' | '}'))
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}

/// The path parameters of `path`, in order.
fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|segment| segment.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')))
}

fn path_parameter_schema(name: &str) -> Value {
    match name {
        "key" => json!({"type": "string", "pattern": schemas::KEY_PATTERN}),
        "target" => json!({"type": "string", "pattern": schemas::PROJECT_PATTERN}),
        // A volume type by id (its name also finds it, as the SDK's lookups expect).
        "type_id" => json!({"type": "string", "minLength": 1, "maxLength": 255}),
        "service_action" => json!({"enum": ["enable", "disable", "disable-log-reason"]}),
        _ => schemas::uuid(),
    }
}

fn fault_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Fault"}}}})
}

fn operation(route: &Route, table: &[Route]) -> Value {
    let mut parameters: Vec<Value> = path_parameters(route.path)
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": path_parameter_schema(name)}))
        .collect();
    parameters.extend(
        route
            .query
            .iter()
            .map(|query| json!({"name": query.name, "in": "query", "required": false, "schema": (query.schema)()})),
    );
    let mut responses = Map::new();
    let mut success = json!({"description": "success"});
    if let Some(schema) = route.response {
        success["content"] = json!({"application/json": {"schema": schema()}});
    }
    if let Some((parameter, pointer)) = route.creates {
        success["links"] = links(parameter, pointer, table);
    }
    responses.insert(route.status.to_string(), success);
    if let Some((status, description)) = route.also {
        responses.insert(status.to_string(), json!({"description": description}));
    }
    let mut errors: Vec<(u16, &str)> = COMMON_ERRORS.to_vec();
    if route.request.is_some() {
        errors.extend_from_slice(BODY_ERRORS);
    }
    if route.method == Method::DELETE {
        errors.extend_from_slice(DELETE_ERRORS);
    }
    for (status, description) in errors {
        responses.entry(status.to_string()).or_insert_with(|| fault_response(description));
    }
    let mut operation = json!({
        "operationId": operation_id(route),
        "summary": route.summary,
        "parameters": parameters,
        "responses": responses,
    });
    if route.min_version > 0 {
        operation["description"] =
            json!(format!("Since microversion 3.{}; earlier versions answer 404.", route.min_version));
    }
    if let Some(schema) = route.request {
        operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema()}}});
    }
    operation
}

/// Links from a create's response to every operation on the new resource.
fn links(parameter: &str, pointer: &str, table: &[Route]) -> Value {
    let placeholder = format!("{{{parameter}}}");
    let mut links = Map::new();
    for target in table.iter().filter(|target| {
        target.path.contains(&placeholder) && path_parameters(target.path).all(|name| name == parameter)
    }) {
        let id = operation_id(target);
        links.insert(
            id.clone(),
            json!({"operationId": id, "parameters": { parameter: format!("$response.body#{pointer}") }}),
        );
    }
    // Operations whose body names what the create made.
    for target in table.iter().filter(|target| target.consumes.is_some_and(|(consumed, _)| consumed == parameter)) {
        let Some((_, field)) = target.consumes else { continue };
        let body =
            field.iter().rev().fold(json!(format!("$response.body#{pointer}")), |inner, key| json!({ *key: inner }));
        let id = operation_id(target);
        links.insert(id.clone(), json!({"operationId": id, "requestBody": body}));
    }
    Value::Object(links)
}

pub fn build() -> Value {
    let table = routes::table();
    let mut paths = Map::new();
    for route in &table {
        let entry = paths.entry(route.path.to_owned()).or_insert_with(|| json!({}));
        entry[route.method.as_str().to_ascii_lowercase()] = operation(route, &table);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Basalt Block Storage API (Cinder v3)",
            "version": "3.71",
            "description": "Cinder's Block Storage API v3, microversions 3.0 to 3.71, chosen by the header \
                `OpenStack-API-Version: volume 3.N` (`latest` is 3.71; without it, 3.0). This document describes \
                requests as accepted at the latest microversion: before 3.53 unknown keys in volume bodies are \
                ignored, as Cinder does. Responses list every field any microversion or role shows. Every error is \
                a Cinder fault, `{\"<faultName>\": {\"code\": N, \"message\": \"...\"}}`."
        },
        "servers": [
            {
                "url": "/v3/{project_id}",
                "description": "The classic form: the project in the URL must be the token's.",
                "variables": {"project_id": {
                    "default": "0123456789abcdef0123456789abcdef",
                    "description": "32 lowercase hexadecimal digits, or a UUID with hyphens"
                }}
            },
            {"url": "/v3", "description": "The project-less form (3.67): the project is the token's."}
        ],
        "components": {
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}},
            "schemas": {"Fault": schemas::fault()}
        },
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
    fn every_route_is_documented_once_with_its_path_parameters() {
        let document = build();
        let paths = document["paths"].as_object().unwrap();
        let operations: usize = paths.values().map(|methods| methods.as_object().unwrap().len()).sum();
        assert_eq!(operations, routes::table().len(), "a path and method listed twice");
        for (path, methods) in paths {
            for (method, operation) in methods.as_object().unwrap() {
                let declared: Vec<&str> = operation["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|parameter| parameter["in"] == "path")
                    .map(|parameter| parameter["name"].as_str().unwrap())
                    .collect();
                assert_eq!(declared, path_parameters(path).collect::<Vec<_>>(), "{method} {path}");
                assert!(operation["responses"]["400"].is_object(), "{method} {path} lacks its 400");
            }
        }
    }

    #[test]
    fn creates_link_to_the_operations_on_what_they_made() {
        let document = build();
        let links = &document["paths"]["/volumes"]["post"]["responses"]["202"]["links"];
        assert_eq!(links["get_volumes_volume_id"]["parameters"]["volume_id"], "$response.body#/volume/id", "{links}");
        assert!(links.get("delete_volumes_volume_id_metadata_key").is_none(), "{links}");
    }

    #[test]
    fn the_backup_and_attachment_routes_are_documented() {
        let document = build();
        for (path, method) in [
            ("/backups", "post"),
            ("/backups/{backup_id}/restore", "post"),
            ("/backups/import_record", "post"),
            ("/attachments/{attachment_id}", "put"),
            ("/attachments/{attachment_id}/action", "post"),
        ] {
            assert!(document["paths"][path][method].is_object(), "{method} {path}");
        }
    }
}
