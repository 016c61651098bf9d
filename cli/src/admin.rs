//! `basalt admin`: operators' calls to the scheduler that no Cinder API has, over the mesh with
//! the CSI plugin's certificate (the one `basalt up` issues for clients) and an admin's context.

use std::time::SystemTime;

use anyhow::{Context, Result};
use basalt::{
    context::{ADMIN_ROLES, CallContext},
    ids::ProjectId,
    proto::{
        DeclareNodeLostRequest, JournalOperation, ListOperationsRequest, ListPoolsRequest, ListServicesRequest,
        MoveNodeResourcesRequest, NodeRecoveryResponse, Pool, Service, volume_service_client::VolumeServiceClient,
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
    /// One screen for operators: the services and their state, each pool with its node's
    /// heartbeat age and capacity, and the journal's operations in flight, oldest first.
    Status(StatusArgs),
}

#[derive(Args)]
pub struct StatusArgs {
    /// The most journal operations shown.
    #[arg(long, default_value_t = 20)]
    operations: u32,
    #[command(flatten)]
    connection: Connection,
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
        AdminCommand::Status(args) => {
            let (mut client, context) = args.connection.open()?;
            let services = client.list_services(context.request(ListServicesRequest::default())).await?.into_inner();
            let pools = client.list_pools(context.request(ListPoolsRequest::default())).await?.into_inner();
            let limit = ListOperationsRequest { limit: args.operations };
            let journal = client.list_operations(context.request(limit)).await?.into_inner();
            let status = Status {
                services: &services.services,
                pools: &pools.pools,
                operations: &journal.operations,
                total_operations: journal.total,
            };
            print!("{}", status.render(SystemTime::now()));
        }
    }
    Ok(())
}

/// What `basalt admin status` shows.
struct Status<'a> {
    services: &'a [Service],
    pools: &'a [Pool],
    operations: &'a [JournalOperation],
    total_operations: u64,
}

impl Status<'_> {
    fn render(&self, now: SystemTime) -> String {
        let age = |at: &Option<prost_types::Timestamp>| match at.map(SystemTime::try_from) {
            Some(Ok(at)) => seconds(now.duration_since(at).unwrap_or_default().as_secs_f64()),
            _ => "-".to_owned(),
        };
        let mut out = String::new();
        out.push_str(&format!("services: {}\n", self.services.len()));
        let rows = self.services.iter().map(|service| {
            vec![
                service.binary.clone(),
                service.host.clone(),
                service.zone.clone(),
                service.status.clone(),
                service.state.clone(),
                age(&service.updated_at),
                service.disabled_reason.clone(),
            ]
        });
        out.push_str(&table(&["BINARY", "HOST", "ZONE", "STATUS", "STATE", "UPDATED", "DISABLED REASON"], rows));
        out.push_str(&format!("\npools: {}\n", self.pools.len()));
        let rows = self.pools.iter().map(|pool| {
            vec![
                pool.name.clone(),
                pool.availability_zone.clone(),
                if pool.schedulable { "yes" } else { "no (not reporting)" }.to_owned(),
                age(&pool.reported_at),
                pool.total_capacity_gib.to_string(),
                pool.free_capacity_gib.to_string(),
                pool.allocated_capacity_gib.to_string(),
                pool.largest_volume_gib.to_string(),
                pool.total_volumes.to_string(),
            ]
        });
        out.push_str(&table(
            &[
                "POOL",
                "ZONE",
                "SCHEDULABLE",
                "HEARTBEAT",
                "TOTAL GIB",
                "FREE GIB",
                "ALLOCATED GIB",
                "LARGEST NEW GIB",
                "VOLUMES",
            ],
            rows,
        ));
        out.push_str(&format!("\njournal: {} operations in flight", self.total_operations));
        if self.total_operations > self.operations.len() as u64 {
            out.push_str(&format!(" (the oldest {} shown)", self.operations.len()));
        }
        out.push('\n');
        let rows = self.operations.iter().map(|operation| {
            let lease = match operation.lease_expires_at.map(SystemTime::try_from) {
                Some(Ok(expires)) => match expires.duration_since(now) {
                    Ok(left) => format!("{} left", seconds(left.as_secs_f64())),
                    Err(past) => format!("ran out {} ago", seconds(past.duration().as_secs_f64())),
                },
                _ => "-".to_owned(),
            };
            vec![
                operation.kind.clone(),
                operation.resource_id.clone(),
                age(&operation.created_at),
                operation.attempt.to_string(),
                operation.owner.clone(),
                lease,
                operation.request_id.clone(),
            ]
        });
        out.push_str(&table(&["KIND", "RESOURCE", "AGE", "ATTEMPT", "OWNER", "LEASE", "REQUEST"], rows));
        out
    }
}

fn seconds(value: f64) -> String {
    if value < 60.0 { format!("{value:.1}s") } else { format!("{:.0}m{:02.0}s", (value / 60.0).floor(), value % 60.0) }
}

/// Columns padded to their widest cell, two spaces apart; nothing when there is no row.
fn table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    if rows.is_empty() {
        return String::new();
    }
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(column, header)| rows.iter().map(|row| row[column].len()).chain([header.len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        format!("  {}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
