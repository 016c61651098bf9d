//! `basalt storage-check`: checks a storage host with the node's own drivers before it goes into
//! service. The VM lane runs these on a real kernel (LVM, LIO, NFS).

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result, bail};
use basalt::{
    command::{SystemRunner, Transcript},
    ids::VolumeId,
};
use basalt_volume_node::backend::{Backend, ConfiguredBackend, VolumeSource, conformance};

use crate::{CheckBackendArgs, CheckExportArgs, PoolArgs};

fn transcript(path: &Option<std::path::PathBuf>) -> Result<Option<Arc<Transcript>>> {
    Ok(match path {
        Some(path) => Some(Arc::new(Transcript::create(path)?)),
        None => None,
    })
}

async fn open(
    backend: &crate::BackendArgs,
    pool: &PoolArgs,
    transcript: Option<Arc<Transcript>>,
) -> Result<(ConfiguredBackend, String)> {
    let settings = backend.settings(std::path::Path::new("basalt-data/volumes"), pool)?;
    let runner = SystemRunner { transcript, ..basalt_volume_node::backend::lvm::lvm_runner() };
    let opened = basalt_volume_node::open_backend(
        &settings,
        pool.max_over_subscription_ratio,
        pool.reserved_percentage,
        backend.volume_clear,
        runner,
    )
    .await?;
    let pools = opened.capacity().await?;
    let name = pools.first().map(|pool| pool.name.clone()).context("the backend reports no pool")?;
    Ok((opened, name))
}

pub async fn backend(args: CheckBackendArgs) -> Result<()> {
    let (backend, pool) = open(&args.backend, &args.pool, transcript(&args.record)?).await?;
    println!("conformance suite: backend {} pool {pool}", args.backend.backend);
    let failed = conformance::run(&backend, &pool, args.case.as_deref(), |name, result| match result {
        Ok(()) => println!("case {name} ... ok"),
        Err(message) => println!("case {name} ... FAILED: {message}"),
    })
    .await;
    if !failed.is_empty() {
        bail!("{} case(s) failed: {}", failed.len(), failed.join(", "));
    }
    println!("conformance suite: all cases passed");
    if let Some(device) = &args.remanence_device {
        match conformance::remanence(&backend, &pool, device).await {
            Ok(()) => println!("remanence on {}: no byte of a deleted volume left", device.display()),
            Err(message) => bail!("remanence on {}: {message}", device.display()),
        }
    }
    Ok(())
}

pub async fn export(args: CheckExportArgs) -> Result<()> {
    let record = transcript(&args.record)?;
    let (backend, pool) = open(&args.backend, &args.pool, record.clone()).await?;
    let state_dir = std::env::temp_dir().join(format!("basalt-export-check-{}", std::process::id()));
    let target = basalt_volume_node::open_target(&args.export.settings()?, &state_dir, record)?;
    target.restore().await?;

    let volume_id = VolumeId::new_random();
    let volume = backend.create_volume(&pool, volume_id, 64 << 20, VolumeSource::Empty).await?;
    target.export(volume_id, &volume.path).await?;
    let export = target.allow(volume_id, &args.initiator).await?;
    std::fs::write(&args.connection_file, serde_json::to_vec_pretty(&export)?)
        .with_context(|| format!("cannot write {}", args.connection_file.display()))?;
    println!("exported {} at {} lun {} for {}", export.iqn, export.portal, export.lun, args.initiator);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_secs);
    while !args.until.exists() {
        if tokio::time::Instant::now() > deadline {
            bail!("the host did not finish within {} s", args.wait_secs);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let expected = std::fs::read(&args.expect).with_context(|| format!("cannot read {}", args.expect.display()))?;
    let mut found = vec![0u8; expected.len()];
    {
        use std::os::unix::fs::FileExt;
        std::fs::File::open(&volume.path)?.read_exact_at(&mut found, 0)?;
    }
    let same = found == expected;
    println!("volume bytes {} the {} bytes the host wrote", if same { "match" } else { "DIFFER from" }, expected.len());

    target.revoke(volume_id, &args.initiator).await?;
    target.remove(volume_id).await?;
    let left = target.exported().await?;
    let stale = left.iter().any(|iqn| iqn == &export.iqn);
    println!(
        "after removal the target lists {} export(s); ours {}",
        left.len(),
        if stale { "REMAINS" } else { "is gone" }
    );
    backend.delete_volume(&pool, volume_id).await?;
    let _ = std::fs::remove_dir_all(&state_dir);
    if !same || stale {
        bail!("the export check failed");
    }
    println!("export check passed");
    Ok(())
}
