//! Per-project quotas. Usage lives in `quota_usages` and changes only inside the transaction that
//! creates or removes the resource, by an increment guarded by the limit: two concurrent requests
//! can never both take the last unit, and usage can never drift from what exists.

use std::collections::BTreeMap;

use basalt::{
    ErrorCode, ServiceError,
    ids::ProjectId,
    proto::{QuotaSet, QuotaValue},
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};

use crate::db::{db_error, quota_limit, quota_usage, volume_type};

pub const VOLUMES: &str = "volumes";
pub const SNAPSHOTS: &str = "snapshots";
pub const GIGABYTES: &str = "gigabytes";
pub const BACKUPS: &str = "backups";
pub const BACKUP_GIGABYTES: &str = "backup_gigabytes";
pub const PER_VOLUME_GIGABYTES: &str = "per_volume_gigabytes";
pub const GROUPS: &str = "groups";

/// Cinder's default limits; -1 means unlimited.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaDefaults {
    pub volumes: i64,
    pub snapshots: i64,
    pub gigabytes: i64,
    pub backups: i64,
    pub backup_gigabytes: i64,
    pub per_volume_gigabytes: i64,
    pub groups: i64,
}

impl Default for QuotaDefaults {
    fn default() -> Self {
        Self {
            volumes: 10,
            snapshots: 10,
            gigabytes: 1000,
            backups: 10,
            backup_gigabytes: 1000,
            per_volume_gigabytes: -1,
            groups: 10,
        }
    }
}

impl QuotaDefaults {
    fn get(&self, resource: &str) -> i64 {
        match resource {
            VOLUMES => self.volumes,
            SNAPSHOTS => self.snapshots,
            GIGABYTES => self.gigabytes,
            BACKUPS => self.backups,
            BACKUP_GIGABYTES => self.backup_gigabytes,
            PER_VOLUME_GIGABYTES => self.per_volume_gigabytes,
            GROUPS => self.groups,
            // Per-type quotas (volumes_<type>, ...) are unlimited unless set.
            _ => -1,
        }
    }

    fn global_resources() -> [&'static str; 7] {
        [VOLUMES, SNAPSHOTS, GIGABYTES, BACKUPS, BACKUP_GIGABYTES, PER_VOLUME_GIGABYTES, GROUPS]
    }
}

/// What a resource consumes: the global counters plus the per-type ones.
pub fn volume_usage(type_name: &str, size_gib: i64) -> Vec<(String, i64)> {
    let mut usage = vec![(VOLUMES.into(), 1), (GIGABYTES.into(), size_gib)];
    usage.extend(volume_type_usage(type_name, size_gib));
    usage
}

/// A volume's share of its type's own counters: what a retype moves from one type to another.
pub fn volume_type_usage(type_name: &str, size_gib: i64) -> Vec<(String, i64)> {
    vec![(format!("volumes_{type_name}"), 1), (format!("gigabytes_{type_name}"), size_gib)]
}

/// Snapshots count against `gigabytes` too, as in Cinder.
pub fn snapshot_usage(type_name: &str, size_gib: i64) -> Vec<(String, i64)> {
    vec![
        (SNAPSHOTS.into(), 1),
        (GIGABYTES.into(), size_gib),
        (format!("snapshots_{type_name}"), 1),
        (format!("gigabytes_{type_name}"), size_gib),
    ]
}

/// A backup counts once against `backups` and by its volume's size against `backup_gigabytes`.
pub fn backup_usage(size_gib: i64) -> Vec<(String, i64)> {
    vec![(BACKUPS.into(), 1), (BACKUP_GIGABYTES.into(), size_gib)]
}

pub fn extend_usage(type_name: &str, delta_gib: i64) -> Vec<(String, i64)> {
    vec![(GIGABYTES.into(), delta_gib), (format!("gigabytes_{type_name}"), delta_gib)]
}

