//! `/group_types` (3.11) with their group specs, and `/groups` (3.13): Cinder's generic groups.

use axum::{
    Json,
    body::Body,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use basalt::proto::{
    CreateGroupFromSourceRequest, CreateGroupRequest, CreateGroupTypeRequest, DeleteGroupRequest,
    DeleteGroupTypeRequest, GetGroupRequest, GetGroupTypeRequest, Group, GroupStatus, GroupType, ListGroupTypesRequest,
    ListGroupsRequest, ResetGroupStatusRequest, SetGroupSpecsRequest, UnsetGroupSpecRequest, UpdateGroupRequest,
    UpdateGroupTypeRequest,
};
use serde_json::{Map, Value, json};

use super::{all_tenants, check_filters, next_link, paging, query_flag};
use crate::{Rest, body, fault::Fault, views};

// ---- group types

/// The group type the path names, by id, as Cinder finds it (clients look names up in the list).
async fn fetch_type(rest: &Rest) -> Result<GroupType, Fault> {
    let id = rest.param("group_type_id");
    if uuid::Uuid::try_parse(id).is_err() {
        return Err(Fault::not_found(format!("group type {} not found", basalt::error::excerpt(id))));
    }
    let request = GetGroupTypeRequest { group_type: id.into() };
    Ok(rest.client().get_group_type(rest.request(request)).await?.into_inner())
}

/// Cinder's group type view: the group specs for admins only.
fn group_type_view(rest: &Rest, group_type: &GroupType) -> Value {
    let mut view = json!({
        "id": group_type.id,
        "name": group_type.name,
        "description": group_type.description,
        "is_public": group_type.is_public,
    });
    if rest.context.is_admin {
        view["group_specs"] = json!(group_type.group_specs);
    }
    view
}

fn type_reply(rest: &Rest, status: StatusCode, group_type: &GroupType) -> Response {
    (status, Json(json!({"group_type": group_type_view(rest, group_type)}))).into_response()
}

pub async fn type_create(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "group_type")?;
    body::check_keys(section, &["name", "description", "is_public", "group_specs"], true)?;
    let name = body::string(section, "name")?.ok_or_else(|| Fault::bad_request("a group type needs a name"))?;
    let request = CreateGroupTypeRequest {
        name,
        description: body::string(section, "description")?.unwrap_or_default(),
        is_public: body::boolean(section, "is_public")?,
        group_specs: body::string_map(section, "group_specs")?.unwrap_or_default(),
    };
    let created = rest.client().create_group_type(rest.request(request)).await?.into_inner();
    Ok(type_reply(&rest, StatusCode::ACCEPTED, &created))
}

pub async fn type_list(rest: Rest) -> Result<Response, Fault> {
    // Only admins see private types; for them `is_public` narrows the list (None: all).
    let is_public = match rest.query("is_public") {
        Some(text) if text.eq_ignore_ascii_case("none") => None,
        Some(_) => query_flag(&rest, "is_public")?,
        None => None,
    };
    let request = ListGroupTypesRequest { is_public };
    let types = rest.client().list_group_types(rest.request(request)).await?.into_inner().group_types;
    let views: Vec<Value> = types.iter().map(|group_type| group_type_view(&rest, group_type)).collect();
    Ok(Json(json!({"group_types": views})).into_response())
}

pub async fn type_show(rest: Rest) -> Result<Response, Fault> {
    Ok(type_reply(&rest, StatusCode::OK, &fetch_type(&rest).await?))
}

pub async fn type_show_default(rest: Rest) -> Result<Response, Fault> {
    let request = GetGroupTypeRequest { group_type: "default".into() };
    let default = rest.client().get_group_type(rest.request(request)).await?.into_inner();
    Ok(type_reply(&rest, StatusCode::OK, &default))
}

pub async fn type_update(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "group_type")?;
    body::check_keys(section, &["name", "description", "is_public"], true)?;
    let current = fetch_type(&rest).await?;
    let request = UpdateGroupTypeRequest {
        group_type_id: current.id,
        name: body::string(section, "name")?,
        description: body::string(section, "description")?,
        is_public: body::boolean(section, "is_public")?,
    };
    let updated = rest.client().update_group_type(rest.request(request)).await?.into_inner();
    Ok(type_reply(&rest, StatusCode::OK, &updated))
}

