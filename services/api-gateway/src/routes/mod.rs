//! The `/v3` resources, each a translation into `VolumeService` calls.

pub mod attachments;
pub mod backups;
pub mod default_types;
pub mod deployment;
pub mod group_snapshots;
pub mod groups;
pub mod manage;
pub mod messages;
pub mod qos;
pub mod quotas;
pub mod resource_filters;
pub mod snapshots;
pub mod transfers;
pub mod volume_types;
pub mod volumes;

use std::collections::HashMap;

use axum::{
    Router, extract::Request, handler::Handler, http::Method, middleware::Next, response::IntoResponse,
    routing::MethodRouter,
};
use basalt::proto::{PageRequest, SortKey};
use serde_json::{Value, json};

use crate::{
    GatewayState, Rest,
    fault::Fault,
    microversion::{ApiVersion, version_needed},
    schemas,
};

/// One operation of the REST surface: its handler, and what the OpenAPI document says of it.
/// The router and `/openapi.json` are both made from [`table`], so neither can list an
/// operation the other lacks.
pub struct Route {
    pub method: Method,
    /// Under `/v3/{project_id}` (and `/v3` for microversion 3.67 clients).
    pub path: &'static str,
    pub handler: MethodRouter<GatewayState>,
    pub summary: &'static str,
    /// The microversion the operation appeared at; below it, 404.
    pub min_version: u16,
    pub query: &'static [Query],
    pub request: Option<fn() -> Value>,
    /// The success status and its body, if it has one.
    pub status: u16,
    pub response: Option<fn() -> Value>,
    /// For a create: the path parameter the new resource's id fills, and where the id is in the
    /// response (a JSON pointer), so stateful clients can follow it.
    pub creates: Option<(&'static str, &'static str)>,
    /// A second success status whose body depends on the request, described in words.
    pub also: Option<(u16, &'static str)>,
    /// The body field (a path of keys) that names a resource another operation creates, by the
    /// path parameter that create fills: `("volume_id", &["snapshot", "volume_id"])`.
    pub consumes: Option<(&'static str, &'static [&'static str])>,
}

/// A query parameter: its name and schema.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub name: &'static str,
    pub schema: fn() -> Value,
}

impl Route {
    fn new<H, T>(method: Method, path: &'static str, handler: H, summary: &'static str) -> Self
    where
        H: Handler<T, GatewayState>,
        T: 'static,
    {
        let filter = axum::routing::MethodFilter::try_from(method.clone()).unwrap_or(axum::routing::MethodFilter::GET);
        Self {
            handler: axum::routing::on(filter, handler),
            method,
            path,
            summary,
            min_version: 0,
            query: &[],
            request: None,
            status: 200,
            response: None,
            creates: None,
            also: None,
            consumes: None,
        }
    }

    fn get<H: Handler<T, GatewayState>, T: 'static>(path: &'static str, handler: H, summary: &'static str) -> Self {
        Self::new(Method::GET, path, handler, summary)
    }

    fn post<H: Handler<T, GatewayState>, T: 'static>(path: &'static str, handler: H, summary: &'static str) -> Self {
        Self::new(Method::POST, path, handler, summary)
    }

    fn put<H: Handler<T, GatewayState>, T: 'static>(path: &'static str, handler: H, summary: &'static str) -> Self {
        Self::new(Method::PUT, path, handler, summary)
    }

    fn delete<H: Handler<T, GatewayState>, T: 'static>(path: &'static str, handler: H, summary: &'static str) -> Self {
        Self::new(Method::DELETE, path, handler, summary)
    }

    fn since(self, min_version: u16) -> Self {
        Self { min_version, ..self }
    }

    fn query(self, query: &'static [Query]) -> Self {
        Self { query, ..self }
    }

    fn body(self, request: fn() -> Value) -> Self {
        Self { request: Some(request), ..self }
    }

    fn returns(self, status: u16, response: fn() -> Value) -> Self {
        Self { status, response: Some(response), ..self }
    }

    fn empty(self, status: u16) -> Self {
        Self { status, response: None, ..self }
    }

    fn creates(self, parameter: &'static str, pointer: &'static str) -> Self {
        Self { creates: Some((parameter, pointer)), ..self }
    }

    fn consumes(self, parameter: &'static str, field: &'static [&'static str]) -> Self {
        Self { consumes: Some((parameter, field)), ..self }
    }

    fn also(self, status: u16, description: &'static str) -> Self {
        Self { also: Some((status, description)), ..self }
    }
}

