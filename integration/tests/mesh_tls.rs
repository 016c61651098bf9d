//! Mutual TLS inside the mesh. Every VolumeService RPC and every NodeAgent RPC (listed from the
//! protos, so a new RPC is covered on its own) is called with each kind of peer: the roles that may
//! call it, the mesh's other roles, a certificate from another CA, TLS without a certificate, and
//! plain text. Only the allowed roles get through, and refused calls that would change state change
//! nothing. A forged capacity report cannot send the scheduler to another node's address.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use basalt::{
    channel::Channel,
    context::CallContext,
    ids::NodeId,
    proto::{
        CapacityReport, CreateVolumeRequest, CreateVolumeTypeRequest, DeleteVolumeRequest, GetQuotasRequest,
        ListMessagesRequest, ListPoolsRequest, ListVolumeTypesRequest, ListVolumesRequest, NodeCreateVolumeRequest,
        NodeDeleteVolumeRequest, PoolCapacity, UpdateQuotasRequest, VolumeStatus,
    },
    tls::{MeshTls, Role},
};
use basalt_integration::*;
use prost::Message;
use tonic::{
    Code, Status,
    codegen::http::uri::PathAndQuery,
    transport::{Certificate, ClientTlsConfig, Endpoint},
};

/// How a test peer reaches a server.
enum Peer {
    /// Mutual TLS with a certificate of this mesh's CA.
    Mesh(&'static str, MeshTls),
    /// Mutual TLS with a certificate of another CA.
    Stranger(MeshTls),
    /// TLS that trusts the mesh's CA but shows no certificate of its own.
    Anonymous,
    /// No TLS at all.
    PlainText,
}

impl Peer {
    fn name(&self) -> &str {
        match self {
            Peer::Mesh(name, _) => name,
            Peer::Stranger(_) => "a certificate of another CA",
            Peer::Anonymous => "TLS without a client certificate",
            Peer::PlainText => "plain text",
        }
    }

    fn channel(&self, addr: &str, server: &Role) -> Result<Channel> {
        let addr = addr.trim_start_matches("https://");
        Ok(match self {
            Peer::Mesh(_, tls) | Peer::Stranger(tls) => basalt::channel::channel(addr, tls, server)?,
            Peer::Anonymous => {
                let ca = std::fs::read(pki().files(&Role::Gateway).ca)?;
                let tls =
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name(server.dns_name());
                Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?.connect_lazy().into()
            }
            Peer::PlainText => Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy().into(),
        })
    }
}

/// The RPCs of `service` (e.g. `basalt.v1.VolumeService`), from the protos' descriptor set.
fn rpc_paths(service: &str) -> Result<Vec<String>> {
    let set = prost_types::FileDescriptorSet::decode(basalt::proto::FILE_DESCRIPTOR_SET)?;
    let (package, name) = service.rsplit_once('.').context("a qualified service name")?;
    let methods: Vec<String> = set
        .file
        .iter()
        .filter(|file| file.package() == package)
        .flat_map(|file| &file.service)
        .filter(|found| found.name() == name)
        .flat_map(|found| &found.method)
        .map(|method| format!("/{service}/{}", method.name()))
        .collect();
    ensure!(methods.len() > 10, "{service} has only {} RPCs in the descriptor set", methods.len());
    Ok(methods)
}

/// Calls `path` with `message` over `channel`, as `context` when given; the reply's content is
/// not needed, only whether the call got through.
async fn call(
    channel: Channel,
    path: &str,
    message: impl Message + 'static,
    context: Option<&CallContext>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|error| Status::unavailable(format!("not connected: {error}")))?;
    let request = match context {
        Some(context) => context.request(message),
        None => tonic::Request::new(message),
    };
    let path = PathAndQuery::try_from(path.to_owned()).map_err(|error| Status::internal(error.to_string()))?;
    grpc.unary::<_, (), _>(request, path, tonic_prost::ProstCodec::default()).await.map(|_| ())
}