pub async fn type_delete(rest: Rest) -> Result<Response, Fault> {
    let current = fetch_type(&rest).await?;
    rest.client().delete_group_type(rest.request(DeleteGroupTypeRequest { group_type_id: current.id })).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// A group type's specs, for admins (Cinder's `group:group_types_specs`).
async fn fetch_specs(rest: &Rest) -> Result<std::collections::HashMap<String, String>, Fault> {
    if !rest.context.is_admin {
        return Err(Fault::forbidden("a group type's specs are for admins"));
    }
    Ok(fetch_type(rest).await?.group_specs)
}

pub async fn specs(rest: Rest) -> Result<Response, Fault> {
    Ok(Json(json!({"group_specs": fetch_specs(&rest).await?})).into_response())
}

pub async fn set_specs(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let specs = body::map_body(&body, "group_specs")?;
    let current = fetch_type(&rest).await?;
    let request = SetGroupSpecsRequest { group_type_id: current.id, group_specs: specs.clone() };
    rest.client().set_group_specs(rest.request(request)).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"group_specs": specs}))).into_response())
}

pub async fn spec(rest: Rest) -> Result<Response, Fault> {
    super::spec_reply(&fetch_specs(&rest).await?, rest.param("key"), "group spec")
}

pub async fn set_spec(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let key = rest.param("key").to_owned();
    let body = body::read_json(request_body).await?;
    let value = super::spec_value(&body, &key)?;
    let current = fetch_type(&rest).await?;
    let request =
        SetGroupSpecsRequest { group_type_id: current.id, group_specs: [(key.clone(), value.clone())].into() };
    rest.client().set_group_specs(rest.request(request)).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ key: value }))).into_response())
}

pub async fn unset_spec(rest: Rest) -> Result<Response, Fault> {
    let current = fetch_type(&rest).await?;
    let request = UnsetGroupSpecRequest { group_type_id: current.id, key: rest.param("key").into() };
    rest.client().unset_group_spec(rest.request(request)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

// ---- groups

fn summary(group: &Group) -> Value {
    json!({"id": group.id, "name": group.name})
}

/// Cinder's group detail view at the request's microversion; the volumes only when asked for
/// with `list_volume` (3.25).
fn detail(rest: &Rest, group: &Group, list_volume: bool) -> Value {
    let status = GroupStatus::try_from(group.status).unwrap_or_default();
    let mut view = json!({
        "id": group.id,
        "status": status.cinder_name(),
        "availability_zone": group.availability_zone,
        "created_at": views::timestamp(group.created_at.as_ref()),
        "name": group.name,
        "description": group.description,
        "group_type": group.group_type_id,
        "volume_types": group.volume_type_ids,
    });
    if rest.version.at_least(14) {
        view["group_snapshot_id"] = views::optional_id(&group.group_snapshot_id);
        view["source_group_id"] = views::optional_id(&group.source_group_id);
    }
    if rest.version.at_least(25) && list_volume {
        view["volumes"] = json!(group.volume_ids);
    }
    if rest.version.at_least(38) {
        view["replication_status"] = json!("disabled");
    }
    if rest.version.at_least(58) {
        view["project_id"] = json!(group.project_id);
    }
    view
}

fn list_volume(rest: &Rest) -> Result<bool, Fault> {
    Ok(query_flag(rest, "list_volume")?.unwrap_or(false))
}

pub async fn create(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "group")?;
    body::check_keys(section, &["name", "description", "group_type", "volume_types", "availability_zone"], true)?;
    let group_type = body::string(section, "group_type")?
        .ok_or_else(|| Fault::bad_request("a group needs group_type: a group type's name or id"))?;
    let volume_types = match section.get("volume_types") {
        Some(Value::Array(types)) if !types.is_empty() => types
            .iter()
            .map(|volume_type| {
                volume_type
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Fault::bad_request("volume_types must be a list of volume type names or ids"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(Fault::bad_request("a group needs volume_types: a non-empty list of volume type names or ids"));
        }
    };
    let request = CreateGroupRequest {
        name: body::string(section, "name")?.unwrap_or_default(),
        description: body::string(section, "description")?.unwrap_or_default(),
        group_type,
        volume_types,
        availability_zone: body::string(section, "availability_zone")?.unwrap_or_default(),
    };
    let created = rest.client().create_group(rest.request(request)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, Json(json!({"group": summary(&created)}))).into_response())
}

async fn listed(rest: &Rest, path: &str, view: impl Fn(&Group) -> Value) -> Result<Response, Fault> {
    check_filters(rest, "group")?;
    let (page, sort) = paging(rest)?;
    let request = ListGroupsRequest { page: Some(page), sort, all_projects: all_tenants(rest)?, ..Default::default() };
    let response = rest.client().list_groups(rest.request(request)).await?.into_inner();
    let mut body = json!({"groups": response.groups.iter().map(view).collect::<Vec<_>>()});
    if let Some(links) = next_link(rest, path, &response.page.unwrap_or_default().next_marker) {
        body["group_links"] = links;
    }
    Ok(Json(body).into_response())
}

pub async fn list(rest: Rest) -> Result<Response, Fault> {
    listed(&rest, "groups", summary).await
}

pub async fn list_detail(rest: Rest) -> Result<Response, Fault> {
    let list_volume = list_volume(&rest)?;
    listed(&rest, "groups/detail", |group| detail(&rest, group, list_volume)).await
}

pub async fn show(rest: Rest) -> Result<Response, Fault> {
    let request = GetGroupRequest { group_id: rest.param("group_id").into() };
    let group = rest.client().get_group(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"group": detail(&rest, &group, list_volume(&rest)?)})).into_response())
}

