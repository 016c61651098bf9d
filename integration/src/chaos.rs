//! The chaos suite: a mixed workload from many REST clients while a fault injector breaks the
//! deployment under them, on two schedulers with a private PostgreSQL, two gateways and two volume
//! nodes (each with its own tgtd, one backup store) on a private NATS, or on one `basalt up`. The
//! faults: SIGKILL and restart a gateway, a scheduler, a node or `basalt up`; freeze a node or
//! `basalt up` (SIGSTOP: unreachable, its connections open); crash and restart PostgreSQL; kill and
//! restart NATS. Every volume holds its own data, written where its node keeps it; clones,
//! snapshots, reverts, backups and restores are expected to carry exactly that data.
//!
//! When the workload is done and the faults stop, everything settles and the invariants are
//! checked: no row in a transitional status, the journal empty, every row's backend object present
//! and no object without its row, every volume's bytes and every backup's restored bytes as
//! written, each project's quota usage equal to its rows; then everything is deleted and every
//! claim and every quota usage must be back at zero and every node's storage and tgtd empty.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use basalt::proto::{
    GetQuotasRequest, ListAttachmentsRequest, ListBackupsRequest, ListOperationsRequest, ListPoolsRequest,
    ListSnapshotsRequest, ListVolumesRequest, PageRequest,
};
use serde_json::{Value, json};

use crate::{
    BasaltProcess, GIB, ProcessMesh, Tgtd, UP_READY_KEYS, admin, files_in, free_port,
    private_servers::{NatsServer, PostgresServer},
    project_id, random_bytes, read_at, volume_client, write_at,
};

/// How long one object may take to settle, faults included.
const SETTLE: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(100);
/// Bytes each write puts into a volume, at a few places.
const CHUNK: usize = 64 << 10;
/// What one client keeps at most; past it, a create, clone or restore deletes a volume instead,
/// a snapshot deletes its volume's oldest, a backup deletes the client's newest, and an extend
/// does nothing (so a long run does not fill the pools).
const MAX_VOLUMES: usize = 6;
const MAX_SNAPSHOTS: usize = 3;
const MAX_BACKUPS: usize = 6;
const MAX_SIZE_GIB: u64 = 4;

/// What the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// Two schedulers on a private PostgreSQL, a gateway in front of each, two nodes with their
    /// own tgtd, on a private NATS.
    Mesh,
    /// One `basalt up` (SQLite, the file backend) exporting through its tgtd.
    Up,
}

#[derive(Debug, Clone)]
pub struct ChaosSettings {
    pub deployment: Deployment,
    /// Operations the clients complete at least (refused and failed ones count too).
    pub operations: usize,
    /// Faults of every kind the run injects at least; the workload goes on until they are.
    pub faults_per_kind: usize,
    pub clients: usize,
    /// Time between two faults.
    pub fault_interval: Duration,
    pub seed: u64,
}

/// What a run did and checked.
#[derive(Debug, Default)]
pub struct ChaosReport {
    /// Operations by kind: done, and failed (ended in an error status, or refused).
    pub done: BTreeMap<&'static str, usize>,
    pub failed: BTreeMap<&'static str, usize>,
    /// Why operations failed: `kind: reason` (ids left out) with how often.
    pub reasons: BTreeMap<String, usize>,
    pub faults: BTreeMap<&'static str, usize>,
    /// Answers other than the object to a client polling it (it asked again), with how often.
    pub odd_answers: BTreeMap<String, usize>,
    /// Each invariant with what it covered.
    pub invariants: Vec<String>,
}

impl ChaosReport {
    pub fn print(&self) {
        let done: usize = self.done.values().sum();
        let failed: usize = self.failed.values().sum();
        let faults: usize = self.faults.values().sum();
        println!("operations: {done} done, {failed} failed or refused");
        for (kind, count) in &self.done {
            println!("  {kind}: {count} done, {} failed", self.failed.get(kind).unwrap_or(&0));
        }
        println!("why operations failed:");
        for (reason, count) in &self.reasons {
            println!("  {count} x {reason}");
        }
        println!("answers to a poll other than the object (asked again):");
        for (answer, count) in &self.odd_answers {
            println!("  {count} x {answer}");
        }
        println!("faults injected: {faults}");
        for (kind, count) in &self.faults {
            println!("  {kind}: {count}");
        }
        println!("invariants held:");
        for invariant in &self.invariants {
            println!("  {invariant}");
        }
    }
}

/// A small deterministic generator: each client's choices follow from the seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

/// Data a volume, snapshot or backup is expected to hold: chunks by offset (all else zero).
type Content = BTreeMap<u64, Vec<u8>>;

#[derive(Debug, Clone)]
struct VolumeModel {
    id: String,
    size_gib: u64,
    content: Content,
    /// Its snapshots, oldest first, with what they hold.
    snapshots: Vec<(String, Content)>,
}

/// The deployment under test and what the injector may do to it.
struct World {
    services: Mutex<Services>,
    /// REST bases the clients use (`http://addr/v3`); every restart keeps its address.
    bases: Vec<String>,
    /// Where each node keeps its volumes (`basalt up`: one).
    volume_dirs: Vec<PathBuf>,
}

enum Services {
    Mesh(Box<MeshServices>),
    Up {
        process: Option<BasaltProcess>,
        /// Its command line, for restarts (fixed addresses, the same data directory).
        args: Vec<String>,
    },
}

struct MeshServices {
    mesh: ProcessMesh,
    /// Gateways by scheduler, each restarted on its address in `World::bases`.
    gateways: Vec<Option<BasaltProcess>>,
    postgres: PostgresServer,
    nats: NatsServer,
}

impl World {
    fn stored_files(&self) -> Result<Vec<String>> {
        files_in(&self.volume_dirs)
    }
}

/// Why an operation did not complete: what refused it, or the status it ended in.
type Outcome = std::result::Result<(), String>;

