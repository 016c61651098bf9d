//! The chaos suite's small profile: a mixed REST workload from several clients against two
//! schedulers on PostgreSQL, two gateways and two nodes with real tgtds, while services are
//! SIGKILLed and restarted and nodes frozen; then nothing is stuck, nothing is lost, every byte is
//! as written, quotas and claims balance (`basalt_integration::chaos`; full size: `--bin chaos`).

use std::time::Duration;

use anyhow::{Result, ensure};
use basalt_integration::chaos::{ChaosSettings, run};

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_workload_through_faults_leaves_every_invariant_holding() -> Result<()> {
    let settings = ChaosSettings { operations: 120, clients: 4, fault_interval: Duration::from_millis(700), seed: 7 };
    let report = run(&settings).await?;
    report.print();
    let faults: usize = report.faults.values().sum();
    ensure!(faults >= 4, "too few faults to mean anything: {:?}", report.faults);
    ensure!(
        report.done.values().sum::<usize>() >= 60,
        "too little work got done: {:?} {:?}",
        report.done,
        report.failed
    );
    Ok(())
}