/// A filter's text: anything but control characters (names never hold them).
fn filter_text() -> Value {
    json!({"type": "string", "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})
}

fn string_schema() -> Value {
    json!({"type": "string"})
}

fn flag_schema() -> Value {
    json!({"type": "string", "enum": FLAG_WORDS})
}

fn count_schema() -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": u32::MAX})
}

const fn query(name: &'static str, schema: fn() -> Value) -> Query {
    Query { name, schema }
}

const PAGING: [Query; 8] = [
    query("limit", count_schema),
    query("marker", schemas::uuid),
    query("offset", count_schema),
    query("sort", || json!({"type": "string", "pattern": SORT_PATTERN})),
    query("sort_key", || json!({"enum": SORT_KEYS})),
    query("sort_dir", || json!({"enum": ["asc", "desc"]})),
    query("with_count", flag_schema),
    query("all_tenants", flag_schema),
];
const VOLUME_QUERY: [Query; 16] = [
    PAGING[0],
    PAGING[1],
    PAGING[2],
    PAGING[3],
    PAGING[4],
    PAGING[5],
    PAGING[6],
    PAGING[7],
    query("name", filter_text),
    query("name~", filter_text),
    query("status", || json!({"enum": schemas::VOLUME_STATUSES})),
    query("metadata", string_schema),
    query("availability_zone", filter_text),
    query("bootable", flag_schema),
    query("size", || json!({"type": "integer", "minimum": 0})),
    query("group_id", schemas::uuid),
];
const SNAPSHOT_QUERY: [Query; 12] = [
    PAGING[0],
    PAGING[1],
    PAGING[2],
    PAGING[3],
    PAGING[4],
    PAGING[5],
    PAGING[6],
    PAGING[7],
    query("name", filter_text),
    query("status", || json!({"enum": schemas::SNAPSHOT_STATUSES})),
    query("volume_id", schemas::uuid),
    query("metadata", string_schema),
];
const BACKUP_QUERY: [Query; 11] = [
    PAGING[0],
    PAGING[1],
    PAGING[2],
    PAGING[3],
    PAGING[4],
    PAGING[5],
    PAGING[6],
    PAGING[7],
    query("name", filter_text),
    query("status", || json!({"enum": schemas::BACKUP_STATUSES})),
    query("volume_id", schemas::uuid),
];
const ATTACHMENT_QUERY: [Query; 5] = [
    query("volume_id", schemas::uuid),
    query("instance_id", filter_text),
    query("status", || json!({"enum": schemas::ATTACH_STATUSES})),
    query("attach_status", || json!({"enum": schemas::ATTACH_STATUSES})),
    PAGING[7],
];
const TYPE_QUERY: [Query; 2] = [
    query(
        "is_public",
        || json!({"type": "string", "enum": ["true", "false", "True", "False", "1", "0", "None", "none"]}),
    ),
    query("name", filter_text),
];
const DELETE_VOLUME_QUERY: [Query; 2] = [query("cascade", flag_schema), query("force", flag_schema)];
const USAGE_QUERY: [Query; 1] = [query("usage", flag_schema)];
const FORCE_QUERY: [Query; 1] = [query("force", flag_schema)];
const VOLUME_TYPE_QUERY: [Query; 1] = [query("vol_type_id", schemas::uuid)];
const SERVICE_QUERY: [Query; 2] = [query("host", filter_text), query("binary", filter_text)];
const POOL_QUERY: [Query; 2] = [query("detail", flag_schema), query("name", filter_text)];
const RESOURCE_FILTER_QUERY: [Query; 1] = [query("resource", filter_text)];
const HOST_QUERY: [Query; 1] = [query("zone", filter_text)];
const TRANSFER_QUERY: [Query; 1] = [PAGING[7]];
const GROUP_TYPE_QUERY: [Query; 1] = [query(
    "is_public",
    || json!({"type": "string", "enum": ["true", "false", "True", "False", "1", "0", "None", "none"]}),
)];
const GROUP_QUERY: [Query; 7] = [
    PAGING[0],
    PAGING[1],
    PAGING[2],
    query(
        "sort",
        || json!({"type": "string", "pattern": "^(created_at|name|status|id)(:(asc|desc))?(,(created_at|name|status|id)(:(asc|desc))?)*$"}),
    ),
    query("sort_key", || json!({"enum": ["created_at", "name", "status", "id"]})),
    PAGING[5],
    PAGING[7],
];
const GROUP_DETAIL_QUERY: [Query; 8] = [
    GROUP_QUERY[0],
    GROUP_QUERY[1],
    GROUP_QUERY[2],
    GROUP_QUERY[3],
    GROUP_QUERY[4],
    GROUP_QUERY[5],
    GROUP_QUERY[6],
    query("list_volume", flag_schema),
];
const GROUP_SNAPSHOT_QUERY: [Query; 9] = [
    GROUP_QUERY[0],
    GROUP_QUERY[1],
    GROUP_QUERY[2],
    GROUP_QUERY[3],
    GROUP_QUERY[4],
    GROUP_QUERY[5],
    GROUP_QUERY[6],
    query("status", || json!({"enum": ["creating", "available", "deleting", "error", "error_deleting"]})),
    query("group_id", || json!({"type": "string", "format": "uuid"})),
];
const LIST_VOLUME_QUERY: [Query; 1] = [query("list_volume", flag_schema)];
const MANAGEABLE_QUERY: [Query; 7] = [
    query("host", filter_text),
    PAGING[0],
    query("marker", filter_text),
    PAGING[2],
    query(
        "sort",
        || json!({"type": "string", "pattern": "^(reference|size)(:(asc|desc))?(,(reference|size)(:(asc|desc))?)*$"}),
    ),
    query("sort_key", || json!({"enum": ["reference", "size"]})),
    PAGING[5],
];
/// The keys a message listing sorts by (the scheduler's `messages.rs` has the same list).
const MESSAGE_SORT_KEYS: [&str; 8] =
    ["created_at", "expires_at", "id", "event_id", "resource_type", "resource_uuid", "message_level", "request_id"];
const MESSAGE_SORT_PATTERN: &str = "^(created_at|expires_at|id|event_id|resource_type|resource_uuid|message_level|request_id)(:(asc|desc))?(,(created_at|expires_at|id|event_id|resource_type|resource_uuid|message_level|request_id)(:(asc|desc))?)*$";
const MESSAGE_QUERY: [Query; 11] = [
    PAGING[0],
    PAGING[1],
    PAGING[2],
    query("sort", || json!({"type": "string", "pattern": MESSAGE_SORT_PATTERN})),
    query("sort_key", || json!({"enum": MESSAGE_SORT_KEYS})),
    PAGING[5],
    query("resource_type", || json!({"enum": messages::RESOURCE_TYPES})),
    query("resource_uuid", schemas::uuid),
    query("event_id", filter_text),
    query("request_id", filter_text),
    query("message_level", filter_text),
];

/// Every operation of the REST surface, in the order the document lists them.
pub fn table() -> Vec<Route> {
    vec![
        // Volumes.
        Route::get("/volumes", volumes::list_summary, "List volumes (id, name, links)")
            .query(&VOLUME_QUERY)
            .returns(200, schemas::volume_summaries),
        Route::post("/volumes", volumes::create, "Create a volume: empty, from a snapshot, a volume or a backup (3.47)")
            .body(schemas::volume_create)
            .returns(202, schemas::volume_reply)
            .creates("volume_id", "/volume/id"),
        Route::get("/volumes/detail", volumes::list_detail, "List volumes with details")
            .query(&VOLUME_QUERY)
            .returns(200, schemas::volumes),
        Route::get("/volumes/summary", volumes::summary, "Count and total size of volumes")
            .since(12)
            .query(&VOLUME_QUERY)
            .returns(200, schemas::volume_summary_totals),
        Route::get("/volumes/{volume_id}", volumes::show, "Show a volume").returns(200, schemas::volume_reply),
        Route::put("/volumes/{volume_id}", volumes::update, "Update a volume's name, description or metadata")
            .body(schemas::volume_update)
            .returns(200, schemas::volume_reply),
        Route::delete("/volumes/{volume_id}", volumes::delete, "Delete a volume (cascade; force from 3.23)")
            .query(&DELETE_VOLUME_QUERY)
            .empty(202),
        Route::post(
            "/volumes/{volume_id}/action",
            volumes::action,
            "Run one volume action; os-initialize_connection answers 200 with connection_info, os-set_bootable 200, the others 202",
        )
        .body(schemas::volume_action)
        .empty(202)
        .also(200, "os-initialize_connection: {\"connection_info\": {...}}; os-set_bootable: no body"),
        Route::get("/volumes/{volume_id}/metadata", volumes::metadata_show, "Show a volume's metadata")
            .returns(200, schemas::metadata_reply),
        Route::post("/volumes/{volume_id}/metadata", volumes::metadata_merge, "Add or change metadata items")
            .body(schemas::metadata)
            .returns(200, schemas::metadata_reply),
        Route::put("/volumes/{volume_id}/metadata", volumes::metadata_replace, "Replace all metadata")
            .body(schemas::metadata)
            .returns(200, schemas::metadata_reply),
        Route::get("/volumes/{volume_id}/metadata/{key}", volumes::metadata_item, "Show one metadata item")
            .returns(200, schemas::meta_item),
        Route::put("/volumes/{volume_id}/metadata/{key}", volumes::metadata_item_set, "Set one metadata item")
            .body(schemas::meta_item)
            .returns(200, schemas::meta_item),
        Route::delete("/volumes/{volume_id}/metadata/{key}", volumes::metadata_item_delete, "Delete one metadata item")
            .empty(200),
        // Snapshots.
        Route::get("/snapshots", snapshots::list, "List snapshots")
            .query(&SNAPSHOT_QUERY)
            .returns(200, schemas::snapshots),
        Route::post("/snapshots", snapshots::create, "Create a snapshot of a volume")
            .body(schemas::snapshot_create)
            .consumes("volume_id", &["snapshot", "volume_id"])
            .returns(202, schemas::snapshot_reply)
            .creates("snapshot_id", "/snapshot/id"),
        Route::get("/snapshots/detail", snapshots::list_detail, "List snapshots with details")
            .query(&SNAPSHOT_QUERY)
            .returns(200, schemas::snapshots),
        Route::get("/snapshots/{snapshot_id}", snapshots::show, "Show a snapshot").returns(200, schemas::snapshot_reply),
        Route::put("/snapshots/{snapshot_id}", snapshots::update, "Update a snapshot's name or description")
            .body(schemas::snapshot_update)
            .returns(200, schemas::snapshot_reply),
        Route::delete("/snapshots/{snapshot_id}", snapshots::delete, "Delete a snapshot").empty(202),
        Route::post("/snapshots/{snapshot_id}/action", snapshots::action, "os-reset_status, os-force_delete (admin)")
            .body(schemas::snapshot_action)
            .empty(202),
        Route::get("/snapshots/{snapshot_id}/metadata", snapshots::metadata_show, "Show a snapshot's metadata")
            .returns(200, schemas::metadata_reply),
        Route::post("/snapshots/{snapshot_id}/metadata", snapshots::metadata_merge, "Add or change snapshot metadata")
            .body(schemas::metadata)
            .returns(200, schemas::metadata_reply),
        Route::put("/snapshots/{snapshot_id}/metadata", snapshots::metadata_replace, "Replace all snapshot metadata")
            .body(schemas::metadata)
            .returns(200, schemas::metadata_reply),
        Route::get("/snapshots/{snapshot_id}/metadata/{key}", snapshots::metadata_item, "Show one snapshot metadata item")
            .returns(200, schemas::meta_item),
        Route::put("/snapshots/{snapshot_id}/metadata/{key}", snapshots::metadata_item_set, "Set one snapshot metadata item")
            .body(schemas::meta_item)
            .returns(200, schemas::meta_item),
        Route::delete(
            "/snapshots/{snapshot_id}/metadata/{key}",
            snapshots::metadata_item_delete,
            "Delete one snapshot metadata item",
        )
        .empty(200),
        // Volume types.
        Route::get("/types", volume_types::list, "List volume types").query(&TYPE_QUERY).returns(200, schemas::volume_types),
        Route::post("/types", volume_types::create, "Create a volume type (admin)")
            .body(schemas::volume_type_create)
            .returns(200, schemas::volume_type_reply)
            .creates("type_id", "/volume_type/id"),
        Route::get("/types/default", volume_types::show_default, "Show the default volume type")
            .returns(200, schemas::volume_type_reply),
        Route::get("/types/{type_id}", volume_types::show, "Show a volume type").returns(200, schemas::volume_type_reply),
        Route::put("/types/{type_id}", volume_types::update, "Update a volume type (admin)")
            .body(schemas::volume_type_update)
            .returns(200, schemas::volume_type_reply),
        Route::delete("/types/{type_id}", volume_types::delete, "Delete a volume type (admin)").empty(202),
        Route::get("/types/{type_id}/extra_specs", volume_types::extra_specs, "Show a volume type's extra specs")
            .returns(200, schemas::extra_specs_reply),
        Route::post("/types/{type_id}/extra_specs", volume_types::set_extra_specs, "Set extra specs (admin)")
            .body(schemas::extra_specs)
            .returns(200, schemas::extra_specs_reply),
        Route::get("/types/{type_id}/extra_specs/{key}", volume_types::extra_spec, "Show one extra spec")
            .returns(200, schemas::extra_spec_reply),
        Route::put("/types/{type_id}/extra_specs/{key}", volume_types::set_extra_spec, "Set one extra spec (admin)")
            .body(schemas::extra_spec)
            .returns(200, schemas::extra_spec_reply),
        Route::delete("/types/{type_id}/extra_specs/{key}", volume_types::unset_extra_spec, "Unset one extra spec (admin)")
            .empty(202),
        Route::post("/types/{type_id}/action", volume_types::action, "addProjectAccess, removeProjectAccess (admin)")
            .body(schemas::volume_type_action)
            .empty(202),
        Route::get("/types/{type_id}/os-volume-type-access", volume_types::access_list, "List the projects of a private type")
            .returns(200, schemas::volume_type_access),
        // QoS specs (admin).
        Route::get("/qos-specs", qos::list, "List QoS specs (admin)").returns(200, schemas::qos_list),
        Route::post("/qos-specs", qos::create, "Create QoS specs (admin)")
            .body(schemas::qos_create)
            .returns(200, schemas::qos_reply)
            .creates("qos_id", "/qos_specs/id"),
        Route::get("/qos-specs/{qos_id}", qos::show, "Show QoS specs (admin)").returns(200, schemas::qos_reply),
        Route::put("/qos-specs/{qos_id}", qos::update, "Set QoS spec keys or the consumer (admin)")
            .body(schemas::qos_update)
            .returns(200, schemas::qos_specs_reply),
        Route::delete("/qos-specs/{qos_id}", qos::delete, "Delete QoS specs; force=true disassociates first (admin)")
            .query(&FORCE_QUERY)
            .empty(202),
        Route::put("/qos-specs/{qos_id}/delete_keys", qos::delete_keys, "Delete QoS spec keys (admin)")
            .body(schemas::qos_keys)
            .empty(202),
        Route::get("/qos-specs/{qos_id}/associate", qos::associate, "Associate with the volume type vol_type_id (admin)")
            .query(&VOLUME_TYPE_QUERY)
            .empty(202),
        Route::get(
            "/qos-specs/{qos_id}/disassociate",
            qos::disassociate,
            "Disassociate from the volume type vol_type_id (admin)",
        )
        .query(&VOLUME_TYPE_QUERY)
        .empty(202),
        Route::get("/qos-specs/{qos_id}/disassociate_all", qos::disassociate_all, "Disassociate from every type (admin)")
            .empty(202),
        Route::get("/qos-specs/{qos_id}/associations", qos::associations, "List associated volume types (admin)")
            .returns(200, schemas::qos_associations),
        // Attachments (3.27+).
        Route::get("/attachments", attachments::list, "List attachments")
            .since(27)
            .query(&ATTACHMENT_QUERY)
            .returns(200, schemas::attachment_summaries),
        Route::post(
            "/attachments",
            attachments::create,
            "Create an attachment; without a connector it reserves the volume, with one it exports it",
        )
        .since(27)
        .body(schemas::attachment_create)
        .consumes("volume_id", &["attachment", "volume_uuid"])
        .returns(200, schemas::attachment_reply)
        .creates("attachment_id", "/attachment/id"),
        Route::get("/attachments/detail", attachments::list_detail, "List attachments with details")
            .since(27)
            .query(&ATTACHMENT_QUERY)
            .returns(200, schemas::attachments),
        Route::get("/attachments/{attachment_id}", attachments::show, "Show an attachment")
            .since(27)
            .returns(200, schemas::attachment_reply),
        Route::put(
            "/attachments/{attachment_id}",
            attachments::update,
            "Connect a reserved attachment: export the volume to the connector's host",
        )
        .since(27)
        .body(schemas::attachment_update)
        .returns(200, schemas::attachment_reply),
        Route::delete(
            "/attachments/{attachment_id}",
            attachments::delete,
            "Delete an attachment; answers the volume's remaining ones",
        )
        .since(27)
        .returns(200, schemas::attachments),
        Route::post("/attachments/{attachment_id}/action", attachments::action, "os-complete: the host attached it")
            .since(44)
            .body(schemas::attachment_action)
            .empty(204),
        // Backups.
        Route::get("/backups", backups::list, "List backups (id, name, links)")
            .query(&BACKUP_QUERY)
            .returns(200, schemas::backup_summaries),
        Route::post("/backups", backups::create, "Back a volume up (or its snapshot); incremental to the latest backup")
            .body(schemas::backup_create)
            .consumes("volume_id", &["backup", "volume_id"])
            .returns(202, schemas::backup_summary_reply)
            .creates("backup_id", "/backup/id"),
        Route::get("/backups/detail", backups::list_detail, "List backups with details")
            .query(&BACKUP_QUERY)
            .returns(200, schemas::backups),
        Route::post("/backups/import_record", backups::import_record, "Import a backup record exported elsewhere (admin)")
            .body(schemas::backup_record)
            .returns(201, schemas::backup_summary_reply),
        Route::get("/backups/{backup_id}", backups::show, "Show a backup").returns(200, schemas::backup_reply),
        Route::put("/backups/{backup_id}", backups::update, "Update a backup's name, description or metadata")
            .since(9)
            .body(schemas::backup_update)
            .returns(200, schemas::backup_reply),
        Route::delete("/backups/{backup_id}", backups::delete, "Delete a backup").empty(202),
        Route::post("/backups/{backup_id}/restore", backups::restore, "Restore onto a volume, or a new one")
            .body(schemas::backup_restore)
            .returns(202, schemas::backup_restore_reply),
        Route::get("/backups/{backup_id}/export_record", backups::export_record, "Export a backup's record (admin)")
            .returns(200, schemas::backup_record),
        Route::post("/backups/{backup_id}/action", backups::action, "os-reset_status, os-force_delete (admin)")
            .body(schemas::backup_action)
            .empty(202),
        // Quotas, limits and the deployment.
        Route::get("/os-quota-sets/{target}", quotas::quota_show, "Show a project's quotas; usage=true adds use")
            .query(&USAGE_QUERY)
            .returns(200, schemas::quota_set),
        Route::put("/os-quota-sets/{target}", quotas::quota_update, "Update a project's quotas (admin)")
            .body(schemas::quota_update)
            .returns(200, schemas::quota_set_updated),
        Route::delete("/os-quota-sets/{target}", quotas::quota_reset, "Reset a project's quotas to the defaults (admin)")
            .empty(200),
        Route::get("/os-quota-sets/{target}/defaults", quotas::quota_defaults, "Show the default quotas")
            .returns(200, schemas::quota_set),
        Route::get("/limits", quotas::limits, "The project's absolute limits and use").returns(200, schemas::limits),
        Route::get("/os-availability-zone", deployment::availability_zones, "List availability zones")
            .returns(200, schemas::availability_zones),
        Route::get("/os-services", deployment::services, "List services (admin)")
            .query(&SERVICE_QUERY)
            .returns(200, schemas::services),
        Route::put(
            "/os-services/{service_action}",
            deployment::update_service,
            "Enable or disable a service: enable, disable, disable-log-reason (admin)",
        )
        .body(schemas::service_update)
        .returns(200, schemas::service_updated),
        Route::get("/scheduler-stats/get_pools", deployment::pools, "List pools; detail=true adds capabilities (admin)")
            .query(&POOL_QUERY)
            .returns(200, schemas::pools),
        // Group types (3.11) and groups (3.13).
        Route::get("/group_types", groups::type_list, "List group types").since(11).query(&GROUP_TYPE_QUERY).returns(200, schemas::group_types),
        Route::post("/group_types", groups::type_create, "Create a group type (admin)")
            .since(11)
            .body(schemas::group_type_create)
            .returns(202, schemas::group_type_reply)
            .creates("group_type_id", "/group_type/id"),
        Route::get("/group_types/default", groups::type_show_default, "Show the default group type")
            .since(11)
            .returns(200, schemas::group_type_reply),
        Route::get("/group_types/{group_type_id}", groups::type_show, "Show a group type")
            .since(11)
            .returns(200, schemas::group_type_reply),
        Route::put("/group_types/{group_type_id}", groups::type_update, "Update a group type (admin)")
            .since(11)
            .body(schemas::group_type_update)
            .returns(200, schemas::group_type_reply),
        Route::delete("/group_types/{group_type_id}", groups::type_delete, "Delete a group type (admin)").since(11).empty(202),
        Route::get("/group_types/{group_type_id}/group_specs", groups::specs, "Show a group type's group specs (admin)")
            .since(11)
            .returns(200, schemas::group_specs_reply),
        Route::post("/group_types/{group_type_id}/group_specs", groups::set_specs, "Set group specs (admin)")
            .since(11)
            .body(schemas::group_specs)
            .returns(202, schemas::group_specs_reply),
        Route::get("/group_types/{group_type_id}/group_specs/{key}", groups::spec, "Show one group spec (admin)")
            .since(11)
            .returns(200, schemas::extra_spec_reply),
        Route::put("/group_types/{group_type_id}/group_specs/{key}", groups::set_spec, "Set one group spec (admin)")
            .since(11)
            .body(schemas::extra_spec)
            .returns(202, schemas::extra_spec_reply),
        Route::delete("/group_types/{group_type_id}/group_specs/{key}", groups::unset_spec, "Unset one group spec (admin)")
            .since(11)
            .empty(202),
        Route::get("/groups", groups::list, "List groups (id, name)").since(13).query(&GROUP_QUERY).returns(200, schemas::groups),
        Route::post("/groups", groups::create, "Create a group on a pool that satisfies each of its volume types")
            .since(13)
            .body(schemas::group_create)
            .returns(202, schemas::group_summary_reply)
            .creates("group_id", "/group/id"),
        Route::get("/groups/detail", groups::list_detail, "List groups with details")
            .since(13)
            .query(&GROUP_DETAIL_QUERY)
            .returns(200, schemas::groups_detail),
        Route::get("/groups/{group_id}", groups::show, "Show a group; list_volume=true adds its volumes (3.25)")
            .since(13)
            .query(&LIST_VOLUME_QUERY)
            .returns(200, schemas::group_reply),
        Route::put("/groups/{group_id}", groups::update, "Rename a group, add volumes to it or remove them")
            .since(13)
            .body(schemas::group_update)
            .empty(202),
        Route::post("/groups/{group_id}/action", groups::action, "delete (with its volumes: delete-volumes), reset_status (admin, 3.20)")
            .since(13)
            .body(schemas::group_action)
            .empty(202),
        Route::post("/groups/action", groups::collection_action, "create-from-src: a group from a group snapshot or another group (3.14)")
            .since(14)
            .body(schemas::groups_action)
            .returns(202, schemas::group_summary_reply),
        Route::get("/group_snapshots", group_snapshots::list, "List group snapshots (id, name, group type)")
            .since(14)
            .query(&GROUP_SNAPSHOT_QUERY)
            .returns(200, schemas::group_snapshots),
        Route::post("/group_snapshots", group_snapshots::create, "Snapshot every volume of a group at one point in time")
            .since(14)
            .body(schemas::group_snapshot_create)
            .returns(202, schemas::group_snapshot_summary_reply)
            .creates("group_snapshot_id", "/group_snapshot/id"),
        Route::get("/group_snapshots/detail", group_snapshots::list_detail, "List group snapshots with details")
            .since(14)
            .query(&GROUP_SNAPSHOT_QUERY)
            .returns(200, schemas::group_snapshots_detail),
        Route::get("/group_snapshots/{group_snapshot_id}", group_snapshots::show, "Show a group snapshot")
            .since(14)
            .returns(200, schemas::group_snapshot_reply),
        Route::delete("/group_snapshots/{group_snapshot_id}", group_snapshots::delete, "Delete a group snapshot with its snapshots")
            .since(14)
            .empty(202),
        Route::post("/group_snapshots/{group_snapshot_id}/action", group_snapshots::action, "reset_status (admin, 3.19)")
            .since(19)
            .body(schemas::group_snapshot_action)
            .empty(202),
        // Manage existing (admin).
        Route::post("/os-volume-manage", manage::manage, "Adopt an object a pool holds as a volume (admin)")
            .body(schemas::volume_manage)
            .returns(202, schemas::volume_reply),
        Route::get("/os-volume-manage", manage::list, "List what a host could adopt (admin; legacy path)")
            .query(&MANAGEABLE_QUERY)
            .returns(200, schemas::manageable_volumes),
        Route::get("/os-volume-manage/detail", manage::list_detail, "The same, with details (admin; legacy path)")
            .query(&MANAGEABLE_QUERY)
            .returns(200, schemas::manageable_volumes_detail),
        Route::post("/manageable_volumes", manage::manage, "Adopt an object a pool holds as a volume (admin)")
            .since(8)
            .body(schemas::volume_manage)
            .returns(202, schemas::volume_reply),
        Route::post("/os-snapshot-manage", manage::manage_snapshot, "Adopt a snapshot object of a volume (admin)")
            .body(schemas::snapshot_manage)
            .returns(202, schemas::snapshot_reply),
        Route::get("/os-snapshot-manage", manage::snapshots_list, "List snapshot objects a host could adopt (admin; legacy path)")
            .query(&MANAGEABLE_QUERY)
            .returns(200, schemas::manageable_snapshots),
        Route::get("/os-snapshot-manage/detail", manage::snapshots_list_detail, "The same, with details (admin; legacy path)")
            .query(&MANAGEABLE_QUERY)
            .returns(200, schemas::manageable_snapshots_detail),
        Route::post("/manageable_snapshots", manage::manage_snapshot, "Adopt a snapshot object of a volume (admin)")
            .since(8)
            .body(schemas::snapshot_manage)
            .returns(202, schemas::snapshot_reply),
        Route::get("/manageable_snapshots", manage::snapshots_list, "List snapshot objects a host could adopt (admin)")
            .since(8)
            .query(&MANAGEABLE_QUERY)
            .returns(200, schemas::manageable_snapshots),
        Route::get("/manageable_snapshots/detail", manage::snapshots_list_detail, "The same, with details (admin)")
            .since(8)
            .query(&MANAGEABLE_QUERY)
            .returns(200, schemas::manageable_snapshots_detail),
        Route::get("/manageable_volumes", manage::list, "List what a host could adopt (admin)")
            .since(8)
            .query(&MANAGEABLE_QUERY)
            .returns(200, schemas::manageable_volumes),
        Route::get("/manageable_volumes/detail", manage::list_detail, "The same, with details (admin)")
            .since(8)
            .query(&MANAGEABLE_QUERY)
            .returns(200, schemas::manageable_volumes_detail),
        // User messages (3.3+).
        Route::get("/messages", messages::list, "List user messages: why operations failed (filters from 3.5)")
            .since(3)
            .query(&MESSAGE_QUERY)
            .returns(200, schemas::messages),
        Route::get("/messages/{message_id}", messages::show, "Show a user message")
            .since(3)
            .returns(200, schemas::message_reply),
        Route::delete("/messages/{message_id}", messages::delete, "Delete a user message").since(3).empty(204),
    ]
    .into_iter()
    // Volume transfers: Cinder's legacy path, and from 3.55 its own; one transfer, two names.
    .chain(transfer_routes(&LEGACY_TRANSFER_PATHS, 0))
    .chain(transfer_routes(&TRANSFER_PATHS, 55))
    .chain([
        Route::get("/default-types", default_types::list, "List the projects' own default volume types (admin)")
            .since(62)
            .returns(200, schemas::default_types),
        Route::get("/default-types/{target}", default_types::show, "Show a project's own default volume type (admin)")
            .since(62)
            .returns(200, schemas::default_type),
        Route::put("/default-types/{target}", default_types::set, "Set a project's own default volume type (admin)")
            .since(62)
            .body(schemas::default_type_set)
            .returns(200, schemas::default_type),
        Route::delete("/default-types/{target}", default_types::unset, "Unset a project's own default volume type (admin)")
            .since(62)
            .empty(204),
        Route::get("/os-hosts", deployment::hosts, "List the hosts of the services (admin)")
            .query(&HOST_QUERY)
            .returns(200, schemas::hosts),
        Route::get("/capabilities/{host}", deployment::capabilities, "Show a backend's capabilities (admin)")
            .returns(200, schemas::capabilities),
        Route::get("/extensions", deployment::extensions, "List API extensions").returns(200, schemas::extensions),
        Route::get("/resource_filters", resource_filters::list, "List the filters each listing accepts")
            .since(33)
            .query(&RESOURCE_FILTER_QUERY)
            .returns(200, schemas::resource_filters),
    ])
    .collect()
}

/// The paths of one name of the transfer resource: the collection, its details, one transfer, and
/// its accept action.
struct TransferPaths {
    collection: &'static str,
    detail: &'static str,
    member: &'static str,
    accept: &'static str,
}

const LEGACY_TRANSFER_PATHS: TransferPaths = TransferPaths {
    collection: "/os-volume-transfer",
    detail: "/os-volume-transfer/detail",
    member: "/os-volume-transfer/{transfer_id}",
    accept: "/os-volume-transfer/{transfer_id}/accept",
};

const TRANSFER_PATHS: TransferPaths = TransferPaths {
    collection: "/volume-transfers",
    detail: "/volume-transfers/detail",
    member: "/volume-transfers/{transfer_id}",
    accept: "/volume-transfers/{transfer_id}/accept",
};

/// The transfer operations under one of its names, from microversion 3.`since`. The legacy name's
/// create is the one the document links to the operations on a transfer.
fn transfer_routes(paths: &TransferPaths, since: u16) -> [Route; 6] {
    let create =
        Route::post(paths.collection, transfers::create, "Offer a volume (and its snapshots) to another project")
            .since(since)
            .body(schemas::transfer_create)
            .consumes("volume_id", &["transfer", "volume_id"])
            .returns(202, schemas::transfer_reply);
    [
        if since == 0 { create.creates("transfer_id", "/transfer/id") } else { create },
        Route::get(paths.collection, transfers::list, "List the project's transfers")
            .since(since)
            .query(&TRANSFER_QUERY)
            .returns(200, schemas::transfers),
        Route::get(paths.detail, transfers::list_detail, "List the project's transfers with details")
            .since(since)
            .query(&TRANSFER_QUERY)
            .returns(200, schemas::transfers_detail),
        Route::get(paths.member, transfers::show, "Show a transfer").since(since).returns(200, schemas::transfer_reply),
        Route::delete(paths.member, transfers::delete, "Withdraw a transfer").since(since).empty(202),
        Route::post(paths.accept, transfers::accept, "Accept a transfer with its key")
            .since(since)
            .body(schemas::transfer_accept)
            .returns(202, schemas::transfer_summary_reply),
    ]
}

/// The router of every `/v3` resource, from the table. An operation called below the microversion
/// it appeared at answers 404, as Cinder's do, before its handler runs.
pub fn resources() -> Router<GatewayState> {
    table().into_iter().fold(Router::new(), |router, route| {
        let handler = match route.min_version {
            0 => route.handler,
            minor => {
                let what = format!("{} {}", route.method, route.path);
                route.handler.layer(axum::middleware::from_fn(move |request: Request, next: Next| {
                    let version = request.extensions().get::<ApiVersion>().copied().unwrap_or(ApiVersion::MIN);
                    let needed = version_needed(version, minor, &what);
                    async move {
                        match needed {
                            Ok(()) => next.run(request).await,
                            Err(fault) => fault.into_response(),
                        }
                    }
                }))
            }
        };
        router.route(route.path, handler)
    })
}

/// Cinder's boolean words in query strings (python-cinderclient sends `True`, the SDK `true`).
const FLAG_WORDS: [&str; 18] = [
    "true", "false", "True", "False", "TRUE", "FALSE", "1", "0", "yes", "no", "Yes", "No", "y", "n", "on", "off", "t",
    "f",
];
/// The keys listings sort by (the scheduler checks them; `listing.rs` there has the same list).
const SORT_KEYS: [&str; 7] = ["created_at", "updated_at", "name", "display_name", "size", "status", "id"];
const SORT_PATTERN: &str = "^(created_at|updated_at|name|display_name|size|status|id)(:(asc|desc))?(,(created_at|updated_at|name|display_name|size|status|id)(:(asc|desc))?)*$";

/// A UUID query parameter (a filter by id): absent is `None`.
pub fn query_uuid(rest: &Rest, name: &str) -> Result<Option<String>, Fault> {
    let Some(text) = rest.query(name) else { return Ok(None) };
    uuid::Uuid::try_parse(text)
        .map_err(|_| Fault::bad_request(format!("{name} {} is not a UUID", basalt::error::excerpt(text))))?;
    Ok(Some(text.to_owned()))
}

/// A boolean query parameter: absent is `None`; anything but Cinder's boolean words is refused.
pub fn query_flag(rest: &Rest, name: &str) -> Result<Option<bool>, Fault> {
    let Some(text) = rest.query(name) else { return Ok(None) };
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" | "t" => Ok(Some(true)),
        "false" | "0" | "no" | "n" | "off" | "f" => Ok(Some(false)),
        _ => Err(Fault::bad_request(format!("{name} must be true or false, not {}", basalt::error::excerpt(text)))),
    }
}

