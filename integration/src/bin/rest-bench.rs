//! Benchmark (not a test): the REST gateway against the gRPC API it translates to, in one run.
//!
//! - create→available latency of 1 GiB volumes, REST (`POST /volumes`, polling `GET`) vs gRPC;
//! - `GET /volumes/detail` requests/s at concurrency 8 with 1,000 volumes, vs gRPC `ListVolumes`.
//!
//!     cargo run --release -p basalt-integration --bin rest-bench

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use axum::body::Body;
use basalt::{
    bus::Bus,
    context::CallContext,
    ids::{NodeId, ProjectId},
    proto::{CreateVolumeRequest, GetVolumeRequest, ListVolumesRequest, VolumeStatus},
    tls::Role,
};
use basalt_integration::{fast_control_plane, lift_volume_quotas, percentiles, pki, volume_client};
use http_body_util::BodyExt;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const VOLUMES: usize = 1000;
const CONCURRENCY: usize = 8;
const LATENCY_SAMPLES: usize = 100;
/// The page of the sequential listing benchmark.
const PAGE: u32 = 50;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(10);

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

#[tokio::main]
async fn main() -> Result<()> {
    let root = tempfile::tempdir()?;
    let bus = Bus::local();
    let scheduler = basalt_scheduler::start(
        basalt_scheduler::SchedulerConfig {
            database_url: format!("sqlite://{}?mode=rwc", root.path().join("basalt.db").display()),
            database_pool_size: basalt_scheduler::db::DEFAULT_POOL_SIZE,
            listen: "127.0.0.1:0".parse()?,
            instance: "bench".into(),
            initial_report_wait: Duration::from_millis(100),
            control: fast_control_plane(),
            limits: Default::default(),
            tls: pki().tls(Role::Scheduler),
        },
        bus.clone(),
    )
    .await?;
    let node_id = NodeId::parse("bench-node")?;
    let node_tls = pki().tls(Role::Node(node_id.clone()));
    let mut node_config = basalt_volume_node::NodeConfig::new(node_id, root.path().join("volumes"), node_tls);
    // A thousand sparse 1 GiB volumes: promise more than the disk holds, as a thin pool may.
    node_config.max_over_subscription_ratio = 50.0;
    node_config.report_interval = Duration::from_millis(200);
    let node = basalt_volume_node::start(node_config, bus).await?;
    let grpc = scheduler.grpc_addr.to_string();
    let gateway = basalt_api_gateway::start(basalt_api_gateway::GatewayConfig {
        listen: "127.0.0.1:0".parse()?,
        scheduler_endpoint: grpc.clone(),
        tls: pki().tls(Role::Gateway),
        auth: Default::default(),
        limits: Default::default(),
    })
    .await?;
    let rest = format!("http://{}/v3/{PROJECT}", gateway.rest_addr);
    let mut client = volume_client(&grpc).await?;
    lift_volume_quotas(&client, &owner()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Latency: one create at a time, each followed until available.
    let mut grpc_latency = Vec::new();
    let mut rest_latency = Vec::new();
    for _ in 0..LATENCY_SAMPLES {
        grpc_latency.push(grpc_create(&grpc).await?);
        rest_latency.push(rest_create(&http, &rest).await?);
    }
    let (grpc_p50, grpc_p99) = percentiles(&mut grpc_latency);
    let (rest_p50, rest_p99) = percentiles(&mut rest_latency);

    // Fill up to a thousand volumes.
    let existing = 2 * LATENCY_SAMPLES;
    let mut fills = Vec::new();
    for worker in 0..CONCURRENCY {
        let grpc = grpc.clone();
        let share = (VOLUMES - existing) / CONCURRENCY + usize::from(worker < (VOLUMES - existing) % CONCURRENCY);
        fills.push(tokio::spawn(async move {
            let mut client = volume_client(&grpc).await?;
            for _ in 0..share {
                client
                    .create_volume(owner().request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for fill in fills {
        fill.await??;
    }
    let listed = client.list_volumes(owner().request(ListVolumesRequest::default())).await?.into_inner();
    ensure!(listed.volumes.len() == VOLUMES, "expected {VOLUMES} volumes, found {}", listed.volumes.len());

    // One channel for every worker, as the REST side's client keeps its connections: each call
    // reuses a connection instead of opening one.
    let listing_client = client.clone();
    let grpc_rate = throughput(move || {
        let mut client = listing_client.clone();
        async move {
            client.list_volumes(owner().request(ListVolumesRequest::default())).await?;
            Ok(())
        }
    })
    .await?;
    let list_url = format!("{rest}/volumes/detail");
    let http_for_list = http.clone();
    let rest_rate = throughput(move || {
        let http = http_for_list.clone();
        let url = list_url.clone();
        async move {
            let (status, body) = get(&http, &url).await?;
            ensure!(status == 200 && body.len() > 100_000, "GET /volumes/detail answered {status}");
            Ok(())
        }
    })
    .await?;

    // One request at a time on one kept-alive connection, as cinderclient and the SDK send them: a
    // small response (one volume) and a large one (a page of 50 with details, tens of kilobytes,
    // written in more than one segment), each against the same read over gRPC.
    let some_id = listed.volumes[0].id.clone();
    let mut rest_show = Vec::new();
    let mut grpc_show = Vec::new();
    let mut rest_page = Vec::new();
    let mut grpc_page = Vec::new();
    let page = || ListVolumesRequest {
        page: Some(basalt::proto::PageRequest { limit: PAGE, ..Default::default() }),
        ..Default::default()
    };
    for _ in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        let (status, _) = get(&http, &format!("{rest}/volumes/{some_id}")).await?;
        ensure!(status == 200, "GET /volumes/{{id}} answered {status}");
        rest_show.push(started.elapsed());
        let started = Instant::now();
        client.get_volume(owner().request(GetVolumeRequest { volume_id: some_id.clone() })).await?;
        grpc_show.push(started.elapsed());
        let started = Instant::now();
        let (status, body) = get(&http, &format!("{rest}/volumes/detail?limit={PAGE}")).await?;
        ensure!(status == 200 && body.len() > 20_000, "GET /volumes/detail?limit={PAGE} answered {status}");
        rest_page.push(started.elapsed());
        let started = Instant::now();
        client.list_volumes(owner().request(page())).await?;
        grpc_page.push(started.elapsed());
    }
    let sequential = [
        ("GET /volumes/{id} (one volume)", percentiles(&mut rest_show).0, percentiles(&mut grpc_show).0),
        ("GET /volumes/detail?limit=50", percentiles(&mut rest_page).0, percentiles(&mut grpc_page).0),
    ];

    println!("| measure | REST | gRPC (reference) | REST ÷ gRPC | better |");
    println!("|---|---|---|---|---|");
    println!(
        "| create→available p50 ({LATENCY_SAMPLES} sequential) | {:.1} ms | {:.1} ms | {:.2}× | lower |",
        ms(rest_p50),
        ms(grpc_p50),
        rest_p50.as_secs_f64() / grpc_p50.as_secs_f64()
    );
    println!(
        "| create→available p99 | {:.1} ms | {:.1} ms | {:.2}× | lower |",
        ms(rest_p99),
        ms(grpc_p99),
        rest_p99.as_secs_f64() / grpc_p99.as_secs_f64()
    );
    println!(
        "| list {VOLUMES} volumes with details, concurrency {CONCURRENCY} | {rest_rate:.0} req/s | {grpc_rate:.0} req/s | {:.2}× | higher |",
        rest_rate / grpc_rate
    );
    for (what, rest_p50, grpc_p50) in sequential {
        println!(
            "| {what}, sequential on one connection, p50 | {:.2} ms | {:.2} ms | {:.2}× | lower |",
            ms(rest_p50),
            ms(grpc_p50),
            rest_p50.as_secs_f64() / grpc_p50.as_secs_f64()
        );
    }
    gateway.shutdown().await;
    node.shutdown().await;
    scheduler.shutdown().await;
    Ok(())
}

/// The benchmark's project, as its REST token names it.
fn owner() -> CallContext {
    CallContext::new(ProjectId::parse(PROJECT).expect("a Keystone-form id"), "admin", basalt::context::ADMIN_ROLES)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

async fn grpc_create(grpc: &str) -> Result<Duration> {
    let mut client = volume_client(grpc).await?;
    let owner = owner();
    let started = Instant::now();
    let volume = client
        .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
        .await?
        .into_inner();
    loop {
        let current =
            client.get_volume(owner.request(GetVolumeRequest { volume_id: volume.id.clone() })).await?.into_inner();
        if current.status() == VolumeStatus::Available {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn rest_create(http: &HttpClient, rest: &str) -> Result<Duration> {
    let started = Instant::now();
    let request = http::Request::post(format!("{rest}/volumes"))
        .header("x-auth-token", format!("admin:{PROJECT}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"volume": {"size": 1}}"#))?;
    let response = http.request(request).await?;
    ensure!(response.status() == 202, "POST /volumes answered {}", response.status());
    let body = response.into_body().collect().await?.to_bytes();
    let created: serde_json::Value = serde_json::from_slice(&body)?;
    let id = created["volume"]["id"].as_str().context("a volume id")?.to_owned();
    loop {
        let (_, body) = get(http, &format!("{rest}/volumes/{id}")).await?;
        let shown: serde_json::Value = serde_json::from_slice(&body)?;
        if shown["volume"]["status"] == "available" {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn get(http: &HttpClient, url: &str) -> Result<(u16, axum::body::Bytes)> {
    let request = http::Request::get(url).header("x-auth-token", format!("admin:{PROJECT}")).body(Body::empty())?;
    let response = http.request(request).await?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// Requests per second of `call` run by `CONCURRENCY` workers for `THROUGHPUT_WINDOW`.
async fn throughput<F, Fut>(call: F) -> Result<f64>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let deadline = Instant::now() + THROUGHPUT_WINDOW;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let call = call.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                call().await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    for worker in workers {
        total += worker.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