/// The call was refused by the mesh: a certificate of the wrong role gets PERMISSION_DENIED with
/// the mesh's message; anything else gets no TLS session, so the call never starts.
fn refused_by_mesh(peer: &Peer, outcome: &Result<(), Status>) -> bool {
    match (peer, outcome) {
        (_, Ok(())) => false,
        (Peer::Mesh(..), Err(status)) => {
            status.code() == Code::PermissionDenied && status.message().contains("answers only")
        }
        (_, Err(status)) => matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Internal),
    }
}

fn node_role(id: &str) -> Role {
    Role::Node(NodeId::parse(id).expect("a test node id"))
}

/// Four calls that change state if they get through: a volume made, one deleted, a volume type
/// made, a quota changed.
async fn attempt_writes(
    channel: Channel,
    owner: &CallContext,
    operator: &CallContext,
    kept_id: &str,
) -> Vec<(&'static str, Result<(), Status>)> {
    let service = "/basalt.v1.VolumeService";
    let create = CreateVolumeRequest { size_gib: 1, name: "intruder".into(), ..Default::default() };
    let delete = DeleteVolumeRequest { volume_id: kept_id.to_owned(), ..Default::default() };
    let volume_type = CreateVolumeTypeRequest { name: "intruder-type".into(), ..Default::default() };
    // Above whatever the project holds while the delete above is still under way (the kept volume
    // and the intruder both count until then), and not the default, so a change shows.
    let quotas = UpdateQuotasRequest {
        project_id: owner.project_id.to_string(),
        limits: [("volumes".into(), 5)].into(),
        ..Default::default()
    };
    vec![
        ("CreateVolume", call(channel.clone(), &format!("{service}/CreateVolume"), create, Some(owner)).await),
        ("DeleteVolume", call(channel.clone(), &format!("{service}/DeleteVolume"), delete, Some(owner)).await),
        (
            "CreateVolumeType",
            call(channel.clone(), &format!("{service}/CreateVolumeType"), volume_type, Some(operator)).await,
        ),
        ("UpdateQuotas", call(channel, &format!("{service}/UpdateQuotas"), quotas, Some(operator)).await),
    ]
}