/// Query keys every listing understands.
const PAGING_KEYS: &[&str] =
    &["limit", "marker", "offset", "sort", "sort_key", "sort_dir", "with_count", "all_tenants"];

/// Cinder's paging and sorting from the query string; the marker is an id.
pub fn paging(rest: &Rest) -> Result<(PageRequest, Vec<SortKey>), Fault> {
    let marker = query_uuid(rest, "marker")?.unwrap_or_default();
    page_and_sort(rest, marker)
}

/// The same for a listing of objects named rather than identified: the marker is a name.
pub fn paging_by_name(rest: &Rest) -> Result<(PageRequest, Vec<SortKey>), Fault> {
    page_and_sort(rest, rest.query("marker").unwrap_or_default().to_owned())
}

fn page_and_sort(rest: &Rest, marker: String) -> Result<(PageRequest, Vec<SortKey>), Fault> {
    let number = |name: &str| -> Result<u32, Fault> {
        match rest.query(name) {
            None => Ok(0),
            Some(text) => text.parse::<u32>().map_err(|_| {
                Fault::bad_request(format!("{name} must be a whole number, not {}", basalt::error::excerpt(text)))
            }),
        }
    };
    let page = PageRequest { limit: number("limit")?, marker, offset: number("offset")? };
    let direction = descending(rest.query("sort_dir").unwrap_or("desc"))?;
    let mut sort = Vec::new();
    if let Some(keys) = rest.query("sort") {
        for item in keys.split(',') {
            let (key, direction) = item.split_once(':').unwrap_or((item, "desc"));
            sort.push(SortKey { key: key.to_owned(), descending: descending(direction)? });
        }
    } else if let Some(key) = rest.query("sort_key") {
        sort.push(SortKey { key: key.to_owned(), descending: direction });
    }
    Ok((page, sort))
}

