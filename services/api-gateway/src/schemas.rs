//! JSON Schemas (OpenAPI 3.1) of the REST surface's bodies: what each operation accepts at the
//! latest microversion (Cinder's strict schemas, 3.53+), and every field a response can carry at
//! any microversion and for any role, so one schema checks them all. `openapi.rs` puts them into
//! the document; the route table in `routes/mod.rs` says which operation uses which.

use serde_json::{Value, json};

/// Names: up to 255 characters, no control characters (`fields.rs` in the scheduler).
const NAME_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// Free text: line breaks and tabs allowed, other control characters not.
const TEXT_PATTERN: &str = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$";
/// Keys of metadata, extra specs and QoS specs, as Cinder's schemas have them.
pub const KEY_PATTERN: &str = "^[a-zA-Z0-9-_:. /]{1,255}$";
/// Keystone's project ids.
pub const PROJECT_PATTERN: &str = "^([0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$";

pub const VOLUME_STATUSES: &[&str] = &[
    "creating",
    "available",
    "reserved",
    "attaching",
    "detaching",
    "in-use",
    "maintenance",
    "deleting",
    "awaiting-transfer",
    "error",
    "error_deleting",
    "backing-up",
    "restoring-backup",
    "error_backing-up",
    "error_restoring",
    "error_extending",
    "downloading",
    "uploading",
    "retyping",
    "extending",
    "reverting",
];
pub const SNAPSHOT_STATUSES: &[&str] =
    &["creating", "available", "deleting", "error", "error_deleting", "updating", "backing-up", "restoring"];
pub const BACKUP_STATUSES: &[&str] = &["creating", "available", "deleting", "error", "error_deleting", "restoring"];
pub const ATTACH_STATUSES: &[&str] =
    &["attached", "attaching", "detached", "reserved", "error_attaching", "error_detaching", "deleted"];

pub fn uuid() -> Value {
    json!({"type": "string", "format": "uuid"})
}

fn nullable(schema: Value) -> Value {
    let mut schema = schema;
    let kind = schema["type"].clone();
    schema["type"] = json!([kind, "null"]);
    schema
}

/// One of `values`, or null (not given).
fn nullable_enum(values: &[&str]) -> Value {
    let mut allowed: Vec<Value> = values.iter().map(|value| json!(value)).collect();
    allowed.push(Value::Null);
    json!({"enum": allowed})
}

pub fn name() -> Value {
    json!({"type": "string", "maxLength": 255, "pattern": NAME_PATTERN})
}

pub fn text() -> Value {
    json!({"type": "string", "maxLength": 255, "pattern": TEXT_PATTERN})
}

pub fn string_map() -> Value {
    json!({
        "type": "object",
        "maxProperties": 128,
        "propertyNames": {"pattern": KEY_PATTERN},
        "additionalProperties": text(),
    })
}

fn string() -> Value {
    json!({"type": "string"})
}

fn integer() -> Value {
    json!({"type": "integer"})
}

fn boolean() -> Value {
    json!({"type": "boolean"})
}

fn null_only() -> Value {
    json!({"type": "null"})
}

/// A whole number of GiB, or a string of digits (Cinder's `^[0-9]+$`).
fn size() -> Value {
    json!({"oneOf": [
        {"type": "integer", "minimum": 1, "maximum": 1_048_576},
        {"type": "string", "pattern": "^[0-9]{1,7}$"},
    ]})
}

/// A boolean, or one of Cinder's boolean strings; null means not given.
fn flag() -> Value {
    json!({"oneOf": [
        {"type": ["boolean", "null"]},
        {"type": "string", "enum": ["true", "false", "True", "False", "TRUE", "FALSE", "1", "0", "yes", "no", "y", "n",
                                    "on", "off", "t", "f", "Yes", "No", "On", "Off", "YES", "NO", "ON", "OFF"]},
    ]})
}

/// A closed object: exactly these properties, `required` among them.
fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// `{"<key>": <schema>}`, nothing else.
fn wrapped(key: &str, schema: Value) -> Value {
    object(json!({ key: schema }), &[key])
}

fn links() -> Value {
    json!({"type": "array", "items": object(json!({"rel": string(), "href": string()}), &["rel", "href"])})
}

fn list_of(key: &str, item: Value, page_links: bool) -> Value {
    let mut properties = json!({ key: {"type": "array", "items": item} });
    if page_links {
        properties[format!("{key}_links")] = links();
        properties["count"] = integer();
    }
    object(properties, &[key])
}

/// A Cinder fault: `{"<faultName>": {"code": <status>, "message": "..."}}`.
pub fn fault() -> Value {
    json!({
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": object(json!({"code": integer(), "message": string()}), &["code", "message"]),
    })
}

// ---- volumes