fn refused(status: u16, body: &Value) -> String {
    let message = body
        .as_object()
        .and_then(|object| object.values().next())
        .and_then(|fault| fault["message"].as_str())
        .unwrap_or_default();
    format!("refused {status}: {}", without_ids(message))
}

fn ended(status: &str) -> Outcome {
    if status == "available" { Ok(()) } else { Err(format!("ended {status}")) }
}

/// `text` with every UUID replaced by `<id>`, so the same reason counts once.
fn without_ids(text: &str) -> String {
    let is_uuid = |candidate: &[u8]| {
        candidate.len() == 36
            && candidate.iter().enumerate().all(|(index, byte)| match index {
                8 | 13 | 18 | 23 => *byte == b'-',
                _ => byte.is_ascii_hexdigit(),
            })
    };
    let bytes = text.as_bytes();
    let (mut out, mut index) = (String::new(), 0);
    while index < bytes.len() {
        if bytes.len() - index >= 36 && is_uuid(&bytes[index..index + 36]) {
            out.push_str("<id>");
            index += 36;
        } else {
            let char = text[index..].chars().next().unwrap_or_default();
            out.push(char);
            index += char.len_utf8();
        }
    }
    out
}

/// One client: its project, its objects, and a kept-alive HTTP client.
struct Client {
    http: reqwest::Client,
    world: Arc<World>,
    project: String,
    random: Random,
    volumes: Vec<VolumeModel>,
    /// Backups, oldest first: id, the volume backed up, what it holds.
    backups: Vec<(String, String, Content)>,
    /// Answers other than the object to a poll of it, by status and message.
    odd_answers: BTreeMap<String, usize>,
}