fn descending(direction: &str) -> Result<bool, Fault> {
    match direction {
        "desc" => Ok(true),
        "asc" => Ok(false),
        other => Err(Fault::bad_request(format!(
            "sort direction {} is invalid: use asc or desc",
            basalt::error::excerpt(other)
        ))),
    }
}

/// `all_tenants` lists every project for admins; Cinder ignores it for everyone else.
pub fn all_tenants(rest: &Rest) -> Result<bool, Fault> {
    Ok(rest.context.is_admin && query_flag(rest, "all_tenants")?.unwrap_or(false))
}

pub fn with_count(rest: &Rest) -> Result<bool, Fault> {
    Ok(rest.version.at_least(45) && query_flag(rest, "with_count")?.unwrap_or(false))
}

/// From 3.31 a filter the resource does not support is an error for non-admins.
pub fn check_filters(rest: &Rest, resource: &str) -> Result<(), Fault> {
    let supported = resource_filters::accepted(resource);
    if !rest.version.at_least(31) || rest.context.is_admin {
        return Ok(());
    }
    let unknown: Vec<&str> = rest
        .query
        .iter()
        .map(|(key, _)| key.as_str())
        .filter(|key| !PAGING_KEYS.contains(key) && !supported.contains(key))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Fault::bad_request(format!(
        "invalid filters {} are found in query options; supported: {}",
        unknown.join(", "),
        supported.join(", ")
    )))
}

