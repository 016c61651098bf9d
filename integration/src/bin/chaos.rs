//! The chaos suite at full size, by hand (a small profile of each deployment runs in
//! `scripts/test` as the `chaos` tests): a mixed workload from many REST clients while a fault
//! injector kills, freezes and restarts services, then every invariant checked
//! (`basalt_integration::chaos`).
//!
//! `cargo run --release -p basalt-integration --bin chaos -- [mesh|up] [operations] [faults per kind] [clients] [fault interval ms] [seed]`
//! (defaults mesh 1000 50 8 300 1). On `up` every fault strikes the one process: give it a longer
//! interval (3000) so that operations can finish between two faults. Needs PostgreSQL's programs,
//! nats-server and tgtd as the tests do; runs its own PostgreSQL and NATS.

use anyhow::{Context, Result, bail};
use basalt_integration::chaos::{ChaosSettings, Deployment, run};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let deployment = match args.first().map(String::as_str) {
        None | Some("mesh") => Deployment::Mesh,
        Some("up") => Deployment::Up,
        Some(other) => bail!("the deployment is `mesh` or `up`, not {other:?}"),
    };
    let number = |index: usize, default: u64| -> Result<u64> {
        args.get(index)
            .map_or(Ok(default), |text| text.parse().with_context(|| format!("argument {}: {text:?}", index + 1)))
    };
    let settings = ChaosSettings {
        deployment,
        operations: number(1, 1000)? as usize,
        faults_per_kind: number(2, 50)? as usize,
        clients: number(3, 8)? as usize,
        fault_interval: std::time::Duration::from_millis(number(4, 300)?),
        seed: number(5, 1)?,
    };
    println!("chaos: {settings:?}");
    let started = std::time::Instant::now();
    // Interrupted, the run's servers are stopped on the way out (Drop), not left behind.
    let report = tokio::select! {
        report = run(&settings) => report?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    report.print();
    println!("took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
