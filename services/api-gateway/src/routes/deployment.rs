//! What the deployment offers: availability zones, services, pools and API extensions.

use axum::{
    Json,
    body::Body,
    response::{IntoResponse, Response},
};
use basalt::proto::{ListAvailabilityZonesRequest, ListPoolsRequest, ListServicesRequest, UpdateServiceRequest};
use serde_json::{Value, json};

use crate::{Rest, body, fault::Fault, views};

pub async fn availability_zones(rest: Rest) -> Result<Response, Fault> {
    let zones =
        rest.client().list_availability_zones(rest.request(ListAvailabilityZonesRequest {})).await?.into_inner();
    let info: Vec<Value> = zones
        .availability_zones
        .iter()
        .map(|zone| json!({"zoneName": zone.name, "zoneState": {"available": zone.available}}))
        .collect();
    Ok(Json(json!({"availabilityZoneInfo": info})).into_response())
}

/// A service's binary as Cinder names it (`cinder-volume`), which clients filter on.
fn cinder_binary(binary: &str) -> String {
    binary.replace("basalt-", "cinder-")
}

/// The binary a client names as Cinder does, as the scheduler names it (`basalt-volume`).
fn basalt_binary(binary: &str) -> String {
    binary.replace("cinder-", "basalt-")
}

pub async fn services(rest: Rest) -> Result<Response, Fault> {
    let request = ListServicesRequest {
        host: rest.query("host").unwrap_or_default().to_owned(),
        binary: basalt_binary(rest.query("binary").unwrap_or_default()),
    };
    let services = rest.client().list_services(rest.request(request)).await?.into_inner().services;
    let views: Vec<Value> = services
        .iter()
        .map(|service| {
            let mut view = json!({
                "binary": cinder_binary(&service.binary),
                "host": service.host,
                "zone": service.zone,
                "status": service.status,
                "state": service.state,
                "updated_at": views::timestamp(service.updated_at.as_ref()),
                "disabled_reason": if service.disabled_reason.is_empty() { Value::Null } else { json!(service.disabled_reason) },
            });
            if rest.version.at_least(7) {
                view["cluster"] = Value::Null;
            }
            // Replication and backend state are volume services' alone, as Cinder shows them.
            if service.binary == "basalt-volume" {
                view["replication_status"] = json!("disabled");
                view["active_backend_id"] = Value::Null;
                view["frozen"] = json!(false);
                if rest.version.at_least(49) {
                    view["backend_state"] = json!(if service.state == "up" { "up" } else { "down" });
                }
            }
            view
        })
        .collect();
    Ok(Json(json!({"services": views})).into_response())
}

/// `PUT /os-services/{enable,disable,disable-log-reason}` (admin): Cinder's answer echoes the
/// body's `host`, `service` and `binary` with the new status.
pub async fn update_service(rest: Rest, request_body: Body) -> Result<Response, Fault> {
    let action = rest.param("service_action").to_owned();
    let (disabled, with_reason) = match action.as_str() {
        "enable" => (false, false),
        "disable" => (true, false),
        "disable-log-reason" => (true, true),
        "freeze" | "thaw" | "failover_host" | "failover" => {
            return Err(Fault::bad_request(format!(
                "{action} is for replicated backends, and Basalt's have no replication: use enable, disable or \
                 disable-log-reason"
            )));
        }
        other => {
            return Err(Fault::bad_request(format!(
                "unknown action {}: use enable, disable or disable-log-reason",
                basalt::error::excerpt(other)
            )));
        }
    };
    let body = body::read_json(request_body).await?;
    let section = body::object(&body)?;
    body::check_keys(section, &["host", "binary", "service", "disabled_reason"], true)?;
    let host = body::string(section, "host")?.ok_or_else(|| Fault::bad_request("os-services needs the host"))?;
    let binary = body::string(section, "binary")?.unwrap_or_default();
    // `service` is the deprecated name of `binary`, still sent by old clients.
    let service = body::string(section, "service")?.unwrap_or_default();
    let named = if binary.is_empty() { &service } else { &binary };
    if named.is_empty() {
        return Err(Fault::bad_request("os-services needs the binary: cinder-volume or cinder-scheduler"));
    }
    let reason = body::string(section, "disabled_reason")?.unwrap_or_default();
    if with_reason && reason.trim().is_empty() {
        return Err(Fault::bad_request("disable-log-reason needs a disabled_reason of 1 to 255 characters"));
    }
    let request = UpdateServiceRequest {
        host: host.clone(),
        binary: basalt_binary(named),
        disabled,
        disabled_reason: if with_reason { reason.trim().to_owned() } else { String::new() },
    };
    let updated = rest.client().update_service(rest.request(request)).await?.into_inner();
    let mut answer = json!({
        "disabled": disabled,
        "host": host,
        "service": service,
        "binary": binary,
        "status": updated.status,
    });
    if with_reason {
        answer["disabled_reason"] = json!(updated.disabled_reason);
    }
    Ok(Json(answer).into_response())
}

