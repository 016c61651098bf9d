//! The scheduler's metrics: journalled operations by kind and outcome, the journal's depth and
//! the age of its oldest operation, attachments by status, and each pool's capacity and node's
//! report age as this scheduler sees them. The gauges are refreshed every few seconds from the
//! database and the capacity view, so a scrape never waits for the database.

use std::{
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use basalt::{
    ServiceError,
    metrics::{counter_vec, gauge, gauge_vec, int_gauge, int_gauge_vec},
    proto::AttachStatus,
};
use chrono::Utc;
use prometheus::{Gauge, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec};
use sea_orm::{
    EntityTrait, QuerySelect,
    sea_query::{Expr, ExprTrait},
};

use crate::{
    Core,
    db::{attachment, db_error, operation},
};

/// How often the gauges are read again.
pub const REFRESH: Duration = Duration::from_secs(5);

static OPERATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "basalt_operations_total",
        "Journalled operations this scheduler completed, by kind and outcome (succeeded, failed, or closed: its resource had moved on)",
        &["kind", "outcome"],
    )
});
static TAKEN_OVER: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "basalt_operations_taken_over_total",
        "Operations this scheduler took over after their owner's lease ran out, by kind",
        &["kind"],
    )
});
static JOURNAL_OPERATIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    int_gauge_vec("basalt_journal_operations", "Operations in the journal (in flight), by kind", &["kind"])
});
static JOURNAL_DEPTH: LazyLock<IntGauge> =
    LazyLock::new(|| int_gauge("basalt_journal_depth", "Operations in the journal (in flight)"));
static JOURNAL_OLDEST: LazyLock<Gauge> = LazyLock::new(|| {
    gauge(
        "basalt_journal_oldest_operation_age_seconds",
        "Age of the oldest operation in the journal; 0 when it is empty",
    )
});
static ATTACHMENTS: LazyLock<IntGaugeVec> =
    LazyLock::new(|| int_gauge_vec("basalt_attachments", "Volume attachments, by attach status", &["attach_status"]));
static POOL_CAPACITY: LazyLock<GaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "basalt_pool_capacity_gib",
        "A pool's total capacity as its node reports it",
        &["node", "backend", "pool"],
    )
});
static POOL_FREE: LazyLock<GaugeVec> = LazyLock::new(|| {
    gauge_vec("basalt_pool_free_gib", "A pool's free capacity as its node reports it", &["node", "backend", "pool"])
});
static POOL_ALLOCATED: LazyLock<GaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "basalt_pool_allocated_gib",
        "The sizes of the volumes and snapshots a pool holds, as its node reports them",
        &["node", "backend", "pool"],
    )
});
static POOL_VOLUMES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    int_gauge_vec("basalt_pool_volumes", "Volumes a pool holds, as its node reports them", &["node", "backend", "pool"])
});
static NODE_REPORT_AGE: LazyLock<GaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "basalt_node_report_age_seconds",
        "Time since this scheduler heard a node's last capacity report",
        &["node"],
    )
});
static NODE_SCHEDULABLE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    int_gauge_vec(
        "basalt_node_schedulable",
        "1 while a node's reports are fresh enough for placement, 0 once they are three intervals late",
        &["node"],
    )
});

/// A journalled operation finished here with `outcome`.
pub fn operation_completed(kind: &str, outcome: &'static str) {
    OPERATIONS.with_label_values(&[kind, outcome]).inc();
}

pub fn operation_taken_over(kind: &str) {
    TAKEN_OVER.with_label_values(&[kind]).inc();
}

/// Reads the gauges again, one pass.
pub async fn refresh(core: &Core) -> Result<(), ServiceError> {
    let pending: Vec<(String, chrono::DateTime<Utc>)> = operation::Entity::find()
        .select_only()
        .column(operation::Column::Kind)
        .column(operation::Column::CreatedAt)
        .into_tuple()
        .all(&core.db)
        .await
        .map_err(db_error)?;
    let attachments: Vec<(AttachStatus, i64)> = attachment::Entity::find()
        .select_only()
        .column(attachment::Column::Status)
        .column_as(Expr::col(attachment::Column::Id).count(), "attachments")
        .group_by(attachment::Column::Status)
        .into_tuple()
        .all(&core.db)
        .await
        .map_err(db_error)?;

    let now = Utc::now();
    // Kinds and statuses that went to zero go away rather than keep their last value.
    JOURNAL_OPERATIONS.reset();
    for (kind, _) in &pending {
        JOURNAL_OPERATIONS.with_label_values(&[kind.as_str()]).inc();
    }
    JOURNAL_DEPTH.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
    let oldest = pending.iter().map(|(_, created_at)| *created_at).min();
    JOURNAL_OLDEST.set(oldest.map_or(0.0, |oldest| (now - oldest).to_std().unwrap_or_default().as_secs_f64()));
    ATTACHMENTS.reset();
    for (status, count) in attachments {
        ATTACHMENTS.with_label_values(&[status.cinder_name()]).set(count);
    }

    let now = Instant::now();
    for gauge in [&*POOL_CAPACITY, &*POOL_FREE, &*POOL_ALLOCATED, &*NODE_REPORT_AGE] {
        gauge.reset();
    }
    POOL_VOLUMES.reset();
    NODE_SCHEDULABLE.reset();
    for node in core.capacity.nodes() {
        let node_id = node.report.node_id.as_str();
        NODE_REPORT_AGE
            .with_label_values(&[node_id])
            .set(now.saturating_duration_since(node.received_at).as_secs_f64());
        NODE_SCHEDULABLE.with_label_values(&[node_id]).set(i64::from(node.is_fresh(now)));
        for pool in &node.pools {
            let labels = [node_id, pool.identity.backend.as_str(), pool.identity.pool.as_str()];
            POOL_CAPACITY.with_label_values(&labels).set(pool.total_gib);
            POOL_FREE.with_label_values(&labels).set(pool.free_gib);
            POOL_ALLOCATED.with_label_values(&labels).set(pool.allocated_gib);
            POOL_VOLUMES.with_label_values(&labels).set(i64::try_from(pool.total_volumes).unwrap_or(i64::MAX));
        }
    }
    Ok(())
}

/// Keeps the gauges current until `stopped` resolves.
pub async fn keep_current(core: Arc<Core>, stopped: impl Future<Output = ()>) {
    basalt::server::every(REFRESH, stopped, || async {
        if let Err(error) = refresh(&core).await {
            tracing::warn!(%error, "cannot refresh the metrics; they keep their last values");
        }
    })
    .await
}