/// Refuses a volume larger than the project's `per_volume_gigabytes`.
pub async fn check_volume_size(
    db: &impl ConnectionTrait,
    defaults: &QuotaDefaults,
    project: &ProjectId,
    size_gib: i64,
) -> Result<(), ServiceError> {
    let limits = limits(db, defaults, project, &[PER_VOLUME_GIGABYTES]).await?;
    let maximum = limits.get(PER_VOLUME_GIGABYTES).copied().unwrap_or(-1);
    if maximum >= 0 && size_gib > maximum {
        return Err(ServiceError::new(
            ErrorCode::QuotaExceeded,
            format!("a {size_gib} GiB volume exceeds the per-volume quota of {maximum} GiB for this project"),
        ));
    }
    Ok(())
}

/// The project's limits of `resources`: its own where set, the deployment's defaults elsewhere.
async fn limits(
    db: &impl ConnectionTrait,
    defaults: &QuotaDefaults,
    project: &ProjectId,
    resources: &[&str],
) -> Result<BTreeMap<String, i64>, ServiceError> {
    let mut limits: BTreeMap<String, i64> =
        resources.iter().map(|resource| ((*resource).to_owned(), defaults.get(resource))).collect();
    let rows = quota_limit::Entity::find()
        .filter(quota_limit::Column::ProjectId.eq(project.clone()))
        .filter(quota_limit::Column::Resource.is_in(resources.iter().copied()))
        .all(db)
        .await
        .map_err(db_error)?;
    for row in rows {
        limits.insert(row.resource, row.hard_limit);
    }
    Ok(limits)
}

/// The resources a usage change touches, leaving out those it does not change.
fn changed(usage: &[(String, i64)]) -> Vec<&str> {
    usage.iter().filter(|(_, delta)| *delta != 0).map(|(resource, _)| resource.as_str()).collect()
}

/// Fails like [`reserve`] would, without reserving: lets a request learn it is over quota before
/// placement is even tried. [`reserve`] stays the authority.
pub async fn precheck(
    db: &impl ConnectionTrait,
    defaults: &QuotaDefaults,
    project: &ProjectId,
    usage: &[(String, i64)],
) -> Result<(), ServiceError> {
    let resources = changed(usage);
    let limits = limits(db, defaults, project, &resources).await?;
    let rows = quota_usage::Entity::find()
        .filter(quota_usage::Column::ProjectId.eq(project.clone()))
        .filter(quota_usage::Column::Resource.is_in(resources.iter().copied()))
        .all(db)
        .await
        .map_err(db_error)?;
    let used: BTreeMap<String, i64> = rows.into_iter().map(|row| (row.resource, row.in_use)).collect();
    for (resource, delta) in usage.iter().filter(|(_, delta)| *delta != 0) {
        let hard_limit = limits.get(resource).copied().unwrap_or(-1);
        let in_use = used.get(resource).copied().unwrap_or(0);
        if hard_limit >= 0 && in_use + delta > hard_limit {
            return Err(over_quota(resource, *delta, in_use, hard_limit));
        }
    }
    Ok(())
}

fn over_quota(resource: &str, delta: i64, in_use: i64, hard_limit: i64) -> ServiceError {
    ServiceError::new(
        ErrorCode::QuotaExceeded,
        format!(
            "quota exceeded for {resource}: this needs {delta}, the project uses {in_use} of {hard_limit}; \
             free some or ask an admin to raise the limit"
        ),
    )
}

/// Takes `usage` from the project's quotas inside `txn`; fails (leaving the transaction to be
/// rolled back) with the first resource that would go over its limit.
pub async fn reserve(
    txn: &impl ConnectionTrait,
    defaults: &QuotaDefaults,
    project: &ProjectId,
    usage: &[(String, i64)],
) -> Result<(), ServiceError> {
    let limits = limits(txn, defaults, project, &changed(usage)).await?;
    for (resource, delta) in usage.iter().filter(|(_, delta)| *delta != 0) {
        let hard_limit = limits.get(resource).copied().unwrap_or(-1);
        let limited = (hard_limit >= 0).then_some(hard_limit);
        // The upsert's guard applies to an existing row only: a first use beyond the limit is
        // refused here, before the insert would make it.
        if limited.is_some_and(|hard_limit| *delta > hard_limit)
            || !add(txn, project, resource, *delta, limited).await?
        {
            let in_use = in_use(txn, project, resource).await?;
            return Err(over_quota(resource, *delta, in_use, hard_limit));
        }
    }
    Ok(())
}

