//! Benchmark (not a test): one placement decision as a volume create makes it, over 100, 1,000
//! and 10,000 pools (one pool per node, each with a capacity claim in the database): every fresh
//! pool with what is booked on it (`claims::candidates`: the capacity view's pools, made once per
//! report, and the bookings in memory, which the scheduler's background task reads from the claims
//! table, SQLite, every second while the decisions run), then Cinder's filters and weighers
//! (`placement::rank`). Issue 17 asks for p99 ≤ 1 ms per decision with 10,000 pools. Two ratios,
//! both **lower is better**: p99 ÷ that 1 ms target (≤ 1 meets it), and p50 ÷ a sort of as many
//! weights as there are pools, measured in the same run (the least any ranking of them does).
//!
//!     cargo run --release -p basalt-integration --bin placement-bench [decisions per size]

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;
use basalt::{
    bus::Bus,
    proto::{CapacityReport, PoolCapacity},
    tls::Role,
};
use basalt_integration::{percentiles, pki};
use basalt_scheduler::{
    capacity::CapacityView,
    claims,
    core::{ControlPlaneConfig, Core},
    nodes::NodeClients,
    placement::PlacementRequest,
};

const GIB: u64 = 1 << 30;
const TARGET: Duration = Duration::from_millis(1);
/// Each size decides for at least this long, so the background reads of the claims table (one a
/// second) happen while decisions run and count in their figures.
const MIN_RUN: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> Result<()> {
    let decisions: usize = std::env::args().nth(1).map(|text| text.parse()).transpose()?.unwrap_or(200);
    println!("| pools | decision p50 | p99 | p99 ÷ 1 ms target | sort of as many weights p50 | p50 ÷ sort |");
    println!("|---|---|---|---|---|---|");
    for pools in [100usize, 1_000, 10_000] {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("placement.db").display());
        let db = basalt_scheduler::db::connect(&url, 4).await?;
        let capacity = Arc::new(CapacityView::default());
        for index in 0..pools {
            capacity.record(report(index));
        }
        let core = Arc::new(Core::new(
            db,
            capacity,
            NodeClients::new(pki().tls(Role::Scheduler)),
            Bus::local(),
            "bench".into(),
            ControlPlaneConfig::default(),
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let refresher = tokio::spawn(claims::keep_bookings_current(core.clone(), async move {
            stopped.await.ok();
        }));
        let txn = core.begin_write().await?;
        for index in 0..pools {
            claims::claim(&*txn, &format!("node-{index:05}@file#default"), 1_000, (index % 97) as i64).await?;
        }
        txn.commit().await?;

        // Each decision counts its size on the pool it picks (the background read puts back the
        // database's figures each second): 1 GiB, so no run fills the pools in between.
        let request = PlacementRequest { size_gib: 1.0, ..Default::default() };
        let mut samples = Vec::with_capacity(decisions);
        let mut best = String::new();
        let run = Instant::now();
        while samples.len() < decisions || run.elapsed() < MIN_RUN {
            let started = Instant::now();
            let ranked = claims::place(&core, &request, |_| true).await?;
            samples.push(started.elapsed());
            best = ranked[0].host().to_owned();
        }
        let (p50, p99) = percentiles(&mut samples);
        stop.send(()).ok();
        refresher.await?;

        let mut sorts = Vec::with_capacity(decisions);
        for round in 0..decisions {
            let mut weights: Vec<f64> = (0..pools).map(|index| ((index * 7919 + round) % 1000) as f64).collect();
            let started = Instant::now();
            weights.sort_by(|a, b| b.total_cmp(a));
            sorts.push(started.elapsed());
            std::hint::black_box(&weights);
        }
        let (sort_p50, _) = percentiles(&mut sorts);
        println!(
            "| {pools} | {:.3} ms | {:.3} ms | {:.2}× | {:.3} ms | {:.0}× |",
            millis(p50),
            millis(p99),
            p99.as_secs_f64() / TARGET.as_secs_f64(),
            millis(sort_p50),
            p50.as_secs_f64() / sort_p50.as_secs_f64()
        );
        std::hint::black_box(best);
    }
    Ok(())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Node `index`'s report: one thin pool of 1 TiB, a little of it used, a few capabilities.
fn report(index: usize) -> CapacityReport {
    let used = (index % 500) as u64 * GIB;
    CapacityReport {
        node_id: format!("node-{index:05}"),
        boot_id: "bench".into(),
        sequence: 1,
        endpoint: format!("https://10.0.{}.{}:8781", index / 250, index % 250),
        availability_zone: if index.is_multiple_of(2) { "az1" } else { "az2" }.into(),
        report_interval_ms: 10_000,
        reported_at: Some(SystemTime::now().into()),
        pools: vec![PoolCapacity {
            name: "default".into(),
            backend: "file".into(),
            total_bytes: 1024 * GIB,
            free_bytes: 1024 * GIB - used,
            provisioned_bytes: used,
            allocated_bytes: used,
            thin_provisioning_support: true,
            max_over_subscription_ratio: 1.0,
            total_volumes: (index % 50) as u64,
            capabilities: [("volume_backend_name".to_owned(), "file".to_owned())].into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}
