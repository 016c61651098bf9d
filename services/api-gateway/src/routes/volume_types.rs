//! `/types`: volume types, their extra specs and their access lists.

use axum::{
    Json,
    body::Body,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use basalt::proto::{
    CreateVolumeTypeRequest, DeleteVolumeTypeRequest, GetDefaultVolumeTypeRequest, GetVolumeTypeRequest,
    ListVolumeTypesRequest, SetVolumeTypeExtraSpecsRequest, UnsetVolumeTypeExtraSpecRequest, UpdateVolumeTypeRequest,
    VolumeType, VolumeTypeAccessRequest,
};
use serde_json::{Value, json};

use crate::{
    Rest, body,
    fault::Fault,
    views::{self, VolumeTypeResponse},
};

const CREATE_KEYS: &[&str] = &["name", "description", "os-volume-type-access:is_public", "extra_specs", "is_public"];

async fn fetch(rest: &Rest) -> Result<VolumeType, Fault> {
    let request = GetVolumeTypeRequest { volume_type: rest.param("type_id").into() };
    Ok(rest.client().get_volume_type(rest.request(request)).await?.into_inner())
}

fn reply(rest: &Rest, volume_type: &VolumeType, response: VolumeTypeResponse) -> Response {
    Json(json!({"volume_type": views::volume_type(volume_type, response, rest.context.is_admin)})).into_response()
}

pub async fn create(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "volume_type")?;
    body::check_keys(section, CREATE_KEYS, true)?;
    let name = body::string(section, "name")?.ok_or_else(|| Fault::bad_request("a volume type needs a name"))?;
    let is_public = body::boolean(section, "os-volume-type-access:is_public")?.or(body::boolean(section, "is_public")?);
    let request = CreateVolumeTypeRequest {
        name,
        description: body::string(section, "description")?.unwrap_or_default(),
        is_public,
        extra_specs: body::string_map(section, "extra_specs")?.unwrap_or_default(),
    };
    let created = rest.client().create_volume_type(rest.request(request)).await?.into_inner();
    Ok(reply(&rest, &created, VolumeTypeResponse::Created))
}

pub async fn list(rest: Rest) -> Result<Response, Fault> {
    // cinderclient sends is_public=None, which Cinder reads as "all".
    let is_public = match rest.query("is_public").map(str::to_ascii_lowercase).as_deref() {
        None | Some("none") | Some("") => None,
        Some("true") | Some("1") => Some(true),
        Some("false") | Some("0") => Some(false),
        Some(other) => {
            return Err(Fault::bad_request(format!(
                "is_public must be true, false or None, not {}",
                basalt::error::excerpt(other)
            )));
        }
    };
    let request = ListVolumeTypesRequest { is_public, name: rest.query("name").unwrap_or_default().to_owned() };
    let types = rest.client().list_volume_types(rest.request(request)).await?.into_inner().volume_types;
    let views: Vec<Value> = types
        .iter()
        .map(|volume_type| views::volume_type(volume_type, VolumeTypeResponse::Shown, rest.context.is_admin))
        .collect();
    Ok(Json(json!({"volume_types": views})).into_response())
}

pub async fn show(rest: Rest) -> Result<Response, Fault> {
    Ok(reply(&rest, &fetch(&rest).await?, VolumeTypeResponse::Shown))
}

pub async fn show_default(rest: Rest) -> Result<Response, Fault> {
    let default =
        rest.client().get_default_volume_type(rest.request(GetDefaultVolumeTypeRequest {})).await?.into_inner();
    Ok(reply(&rest, &default, VolumeTypeResponse::Default))
}

pub async fn update(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "volume_type")?;
    body::check_keys(section, &["name", "description", "is_public"], true)?;
    let current = fetch(&rest).await?;
    let request = UpdateVolumeTypeRequest {
        volume_type_id: current.id,
        name: body::string(section, "name")?,
        description: body::string(section, "description")?,
        is_public: body::boolean(section, "is_public")?,
    };
    let updated = rest.client().update_volume_type(rest.request(request)).await?.into_inner();
    Ok(reply(&rest, &updated, VolumeTypeResponse::Updated))
}

pub async fn delete(rest: Rest) -> Result<Response, Fault> {
    let current = fetch(&rest).await?;
    rest.client().delete_volume_type(rest.request(DeleteVolumeTypeRequest { volume_type_id: current.id })).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub async fn extra_specs(rest: Rest) -> Result<Response, Fault> {
    Ok(Json(json!({"extra_specs": fetch(&rest).await?.extra_specs})).into_response())
}

pub async fn set_extra_specs(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let specs = body::map_body(&body, "extra_specs")?;
    let current = fetch(&rest).await?;
    let request = SetVolumeTypeExtraSpecsRequest { volume_type_id: current.id, extra_specs: specs.clone() };
    rest.client().set_volume_type_extra_specs(rest.request(request)).await?;
    Ok(Json(json!({"extra_specs": specs})).into_response())
}

pub async fn extra_spec(rest: Rest) -> Result<Response, Fault> {
    super::spec_reply(&fetch(&rest).await?.extra_specs, rest.param("key"), "extra spec")
}

pub async fn set_extra_spec(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let key = rest.param("key").to_owned();
    let body = body::read_json(request_body).await?;
    let value = super::spec_value(&body, &key)?;
    let current = fetch(&rest).await?;
    let request = SetVolumeTypeExtraSpecsRequest {
        volume_type_id: current.id,
        extra_specs: [(key.clone(), value.clone())].into(),
    };
    rest.client().set_volume_type_extra_specs(rest.request(request)).await?;
    Ok(Json(json!({ key: value })).into_response())
}

pub async fn unset_extra_spec(rest: Rest) -> Result<Response, Fault> {
    let current = fetch(&rest).await?;
    let request = UnsetVolumeTypeExtraSpecRequest { volume_type_id: current.id, key: rest.param("key").into() };
    rest.client().unset_volume_type_extra_spec(rest.request(request)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub async fn action(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    const ACTIONS: &str = "addProjectAccess, removeProjectAccess";
    let body = body::read_json(request_body).await?;
    let (name, argument) = body::action(&body, ACTIONS)?;
    let grant = match name {
        "addProjectAccess" => true,
        "removeProjectAccess" => false,
        other => {
            return Err(Fault::bad_request(format!(
                "unknown volume type action {}; actions: {ACTIONS}",
                basalt::error::excerpt(other)
            )));
        }
    };
    let argument = argument.with(&["project"])?;
    let project =
        body::string(argument, "project")?.ok_or_else(|| Fault::bad_request(format!("{name} needs project")))?;
    let current = fetch(&rest).await?;
    let request = VolumeTypeAccessRequest { volume_type_id: current.id, project_id: project };
    let mut client = rest.client();
    if grant {
        client.add_volume_type_access(rest.request(request)).await?;
    } else {
        client.remove_volume_type_access(rest.request(request)).await?;
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

pub async fn access_list(rest: Rest) -> Result<Response, Fault> {
    let current = fetch(&rest).await?;
    if current.is_public {
        return Err(Fault::not_found(format!("volume type {} is public and has no access list", current.name)));
    }
    let access: Vec<_> = current
        .project_ids
        .iter()
        .map(|project| json!({"volume_type_id": current.id, "project_id": project}))
        .collect();
    Ok(Json(json!({"volume_type_access": access})).into_response())
}
