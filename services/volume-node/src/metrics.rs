//! The node's metrics: its exports and the initiators they admit, and the bytes and time of its
//! backups and restores (throughput is the rate of the bytes). The node's gRPC calls are counted
//! by the server every service shares. Figures are the process's: one node per process in a
//! deployment.

use std::{sync::LazyLock, time::Instant};

use basalt::metrics::{LATENCY_BUCKETS, counter_vec, histogram_vec, int_gauge};
use prometheus::{HistogramVec, IntCounterVec, IntGauge};

/// Volumes this node exports.
pub static EXPORTS: LazyLock<IntGauge> =
    LazyLock::new(|| int_gauge("basalt_node_exports", "Volumes this node exports over iSCSI"));
/// Initiators its exports admit.
pub static INITIATORS: LazyLock<IntGauge> = LazyLock::new(|| {
    int_gauge("basalt_node_export_initiators", "Initiators admitted to this node's exports (one per attached host)")
});
static BACKUP_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "basalt_backup_bytes_total",
        "Volume bytes read by finished backups or written by finished restores, by direction",
        &["direction"],
    )
});
static BACKUP_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "basalt_backup_duration_seconds",
        "Time of a backup or restore on this node, by direction and outcome",
        &["direction", "outcome"],
        LATENCY_BUCKETS,
    )
});

/// A backup (`direction` "backup") or restore ("restore") that started at `started` ended; on
/// success it moved `bytes` of the volume.
pub fn backup_finished(direction: &'static str, started: Instant, bytes: Option<u64>) {
    let outcome = if bytes.is_some() { "succeeded" } else { "failed" };
    BACKUP_SECONDS.with_label_values(&[direction, outcome]).observe(started.elapsed().as_secs_f64());
    if let Some(bytes) = bytes {
        BACKUP_BYTES.with_label_values(&[direction]).inc_by(bytes);
    }
}