pub fn volume_create() -> Value {
    let volume = object(
        json!({
            "size": size(),
            "name": nullable(name()),
            "description": nullable(text()),
            "display_name": nullable(string()),
            "display_description": nullable(string()),
            "volume_type": nullable(name()),
            "availability_zone": nullable(name()),
            "metadata": nullable(string_map()),
            "snapshot_id": nullable(uuid()),
            "source_volid": nullable(uuid()),
            "backup_id": nullable(uuid()),
            "imageRef": null_only(),
            "consistencygroup_id": null_only(),
            "group_id": nullable(uuid()),
            "multiattach": {"enum": [false, null, "false", "False", "0", "no", "f"]},
        }),
        &[],
    );
    let mut body = object(
        json!({"volume": volume, "OS-SCH-HNT:scheduler_hints": nullable(json!({"type": "object"}))}),
        &["volume"],
    );
    body["examples"] = json!([{"volume": {"size": 1, "name": "fuzzed", "metadata": {"purpose": "example"}}}]);
    body
}

pub fn volume_update() -> Value {
    wrapped(
        "volume",
        object(
            json!({
                "name": nullable(name()),
                "description": nullable(text()),
                "display_name": nullable(string()),
                "display_description": nullable(string()),
                "metadata": nullable(string_map()),
            }),
            &[],
        ),
    )
}

fn volume_attachment() -> Value {
    object(
        json!({
            "id": uuid(),
            "attachment_id": uuid(),
            "volume_id": uuid(),
            "server_id": nullable(string()),
            "host_name": nullable(string()),
            "device": nullable(string()),
            "attached_at": nullable(string()),
        }),
        &["id", "attachment_id", "volume_id", "server_id", "host_name", "device", "attached_at"],
    )
}

/// Every field a volume shows at any microversion to any caller (`views.rs::volume_detail`).
pub fn volume() -> Value {
    object(
        json!({
            "id": uuid(),
            "status": {"enum": VOLUME_STATUSES},
            "size": integer(),
            "availability_zone": string(),
            "created_at": nullable(string()),
            "updated_at": nullable(string()),
            "attachments": {"type": "array", "items": volume_attachment()},
            "name": string(),
            "description": string(),
            "volume_type": string(),
            "snapshot_id": nullable(uuid()),
            "source_volid": nullable(uuid()),
            "metadata": json!({"type": "object", "additionalProperties": string()}),
            "links": links(),
            "user_id": string(),
            "bootable": {"enum": ["true", "false"]},
            "encrypted": boolean(),
            "replication_status": null_only(),
            "consistencygroup_id": null_only(),
            "multiattach": boolean(),
            "os-vol-tenant-attr:tenant_id": string(),
            "migration_status": nullable(string()),
            "os-vol-host-attr:host": nullable(string()),
            "os-vol-mig-status-attr:migstat": nullable(string()),
            "os-vol-mig-status-attr:name_id": null_only(),
            "group_id": nullable(uuid()),
            "provider_id": null_only(),
            "shared_targets": boolean(),
            "service_uuid": null_only(),
            "cluster_name": null_only(),
            "volume_type_id": string(),
            "consumes_quota": boolean(),
        }),
        &[
            "id",
            "status",
            "size",
            "availability_zone",
            "created_at",
            "updated_at",
            "attachments",
            "name",
            "description",
            "volume_type",
            "snapshot_id",
            "source_volid",
            "metadata",
            "links",
            "user_id",
            "bootable",
            "encrypted",
            "replication_status",
            "consistencygroup_id",
            "multiattach",
        ],
    )
}

pub fn volume_reply() -> Value {
    wrapped("volume", volume())
}

pub fn volume_summary() -> Value {
    object(json!({"id": uuid(), "name": string(), "links": links()}), &["id", "name", "links"])
}

pub fn volume_summaries() -> Value {
    list_of("volumes", volume_summary(), true)
}

pub fn volumes() -> Value {
    list_of("volumes", volume(), true)
}

pub fn volume_summary_totals() -> Value {
    wrapped(
        "volume-summary",
        object(
            json!({
                "total_count": integer(),
                "total_size": integer(),
                "metadata": {"type": "object", "additionalProperties": {"type": "array", "items": string()}},
            }),
            &["total_count", "total_size"],
        ),
    )
}

/// `{"<action>": {...}}`: exactly one of the actions, each with its arguments.
fn actions(actions: &[(&str, Value)]) -> Value {
    let one_of: Vec<Value> = actions.iter().map(|(action, arguments)| wrapped(action, arguments.clone())).collect();
    json!({"oneOf": one_of})
}

/// A host's connector, as os-brick makes it: these keys are read, others (wwpns, nqn, ...) kept
/// out of the way.
fn connector() -> Value {
    json!({
        "type": "object",
        "properties": {
            "initiator": nullable(string()),
            "ip": nullable(string()),
            "host": nullable(string()),
            "platform": nullable(string()),
            "os_type": nullable(string()),
            "multipath": flag(),
            "do_local_attach": flag(),
        },
    })
}

/// Arguments that are ignored: any object, or null.
fn no_arguments() -> Value {
    json!({"type": ["object", "null"]})
}

