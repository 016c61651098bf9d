//! Capacity claims: the GiB booked on each pool, the database's authority over what the nodes'
//! reports may not show yet. A claim is a guarded increment in the transaction that writes the
//! volume or snapshot row, so two schedulers on one PostgreSQL never book the same space twice.
//! Placement reads them from memory (the [`PoolTable`](crate::pool_table::PoolTable)), so a
//! decision over thousands of pools reads no table.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use basalt::{ErrorCode, ServiceError};
use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};

use crate::{
    Core,
    db::{db_error, pool_claim},
    placement::{self, PlacementRequest, PoolCandidate},
    pool_table::{BOOKINGS_MAX_AGE, BOOKINGS_REFRESH},
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

/// Claims `gib` on the first pool of `ranked` with room for it; `None` when none has. When the
/// pool a decision counted on has no room after all, the next decision reads the bookings again.
pub async fn claim_first(
    core: &Core,
    txn: &impl ConnectionTrait,
    ranked: &[PoolCandidate],
    thick: bool,
    gib: i64,
) -> Result<Option<PoolCandidate>, ServiceError> {
    for pool in ranked {
        if claim(txn, pool.host(), capacity_gib(pool, thick), gib).await? {
            return Ok(Some(pool.clone()));
        }
        core.capacity.update_pools(|table| table.forget_bookings());
    }
    Ok(None)
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

/// Reads the bookings from the database unless a read within `age` is held.
async fn read_bookings(core: &Core, age: Duration) -> Result<(), ServiceError> {
    if core.capacity.read_pools(|table| table.read_within(age)) {
        return Ok(());
    }
    let _reading = core.capacity.reading_bookings.lock().await;
    if core.capacity.read_pools(|table| table.read_within(age)) {
        return Ok(());
    }
    let read_at = Instant::now();
    let booked = claimed(&core.db).await?;
    let disabled = service_states::disabled_volume_hosts(&core.db).await?;
    core.capacity.update_pools(|table| table.apply_bookings(booked, disabled, read_at));
    Ok(())
}

/// Keeps the bookings current in the background until `stopped` resolves, so decisions do not
/// wait for the read.
pub async fn keep_bookings_current(core: Arc<Core>, stopped: impl Future<Output = ()>) {
    basalt::server::every(BOOKINGS_REFRESH, stopped, || async {
        // Half a period of slack, so a tick that comes a little early still reads.
        if let Err(error) = read_bookings(&core, BOOKINGS_REFRESH / 2).await {
            tracing::warn!(%error, "reading the capacity claims failed; placement keeps the last ones");
        }
    })
    .await
}

/// Every pool of every fresh report whose volume service is enabled, with what is booked on it.
pub async fn candidates(core: &Core) -> Result<Vec<PoolCandidate>, ServiceError> {
    read_bookings(core, BOOKINGS_MAX_AGE).await?;
    core.capacity.read_pools(|table| Ok(table.usable(Instant::now())?.cloned().collect()))
}

/// The best pools among [`candidates`] that `keep` keeps and that can take `request`, best
/// first; the request's size counts on the first of them at once, so the next decision, however
/// soon, sees it. A refusal ("no valid node") made from the figures in memory is made again from
/// the database's before it is given, so a pool the database holds free is never refused.
pub async fn place(
    core: &Core,
    request: &PlacementRequest,
    keep: impl Fn(&PoolCandidate) -> bool,
) -> Result<Vec<PoolCandidate>, ServiceError> {
    read_bookings(core, BOOKINGS_MAX_AGE).await?;
    match decide(core, request, &keep) {
        Err(refused) if refused.code == ErrorCode::NoCapacity => {
            core.capacity.update_pools(|table| table.forget_bookings());
            read_bookings(core, BOOKINGS_MAX_AGE).await?;
            decide(core, request, &keep)
        }
        decided => decided,
    }
}

/// One decision, ranked and counted while no other decision runs, so decisions made at the same
/// time see each other's.
fn decide(
    core: &Core,
    request: &PlacementRequest,
    keep: &impl Fn(&PoolCandidate) -> bool,
) -> Result<Vec<PoolCandidate>, ServiceError> {
    core.capacity.update_pools(|table| {
        let candidates = table.usable(Instant::now())?.filter(|pool| keep(pool));
        let ranked = placement::rank(candidates, request, &core.config.weighers)?;
        table.count(ranked[0].host(), request.size_gib.ceil() as i64);
        Ok(ranked)
    })
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
