//! Helpers for Basalt's end-to-end tests: an in-process mesh, the real `basalt` binary as child
//! processes, a fresh PostgreSQL database per test, the real NATS server, and a Python venv for
//! outside clients. Every helper fails loudly with what is missing; none skips a test.

pub mod chaos;
pub mod csi;
pub mod keystone;
pub mod private_servers;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use basalt::channel::Channel;
use basalt::{
    bus::Bus,
    context::CallContext,
    ids::{NodeId, ProjectId},
    proto::{
        GetSnapshotRequest, GetVolumeRequest, ListPoolsRequest, Snapshot, SnapshotStatus, Volume, VolumeStatus,
        node_agent_client::NodeAgentClient, volume_service_client::VolumeServiceClient,
    },
    tls::{CertificateAuthority, MeshTls, Role, TlsFiles},
};
use sea_orm::{ConnectionTrait, Database};

pub const NATS_URL: &str = "nats://127.0.0.1:4222";
pub const GIB: u64 = 1 << 30;

/// How long a test waits for an asynchronous state change before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The Keystone-form project id (32 hex digits) a test calls `name`: the name's bytes in hex,
/// padded with zeros, so logs still show which test project it is.
pub fn project_id(name: &str) -> String {
    assert!(name.len() <= 16, "test project names have at most 16 bytes: {name:?}");
    let hex: String = name.bytes().map(|byte| format!("{byte:02x}")).collect();
    format!("{hex:0<32}")
}

pub fn project(name: &str) -> CallContext {
    CallContext::new(
        ProjectId::parse(&project_id(name)).expect("hex project ids are valid"),
        "tester",
        basalt::context::MEMBER_ROLES,
    )
}

pub fn admin(name: &str) -> CallContext {
    CallContext::new(
        ProjectId::parse(&project_id(name)).expect("hex project ids are valid"),
        "admin",
        basalt::context::ADMIN_ROLES,
    )
}

/// The mesh PKI of this test process: one CA, and certificates issued on demand into a directory
/// that lives as long as the process, so in-process services and the `basalt` processes a test
/// spawns trust each other as a deployment's do.
pub struct TestPki {
    dir: PathBuf,
    authority: CertificateAuthority,
    /// `ensure` writes files; one issue at a time.
    issuing: Mutex<()>,
}

pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    fn pki_dir() -> PathBuf {
        std::env::temp_dir().join(format!("basalt-test-pki-{}", std::process::id()))
    }
    PKI.get_or_init(|| {
        let dir = pki_dir();
        let authority = CertificateAuthority::open_or_create(&dir).expect("a CA for the test mesh");
        extern "C" fn remove_pki_dir() {
            let _ = std::fs::remove_dir_all(pki_dir());
        }
        // SAFETY: registers a plain function that only removes a directory, run at process exit.
        unsafe { libc::atexit(remove_pki_dir) };
        TestPki { dir, authority, issuing: Mutex::new(()) }
    })
}

impl TestPki {
    /// `role`'s certificate files, issued when missing.
    pub fn files(&self, role: &Role) -> TlsFiles {
        let _issuing = self.issuing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.authority.ensure(&self.dir, role).expect("a test mesh certificate")
    }

    pub fn tls(&self, role: Role) -> MeshTls {
        let _issuing = self.issuing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.authority.ensure_loaded(&self.dir, role).expect("a loadable test mesh certificate")
    }

    /// `--tls-ca`, `--tls-cert` and `--tls-key` for a `basalt` process acting as `role`.
    pub fn args(&self, role: &Role) -> Vec<String> {
        let files = self.files(role);
        [("--tls-ca", files.ca), ("--tls-cert", files.cert), ("--tls-key", files.key)]
            .into_iter()
            .flat_map(|(flag, path)| [flag.to_owned(), path.display().to_string()])
            .collect()
    }

    /// A CA of its own, in memory: a stranger to this mesh.
    pub fn stranger(role: Role) -> MeshTls {
        let authority = CertificateAuthority::create().expect("another CA");
        authority.mesh_tls(role).expect("a stranger's certificate")
    }
}

/// A VolumeService client at `grpc_addr` that presents the test mesh's gateway certificate.
pub async fn volume_client(grpc_addr: &str) -> Result<VolumeServiceClient<Channel>> {
    volume_client_as(grpc_addr, &pki().tls(Role::Gateway))
}

pub fn volume_client_as(grpc_addr: &str, tls: &MeshTls) -> Result<VolumeServiceClient<Channel>> {
    Ok(VolumeServiceClient::new(basalt::channel::channel(grpc_addr, tls, &Role::Scheduler)?))
}

/// A NodeAgent client for `node_id` at `grpc_addr`, presenting the test mesh's scheduler
/// certificate, as the scheduler does.
pub fn node_client(grpc_addr: &str, node_id: &str) -> Result<NodeAgentClient<Channel>> {
    let node = Role::Node(NodeId::parse(node_id)?);
    Ok(NodeAgentClient::new(basalt::channel::channel(grpc_addr, &pki().tls(Role::Scheduler), &node)?))
}