pub fn volume_action() -> Value {
    let mode = json!({"enum": ["rw", "ro"]});
    actions(&[
        ("os-extend", object(json!({"new_size": size()}), &["new_size"])),
        (
            "os-reset_status",
            object(
                json!({"status": nullable_enum(VOLUME_STATUSES), "attach_status": nullable_enum(ATTACH_STATUSES),
                       "migration_status": nullable(string())}),
                &[],
            ),
        ),
        ("os-force_delete", no_arguments()),
        ("os-unmanage", no_arguments()),
        ("os-set_bootable", object(json!({"bootable": flag()}), &["bootable"])),
        ("os-update_readonly_flag", object(json!({"readonly": flag()}), &["readonly"])),
        ("revert", object(json!({"snapshot_id": uuid()}), &["snapshot_id"])),
        ("os-reserve", no_arguments()),
        ("os-unreserve", no_arguments()),
        ("os-begin_detaching", no_arguments()),
        ("os-roll_detaching", no_arguments()),
        ("os-initialize_connection", object(json!({"connector": connector()}), &["connector"])),
        ("os-terminate_connection", object(json!({"connector": nullable(connector())}), &[])),
        (
            "os-attach",
            object(
                json!({"instance_uuid": nullable(name()), "host_name": nullable(name()),
                       "mountpoint": nullable(name()), "mode": mode}),
                &[],
            ),
        ),
        ("os-detach", object(json!({"attachment_id": nullable(uuid())}), &[])),
        (
            "os-migrate_volume",
            object(
                json!({
                    "host": {"type": "string", "minLength": 1, "maxLength": 255},
                    "force_host_copy": flag(),
                    "lock_volume": flag(),
                }),
                &["host"],
            ),
        ),
        (
            "os-retype",
            object(json!({"new_type": name(), "migration_policy": {"enum": ["never", "on-demand"]}}), &["new_type"]),
        ),
    ])
}

fn connection_info() -> Value {
    object(json!({"driver_volume_type": string(), "data": {"type": "object"}}), &["driver_volume_type", "data"])
}

// ---- metadata (volumes and snapshots)

pub fn metadata() -> Value {
    wrapped("metadata", string_map())
}

pub fn metadata_reply() -> Value {
    wrapped("metadata", json!({"type": "object", "additionalProperties": string()}))
}

pub fn meta_item() -> Value {
    wrapped("meta", json!({"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": text()}))
}

// ---- snapshots

pub fn snapshot_create() -> Value {
    wrapped(
        "snapshot",
        object(
            json!({
                "volume_id": uuid(),
                "name": nullable(name()),
                "description": nullable(text()),
                "display_name": nullable(string()),
                "display_description": nullable(string()),
                "force": flag(),
                "metadata": nullable(string_map()),
            }),
            &["volume_id"],
        ),
    )
}

pub fn snapshot_update() -> Value {
    wrapped(
        "snapshot",
        object(
            json!({
                "name": nullable(name()),
                "description": nullable(text()),
                "display_name": nullable(string()),
                "display_description": nullable(string()),
            }),
            &[],
        ),
    )
}

pub fn snapshot() -> Value {
    object(
        json!({
            "id": uuid(),
            "created_at": nullable(string()),
            "updated_at": nullable(string()),
            "name": string(),
            "description": string(),
            "volume_id": uuid(),
            "status": {"enum": SNAPSHOT_STATUSES},
            "size": integer(),
            "metadata": {"type": "object", "additionalProperties": string()},
            "os-extended-snapshot-attributes:progress": string(),
            "os-extended-snapshot-attributes:project_id": string(),
            "group_snapshot_id": nullable(uuid()),
            "user_id": string(),
            "consumes_quota": boolean(),
        }),
        &["id", "created_at", "updated_at", "name", "description", "volume_id", "status", "size", "metadata"],
    )
}

pub fn snapshot_reply() -> Value {
    wrapped("snapshot", snapshot())
}

pub fn snapshots() -> Value {
    list_of("snapshots", snapshot(), true)
}

pub fn snapshot_action() -> Value {
    actions(&[
        ("os-reset_status", object(json!({"status": {"enum": SNAPSHOT_STATUSES}}), &["status"])),
        ("os-force_delete", no_arguments()),
        ("os-unmanage", no_arguments()),
    ])
}

// ---- volume types

pub fn volume_type_create() -> Value {
    let mut body = wrapped(
        "volume_type",
        object(
            json!({
                "name": type_name(),
                "description": nullable(text()),
                "os-volume-type-access:is_public": flag(),
                "is_public": flag(),
                "extra_specs": nullable(string_map()),
            }),
            &["name"],
        ),
    );
    body["examples"] =
        json!([{"volume_type": {"name": "fuzzed-type", "extra_specs": {"volume_backend_name": "file"}}}]);
    body
}

pub fn volume_type_update() -> Value {
    wrapped(
        "volume_type",
        object(json!({"name": nullable(name()), "description": nullable(text()), "is_public": flag()}), &[]),
    )
}

pub fn volume_type() -> Value {
    object(
        json!({
            "id": uuid(),
            "name": string(),
            "description": string(),
            "is_public": boolean(),
            "os-volume-type-access:is_public": boolean(),
            "extra_specs": {"type": "object", "additionalProperties": string()},
            "qos_specs_id": nullable(uuid()),
        }),
        // The type-access extension's `is_public` and the QoS specs id appear only in some
        // responses, the latter only for admins (`views::VolumeTypeResponse`).
        &["id", "name", "description", "is_public", "extra_specs"],
    )
}