pub async fn pools(rest: Rest) -> Result<Response, Fault> {
    let detail = super::query_flag(&rest, "detail")?.unwrap_or(false);
    let request = ListPoolsRequest { name: rest.query("name").unwrap_or_default().to_owned() };
    let pools = rest.client().list_pools(rest.request(request)).await?.into_inner().pools;
    let views: Vec<Value> = pools
        .iter()
        .map(|pool| {
            if !detail {
                return json!({"name": pool.name});
            }
            let mut capabilities = json!({
                "pool_name": pool.r#ref.as_ref().map(|pool| pool.pool.clone()).unwrap_or_default(),
                "total_capacity_gb": pool.total_capacity_gib,
                "free_capacity_gb": pool.free_capacity_gib,
                "allocated_capacity_gb": pool.allocated_capacity_gib,
                "provisioned_capacity_gb": pool.provisioned_capacity_gib,
                "reserved_percentage": pool.reserved_percentage,
                "max_over_subscription_ratio": pool.max_over_subscription_ratio.to_string(),
                "thin_provisioning_support": pool.thin_provisioning_support,
                "thick_provisioning_support": pool.thick_provisioning_support,
                "total_volumes": pool.total_volumes,
                "timestamp": views::timestamp(pool.reported_at.as_ref()),
                "vendor_name": "Basalt",
                "driver_version": env!("CARGO_PKG_VERSION"),
                "backend_state": if pool.schedulable { "up" } else { "down" },
            });
            for (key, value) in &pool.capabilities {
                capabilities[key] = json!(value);
            }
            json!({"name": pool.name, "capabilities": capabilities})
        })
        .collect();
    Ok(Json(json!({"pools": views})).into_response())
}

/// `GET /os-hosts` (admin): every service's host, as Cinder's hosts extension lists them.
pub async fn hosts(rest: Rest) -> Result<Response, Fault> {
    let services = rest.client().list_services(rest.request(ListServicesRequest::default())).await?.into_inner();
    let zone = rest.query("zone").filter(|zone| !zone.is_empty());
    let hosts: Vec<Value> = services
        .services
        .iter()
        .filter(|service| zone.is_none_or(|zone| service.zone == zone))
        .map(|service| {
            json!({
                "host_name": service.host,
                "service": cinder_binary(&service.binary),
                "zone": service.zone,
                "service-status": if service.state == "up" { "available" } else { "unavailable" },
                "service-state": service.status,
                "last-update": views::timestamp(service.updated_at.as_ref()),
            })
        })
        .collect();
    Ok(Json(json!({"hosts": hosts})).into_response())
}

/// `GET /capabilities/{host}` (admin): what a backend (`node@backend`, as `os-services` lists it)
/// offers, and the capabilities a volume type's extra specs can ask of it (placement matches
/// `capabilities:<key>` or a bare `<key>` against them).
pub async fn capabilities(rest: Rest) -> Result<Response, Fault> {
    let host = rest.param("host");
    let pools = rest.client().list_pools(rest.request(ListPoolsRequest::default())).await?.into_inner().pools;
    let prefix = format!("{host}#");
    let Some(pool) = pools.iter().find(|pool| pool.name.starts_with(&prefix)) else {
        return Err(Fault::not_found(format!("Can't find service: {}", basalt::error::excerpt(host))));
    };
    let capability = |key: &str| pool.capabilities.get(key).cloned();
    let boolean =
        |title: &str, description: &str| json!({"title": title, "description": description, "type": "boolean"});
    let mut properties = json!({
        "thin_provisioning_support": boolean("Thin Provisioning", "Volumes are thin: space is taken as data is written."),
        "thick_provisioning_support": boolean("Thick Provisioning", "Volumes take their whole size when created."),
        "multiattach": boolean("Multi-attach", "A volume may be attached to several hosts at once."),
    });
    for key in pool.capabilities.keys() {
        properties[key] = json!({"title": key, "description": format!("The pool's {key}."), "type": "string"});
    }
    Ok(Json(json!({
        "namespace": format!("OS::Storage::Capabilities::{host}"),
        "vendor_name": "Basalt",
        "volume_backend_name": capability("volume_backend_name"),
        "pool_name": pool.r#ref.as_ref().map(|pool| pool.pool.clone()),
        "driver_version": env!("CARGO_PKG_VERSION"),
        "storage_protocol": capability("storage_protocol"),
        "display_name": Value::Null,
        "description": Value::Null,
        "visibility": Value::Null,
        "replication_targets": [],
        "properties": properties,
    }))
    .into_response())
}

pub async fn extensions(_rest: Rest) -> Result<Response, Fault> {
    let extension = |alias: &str, name: &str, description: &str| json!({"alias": alias, "name": name, "description": description, "updated": "2026-11-25T00:00:00Z", "links": []});
    Ok(Json(json!({"extensions": [
        extension("os-extended-snapshot-attributes", "ExtendedSnapshotAttributes", "Extended snapshot attributes"),
        extension("os-vol-host-attr", "VolumeHostAttribute", "Expose the host of a volume"),
        extension("os-vol-tenant-attr", "VolumeTenantAttribute", "Expose the project of a volume"),
        extension("os-vol-mig-status-attr", "VolumeMigStatusAttribute", "Expose migration status"),
        extension("os-volume-type-access", "VolumeTypeAccess", "Volume type access"),
        extension("os-types-manage", "TypesManage", "Manage volume types"),
        extension("os-types-extra-specs", "TypesExtraSpecs", "Volume type extra specs"),
        extension("os-quota-sets", "Quotas", "Quota management"),
        extension("os-availability-zone", "AvailabilityZones", "List availability zones"),
        extension("os-services", "Services", "List services"),
        extension("scheduler-stats", "Scheduler_stats", "Scheduler stats"),
        extension("os-admin-actions", "AdminActions", "Admin actions"),
        extension("os-volume-actions", "VolumeActions", "Volume actions"),
    ]}))
    .into_response())
}
