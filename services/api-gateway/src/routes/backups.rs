//! `/backups`: create, list, show, update, delete, restore, export and import of records, and
//! the admin actions (`cinder/api/contrib/backups.py`, `api/v3/backups.py`).

use axum::{
    Json,
    body::Body,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use basalt::proto::{
    Backup, BackupRecord, BackupStatus, CreateBackupRequest, DeleteBackupRequest, GetBackupRequest, ListBackupsRequest,
    ResetBackupStatusRequest, RestoreBackupRequest, UpdateBackupRequest,
};
use serde_json::{Value, json};

use super::{all_tenants, check_filters, next_link, paging, with_count};
use crate::{Rest, body, fault::Fault, views};

const CREATE_KEYS: &[&str] = &[
    "volume_id",
    "container",
    "name",
    "description",
    "incremental",
    "force",
    "snapshot_id",
    "metadata",
    "availability_zone",
];
const UPDATE_KEYS: &[&str] = &["name", "description", "metadata"];
const ACTIONS: &str = "os-reset_status, os-force_delete";

fn view(rest: &Rest, backup: &Backup) -> Value {
    views::backup_detail(backup, rest.version, rest.context.is_admin, &rest.base)
}

fn summary(rest: &Rest, backup: &Backup) -> Value {
    json!({"id": backup.id, "name": backup.name, "links": views::links(&rest.base, "backups", &backup.id)})
}

pub async fn create(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "backup")?;
    body::check_keys(section, CREATE_KEYS, rest.version.at_least(53))?;
    let volume_id = body::uuid(section, "volume_id")?.ok_or_else(|| Fault::bad_request("volume_id is required"))?;
    let request = CreateBackupRequest {
        volume_id,
        name: body::string(section, "name")?.unwrap_or_default(),
        description: body::string(section, "description")?.unwrap_or_default(),
        incremental: body::boolean(section, "incremental")?.unwrap_or(false),
        force: body::boolean(section, "force")?.unwrap_or(false),
        snapshot_id: body::uuid(section, "snapshot_id")?.unwrap_or_default(),
        metadata: if rest.version.at_least(43) {
            body::string_map(section, "metadata")?.unwrap_or_default()
        } else {
            Default::default()
        },
        container: body::string(section, "container")?.unwrap_or_default(),
    };
    let backup = rest.client().create_backup(rest.request(request)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, Json(json!({"backup": summary(&rest, &backup)}))).into_response())
}

/// A page of backups, with Cinder's filters, sorting and paging, as `path` lists them.
async fn list_backups(rest: &Rest, path: &str, view: fn(&Rest, &Backup) -> Value) -> Result<Response, Fault> {
    check_filters(rest, "backup")?;
    let (page, sort) = paging(rest)?;
    let status = match rest.query("status") {
        None => BackupStatus::Unspecified,
        Some(name) => BackupStatus::from_cinder_name(name)
            .ok_or_else(|| Fault::bad_request(format!("unknown backup status {}", basalt::error::excerpt(name))))?,
    };
    let request = ListBackupsRequest {
        volume_id: super::query_uuid(rest, "volume_id")?.unwrap_or_default(),
        status: status as i32,
        name: rest.query("name").unwrap_or_default().to_owned(),
        all_projects: all_tenants(rest)?,
        page: Some(page),
        sort,
        with_count: with_count(rest)?,
    };
    let response = rest.client().list_backups(rest.request(request)).await?.into_inner();
    let page = response.page.unwrap_or_default();
    let mut body = json!({"backups": response.backups.iter().map(|backup| view(rest, backup)).collect::<Vec<_>>()});
    if let Some(links) = next_link(rest, path, &page.next_marker) {
        body["backups_links"] = links;
    }
    if let Some(count) = page.total_count {
        body["count"] = json!(count);
    }
    Ok(Json(body).into_response())
}

pub async fn list(rest: Rest) -> Result<Response, Fault> {
    list_backups(&rest, "backups", summary).await
}