#[tokio::test]
async fn volume_service_answers_only_the_gateway_and_the_csi_plugin() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let owner = project("mesh-a");
    let reader = CallContext::new(owner.project_id.clone(), "reader", &["reader"]);
    let operator = admin("mesh-ops");
    let allowed = [Peer::Mesh("gateway", pki().tls(Role::Gateway)), Peer::Mesh("csi", pki().tls(Role::Csi))];
    let refused = [
        Peer::Mesh("scheduler", pki().tls(Role::Scheduler)),
        Peer::Mesh("node", pki().tls(node_role("node-0"))),
        Peer::Stranger(TestPki::stranger(Role::Gateway)),
        Peer::Anonymous,
        Peer::PlainText,
    ];

    // Every RPC, with an admin's metadata: the allowed peers get past the mesh (the call may still
    // fail on its empty request), the others never do.
    for path in rpc_paths("basalt.v1.VolumeService")? {
        for peer in &allowed {
            let outcome = call(peer.channel(&mesh.grpc_addr, &Role::Scheduler)?, &path, (), Some(&operator)).await;
            if let Err(status) = &outcome {
                ensure!(
                    !matches!(status.code(), Code::PermissionDenied | Code::Unauthenticated | Code::Unavailable),
                    "{path} from {}: {status:?}",
                    peer.name()
                );
            }
        }
        for peer in &refused {
            let outcome = call(peer.channel(&mesh.grpc_addr, &Role::Scheduler)?, &path, (), Some(&operator)).await;
            ensure!(refused_by_mesh(peer, &outcome), "{path} from {} got through: {outcome:?}", peer.name());
        }
        // Past the mesh, the caller's metadata still decides: none at all is UNAUTHENTICATED, and
        // a project's reader may not call anything but reads.
        let gateway = allowed[0].channel(&mesh.grpc_addr, &Role::Scheduler)?;
        let anonymous = call(gateway.clone(), &path, (), None).await;
        ensure!(
            anonymous.as_ref().is_err_and(|status| status.code() == Code::Unauthenticated),
            "{path} without a project: {anonymous:?}"
        );
        let method = path.rsplit('/').next().unwrap_or_default();
        if !method.starts_with("Get") && !method.starts_with("List") {
            let outcome = call(gateway, &path, (), Some(&reader)).await;
            ensure!(
                outcome.as_ref().is_err_and(|status| status.code() == Code::PermissionDenied),
                "{path} as a reader: {outcome:?}"
            );
        }
    }

    // Calls that would change state, from refused peers, change nothing.
    let client = volume_client(&mesh.grpc_addr).await?;
    let kept = client
        .clone()
        .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, name: "kept".into(), ..Default::default() }))
        .await?
        .into_inner();
    wait_for_status(&mut client.clone(), &owner, &kept.id, VolumeStatus::Available).await?;
    let quotas_before = client.clone().get_quotas(owner.request(GetQuotasRequest::default())).await?.into_inner();
    for peer in &refused {
        let channel = peer.channel(&mesh.grpc_addr, &Role::Scheduler)?;
        for (name, outcome) in attempt_writes(channel, &owner, &operator, &kept.id).await {
            ensure!(refused_by_mesh(peer, &outcome), "{name} from {} got through: {outcome:?}", peer.name());
        }
    }
    let volumes = client.clone().list_volumes(owner.request(ListVolumesRequest::default())).await?.into_inner().volumes;
    ensure!(volumes.len() == 1 && volumes[0].id == kept.id, "refused calls changed the volumes: {volumes:?}");
    ensure!(volumes[0].status() == VolumeStatus::Available, "the kept volume is {:?}", volumes[0].status());
    let types = client.clone().list_volume_types(operator.request(ListVolumeTypesRequest::default())).await?;
    ensure!(
        types.get_ref().volume_types.iter().all(|volume_type| volume_type.name != "intruder-type"),
        "a refused call made a volume type"
    );
    let quotas_after = client.clone().get_quotas(owner.request(GetQuotasRequest::default())).await?.into_inner();
    ensure!(quotas_before == quotas_after, "a refused call changed the quotas");

    // The same writes from the gateway's certificate go through: the refusals were the mesh's.
    let channel = allowed[0].channel(&mesh.grpc_addr, &Role::Scheduler)?;
    for (name, outcome) in attempt_writes(channel, &owner, &operator, &kept.id).await {
        outcome.with_context(|| format!("{name} from the gateway"))?;
    }
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn node_agent_answers_only_the_scheduler() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let node_addr = mesh.node_grpc_addr(0);
    let node = node_role("node-0");
    let refused = [
        Peer::Mesh("gateway", pki().tls(Role::Gateway)),
        Peer::Mesh("csi", pki().tls(Role::Csi)),
        Peer::Mesh("the node itself", pki().tls(node.clone())),
        Peer::Mesh("another node", pki().tls(node_role("node-1"))),
        Peer::Stranger(TestPki::stranger(Role::Scheduler)),
        Peer::Anonymous,
        Peer::PlainText,
    ];
    let scheduler = Peer::Mesh("scheduler", pki().tls(Role::Scheduler));
    for path in rpc_paths("basalt.v1.NodeAgent")? {
        for peer in &refused {
            let outcome = call(peer.channel(&node_addr, &node)?, &path, (), None).await;
            ensure!(refused_by_mesh(peer, &outcome), "{path} from {} got through: {outcome:?}", peer.name());
        }
        let outcome = call(scheduler.channel(&node_addr, &node)?, &path, (), None).await;
        if let Err(status) = &outcome {
            ensure!(
                !matches!(status.code(), Code::PermissionDenied | Code::Unauthenticated | Code::Unavailable),
                "{path} from the scheduler: {status:?}"
            );
        }
    }

    // A volume's file survives deletes from every refused peer, and none of them creates one.
    let owner = project("mesh-node");
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let volume = client
        .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
        .await?
        .into_inner();
    let volume = wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;
    let pool = volume.pool.context("an available volume has a pool")?.pool;
    let file = mesh.node_dirs[0].join(format!("volume-{}", volume.id));
    let intruder_id = uuid::Uuid::new_v4().to_string();
    for peer in &refused {
        let channel = peer.channel(&node_addr, &node)?;
        let delete = NodeDeleteVolumeRequest { volume_id: volume.id.clone(), pool: pool.clone() };
        let outcome = call(channel.clone(), "/basalt.v1.NodeAgent/DeleteVolume", delete, None).await;
        ensure!(refused_by_mesh(peer, &outcome), "DeleteVolume from {} got through: {outcome:?}", peer.name());
        let create = NodeCreateVolumeRequest {
            volume_id: intruder_id.clone(),
            pool: pool.clone(),
            size_bytes: GIB,
            ..Default::default()
        };
        let outcome = call(channel, "/basalt.v1.NodeAgent/CreateVolume", create, None).await;
        ensure!(refused_by_mesh(peer, &outcome), "CreateVolume from {} got through: {outcome:?}", peer.name());
    }
    ensure!(file.exists(), "a refused delete removed {}", file.display());
    ensure!(!mesh.node_dirs[0].join(format!("volume-{intruder_id}")).exists(), "a refused create made a volume");
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_forged_capacity_report_cannot_send_the_scheduler_to_another_node() -> Result<()> {
    // Operations on an unreachable node give up after two seconds here, not ten minutes.
    let control =
        basalt_scheduler::ControlPlaneConfig { node_retry_window: Duration::from_secs(2), ..fast_control_plane() };
    let mesh = InProcessMesh::start_with(1, None, control).await?;
    // Someone on the bus claims a roomy node `forged` in its own zone, at the real node's address.
    let forged = CapacityReport {
        node_id: "forged".into(),
        boot_id: uuid::Uuid::new_v4().to_string(),
        endpoint: format!("https://{}", mesh.node_grpc_addr(0)),
        availability_zone: "forged-zone".into(),
        report_interval_ms: 200,
        pools: vec![PoolCapacity {
            name: "default".into(),
            backend: "file".into(),
            total_bytes: 1 << 40,
            free_bytes: 1 << 40,
            thin_provisioning_support: true,
            max_over_subscription_ratio: 1.0,
            ..Default::default()
        }],
        ..Default::default()
    };
    let bus = mesh.bus.clone();
    let reporting = tokio::spawn(async move {
        for sequence in 1.. {
            let report =
                CapacityReport { sequence, reported_at: Some(std::time::SystemTime::now().into()), ..forged.clone() };
            let _ = bus.publish_capacity(&report).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let client = volume_client(&mesh.grpc_addr).await?;
    let operator = admin("mesh-ops");
    eventually("the scheduler believes the forged report", || {
        let mut client = client.clone();
        let request = operator.request(ListPoolsRequest::default());
        async move {
            let pools = client.list_pools(request).await?.into_inner().pools;
            Ok(pools.iter().any(|pool| pool.name == "forged@file#default" && pool.schedulable))
        }
    })
    .await?;

    // A volume placed on `forged` is never made by the node at that address: the scheduler dials
    // it under the name `forged` gets, the node's certificate names node-0, and the create fails.
    let owner = project("mesh-forged");
    let request = CreateVolumeRequest { size_gib: 1, availability_zone: "forged-zone".into(), ..Default::default() };
    let created = client.clone().create_volume(owner.request(request)).await?.into_inner();
    let failed = wait_for_status(&mut client.clone(), &owner, &created.id, VolumeStatus::Error).await?;
    ensure!(failed.pool.as_ref().is_none_or(|pool| pool.node_id == "forged"), "placed elsewhere: {failed:?}");
    let file = mesh.node_dirs[0].join(format!("volume-{}", created.id));
    ensure!(!file.exists(), "node-0 made a volume the scheduler meant for `forged`");
    // Its project learns why from a user message: the node never answered.
    let messages =
        client.clone().list_messages(owner.request(ListMessagesRequest::default())).await?.into_inner().messages;
    ensure!(
        messages.len() == 1
            && messages[0].resource_uuid == created.id
            && messages[0].event_id == "VOLUME_VOLUME_008_002"
            && messages[0].user_message == "create volume from backend storage:Driver is not initialized at present.",
        "{messages:?}"
    );
    reporting.abort();
    mesh.shutdown().await;
    Ok(())
}