/// Lifts the volume-count and gigabyte quotas of `project` (as an admin), for tests and benchmarks
/// that create more than the defaults allow.
pub async fn lift_volume_quotas(client: &VolumeServiceClient<Channel>, project: &CallContext) -> Result<()> {
    let request = basalt::proto::UpdateQuotasRequest {
        project_id: project.project_id.to_string(),
        limits: [("volumes".into(), -1), ("gigabytes".into(), -1)].into(),
        ..Default::default()
    };
    client.clone().update_quotas(admin("ops").request(request)).await?;
    Ok(())
}

/// One REST call as the benchmarks make it on a kept-alive `client`: the noauth token `token`
/// (`role:project`), microversion 3.0; the status and the body as JSON (null when it is none).
pub async fn rest_call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<&str>,
) -> Result<(reqwest::StatusCode, serde_json::Value)> {
    let mut request =
        client.request(method, url).header("X-Auth-Token", token).header("OpenStack-API-Version", "volume 3.0");
    if let Some(body) = body {
        request = request.header("Content-Type", "application/json").body(body.to_owned());
    }
    let reply = request.send().await?;
    let status = reply.status();
    let bytes = reply.bytes().await?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)))
}

/// A benchmark's REST client as a Cinder client drives Basalt: kept-alive connections, one noauth
/// token, paths under `base` (`http://host:port/v3/<project>`), volumes polled every `poll`.
#[derive(Clone)]
pub struct RestLoad {
    pub client: reqwest::Client,
    pub base: String,
    pub token: String,
    pub poll: Duration,
}

impl RestLoad {
    /// [`rest_call`] of `path` under the base.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<(reqwest::StatusCode, serde_json::Value)> {
        rest_call(&self.client, method, &format!("{}{path}", self.base), &self.token, body).await
    }

    /// `POST /volumes` with `body`, then `GET` until the volume is available; its id.
    pub async fn create_available(&self, body: &str) -> Result<String> {
        let (status, created) = self.call(reqwest::Method::POST, "/volumes", Some(body)).await?;
        ensure!(status.is_success(), "create: {status} {created}");
        let id = created["volume"]["id"].as_str().context("a volume id")?.to_owned();
        loop {
            let (_, shown) = self.call(reqwest::Method::GET, &format!("/volumes/{id}"), None).await?;
            match shown["volume"]["status"].as_str() {
                Some("available") => return Ok(id),
                Some("creating") => tokio::time::sleep(self.poll).await,
                other => bail!("volume {id} became {other:?}"),
            }
        }
    }

    /// `DELETE /volumes/{id}`, then `GET` until it answers 404.
    pub async fn delete_gone(&self, id: &str) -> Result<()> {
        let path = format!("/volumes/{id}");
        let (status, body) = self.call(reqwest::Method::DELETE, &path, None).await?;
        ensure!(status.is_success(), "delete: {status} {body}");
        while self.call(reqwest::Method::GET, &path, None).await?.0 != reqwest::StatusCode::NOT_FOUND {
            tokio::time::sleep(self.poll).await;
        }
        Ok(())
    }
}