pub fn volume_type_reply() -> Value {
    wrapped("volume_type", volume_type())
}

pub fn volume_types() -> Value {
    list_of("volume_types", volume_type(), false)
}

pub fn extra_specs() -> Value {
    wrapped("extra_specs", string_map())
}

pub fn extra_specs_reply() -> Value {
    wrapped("extra_specs", json!({"type": "object", "additionalProperties": string()}))
}

/// `{"<key>": "<value>"}` for one extra spec.
pub fn extra_spec() -> Value {
    json!({"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": text()})
}

pub fn extra_spec_reply() -> Value {
    json!({"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": string()})
}

/// A type's name: not blank, no control characters.
fn type_name() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"})
}

pub fn group_type_create() -> Value {
    let mut body = wrapped(
        "group_type",
        object(
            json!({
                "name": type_name(),
                "description": nullable(text()),
                "is_public": flag(),
                "group_specs": nullable(string_map()),
            }),
            &["name"],
        ),
    );
    body["examples"] = json!([{"group_type": {"name": "fuzzed-group-type"}}]);
    body
}

pub fn group_type_update() -> Value {
    wrapped(
        "group_type",
        object(json!({"name": nullable(name()), "description": nullable(text()), "is_public": flag()}), &[]),
    )
}

/// A group type; its group specs only for admins.
fn group_type() -> Value {
    object(
        json!({
            "id": uuid(),
            "name": string(),
            "description": string(),
            "is_public": boolean(),
            "group_specs": {"type": "object", "additionalProperties": string()},
        }),
        &["id", "name", "description", "is_public"],
    )
}

pub fn group_type_reply() -> Value {
    wrapped("group_type", group_type())
}

pub fn group_types() -> Value {
    list_of("group_types", group_type(), false)
}

pub fn group_specs() -> Value {
    wrapped("group_specs", string_map())
}

pub fn group_specs_reply() -> Value {
    wrapped("group_specs", json!({"type": "object", "additionalProperties": string()}))
}

pub fn group_create() -> Value {
    let mut body = wrapped(
        "group",
        object(
            json!({
                "name": nullable(name()),
                "description": nullable(text()),
                "group_type": name(),
                "volume_types": {"type": "array", "minItems": 1, "items": name()},
                "availability_zone": nullable(name()),
            }),
            &["group_type", "volume_types"],
        ),
    );
    body["examples"] =
        json!([{"group": {"name": "fuzzed", "group_type": "default_group_type", "volume_types": ["__DEFAULT__"]}}]);
    body
}

pub fn group_update() -> Value {
    let ids = json!({"type": ["string", "null"], "pattern": "^[0-9a-fA-F-]*(,[0-9a-fA-F-]*)*$"});
    wrapped(
        "group",
        object(
            json!({"name": nullable(name()), "description": nullable(text()), "add_volumes": ids, "remove_volumes": ids}),
            &[],
        ),
    )
}

/// `POST /groups/action`: a group from a group snapshot or from another group (3.14).
pub fn groups_action() -> Value {
    actions(&[(
        "create-from-src",
        object(
            json!({
                "name": nullable(name()),
                "description": nullable(text()),
                "group_snapshot_id": nullable(uuid()),
                "source_group_id": nullable(uuid()),
            }),
            &[],
        ),
    )])
}

pub fn group_action() -> Value {
    actions(&[
        ("delete", object(json!({"delete-volumes": flag()}), &[])),
        ("reset_status", object(json!({"status": {"enum": ["available", "error"]}}), &["status"])),
    ])
}

fn group_summary() -> Value {
    object(json!({"id": uuid(), "name": string()}), &["id", "name"])
}

/// A group's details; the keys after `volume_types` appear at later microversions.
fn group_detail() -> Value {
    object(
        json!({
            "id": uuid(),
            "status": string(),
            "availability_zone": string(),
            "created_at": nullable(string()),
            "name": string(),
            "description": string(),
            "group_type": uuid(),
            "volume_types": {"type": "array", "items": uuid()},
            "group_snapshot_id": nullable(uuid()),
            "source_group_id": nullable(uuid()),
            "volumes": {"type": "array", "items": uuid()},
            "replication_status": string(),
            "project_id": string(),
        }),
        &["id", "status", "availability_zone", "created_at", "name", "description", "group_type", "volume_types"],
    )
}

pub fn group_summary_reply() -> Value {
    wrapped("group", group_summary())
}

pub fn group_reply() -> Value {
    wrapped("group", group_detail())
}

// ---- group snapshots

pub fn group_snapshot_create() -> Value {
    wrapped(
        "group_snapshot",
        object(json!({"group_id": uuid(), "name": nullable(name()), "description": nullable(text())}), &["group_id"]),
    )
}

fn group_snapshot_summary() -> Value {
    object(json!({"id": uuid(), "name": string(), "group_type_id": uuid()}), &["id", "name", "group_type_id"])
}