impl Client {
    /// One REST call through any gateway; a gateway that is down is retried through the other,
    /// until one answers (a gateway restart takes a moment).
    async fn call(
        &mut self,
        method: reqwest::Method,
        path: &str,
        version: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let base = self.world.bases[self.random.below(self.world.bases.len())].clone();
            let mut request = self
                .http
                .request(method.clone(), format!("{base}/{}{path}", self.project))
                .header("X-Auth-Token", format!("admin:{}", self.project))
                .header("OpenStack-API-Version", format!("volume {version}"))
                .timeout(Duration::from_secs(60));
            if let Some(body) = body {
                request = request.header("Content-Type", "application/json").body(body.to_string());
            }
            match request.send().await {
                Ok(reply) => {
                    let status = reply.status().as_u16();
                    let bytes = reply.bytes().await.unwrap_or_default();
                    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    // A scheduler down behind the gateway: the call did nothing, try again.
                    if status != 503 && status != 502 {
                        return Ok((status, value));
                    }
                }
                Err(error) if tokio::time::Instant::now() > deadline => bail!("{method} {path}: {error}"),
                Err(_) => {}
            }
            ensure!(tokio::time::Instant::now() < deadline, "{method} {path}: no gateway answered");
            tokio::time::sleep(POLL * 3).await;
        }
    }

    /// Polls `path` until its `key` object leaves the transitional statuses; its last status.
    async fn settle(&mut self, path: &str, version: &str, key: &str) -> Result<String> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let (status, body) = self.call(reqwest::Method::GET, path, version, None).await?;
            if status == 404 {
                return Ok("gone".into());
            }
            // Anything but the object (a gateway timing out on a frozen scheduler) says nothing
            // of its status: ask again.
            let now = body[key]["status"].as_str().map(str::to_owned);
            if now.is_none() {
                *self.odd_answers.entry(refused(status, &body)).or_default() += 1;
            }
            if let Some(now) = &now
                && !TRANSITIONAL.contains(&now.as_str())
            {
                return Ok(now.clone());
            }
            ensure!(tokio::time::Instant::now() < deadline, "{path} is still {now:?} ({status} {body})");
            tokio::time::sleep(POLL).await;
        }
    }

    /// The file that holds volume `id`, on the node its host names.
    async fn volume_file(&mut self, id: &str) -> Result<PathBuf> {
        let dirs = self.world.volume_dirs.clone();
        let dir = if dirs.len() == 1 {
            &dirs[0]
        } else {
            let (_, shown) = self.call(reqwest::Method::GET, &format!("/volumes/{id}"), "3.0", None).await?;
            let host = shown["volume"]["os-vol-host-attr:host"].as_str().unwrap_or_default();
            let node: Option<usize> = host.split('@').next().and_then(|node| node.strip_prefix("node-")?.parse().ok());
            node.and_then(|node| dirs.get(node)).with_context(|| format!("volume {id} has no host: {shown}"))?
        };
        Ok(dir.join(format!("volume-{id}")))
    }

    /// Writes this client's next unique chunks into volume `index`, where its node keeps it.
    async fn fill(&mut self, index: usize) -> Result<()> {
        let id = self.volumes[index].id.clone();
        let file = self.volume_file(&id).await?;
        let size = self.volumes[index].size_gib * GIB;
        for _ in 0..3 {
            let offset = (self.random.next() % (size / CHUNK as u64)) * CHUNK as u64;
            let seed = self.random.next();
            let bytes = random_bytes(seed, CHUNK);
            write_at(&file, offset, &bytes)?;
            self.volumes[index].content.insert(offset, bytes);
        }
        Ok(())
    }

    /// Makes a volume from `body` and keeps its model with `content` once available.
    async fn create(&mut self, body: Value, content: Content) -> Result<Outcome> {
        let (status, created) = self.call(reqwest::Method::POST, "/volumes", "3.0", Some(&body)).await?;
        if status != 202 {
            return Ok(Err(refused(status, &created)));
        }
        let id = created["volume"]["id"].as_str().context("volume id")?.to_owned();
        let size_gib = created["volume"]["size"].as_u64().unwrap_or(1);
        let settled = self.settle(&format!("/volumes/{id}"), "3.0", "volume").await?;
        if settled == "available" {
            self.volumes.push(VolumeModel { id, size_gib, content, snapshots: Vec::new() });
        } else if let Err(reason) = self.delete_volume_id(&id).await? {
            // Deleted again at the clean-up.
            return Ok(Err(format!("ended {settled}, and then its delete {reason}")));
        }
        Ok(ended(&settled))
    }

    async fn delete_volume_id(&mut self, id: &str) -> Result<Outcome> {
        self.delete(&format!("/volumes/{id}"), "?cascade=true&force=true", "3.23", "volume").await
    }

    /// Deletes the `key` object at `path` (with `query`) and waits until it is gone.
    async fn delete(&mut self, path: &str, query: &str, version: &str, key: &str) -> Result<Outcome> {
        let (status, body) = self.call(reqwest::Method::DELETE, &format!("{path}{query}"), version, None).await?;
        if status != 202 {
            return Ok(Err(refused(status, &body)));
        }
        match self.settle(path, "3.0", key).await?.as_str() {
            "gone" => Ok(Ok(())),
            other => Ok(Err(format!("ended {other}"))),
        }
    }

    /// Creates a `key` object (`POST /{key}s`) and waits for it: its id once available.
    async fn make(&mut self, key: &str, body: &Value) -> Result<std::result::Result<String, String>> {
        let (status, created) = self.call(reqwest::Method::POST, &format!("/{key}s"), "3.0", Some(body)).await?;
        if status != 202 {
            return Ok(Err(refused(status, &created)));
        }
        let id = created[key]["id"].as_str().unwrap_or_default().to_owned();
        Ok(ended(&self.settle(&format!("/{key}s/{id}"), "3.0", key).await?).map(|()| id))
    }

    /// A volume action (`POST /volumes/{id}/action`), and how the volume settled after it.
    async fn act(&mut self, volume: &str, version: &str, body: &Value) -> Result<Outcome> {
        let path = format!("/volumes/{volume}/action");
        let (status, reply) = self.call(reqwest::Method::POST, &path, version, Some(body)).await?;
        let settled = self.settle(&format!("/volumes/{volume}"), "3.0", "volume").await?;
        Ok(if status != 202 { Err(refused(status, &reply)) } else { ended(&settled) })
    }

    /// One operation of a random kind, and how it went; `None` when there was nothing to do it on.
    async fn operate(&mut self) -> Result<Option<(&'static str, Outcome)>> {
        let kinds = ["create", "clone", "snapshot", "revert", "extend", "attach", "backup", "restore", "delete"];
        let mut kind = kinds[self.random.below(kinds.len())];
        if self.volumes.is_empty() && kind != "create" {
            return Ok(None);
        }
        if self.volumes.len() >= MAX_VOLUMES && matches!(kind, "create" | "clone" | "restore") {
            kind = "delete";
        }
        let pick = self.random.below(self.volumes.len());
        let outcome = match kind {
            "create" => {
                let outcome = self.create(json!({"volume": {"size": 1}}), Content::new()).await?;
                if outcome.is_ok() {
                    self.fill(self.volumes.len() - 1).await?;
                }
                outcome
            }
            "clone" => {
                let source = self.volumes[pick].clone();
                let body = json!({"volume": {"size": source.size_gib, "source_volid": source.id}});
                self.create(body, source.content.clone()).await?
            }
            "snapshot" if self.volumes[pick].snapshots.len() >= MAX_SNAPSHOTS => {
                kind = "delete snapshot";
                let (snapshot, _) = self.volumes[pick].snapshots.remove(0);
                self.delete(&format!("/snapshots/{snapshot}"), "", "3.0", "snapshot").await?
            }
            "snapshot" => {
                let volume = self.volumes[pick].id.clone();
                let made = self.make("snapshot", &json!({"snapshot": {"volume_id": volume, "force": true}})).await?;
                if let Ok(id) = &made {
                    let content = self.volumes[pick].content.clone();
                    self.volumes[pick].snapshots.push((id.clone(), content));
                }
                made.map(drop)
            }
            "revert" => {
                let Some((snapshot, content)) = self.volumes[pick].snapshots.last().cloned() else { return Ok(None) };
                let volume = self.volumes[pick].id.clone();
                let outcome = self.act(&volume, "3.40", &json!({"revert": {"snapshot_id": snapshot}})).await?;
                if outcome.is_ok() {
                    self.volumes[pick].content = content;
                }
                outcome
            }
            "extend" => {
                let volume = self.volumes[pick].clone();
                if volume.size_gib >= MAX_SIZE_GIB {
                    return Ok(None);
                }
                let body = json!({"os-extend": {"new_size": volume.size_gib + 1}});
                let outcome = self.act(&volume.id, "3.0", &body).await?;
                if outcome.is_ok() {
                    self.volumes[pick].size_gib += 1;
                }
                outcome
            }
            "attach" => self.attach_and_detach(pick).await?,
            "backup" if self.backups.len() >= MAX_BACKUPS => {
                // The newest: no incremental depends on it.
                kind = "delete backup";
                let (backup, _, _) = self.backups.pop().context("a backup")?;
                self.delete(&format!("/backups/{backup}"), "", "3.0", "backup").await?
            }
            "backup" => {
                let volume = self.volumes[pick].id.clone();
                // Incremental when a full one of this volume exists, half the time.
                let incremental =
                    self.backups.iter().any(|(_, backed_up, _)| *backed_up == volume) && self.random.below(2) == 0;
                let body = json!({"backup": {"volume_id": volume, "incremental": incremental}});
                let made = self.make("backup", &body).await?;
                if let Ok(id) = &made {
                    let content = self.volumes[pick].content.clone();
                    self.backups.push((id.clone(), volume, content));
                }
                made.map(drop)
            }
            "restore" => {
                if self.backups.is_empty() {
                    return Ok(None);
                }
                let (backup, _, content) = self.backups[self.random.below(self.backups.len())].clone();
                let path = format!("/backups/{backup}/restore");
                let (status, restored) =
                    self.call(reqwest::Method::POST, &path, "3.0", Some(&json!({"restore": {}}))).await?;
                let volume = restored["restore"]["volume_id"].as_str().unwrap_or_default().to_owned();
                if status != 202 || volume.is_empty() {
                    Err(refused(status, &restored))
                } else {
                    let settled = self.settle(&format!("/volumes/{volume}"), "3.0", "volume").await?;
                    if settled == "available" {
                        let (_, shown) =
                            self.call(reqwest::Method::GET, &format!("/volumes/{volume}"), "3.0", None).await?;
                        let size_gib = shown["volume"]["size"].as_u64().unwrap_or(1);
                        self.volumes.push(VolumeModel { id: volume, size_gib, content, snapshots: Vec::new() });
                    } else if let Err(reason) = self.delete_volume_id(&volume).await? {
                        // Deleted again at the clean-up.
                        return Ok(Some((kind, Err(format!("ended {settled}, and then its delete {reason}")))));
                    }
                    ended(&settled)
                }
            }
            _ => {
                let volume = self.volumes.remove(pick);
                self.delete_volume_id(&volume.id).await?
            }
        };
        Ok(Some((kind, outcome)))
    }

    /// Attaches volume `pick` to a host through the attachments API, completes it, and detaches.
    async fn attach_and_detach(&mut self, pick: usize) -> Result<Outcome> {
        let volume = self.volumes[pick].id.clone();
        let connector = json!({"initiator": format!("iqn.2004-10.org.debian:chaos-{}", self.project), "host": "chaos"});
        let body = json!({"attachment": {"volume_uuid": volume, "instance_uuid": "vm-chaos", "connector": connector}});
        let (status, attached) = self.call(reqwest::Method::POST, "/attachments", "3.54", Some(&body)).await?;
        if status != 200 {
            return Ok(Err(refused(status, &attached)));
        }
        let id = attached["attachment"]["id"].as_str().context("attachment id")?.to_owned();
        let complete = json!({"os-complete": {}});
        let path = format!("/attachments/{id}/action");
        let (completed, reply) = self.call(reqwest::Method::POST, &path, "3.54", Some(&complete)).await?;
        // A host detaches until it is told the attachment is gone, as Nova does.
        self.detach(&id).await?;
        let settled = self.settle(&format!("/volumes/{volume}"), "3.0", "volume").await?;
        if completed != 204 {
            return Ok(Err(format!("os-complete {}", refused(completed, &reply))));
        }
        Ok(ended(&settled))
    }

    async fn detach(&mut self, attachment: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let (status, body) =
                self.call(reqwest::Method::DELETE, &format!("/attachments/{attachment}"), "3.54", None).await?;
            if status == 200 || status == 404 {
                return Ok(());
            }
            ensure!(tokio::time::Instant::now() < deadline, "attachment {attachment} would not go: {status} {body}");
            tokio::time::sleep(POLL * 5).await;
        }
    }
}

