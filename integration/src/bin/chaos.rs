//! The chaos suite at full size, by hand (a small profile runs in `scripts/test` as the `chaos`
//! test): a mixed workload from many REST clients while a fault injector kills and freezes
//! services, then every invariant checked (`basalt_integration::chaos`).
//!
//! `cargo run --release -p basalt-integration --bin chaos -- [operations] [clients] [fault interval ms] [seed]`
//! (defaults 1000, 8, 500, 1). Needs PostgreSQL, NATS and tgtd as the tests do.

use anyhow::{Context, Result};
use basalt_integration::chaos::{ChaosSettings, run};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |index: usize, default: u64| -> Result<u64> {
        args.get(index)
            .map_or(Ok(default), |text| text.parse().with_context(|| format!("argument {}: {text:?}", index + 1)))
    };
    let settings = ChaosSettings {
        operations: number(0, 1000)? as usize,
        clients: number(1, 8)? as usize,
        fault_interval: std::time::Duration::from_millis(number(2, 500)?),
        seed: number(3, 1)?,
    };
    println!("chaos: {settings:?}");
    let started = std::time::Instant::now();
    let report = run(&settings).await?;
    report.print();
    println!("took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