/// A group snapshot's details; `project_id` from 3.58.
fn group_snapshot_detail() -> Value {
    object(
        json!({
            "id": uuid(),
            "group_id": uuid(),
            "group_type_id": uuid(),
            "status": {"enum": ["creating", "available", "deleting", "error", "error_deleting"]},
            "created_at": nullable(string()),
            "name": string(),
            "description": string(),
            "project_id": string(),
        }),
        &["id", "group_id", "group_type_id", "status", "created_at", "name", "description"],
    )
}

pub fn group_snapshot_summary_reply() -> Value {
    wrapped("group_snapshot", group_snapshot_summary())
}

pub fn group_snapshot_reply() -> Value {
    wrapped("group_snapshot", group_snapshot_detail())
}

fn group_snapshot_list(item: Value) -> Value {
    let mut listing = list_of("group_snapshots", item, false);
    listing["properties"]["group_snapshot_links"] = links();
    listing
}

pub fn group_snapshots() -> Value {
    group_snapshot_list(group_snapshot_summary())
}

pub fn group_snapshots_detail() -> Value {
    group_snapshot_list(group_snapshot_detail())
}

pub fn group_snapshot_action() -> Value {
    actions(&[("reset_status", object(json!({"status": {"enum": ["available", "error"]}}), &["status"]))])
}

fn group_list(item: Value) -> Value {
    let mut listing = list_of("groups", item, false);
    listing["properties"]["group_links"] = links();
    listing
}

pub fn groups() -> Value {
    group_list(group_summary())
}

pub fn groups_detail() -> Value {
    group_list(group_detail())
}

pub fn volume_type_action() -> Value {
    let project = object(json!({"project": {"type": "string", "pattern": PROJECT_PATTERN}}), &["project"]);
    actions(&[("addProjectAccess", project.clone()), ("removeProjectAccess", project)])
}

pub fn volume_type_access() -> Value {
    list_of(
        "volume_type_access",
        object(json!({"volume_type_id": uuid(), "project_id": string()}), &["volume_type_id", "project_id"]),
        false,
    )
}

// ---- QoS specs

fn qos_values() -> Value {
    json!({"oneOf": [text(), {"type": "number"}]})
}

pub fn qos_create() -> Value {
    let mut specs = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"},
            "consumer": {"enum": ["back-end", "front-end", "both", null]},
        },
        "required": ["name"],
        "maxProperties": 130,
        "propertyNames": {"pattern": KEY_PATTERN},
        "additionalProperties": qos_values(),
    });
    specs["examples"] = json!([{"name": "fuzzed-qos", "consumer": "back-end", "read_iops_sec": "1000"}]);
    wrapped("qos_specs", specs)
}

pub fn qos_update() -> Value {
    wrapped(
        "qos_specs",
        json!({
            "type": "object",
            "properties": {"consumer": {"enum": ["back-end", "front-end", "both", null]}},
            "maxProperties": 129,
            "propertyNames": {"pattern": KEY_PATTERN},
            "additionalProperties": qos_values(),
        }),
    )
}

pub fn qos_keys() -> Value {
    wrapped("keys", json!({"type": "array", "items": {"type": "string", "pattern": KEY_PATTERN}}))
}

fn qos() -> Value {
    object(
        json!({"id": uuid(), "name": string(), "consumer": string(),
               "specs": {"type": "object", "additionalProperties": string()}}),
        &["id", "name", "consumer", "specs"],
    )
}

pub fn qos_reply() -> Value {
    object(json!({"qos_specs": qos(), "links": links()}), &["qos_specs", "links"])
}

pub fn qos_list() -> Value {
    list_of("qos_specs", qos(), false)
}

pub fn qos_specs_reply() -> Value {
    wrapped("qos_specs", json!({"type": "object", "additionalProperties": string()}))
}

pub fn qos_associations() -> Value {
    list_of(
        "qos_associations",
        object(
            json!({"association_type": string(), "name": string(), "id": uuid()}),
            &["association_type", "name", "id"],
        ),
        false,
    )
}

// ---- attachments

pub fn attachment_create() -> Value {
    wrapped(
        "attachment",
        object(
            json!({
                "volume_uuid": uuid(),
                "instance_uuid": nullable(name()),
                "connector": nullable(json!({"type": "object"})),
                "mode": {"enum": ["rw", "ro"]},
            }),
            &["volume_uuid"],
        ),
    )
}

pub fn attachment_update() -> Value {
    wrapped("attachment", object(json!({"connector": connector()}), &["connector"]))
}

pub fn attachment() -> Value {
    object(
        json!({
            "id": uuid(),
            "status": {"enum": ATTACH_STATUSES},
            "instance": nullable(string()),
            "volume_id": uuid(),
            "attach_mode": {"enum": ["rw", "ro"]},
            "attached_at": nullable(string()),
            "detached_at": nullable(string()),
            "connection_info": nullable(connection_info()),
        }),
        &["id", "status", "instance", "volume_id", "attach_mode", "attached_at", "detached_at", "connection_info"],
    )
}

pub fn attachment_reply() -> Value {
    wrapped("attachment", attachment())
}

