//! Two scheduler processes on one PostgreSQL take 200 concurrent creates for pools that fit only
//! 150: exactly 150 succeed and no pool is booked beyond its capacity.

use std::collections::HashMap;

use anyhow::{Result, ensure};
use basalt::proto::{CreateVolumeRequest, ListPoolsRequest, ListVolumesRequest, VolumeStatus};
use basalt_integration::*;

const POOL_GIB: usize = 50;
const NODES: usize = 3;
const REQUESTS: usize = 200;

#[tokio::test]
async fn two_schedulers_never_overbook_a_pool() -> Result<()> {
    let database = PostgresDatabase::create().await?;
    let mesh =
        ProcessMesh::start(Some(database.url.clone()), 2, NODES, &["--max-capacity-gib", &POOL_GIB.to_string()])?;
    mesh.wait_for_nodes(0).await?;
    mesh.wait_for_nodes(1).await?;
    let clients = [volume_client(&mesh.scheduler_addr(0)).await?, volume_client(&mesh.scheduler_addr(1)).await?];
    let crowd = project("crowd");
    lift_volume_quotas(&clients[0], &crowd).await?;

    let mut calls = Vec::new();
    for index in 0..REQUESTS {
        let mut client = clients[index % 2].clone();
        let request =
            crowd.request(CreateVolumeRequest { size_gib: 1, name: format!("v{index}"), ..Default::default() });
        calls.push(tokio::spawn(async move { client.create_volume(request).await }));
    }
    let mut accepted = Vec::new();
    let mut refused = 0;
    for call in calls {
        match call.await? {
            Ok(volume) => accepted.push(volume.into_inner().id),
            Err(status) if status.code() == tonic::Code::ResourceExhausted => refused += 1,
            Err(status) => anyhow::bail!("unexpected failure: {status}"),
        }
    }
    ensure!(accepted.len() == NODES * POOL_GIB, "{} creates succeeded, not {}", accepted.len(), NODES * POOL_GIB);
    ensure!(refused == REQUESTS - NODES * POOL_GIB);

    let mut client = clients[0].clone();
    for id in &accepted {
        wait_for_status(&mut client, &crowd, id, VolumeStatus::Available).await?;
    }
    let volumes = client
        .list_volumes(crowd.request(ListVolumesRequest { all_projects: false, ..Default::default() }))
        .await?
        .into_inner()
        .volumes;
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for volume in &volumes {
        *per_node.entry(volume.pool.clone().unwrap_or_default().node_id).or_default() += volume.size_gib as usize;
    }
    for (node, booked) in &per_node {
        ensure!(*booked <= POOL_GIB, "{node} holds {booked} GiB in a {POOL_GIB} GiB pool");
    }
    let pools = client.list_pools(admin("ops").request(ListPoolsRequest::default())).await?.into_inner().pools;
    for pool in pools {
        ensure!(
            pool.provisioned_capacity_gib <= POOL_GIB as u64,
            "{} is over-booked: {}",
            pool.name,
            pool.provisioned_capacity_gib
        );
    }
    drop(mesh);
    database.drop_database().await
}