/// Gives `usage` back inside `txn`.
pub async fn release(
    txn: &impl ConnectionTrait,
    project: &ProjectId,
    usage: &[(String, i64)],
) -> Result<(), ServiceError> {
    for (resource, delta) in usage.iter().filter(|(_, delta)| *delta != 0) {
        add(txn, project, resource, -delta, None).await?;
    }
    Ok(())
}

/// Adds `delta` to the project's `resource` counter in one statement, making the row if it is
/// missing; with a `limit`, only while the sum stays within it (the row is locked meanwhile, so
/// concurrent transactions on PostgreSQL cannot both pass). Whether it was added.
async fn add(
    txn: &impl ConnectionTrait,
    project: &ProjectId,
    resource: &str,
    delta: i64,
    limit: Option<i64>,
) -> Result<bool, ServiceError> {
    let counter = || Expr::col((quota_usage::Entity, quota_usage::Column::InUse));
    let mut on_conflict = OnConflict::columns([quota_usage::Column::ProjectId, quota_usage::Column::Resource]);
    on_conflict.value(quota_usage::Column::InUse, counter().add(delta));
    if let Some(limit) = limit {
        on_conflict.action_and_where(counter().add(delta).lte(limit));
    }
    let upsert = Query::insert()
        .into_table(quota_usage::Entity)
        .columns([quota_usage::Column::ProjectId, quota_usage::Column::Resource, quota_usage::Column::InUse])
        .values_panic([project.clone().into(), resource.into(), delta.into()])
        .on_conflict(on_conflict.to_owned())
        .to_owned();
    Ok(txn.execute(&upsert).await.map_err(db_error)?.rows_affected() == 1)
}

/// Locks the project's `resource` counter row until the transaction ends (on PostgreSQL; SQLite
/// has one writer anyway): transactions that must not interleave for a project take it first.
pub async fn lock(txn: &impl ConnectionTrait, project: &ProjectId, resource: &str) -> Result<(), ServiceError> {
    // Adding nothing makes the row if it is missing and, on PostgreSQL, locks it either way.
    add(txn, project, resource, 0, None).await.map(drop)
}

async fn in_use(db: &impl ConnectionTrait, project: &ProjectId, resource: &str) -> Result<i64, ServiceError> {
    Ok(quota_usage::Entity::find_by_id((project.clone(), resource.to_owned()))
        .one(db)
        .await
        .map_err(db_error)?
        .map_or(0, |row| row.in_use))
}

/// Every resource a quota set shows: the global ones, and for each volume type (public or not)
/// its `volumes_`, `snapshots_` and `gigabytes_` ones, as Cinder registers a resource per type.
async fn resources(db: &impl ConnectionTrait) -> Result<Vec<String>, ServiceError> {
    let mut resources: Vec<String> = QuotaDefaults::global_resources().into_iter().map(str::to_owned).collect();
    let types = volume_type::Entity::find().all(db).await.map_err(db_error)?;
    for volume_type in types {
        for prefix in ["volumes_", "snapshots_", "gigabytes_"] {
            resources.push(format!("{prefix}{}", volume_type.name));
        }
    }
    Ok(resources)
}

/// The deployment's default limits.
pub async fn default_set(
    db: &impl ConnectionTrait,
    defaults: &QuotaDefaults,
    project: &ProjectId,
) -> Result<QuotaSet, ServiceError> {
    let quotas = resources(db)
        .await?
        .into_iter()
        .map(|resource| {
            let limit = defaults.get(&resource);
            (resource, QuotaValue { limit, in_use: 0, reserved: 0 })
        })
        .collect();
    Ok(QuotaSet { project_id: project.to_string(), quotas })
}

