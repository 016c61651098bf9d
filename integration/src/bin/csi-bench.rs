//! Benchmark (not a test): the CSI plugin against the same work done directly, in one run.
//!
//! - CreateVolume until the plugin answers (it answers once the volume is `available`), against
//!   `POST /volumes` and polling `GET /volumes/{id}` every millisecond until `available`;
//! - NodeStage + NodePublish of a fresh 1 GiB volume on its own host (loop device, blank check,
//!   ext4, mount, bind mount), against the same commands by hand on another fresh volume's file:
//!   `losetup --find --show`, `blkid -p`, `mkfs.ext4`, `mount`, `mount --bind`.
//!
//! Samples alternate which side goes first; everything is undone between samples, untimed.
//!
//!     cargo run --release -p basalt-integration --bin csi-bench [samples]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use axum::body::Body;
use basalt::csi::{
    ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest, CreateVolumeRequest, DeleteVolumeRequest,
    NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest,
    volume_capability::access_mode::Mode,
};
use basalt_integration::{
    csi::{CSI_NODE, CsiHarness, gib_range, mount_capability},
    percentiles, project_id,
};
use http_body_util::BodyExt;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

const DEFAULT_SAMPLES: usize = 30;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

#[tokio::main]
async fn main() -> Result<()> {
    let samples: usize = std::env::args().nth(1).map(|count| count.parse()).transpose()?.unwrap_or(DEFAULT_SAMPLES);
    let harness = CsiHarness::start().await?;
    let gateway = basalt_api_gateway::start(basalt_api_gateway::GatewayConfig {
        listen: "127.0.0.1:0".parse()?,
        scheduler_endpoint: harness.mesh.grpc_addr.clone(),
        tls: basalt_integration::pki().tls(basalt::tls::Role::Gateway),
        auth: Default::default(),
        limits: Default::default(),
    })
    .await?;
    let rest = Rest {
        http: Client::builder(TokioExecutor::new()).build_http(),
        base: format!("http://{}/v3/{}", gateway.rest_addr, project_id("csi")),
        token: format!("admin:{}", project_id("csi")),
    };
    // The node's first capacity report, so the first create is not an outlier.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut csi_create = Vec::new();
    let mut rest_create = Vec::new();
    let mut csi_attach = Vec::new();
    let mut hand_attach = Vec::new();
    for sample in 0..samples {
        let csi_first = sample % 2 == 0;
        let (csi_volume, rest_volume) = if csi_first {
            let csi_volume = timed(&mut csi_create, create_through_csi(&harness, sample)).await?;
            let rest_volume = timed(&mut rest_create, rest.create_volume()).await?;
            (csi_volume, rest_volume)
        } else {
            let rest_volume = timed(&mut rest_create, rest.create_volume()).await?;
            let csi_volume = timed(&mut csi_create, create_through_csi(&harness, sample)).await?;
            (csi_volume, rest_volume)
        };
        let file = harness.mesh.node_dir(CSI_NODE).join(format!("volume-{rest_volume}"));
        let file = file.to_str().context("a utf-8 volume path")?.to_owned();
        let staging = harness.dir(&format!("staging-{sample}"))?;
        let target = harness.path(&format!("target-{sample}"));
        let hand_staging = harness.dir(&format!("hand-staging-{sample}"))?;
        let hand_target = harness.path(&format!("hand-target-{sample}"));
        let context = publish(&harness, &csi_volume).await?;
        if csi_first {
            csi_attach.push(stage_and_publish(&harness, &csi_volume, context, &staging, &target).await?);
            hand_attach.push(attach_by_hand(&file, &hand_staging, &hand_target).await?);
        } else {
            hand_attach.push(attach_by_hand(&file, &hand_staging, &hand_target).await?);
            csi_attach.push(stage_and_publish(&harness, &csi_volume, context, &staging, &target).await?);
        }
        ensure!(
            std::path::Path::new(&target).join("lost+found").is_dir()
                && std::path::Path::new(&hand_target).join("lost+found").is_dir(),
            "both sides should show a fresh ext4 at their target"
        );
        tear_down_csi(&harness, &csi_volume, &staging, &target).await?;
        detach_by_hand(&hand_staging, &hand_target).await?;
        rest.delete_volume(&rest_volume).await?;
    }

    let (csi_create_p50, csi_create_p99) = percentiles(&mut csi_create);
    let (rest_create_p50, rest_create_p99) = percentiles(&mut rest_create);
    let (csi_attach_p50, csi_attach_p99) = percentiles(&mut csi_attach);
    let (hand_attach_p50, hand_attach_p99) = percentiles(&mut hand_attach);
    println!("{samples} samples of each; lower ratios are better (1.00× = no cost over doing it directly)");
    println!();
    println!("| measure | CSI plugin | direct (reference) | CSI ÷ direct |");
    println!("|---|---|---|---|");
    row("CreateVolume → ready p50 (vs REST create + 1 ms polls)", csi_create_p50, rest_create_p50);
    row("CreateVolume → ready p99", csi_create_p99, rest_create_p99);
    row("NodeStage + NodePublish p50 (vs losetup, blkid, mkfs.ext4, mount, bind)", csi_attach_p50, hand_attach_p50);
    row("NodeStage + NodePublish p99", csi_attach_p99, hand_attach_p99);

    gateway.shutdown().await;
    harness.shutdown().await;
    Ok(())
}

fn row(measure: &str, csi: Duration, direct: Duration) {
    println!(
        "| {measure} | {:.1} ms | {:.1} ms | {:.2}× |",
        csi.as_secs_f64() * 1000.0,
        direct.as_secs_f64() * 1000.0,
        csi.as_secs_f64() / direct.as_secs_f64()
    );
}