/// `add_volumes` and `remove_volumes` are comma-separated ids, as Cinder takes them.
fn volume_ids(section: &Map<String, Value>, key: &str) -> Result<Vec<String>, Fault> {
    let text = body::string(section, key)?.unwrap_or_default();
    Ok(text.split(',').map(str::trim).filter(|id| !id.is_empty()).map(str::to_owned).collect())
}

pub async fn update(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "group")?;
    body::check_keys(section, &["name", "description", "add_volumes", "remove_volumes"], true)?;
    let request = UpdateGroupRequest {
        group_id: rest.param("group_id").into(),
        name: body::string(section, "name")?,
        description: body::string(section, "description")?,
        add_volume_ids: volume_ids(section, "add_volumes")?,
        remove_volume_ids: volume_ids(section, "remove_volumes")?,
    };
    if request.name.is_none()
        && request.description.is_none()
        && request.add_volume_ids.is_empty()
        && request.remove_volume_ids.is_empty()
    {
        return Err(Fault::bad_request("give name, description, add_volumes or remove_volumes to update a group"));
    }
    rest.client().update_group(rest.request(request)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `POST /groups/action`: Cinder's one collection action, `create-from-src` (3.14).
pub async fn collection_action(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    const ACTIONS: &str = "create-from-src";
    let body = body::read_json(request_body).await?;
    let (name, arguments) = body::action(&body, ACTIONS)?;
    if name != "create-from-src" {
        return Err(Fault::bad_request(format!(
            "unknown groups action {}; actions: {ACTIONS}",
            basalt::error::excerpt(name)
        )));
    }
    rest.require_version(14, "making a group from a source")?;
    let arguments = arguments.with(&["name", "description", "group_snapshot_id", "source_group_id"])?;
    let request = CreateGroupFromSourceRequest {
        name: body::string(arguments, "name")?.unwrap_or_default(),
        description: body::string(arguments, "description")?.unwrap_or_default(),
        group_snapshot_id: body::string(arguments, "group_snapshot_id")?.unwrap_or_default(),
        source_group_id: body::string(arguments, "source_group_id")?.unwrap_or_default(),
    };
    let created = rest.client().create_group_from_source(rest.request(request)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, Json(json!({"group": summary(&created)}))).into_response())
}

pub async fn action(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    const ACTIONS: &str = "delete, reset_status";
    let body = body::read_json(request_body).await?;
    let (name, arguments) = body::action(&body, ACTIONS)?;
    let group_id = rest.param("group_id").to_owned();
    let mut client = rest.client();
    match name {
        "delete" => {
            let arguments = arguments.with(&["delete-volumes"])?;
            let delete_volumes = body::boolean(arguments, "delete-volumes")?.unwrap_or(false);
            client.delete_group(rest.request(DeleteGroupRequest { group_id, delete_volumes })).await?;
        }
        "reset_status" => {
            rest.require_version(20, "resetting a group's status")?;
            let arguments = arguments.with(&["status"])?;
            let name = body::string(arguments, "status")?
                .ok_or_else(|| Fault::bad_request("reset_status needs status: available or error"))?;
            let status = GroupStatus::from_cinder_name(&name)
                .ok_or_else(|| Fault::bad_request(format!("unknown group status {}", basalt::error::excerpt(&name))))?;
            client
                .reset_group_status(rest.request(ResetGroupStatusRequest { group_id, status: status as i32 }))
                .await?;
        }
        other => {
            return Err(Fault::bad_request(format!(
                "unknown group action {}; actions: {ACTIONS}",
                basalt::error::excerpt(other)
            )));
        }
    }
    Ok(StatusCode::ACCEPTED.into_response())
}