/// The median and 99th percentile of `samples` (sorted in place), for benchmarks.
pub fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |fraction: f64| samples[((samples.len() as f64 * fraction) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

/// Polls the volume until it reaches `status`; fails on an error status or after [`WAIT`].
pub async fn wait_for_status(
    client: &mut VolumeServiceClient<Channel>,
    context: &CallContext,
    volume_id: &str,
    status: VolumeStatus,
) -> Result<Volume> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let volume =
            client.get_volume(context.request(GetVolumeRequest { volume_id: volume_id.into() })).await?.into_inner();
        if volume.status == status as i32 {
            return Ok(volume);
        }
        if volume.status == VolumeStatus::Error as i32 {
            bail!("volume {volume_id} went to error: {}", volume.error_reason);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("volume {volume_id} is still {:?}, not {status:?}", volume.status());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the backup until it is available; fails when it goes to error or after [`WAIT`].
pub async fn wait_for_backup(
    client: &mut VolumeServiceClient<Channel>,
    context: &CallContext,
    backup_id: &str,
) -> Result<basalt::proto::Backup> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let request = basalt::proto::GetBackupRequest { backup_id: backup_id.into() };
        let backup = client.get_backup(context.request(request)).await?.into_inner();
        match backup.status() {
            basalt::proto::BackupStatus::Available => return Ok(backup),
            basalt::proto::BackupStatus::Error => bail!("backup {backup_id} failed: {}", backup.fail_reason),
            status if tokio::time::Instant::now() > deadline => bail!("backup {backup_id} is still {status:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Polls until the volume is gone (NOT_FOUND).
pub async fn wait_until_gone(
    client: &mut VolumeServiceClient<Channel>,
    context: &CallContext,
    volume_id: &str,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client.get_volume(context.request(GetVolumeRequest { volume_id: volume_id.into() })).await {
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(()),
            Err(status) => bail!("unexpected error while waiting for {volume_id} to go: {status}"),
            Ok(volume) if tokio::time::Instant::now() > deadline => {
                bail!("volume {volume_id} is still there: {:?}", volume.into_inner().status())
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits for an async condition, polling; fails with `what` after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await? {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Production settings with short timers, so tests of take-overs finish quickly.
pub fn fast_control_plane() -> basalt_scheduler::ControlPlaneConfig {
    basalt_scheduler::ControlPlaneConfig {
        operation_lease: Duration::from_secs(2),
        reconcile_interval: Duration::from_millis(500),
        ..Default::default()
    }
}

/// A scheduler and volume nodes in this process, on SQLite and the in-process bus: `basalt up`
/// without the gateway, with as many nodes as a test asks for.
pub struct InProcessMesh {
    pub grpc_addr: String,
    pub node_dirs: Vec<PathBuf>,
    scheduler: Option<basalt_scheduler::RunningScheduler>,
    nodes: Vec<basalt_volume_node::RunningNode>,
    pub bus: Bus,
    _root: tempfile::TempDir,
}

impl InProcessMesh {
    pub async fn start(node_count: usize) -> Result<Self> {
        Self::start_with_database(node_count, None).await
    }

    /// `database_url` defaults to a fresh SQLite file.
    pub async fn start_with_database(node_count: usize, database_url: Option<String>) -> Result<Self> {
        Self::start_with(node_count, database_url, fast_control_plane()).await
    }

    /// A mesh whose scheduler runs with `control`.
    pub async fn start_with(
        node_count: usize,
        database_url: Option<String>,
        control: basalt_scheduler::ControlPlaneConfig,
    ) -> Result<Self> {
        let root = tempfile::tempdir()?;
        let bus = Bus::local();
        let database_url =
            database_url.unwrap_or_else(|| format!("sqlite://{}?mode=rwc", root.path().join("basalt.db").display()));
        let scheduler = basalt_scheduler::start(
            basalt_scheduler::SchedulerConfig {
                database_url,
                database_pool_size: basalt_scheduler::db::DEFAULT_POOL_SIZE,
                listen: "127.0.0.1:0".parse()?,
                instance: "test-scheduler".into(),
                initial_report_wait: Duration::from_millis(100),
                control,
                limits: Default::default(),
                tls: pki().tls(Role::Scheduler),
            },
            bus.clone(),
        )
        .await?;
        let mut mesh = Self {
            grpc_addr: scheduler.grpc_addr.to_string(),
            node_dirs: Vec::new(),
            scheduler: Some(scheduler),
            nodes: Vec::new(),
            bus,
            _root: root,
        };
        for index in 0..node_count {
            mesh.add_node(&format!("node-{index}")).await?;
        }
        Ok(mesh)
    }

    pub async fn add_node(&mut self, node_id: &str) -> Result<()> {
        self.add_node_with(node_id, |_| {}).await
    }

    /// Adds a node whose configuration `configure` adjusts (an export target, ...).
    pub async fn add_node_with(
        &mut self,
        node_id: &str,
        configure: impl FnOnce(&mut basalt_volume_node::NodeConfig),
    ) -> Result<()> {
        let dir = self._root.path().join(node_id);
        let node = NodeId::parse(node_id)?;
        let tls = pki().tls(Role::Node(node.clone()));
        let mut config = basalt_volume_node::NodeConfig::new(node, dir.clone(), tls);
        config.report_interval = Duration::from_millis(200);
        config.backup_store = Some(basalt_volume_node::BackupStoreSettings::Posix(self.backup_store_dir()));
        configure(&mut config);
        let node = basalt_volume_node::start(config, self.bus.clone()).await?;
        self.nodes.push(node);
        self.node_dirs.push(dir);
        let pool_name = format!("{node_id}@file#default");
        let client = volume_client(&self.grpc_addr).await?;
        eventually(&format!("the scheduler hears from {node_id}"), || {
            let mut client = client.clone();
            let pool_name = pool_name.clone();
            async move {
                let pools =
                    client.list_pools(admin("ops").request(ListPoolsRequest::default())).await?.into_inner().pools;
                Ok(pools.iter().any(|pool| pool.name == pool_name && pool.schedulable))
            }
        })
        .await
    }

    /// The NodeAgent address of node `index`.
    pub fn node_grpc_addr(&self, index: usize) -> String {
        self.nodes[index].grpc_addr.to_string()
    }

    /// A NodeAgent client of node `index`, as the scheduler calls it.
    pub fn node_client(&self, index: usize) -> Result<NodeAgentClient<Channel>> {
        let node_id = self.node_dirs[index].file_name().and_then(|name| name.to_str()).context("a node directory")?;
        node_client(&self.node_grpc_addr(index), node_id)
    }

    /// The backup store every node of the mesh shares.
    pub fn backup_store_dir(&self) -> PathBuf {
        self._root.path().join("backups")
    }

    /// The file pool of the node named `node_id`.
    pub fn node_dir(&self, node_id: &str) -> PathBuf {
        self._root.path().join(node_id)
    }

    /// Stops node `index` (its reports stop too).
    pub async fn stop_node(&mut self, index: usize) {
        let node = self.nodes.remove(index);
        node.shutdown().await;
    }

    /// Stops the scheduler (its gRPC server too); the nodes keep running.
    pub async fn stop_scheduler(&mut self) {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.shutdown().await;
        }
    }

    pub async fn shutdown(mut self) {
        for node in self.nodes.drain(..) {
            node.shutdown().await;
        }
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.shutdown().await;
        }
    }
}

/// The `basalt` binary of this build: `BASALT_BIN`, or `basalt` in the profile folder: beside a
/// test's `deps/` folder, or beside a benchmark binary.
pub fn basalt_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("BASALT_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let mut profile_dir = exe.parent().context("the running binary has no folder")?;
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().context("test binary has no profile directory")?;
    }
    let binary = profile_dir.join("basalt");
    if !binary.exists() {
        bail!("{} is missing: build it first with `cargo build` (the README's test command does)", binary.display());
    }
    Ok(binary)
}

/// What `basalt up` prints once it serves: its REST, gRPC, TLS and data locations.
pub const UP_READY_KEYS: &[&str] = &["rest", "grpc", "tls", "data"];

/// A child process, killed (SIGKILL) when dropped.
pub struct BasaltProcess {
    child: Child,
    /// The `  key: value` lines the process printed when it came up (`grpc`, `rest`, ...).
    pub endpoints: HashMap<String, String>,
}

impl BasaltProcess {
    /// Runs `basalt <args>` and waits until it has printed every key in `ready_keys`.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], ready_keys: &[&str]) -> Result<Self> {
        Self::spawn_logging(args, env, ready_keys, Stdio::inherit())
    }

    /// [`Self::spawn`] with the process's log (its stderr) going to `log`.
    pub fn spawn_logging(args: &[&str], env: &[(&str, &str)], ready_keys: &[&str], log: Stdio) -> Result<Self> {
        Self::spawn_binary(&basalt_binary()?, args, env, ready_keys, log)
    }

    /// [`Self::spawn_logging`] of another build of basalt (a benchmark's baseline).
    pub fn spawn_binary(
        binary: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        ready_keys: &[&str],
        log: Stdio,
    ) -> Result<Self> {
        let mut command = Command::new(binary);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().with_context(|| format!("cannot run basalt {args:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("[basalt] {line}");
                if let Some((key, value)) = line.trim().split_once(": ") {
                    let _ = sender.send((key.to_owned(), value.to_owned()));
                }
            }
        });
        let mut process = Self { child, endpoints: HashMap::new() };
        while !ready_keys.iter().all(|key| process.endpoints.contains_key(*key)) {
            match receiver.recv_timeout(WAIT) {
                Ok((key, value)) => {
                    process.endpoints.insert(key, value);
                }
                Err(_) => {
                    bail!("basalt {args:?} did not print {ready_keys:?} in time (exit: {:?})", process.child.try_wait())
                }
            }
        }
        Ok(process)
    }

    /// `basalt up` on `data` with loopback listeners on free ports, then `flags`; waits until it
    /// has printed its REST, gRPC and data addresses.
    pub fn up(data: &Path, flags: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        Self::up_logging(data, flags, env, Stdio::inherit())
    }

    /// [`Self::up`] with the log going to `log`.
    pub fn up_logging(data: &Path, flags: &[&str], env: &[(&str, &str)], log: Stdio) -> Result<Self> {
        Self::up_with(&basalt_binary()?, data, flags, env, log)
    }

    /// [`Self::up_logging`] of another build of basalt.
    pub fn up_with(binary: &Path, data: &Path, flags: &[&str], env: &[(&str, &str)], log: Stdio) -> Result<Self> {
        let data = data.to_str().context("a utf-8 data directory")?;
        let mut args = vec!["up", "--data-dir", data, "--rest-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"];
        args.extend(flags);
        Self::spawn_binary(binary, &args, env, UP_READY_KEYS, log)
    }

    pub fn endpoint(&self, key: &str) -> &str {
        &self.endpoints[key]
    }

    /// The TLS directory this `basalt up` printed (`tls: <dir> (...)`).
    pub fn tls_dir(&self) -> PathBuf {
        PathBuf::from(self.endpoint("tls").split(" (").next().unwrap_or_default())
    }

    /// The mesh certificate gRPC clients of this `basalt up` present (the CSI plugin's, which it
    /// issues in its TLS directory).
    pub fn client_tls(&self) -> Result<MeshTls> {
        Ok(MeshTls::load(&TlsFiles::in_dir(&self.tls_dir(), &Role::Csi), Role::Csi)?)
    }

    /// A VolumeService client of this `basalt up`.
    pub fn volume_client(&self) -> Result<VolumeServiceClient<Channel>> {
        volume_client_as(self.endpoint("grpc"), &self.client_tls()?)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited with success.
    pub fn terminate(&mut self) -> Result<bool> {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status()?;
        if !status.success() {
            bail!("cannot signal basalt");
        }
        Ok(self.child.wait()?.success())
    }
}

impl Drop for BasaltProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh database on the machine's PostgreSQL, dropped afterwards.
pub struct PostgresDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PostgresDatabase {
    pub async fn create() -> Result<Self> {
        let server =
            std::env::var("BASALT_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let admin_url = format!("{server}/postgres");
        let name = format!("basalt_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url).await.with_context(|| {
            format!("PostgreSQL is required at {server} (set BASALT_TEST_POSTGRES to point elsewhere)")
        })?;
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await?;
        Ok(Self { url: format!("{server}/{name}"), admin_url, name })
    }

    pub async fn drop_database(self) -> Result<()> {
        let admin = Database::connect(&self.admin_url).await?;
        admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await?;
        Ok(())
    }
}

/// A namespace of NATS subjects private to one test, so tests sharing the server stay apart.
pub fn bus_namespace() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// A Python with `packages` installed, in a venv cached across runs under
/// `BASALT_TEST_CACHE` (default `~/.cache/basalt-tests`). Installs from PyPI when missing.
pub fn python_with(venv_name: &str, packages: &[&str], probe_import: &str) -> Result<PathBuf> {
    let cache = std::env::var("BASALT_TEST_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())).join(".cache/basalt-tests")
    });
    std::fs::create_dir_all(&cache)?;
    let lock = std::fs::File::create(cache.join(format!("{venv_name}.lock")))?;
    lock.lock()?;
    let venv = cache.join(venv_name);
    let python = venv.join("bin/python");
    let ready =
        python.exists() && Command::new(&python).args(["-c", &format!("import {probe_import}")]).status()?.success();
    if !ready {
        let created =
            Command::new("python3").args(["-m", "venv"]).arg(&venv).status().context("python3 is required")?;
        if !created.success() {
            bail!("cannot create a venv at {} (is python3-venv installed?)", venv.display());
        }
        let installed = Command::new(&python).args(["-m", "pip", "install", "-q"]).args(packages).status()?;
        if !installed.success() {
            bail!("pip could not install {packages:?} from PyPI");
        }
    }
    Ok(python)
}

/// The `bin` directory of a venv with python-cinderclient and the `openstack` CLI from PyPI.
pub fn cinder_clients() -> Result<PathBuf> {
    let python = python_with(
        "cinder-clients",
        &["python-cinderclient", "python-openstackclient"],
        "cinderclient, openstackclient",
    )?;
    Ok(python.parent().context("venv bin")?.to_path_buf())
}

/// Runs a client command; returns its stdout, or fails with its stdout and stderr.
pub fn run_client(mut command: Command, what: &str) -> Result<String> {
    let output = command.output().with_context(|| format!("cannot run {what}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("{what} failed ({}):\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok(stdout)
}

/// The value of `| name | value |` in a property table of the `cinder` and `openstack` CLIs.
pub fn cliff_field(table: &str, name: &str) -> Option<String> {
    table.lines().find_map(|line| {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        (cells.len() >= 3 && cells[1] == name).then(|| cells[2].to_owned())
    })
}

/// The repository root, for scripts kept in it.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("integration/ lives in the repo").to_path_buf()
}

/// Polls the snapshot until it reaches `status`; fails on an error status or after [`WAIT`].
pub async fn wait_for_snapshot(
    client: &mut VolumeServiceClient<Channel>,
    context: &CallContext,
    snapshot_id: &str,
    status: SnapshotStatus,
) -> Result<Snapshot> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let snapshot = client
            .get_snapshot(context.request(GetSnapshotRequest { snapshot_id: snapshot_id.into() }))
            .await?
            .into_inner();
        if snapshot.status == status as i32 {
            return Ok(snapshot);
        }
        if snapshot.status == SnapshotStatus::Error as i32 {
            bail!("snapshot {snapshot_id} went to error: {}", snapshot.error_reason);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("snapshot {snapshot_id} is still {:?}, not {status:?}", snapshot.status());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that a call failed with `code` and a message containing `fragment`; returns the message.
pub fn expect_refusal<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    fragment: &str,
) -> String {
    match result {
        Ok(value) => panic!("expected {code:?} ({fragment}), got success: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "wrong code for: {}", status.message());
            assert!(status.message().contains(fragment), "message {:?} lacks {fragment:?}", status.message());
            status.message().to_owned()
        }
    }
}

pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut file =
        std::fs::OpenOptions::new().write(true).open(path).with_context(|| format!("open {}", path.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

pub fn read_at(path: &Path, offset: u64, length: usize) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0; length];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// A reproducible byte pattern, different for each seed.
/// Bytes that do not compress (xorshift), unlike [`pattern`]'s.
pub fn random_bytes(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect()
}

pub fn pattern(seed: u8, length: usize) -> Vec<u8> {
    (0..length).map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// A mesh of real `basalt` processes on the machine's NATS: schedulers and volume nodes that a
/// test can kill (SIGKILL) and restart with the same database and data directories.
pub struct ProcessMesh {
    pub database_url: String,
    nats_url: String,
    pub namespace: String,
    pub schedulers: Vec<Option<BasaltProcess>>,
    /// Where each scheduler listens, kept across restarts.
    scheduler_listen: Vec<String>,
    pub nodes: Vec<Option<BasaltProcess>>,
    pub node_ids: Vec<String>,
    root: tempfile::TempDir,
    /// Each node's own arguments, beside the ones every node gets.
    node_args: Vec<Vec<String>>,
    /// Environment variables every process of the mesh gets.
    env: Vec<(String, String)>,
}

impl ProcessMesh {
    /// `database_url` `None` uses a SQLite file in the mesh's directory.
    pub fn start(
        database_url: Option<String>,
        schedulers: usize,
        nodes: usize,
        extra_node_args: &[&str],
    ) -> Result<Self> {
        Self::start_with_node_args(database_url, schedulers, &vec![extra_node_args; nodes])
    }

    /// A mesh whose node `i` also gets `node_args[i]` (an availability zone, a backup store...).
    pub fn start_with_node_args(
        database_url: Option<String>,
        schedulers: usize,
        node_args: &[&[&str]],
    ) -> Result<Self> {
        Self::start_with_env(database_url, schedulers, node_args, &[])
    }

    /// A mesh whose every process also gets the environment variables `env`.
    pub fn start_with_env(
        database_url: Option<String>,
        schedulers: usize,
        node_args: &[&[&str]],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start_on_bus(NATS_URL, database_url, schedulers, node_args, env)
    }

    /// [`ProcessMesh::start_with_env`] on the NATS server at `nats_url` (a private one the test
    /// may restart).
    pub fn start_on_bus(
        nats_url: &str,
        database_url: Option<String>,
        schedulers: usize,
        node_args: &[&[&str]],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let nodes = node_args.len();
        let root = tempfile::tempdir()?;
        let database_url =
            database_url.unwrap_or_else(|| format!("sqlite://{}?mode=rwc", root.path().join("basalt.db").display()));
        let mut mesh = Self {
            database_url,
            nats_url: nats_url.to_owned(),
            namespace: bus_namespace(),
            schedulers: Vec::new(),
            scheduler_listen: Vec::new(),
            nodes: Vec::new(),
            node_ids: (0..nodes).map(|index| format!("node-{index}")).collect(),
            root,
            node_args: node_args.iter().map(|args| args.iter().map(|arg| (*arg).to_owned()).collect()).collect(),
            env: env.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect(),
        };
        for index in 0..schedulers {
            let scheduler = mesh.spawn_scheduler(index)?;
            mesh.scheduler_listen.push(scheduler.endpoint("grpc").trim_start_matches("https://").to_owned());
            mesh.schedulers.push(Some(scheduler));
        }
        for index in 0..nodes {
            let node = mesh.spawn_node(index)?;
            mesh.nodes.push(Some(node));
        }
        Ok(mesh)
    }

    fn spawn_scheduler(&self, index: usize) -> Result<BasaltProcess> {
        // A restarted scheduler comes back on its address, as a service behind a fixed one does.
        let listen = match self.schedulers.get(index) {
            Some(_) => self.scheduler_listen[index].clone(),
            None => "127.0.0.1:0".to_owned(),
        };
        let instance = format!("scheduler-{index}");
        let key = self.root.path().join("secret.key");
        let tls = pki().args(&Role::Scheduler);
        let mut args = vec![
            "scheduler",
            "--secret-key-file",
            key.to_str().context("utf-8 temp dir")?,
            "--listen",
            &listen,
            "--database-url",
            &self.database_url,
            "--instance",
            &instance,
            "--operation-lease-secs",
            "2",
            "--nats-url",
            &self.nats_url,
            "--bus-namespace",
            &self.namespace,
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        args.extend(tls.iter().map(String::as_str));
        BasaltProcess::spawn(&args, &self.env_pairs(), &["grpc", "metrics"])
    }

    fn env_pairs(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect()
    }

    fn spawn_node(&self, index: usize) -> Result<BasaltProcess> {
        let dir = self.node_dir(index);
        let dir = dir.to_str().context("utf-8 temp dir")?;
        let mut args = vec![
            "volume-node",
            "--node-id",
            &self.node_ids[index],
            "--data-dir",
            dir,
            "--listen",
            "127.0.0.1:0",
            "--nats-url",
            &self.nats_url,
            "--bus-namespace",
            &self.namespace,
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        // A fast heartbeat unless the node's own arguments set one.
        if !self.node_args[index].iter().any(|arg| arg == "--report-interval-ms") {
            args.extend(["--report-interval-ms", "200"]);
        }
        let tls = pki().args(&Role::Node(NodeId::parse(&self.node_ids[index])?));
        args.extend(tls.iter().map(String::as_str));
        args.extend(self.node_args[index].iter().map(String::as_str));
        BasaltProcess::spawn(&args, &self.env_pairs(), &["grpc", "metrics"])
    }

    pub fn node_dir(&self, index: usize) -> PathBuf {
        self.root.path().join(&self.node_ids[index])
    }

    pub fn node_index(&self, node_id: &str) -> usize {
        self.node_ids.iter().position(|id| id == node_id).expect("a node of this mesh")
    }

    /// A `basalt gateway` (noauth) in front of scheduler `index`.
    pub fn spawn_gateway(&self, index: usize) -> Result<BasaltProcess> {
        self.spawn_gateway_on(index, "127.0.0.1:0")
    }

    /// [`ProcessMesh::spawn_gateway`] listening on `listen` (a restart on its old address).
    pub fn spawn_gateway_on(&self, index: usize, listen: &str) -> Result<BasaltProcess> {
        let endpoint = format!("https://{}", self.scheduler_listen[index]);
        let mut args =
            vec!["gateway", "--listen", listen, "--scheduler-endpoint", &endpoint, "--metrics-listen", "127.0.0.1:0"];
        let tls = pki().args(&Role::Gateway);
        args.extend(tls.iter().map(String::as_str));
        BasaltProcess::spawn(&args, &self.env_pairs(), &["rest", "metrics"])
    }

    pub fn scheduler_addr(&self, index: usize) -> String {
        self.schedulers[index].as_ref().expect("scheduler running").endpoint("grpc").to_owned()
    }

    pub fn kill_scheduler(&mut self, index: usize) {
        if let Some(mut process) = self.schedulers[index].take() {
            process.kill();
        }
    }

    pub fn restart_scheduler(&mut self, index: usize) -> Result<()> {
        self.schedulers[index] = Some(self.spawn_scheduler(index)?);
        Ok(())
    }

    pub fn kill_node(&mut self, index: usize) {
        if let Some(mut process) = self.nodes[index].take() {
            process.kill();
        }
    }

    pub fn restart_node(&mut self, index: usize) -> Result<()> {
        self.nodes[index] = Some(self.spawn_node(index)?);
        Ok(())
    }

    /// Waits until the scheduler at `index` sees every node as schedulable.
    pub async fn wait_for_nodes(&self, index: usize) -> Result<()> {
        let client = volume_client(&self.scheduler_addr(index)).await?;
        let expected = self.node_ids.len();
        eventually("the scheduler hears every node", || {
            let mut client = client.clone();
            async move {
                let pools =
                    client.list_pools(admin("ops").request(ListPoolsRequest::default())).await?.into_inner().pools;
                Ok(pools.iter().filter(|pool| pool.schedulable).count() == expected)
            }
        })
        .await
    }

    /// Names of the volume and snapshot files on every node (`volume-<id>`, `snapshot-<id>`, and
    /// anything else left behind).
    pub fn stored_files(&self) -> Result<Vec<String>> {
        let dirs: Vec<PathBuf> = (0..self.node_ids.len()).map(|index| self.node_dir(index)).collect();
        files_in(&dirs)
    }
}

/// The names of the files in `dirs` (a missing folder holds none), sorted.
pub fn files_in(dirs: &[PathBuf]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for dir in dirs.iter().filter(|dir| dir.exists()) {
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// One scrape of a process's Prometheus metrics (its `metrics:` endpoint).
pub struct Scraped(String);

impl Scraped {
    pub async fn from(process: &BasaltProcess) -> Result<Self> {
        let reply = reqwest::get(process.endpoint("metrics")).await?;
        ensure!(reply.status().is_success(), "metrics answered {}", reply.status());
        Ok(Self(reply.text().await?))
    }

    /// The sum of the samples of `name` whose labels include every one of `labels`; 0 when there
    /// is none (a counter not yet moved has no sample).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: Vec<String> = labels.iter().map(|(key, value)| format!("{key}=\"{value}\"")).collect();
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .filter(|(series, _)| {
                let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
                series_name == name && wanted.iter().all(|label| series_labels.contains(label.as_str()))
            })
            .filter_map(|(_, value)| value.parse::<f64>().ok())
            .sum()
    }

    pub fn text(&self) -> &str {
        &self.0
    }
}

/// A private tgtd on a loopback portal and its own control port, stopped when dropped.
pub struct Tgtd {
    child: Child,
    pub portal_port: u16,
    pub control_port: u16,
}

impl Tgtd {
    pub fn start() -> Result<Self> {
        let portal_port = free_port()?;
        // tgtd accepts small control ports only; the portal port (free, so unique now) spreads them.
        let control_port = 1000 + ((std::process::id() as u16).wrapping_add(portal_port) % 9000);
        Self::start_on(portal_port, control_port)
    }

    /// Starts tgtd on the given ports (a restart keeps them).
    pub fn start_on(portal_port: u16, control_port: u16) -> Result<Self> {
        let child = Command::new("tgtd")
            .args(["-f", "-C", &control_port.to_string(), "--iscsi", &format!("portal=127.0.0.1:{portal_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("tgtd is required for the iSCSI tests: install Debian's tgt (./scripts/test does)")?;
        let tgtd = Self { child, portal_port, control_port };
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let ready = Command::new("tgtadm")
                .args(["-C", &control_port.to_string(), "--op", "show", "--mode", "sys"])
                .output()
                .is_ok_and(|output| output.status.success());
            if ready {
                return Ok(tgtd);
            }
            if std::time::Instant::now() > deadline {
                bail!("tgtd did not come up on control port {control_port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn portal(&self) -> String {
        format!("127.0.0.1:{}", self.portal_port)
    }

    /// The flags that make `basalt up` or a node export through this daemon.
    pub fn export_flags(&self) -> Vec<String> {
        [
            "--export-target",
            "tgt",
            "--iscsi-portal",
            &self.portal(),
            "--tgt-control-port",
            &self.control_port.to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// A node's settings for exporting through this daemon.
    pub fn settings(&self) -> basalt_volume_node::TgtSettings {
        basalt_volume_node::TgtSettings {
            control_port: Some(self.control_port),
            portal: self.portal(),
            iqn_prefix: "iqn.2010-10.org.basalt:".into(),
        }
    }

    /// `tgtadm --op show --mode target` of this daemon.
    pub fn show_targets(&self) -> Result<String> {
        let output = Command::new("tgtadm")
            .args(["-C", &self.control_port.to_string(), "--lld", "iscsi", "--op", "show", "--mode", "target"])
            .output()?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        // tgtd ignores SIGTERM while it has targets.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The keys of a JSON object, sorted: a response's shape, to compare with Cinder's.
pub fn sorted_keys(value: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> =
        value.as_object().map(|object| object.keys().map(String::as_str).collect()).unwrap_or_default();
    keys.sort();
    keys
}

/// A REST caller in noauth: `user:project` as its token, calling under the project's URL.
pub struct RestCaller {
    pub base: String,
    pub token: String,
}

impl RestCaller {
    pub fn new(project: &str, user: &str) -> Self {
        Self { base: format!("/v3/{project}"), token: format!("{user}:{project}") }
    }

    /// `method` on `path` under the project's URL at microversion `version`.
    pub async fn call(
        &self,
        api: &RestApi,
        method: axum::http::Method,
        path: &str,
        version: &str,
        body: Option<&str>,
    ) -> Result<RestReply> {
        api.call(method, &format!("{}{path}", self.base), Some(&self.token), Some(version), body).await
    }

    /// Polls `path` until the object under `key` has `status`; returns that object.
    pub async fn wait_for(&self, api: &RestApi, path: &str, key: &str, status: &str) -> Result<serde_json::Value> {
        self.wait_for_at(api, path, "3.0", key, status).await
    }

    /// [`RestCaller::wait_for`] at microversion `version`, for what older ones do not have.
    pub async fn wait_for_at(
        &self,
        api: &RestApi,
        path: &str,
        version: &str,
        key: &str,
        status: &str,
    ) -> Result<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let reply = self.call(api, axum::http::Method::GET, path, version, None).await?;
            if reply.body[key]["status"] == status {
                return Ok(reply.body[key].clone());
            }
            ensure!(tokio::time::Instant::now() < deadline, "{path} never became {status}: {:?}", reply.body);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The REST gateway's router over a mesh, called in-process (no socket) with real HTTP requests.
pub struct RestApi {
    router: axum::Router,
}

pub struct RestReply {
    pub status: axum::http::StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: serde_json::Value,
}

impl RestReply {
    /// Checks the reply is Cinder's fault `name` with `status`, its message saying `fragment` and
    /// short (a message quotes excerpts of what it refuses, never all of it).
    pub fn assert_fault(&self, status: u16, name: &str, fragment: &str) {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        let fault = &self.body[name];
        assert_eq!(fault["code"], status, "fault {name} missing in {:?}", self.body);
        let message = fault["message"].as_str().unwrap_or_default();
        assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
        assert!(message.len() < 400, "the message quotes too much of the input: {} bytes", message.len());
    }
}

impl RestApi {
    pub async fn start(mesh: &InProcessMesh) -> Result<Self> {
        Self::start_with_auth(mesh, basalt_api_gateway::AuthConfig::default()).await
    }

    pub async fn start_with_auth(mesh: &InProcessMesh, auth: basalt_api_gateway::AuthConfig) -> Result<Self> {
        let tls = pki().tls(Role::Gateway);
        let state = basalt_api_gateway::GatewayState::new(&mesh.grpc_addr, &tls, auth, Default::default())?;
        Ok(Self { router: basalt_api_gateway::router(state) })
    }

    /// One request; `version` is the `OpenStack-API-Version` microversion (e.g. `3.44`).
    pub async fn call(
        &self,
        method: axum::http::Method,
        path: &str,
        token: Option<&str>,
        version: Option<&str>,
        body: Option<&str>,
    ) -> Result<RestReply> {
        let mut request = axum::http::Request::builder().method(method).uri(path).header("host", "localhost");
        if let Some(token) = token {
            request = request.header("x-auth-token", token);
        }
        if let Some(version) = version {
            request = request.header("openstack-api-version", format!("volume {version}"));
        }
        let body = body.map(|text| axum::body::Body::from(text.to_owned())).unwrap_or_else(axum::body::Body::empty);
        self.send(request.body(body)?).await
    }

    /// Any request, as it is (headers, body) through the gateway's router.
    pub async fn send(&self, request: axum::http::Request<axum::body::Body>) -> Result<RestReply> {
        use tower::ServiceExt;
        let response = self.router.clone().oneshot(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await?;
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Ok(RestReply { status, headers, body })
    }
}
