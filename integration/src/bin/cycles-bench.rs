//! Benchmark (not a test): REST create+delete cycles on `basalt up`, as a Cinder client drives
//! them: `POST /volumes` of 1 GiB, poll `GET /volumes/{id}` (every millisecond) until
//! `available`, `DELETE`, poll until 404; on kept-alive connections, at concurrency 1, 8 and 32.
//! With `--baseline <basalt binary>` (the previous commit's, built in release), the same run
//! measures that binary too, level by level and alternating, so the ratios compare like with like.
//!
//!     cargo run --release -p basalt-integration --bin cycles-bench -- [--baseline PATH] [cycles per level]

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use basalt_integration::{BasaltProcess, RestLoad, percentiles};

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const POLL: Duration = Duration::from_millis(1);
const LEVELS: [usize; 3] = [1, 8, 32];

struct Measured {
    cycles_per_second: f64,
    create_p50: Duration,
    create_p99: Duration,
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut baseline: Option<PathBuf> = None;
    let mut cycles = 512;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--baseline" => baseline = Some(args.next().context("--baseline needs a path")?.into()),
            number => cycles = number.parse().with_context(|| format!("{number:?} is not a cycle count"))?,
        }
    }
    let current = basalt_integration::basalt_binary()?;
    println!("| concurrency | binary | cycles/s | create→available p50 | p99 |");
    println!("|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for concurrency in LEVELS {
        let ours = measure(&current, concurrency, cycles).await?;
        print_row(concurrency, "this commit", &ours);
        if let Some(baseline) = &baseline {
            let theirs = measure(baseline, concurrency, cycles).await?;
            print_row(concurrency, "baseline", &theirs);
            ratios.push((concurrency, ours.cycles_per_second / theirs.cycles_per_second));
        }
    }
    if !ratios.is_empty() {
        println!();
        println!("cycles/s of this commit ÷ baseline (higher is better):");
        for (concurrency, ratio) in ratios {
            println!("  concurrency {concurrency}: {ratio:.2}×");
        }
    }
    Ok(())
}

fn print_row(concurrency: usize, binary: &str, measured: &Measured) {
    println!(
        "| {concurrency} | {binary} | {:.0} | {:.1} ms | {:.1} ms |",
        measured.cycles_per_second,
        measured.create_p50.as_secs_f64() * 1e3,
        measured.create_p99.as_secs_f64() * 1e3
    );
}

/// A fresh `basalt up` of `binary`, `cycles` cycles shared by `concurrency` clients.
async fn measure(binary: &Path, concurrency: usize, cycles: usize) -> Result<Measured> {
    let data = tempfile::tempdir()?;
    let process = BasaltProcess::up_with(binary, data.path(), &[], &[], Stdio::null())?;
    let load = RestLoad {
        client: reqwest::Client::builder().pool_max_idle_per_host(64).build()?,
        base: format!("{}/{PROJECT}", process.endpoint("rest").trim_end_matches('/')),
        token: format!("admin:{PROJECT}"),
        poll: POLL,
    };
    let lifted = r#"{"quota_set": {"volumes": -1, "gigabytes": -1}}"#;
    let reply = load.call(reqwest::Method::PUT, &format!("/os-quota-sets/{PROJECT}"), Some(lifted)).await?;
    ensure!(reply.0.is_success(), "lifting quotas: {reply:?}");
    // One cycle first, so that no level pays for the first connection or the first statement.
    run_cycles(load.clone(), 1).await?;

    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let share = cycles / concurrency + usize::from(worker < cycles % concurrency);
        workers.push(tokio::spawn(run_cycles(load.clone(), share)));
    }
    let mut creates = Vec::new();
    for worker in workers {
        creates.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    let (create_p50, create_p99) = percentiles(&mut creates);
    drop(process);
    Ok(Measured { cycles_per_second: cycles as f64 / elapsed.as_secs_f64(), create_p50, create_p99 })
}

/// `count` cycles one after another; the create→available time of each.
async fn run_cycles(load: RestLoad, count: usize) -> Result<Vec<Duration>> {
    let mut creates = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let id = load.create_available(r#"{"volume": {"size": 1}}"#).await?;
        creates.push(started.elapsed());
        load.delete_gone(&id).await?;
    }
    Ok(creates)
}