/// The `metadata` filter, as Cinder clients send it: a JSON object of strings, or Python's repr of
/// a dict (`{'k': 'v'}`, python-cinderclient's form), whose strings may hold any quote.
pub fn metadata_filter(rest: &Rest) -> Result<HashMap<String, String>, Fault> {
    let Some(text) = rest.query("metadata") else { return Ok(HashMap::new()) };
    serde_json::from_str(text).ok().or_else(|| python_dict(text)).ok_or_else(|| {
        Fault::bad_request(format!(
            "the metadata filter {} is not an object of strings: send {{\"key\": \"value\"}}",
            basalt::error::excerpt(text)
        ))
    })
}

/// A Python dict literal of string keys and values, as `repr` writes it.
fn python_dict(text: &str) -> Option<HashMap<String, String>> {
    let mut chars = text.trim().chars().peekable();
    let skip_spaces = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
    };
    let string = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<String> {
        let quote = chars.next().filter(|c| matches!(c, '\'' | '"'))?;
        let mut value = String::new();
        loop {
            match chars.next()? {
                c if c == quote => return Some(value),
                '\\' => value.push(match chars.next()? {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    'x' => char::from_u32(u32::from_str_radix(&chars.by_ref().take(2).collect::<String>(), 16).ok()?)?,
                    'u' => char::from_u32(u32::from_str_radix(&chars.by_ref().take(4).collect::<String>(), 16).ok()?)?,
                    other => other,
                }),
                c => value.push(c),
            }
        }
    };
    let mut map = HashMap::new();
    (chars.next()? == '{').then_some(())?;
    skip_spaces(&mut chars);
    if chars.next_if_eq(&'}').is_some() {
        return chars.next().is_none().then_some(map);
    }
    loop {
        skip_spaces(&mut chars);
        let key = string(&mut chars)?;
        skip_spaces(&mut chars);
        (chars.next()? == ':').then_some(())?;
        skip_spaces(&mut chars);
        let value = string(&mut chars)?;
        map.insert(key, value);
        skip_spaces(&mut chars);
        match chars.next()? {
            ',' => continue,
            '}' => return chars.next().is_none().then_some(map),
            _ => return None,
        }
    }
}