/// Statuses an object passes through; `reserved`, `attaching` and `in-use` are not among them:
/// they hold as long as their attachments do (a host that never completes or deletes its
/// attachment keeps the volume attaching, in Cinder too).
const TRANSITIONAL: [&str; 12] = [
    "creating",
    "deleting",
    "detaching",
    "extending",
    "backing-up",
    "restoring-backup",
    "restoring",
    "reverting",
    "retyping",
    "downloading",
    "uploading",
    "maintenance",
];

#[derive(Clone, Copy)]
enum Fault {
    KillGateway,
    KillScheduler,
    KillNode,
    FreezeNode,
    RestartPostgres,
    RestartNats,
    KillUp,
    FreezeUp,
}

impl Fault {
    fn of(deployment: Deployment) -> &'static [Fault] {
        match deployment {
            Deployment::Mesh => &[
                Fault::KillGateway,
                Fault::KillScheduler,
                Fault::KillNode,
                Fault::FreezeNode,
                Fault::RestartPostgres,
                Fault::RestartNats,
            ],
            Deployment::Up => &[Fault::KillUp, Fault::FreezeUp],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::KillGateway => "SIGKILL a gateway, restart it",
            Fault::KillScheduler => "SIGKILL a scheduler, restart it",
            Fault::KillNode => "SIGKILL a volume node, restart it",
            Fault::FreezeNode => "make a volume node unreachable (SIGSTOP) for 1-3 s",
            Fault::RestartPostgres => "crash PostgreSQL (immediate stop), restart it",
            Fault::RestartNats => "SIGKILL NATS, restart it",
            Fault::KillUp => "SIGKILL basalt up, restart it",
            Fault::FreezeUp => "make basalt up unreachable (SIGSTOP) for 1-3 s",
        }
    }
}

/// How long a killed or stopped service stays down: 0.2-1.7 s.
fn downtime(random: &mut Random) -> Duration {
    Duration::from_millis(200 + random.below(1500) as u64)
}

/// Stops `pid` (SIGSTOP) for 1-3 s: it holds its connections and answers nothing.
async fn freeze(pid: u32, random: &mut Random) -> Result<()> {
    let signal = |name: &str| std::process::Command::new("kill").args([name, &pid.to_string()]).status();
    signal("-STOP")?;
    tokio::time::sleep(Duration::from_millis(1000 + random.below(2000) as u64)).await;
    signal("-CONT")?;
    Ok(())
}

impl World {
    /// SIGKILLs one of `count` processes of the mesh, and restarts it after a moment.
    async fn kill_and_restart(
        &self,
        random: &mut Random,
        count: fn(&ProcessMesh) -> usize,
        kill: fn(&mut ProcessMesh, usize),
        restart: fn(&mut ProcessMesh, usize) -> Result<()>,
    ) -> Result<()> {
        let index = self.with_mesh(|mesh| {
            let index = random.below(count(mesh));
            kill(mesh, index);
            index
        });
        tokio::time::sleep(downtime(random)).await;
        self.with_mesh(|mesh| restart(mesh, index))
    }