/// The project's quota set with usage: every resource of [`resources`], and any other the project
/// has a limit or usage recorded for.
pub async fn quota_set(
    db: &impl ConnectionTrait,
    defaults: &QuotaDefaults,
    project: &ProjectId,
) -> Result<QuotaSet, ServiceError> {
    let mut values: BTreeMap<String, QuotaValue> =
        default_set(db, defaults, project).await?.quotas.into_iter().collect();
    let limits = quota_limit::Entity::find()
        .filter(quota_limit::Column::ProjectId.eq(project.clone()))
        .all(db)
        .await
        .map_err(db_error)?;
    for row in limits {
        values.entry(row.resource).or_default().limit = row.hard_limit;
    }
    let usages = quota_usage::Entity::find()
        .filter(quota_usage::Column::ProjectId.eq(project.clone()))
        .all(db)
        .await
        .map_err(db_error)?;
    for row in usages {
        let resource = row.resource.clone();
        let value = values.entry(row.resource).or_insert_with(|| QuotaValue {
            limit: defaults.get(&resource),
            in_use: 0,
            reserved: 0,
        });
        value.in_use = row.in_use;
    }
    Ok(QuotaSet { project_id: project.to_string(), quotas: values.into_iter().collect() })
}

/// Drops the project's own limits: the defaults apply again.
pub async fn reset_limits(txn: &impl ConnectionTrait, project: &ProjectId) -> Result<(), ServiceError> {
    quota_limit::Entity::delete_many()
        .filter(quota_limit::Column::ProjectId.eq(project.clone()))
        .exec(txn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Sets limits; a limit below what the project already uses is refused.
pub async fn update_limits(
    txn: &impl ConnectionTrait,
    project: &ProjectId,
    limits: &std::collections::HashMap<String, i64>,
) -> Result<(), ServiceError> {
    for (resource, hard_limit) in limits {
        if !is_known_resource(resource) {
            return Err(ServiceError::invalid(format!(
                "unknown quota {}: use volumes, snapshots, gigabytes, backups, backup_gigabytes, \
                 per_volume_gigabytes, groups, or volumes_<type>, snapshots_<type>, gigabytes_<type>",
                basalt::error::excerpt(resource)
            )));
        }
        if let Some(type_name) = per_type_name(resource) {
            let types = volume_type::Entity::find().filter(volume_type::Column::Name.eq(type_name)).count(txn).await;
            if types.map_err(db_error)? == 0 {
                return Err(ServiceError::invalid(format!(
                    "unknown quota {}: there is no volume type named {}",
                    basalt::error::excerpt(resource),
                    basalt::error::excerpt(type_name)
                )));
            }
        }
        if *hard_limit < -1 {
            return Err(ServiceError::invalid(format!(
                "quota {resource} must be -1 (unlimited) or more, not {hard_limit}"
            )));
        }
        let used = in_use(txn, project, resource).await?;
        if *hard_limit >= 0 && *hard_limit < used {
            return Err(ServiceError::invalid(format!(
                "quota {resource} cannot be {hard_limit}: the project already uses {used}"
            )));
        }
        let upsert = Query::insert()
            .into_table(quota_limit::Entity)
            .columns([quota_limit::Column::ProjectId, quota_limit::Column::Resource, quota_limit::Column::HardLimit])
            .values_panic([project.clone().into(), resource.as_str().into(), (*hard_limit).into()])
            .on_conflict(
                OnConflict::columns([quota_limit::Column::ProjectId, quota_limit::Column::Resource])
                    .update_column(quota_limit::Column::HardLimit)
                    .to_owned(),
            )
            .to_owned();
        txn.execute(&upsert).await.map_err(db_error)?;
    }
    Ok(())
}

fn is_known_resource(resource: &str) -> bool {
    QuotaDefaults::global_resources().contains(&resource) || per_type_name(resource).is_some()
}

/// The volume type a per-type quota (`volumes_<type>`, ...) is about.
fn per_type_name(resource: &str) -> Option<&str> {
    ["volumes_", "snapshots_", "gigabytes_"]
        .iter()
        .find_map(|prefix| resource.strip_prefix(prefix))
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_checked() {
        assert!(is_known_resource("gigabytes"));
        assert!(is_known_resource("volumes_fast"));
        assert!(!is_known_resource("volumes_"));
        assert!(!is_known_resource("cores"));
    }

    #[test]
    fn snapshots_count_against_gigabytes() {
        let usage = snapshot_usage("t", 5);
        assert!(usage.contains(&(GIGABYTES.to_owned(), 5)));
        assert!(usage.contains(&("snapshots_t".to_owned(), 1)));
    }
}
