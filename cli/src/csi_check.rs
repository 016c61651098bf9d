//! `basalt storage-check csi`: checks that a host attaches Basalt volumes through its CSI plugin,
//! calling the plugin's socket as an orchestrator would: make a volume, publish it to a node, and
//! on that node stage and publish it, write or check bytes through it, and take it down again. The
//! VM lane runs it on both ends of an iSCSI link.

use std::{collections::HashMap, path::Path};

use anyhow::{Context, Result, bail};
use basalt::csi::{
    CapacityRange, ControllerExpandVolumeRequest, ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest,
    CreateVolumeRequest, DeleteVolumeRequest, NodeExpandVolumeRequest, NodeGetVolumeStatsRequest,
    NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest,
    VolumeCapability,
    controller_client::ControllerClient,
    node_client::NodeClient,
    volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode},
};
use basalt_csi_plugin::client::Channel;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct CsiCheckArgs {
    /// The plugin's socket.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Create a volume (CreateVolume); prints its id.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 1)]
        size_gib: i64,
    },
    /// Publish a volume to a node (ControllerPublishVolume); writes the publish context as JSON.
    Publish {
        #[arg(long)]
        volume_id: String,
        /// The node's CSI id, as its NodeGetInfo gives it.
        #[arg(long)]
        node_id: String,
        #[arg(long)]
        context_file: std::path::PathBuf,
        #[command(flatten)]
        capability: CapabilityArgs,
    },
    /// Stage and publish a volume on this node from a publish context, write or check bytes
    /// through it, then unpublish and unstage it.
    Attach {
        #[arg(long)]
        volume_id: String,
        #[arg(long)]
        context_file: std::path::PathBuf,
        /// A directory for the staging mount (it must exist, as the orchestrator makes it).
        #[arg(long)]
        staging: String,
        /// Where the volume is published (the plugin makes it).
        #[arg(long)]
        target: String,
        /// Write this file's bytes through the volume (at its start, or as a file of that name).
        #[arg(long)]
        write: Option<std::path::PathBuf>,
        /// Check the volume holds this file's bytes (at its start, or as a file of that name).
        #[arg(long)]
        expect: Option<std::path::PathBuf>,
        /// Then grow the volume to this size (ControllerExpandVolume) and its filesystem with it
        /// (NodeExpandVolume), online, and check the mount shows the new size.
        #[arg(long)]
        expand_gib: Option<i64>,
        #[command(flatten)]
        capability: CapabilityArgs,
    },
    /// Unpublish a volume from a node (ControllerUnpublishVolume).
    Unpublish {
        #[arg(long)]
        volume_id: String,
        #[arg(long)]
        node_id: String,
    },
    /// Delete a volume (DeleteVolume).
    Delete {
        #[arg(long)]
        volume_id: String,
    },
}

#[derive(Args)]
struct CapabilityArgs {
    /// Raw block instead of a filesystem.
    #[arg(long)]
    block: bool,
    #[arg(long, default_value = "ext4")]
    fs_type: String,
}

impl CapabilityArgs {
    fn capability(&self) -> VolumeCapability {
        let access_type = if self.block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume { fs_type: self.fs_type.clone(), ..Default::default() })
        };
        VolumeCapability {
            access_type: Some(access_type),
            access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
        }
    }
}

/// Where the bytes of `file` go on the published volume: its start for a block device, a file of
/// the same name for a filesystem.
fn place(target: &str, block: bool, file: &Path) -> Result<std::path::PathBuf> {
    if block {
        return Ok(Path::new(target).to_path_buf());
    }
    Ok(Path::new(target).join(file.file_name().context("a file name")?))
}

