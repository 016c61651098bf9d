//! Unmodified Cinder clients against `basalt up`: python-cinderclient (the `cinder` CLI) and the
//! `openstack` CLI, installed from PyPI into a venv, run the reference's command sequence; every
//! command's exit code and output are checked.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use basalt_integration::*;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
/// The project volumes are transferred to and back from.
const OTHER_PROJECT: &str = "fedcba9876543210fedcba9876543210";

struct Clients {
    bin: PathBuf,
    endpoint: String,
    home: tempfile::TempDir,
}

impl Clients {
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.env("HOME", self.home.path()).env_remove("OS_CLOUD");
        command
    }

    /// Runs `cinder <args>` with cinderclient's noauth plugin; fails on a non-zero exit.
    fn cinder(&self, args: &[&str]) -> Result<String> {
        let mut command = self.command("cinder");
        command
            .env("OS_AUTH_TYPE", "noauth")
            .env("OS_USER_ID", "admin")
            .env("OS_PROJECT_ID", PROJECT)
            .env("CINDER_ENDPOINT", &self.endpoint)
            .args(args);
        run_client(command, &format!("cinder {args:?}"))
    }

    /// Runs `openstack <args>` with keystoneauth's `none` plugin (token `notused`).
    fn openstack(&self, args: &[&str]) -> Result<String> {
        self.openstack_in(PROJECT, args)
    }

    /// `openstack <args>` against `project`'s endpoint (noauth acts for the URL's project).
    fn openstack_in(&self, project: &str, args: &[&str]) -> Result<String> {
        let endpoint = self.endpoint.replace(PROJECT, project);
        let mut command = self.command("openstack");
        command.args(["--os-auth-type", "none", "--os-endpoint", &endpoint]).args(args);
        run_client(command, &format!("openstack {args:?} in {project}"))
    }

    /// Offers `volume` from `from` and accepts it in `to` with the key the offer printed.
    fn transfer(&self, volume: &str, from: &str, to: &str) -> Result<()> {
        let offered = self.openstack_in(from, &["volume", "transfer", "request", "create", volume, "-f", "json"])?;
        let offered: serde_json::Value = serde_json::from_str(&offered).context("transfer request create output")?;
        let (id, key) = (offered["id"].as_str().context("an id")?, offered["auth_key"].as_str().context("a key")?);
        let pending = self.openstack_in(from, &["volume", "transfer", "request", "list", "-f", "value", "-c", "ID"])?;
        ensure!(pending.contains(id), "transfer request list: {pending}");
        self.openstack_in(to, &["volume", "transfer", "request", "accept", "--auth-key", key, id])?;
        Ok(())
    }

    /// Polls `cinder show` until the volume's status is `status`.
    fn wait_for(&self, volume: &str, status: &str) -> Result<String> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let shown = self.cinder(&["show", volume])?;
            if cliff_field(&shown, "status").as_deref() == Some(status) {
                return Ok(shown);
            }
            if std::time::Instant::now() > deadline {
                bail!("volume {volume} never became {status}:\n{shown}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The first column of the row whose cells include `needle`, in a cliff list table.
fn id_of(table: &str, needle: &str) -> Option<String> {
    table.lines().find_map(|line| {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        (cells.len() >= 3 && cells.contains(&needle)).then(|| cells[1].to_owned())
    })
}

fn start_clients() -> Result<(BasaltProcess, Clients, tempfile::TempDir)> {
    let bin = cinder_clients()?;
    let data = tempfile::tempdir()?;
    let up = BasaltProcess::up(data.path(), &[], &[])?;
    let endpoint = format!("{}/{PROJECT}", up.endpoint("rest"));
    Ok((up, Clients { bin, endpoint, home: tempfile::tempdir()? }, data))
}

#[tokio::test(flavor = "multi_thread")]
async fn python_cinderclient_runs_the_reference_sequence() -> Result<()> {
    let (_up, clients, _data) = tokio::task::spawn_blocking(start_clients).await??;
    tokio::task::spawn_blocking(move || cinder_sequence(&clients)).await?
}

fn cinder_sequence(clients: &Clients) -> Result<()> {
    let versions = clients.cinder(&["version-list"])?;
    ensure!(versions.contains("3.71"), "version-list: {versions}");
    clients.cinder(&["type-create", "lvm-thin"])?;
    clients.cinder(&["type-key", "lvm-thin", "set", "volume_backend_name=file"])?;
    let types = clients.cinder(&["type-list"])?;
    ensure!(types.contains("lvm-thin") && types.contains("__DEFAULT__"), "type-list: {types}");
    // The project's own default type (3.62): set, listed, and gone again.
    let v362 = ["--os-volume-api-version", "3.62"];
    clients.cinder(&[&v362[..], &["default-type-set", "lvm-thin", PROJECT]].concat())?;
    let defaults = clients.cinder(&[&v362[..], &["default-type-list"]].concat())?;
    ensure!(defaults.contains(PROJECT), "default-type-list: {defaults}");
    clients.cinder(&[&v362[..], &["default-type-unset", PROJECT]].concat())?;
    let defaults = clients.cinder(&[&v362[..], &["default-type-list"]].concat())?;
    ensure!(!defaults.contains(PROJECT), "default-type-list after unset: {defaults}");

    let created = clients.cinder(&["create", "--name", "v1", "--volume-type", "lvm-thin", "1"])?;
    ensure!(cliff_field(&created, "name").as_deref() == Some("v1"), "create: {created}");
    let listed = clients.cinder(&["list"])?;
    let volume = id_of(&listed, "v1").context("v1 in the list")?;
    let shown = clients.wait_for(&volume, "available")?;
    ensure!(cliff_field(&shown, "volume_type").as_deref() == Some("lvm-thin"), "show: {shown}");
    ensure!(cliff_field(&shown, "size").as_deref() == Some("1"));

    clients.cinder(&["extend", &volume, "2"])?;
    let extended = clients.wait_for(&volume, "available")?;
    ensure!(cliff_field(&extended, "size").as_deref() == Some("2"), "extend: {extended}");
    clients.cinder(&["rename", &volume, "v1-renamed"])?;
    ensure!(clients.cinder(&["list"])?.contains("v1-renamed"));

    clients.cinder(&["snapshot-create", "--name", "s1", &volume])?;
    let snapshots = clients.cinder(&["snapshot-list"])?;
    let snapshot = id_of(&snapshots, "s1").context("s1 in the snapshot list")?;
    let deadline = std::time::Instant::now() + WAIT;
    while !clients
        .cinder(&["snapshot-list"])?
        .lines()
        .any(|line| line.contains(&snapshot) && line.contains("available"))
    {
        ensure!(std::time::Instant::now() < deadline, "snapshot s1 never became available");
        std::thread::sleep(Duration::from_millis(200));
    }

    clients.cinder(&["create", "--snapshot-id", &snapshot, "--name", "v2", "2"])?;
    clients.cinder(&["create", "--source-volid", &volume, "--name", "v3", "2"])?;
    let listed = clients.cinder(&["list"])?;
    let from_snapshot = id_of(&listed, "v2").context("v2 listed")?;
    let clone = id_of(&listed, "v3").context("v3 listed")?;
    ensure!(
        cliff_field(&clients.wait_for(&from_snapshot, "available")?, "snapshot_id").as_deref()
            == Some(snapshot.as_str())
    );
    ensure!(cliff_field(&clients.wait_for(&clone, "available")?, "source_volid").as_deref() == Some(volume.as_str()));

    let quotas = clients.cinder(&["quota-show", PROJECT])?;
    ensure!(
        cliff_field(&quotas, "volumes").as_deref() == Some("10")
            && cliff_field(&quotas, "gigabytes").as_deref() == Some("1000"),
        "quota-show: {quotas}"
    );
    let pools = clients.cinder(&["get-pools"])?;
    ensure!(pools.contains("@file#default"), "get-pools: {pools}");
    let detailed = clients.cinder(&["get-pools", "--detail"])?;
    ensure!(
        detailed.contains("total_capacity_gb") && detailed.contains("thin_provisioning_support"),
        "get-pools --detail: {detailed}"
    );
    let services = clients.cinder(&["service-list"])?;
    ensure!(
        services.contains("cinder-volume") && services.contains("cinder-scheduler") && services.contains(" up "),
        "service-list: {services}"
    );
    let backend = pools
        .split_whitespace()
        .find_map(|word| word.strip_suffix("#default").filter(|host| host.ends_with("@file")))
        .context("a pool named <host>@file#default")?;
    let capabilities = clients.cinder(&["get-capabilities", backend])?;
    ensure!(
        capabilities.contains("OS::Storage::Capabilities::") && capabilities.contains("thin_provisioning_support"),
        "get-capabilities: {capabilities}"
    );
    let filters = clients.cinder(&["--os-volume-api-version", "3.33", "list-filters", "--resource", "volume"])?;
    ensure!(
        filters.contains("volume") && filters.contains("availability_zone") && !filters.contains("volume_id"),
        "list-filters: {filters}"
    );

    let server = "11111111-2222-3333-4444-555555555555";
    let attached = clients.cinder(&["attachment-create", &volume, server])?;
    ensure!(cliff_field(&attached, "status").as_deref() == Some("reserved"), "attachment-create: {attached}");
    let attachments = clients.cinder(&["attachment-list"])?;
    let attachment = attachments
        .lines()
        .find(|line| line.contains(&volume))
        .and_then(|line| line.split('|').nth(1))
        .map(|cell| cell.trim().to_owned())
        .context("the attachment is listed")?;
    ensure!(clients.wait_for(&volume, "reserved").is_ok());
    clients.cinder(&["attachment-delete", &attachment])?;
    clients.wait_for(&volume, "available")?;
    ensure!(!clients.cinder(&["attachment-list"])?.contains(&volume));

    clients.cinder(&["snapshot-delete", &snapshot])?;
    let deadline = std::time::Instant::now() + WAIT;
    while clients.cinder(&["snapshot-list"])?.contains(&snapshot) {
        ensure!(std::time::Instant::now() < deadline, "snapshot s1 was never deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    clients.cinder(&["reset-state", "--state", "error", &clone])?;
    ensure!(cliff_field(&clients.cinder(&["show", &clone])?, "status").as_deref() == Some("error"));
    clients.cinder(&["force-delete", &clone])?;
    clients.cinder(&["delete", &volume])?;
    clients.cinder(&["delete", &from_snapshot])?;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed = clients.cinder(&["list"])?;
        if ![&volume, &from_snapshot, &clone].iter().any(|id| listed.contains(id.as_str())) {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "volumes were never deleted:\n{listed}");
        std::thread::sleep(Duration::from_millis(200));
    }
    clients.cinder(&["type-key", "lvm-thin", "unset", "volume_backend_name"])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openstack_cli_creates_lists_shows_extends_transfers_and_deletes() -> Result<()> {
    let (_up, clients, _data) = tokio::task::spawn_blocking(start_clients).await??;
    tokio::task::spawn_blocking(move || openstack_sequence(&clients)).await?
}

fn openstack_sequence(clients: &Clients) -> Result<()> {
    let created = clients.openstack(&["volume", "create", "--size", "1", "o1", "-f", "value", "-c", "id"])?;
    let volume = created.trim().to_owned();
    ensure!(uuid::Uuid::try_parse(&volume).is_ok(), "volume create printed {created:?}");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = clients.openstack(&["volume", "show", &volume, "-f", "value", "-c", "status"])?;
        if status.trim() == "available" {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "o1 is still {status}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let listed = clients.openstack(&["volume", "list", "-f", "value", "-c", "Name"])?;
    ensure!(listed.lines().any(|line| line.trim() == "o1"), "volume list: {listed}");
    let shown = clients.openstack(&["volume", "show", "o1", "-f", "value", "-c", "size"])?;
    ensure!(shown.trim() == "1", "volume show o1: {shown}");
    clients.openstack(&["volume", "set", "--size", "2", &volume])?;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let size = clients.openstack(&["volume", "show", &volume, "-f", "value", "-c", "size"])?;
        if size.trim() == "2" {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "o1 never grew: {size}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let deadline = std::time::Instant::now() + WAIT;
    while clients.openstack(&["volume", "show", &volume, "-f", "value", "-c", "status"])?.trim() != "available" {
        ensure!(std::time::Instant::now() < deadline, "o1 never settled after the extend");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Over to another project and back, with the key each offer prints.
    clients.transfer(&volume, PROJECT, OTHER_PROJECT)?;
    let theirs = clients.openstack_in(OTHER_PROJECT, &["volume", "show", &volume, "-f", "value", "-c", "status"])?;
    ensure!(theirs.trim() == "available", "the receiver sees {theirs}");
    ensure!(
        !clients.openstack(&["volume", "list", "-f", "value", "-c", "ID"])?.contains(&volume),
        "the donor still lists a volume it gave away"
    );
    clients.transfer(&volume, OTHER_PROJECT, PROJECT)?;
    clients.openstack(&["volume", "delete", &volume])?;
    let deadline = std::time::Instant::now() + WAIT;
    while clients.openstack(&["volume", "list", "-f", "value", "-c", "ID"])?.contains(&volume) {
        ensure!(std::time::Instant::now() < deadline, "o1 was never deleted");
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_cinderclient_backs_up_incrementally_and_restores() -> Result<()> {
    let (_up, clients, data) = tokio::task::spawn_blocking(start_clients).await??;
    tokio::task::spawn_blocking(move || backup_sequence(&clients, data.path())).await?
}

/// Polls `cinder backup-show` until the backup's status is `status`.
fn wait_for_backup(clients: &Clients, backup: &str, status: &str) -> Result<String> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let shown = clients.cinder(&["backup-show", backup])?;
        if cliff_field(&shown, "status").as_deref() == Some(status) {
            return Ok(shown);
        }
        ensure!(std::time::Instant::now() < deadline, "backup {backup} never became {status}:\n{shown}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn backup_sequence(clients: &Clients, data: &std::path::Path) -> Result<()> {
    let created = clients.cinder(&["create", "--name", "to-back-up", "1"])?;
    let volume = cliff_field(&created, "id").context("the new volume's id")?;
    clients.wait_for(&volume, "available")?;
    let file = data.join("volumes").join(format!("volume-{volume}"));
    let first = pattern(11, 3 << 20);
    write_at(&file, 5 << 20, &first)?;

    let full =
        cliff_field(&clients.cinder(&["backup-create", "--name", "full", &volume])?, "id").context("backup id")?;
    let shown = wait_for_backup(clients, &full, "available")?;
    ensure!(cliff_field(&shown, "is_incremental").as_deref() == Some("False"), "backup-show: {shown}");
    clients.wait_for(&volume, "available")?;

    // About 1% of the volume changes; the incremental backup stores little more than that.
    let second = pattern(12, 1 << 20);
    write_at(&file, 700 << 20, &second)?;
    let incremental = clients.cinder(&["backup-create", "--incremental", "--name", "incremental", &volume])?;
    let incremental = cliff_field(&incremental, "id").context("incremental backup id")?;
    let shown = wait_for_backup(clients, &incremental, "available")?;
    ensure!(cliff_field(&shown, "is_incremental").as_deref() == Some("True"), "backup-show: {shown}");
    let listed = clients.cinder(&["backup-list"])?;
    ensure!(listed.contains(&full) && listed.contains(&incremental), "backup-list: {listed}");
    ensure!(
        cliff_field(&clients.cinder(&["backup-show", &full])?, "has_dependent_backups").as_deref() == Some("True"),
        "the full backup has a dependent"
    );
    let refused = clients.cinder(&["backup-delete", &full]);
    ensure!(refused.is_err(), "a backup with a dependent incremental must not be deleted");

    // The source goes; the backup restores into a new volume with both changes.
    clients.cinder(&["delete", &volume])?;
    let restored = clients.cinder(&["backup-restore", &incremental])?;
    let restored = cliff_field(&restored, "volume_id").context("the restored volume's id")?;
    clients.wait_for(&restored, "available")?;
    wait_for_backup(clients, &incremental, "available")?;
    let restored_file = data.join("volumes").join(format!("volume-{restored}"));
    ensure!(read_at(&restored_file, 5 << 20, first.len())? == first, "the first write was restored");
    ensure!(read_at(&restored_file, 700 << 20, second.len())? == second, "the change was restored");
    ensure!(read_at(&restored_file, 0, 4096)? == vec![0; 4096], "the rest reads as zeros");

    clients.cinder(&["backup-delete", &incremental])?;
    let deadline = std::time::Instant::now() + WAIT;
    while clients.cinder(&["backup-list"])?.contains(&incremental) {
        ensure!(std::time::Instant::now() < deadline, "the incremental backup was never deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    clients.cinder(&["backup-delete", &full])?;
    let deadline = std::time::Instant::now() + WAIT;
    while clients.cinder(&["backup-list"])?.contains(&full) {
        ensure!(std::time::Instant::now() < deadline, "the full backup was never deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let chunks = data.join("backups").join("projects").join(PROJECT).join("chunks");
    let left = walk_files(&chunks)?;
    ensure!(left.is_empty(), "deleting every backup leaves no chunk: {left:?}");
    clients.cinder(&["delete", &restored])?;
    Ok(())
}

fn walk_files(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(files) };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() { files.extend(walk_files(&path)?) } else { files.push(path) }
    }
    Ok(files)
}

#[tokio::test(flavor = "multi_thread")]
async fn both_clients_read_and_delete_the_message_a_failed_snapshot_leaves() -> Result<()> {
    let (_up, clients, data) = tokio::task::spawn_blocking(start_clients).await??;
    tokio::task::spawn_blocking(move || message_sequence(&clients, data.path())).await?
}

fn message_sequence(clients: &Clients, data: &std::path::Path) -> Result<()> {
    let created = clients.cinder(&["create", "--name", "lost", "1"])?;
    let volume = cliff_field(&created, "id").context("the new volume's id")?;
    clients.wait_for(&volume, "available")?;
    // The node cannot snapshot a volume whose file is gone: the snapshot fails on the node.
    std::fs::remove_file(data.join("volumes").join(format!("volume-{volume}")))?;
    let snapshot = cliff_field(&clients.cinder(&["snapshot-create", &volume])?, "id").context("snapshot id")?;
    let deadline = std::time::Instant::now() + WAIT;
    while cliff_field(&clients.cinder(&["snapshot-show", &snapshot])?, "status").as_deref() != Some("error") {
        ensure!(std::time::Instant::now() < deadline, "snapshot {snapshot} never failed");
        std::thread::sleep(Duration::from_millis(200));
    }

    let v33 = ["--os-volume-api-version", "3.3"];
    let listed = clients.cinder(&[&v33[..], &["message-list"]].concat())?;
    let message = id_of(&listed, &snapshot).with_context(|| format!("message-list names the snapshot:\n{listed}"))?;
    ensure!(listed.contains("VOLUME_SNAPSHOT") && listed.contains("VOLUME_VOLUME_SNAPSHOT_009_013"), "{listed}");
    let shown = clients.cinder(&[&v33[..], &["message-show", &message]].concat())?;
    ensure!(
        cliff_field(&shown, "user_message").as_deref() == Some("create snapshot:Snapshot failed to create."),
        "message-show: {shown}"
    );
    ensure!(cliff_field(&shown, "request_id").is_some_and(|id| id.starts_with("req-")), "message-show: {shown}");

    let columns = ["-f", "value", "-c", "ID", "-c", "User Message"];
    let seen = clients.openstack(&[&v33[..], &["volume", "message", "list"], &columns[..]].concat())?;
    ensure!(seen.contains(&message) && seen.contains("create snapshot:Snapshot failed to create."), "{seen}");
    clients.openstack(&[&v33[..], &["volume", "message", "delete", &message]].concat())?;
    let after = clients.cinder(&[&v33[..], &["message-list"]].concat())?;
    ensure!(!after.contains(&message), "the deleted message is still listed:\n{after}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn both_clients_manage_and_unmanage_an_object_of_the_pool() -> Result<()> {
    let (_up, clients, data) = tokio::task::spawn_blocking(start_clients).await??;
    tokio::task::spawn_blocking(move || manage_sequence(&clients, data.path())).await?
}

fn manage_sequence(clients: &Clients, data: &std::path::Path) -> Result<()> {
    let pools = clients.cinder(&["get-pools"])?;
    let host = cliff_field(&pools, "name").with_context(|| format!("get-pools names a pool:\n{pools}"))?;
    let pool_dir = data.join("volumes");
    let bytes = pattern(71, 1 << 20);
    std::fs::write(pool_dir.join("legacy"), &bytes)?;

    let v38 = ["--os-volume-api-version", "3.8"];
    let listed = clients.cinder(&[&v38[..], &["manageable-list", &host]].concat())?;
    ensure!(listed.contains("legacy") && listed.contains("True"), "manageable-list:\n{listed}");
    let managed = clients.cinder(&["manage", "--name", "adopted", &host, "legacy"])?;
    let volume = cliff_field(&managed, "id").with_context(|| format!("manage printed no id:\n{managed}"))?;
    clients.wait_for(&volume, "available")?;
    ensure!(read_at(&pool_dir.join(format!("volume-{volume}")), 0, bytes.len())? == bytes, "the bytes were adopted");
    clients.cinder(&["unmanage", &volume])?;
    ensure!(clients.cinder(&["show", &volume]).is_err(), "an unmanaged volume is still shown");

    // The openstack CLI adopts it again by the name it was left under, and releases it.
    let source = format!("source-name=volume-{volume}");
    let args =
        ["volume", "create", "--remote-source", &source, "--host", &host, "readopted", "-f", "value", "-c", "id"];
    let readopted = clients.openstack(&args)?.trim().to_owned();
    clients.wait_for(&readopted, "available")?;
    ensure!(read_at(&pool_dir.join(format!("volume-{readopted}")), 0, bytes.len())? == bytes);
    clients.openstack(&["volume", "delete", "--remote", &readopted])?;
    ensure!(clients.cinder(&["show", &readopted]).is_err(), "openstack volume delete --remote left the volume");
    ensure!(pool_dir.join(format!("volume-{readopted}")).exists(), "unmanaging removed the bytes");

    // A snapshot released and adopted again as its volume's.
    let volume = cliff_field(&clients.cinder(&["create", "--name", "with-snapshot", "1"])?, "id").context("volume")?;
    clients.wait_for(&volume, "available")?;
    let snapshot = cliff_field(&clients.cinder(&["snapshot-create", &volume])?, "id").context("snapshot id")?;
    let deadline = std::time::Instant::now() + WAIT;
    while cliff_field(&clients.cinder(&["snapshot-show", &snapshot])?, "status").as_deref() != Some("available") {
        ensure!(std::time::Instant::now() < deadline, "snapshot {snapshot} never became available");
        std::thread::sleep(Duration::from_millis(200));
    }
    clients.cinder(&["snapshot-unmanage", &snapshot])?;
    let name = format!("snapshot-{snapshot}");
    let listed = clients.cinder(&[&v38[..], &["snapshot-manageable-list", &host]].concat())?;
    ensure!(listed.contains(&name), "snapshot-manageable-list:\n{listed}");
    let adopted = clients.cinder(&["snapshot-manage", "--name", "adopted", &volume, &name])?;
    let adopted = cliff_field(&adopted, "id").with_context(|| format!("snapshot-manage printed no id:\n{adopted}"))?;
    let deadline = std::time::Instant::now() + WAIT;
    while cliff_field(&clients.cinder(&["snapshot-show", &adopted])?, "status").as_deref() != Some("available") {
        ensure!(std::time::Instant::now() < deadline, "the adopted snapshot never became available");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn both_clients_disable_and_enable_a_volume_service() -> Result<()> {
    let (_up, clients, _data) = tokio::task::spawn_blocking(start_clients).await??;
    tokio::task::spawn_blocking(move || service_sequence(&clients)).await?
}

fn service_sequence(clients: &Clients) -> Result<()> {
    let listed = clients.cinder(&["service-list", "--binary", "cinder-volume"])?;
    let host = listed
        .lines()
        .find(|line| line.contains("cinder-volume"))
        .and_then(|line| line.split('|').nth(2))
        .map(|field| field.trim().to_owned())
        .with_context(|| format!("service-list names the volume service:\n{listed}"))?;

    // cinderclient: disabled with a reason, which the list shows; new volumes then find no pool.
    let disabled = clients.cinder(&["service-disable", "--reason", "disk swap", &host, "cinder-volume"])?;
    ensure!(disabled.contains("disabled") && disabled.contains("disk swap"), "service-disable:\n{disabled}");
    let listed = clients.cinder(&["service-list", "--binary", "cinder-volume"])?;
    ensure!(listed.contains("disabled") && listed.contains("disk swap"), "service-list:\n{listed}");
    let refused = clients.cinder(&["create", "--name", "nowhere", "1"]).expect_err("a volume with no pool to go to");
    ensure!(format!("{refused:#}").contains("every volume service that reports is disabled"), "{refused:#}");
    let enabled = clients.cinder(&["service-enable", &host, "cinder-volume"])?;
    ensure!(enabled.contains("enabled"), "service-enable:\n{enabled}");
    let placed = cliff_field(&clients.cinder(&["create", "--name", "placed", "1"])?, "id").context("volume id")?;
    clients.wait_for(&placed, "available")?;

    // The openstack CLI likewise.
    let set = ["volume", "service", "set", "--disable", "--disable-reason", "firmware", &host, "cinder-volume"];
    clients.openstack(&set)?;
    let columns = ["-f", "value", "-c", "Host", "-c", "Status", "-c", "Disabled Reason"];
    let seen = clients.openstack(
        &[&["volume", "service", "list", "--long", "--service", "cinder-volume"][..], &columns[..]].concat(),
    )?;
    ensure!(seen.contains(&host) && seen.contains("disabled") && seen.contains("firmware"), "{seen}");
    clients.openstack(&["volume", "service", "set", "--enable", &host, "cinder-volume"])?;
    let seen = clients.openstack(&[
        "volume",
        "service",
        "list",
        "--service",
        "cinder-volume",
        "-f",
        "value",
        "-c",
        "Status",
    ])?;
    ensure!(seen.trim() == "enabled", "{seen}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn both_clients_run_group_types_and_groups() -> Result<()> {
    let (_up, clients, _data) = tokio::task::spawn_blocking(start_clients).await??;
    tokio::task::spawn_blocking(move || group_sequence(&clients)).await?
}

/// Polls `status` (what a client prints as the object's status) until it is `wanted`.
fn wait_for_status(status: impl Fn() -> Result<String>, wanted: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = status()?;
        if now.trim() == wanted {
            return Ok(());
        }
        ensure!(std::time::Instant::now() < deadline, "never {wanted}: still {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Group snapshots (3.14) of `group` with both clients, and groups made from one and from the
/// group; the group snapshots are deleted again. Returns the groups made.
fn group_snapshot_sequence(clients: &Clients, group: &str) -> Result<Vec<String>> {
    let v314 = ["--os-volume-api-version", "3.14"];
    let cinder = |args: &[&str]| clients.cinder(&[&v314[..], args].concat());
    let openstack = |args: &[&str]| clients.openstack(&[&v314[..], args].concat());
    let made = cinder(&["group-snapshot-create", "--name", "gs1", group])?;
    let first = cliff_field(&made, "id").with_context(|| format!("group-snapshot-create printed no id:\n{made}"))?;
    let show = || cinder(&["group-snapshot-show", &first]);
    wait_for_status(|| Ok(cliff_field(&show()?, "status").unwrap_or_default()), "available")?;
    let shown = show()?;
    ensure!(cliff_field(&shown, "group_id").as_deref() == Some(group), "group-snapshot-show:\n{shown}");
    ensure!(cinder(&["group-snapshot-list"])?.contains(&first));

    let made =
        openstack(&["volume", "group", "snapshot", "create", "--name", "gs2", group, "-f", "value", "-c", "id"])?;
    let second = made.trim().to_owned();
    ensure!(uuid::Uuid::try_parse(&second).is_ok(), "volume group snapshot create printed {made:?}");
    wait_for_status(
        || openstack(&["volume", "group", "snapshot", "show", &second, "-f", "value", "-c", "status"]),
        "available",
    )?;
    let listed = openstack(&["volume", "group", "snapshot", "list", "-f", "value", "-c", "ID"])?;
    ensure!(listed.contains(&first) && listed.contains(&second), "volume group snapshot list:\n{listed}");

    let mut copies = Vec::new();
    let restored = cinder(&["group-create-from-src", "--group-snapshot", &first, "--name", "g-restored"])?;
    copies.push(
        cliff_field(&restored, "id").with_context(|| format!("group-create-from-src printed no id:\n{restored}"))?,
    );
    let cloned = cinder(&["group-create-from-src", "--source-group", group, "--name", "g-cloned"])?;
    copies.push(cliff_field(&cloned, "id").with_context(|| format!("group-create-from-src printed no id:\n{cloned}"))?);
    let made = openstack(&[
        "volume",
        "group",
        "create",
        "--group-snapshot",
        &second,
        "--name",
        "g-os",
        "-f",
        "value",
        "-c",
        "id",
    ])?;
    copies.push(made.trim().to_owned());
    for (copy, source) in copies.iter().zip([first.as_str(), group, second.as_str()]) {
        let show = || cinder(&["group-show", copy]);
        wait_for_status(|| Ok(cliff_field(&show()?, "status").unwrap_or_default()), "available")?;
        let shown = show()?;
        ensure!(shown.contains(source), "group-show names its source {source}:\n{shown}");
    }

    cinder(&["group-snapshot-delete", &first])?;
    openstack(&["volume", "group", "snapshot", "delete", &second])?;
    let deadline = std::time::Instant::now() + WAIT;
    while cinder(&["group-snapshot-list"]).is_ok_and(|list| list.contains(&first) || list.contains(&second)) {
        ensure!(std::time::Instant::now() < deadline, "the group snapshots were never deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(copies)
}

fn group_sequence(clients: &Clients) -> Result<()> {
    let v313 = ["--os-volume-api-version", "3.13"];
    let cinder = |args: &[&str]| clients.cinder(&[&v313[..], args].concat());
    cinder(&["group-type-create", "gold-group"])?;
    cinder(&["group-type-key", "gold-group", "set", "consistent_group_snapshot_enabled=<is> True"])?;
    let types = cinder(&["group-type-list"])?;
    ensure!(types.contains("gold-group") && types.contains("default_group_type"), "group-type-list:\n{types}");
    let specs = cinder(&["group-specs-list"])?;
    ensure!(specs.contains("consistent_group_snapshot_enabled"), "group-specs-list:\n{specs}");

    let created = cinder(&["group-create", "--name", "g1", "gold-group", "__DEFAULT__"])?;
    let group = cliff_field(&created, "id").with_context(|| format!("group-create printed no id:\n{created}"))?;
    let shown = cinder(&["group-show", &group])?;
    ensure!(cliff_field(&shown, "status").as_deref() == Some("available"), "group-show:\n{shown}");
    let volume = cliff_field(&cinder(&["create", "--group-id", &group, "--volume-type", "__DEFAULT__", "1"])?, "id")
        .context("the group's volume")?;
    clients.wait_for(&volume, "available")?;
    ensure!(cliff_field(&cinder(&["show", &volume])?, "group_id").as_deref() == Some(group.as_str()));
    ensure!(cinder(&["group-list"])?.contains(&group));
    let copies = group_snapshot_sequence(clients, &group)?;
    for doomed in [&group].into_iter().chain(&copies) {
        cinder(&["group-delete", "--delete-volumes", doomed])?;
    }
    let deadline = std::time::Instant::now() + WAIT;
    while [&group]
        .into_iter()
        .chain(&copies)
        .any(|doomed| cinder(&["group-list"]).is_ok_and(|list| list.contains(doomed)))
        || clients.cinder(&["list"])?.contains(&volume)
    {
        ensure!(std::time::Instant::now() < deadline, "the groups and their volumes were never deleted");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The openstack CLI makes a group of the same type, lists it and deletes it.
    let openstack = |args: &[&str]| clients.openstack(&[&v313[..], args].concat());
    let made = openstack(&[
        "volume",
        "group",
        "create",
        "--volume-group-type",
        "gold-group",
        "--volume-type",
        "__DEFAULT__",
        "--name",
        "g2",
        "-f",
        "value",
        "-c",
        "id",
    ])?;
    let second = made.trim().to_owned();
    ensure!(uuid::Uuid::try_parse(&second).is_ok(), "volume group create printed {made:?}");
    let listed = openstack(&["volume", "group", "list", "-f", "value", "-c", "ID"])?;
    ensure!(listed.contains(&second), "volume group list:\n{listed}");
    openstack(&["volume", "group", "delete", &second])?;
    let deadline = std::time::Instant::now() + WAIT;
    while openstack(&["volume", "group", "list", "-f", "value", "-c", "ID"])?.contains(&second) {
        ensure!(std::time::Instant::now() < deadline, "g2 was never deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    cinder(&["group-type-delete", "gold-group"])?;
    Ok(())
}

/// Both clients move volumes between two nodes of a deployment of separate processes (a
/// scheduler, two volume nodes in different zones sharing a backup store, a gateway): `cinder
/// retype --migration-policy on-demand`, `cinder migrate`, `openstack volume migrate --host` and
/// `openstack volume set --type --retype-policy on-demand`.
#[tokio::test(flavor = "multi_thread")]
async fn both_clients_move_volumes_between_nodes() -> Result<()> {
    let store = tempfile::tempdir()?;
    let store = store.path().to_str().context("utf-8 temp dir")?.to_owned();
    let near: [&str; 4] = ["--backup-store-dir", &store, "--availability-zone", "nova"];
    let far: [&str; 4] = ["--backup-store-dir", &store, "--availability-zone", "far"];
    let mesh = ProcessMesh::start_with_node_args(None, 1, &[&near, &far])?;
    mesh.wait_for_nodes(0).await?;
    let scheduler = mesh.scheduler_addr(0);
    let mut args = vec!["gateway", "--listen", "127.0.0.1:0", "--scheduler-endpoint", &scheduler];
    let tls = pki().args(&basalt::tls::Role::Gateway);
    args.extend(tls.iter().map(String::as_str));
    let gateway = BasaltProcess::spawn(&args, &[], &["rest"])?;
    let clients = Clients {
        bin: cinder_clients()?,
        endpoint: format!("{}/{PROJECT}", gateway.endpoint("rest")),
        home: tempfile::tempdir()?,
    };
    tokio::task::spawn_blocking(move || migration_sequence(&clients)).await?
}

fn migration_sequence(clients: &Clients) -> Result<()> {
    clients.cinder(&["type-create", "far"])?;
    clients.cinder(&["type-key", "far", "set", "RESKEY:availability_zones=far"])?;
    let make = |name: &str| -> Result<String> {
        let created = clients.cinder(&["create", "--name", name, "--availability-zone", "nova", "1"])?;
        let id = cliff_field(&created, "id").with_context(|| format!("create printed no id:\n{created}"))?;
        clients.wait_for(&id, "available")?;
        Ok(id)
    };
    // Polls until the volume is available again on node-1; returns what `cinder show` printed.
    let moved = |id: &str| -> Result<String> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let shown = clients.cinder(&["show", id])?;
            let host = cliff_field(&shown, "os-vol-host-attr:host").unwrap_or_default();
            if host.starts_with("node-1@") && cliff_field(&shown, "status").as_deref() == Some("available") {
                return Ok(shown);
            }
            ensure!(std::time::Instant::now() < deadline, "volume {id} never reached node-1:\n{shown}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    let retyped = make("retyped")?;
    clients.cinder(&["retype", "--migration-policy", "on-demand", &retyped, "far"])?;
    let shown = moved(&retyped)?;
    ensure!(cliff_field(&shown, "volume_type").as_deref() == Some("far"), "after retype:\n{shown}");
    let migrated = make("migrated")?;
    clients.cinder(&["migrate", &migrated, "node-1@file#default"])?;
    let shown = moved(&migrated)?;
    ensure!(cliff_field(&shown, "volume_type").as_deref() == Some("__DEFAULT__"), "after migrate:\n{shown}");

    let by_openstack = make("by-openstack")?;
    clients.openstack(&["volume", "migrate", "--host", "node-1@file#default", &by_openstack])?;
    moved(&by_openstack)?;
    let retyped_by_openstack = make("retyped-by-openstack")?;
    let set = ["volume", "set", "--type", "far", "--retype-policy", "on-demand", &retyped_by_openstack];
    clients.openstack(&set)?;
    let shown = moved(&retyped_by_openstack)?;
    ensure!(cliff_field(&shown, "volume_type").as_deref() == Some("far"), "after volume set --type:\n{shown}");
    Ok(())
}
