//! The services of a deployment as Cinder's `os-services` shows them: this scheduler, and a volume
//! service per backend of each reporting node; and which of them an admin disabled. A disabled
//! volume service is given no new volumes (placement leaves its pools out), while what it holds
//! stays served: attach, snapshot, delete and the rest go on.

use std::{
    collections::{BTreeSet, HashMap},
    time::Instant,
};

use basalt::{
    ServiceError,
    proto::{ListServicesRequest, Service, UpdateServiceRequest},
};
use chrono::Utc;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, sea_query::OnConflict};

use crate::{
    core::Core,
    db::{db_error, service_state},
};

pub const VOLUME: &str = "basalt-volume";
pub const SCHEDULER: &str = "basalt-scheduler";
const MAX_REASON: usize = 255;

/// Why each disabled service is disabled, by binary and host.
pub async fn disabled(db: &impl ConnectionTrait) -> Result<HashMap<(String, String), String>, ServiceError> {
    let rows = service_state::Entity::find().all(db).await.map_err(db_error)?;
    Ok(rows.into_iter().map(|row| ((row.binary, row.host), row.disabled_reason)).collect())
}

/// The hosts (`node@backend`) of the volume services that take no new volumes.
pub async fn disabled_volume_hosts(db: &impl ConnectionTrait) -> Result<BTreeSet<String>, ServiceError> {
    let disabled = disabled(db).await?;
    Ok(disabled.into_keys().filter(|(binary, _)| binary == VOLUME).map(|(_, host)| host).collect())
}

/// Every service, with its state, as `filter` narrows them (by binary, and by host or node).
pub async fn list(core: &Core, filter: &ListServicesRequest) -> Result<Vec<Service>, ServiceError> {
    let disabled = disabled(&core.db).await?;
    let now = Instant::now();
    let mut services = vec![Service {
        binary: SCHEDULER.into(),
        host: core.instance.clone(),
        zone: "nova".into(),
        state: "up".into(),
        updated_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        ..Default::default()
    }];
    for node in core.capacity.nodes() {
        let backends: BTreeSet<&str> = node.report.pools.iter().map(|pool| pool.backend.as_str()).collect();
        for backend in backends {
            services.push(Service {
                binary: VOLUME.into(),
                host: format!("{}@{backend}", node.report.node_id),
                zone: node.report.availability_zone.clone(),
                state: if node.is_fresh(now) { "up" } else { "down" }.into(),
                updated_at: node.report.reported_at,
                ..Default::default()
            });
        }
    }
    for service in &mut services {
        let reason = disabled.get(&(service.binary.clone(), service.host.clone()));
        service.status = if reason.is_some() { "disabled" } else { "enabled" }.into();
        service.disabled_reason = reason.cloned().unwrap_or_default();
    }
    services.retain(|service| {
        (filter.binary.is_empty() || service.binary == filter.binary)
            && (filter.host.is_empty()
                || service.host == filter.host
                || service.host.starts_with(&format!("{}@", filter.host)))
    });
    Ok(services)
}

/// Enables or disables one service the list shows; the service as it is now.
pub async fn update(core: &Core, request: UpdateServiceRequest) -> Result<Service, ServiceError> {
    if ![VOLUME, SCHEDULER].contains(&request.binary.as_str()) {
        return Err(ServiceError::invalid(format!(
            "unknown binary {}: use cinder-volume or cinder-scheduler",
            basalt::error::excerpt(&request.binary)
        )));
    }
    let reason = request.disabled_reason.trim();
    if reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(ServiceError::invalid(format!(
            "disabled_reason must be at most {MAX_REASON} characters, without control characters"
        )));
    }
    let exact = ListServicesRequest { binary: request.binary.clone(), host: String::new() };
    let known = list(core, &exact).await?;
    let Some(mut service) = known.iter().find(|service| service.host == request.host).cloned() else {
        let hosts: Vec<&str> = known.iter().map(|service| service.host.as_str()).collect();
        return Err(ServiceError::not_found(format!(
            "no {} service on host {}; the hosts are: {}",
            request.binary,
            basalt::error::excerpt(&request.host),
            hosts.join(", ")
        )));
    };
    let key = (request.binary, request.host);
    if request.disabled {
        let row = service_state::ActiveModel {
            binary: Set(key.0.clone()),
            host: Set(key.1.clone()),
            disabled_reason: Set(reason.to_owned()),
            updated_at: Set(Utc::now()),
        };
        let upsert = OnConflict::columns([service_state::Column::Binary, service_state::Column::Host])
            .update_columns([service_state::Column::DisabledReason, service_state::Column::UpdatedAt])
            .to_owned();
        service_state::Entity::insert(row).on_conflict(upsert).exec(&core.db).await.map_err(db_error)?;
    } else {
        service_state::Entity::delete_by_id(key.clone()).exec(&core.db).await.map_err(db_error)?;
    }
    // This scheduler's next placement reads the change; the others read it with their next bookings.
    core.capacity.update_pools(|table| table.forget_bookings());
    tracing::warn!(binary = %key.0, host = %key.1, disabled = request.disabled, reason, "service state changed by an admin");
    service.status = if request.disabled { "disabled" } else { "enabled" }.into();
    service.disabled_reason = if request.disabled { reason.to_owned() } else { String::new() };
    Ok(service)
}