/// Runs `work`, recording how long it took in `samples`.
async fn timed<T>(samples: &mut Vec<Duration>, work: impl Future<Output = Result<T>>) -> Result<T> {
    let started = Instant::now();
    let value = work.await?;
    samples.push(started.elapsed());
    Ok(value)
}

async fn create_through_csi(harness: &CsiHarness, sample: usize) -> Result<String> {
    let request = CreateVolumeRequest {
        name: format!("pvc-bench-{sample}"),
        capacity_range: gib_range(1),
        volume_capabilities: vec![mount_capability("ext4", Mode::SingleNodeWriter)],
        ..Default::default()
    };
    let created = harness.clients.controller.clone().create_volume(request).await?.into_inner();
    Ok(created.volume.context("CreateVolume answers a volume")?.volume_id)
}

async fn publish(harness: &CsiHarness, volume_id: &str) -> Result<std::collections::HashMap<String, String>> {
    let request = ControllerPublishVolumeRequest {
        volume_id: volume_id.into(),
        node_id: CSI_NODE.into(),
        volume_capability: Some(mount_capability("ext4", Mode::SingleNodeWriter)),
        ..Default::default()
    };
    Ok(harness.clients.controller.clone().controller_publish_volume(request).await?.into_inner().publish_context)
}

async fn stage_and_publish(
    harness: &CsiHarness,
    volume_id: &str,
    publish_context: std::collections::HashMap<String, String>,
    staging: &str,
    target: &str,
) -> Result<Duration> {
    let mut node = harness.clients.node.clone();
    let started = Instant::now();
    node.node_stage_volume(NodeStageVolumeRequest {
        volume_id: volume_id.into(),
        publish_context: publish_context.clone(),
        staging_target_path: staging.into(),
        volume_capability: Some(mount_capability("ext4", Mode::SingleNodeWriter)),
        ..Default::default()
    })
    .await?;
    node.node_publish_volume(NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        publish_context,
        staging_target_path: staging.into(),
        target_path: target.into(),
        volume_capability: Some(mount_capability("ext4", Mode::SingleNodeWriter)),
        ..Default::default()
    })
    .await?;
    Ok(started.elapsed())
}

async fn tear_down_csi(harness: &CsiHarness, volume_id: &str, staging: &str, target: &str) -> Result<()> {
    let mut node = harness.clients.node.clone();
    node.node_unpublish_volume(NodeUnpublishVolumeRequest { volume_id: volume_id.into(), target_path: target.into() })
        .await?;
    node.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.into(),
    })
    .await?;
    let mut controller = harness.clients.controller.clone();
    controller
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: volume_id.into(),
            node_id: CSI_NODE.into(),
            ..Default::default()
        })
        .await?;
    controller.delete_volume(DeleteVolumeRequest { volume_id: volume_id.into(), ..Default::default() }).await?;
    Ok(())
}

/// What an operator would type to put a filesystem from `file` at `target`.
async fn attach_by_hand(file: &str, staging: &str, target: &str) -> Result<Duration> {
    let started = Instant::now();
    let device = run("losetup", &["--find", "--show", file]).await?;
    let device = device.trim();
    let probed =
        tokio::process::Command::new("blkid").args(["-p", "-s", "TYPE", "-o", "value", device]).output().await?;
    ensure!(probed.status.code() == Some(2), "the fresh volume {file} should be blank");
    run("mkfs.ext4", &["-F", "-q", "-E", "nodiscard", device]).await?;
    run("mount", &["-t", "ext4", device, staging]).await?;
    tokio::fs::create_dir_all(target).await?;
    run("mount", &["--bind", staging, target]).await?;
    Ok(started.elapsed())
}

async fn detach_by_hand(staging: &str, target: &str) -> Result<()> {
    run("umount", &[target]).await?;
    // losetup made the device without autoclear: it outlives the unmount unless detached.
    let device = run("findmnt", &["-n", "-o", "SOURCE", staging]).await?;
    run("umount", &[staging]).await?;
    run("losetup", &["-d", device.trim()]).await?;
    Ok(())
}

async fn run(program: &str, arguments: &[&str]) -> Result<String> {
    let output = tokio::process::Command::new(program).args(arguments).output().await?;
    ensure!(
        output.status.success(),
        "{program} {arguments:?} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8(output.stdout)?)
}

struct Rest {
    http: HttpClient,
    base: String,
    token: String,
}

impl Rest {
    async fn create_volume(&self) -> Result<String> {
        let request = http::Request::post(format!("{}/volumes", self.base))
            .header("x-auth-token", &self.token)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"volume": {"size": 1}}"#))?;
        let response = self.http.request(request).await?;
        ensure!(response.status() == 202, "POST /volumes answered {}", response.status());
        let created: serde_json::Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
        let id = created["volume"]["id"].as_str().context("a volume id")?.to_owned();
        loop {
            let request = http::Request::get(format!("{}/volumes/{id}", self.base))
                .header("x-auth-token", &self.token)
                .body(Body::empty())?;
            let response = self.http.request(request).await?;
            let shown: serde_json::Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
            if shown["volume"]["status"] == "available" {
                return Ok(id);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn delete_volume(&self, id: &str) -> Result<()> {
        let request = http::Request::delete(format!("{}/volumes/{id}", self.base))
            .header("x-auth-token", &self.token)
            .body(Body::empty())?;
        let response = self.http.request(request).await?;
        ensure!(response.status() == 202, "DELETE /volumes/{id} answered {}", response.status());
        Ok(())
    }
}