pub fn attachments() -> Value {
    list_of("attachments", attachment(), false)
}

pub fn attachment_summaries() -> Value {
    list_of(
        "attachments",
        object(
            json!({"id": uuid(), "status": {"enum": ATTACH_STATUSES}, "instance": nullable(string()),
                   "volume_id": uuid()}),
            &["id", "status", "instance", "volume_id"],
        ),
        false,
    )
}

pub fn attachment_action() -> Value {
    actions(&[("os-complete", no_arguments())])
}

// ---- backups

pub fn backup_create() -> Value {
    let mut body = wrapped(
        "backup",
        object(
            json!({
                "volume_id": uuid(),
                "container": nullable(name()),
                "name": nullable(name()),
                "description": nullable(text()),
                "incremental": flag(),
                "force": flag(),
                "snapshot_id": nullable(uuid()),
                "metadata": nullable(string_map()),
                "availability_zone": nullable(name()),
            }),
            &["volume_id"],
        ),
    );
    body["examples"] = json!([{"backup": {"volume_id": "00000000-0000-4000-8000-000000000000", "name": "fuzzed"}}]);
    body
}

pub fn backup_update() -> Value {
    wrapped(
        "backup",
        object(
            json!({"name": nullable(name()), "description": nullable(text()), "metadata": nullable(string_map())}),
            &[],
        ),
    )
}

pub fn backup() -> Value {
    object(
        json!({
            "id": uuid(),
            "status": {"enum": BACKUP_STATUSES},
            "size": integer(),
            "object_count": integer(),
            "availability_zone": string(),
            "container": string(),
            "created_at": nullable(string()),
            "updated_at": nullable(string()),
            "data_timestamp": nullable(string()),
            "name": string(),
            "description": string(),
            "fail_reason": nullable(string()),
            "volume_id": uuid(),
            "snapshot_id": nullable(uuid()),
            "is_incremental": boolean(),
            "has_dependent_backups": boolean(),
            "links": links(),
            "os-backup-project-attr:project_id": string(),
            "metadata": {"type": "object", "additionalProperties": string()},
            "user_id": string(),
            "encryption_key_id": null_only(),
        }),
        &["id", "status", "size", "object_count", "name", "description", "volume_id", "links"],
    )
}

pub fn backup_reply() -> Value {
    wrapped("backup", backup())
}

pub fn backups() -> Value {
    list_of("backups", backup(), true)
}

fn backup_summary() -> Value {
    object(
        json!({"id": uuid(), "name": string(), "links": links(),
               "metadata": {"type": "object", "additionalProperties": string()}}),
        &["id", "name", "links"],
    )
}

pub fn backup_summary_reply() -> Value {
    wrapped("backup", backup_summary())
}

pub fn backup_summaries() -> Value {
    list_of("backups", backup_summary(), true)
}

pub fn backup_restore() -> Value {
    wrapped("restore", object(json!({"volume_id": nullable(uuid()), "name": nullable(name())}), &[]))
}

pub fn backup_restore_reply() -> Value {
    wrapped(
        "restore",
        object(
            json!({"backup_id": uuid(), "volume_id": uuid(), "volume_name": string()}),
            &["backup_id", "volume_id", "volume_name"],
        ),
    )
}

pub fn backup_record() -> Value {
    wrapped(
        "backup-record",
        object(json!({"backup_service": string(), "backup_url": string()}), &["backup_service", "backup_url"]),
    )
}

pub fn backup_action() -> Value {
    actions(&[
        ("os-reset_status", object(json!({"status": {"enum": BACKUP_STATUSES}}), &["status"])),
        ("os-force_delete", no_arguments()),
    ])
}

// ---- quotas, limits, zones, services, pools, extensions

fn quota_value() -> Value {
    json!({"oneOf": [
        {"type": "integer", "minimum": -1},
        {"type": "string", "pattern": "^(-1|[0-9]+)$"},
    ]})
}

pub fn quota_update() -> Value {
    wrapped(
        "quota_set",
        json!({
            "type": "object",
            "properties": {"id": string(), "tenant_id": string()},
            "propertyNames": {"pattern": "^(id|tenant_id|volumes|snapshots|gigabytes|backups|backup_gigabytes|per_volume_gigabytes|groups|(volumes|snapshots|gigabytes)_.+)$"},
            "additionalProperties": quota_value(),
        }),
    )
}

pub fn quota_set() -> Value {
    let usage = object(
        json!({"limit": integer(), "in_use": integer(), "reserved": integer(), "allocated": integer()}),
        &["limit", "in_use", "reserved"],
    );
    wrapped(
        "quota_set",
        json!({
            "type": "object",
            "properties": {"id": string()},
            "required": ["id"],
            "additionalProperties": {"oneOf": [integer(), usage]},
        }),
    )
}

/// An update's answer: every limit, without the project's id (Cinder's update leaves it out).
pub fn quota_set_updated() -> Value {
    wrapped("quota_set", json!({"type": "object", "additionalProperties": integer()}))
}

