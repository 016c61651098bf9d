//! `/default-types` (3.62, admin): a project's own default volume type, which its volumes get
//! when created without one.

use axum::{
    Json,
    body::Body,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use basalt::proto::{
    GetProjectDefaultTypeRequest, ListProjectDefaultTypesRequest, ProjectDefaultType, SetProjectDefaultTypeRequest,
    UnsetProjectDefaultTypeRequest,
};
use serde_json::{Value, json};

use crate::{Rest, body, fault::Fault};

fn view(default_type: &ProjectDefaultType) -> Value {
    json!({"project_id": default_type.project_id, "volume_type_id": default_type.volume_type_id})
}

pub async fn set(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "default_type")?;
    body::check_keys(section, &["volume_type"], true)?;
    let volume_type = body::string(section, "volume_type")?
        .filter(|name| !name.trim().is_empty())
        .ok_or_else(|| Fault::bad_request("default_type needs volume_type: a volume type's name or id"))?;
    let request = SetProjectDefaultTypeRequest { project_id: rest.param("target").to_owned(), volume_type };
    let set = rest.client().set_project_default_type(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"default_type": view(&set)})).into_response())
}

pub async fn show(rest: Rest) -> Result<Response, Fault> {
    let request = GetProjectDefaultTypeRequest { project_id: rest.param("target").to_owned() };
    let shown = rest.client().get_project_default_type(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"default_type": view(&shown)})).into_response())
}

pub async fn list(rest: Rest) -> Result<Response, Fault> {
    let listed =
        rest.client().list_project_default_types(rest.request(ListProjectDefaultTypesRequest {})).await?.into_inner();
    let views: Vec<Value> = listed.default_types.iter().map(view).collect();
    Ok(Json(json!({"default_types": views})).into_response())
}

pub async fn unset(rest: Rest) -> Result<Response, Fault> {
    let request = UnsetProjectDefaultTypeRequest { project_id: rest.param("target").to_owned() };
    rest.client().unset_project_default_type(rest.request(request)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
