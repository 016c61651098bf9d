//! `basalt admin`: operators' calls to the scheduler that no Cinder API has, over the mesh with
//! the CSI plugin's certificate (the one `basalt up` issues for clients) and an admin's context.

use anyhow::{Context, Result};
use basalt::{
    context::{ADMIN_ROLES, CallContext},
    ids::ProjectId,
    proto::{
        DeclareNodeLostRequest, MoveNodeResourcesRequest, NodeRecoveryResponse,
        volume_service_client::VolumeServiceClient,
    },
    tls::Role,
};
use clap::{Args, Subcommand};

use crate::MeshTlsArgs;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Declare a volume node gone for good with its storage: its volumes and snapshots go to
    /// error (each with a user message) and force deletes of them finish without it. Refused
    /// while the node reports.
    NodeLost(NodeLostArgs),
    /// Move what a node held to the node that took over its storage (Cinder's
    /// `cinder-manage volume update_host`); statuses stay, claims follow.
    MoveNode(MoveNodeArgs),
}

#[derive(Args)]
pub struct Connection {
    /// The scheduler's VolumeService endpoint.
    #[arg(long, env = "BASALT_SCHEDULER_ENDPOINT", default_value = "https://127.0.0.1:8780")]
    scheduler_endpoint: String,
    #[command(flatten)]
    tls: MeshTlsArgs,
    /// The project the admin acts from (32 hex digits or a UUID).
    #[arg(long, env = "BASALT_ADMIN_PROJECT_ID", default_value = "00000000000000000000000000000000")]
    project_id: String,
}

#[derive(Args)]
pub struct NodeLostArgs {
    node_id: String,
    /// Why, for the volumes' error reasons.
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Args)]
pub struct MoveNodeArgs {
    from_node_id: String,
    to_node_id: String,
    #[command(flatten)]
    connection: Connection,
}

impl Connection {
    fn open(&self) -> Result<(VolumeServiceClient<basalt::channel::Channel>, CallContext)> {
        let tls = self.tls.load(Role::Csi)?;
        let channel = basalt::channel::channel(&self.scheduler_endpoint, &tls, &Role::Scheduler)?;
        let project = ProjectId::parse(&self.project_id).context("--project-id")?;
        Ok((VolumeServiceClient::new(channel), CallContext::new(project, "basalt-admin", ADMIN_ROLES)))
    }
}

fn report(what: &str, done: &NodeRecoveryResponse) {
    println!(
        "{what}: {} volumes, {} snapshots, {} groups, {} backups",
        done.volumes, done.snapshots, done.groups, done.backups
    );
}

pub async fn run(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::NodeLost(args) => {
            let (mut client, context) = args.connection.open()?;
            let request = DeclareNodeLostRequest { node_id: args.node_id.clone(), reason: args.reason };
            let done = client.declare_node_lost(context.request(request)).await?.into_inner();
            report(&format!("volume node {} declared lost", args.node_id), &done);
        }
        AdminCommand::MoveNode(args) => {
            let (mut client, context) = args.connection.open()?;
            let request = MoveNodeResourcesRequest {
                from_node_id: args.from_node_id.clone(),
                to_node_id: args.to_node_id.clone(),
            };
            let done = client.move_node_resources(context.request(request)).await?.into_inner();
            report(&format!("moved from {} to {}", args.from_node_id, args.to_node_id), &done);
        }
    }
    Ok(())
}
