//! Benchmark (not a test): the iSCSI export through tgt against the raw backing file, in one run.
//!
//! - sequential 1 MiB writes and reads at queue depth 16 (`qemu-img bench`, O_DIRECT on the file,
//!   libiscsi on the export);
//! - 4 KiB reads scattered over the volume (a 31 MiB stride) at queue depth 32;
//! - export set-up (NodeAgent ExportVolume + AllowInitiator) against the bare tgtadm calls it makes.
//!
//!     cargo run --release -p basalt-integration --bin iscsi-bench

use std::{process::Command, time::Instant};

use anyhow::{Context, Result, bail};
use basalt::proto::{CreateVolumeRequest, NodeExport, NodeExportRequest, NodeInitiatorRequest, VolumeStatus};
use basalt_integration::{GIB, InProcessMesh, Tgtd, lift_volume_quotas, project, volume_client, wait_for_status};

const INITIATOR: &str = "iqn.2024-01.org.basalt.bench:host";
const SETUPS: usize = 20;

/// Runs `qemu-img bench` and returns the seconds it reports.
fn bench(args: &[&str]) -> Result<f64> {
    let output = Command::new("qemu-img").arg("bench").args(args).output().context("qemu-img")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("qemu-img bench failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    }
    text.lines()
        .find_map(|line| line.strip_prefix("Run completed in ")?.strip_suffix(" seconds.")?.parse().ok())
        .with_context(|| format!("no timing in {text}"))
}

struct Pattern {
    name: &'static str,
    count: u64,
    depth: u32,
    size: u64,
    step: Option<u64>,
    write: bool,
}

fn run(pattern: &Pattern, target: &[&str]) -> Result<f64> {
    let (count, depth, size) = (pattern.count.to_string(), pattern.depth.to_string(), pattern.size.to_string());
    let step = pattern.step.map(|step| step.to_string());
    let mut args = vec!["-c", &count, "-d", &depth, "-s", &size];
    if let Some(step) = &step {
        args.extend(["-S", step]);
    }
    if pattern.write {
        args.push("-w");
    }
    args.extend(target);
    let seconds = bench(&args)?;
    Ok(pattern.count as f64 / seconds)
}

#[tokio::main]
async fn main() -> Result<()> {
    let tgtd = Tgtd::start()?;
    let mut mesh = InProcessMesh::start(0).await?;
    let settings = tgtd.settings();
    mesh.add_node_with("bench-node", |config| config.export = basalt_volume_node::ExportSettings::Tgt(settings))
        .await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("bench");
    lift_volume_quotas(&client, &owner).await?;
    let volume = client
        .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
        .await?
        .into_inner();
    wait_for_status(&mut client, &owner, &volume.id, VolumeStatus::Available).await?;
    let mut node = mesh.node_client(0)?;
    let export = node
        .export_volume(NodeExportRequest { volume_id: volume.id.clone(), pool: "default".into(), ..Default::default() })
        .await?
        .into_inner();
    let allow =
        NodeInitiatorRequest { volume_id: volume.id.clone(), pool: "default".into(), initiator: INITIATOR.into() };
    node.allow_initiator(allow).await?;
    let opts = image_opts(&export);
    let raw_dir = tempfile::tempdir_in(mesh.node_dir("bench-node"))?;
    let raw = raw_dir.path().join("reference.raw");
    std::fs::File::create(&raw)?.set_len(GIB)?;
    let raw = raw.to_str().context("utf-8")?.to_owned();

    let patterns = [
        Pattern { name: "write 1 MiB, QD16", count: 1024, depth: 16, size: 1 << 20, step: None, write: true },
        Pattern { name: "read 1 MiB, QD16", count: 1024, depth: 16, size: 1 << 20, step: None, write: false },
        Pattern {
            name: "read 4 KiB scattered, QD32",
            count: 50_000,
            depth: 32,
            size: 4096,
            step: Some(31 << 20),
            write: false,
        },
    ];
    println!("| pattern | iSCSI export | raw file (reference) | export ÷ raw |");
    println!("|---|---|---|---|");
    for pattern in &patterns {
        let exported = run(pattern, &["--image-opts", &opts])?;
        let reference = run(pattern, &["-f", "raw", "-t", "none", &raw])?;
        let unit = |per_second: f64| {
            if pattern.size >= 1 << 20 {
                format!("{:.0} MB/s", per_second * pattern.size as f64 / 1e6)
            } else {
                format!("{per_second:.0} IOPS")
            }
        };
        println!("| {} | {} | {} | {:.2}× |", pattern.name, unit(exported), unit(reference), exported / reference);
    }

    // Export set-up: the node's call against the bare tgtadm commands it issues.
    for _ in 0..SETUPS {
        let created = client
            .create_volume(owner.request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
            .await?
            .into_inner();
        wait_for_status(&mut client, &owner, &created.id, VolumeStatus::Available).await?;
    }
    let volumes =
        client.list_volumes(owner.request(basalt::proto::ListVolumesRequest::default())).await?.into_inner().volumes;
    let started = Instant::now();
    for volume in volumes.iter().filter(|candidate| candidate.id != volume.id).take(SETUPS) {
        node.export_volume(NodeExportRequest {
            volume_id: volume.id.clone(),
            pool: "default".into(),
            ..Default::default()
        })
        .await?;
        let allow =
            NodeInitiatorRequest { volume_id: volume.id.clone(), pool: "default".into(), initiator: INITIATOR.into() };
        node.allow_initiator(allow).await?;
    }
    let ours = started.elapsed().as_secs_f64() / SETUPS as f64;
    let bare = bare_tgtadm_setup(&tgtd, &raw)?;
    println!();
    println!("| export set-up | Basalt (ExportVolume + AllowInitiator) | bare tgtadm calls (reference) | ratio |");
    println!("|---|---|---|---|");
    println!("| per volume | {:.1} ms | {:.1} ms | {:.2}× |", ours * 1e3, bare * 1e3, ours / bare);
    mesh.shutdown().await;
    Ok(())
}

fn image_opts(export: &NodeExport) -> String {
    format!(
        "driver=iscsi,transport=tcp,portal={},target={},lun={},user={},password={},initiator-name={INITIATOR}",
        export.target_portal, export.target_iqn, export.target_lun, export.auth_username, export.auth_password
    )
}

/// Seconds per export for the five tgtadm calls of a new export (target, LUN, account, bind, ACL).
fn bare_tgtadm_setup(tgtd: &Tgtd, backing: &str) -> Result<f64> {
    let control = tgtd.control_port.to_string();
    let tgtadm = |args: &[&str]| -> Result<()> {
        let status = Command::new("tgtadm").args(["-C", &control, "--lld", "iscsi"]).args(args).status()?;
        if !status.success() {
            bail!("tgtadm {args:?} failed");
        }
        Ok(())
    };
    let started = Instant::now();
    for index in 0..SETUPS {
        let tid = (900 + index).to_string();
        let user = format!("benchuser{index:011}");
        tgtadm(&[
            "--op",
            "new",
            "--mode",
            "target",
            "--tid",
            &tid,
            "-T",
            &format!("iqn.2024-01.org.basalt.bench:bare-{index}"),
        ])?;
        // The session parameters Basalt's exports carry (larger PDUs and bursts, no initial R2T).
        for (name, value) in [
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxXmitDataSegmentLength", "262144"),
            ("FirstBurstLength", "262144"),
            ("MaxBurstLength", "1048576"),
            ("InitialR2T", "No"),
        ] {
            tgtadm(&["--op", "update", "--mode", "target", "--tid", &tid, "--name", name, "--value", value])?;
        }
        tgtadm(&[
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            &tid,
            "--lun",
            "1",
            "-b",
            backing,
            "--bsoflags",
            "direct",
        ])?;
        tgtadm(&["--op", "new", "--mode", "account", "--user", &user, "--password", "benchpassword123"])?;
        tgtadm(&["--op", "bind", "--mode", "account", "--tid", &tid, "--user", &user])?;
        tgtadm(&["--op", "bind", "--mode", "target", "--tid", &tid, "--initiator-name", INITIATOR])?;
    }
    Ok(started.elapsed().as_secs_f64() / SETUPS as f64)
}
