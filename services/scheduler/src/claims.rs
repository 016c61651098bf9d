//! Capacity claims: the GiB booked on each pool, the database's authority over what the nodes'
//! reports may not show yet. A claim is a guarded increment in the transaction that writes the
//! volume or snapshot row, so two schedulers on one PostgreSQL never book the same space twice.

use std::{collections::HashMap, time::Instant};

use basalt::ServiceError;
use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};

use crate::{
    Core,
    db::{db_error, pool_claim},
    placement::PoolCandidate,
    service_states,
};

/// The most a pool may hold, by Cinder's formulas: thin pools `(total - reserved) * ratio`, thick
/// pools `total - reserved`.
/// What a pool can hold for snapshots (thin where it can be), from its node's latest report; 0
/// when the node has not reported it.
pub fn pool_capacity(core: &Core, node_id: &str, pool: &str) -> i64 {
    core.capacity.pool(node_id, pool).map_or(0, |pool| capacity_gib(&pool, false))
}

pub fn capacity_gib(pool: &PoolCandidate, thick: bool) -> i64 {
    let reserved = (pool.total_gib * f64::from(pool.reserved_percentage) / 100.0).floor();
    let available = pool.total_gib - reserved;
    let capacity = if !thick && pool.thin_provisioning_support {
        available * pool.max_over_subscription_ratio.max(1.0)
    } else {
        available
    };
    capacity.floor().max(0.0) as i64
}

/// Books `gib` on `pool` if it stays within `capacity_gib`; `false` when it would not.
pub async fn claim(txn: &impl ConnectionTrait, host: &str, capacity_gib: i64, gib: i64) -> Result<bool, ServiceError> {
    upsert(txn, host, capacity_gib).await?;
    let updated = pool_claim::Entity::update_many()
        .col_expr(pool_claim::Column::ClaimedGib, Expr::col(pool_claim::Column::ClaimedGib).add(gib))
        .filter(pool_claim::Column::Host.eq(host))
        .filter(Expr::col(pool_claim::Column::ClaimedGib).add(gib).lte(Expr::col(pool_claim::Column::CapacityGib)))
        .exec(txn)
        .await
        .map_err(db_error)?;
    Ok(updated.rows_affected == 1)
}

/// Books `gib` on `pool` whatever it holds: for bytes already in the pool (an adopted volume),
/// which its capacity already counts.
pub async fn book(txn: &impl ConnectionTrait, host: &str, capacity_gib: i64, gib: i64) -> Result<(), ServiceError> {
    upsert(txn, host, capacity_gib).await?;
    pool_claim::Entity::update_many()
        .col_expr(pool_claim::Column::ClaimedGib, Expr::col(pool_claim::Column::ClaimedGib).add(gib))
        .filter(pool_claim::Column::Host.eq(host))
        .exec(txn)
        .await
        .map_err(db_error)
        .map(drop)
}

/// The pool's claim row, with the capacity of the freshest report.
async fn upsert(txn: &impl ConnectionTrait, host: &str, capacity_gib: i64) -> Result<(), ServiceError> {
    let now = Utc::now();
    // The capacity comes from the freshest report this scheduler holds; any replica may update it.
    let upsert = Query::insert()
        .into_table(pool_claim::Entity)
        .columns([
            pool_claim::Column::Host,
            pool_claim::Column::ClaimedGib,
            pool_claim::Column::CapacityGib,
            pool_claim::Column::UpdatedAt,
        ])
        .values_panic([host.into(), 0i64.into(), capacity_gib.into(), now.into()])
        .on_conflict(
            OnConflict::column(pool_claim::Column::Host)
                .update_columns([pool_claim::Column::CapacityGib, pool_claim::Column::UpdatedAt])
                .to_owned(),
        )
        .to_owned();
    txn.execute(&upsert).await.map_err(db_error).map(drop)
}

/// Gives `gib` back on `host`.
pub async fn release(txn: &impl ConnectionTrait, host: &str, gib: i64) -> Result<(), ServiceError> {
    if host.is_empty() || gib == 0 {
        return Ok(());
    }
    pool_claim::Entity::update_many()
        .col_expr(pool_claim::Column::ClaimedGib, Expr::col(pool_claim::Column::ClaimedGib).sub(gib))
        .filter(pool_claim::Column::Host.eq(host))
        .exec(txn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Every pool of every fresh report whose volume service is enabled, with what the database has
/// booked on it.
pub async fn candidates(core: &Core) -> Result<Vec<PoolCandidate>, ServiceError> {
    let booked = claimed(&core.db).await?;
    let disabled = service_states::disabled_volume_hosts(&core.db).await?;
    let now = Instant::now();
    let mut candidates = Vec::new();
    let mut left_out = std::collections::BTreeSet::new();
    for node in core.capacity.nodes().into_iter().filter(|node| node.is_fresh(now)) {
        for pool in &node.report.pools {
            let service = format!("{}@{}", node.report.node_id, pool.backend);
            if disabled.contains(&service) {
                left_out.insert(service);
                continue;
            }
            let candidate = PoolCandidate::from_report(&node.report.node_id, &node.report.availability_zone, pool);
            let booked_gib = booked.get(&candidate.host()).copied().unwrap_or(0) as f64;
            candidates.push(candidate.with_booked(booked_gib));
        }
    }
    if candidates.is_empty() && !left_out.is_empty() {
        return Err(ServiceError::new(
            basalt::ErrorCode::NoCapacity,
            format!(
                "no valid node: every volume service that reports is disabled ({}); an admin enables one with \
                 os-services enable",
                left_out.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(candidates)
}

/// GiB claimed per pool host.
pub async fn claimed(db: &impl ConnectionTrait) -> Result<HashMap<String, i64>, ServiceError> {
    let rows = pool_claim::Entity::find().all(db).await.map_err(db_error)?;
    Ok(rows.into_iter().map(|row| (row.host, row.claimed_gib)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::tests::pool;

    #[test]
    fn capacity_follows_cinder_formulas() {
        let mut thin = pool("a", 100.0, 100.0, 0.0);
        thin.max_over_subscription_ratio = 2.0;
        thin.reserved_percentage = 10;
        assert_eq!(capacity_gib(&thin, false), 180);
        assert_eq!(capacity_gib(&thin, true), 90);
    }
}
