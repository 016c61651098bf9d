//! Benchmark tool (not a test): the control plane at a scale this machine has no hosts for.
//! Real schedulers (`basalt scheduler` processes) on a fresh PostgreSQL database and the real NATS
//! server, one real gateway (`basalt gateway`) in front of each, and `--nodes` volume nodes run
//! inside this process. Each node is a real volume node (its NodeAgent over mutual TLS, its
//! capacity reports on NATS at its interval); what is simulated is the machines behind them: every
//! node's pool is a directory of sparse files on this machine's one filesystem, so a volume holds
//! no bytes and creating or wiping one costs next to nothing. Many REST clients, spread over the
//! gateways, create 1 GiB volumes (polling each until `available`), page through the listing, and
//! delete them (polling until gone). It prints the figures, how the volumes spread over the
//! nodes, and checks that every capacity claim was given back.
//!
//! `--reporting-nodes N` adds N nodes that only publish capacity reports on NATS (each at
//! `--reporting-interval-ms`, spread evenly over it), in an availability zone of their own that
//! the creates do not ask for: every placement walks their pools. After the workload it prints how
//! far behind the schedulers are with those reports (the age of the newest report each holds, next
//! to the interval), then silences one of them and measures how long until it is unschedulable
//! (a scheduler gives a node three of its intervals).
//!
//!     cargo run --release -p basalt-integration --bin scale-sim -- \
//!         [--nodes 200] [--schedulers 2] [--clients 32] [--volumes 8] [--report-interval-ms 1000] \
//!         [--reporting-nodes 10000] [--reporting-interval-ms 10000]

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail, ensure};
use basalt::{
    bus::Bus,
    ids::NodeId,
    proto::{CapacityReport, ListPoolsRequest, Pool, PoolCapacity},
    tls::Role,
};
use basalt_integration::{
    NATS_URL, PostgresDatabase, ProcessMesh, RestLoad, WAIT, admin, eventually, percentiles, pki, volume_client,
};
use reqwest::{Method, StatusCode};

const PROJECT: &str = "5ca1e5ca1e5ca1e5ca1e5ca1e5ca1e00";
const POLL: Duration = Duration::from_millis(2);
/// Listing pages each client reads, of [`PAGE`] volumes.
const PAGES_PER_CLIENT: usize = 10;
const PAGE: usize = 100;
/// The zone of the nodes that only report; the creates ask for the real nodes' zone.
const REPORTING_ZONE: &str = "reports-only";
const GIB: u64 = 1 << 30;

struct Settings {
    nodes: usize,
    schedulers: usize,
    clients: usize,
    volumes: usize,
    report_interval: Duration,
    reporting_nodes: usize,
    reporting_interval: Duration,
}

