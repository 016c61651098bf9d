//! Benchmark (not a test): volume create→available and delete→gone latency through gRPC, at
//! concurrency 1, 8 and 32, on the embedded topology (SQLite, in-process bus, file backend).
//! The reference, measured in the same run, is the node's own create and delete calls over gRPC
//! without the control plane, so the ratios show what the control plane adds.
//!
//!     cargo run --release -p basalt-integration --bin lifecycle-bench [cycles per level]

use std::time::{Duration, Instant};

use anyhow::Result;
use basalt::channel::Channel;
use basalt::proto::{
    CreateVolumeRequest, DeleteVolumeRequest, GetVolumeRequest, NodeCreateVolumeRequest, NodeDeleteVolumeRequest,
    VolumeStatus, node_agent_client::NodeAgentClient, volume_service_client::VolumeServiceClient,
};
use basalt_integration::{InProcessMesh, lift_volume_quotas, percentiles, project, volume_client};

const POLL: Duration = Duration::from_millis(1);

#[tokio::main]
async fn main() -> Result<()> {
    let cycles: usize = std::env::args().nth(1).map(|text| text.parse()).transpose()?.unwrap_or(256);
    let mesh = InProcessMesh::start(1).await?;
    let client = volume_client(&mesh.grpc_addr).await?;
    lift_volume_quotas(&client, &project("bench")).await?;

    let reference = reference_cycles(mesh.node_client(0)?, cycles).await?;
    println!(
        "reference: NodeAgent create {:?} p50, delete {:?} p50 (the node's own work over gRPC)",
        reference.0, reference.1
    );
    println!();
    println!("| concurrency | create→available p50 | p99 | ×ref p50 | delete→gone p50 | p99 | ×ref p50 | cycles/s |");
    println!("|---|---|---|---|---|---|---|---|");
    for concurrency in [1usize, 8, 32] {
        let started = Instant::now();
        let mut workers = Vec::new();
        for worker in 0..concurrency {
            let client = client.clone();
            let share = cycles / concurrency + usize::from(worker < cycles % concurrency);
            workers.push(tokio::spawn(async move { run_cycles(client, share).await }));
        }
        let mut creates = Vec::new();
        let mut deletes = Vec::new();
        for worker in workers {
            let (worker_creates, worker_deletes) = worker.await??;
            creates.extend(worker_creates);
            deletes.extend(worker_deletes);
        }
        let elapsed = started.elapsed();
        let (create_p50, create_p99) = percentiles(&mut creates);
        let (delete_p50, delete_p99) = percentiles(&mut deletes);
        println!(
            "| {concurrency} | {:.1} ms | {:.1} ms | {:.1}× | {:.1} ms | {:.1} ms | {:.1}× | {:.0} |",
            millis(create_p50),
            millis(create_p99),
            create_p50.as_secs_f64() / reference.0.as_secs_f64(),
            millis(delete_p50),
            millis(delete_p99),
            delete_p50.as_secs_f64() / reference.1.as_secs_f64(),
            cycles as f64 / elapsed.as_secs_f64()
        );
    }
    mesh.shutdown().await;
    Ok(())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The node's own create and delete, called directly.
async fn reference_cycles(mut node: NodeAgentClient<Channel>, cycles: usize) -> Result<(Duration, Duration)> {
    let mut creates = Vec::new();
    let mut deletes = Vec::new();
    for _ in 0..cycles {
        let volume_id = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        node.create_volume(NodeCreateVolumeRequest {
            volume_id: volume_id.clone(),
            pool: "default".into(),
            size_bytes: 1 << 30,
            ..Default::default()
        })
        .await?;
        creates.push(started.elapsed());
        let started = Instant::now();
        node.delete_volume(NodeDeleteVolumeRequest { volume_id, pool: "default".into() }).await?;
        deletes.push(started.elapsed());
    }
    Ok((percentiles(&mut creates).0, percentiles(&mut deletes).0))
}

async fn run_cycles(mut client: VolumeServiceClient<Channel>, cycles: usize) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let owner = project("bench");
    let mut creates = Vec::with_capacity(cycles);
    let mut deletes = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        let started = Instant::now();
        let volume = client
            .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
            .await?
            .into_inner();
        loop {
            let current =
                client.get_volume(owner.request(GetVolumeRequest { volume_id: volume.id.clone() })).await?.into_inner();
            match current.status() {
                VolumeStatus::Available => break,
                VolumeStatus::Creating => tokio::time::sleep(POLL).await,
                other => anyhow::bail!("volume {} went to {other:?}: {}", volume.id, current.error_reason),
            }
        }
        creates.push(started.elapsed());
        let started = Instant::now();
        client
            .delete_volume(owner.request(DeleteVolumeRequest { volume_id: volume.id.clone(), ..Default::default() }))
            .await?;
        loop {
            match client.get_volume(owner.request(GetVolumeRequest { volume_id: volume.id.clone() })).await {
                Err(status) if status.code() == tonic::Code::NotFound => break,
                Err(status) => return Err(status.into()),
                Ok(_) => tokio::time::sleep(POLL).await,
            }
        }
        deletes.push(started.elapsed());
    }
    Ok((creates, deletes))
}