    fn with_mesh<T>(&self, act: impl FnOnce(&mut ProcessMesh) -> T) -> T {
        match &mut *self.services.lock().unwrap() {
            Services::Mesh(services) => act(&mut services.mesh),
            Services::Up { .. } => unreachable!("a mesh fault injected into basalt up"),
        }
    }

    async fn inject(&self, fault: Fault, random: &mut Random) -> Result<()> {
        match fault {
            Fault::KillGateway => {
                let index = random.below(self.bases.len());
                if let Services::Mesh(services) = &mut *self.services.lock().unwrap()
                    && let Some(mut process) = services.gateways[index].take()
                {
                    process.kill();
                }
                tokio::time::sleep(downtime(random)).await;
                let listen = self.bases[index].trim_start_matches("http://").trim_end_matches("/v3");
                if let Services::Mesh(services) = &mut *self.services.lock().unwrap() {
                    services.gateways[index] = Some(services.mesh.spawn_gateway_on(index, listen)?);
                }
            }
            Fault::KillScheduler => {
                let count = |mesh: &ProcessMesh| mesh.schedulers.len();
                self.kill_and_restart(random, count, ProcessMesh::kill_scheduler, ProcessMesh::restart_scheduler)
                    .await?;
            }
            Fault::KillNode => {
                let count = |mesh: &ProcessMesh| mesh.node_ids.len();
                self.kill_and_restart(random, count, ProcessMesh::kill_node, ProcessMesh::restart_node).await?;
            }
            Fault::FreezeNode => {
                let pid = self.with_mesh(|mesh| {
                    let index = random.below(mesh.node_ids.len());
                    mesh.nodes[index].as_ref().map(BasaltProcess::pid)
                });
                if let Some(pid) = pid {
                    freeze(pid, random).await?;
                }
            }
            Fault::RestartPostgres | Fault::RestartNats => {
                let down = downtime(random);
                // The servers' own tools block; the other clients go on meanwhile.
                tokio::task::block_in_place(|| match &mut *self.services.lock().unwrap() {
                    Services::Mesh(services) if matches!(fault, Fault::RestartPostgres) => {
                        services.postgres.crash_and_restart(down)
                    }
                    Services::Mesh(services) => services.nats.kill_and_restart(down),
                    Services::Up { .. } => unreachable!("a mesh fault injected into basalt up"),
                })?;
            }
            Fault::KillUp => {
                if let Services::Up { process, .. } = &mut *self.services.lock().unwrap()
                    && let Some(mut process) = process.take()
                {
                    process.kill();
                }
                tokio::time::sleep(downtime(random)).await;
                if let Services::Up { process, args } = &mut *self.services.lock().unwrap() {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    *process = Some(BasaltProcess::spawn(&args, &[], UP_READY_KEYS)?);
                }
            }
            Fault::FreezeUp => {
                let pid = match &*self.services.lock().unwrap() {
                    Services::Up { process, .. } => process.as_ref().map(BasaltProcess::pid),
                    Services::Mesh(_) => None,
                };
                if let Some(pid) = pid {
                    freeze(pid, random).await?;
                }
            }
        }
        Ok(())
    }
}

/// The tgtds the deployment exports through, and the deployment; nothing runs a workload yet.
async fn deploy(deployment: Deployment, work: &std::path::Path) -> Result<(Vec<Tgtd>, World)> {
    let store = work.join("backups");
    match deployment {
        Deployment::Mesh => {
            let tgtds = vec![Tgtd::start()?, Tgtd::start()?];
            let node_args: Vec<Vec<String>> = tgtds
                .iter()
                .enumerate()
                .map(|(index, tgtd)| {
                    // Each node its own export records: they name its tgtd's targets.
                    let state = work.join(format!("state-{index}"));
                    let mut args = tgtd.export_flags();
                    args.extend(["--backup-store-dir".to_owned(), store.display().to_string()]);
                    args.extend(["--state-dir".to_owned(), state.display().to_string()]);
                    args
                })
                .collect();
            let node_args: Vec<Vec<&str>> =
                node_args.iter().map(|args| args.iter().map(String::as_str).collect()).collect();
            let node_args: Vec<&[&str]> = node_args.iter().map(Vec::as_slice).collect();
            let postgres = tokio::task::block_in_place(PostgresServer::start)?;
            let nats = NatsServer::start()?;
            let mesh = ProcessMesh::start_on_bus(&nats.url(), Some(postgres.url()), 2, &node_args, &[])?;
            mesh.wait_for_nodes(0).await?;
            let gateways: Vec<BasaltProcess> = (0..2).map(|index| mesh.spawn_gateway(index)).collect::<Result<_>>()?;
            let bases =
                gateways.iter().map(|gateway| gateway.endpoint("rest").trim_end_matches('/').to_owned()).collect();
            let volume_dirs = (0..mesh.node_ids.len()).map(|index| mesh.node_dir(index)).collect();
            let gateways = gateways.into_iter().map(Some).collect();
            let services = Services::Mesh(Box::new(MeshServices { mesh, gateways, postgres, nats }));
            Ok((tgtds, World { services: Mutex::new(services), bases, volume_dirs }))
        }
        Deployment::Up => {
            let tgtd = Tgtd::start()?;
            let data = work.join("up");
            let (rest, grpc) = (format!("127.0.0.1:{}", free_port()?), format!("127.0.0.1:{}", free_port()?));
            let data_dir = data.display().to_string();
            let mut args: Vec<String> = ["up", "--data-dir", &data_dir, "--rest-listen", &rest, "--grpc-listen", &grpc]
                .map(str::to_owned)
                .to_vec();
            args.extend(tgtd.export_flags());
            let process =
                BasaltProcess::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[], UP_READY_KEYS)?;
            let bases = vec![process.endpoint("rest").trim_end_matches('/').to_owned()];
            let services = Services::Up { process: Some(process), args };
            Ok((vec![tgtd], World { services: Mutex::new(services), bases, volume_dirs: vec![data.join("volumes")] }))
        }
    }
}