pub async fn run(args: CsiCheckArgs) -> Result<()> {
    let channel = basalt_csi_plugin::client::connect(&args.endpoint).await?;
    let mut controller = ControllerClient::new(channel.clone());
    let mut node = NodeClient::new(channel);
    match args.action {
        Action::Create { name, size_gib } => {
            let request = CreateVolumeRequest {
                name,
                capacity_range: Some(CapacityRange { required_bytes: size_gib << 30, limit_bytes: 0 }),
                volume_capabilities: vec![CapabilityArgs { block: false, fs_type: "ext4".into() }.capability()],
                ..Default::default()
            };
            let volume = controller.create_volume(request).await?.into_inner().volume.context("no volume")?;
            println!("{}", volume.volume_id);
        }
        Action::Publish { volume_id, node_id, context_file, capability } => {
            let request = ControllerPublishVolumeRequest {
                volume_id,
                node_id,
                volume_capability: Some(capability.capability()),
                ..Default::default()
            };
            let context = controller.controller_publish_volume(request).await?.into_inner().publish_context;
            // The context holds the export's CHAP secret: the file is for the node only.
            write_private(&context_file, &serde_json::to_vec(&context)?)?;
            println!(
                "published: the {} context is in {}",
                context.get("kind").map_or("?", String::as_str),
                context_file.display()
            );
        }
        Action::Attach { volume_id, context_file, staging, target, write, expect, expand_gib, capability } => {
            let context: HashMap<String, String> = serde_json::from_slice(&std::fs::read(&context_file)?)?;
            let wanted = capability.capability();
            let stage = NodeStageVolumeRequest {
                volume_id: volume_id.clone(),
                publish_context: context,
                staging_target_path: staging.clone(),
                volume_capability: Some(wanted.clone()),
                ..Default::default()
            };
            node.node_stage_volume(stage).await?;
            let publish = NodePublishVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: staging.clone(),
                target_path: target.clone(),
                volume_capability: Some(wanted.clone()),
                ..Default::default()
            };
            node.node_publish_volume(publish).await?;
            println!("staged and published at {target}");
            let mut checked = check_bytes(&target, capability.block, write.as_deref(), expect.as_deref());
            if let (Ok(()), Some(gib)) = (&checked, expand_gib) {
                let growth = Growth { volume_id: &volume_id, target: &target, capability: &wanted, gib };
                checked = growth.run(&mut controller, &mut node).await;
            }
            let unpublish = NodeUnpublishVolumeRequest { volume_id: volume_id.clone(), target_path: target };
            node.node_unpublish_volume(unpublish).await?;
            node.node_unstage_volume(NodeUnstageVolumeRequest { volume_id, staging_target_path: staging }).await?;
            println!("unpublished and unstaged");
            checked?;
        }
        Action::Unpublish { volume_id, node_id } => {
            let request = ControllerUnpublishVolumeRequest { volume_id, node_id, ..Default::default() };
            controller.controller_unpublish_volume(request).await?;
            println!("unpublished");
        }
        Action::Delete { volume_id } => {
            controller.delete_volume(DeleteVolumeRequest { volume_id, ..Default::default() }).await?;
            println!("deleted");
        }
    }
    Ok(())
}

/// Grows a published volume online, as the resizer sidecar and the kubelet do.
struct Growth<'a> {
    volume_id: &'a str,
    target: &'a str,
    capability: &'a VolumeCapability,
    gib: i64,
}

impl Growth<'_> {
    async fn run(&self, controller: &mut ControllerClient<Channel>, node: &mut NodeClient<Channel>) -> Result<()> {
        let before = self.filesystem_bytes(node).await?;
        let range = Some(CapacityRange { required_bytes: self.gib << 30, limit_bytes: 0 });
        let expand = ControllerExpandVolumeRequest {
            volume_id: self.volume_id.into(),
            capacity_range: range,
            volume_capability: Some(self.capability.clone()),
            ..Default::default()
        };
        let expanded = controller.controller_expand_volume(expand).await?.into_inner();
        if expanded.node_expansion_required {
            let expand = NodeExpandVolumeRequest {
                volume_id: self.volume_id.into(),
                volume_path: self.target.into(),
                capacity_range: range,
                volume_capability: Some(self.capability.clone()),
                ..Default::default()
            };
            node.node_expand_volume(expand).await?;
        }
        let after = self.filesystem_bytes(node).await?;
        // A filesystem keeps some of the new space for its own metadata; most of it must show.
        if after - before < ((self.gib << 30) - before) / 2 {
            bail!(
                "the filesystem at {} went from {before} to {after} bytes on growing to {} GiB",
                self.target,
                self.gib
            );
        }
        println!("grew to {} GiB online: the filesystem went from {before} to {after} bytes", self.gib);
        Ok(())
    }

    async fn filesystem_bytes(&self, node: &mut NodeClient<Channel>) -> Result<i64> {
        let request = NodeGetVolumeStatsRequest {
            volume_id: self.volume_id.into(),
            volume_path: self.target.into(),
            ..Default::default()
        };
        let stats = node.node_get_volume_stats(request).await?.into_inner();
        let bytes = stats.usage.iter().find(|usage| usage.unit == basalt::csi::volume_usage::Unit::Bytes as i32);
        Ok(bytes.context("the stats name no byte total")?.total)
    }
}

fn check_bytes(target: &str, block: bool, write: Option<&Path>, expect: Option<&Path>) -> Result<()> {
    use std::io::{Read, Write};
    if let Some(file) = write {
        let bytes = std::fs::read(file)?;
        let place = place(target, block, file)?;
        let mut out = std::fs::OpenOptions::new().write(true).create(!block).truncate(!block).open(&place)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
        println!("wrote {} bytes to {}", bytes.len(), place.display());
    }
    if let Some(file) = expect {
        let bytes = std::fs::read(file)?;
        let place = place(target, block, file)?;
        let mut found = vec![0; bytes.len()];
        std::fs::File::open(&place)?.read_exact(&mut found)?;
        if found != bytes {
            bail!("{} does not hold the {} bytes of {}", place.display(), bytes.len(), file.display());
        }
        println!("found the {} bytes of {} at {}", bytes.len(), file.display(), place.display());
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    Ok(())
}