/// `{"<key>": "<value>"}` of one of a type's specs (extra specs, group specs), or a 404 saying
/// which `what` is missing.
pub fn spec_reply(specs: &HashMap<String, String>, key: &str, what: &str) -> Result<axum::response::Response, Fault> {
    let value =
        specs.get(key).ok_or_else(|| Fault::not_found(format!("{what} {} not found", basalt::error::excerpt(key))))?;
    Ok(axum::Json(json!({ key: value })).into_response())
}

/// The value in `{"<key>": "<value>"}`, the body that sets one spec.
pub fn spec_value(body: &Value, key: &str) -> Result<String, Fault> {
    crate::body::only(body, key)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Fault::bad_request(format!("the body must be {{\"{key}\": \"<value>\"}}")))
}

/// `<collection>_links` with the next page, when there is one.
pub fn next_link(rest: &Rest, path: &str, next_marker: &str) -> Option<Value> {
    if next_marker.is_empty() {
        return None;
    }
    let mut query: Vec<String> =
        rest.query.iter().filter(|(key, _)| key != "marker").map(|(key, value)| format!("{key}={value}")).collect();
    query.push(format!("marker={next_marker}"));
    Some(json!([{"rel": "next", "href": format!("{}/{path}?{}", rest.base, query.join("&"))}]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_dicts_parse_with_any_quote() {
        let parsed = python_dict(r#"{'k': "it's", 'a\'b': 'x\\y', "u": '\u00e9\x41'}"#).unwrap();
        assert_eq!(parsed["k"], "it's");
        assert_eq!(parsed["a'b"], "x\\y");
        assert_eq!(parsed["u"], "éA");
        assert_eq!(python_dict("{}").unwrap().len(), 0);
        for bad in ["", "{", "{'a'}", "{'a': 1}", "{'a': 'b'} trailing", "['a']", "{'a': 'b',}"] {
            assert!(python_dict(bad).is_none(), "{bad:?}");
        }
    }
}