/// A VolumeService client of the deployment as an admin sees it.
async fn scheduler_client(world: &World) -> Result<Scheduler> {
    let address = match &*world.services.lock().unwrap() {
        Services::Mesh(services) => services.mesh.scheduler_addr(0),
        Services::Up { process, .. } => return process.as_ref().context("basalt up is running")?.volume_client(),
    };
    volume_client(&address).await
}

/// Runs the workload and the faults, then checks every invariant; an `Err` names what broke.
pub async fn run(settings: &ChaosSettings) -> Result<ChaosReport> {
    let work = tempfile::tempdir()?;
    let (tgtds, world) = deploy(settings.deployment, work.path()).await?;
    let world = Arc::new(world);
    let mut scheduler = scheduler_client(&world).await?;

    let mut report = ChaosReport::default();
    let projects: Vec<String> = (0..settings.clients).map(|index| project_id(&format!("chaos-{index}"))).collect();
    for project in &projects {
        let lift = basalt::proto::UpdateQuotasRequest {
            project_id: project.clone(),
            limits: ["volumes", "gigabytes", "snapshots", "backups", "backup_gigabytes"]
                .iter()
                .map(|key| ((*key).to_owned(), -1))
                .collect(),
            reset: false,
        };
        scheduler.update_quotas(admin("ops").request(lift)).await?;
    }

    // The workload, and the faults beside it: the clients go on until they have done their
    // operations and every kind of fault has been injected often enough.
    let remaining = Arc::new(AtomicUsize::new(settings.operations));
    let faults_enough = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let faults = {
        let (world, finished, faults_enough, remaining, settings) =
            (world.clone(), finished.clone(), faults_enough.clone(), remaining.clone(), settings.clone());
        tokio::spawn(async move {
            let mut random = Random(settings.seed ^ 0xFA17);
            let mut injected: BTreeMap<&'static str, usize> = BTreeMap::new();
            let kinds = Fault::of(settings.deployment);
            let mut round: Vec<Fault> = Vec::new();
            let injecting = async {
                while !finished.load(Ordering::SeqCst) {
                    tokio::time::sleep(settings.fault_interval).await;
                    if finished.load(Ordering::SeqCst) {
                        break;
                    }
                    // Every kind once per round, in a random order.
                    if round.is_empty() {
                        round = kinds.to_vec();
                        for index in (1..round.len()).rev() {
                            round.swap(index, random.below(index + 1));
                        }
                    }
                    let fault = round.pop().context("a fault")?;
                    world.inject(fault, &mut random).await?;
                    *injected.entry(fault.name()).or_default() += 1;
                    let total: usize = injected.values().sum();
                    if total.is_multiple_of(25) {
                        let started = settings.operations.saturating_sub(remaining.load(Ordering::SeqCst));
                        println!("chaos: {total} faults injected, {started} operations started");
                    }
                    let fewest = kinds.iter().map(|kind| injected.get(kind.name()).copied().unwrap_or(0)).min();
                    if fewest >= Some(settings.faults_per_kind) {
                        faults_enough.store(true, Ordering::SeqCst);
                    }
                }
                anyhow::Ok(())
            };
            let result = injecting.await;
            // The clients must not wait for faults that will not come.
            faults_enough.store(true, Ordering::SeqCst);
            result.map(|()| injected)
        })
    };
    let mut workers = Vec::new();
    for (index, project) in projects.iter().enumerate() {
        let mut client = Client {
            http: reqwest::Client::new(),
            world: world.clone(),
            project: project.clone(),
            random: Random(settings.seed.wrapping_add(index as u64 * 0x9E37_79B9) | 1),
            volumes: Vec::new(),
            backups: Vec::new(),
            odd_answers: BTreeMap::new(),
        };
        let (remaining, faults_enough) = (remaining.clone(), faults_enough.clone());
        workers.push(tokio::spawn(async move {
            let mut outcomes: Vec<(&'static str, Outcome)> = Vec::new();
            loop {
                let counted =
                    remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1)).is_ok();
                if !counted && faults_enough.load(Ordering::SeqCst) {
                    break;
                }
                match client.operate().await? {
                    Some(outcome) => outcomes.push(outcome),
                    None if counted => {
                        remaining.fetch_add(1, Ordering::SeqCst);
                    }
                    None => {}
                }
            }
            anyhow::Ok((client, outcomes))
        }));
    }
    let mut clients = Vec::new();
    for worker in workers {
        let (client, outcomes) = worker.await??;
        for (kind, outcome) in outcomes {
            match outcome {
                Ok(()) => *report.done.entry(kind).or_default() += 1,
                Err(reason) => {
                    *report.failed.entry(kind).or_default() += 1;
                    *report.reasons.entry(format!("{kind}: {reason}")).or_default() += 1;
                }
            }
        }
        for (answer, count) in &client.odd_answers {
            *report.odd_answers.entry(answer.clone()).or_default() += count;
        }
        clients.push(client);
    }
    finished.store(true, Ordering::SeqCst);
    // The injector restarts what it breaks before the next fault: every service is up now.
    report.faults = faults.await??;

    let mut scheduler = scheduler_client(&world).await?;
    check_settled(&mut scheduler, &mut report).await?;
    check_storage(&world, &mut scheduler, &tgtds, &mut report).await?;
    check_contents(&mut clients, &mut report).await?;
    check_quotas(&mut scheduler, &projects, &mut report).await?;
    clean_up_and_check_zero(&world, &mut scheduler, &mut clients, &projects, &tgtds, &mut report).await?;

    drop(clients);
    drop(world);
    Ok(report)
}

type Scheduler = basalt::proto::volume_service_client::VolumeServiceClient<basalt::channel::Channel>;

