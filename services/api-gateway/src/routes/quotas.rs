//! Quotas (`os-quota-sets`) and the project's absolute limits (`limits`).

use std::collections::BTreeMap;

use axum::{
    Json,
    body::Body,
    response::{IntoResponse, Response},
};
use basalt::proto::{GetQuotasRequest, QuotaSet, UpdateQuotasRequest};
use serde_json::{Value, json};

use crate::{Rest, body, fault::Fault};

async fn quota_set(rest: &Rest, project: &str) -> Result<QuotaSet, Fault> {
    let request = GetQuotasRequest { project_id: project.into(), defaults_only: false };
    Ok(rest.client().get_quotas(rest.request(request)).await?.into_inner())
}

/// Cinder's quota set: every resource's limit (or, with `usage`, limit and use), under the
/// project's `id` in show and defaults but not in an update's answer.
fn quota_view(set: &QuotaSet, usage: bool, with_id: bool) -> Value {
    let mut view = serde_json::Map::new();
    if with_id {
        view.insert("id".into(), json!(set.project_id));
    }
    let sorted: BTreeMap<_, _> = set.quotas.iter().collect();
    for (resource, value) in sorted {
        let entry = if usage {
            json!({"limit": value.limit, "in_use": value.in_use, "reserved": value.reserved, "allocated": 0})
        } else {
            json!(value.limit)
        };
        view.insert(resource.clone(), entry);
    }
    Value::Object(view)
}

pub async fn quota_show(rest: Rest) -> Result<Response, Fault> {
    let usage = super::query_flag(&rest, "usage")?.unwrap_or(false);
    let set = quota_set(&rest, rest.param("target")).await?;
    Ok(Json(json!({"quota_set": quota_view(&set, usage, true)})).into_response())
}

pub async fn quota_defaults(rest: Rest) -> Result<Response, Fault> {
    let request = GetQuotasRequest { project_id: rest.param("target").into(), defaults_only: true };
    let set = rest.client().get_quotas(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"quota_set": quota_view(&set, false, true)})).into_response())
}

pub async fn quota_update(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "quota_set")?;
    let mut limits = std::collections::HashMap::new();
    for (resource, value) in section {
        if resource == "tenant_id" || resource == "id" {
            if !value.is_string() {
                return Err(Fault::bad_request(format!("{resource} must be a string")));
            }
            continue;
        }
        let digits = |text: &str| {
            let digits = text.strip_prefix('-').unwrap_or(text);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        };
        let limit = match value {
            Value::Number(number) => number.as_i64(),
            Value::String(text) if digits(text) => text.parse::<i64>().ok(),
            _ => None,
        }
        .ok_or_else(|| Fault::bad_request(format!("quota {resource} must be a whole number, -1 for unlimited")))?;
        limits.insert(resource.clone(), limit);
    }
    let request = UpdateQuotasRequest { project_id: rest.param("target").into(), limits, reset: false };
    let set = rest.client().update_quotas(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"quota_set": quota_view(&set, false, false)})).into_response())
}

pub async fn quota_reset(rest: Rest) -> Result<Response, Fault> {
    let request = UpdateQuotasRequest { project_id: rest.param("target").into(), reset: true, ..Default::default() };
    rest.client().update_quotas(rest.request(request)).await?;
    Ok(axum::http::StatusCode::OK.into_response())
}

pub async fn limits(rest: Rest) -> Result<Response, Fault> {
    let set = quota_set(&rest, "").await?;
    let value = |resource: &str| set.quotas.get(resource).cloned().unwrap_or_default();
    let absolute = json!({
        "maxTotalVolumes": value("volumes").limit,
        "maxTotalSnapshots": value("snapshots").limit,
        "maxTotalVolumeGigabytes": value("gigabytes").limit,
        "maxTotalBackups": value("backups").limit,
        "maxTotalBackupGigabytes": value("backup_gigabytes").limit,
        "totalVolumesUsed": value("volumes").in_use,
        "totalGigabytesUsed": value("gigabytes").in_use,
        "totalSnapshotsUsed": value("snapshots").in_use,
        "totalBackupsUsed": value("backups").in_use,
        "totalBackupGigabytesUsed": value("backup_gigabytes").in_use,
    });
    Ok(Json(json!({"limits": {"rate": [], "absolute": absolute}})).into_response())
}
