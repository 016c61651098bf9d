//! Backups in an S3-compatible object store: moto's S3 server (from PyPI) on a loopback port
//! speaks the real S3 wire protocol; the node writes chunks and manifests there through
//! `object_store`, restores from it, and deletes sweep it.

use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use basalt::proto::{
    CreateBackupRequest, CreateVolumeRequest, DeleteBackupRequest, DeleteVolumeRequest, RestoreBackupRequest,
    VolumeStatus,
};
use basalt_integration::*;
use basalt_volume_node::{BackupStoreSettings, backup::s3::S3Settings};

const BUCKET: &str = "basalt-backups";
const MIB: u64 = 1 << 20;

/// moto's S3 server, stopped on drop.
struct S3Server {
    child: Child,
    python: std::path::PathBuf,
    endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    fn start() -> Result<Self> {
        let python = python_with("moto-server", &["moto[server]"], "moto.server, boto3")?;
        let port = free_port()?;
        let child = Command::new(python.parent().context("venv bin")?.join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start moto_server")?;
        let server = Self { child, python, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = std::time::Instant::now() + WAIT;
        while server.boto(&format!("s3.create_bucket(Bucket='{BUCKET}')")).is_err() {
            if std::time::Instant::now() > deadline {
                bail!("moto_server did not start on port {port}");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(server)
    }

    /// Runs a boto3 statement against the server (as another S3 client would see the bucket).
    fn boto(&self, statement: &str) -> Result<String> {
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='basalt', aws_secret_access_key='basalt-secret', region_name='us-east-1')\nresult = {statement}\nprint(result)",
            self.endpoint
        );
        let output = Command::new(&self.python).args(["-c", &script]).output()?;
        if !output.status.success() {
            bail!("boto3 failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// How many objects the bucket holds under `prefix`.
    fn count(&self, prefix: &str) -> Result<usize> {
        let listed = self.boto(&format!(
            "sum(page.get('KeyCount', 0) for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{BUCKET}', Prefix='{prefix}'))"
        ))?;
        Ok(listed.parse()?)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_go_to_an_s3_compatible_store_and_come_back() -> Result<()> {
    let server = tokio::task::spawn_blocking(S3Server::start).await??;
    let settings = S3Settings {
        endpoint: server.endpoint.clone(),
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        access_key_id: "basalt".into(),
        secret_access_key: "basalt-secret".into(),
    };
    let mut mesh = InProcessMesh::start(0).await?;
    mesh.add_node_with("node-0", |config| config.backup_store = Some(BackupStoreSettings::S3(settings))).await?;
    let mut client = volume_client(&mesh.grpc_addr).await?;
    let owner = project("s3");

    let request = CreateVolumeRequest { name: "source".into(), size_gib: 1, ..Default::default() };
    let source = client.create_volume(owner.request(request)).await?.into_inner().id;
    wait_for_status(&mut client, &owner, &source, VolumeStatus::Available).await?;
    let file = mesh.node_dir("node-0").join(format!("volume-{source}"));
    let data = pattern(71, (9 * MIB) as usize);
    write_at(&file, 2 * MIB, &data)?;

    let request = CreateBackupRequest { volume_id: source.clone(), ..Default::default() };
    let backup = client.create_backup(owner.request(request)).await?.into_inner();
    let backup = wait_for_backup(&mut client, &owner, &backup.id).await?;
    let chunks = tokio::task::block_in_place(|| server.count(&format!("projects/{}/chunks/", owner.project_id)))?;
    ensure!(chunks as u64 == backup.object_count && chunks >= 3, "{chunks} chunk objects for {backup:?}");
    ensure!(
        tokio::task::block_in_place(|| server.count(&format!("projects/{}/backups/{}", owner.project_id, backup.id)))?
            == 1
    );

    client
        .delete_volume(owner.request(DeleteVolumeRequest { volume_id: source.clone(), ..Default::default() }))
        .await?;
    wait_until_gone(&mut client, &owner, &source).await?;
    let request = RestoreBackupRequest { backup_id: backup.id.clone(), ..Default::default() };
    let restored = client.restore_backup(owner.request(request)).await?.into_inner().volume_id;
    wait_for_status(&mut client, &owner, &restored, VolumeStatus::Available).await?;
    wait_for_backup(&mut client, &owner, &backup.id).await?;
    let restored_file = mesh.node_dir("node-0").join(format!("volume-{restored}"));
    ensure!(read_at(&restored_file, 2 * MIB, data.len())? == data, "the restore from S3 is byte-identical");

    client.delete_backup(owner.request(DeleteBackupRequest { backup_id: backup.id.clone(), force: false })).await?;
    eventually("the backup's objects are swept from the bucket", || {
        let server_count = tokio::task::block_in_place(|| server.count(&format!("projects/{}/", owner.project_id)));
        async move { Ok(server_count? == 0) }
    })
    .await?;
    mesh.shutdown().await;
    Ok(())
}