impl Settings {
    fn from_args() -> Result<Self> {
        let mut settings = Self {
            nodes: 200,
            schedulers: 2,
            clients: 32,
            volumes: 8,
            report_interval: Duration::from_millis(1000),
            reporting_nodes: 0,
            reporting_interval: Duration::from_secs(10),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value: u64 = args
                .next()
                .with_context(|| format!("{flag} needs a number"))?
                .parse()
                .with_context(|| format!("{flag} needs a number"))?;
            match flag.as_str() {
                "--nodes" => settings.nodes = value as usize,
                "--schedulers" => settings.schedulers = value as usize,
                "--clients" => settings.clients = value as usize,
                "--volumes" => settings.volumes = value as usize,
                "--report-interval-ms" => settings.report_interval = Duration::from_millis(value),
                "--reporting-nodes" => settings.reporting_nodes = value as usize,
                "--reporting-interval-ms" => settings.reporting_interval = Duration::from_millis(value),
                other => bail!(
                    "unknown flag {other}: use --nodes, --schedulers, --clients, --volumes, --report-interval-ms, \
                     --reporting-nodes or --reporting-interval-ms"
                ),
            }
        }
        ensure!(settings.nodes > 0 && settings.schedulers > 0 && settings.clients > 0, "every count must be above 0");
        Ok(settings)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let settings = Settings::from_args()?;
    let database = PostgresDatabase::create().await?;
    let outcome = simulate(&settings, &database.url).await;
    database.drop_database().await?;
    outcome
}

async fn simulate(settings: &Settings, database_url: &str) -> Result<()> {
    let mesh = ProcessMesh::start(Some(database_url.to_owned()), settings.schedulers, 0, &[])?;
    let bus = Bus::connect_nats(NATS_URL, &mesh.namespace, &Default::default()).await?;
    let storage = tempfile::tempdir()?;
    let started = Instant::now();
    let mut nodes = Vec::with_capacity(settings.nodes);
    for index in 0..settings.nodes {
        nodes.push(start_node(index, storage.path(), &bus, settings.report_interval).await?);
    }
    let silenced = Arc::new(AtomicBool::new(false));
    let (stop_reports, reports_stopped) = tokio::sync::oneshot::channel::<()>();
    let reporter = tokio::spawn(report_only(
        bus.clone(),
        settings.reporting_nodes,
        settings.reporting_interval,
        silenced.clone(),
        async move {
            reports_stopped.await.ok();
        },
    ));
    let gateways = (0..settings.schedulers).map(|index| mesh.spawn_gateway(index)).collect::<Result<Vec<_>>>()?;
    for index in 0..settings.schedulers {
        let address = mesh.scheduler_addr(index);
        eventually(&format!("scheduler {index} hears every node"), || async {
            let pools = list_pools(&address, "").await?;
            Ok(pools.iter().filter(|pool| pool.schedulable).count() == settings.nodes + settings.reporting_nodes)
        })
        .await?;
    }
    println!(
        "{} volume nodes and {} that only report, {} schedulers on PostgreSQL, {} gateways: up and heard in {:.1} s",
        settings.nodes,
        settings.reporting_nodes,
        settings.schedulers,
        gateways.len(),
        started.elapsed().as_secs_f64()
    );

    // One client per gateway's address, the clients spread over the gateways in turn.
    let client = reqwest::Client::builder().pool_max_idle_per_host(settings.clients * 2).build()?;
    let loads: Vec<RestLoad> = gateways
        .iter()
        .map(|gateway| RestLoad {
            client: client.clone(),
            base: format!("{}/{PROJECT}", gateway.endpoint("rest").trim_end_matches('/')),
            token: format!("admin:{PROJECT}"),
            poll: POLL,
        })
        .collect();
    let load_of = |index: usize| loads[index % loads.len()].clone();
    let lifted = r#"{"quota_set": {"volumes": -1, "gigabytes": -1}}"#;
    let (status, body) = loads[0].call(Method::PUT, &format!("/os-quota-sets/{PROJECT}"), Some(lifted)).await?;
    ensure!(status.is_success(), "lifting quotas: {status} {body}");

    // Creates: every client makes its volumes one after another, each polled until available.
    let phase = Instant::now();
    let mut workers = Vec::new();
    for index in 0..settings.clients {
        workers.push(tokio::spawn(create_volumes(load_of(index), settings.volumes)));
    }
    let (mut created, mut create_times) = (Vec::new(), Vec::new());
    for worker in workers {
        let (ids, times) = worker.await??;
        created.push(ids);
        create_times.extend(times);
    }
    let create_rate = create_times.len() as f64 / phase.elapsed().as_secs_f64();
    let (create_p50, create_p99) = percentiles(&mut create_times);

    // Listing: every client reads pages of the detail listing at once; then one walk by marker.
    let mut workers = Vec::new();
    for index in 0..settings.clients {
        let load = load_of(index);
        workers.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(PAGES_PER_CLIENT);
            for _ in 0..PAGES_PER_CLIENT {
                let started = Instant::now();
                let (status, body) = load.call(Method::GET, &format!("/volumes/detail?limit={PAGE}"), None).await?;
                ensure!(status == StatusCode::OK, "listing: {status} {body}");
                times.push(started.elapsed());
            }
            Ok::<_, anyhow::Error>(times)
        }));
    }
    let mut page_times = Vec::new();
    for worker in workers {
        page_times.extend(worker.await??);
    }
    let (page_p50, page_p99) = percentiles(&mut page_times);
    let per_host = walk_listing(&loads[0]).await?;
    let total: usize = created.iter().map(Vec::len).sum();
    ensure!(per_host.values().sum::<usize>() == total, "the listing shows {per_host:?}, not {total} volumes");
    let mut counts: Vec<usize> = per_host.values().copied().collect();
    counts.resize(settings.nodes.max(counts.len()), 0);
    counts.sort_unstable();

    // Deletes: every client deletes its volumes, each polled until gone.
    let phase = Instant::now();
    let mut workers = Vec::new();
    for (index, ids) in created.into_iter().enumerate() {
        let load = load_of(index);
        workers.push(tokio::spawn(async move {
            for id in ids {
                load.delete_gone(&id).await?;
            }
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let delete_rate = total as f64 / phase.elapsed().as_secs_f64();

    // Every claim given back: each pool books nothing once the nodes report their empty pools.
    let deadline = tokio::time::Instant::now() + WAIT;
    let left = loop {
        let pools = list_pools(&mesh.scheduler_addr(0), "").await?;
        let booked: Vec<String> = pools
            .iter()
            .filter(|pool| pool.allocated_capacity_gib > 0 || pool.provisioned_capacity_gib > 0)
            .map(|pool| format!("{} ({} GiB)", pool.name, pool.allocated_capacity_gib))
            .collect();
        if booked.is_empty() || tokio::time::Instant::now() > deadline {
            break booked;
        }
        tokio::time::sleep(settings.report_interval).await;
    };

    println!("| figure | value |");
    println!("|---|---|");
    println!("| volumes created, by {} clients | {total} |", settings.clients);
    println!("| creates/s (create→available) | {create_rate:.0} |");
    println!("| create→available p50 / p99 | {:.1} ms / {:.1} ms |", millis(create_p50), millis(create_p99));
    println!(
        "| detail listing of {PAGE}, {} at once: p50 / p99 | {:.1} ms / {:.1} ms |",
        settings.clients,
        millis(page_p50),
        millis(page_p99)
    );
    println!("| deletes/s (delete→gone) | {delete_rate:.0} |");
    println!(
        "| volumes per node: fewest / median / most (nodes holding any) | {} / {} / {} ({}) |",
        counts[0],
        counts[counts.len() / 2],
        counts[counts.len() - 1],
        per_host.len()
    );
    println!("| pools still booked after the deletes | {} |", left.len());
    if settings.reporting_nodes > 0 {
        report_lag_and_silence(&mesh, settings, &silenced).await?;
    }
    stop_reports.send(()).ok();
    reporter.await??;
    for node in nodes {
        node.shutdown().await;
    }
    drop(gateways);
    ensure!(left.is_empty(), "claims not given back: {}", left.join(", "));
    Ok(())
}

/// Volume node `index`: the file backend on its own directory under `storage`, thin pools that may
/// promise 20 times their size (so 1 GiB volumes never run the shared filesystem out).
async fn start_node(
    index: usize,
    storage: &Path,
    bus: &Bus,
    report_interval: Duration,
) -> Result<basalt_volume_node::RunningNode> {
    let node_id = NodeId::parse(&format!("sim-{index:05}"))?;
    let dir = storage.join(node_id.as_str()).join("pool");
    let tls = pki().tls(Role::Node(node_id.clone()));
    let mut config = basalt_volume_node::NodeConfig::new(node_id, dir, tls);
    config.report_interval = report_interval;
    config.max_over_subscription_ratio = 20.0;
    Ok(basalt_volume_node::start(config, bus.clone()).await?)
}

/// How far behind each scheduler is with the reports of the nodes that only report, and how long
/// one of them, silenced, stays schedulable.
async fn report_lag_and_silence(mesh: &ProcessMesh, settings: &Settings, silenced: &AtomicBool) -> Result<()> {
    let interval = settings.reporting_interval;
    for index in 0..settings.schedulers {
        let pools = list_pools(&mesh.scheduler_addr(index), "").await?;
        let now = SystemTime::now();
        let mut ages: Vec<Duration> = pools
            .iter()
            .filter(|pool| pool.availability_zone == REPORTING_ZONE)
            .filter_map(|pool| pool.reported_at.and_then(|at| SystemTime::try_from(at).ok()))
            .map(|at| now.duration_since(at).unwrap_or_default())
            .collect();
        ensure!(ages.len() == settings.reporting_nodes, "scheduler {index} holds {} of the reports", ages.len());
        let (p50, p99) = percentiles(&mut ages);
        let oldest = ages.last().copied().unwrap_or_default();
        println!(
            "| scheduler {index}: age of the reports it holds, p50 / p99 / oldest (interval {:.0} s; older than the interval means behind) | {:.1} s / {:.1} s / {:.1} s |",
            interval.as_secs_f64(),
            p50.as_secs_f64(),
            p99.as_secs_f64(),
            oldest.as_secs_f64()
        );
    }
    silenced.store(true, Ordering::Relaxed);
    let silenced_at = Instant::now();
    let host = format!("{}@file#default", reporting_node_id(0));
    let deadline = tokio::time::Instant::now() + interval * 5;
    loop {
        let pools = list_pools(&mesh.scheduler_addr(0), &host).await?;
        if pools.iter().all(|pool| !pool.schedulable) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{host} was still schedulable five intervals after it went silent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = silenced_at.elapsed();
    println!(
        "| a silenced node unschedulable after | {:.1} s ({:.2} intervals; at most 3 plus the age of its last report) |",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / interval.as_secs_f64()
    );
    Ok(())
}

fn reporting_node_id(index: usize) -> String {
    format!("rep-{index:05}")
}

/// Publishes the capacity reports of `count` nodes that only report, each every `interval`, spread
/// evenly over it, until `stopped` resolves; node 0's stop once `silenced` is set.
async fn report_only(
    bus: Bus,
    count: usize,
    interval: Duration,
    silenced: Arc<AtomicBool>,
    stopped: impl Future<Output = ()>,
) -> Result<()> {
    if count == 0 {
        stopped.await;
        return Ok(());
    }
    tokio::pin!(stopped);
    const TICK: Duration = Duration::from_millis(10);
    let per_tick = (count as f64 * TICK.as_secs_f64() / interval.as_secs_f64()).max(1.0);
    let mut ticker = tokio::time::interval(TICK);
    let (mut sent, mut due) = (0usize, 0.0f64);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut stopped => return Ok(()),
        }
        due += per_tick;
        while (sent as f64) < due {
            let index = sent % count;
            let round = (sent / count) as u64 + 1;
            sent += 1;
            if index == 0 && silenced.load(Ordering::Relaxed) {
                continue;
            }
            bus.publish_capacity(&reporting_node_report(index, round, interval)).await?;
        }
    }
}

/// Node `index`'s `round`th report: one thin pool of 1 TiB, nothing on it.
fn reporting_node_report(index: usize, round: u64, interval: Duration) -> CapacityReport {
    CapacityReport {
        node_id: reporting_node_id(index),
        boot_id: "scale-sim".into(),
        sequence: round,
        // Never dialed: no volume is placed in its zone.
        endpoint: "https://127.0.0.1:9".into(),
        availability_zone: REPORTING_ZONE.into(),
        report_interval_ms: interval.as_millis() as u32,
        reported_at: Some(SystemTime::now().into()),
        pools: vec![PoolCapacity {
            name: "default".into(),
            backend: "file".into(),
            total_bytes: 1024 * GIB,
            free_bytes: 1024 * GIB,
            thin_provisioning_support: true,
            max_over_subscription_ratio: 1.0,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The pools scheduler `address` lists (named `name`, or all), allowing for the size of a list of
/// thousands.
async fn list_pools(address: &str, name: &str) -> Result<Vec<Pool>> {
    let mut client = volume_client(address).await?.max_decoding_message_size(256 << 20);
    let request = ListPoolsRequest { name: name.to_owned() };
    Ok(client.list_pools(admin("ops").request(request)).await?.into_inner().pools)
}

/// `count` volumes made one after another, each polled until available; their ids and times.
async fn create_volumes(load: RestLoad, count: usize) -> Result<(Vec<String>, Vec<Duration>)> {
    let (mut ids, mut times) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for _ in 0..count {
        let started = Instant::now();
        // The real nodes' zone: the nodes that only report are in another.
        ids.push(load.create_available(r#"{"volume": {"size": 1, "availability_zone": "nova"}}"#).await?);
        times.push(started.elapsed());
    }
    Ok((ids, times))
}

/// The project's volumes by the pool that holds them, read page by page with markers.
async fn walk_listing(load: &RestLoad) -> Result<HashMap<String, usize>> {
    let mut per_host = HashMap::new();
    let mut marker = String::new();
    loop {
        let (status, body) = load.call(Method::GET, &format!("/volumes/detail?limit=1000{marker}"), None).await?;
        ensure!(status == StatusCode::OK, "listing: {status} {body}");
        let page = body["volumes"].as_array().context("a volume list")?;
        for volume in page {
            let host = volume["os-vol-host-attr:host"].as_str().context("an admin sees the host")?;
            *per_host.entry(host.to_owned()).or_insert(0) += 1;
        }
        match page.last() {
            Some(last) if page.len() == 1000 => {
                marker = format!("&marker={}", last["id"].as_str().context("a volume id")?);
            }
            _ => return Ok(per_host),
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