pub async fn list_detail(rest: Rest) -> Result<Response, Fault> {
    list_backups(&rest, "backups/detail", view).await
}

pub async fn show(rest: Rest) -> Result<Response, Fault> {
    let request = GetBackupRequest { backup_id: rest.param("backup_id").into() };
    let backup = rest.client().get_backup(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"backup": view(&rest, &backup)})).into_response())
}

pub async fn update(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    if !rest.version.at_least(9) {
        return Err(Fault::not_found("updating a backup needs microversion 3.9 or later"));
    }
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "backup")?;
    body::check_keys(section, UPDATE_KEYS, true)?;
    let metadata = if rest.version.at_least(43) { body::string_map(section, "metadata")? } else { None };
    let request = UpdateBackupRequest {
        backup_id: rest.param("backup_id").into(),
        name: body::string(section, "name")?,
        description: body::string(section, "description")?,
        replace_metadata: metadata.is_some(),
        metadata: metadata.unwrap_or_default(),
    };
    let backup = rest.client().update_backup(rest.request(request)).await?.into_inner();
    // Cinder answers an update with the summary view, as it does a create.
    Ok(Json(json!({"backup": summary(&rest, &backup)})).into_response())
}

pub async fn delete(rest: Rest) -> Result<Response, Fault> {
    let request = DeleteBackupRequest { backup_id: rest.param("backup_id").into(), force: false };
    rest.client().delete_backup(rest.request(request)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub async fn restore(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "restore")?;
    body::check_keys(section, &["volume_id", "name"], true)?;
    let request = RestoreBackupRequest {
        backup_id: rest.param("backup_id").into(),
        volume_id: body::uuid(section, "volume_id")?.unwrap_or_default(),
        name: body::string(section, "name")?.unwrap_or_default(),
    };
    let restored = rest.client().restore_backup(rest.request(request)).await?.into_inner();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"restore": {
            "backup_id": restored.backup_id,
            "volume_id": restored.volume_id,
            "volume_name": restored.volume_name,
        }})),
    )
        .into_response())
}

pub async fn export_record(rest: Rest) -> Result<Response, Fault> {
    let request = GetBackupRequest { backup_id: rest.param("backup_id").into() };
    let record = rest.client().export_backup_record(rest.request(request)).await?.into_inner();
    Ok(Json(json!({"backup-record": {"backup_service": record.backup_service, "backup_url": record.backup_url}}))
        .into_response())
}

pub async fn import_record(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let section = body::section(&body, "backup-record")?;
    body::check_keys(section, &["backup_service", "backup_url"], true)?;
    let record = BackupRecord {
        backup_service: body::string(section, "backup_service")?
            .ok_or_else(|| Fault::bad_request("backup-record needs backup_service"))?,
        backup_url: body::string(section, "backup_url")?
            .ok_or_else(|| Fault::bad_request("backup-record needs backup_url"))?,
    };
    let backup = rest.client().import_backup_record(rest.request(record)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(json!({"backup": summary(&rest, &backup)}))).into_response())
}

pub async fn action(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let body = body::read_json(request_body).await?;
    let (name, arguments) = body::action(&body, ACTIONS)?;
    let backup_id = rest.param("backup_id").to_owned();
    match name {
        "os-reset_status" => {
            let arguments = arguments.with(&["status"])?;
            let status =
                body::string(arguments, "status")?.ok_or_else(|| Fault::bad_request("os-reset_status needs status"))?;
            let status = BackupStatus::from_cinder_name(&status).ok_or_else(|| {
                Fault::bad_request(format!("unknown backup status {}", basalt::error::excerpt(&status)))
            })?;
            let request = ResetBackupStatusRequest { backup_id, status: status as i32 };
            rest.client().reset_backup_status(rest.request(request)).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-force_delete" => {
            rest.client().delete_backup(rest.request(DeleteBackupRequest { backup_id, force: true })).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        other => Err(Fault::bad_request(format!(
            "unknown backup action {}; actions: {ACTIONS}",
            basalt::error::excerpt(other)
        ))),
    }
}
