//! `/qos-specs` (admin): QoS specs and their association with volume types. Cinder associates with
//! GET calls (`/associate?vol_type_id=`), and so does this gateway.

use axum::{
    Json,
    body::Body,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use basalt::proto::{
    AssociateQosSpecsRequest, CreateQosSpecsRequest, DeleteQosSpecsRequest, GetQosSpecsRequest, ListQosSpecsRequest,
    QosSpecs, UpdateQosSpecsRequest,
};
use serde_json::{Value, json};

use crate::{Rest, body, fault::Fault, views};

fn view(qos: &QosSpecs) -> Value {
    json!({"id": qos.id, "name": qos.name, "consumer": qos.consumer, "specs": qos.specs})
}

fn reply(rest: &Rest, qos: &QosSpecs) -> Response {
    Json(json!({"qos_specs": view(qos), "links": views::links(&rest.base, "qos-specs", &qos.id)})).into_response()
}

/// The string keys of a `qos_specs` section other than `name` and `consumer`.
fn spec_entries(section: &serde_json::Map<String, Value>) -> Result<std::collections::HashMap<String, String>, Fault> {
    section
        .iter()
        .filter(|(key, _)| *key != "name" && *key != "consumer")
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key.clone(), text.clone())),
            Value::Number(number) => Ok((key.clone(), number.to_string())),
            _ => Err(Fault::bad_request(format!("qos spec {key} must be a string"))),
        })
        .collect()
}

pub async fn create(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "qos_specs")?;
    let request = CreateQosSpecsRequest {
        name: body::string(section, "name")?.ok_or_else(|| Fault::bad_request("qos specs need a name"))?,
        consumer: body::string(section, "consumer")?.unwrap_or_default(),
        specs: spec_entries(section)?,
    };
    let qos = rest.client().create_qos_specs(rest.request(request)).await?.into_inner();
    Ok(reply(&rest, &qos))
}

pub async fn list(rest: Rest) -> Result<Response, Fault> {
    let all = rest.client().list_qos_specs(rest.request(ListQosSpecsRequest {})).await?.into_inner().qos_specs;
    Ok(Json(json!({"qos_specs": all.iter().map(view).collect::<Vec<_>>()})).into_response())
}

fn id(rest: &Rest) -> String {
    rest.param("qos_id").to_owned()
}

pub async fn show(rest: Rest) -> Result<Response, Fault> {
    let qos =
        rest.client().get_qos_specs(rest.request(GetQosSpecsRequest { qos_specs_id: id(&rest) })).await?.into_inner();
    Ok(reply(&rest, &qos))
}

pub async fn update(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "qos_specs")?;
    let specs = spec_entries(section)?;
    let request = UpdateQosSpecsRequest {
        qos_specs_id: id(&rest),
        specs: specs.clone(),
        delete_keys: Vec::new(),
        consumer: body::string(section, "consumer")?.unwrap_or_default(),
    };
    rest.client().update_qos_specs(rest.request(request)).await?;
    Ok(Json(json!({"qos_specs": specs})).into_response())
}

pub async fn delete_keys(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let usage = || Fault::bad_request("the body must be {\"keys\": [\"<key>\", ...]}");
    let keys: Vec<String> = body::only(&body, "keys")?
        .as_array()
        .ok_or_else(usage)?
        .iter()
        .map(|key| key.as_str().map(str::to_owned).ok_or_else(usage))
        .collect::<Result<_, _>>()?;
    let request = UpdateQosSpecsRequest { qos_specs_id: id(&rest), delete_keys: keys, ..Default::default() };
    rest.client().update_qos_specs(rest.request(request)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub async fn delete(rest: Rest) -> Result<Response, Fault> {
    let force = super::query_flag(&rest, "force")?.unwrap_or(false);
    rest.client().delete_qos_specs(rest.request(DeleteQosSpecsRequest { qos_specs_id: id(&rest), force })).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn associate_with(rest: &Rest, disassociate: bool, all: bool) -> Result<Response, Fault> {
    let volume_type_id = if all {
        String::new()
    } else {
        rest.query("vol_type_id")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Fault::bad_request("vol_type_id is required"))?
            .to_owned()
    };
    let request = AssociateQosSpecsRequest { qos_specs_id: id(rest), volume_type_id, disassociate };
    rest.client().associate_qos_specs(rest.request(request)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub async fn associate(rest: Rest) -> Result<Response, Fault> {
    associate_with(&rest, false, false).await
}

pub async fn disassociate(rest: Rest) -> Result<Response, Fault> {
    associate_with(&rest, true, false).await
}

pub async fn disassociate_all(rest: Rest) -> Result<Response, Fault> {
    associate_with(&rest, true, true).await
}

pub async fn associations(rest: Rest) -> Result<Response, Fault> {
    let request = GetQosSpecsRequest { qos_specs_id: id(&rest) };
    let associations =
        rest.client().list_qos_specs_associations(rest.request(request)).await?.into_inner().associations;
    let views: Vec<Value> = associations
        .iter()
        .map(|association| json!({"association_type": "volume_type", "name": association.volume_type_name, "id": association.volume_type_id}))
        .collect();
    Ok(Json(json!({"qos_associations": views})).into_response())
}