/// Every volume, snapshot and backup of every project (one page each: a run makes fewer).
async fn everything(
    scheduler: &mut Scheduler,
) -> Result<(Vec<basalt::proto::Volume>, Vec<basalt::proto::Snapshot>, Vec<basalt::proto::Backup>)> {
    let ops = admin("ops");
    let page = || Some(PageRequest { limit: PAGE, ..Default::default() });
    let volumes = scheduler
        .list_volumes(ops.request(ListVolumesRequest { all_projects: true, page: page(), ..Default::default() }))
        .await?
        .into_inner()
        .volumes;
    let snapshots = scheduler
        .list_snapshots(ops.request(ListSnapshotsRequest { all_projects: true, page: page(), ..Default::default() }))
        .await?
        .into_inner()
        .snapshots;
    let backups = scheduler
        .list_backups(ops.request(ListBackupsRequest { all_projects: true, page: page(), ..Default::default() }))
        .await?
        .into_inner()
        .backups;
    let most = PAGE as usize;
    ensure!(volumes.len() < most && snapshots.len() < most && backups.len() < most, "more objects than one page");
    Ok((volumes, snapshots, backups))
}

const PAGE: u32 = 1000;

async fn attachments(scheduler: &mut Scheduler) -> Result<Vec<basalt::proto::Attachment>> {
    let request = ListAttachmentsRequest { all_projects: true, ..Default::default() };
    Ok(scheduler.list_attachments(admin("ops").request(request)).await?.into_inner().attachments)
}