pub fn limits() -> Value {
    let absolute: Vec<&str> = vec![
        "maxTotalVolumes",
        "maxTotalSnapshots",
        "maxTotalVolumeGigabytes",
        "maxTotalBackups",
        "maxTotalBackupGigabytes",
        "totalVolumesUsed",
        "totalGigabytesUsed",
        "totalSnapshotsUsed",
        "totalBackupsUsed",
        "totalBackupGigabytesUsed",
    ];
    let properties: serde_json::Map<String, Value> =
        absolute.iter().map(|key| ((*key).to_owned(), integer())).collect();
    wrapped(
        "limits",
        object(
            json!({"rate": {"type": "array", "maxItems": 0}, "absolute": object(Value::Object(properties), &absolute)}),
            &["rate", "absolute"],
        ),
    )
}

pub fn availability_zones() -> Value {
    list_of(
        "availabilityZoneInfo",
        object(
            json!({"zoneName": string(), "zoneState": object(json!({"available": boolean()}), &["available"])}),
            &["zoneName", "zoneState"],
        ),
        false,
    )
}

pub fn services() -> Value {
    list_of(
        "services",
        object(
            json!({
                "binary": string(),
                "host": string(),
                "zone": string(),
                "status": {"enum": ["enabled", "disabled"]},
                "state": {"enum": ["up", "down"]},
                "updated_at": nullable(string()),
                "disabled_reason": nullable(string()),
                "replication_status": string(),
                "active_backend_id": null_only(),
                "frozen": boolean(),
                "cluster": null_only(),
                "backend_state": {"enum": ["up", "down"]},
            }),
            &["binary", "host", "zone", "status", "state", "updated_at"],
        ),
        false,
    )
}

pub fn service_update() -> Value {
    object(
        json!({
            "host": {"type": "string", "minLength": 1, "maxLength": 400},
            "binary": {"enum": ["cinder-volume", "cinder-scheduler"]},
            "service": {"enum": ["cinder-volume", "cinder-scheduler"]},
            "disabled_reason": {"type": "string", "minLength": 1, "maxLength": 255},
        }),
        &["host"],
    )
}

pub fn service_updated() -> Value {
    object(
        json!({
            "disabled": boolean(),
            "host": string(),
            "service": string(),
            "binary": string(),
            "status": {"enum": ["enabled", "disabled"]},
            "disabled_reason": string(),
        }),
        &["disabled", "host", "service", "binary", "status"],
    )
}

pub fn pools() -> Value {
    list_of("pools", object(json!({"name": string(), "capabilities": {"type": "object"}}), &["name"]), false)
}

pub fn transfer_create() -> Value {
    let mut body = wrapped(
        "transfer",
        object(json!({"volume_id": uuid(), "name": nullable(name()), "no_snapshots": flag()}), &["volume_id"]),
    );
    body["examples"] = json!([{"transfer": {"volume_id": "00000000-0000-4000-8000-000000000000", "name": "fuzzed"}}]);
    body
}

pub fn transfer_accept() -> Value {
    wrapped("accept", object(json!({"auth_key": string()}), &["auth_key"]))
}

fn transfer_summary() -> Value {
    object(
        json!({"id": uuid(), "volume_id": uuid(), "name": nullable(string()), "links": links()}),
        &["id", "volume_id", "name", "links"],
    )
}

/// A transfer's details; `no_snapshots` from 3.55, the projects and `accepted` from 3.57, the key
/// only in the create response.
fn transfer_detail() -> Value {
    object(
        json!({
            "id": uuid(),
            "created_at": nullable(string()),
            "name": nullable(string()),
            "volume_id": uuid(),
            "links": links(),
            "auth_key": string(),
            "no_snapshots": boolean(),
            "destination_project_id": nullable(string()),
            "source_project_id": string(),
            "accepted": boolean(),
        }),
        &["id", "created_at", "name", "volume_id", "links"],
    )
}

pub fn transfer_reply() -> Value {
    wrapped("transfer", transfer_detail())
}

pub fn transfer_summary_reply() -> Value {
    wrapped("transfer", transfer_summary())
}

pub fn transfers() -> Value {
    list_of("transfers", transfer_summary(), false)
}

pub fn transfers_detail() -> Value {
    list_of("transfers", transfer_detail(), false)
}

pub fn volume_manage() -> Value {
    let reference = object(json!({"source-name": name(), "source-id": name()}), &[]);
    let mut body = wrapped(
        "volume",
        object(
            json!({
                "host": name(),
                "cluster": null_only(),
                "ref": reference,
                "name": nullable(name()),
                "description": nullable(text()),
                "volume_type": nullable(name()),
                "availability_zone": nullable(name()),
                "bootable": flag(),
                "metadata": nullable(string_map()),
            }),
            &["host", "ref"],
        ),
    );
    body["examples"] = json!([{"volume": {"host": "node-0@file#default", "ref": {"source-name": "fuzzed"}}}]);
    body
}

