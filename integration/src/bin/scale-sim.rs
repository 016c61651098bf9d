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
//!     cargo run --release -p basalt-integration --bin scale-sim -- \
//!         [--nodes 200] [--schedulers 2] [--clients 32] [--volumes 8] [--report-interval-ms 1000]

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use basalt::{bus::Bus, ids::NodeId, proto::ListPoolsRequest, tls::Role};
use basalt_integration::{
    BasaltProcess, NATS_URL, PostgresDatabase, ProcessMesh, WAIT, admin, eventually, percentiles, pki, rest_call,
    volume_client,
};
use reqwest::{Method, StatusCode};

const PROJECT: &str = "5ca1e5ca1e5ca1e5ca1e5ca1e5ca1e00";
const POLL: Duration = Duration::from_millis(2);
/// Listing pages each client reads, of [`PAGE`] volumes.
const PAGES_PER_CLIENT: usize = 10;
const PAGE: usize = 100;

struct Settings {
    nodes: usize,
    schedulers: usize,
    clients: usize,
    volumes: usize,
    report_interval: Duration,
}

impl Settings {
    fn from_args() -> Result<Self> {
        let mut settings =
            Self { nodes: 200, schedulers: 2, clients: 32, volumes: 8, report_interval: Duration::from_millis(1000) };
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
                other => bail!(
                    "unknown flag {other}: use --nodes, --schedulers, --clients, --volumes or --report-interval-ms"
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
    let gateways = (0..settings.schedulers)
        .map(|index| {
            let endpoint = mesh.scheduler_addr(index);
            let mut args = vec!["gateway".to_owned(), "--listen".into(), "127.0.0.1:0".into()];
            args.extend(["--scheduler-endpoint".to_owned(), endpoint]);
            args.extend(pki().args(&Role::Gateway));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            BasaltProcess::spawn(&args, &[], &["rest"])
        })
        .collect::<Result<Vec<_>>>()?;
    for index in 0..settings.schedulers {
        let client = volume_client(&mesh.scheduler_addr(index)).await?;
        eventually(&format!("scheduler {index} hears every node"), || {
            let mut client = client.clone();
            async move {
                let pools =
                    client.list_pools(admin("ops").request(ListPoolsRequest::default())).await?.into_inner().pools;
                Ok(pools.iter().filter(|pool| pool.schedulable).count() == settings.nodes)
            }
        })
        .await?;
    }
    println!(
        "{} volume nodes, {} schedulers on PostgreSQL, {} gateways: up and heard in {:.1} s",
        settings.nodes,
        settings.schedulers,
        gateways.len(),
        started.elapsed().as_secs_f64()
    );

    let bases: Vec<String> = gateways
        .iter()
        .map(|gateway| format!("{}/{PROJECT}", gateway.endpoint("rest").trim_end_matches('/')))
        .collect();
    let client = reqwest::Client::builder().pool_max_idle_per_host(settings.clients * 2).build()?;
    let lifted = r#"{"quota_set": {"volumes": -1, "gigabytes": -1}}"#;
    let url = format!("{}/os-quota-sets/{PROJECT}", bases[0]);
    let (status, body) = call(&client, Method::PUT, &url, Some(lifted)).await?;
    ensure!(status.is_success(), "lifting quotas: {status} {body}");

    // Creates: every client makes its volumes one after another, each polled until available.
    let phase = Instant::now();
    let mut workers = Vec::new();
    for index in 0..settings.clients {
        let (client, base) = (client.clone(), bases[index % bases.len()].clone());
        workers.push(tokio::spawn(create_volumes(client, base, settings.volumes)));
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
        let (client, base) = (client.clone(), bases[index % bases.len()].clone());
        workers.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(PAGES_PER_CLIENT);
            for _ in 0..PAGES_PER_CLIENT {
                let started = Instant::now();
                let (status, body) =
                    call(&client, Method::GET, &format!("{base}/volumes/detail?limit={PAGE}"), None).await?;
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
    let per_host = walk_listing(&client, &bases[0]).await?;
    let total: usize = created.iter().map(Vec::len).sum();
    ensure!(per_host.values().sum::<usize>() == total, "the listing shows {per_host:?}, not {total} volumes");
    let mut counts: Vec<usize> = per_host.values().copied().collect();
    counts.resize(settings.nodes.max(counts.len()), 0);
    counts.sort_unstable();

    // Deletes: every client deletes its volumes, each polled until gone.
    let phase = Instant::now();
    let mut workers = Vec::new();
    for (index, ids) in created.into_iter().enumerate() {
        let (client, base) = (client.clone(), bases[index % bases.len()].clone());
        workers.push(tokio::spawn(delete_volumes(client, base, ids)));
    }
    for worker in workers {
        worker.await??;
    }
    let delete_rate = total as f64 / phase.elapsed().as_secs_f64();

    // Every claim given back: each pool books nothing once the nodes report their empty pools.
    let mut scheduler = volume_client(&mesh.scheduler_addr(0)).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let left = loop {
        let pools = scheduler.list_pools(admin("ops").request(ListPoolsRequest::default())).await?.into_inner().pools;
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

async fn create_volumes(client: reqwest::Client, base: String, count: usize) -> Result<(Vec<String>, Vec<Duration>)> {
    let (mut ids, mut times) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for _ in 0..count {
        let started = Instant::now();
        let body = Some(r#"{"volume": {"size": 1}}"#);
        let (status, body) = call(&client, Method::POST, &format!("{base}/volumes"), body).await?;
        ensure!(status.is_success(), "create: {status} {body}");
        let id = body["volume"]["id"].as_str().context("a volume id")?.to_owned();
        loop {
            let (_, body) = call(&client, Method::GET, &format!("{base}/volumes/{id}"), None).await?;
            match body["volume"]["status"].as_str() {
                Some("available") => break,
                Some("creating") => tokio::time::sleep(POLL).await,
                other => bail!("volume {id} became {other:?}"),
            }
        }
        times.push(started.elapsed());
        ids.push(id);
    }
    Ok((ids, times))
}

async fn delete_volumes(client: reqwest::Client, base: String, ids: Vec<String>) -> Result<()> {
    for id in ids {
        let path = format!("{base}/volumes/{id}");
        let (status, body) = call(&client, Method::DELETE, &path, None).await?;
        ensure!(status.is_success(), "delete: {status} {body}");
        while call(&client, Method::GET, &path, None).await?.0 != StatusCode::NOT_FOUND {
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

/// The project's volumes by the pool that holds them, read page by page with markers.
async fn walk_listing(client: &reqwest::Client, base: &str) -> Result<HashMap<String, usize>> {
    let mut per_host = HashMap::new();
    let mut marker = String::new();
    loop {
        let url = format!("{base}/volumes/detail?limit=1000{marker}");
        let (status, body) = call(client, Method::GET, &url, None).await?;
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

async fn call(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<&str>,
) -> Result<(StatusCode, serde_json::Value)> {
    rest_call(client, method, url, &format!("admin:{PROJECT}"), body).await
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