/// No row in a transitional status and the journal empty, within the settle time.
async fn check_settled(scheduler: &mut Scheduler, report: &mut ChaosReport) -> Result<()> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (volumes, snapshots, backups) = everything(scheduler).await?;
        let busy: Vec<String> = volumes
            .iter()
            .map(|volume| (format!("volume {}", volume.id), volume.status().cinder_name()))
            .chain(
                snapshots.iter().map(|snapshot| (format!("snapshot {}", snapshot.id), snapshot.status().cinder_name())),
            )
            .chain(backups.iter().map(|backup| (format!("backup {}", backup.id), backup.status().cinder_name())))
            .filter(|(_, status)| TRANSITIONAL.contains(status))
            .map(|(what, status)| format!("{what} {status}"))
            .collect();
        let journal =
            scheduler.list_operations(admin("ops").request(ListOperationsRequest::default())).await?.into_inner();
        if busy.is_empty() && journal.total == 0 {
            // A volume is reserved, attaching or in use exactly while it has attachments (a
            // client's retried request may have made one it never heard of).
            let attachments = attachments(scheduler).await?;
            for volume in &volumes {
                let attached = attachments.iter().any(|attachment| attachment.volume_id == volume.id);
                let status = volume.status().cinder_name();
                ensure!(
                    attached == matches!(status, "reserved" | "attaching" | "in-use"),
                    "volume {} is {status} with attachments: {attached}",
                    volume.id
                );
            }
            report.invariants.push(format!(
                "settled: {} volumes, {} snapshots, {} backups, none in a transitional status; {} attachments, each volume reserved, attaching or in use exactly while it has one; the journal is empty",
                volumes.len(),
                snapshots.len(),
                backups.len(),
                attachments.len()
            ));
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "not settled: {busy:?}; journal: {:?}",
            journal
                .operations
                .iter()
                .map(|operation| format!("{} {}", operation.kind, operation.resource_id))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every volume and snapshot row has its file on its node, no file lacks its row, and no tgtd
/// holds a target (every attachment was detached).
async fn check_storage(
    world: &World,
    scheduler: &mut Scheduler,
    tgtds: &[Tgtd],
    report: &mut ChaosReport,
) -> Result<()> {
    let (volumes, snapshots, _) = everything(scheduler).await?;
    // A volume whose create failed holds nothing on its node, as in Cinder (a create the client
    // never heard the answer of may fail with nobody to delete it).
    let failed: BTreeSet<String> = volumes
        .iter()
        .filter(|volume| volume.status() == basalt::proto::VolumeStatus::Error)
        .map(|volume| format!("volume-{}", volume.id))
        .collect();
    let mut expected: Vec<String> = volumes
        .iter()
        .map(|volume| format!("volume-{}", volume.id))
        .chain(snapshots.iter().map(|snapshot| format!("snapshot-{}", snapshot.id)))
        .collect();
    expected.sort();
    let stored = world.stored_files()?;
    expected.retain(|name| !failed.contains(name) || stored.contains(name));
    ensure!(stored == expected, "storage and rows differ:\n stored   {stored:?}\n recorded {expected:?}");
    // Exports: each connected attachment has its volume's target, and every target belongs to a
    // volume with an attachment that named a host (one whose connect was cut short may hold one).
    let mut exported: BTreeSet<String> = BTreeSet::new();
    for tgtd in tgtds {
        for line in tgtd.show_targets()?.lines().filter(|line| line.starts_with("Target ")) {
            exported.extend(line.split("volume-").nth(1).map(|id| id.trim().to_owned()));
        }
    }
    let attachments = attachments(scheduler).await?;
    let asked: BTreeSet<String> = attachments
        .iter()
        .filter(|attachment| attachment.connector.is_some())
        .map(|attachment| attachment.volume_id.clone())
        .collect();
    let connected: BTreeSet<String> = attachments
        .iter()
        .filter(|attachment| attachment.connection_info.is_some())
        .map(|attachment| attachment.volume_id.clone())
        .collect();
    let unasked: Vec<&String> = exported.difference(&asked).collect();
    ensure!(unasked.is_empty(), "exports without an attachment that asked for them: {unasked:?}");
    let unexported: Vec<&String> = connected.difference(&exported).collect();
    ensure!(unexported.is_empty(), "connected attachments without their export: {unexported:?}");
    report.invariants.push(format!(
        "storage: {} objects on the nodes, each with its row and no row without one (but volumes whose create failed); {} exports, each for an attachment, every connected one exported",
        stored.len(),
        exported.len()
    ));
    Ok(())
}

fn expected_bytes(content: &Content, offset: u64) -> &[u8] {
    content.get(&offset).map_or(&[][..], Vec::as_slice)
}

/// Every volume a client knows holds what it wrote (or what its source held), and every backup
/// restores to what its volume held.
async fn check_contents(clients: &mut [Client], report: &mut ChaosReport) -> Result<()> {
    let (mut volumes, mut backups) = (0, 0);
    for client in clients.iter_mut() {
        for volume in client.volumes.clone() {
            let file = client.volume_file(&volume.id).await?;
            for offset in volume.content.keys() {
                let read = read_at(&file, *offset, CHUNK)?;
                ensure!(read == expected_bytes(&volume.content, *offset), "volume {} differs at {offset}", volume.id);
            }
            volumes += 1;
        }
        for (backup, _, content) in client.backups.clone() {
            let path = format!("/backups/{backup}/restore");
            let (status, restored) =
                client.call(reqwest::Method::POST, &path, "3.0", Some(&json!({"restore": {}}))).await?;
            ensure!(status == 202, "restoring backup {backup}: {status} {restored}");
            let volume = restored["restore"]["volume_id"].as_str().context("restored volume")?.to_owned();
            let settled = client.settle(&format!("/volumes/{volume}"), "3.0", "volume").await?;
            ensure!(settled == "available", "the restore of backup {backup} ended {settled}");
            let file = client.volume_file(&volume).await?;
            for offset in content.keys() {
                ensure!(
                    read_at(&file, *offset, CHUNK)? == expected_bytes(&content, *offset),
                    "backup {backup} restores different bytes at {offset}"
                );
            }
            // Gone again at once: the pools need not hold a copy of every backup at the same time.
            if let Err(reason) = client.delete_volume_id(&volume).await? {
                bail!("the restored volume {volume} would not go: {reason}");
            }
            backups += 1;
        }
    }
    report
        .invariants
        .push(format!("data: {volumes} volumes hold what was written, {backups} backups restore byte-identical"));
    Ok(())
}

/// Each project's quota usage equals what its rows hold.
async fn check_quotas(scheduler: &mut Scheduler, projects: &[String], report: &mut ChaosReport) -> Result<()> {
    let (volumes, snapshots, backups) = everything(scheduler).await?;
    for project in projects {
        let quotas = scheduler
            .get_quotas(admin("ops").request(GetQuotasRequest { project_id: project.clone(), defaults_only: false }))
            .await?
            .into_inner();
        let used = |key: &str| quotas.quotas.get(key).map_or(0, |value| value.in_use);
        let own_volumes: Vec<_> = volumes.iter().filter(|volume| &volume.project_id == project).collect();
        let own_snapshots: Vec<_> = snapshots.iter().filter(|snapshot| &snapshot.project_id == project).collect();
        let own_backups: Vec<_> = backups.iter().filter(|backup| &backup.project_id == project).collect();
        let gigabytes: u64 = own_volumes.iter().map(|volume| volume.size_gib).sum::<u64>()
            + own_snapshots.iter().map(|snapshot| snapshot.size_gib).sum::<u64>();
        ensure!(
            used("volumes") == own_volumes.len() as i64,
            "project {project}: volumes in use {} but {} rows",
            used("volumes"),
            own_volumes.len()
        );
        ensure!(
            used("snapshots") == own_snapshots.len() as i64,
            "project {project}: snapshots in use {} but {} rows",
            used("snapshots"),
            own_snapshots.len()
        );
        ensure!(
            used("gigabytes") == gigabytes as i64,
            "project {project}: gigabytes in use {} but rows hold {gigabytes}",
            used("gigabytes")
        );
        ensure!(
            used("backups") == own_backups.len() as i64,
            "project {project}: backups in use {} but {} rows",
            used("backups"),
            own_backups.len()
        );
    }
    report.invariants.push(format!("quotas: the usage of {} projects equals their rows", projects.len()));
    Ok(())
}

/// Deletes everything; then every claim and every quota usage is zero and the nodes are empty.
async fn clean_up_and_check_zero(
    world: &World,
    scheduler: &mut Scheduler,
    clients: &mut [Client],
    projects: &[String],
    tgtds: &[Tgtd],
    report: &mut ChaosReport,
) -> Result<()> {
    let (volumes, _, backups) = everything(scheduler).await?;
    let client = &mut clients[0];
    for attachment in attachments(scheduler).await? {
        client.project = attachment.project_id.clone();
        client.detach(&attachment.id).await?;
    }
    for backup in &backups {
        // Admins act in any project through its URL.
        client.project = backup.project_id.clone();
        let (status, body) =
            client.call(reqwest::Method::DELETE, &format!("/backups/{}", backup.id), "3.0", None).await?;
        ensure!(status == 202, "deleting backup {}: {status} {body}", backup.id);
        client.settle(&format!("/backups/{}", backup.id), "3.0", "backup").await?;
    }
    for volume in &volumes {
        client.project = volume.project_id.clone();
        if let Err(reason) = client.delete_volume_id(&volume.id).await? {
            bail!("volume {} would not go: {reason}", volume.id);
        }
    }
    let (volumes, snapshots, backups) = everything(scheduler).await?;
    ensure!(volumes.is_empty() && snapshots.is_empty() && backups.is_empty(), "rows outlived their delete");
    check_quotas(scheduler, projects, report).await?;
    report.invariants.pop();
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let pools = scheduler.list_pools(admin("ops").request(ListPoolsRequest::default())).await?.into_inner().pools;
        let booked: Vec<String> = pools
            .iter()
            .filter(|pool| pool.allocated_capacity_gib > 0)
            .map(|pool| format!("{} {} GiB", pool.name, pool.allocated_capacity_gib))
            .collect();
        if booked.is_empty() {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "claims left after everything was deleted: {booked:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(world.stored_files()?.is_empty(), "the nodes kept files");
    for tgtd in tgtds {
        ensure!(!tgtd.show_targets()?.contains("Target "), "a target outlived everything");
    }
    report.invariants.push(format!(
        "cleanup: everything deleted; every claim and every quota usage of {} projects is zero, the nodes hold nothing",
        projects.len()
    ));
    Ok(())
}