pub fn snapshot_manage() -> Value {
    let reference = object(json!({"source-name": name(), "source-id": name()}), &[]);
    let mut body = wrapped(
        "snapshot",
        object(
            json!({
                "volume_id": uuid(),
                "ref": reference,
                "name": nullable(name()),
                "description": nullable(text()),
                "metadata": nullable(string_map()),
            }),
            &["volume_id", "ref"],
        ),
    );
    body["examples"] =
        json!([{"snapshot": {"volume_id": "00000000-0000-4000-8000-000000000000", "ref": {"source-name": "fuzzed"}}}]);
    body
}

fn manageable_snapshot(detail: bool) -> Value {
    let mut item = manageable_volume(detail);
    item["properties"]["source_reference"] = nullable(object(json!({"source-name": string()}), &["source-name"]));
    if let Some(required) = item["required"].as_array_mut() {
        required.push(json!("source_reference"));
    }
    item
}

fn manageable_snapshot_list(detail: bool) -> Value {
    let mut listing = list_of("manageable-snapshots", manageable_snapshot(detail), false);
    listing["properties"]["manageable-snapshots_links"] = links();
    listing
}

pub fn manageable_snapshots() -> Value {
    manageable_snapshot_list(false)
}

pub fn manageable_snapshots_detail() -> Value {
    manageable_snapshot_list(true)
}

fn manageable_volume(detail: bool) -> Value {
    let mut properties = json!({
        "reference": object(json!({"source-name": string()}), &["source-name"]),
        "size": integer(),
        "safe_to_manage": boolean(),
    });
    let mut required = vec!["reference", "size", "safe_to_manage"];
    if detail {
        properties["reason_not_safe"] = nullable(string());
        properties["cinder_id"] = nullable(uuid());
        properties["extra_info"] = null_only();
        required.extend(["reason_not_safe", "cinder_id", "extra_info"]);
    }
    object(properties, &required)
}

fn manageable_list(detail: bool) -> Value {
    let mut listing = list_of("manageable-volumes", manageable_volume(detail), false);
    listing["properties"]["manageable-volumes_links"] = links();
    listing
}

pub fn manageable_volumes() -> Value {
    manageable_list(false)
}

pub fn manageable_volumes_detail() -> Value {
    manageable_list(true)
}

/// A user message; the resource keys only when it names a resource.
fn message() -> Value {
    object(
        json!({
            "id": uuid(),
            "event_id": string(),
            "user_message": string(),
            "message_level": string(),
            "created_at": nullable(string()),
            "guaranteed_until": nullable(string()),
            "request_id": string(),
            "links": links(),
            "resource_type": string(),
            "resource_uuid": uuid(),
        }),
        &["id", "event_id", "user_message", "message_level", "created_at", "guaranteed_until", "request_id", "links"],
    )
}

pub fn message_reply() -> Value {
    wrapped("message", message())
}

pub fn messages() -> Value {
    let mut listing = list_of("messages", message(), false);
    listing["properties"]["messages_links"] = links();
    listing
}

fn default_type_item() -> Value {
    object(json!({"project_id": string(), "volume_type_id": uuid()}), &["project_id", "volume_type_id"])
}

pub fn default_type() -> Value {
    wrapped("default_type", default_type_item())
}

pub fn default_types() -> Value {
    list_of("default_types", default_type_item(), false)
}

pub fn default_type_set() -> Value {
    wrapped("default_type", object(json!({"volume_type": name()}), &["volume_type"]))
}

pub fn hosts() -> Value {
    list_of(
        "hosts",
        object(
            json!({
                "host_name": string(),
                "service": string(),
                "zone": string(),
                "service-status": {"enum": ["available", "unavailable"]},
                "service-state": {"enum": ["enabled", "disabled"]},
                "last-update": nullable(string()),
            }),
            &["host_name", "service", "zone", "service-status", "service-state", "last-update"],
        ),
        false,
    )
}

pub fn capabilities() -> Value {
    let property = object(
        json!({"title": string(), "description": string(), "type": {"enum": ["boolean", "string"]}}),
        &["title", "description", "type"],
    );
    object(
        json!({
            "namespace": string(),
            "vendor_name": string(),
            "volume_backend_name": nullable(string()),
            "pool_name": nullable(string()),
            "driver_version": string(),
            "storage_protocol": nullable(string()),
            "display_name": null_only(),
            "description": null_only(),
            "visibility": null_only(),
            "replication_targets": {"type": "array", "maxItems": 0},
            "properties": {"type": "object", "additionalProperties": property},
        }),
        &[
            "namespace",
            "vendor_name",
            "volume_backend_name",
            "pool_name",
            "driver_version",
            "storage_protocol",
            "display_name",
            "description",
            "visibility",
            "replication_targets",
            "properties",
        ],
    )
}

pub fn resource_filters() -> Value {
    list_of(
        "resource_filters",
        object(
            json!({"resource": string(), "filters": {"type": "array", "items": string()}}),
            &["resource", "filters"],
        ),
        false,
    )
}

pub fn extensions() -> Value {
    list_of(
        "extensions",
        object(
            json!({"alias": string(), "name": string(), "description": string(), "updated": string(),
                   "links": {"type": "array"}}),
            &["alias", "name", "description", "updated", "links"],
        ),
        false,
    )
}
