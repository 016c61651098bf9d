//! The chaos suite's small profile on each deployment: a mixed REST workload from several clients
//! while services are SIGKILLed and restarted, frozen, and (on the mesh) PostgreSQL and NATS are
//! restarted; then nothing is stuck, nothing is lost, every byte is as written, quotas and claims
//! balance (`basalt_integration::chaos`; full size: `--bin chaos`).

use std::time::Duration;

use anyhow::{Result, ensure};
use basalt_integration::chaos::{ChaosReport, ChaosSettings, Deployment, run};

async fn run_small(deployment: Deployment, operations: usize) -> Result<ChaosReport> {
    let settings = ChaosSettings {
        deployment,
        operations,
        faults_per_kind: 1,
        clients: 4,
        fault_interval: Duration::from_millis(700),
        seed: 7,
    };
    let report = run(&settings).await?;
    report.print();
    ensure!(
        report.done.values().sum::<usize>() >= operations / 2,
        "too little work got done: {:?} {:?}",
        report.done,
        report.reasons
    );
    Ok(report)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_schedulers_on_postgres_keep_every_invariant_through_kills_freezes_and_restarts() -> Result<()> {
    let report = run_small(Deployment::Mesh, 120).await?;
    ensure!(report.faults.len() == 6, "every kind of fault is injected: {:?}", report.faults);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn basalt_up_keeps_every_invariant_through_kills_and_freezes() -> Result<()> {
    let report = run_small(Deployment::Up, 60).await?;
    ensure!(report.faults.len() == 2, "every kind of fault is injected: {:?}", report.faults);
    Ok(())
}
