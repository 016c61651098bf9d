//! `basalt`: every Basalt service from one binary. `basalt up` runs the embedded default (gateway,
//! scheduler and one volume node in one process, SQLite, the file backend); the other commands
//! run one service each, talking gRPC and NATS.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use basalt::{
    bus::Bus,
    ids::NodeId,
    listener::ListenerLimits,
    tls::{CertificateAuthority, MeshTls, Role, TlsFiles},
};
use clap::{Args, Parser, Subcommand};

mod admin;
mod csi_check;
mod storage_check;

#[derive(Parser)]
#[command(name = "basalt", version, about = "Block storage as a service, speaking Cinder v3")]
struct Cli {
    /// Log JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "BASALT_LOG_JSON")]
    log_json: bool,
    /// Export traces over OTLP/gRPC to this collector (`http://host:4317`); none when unset.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run gateway, scheduler and one volume node in one process (SQLite, in-process bus; the file
    /// backend unless --backend says otherwise).
    Up(UpArgs),
    /// Run the scheduler (VolumeService gRPC; owns the database).
    Scheduler(SchedulerArgs),
    /// Run a volume node (NodeAgent gRPC; the file backend).
    VolumeNode(VolumeNodeArgs),
    /// Run the REST gateway (Cinder v3).
    Gateway(GatewayArgs),
    /// Run the CSI plugin (controller, node, or both) on a unix socket, for Kubernetes and other
    /// container orchestrators.
    Csi(CsiArgs),
    /// Make the mesh's certificates in a directory: its CA (when the directory has none) and one
    /// certificate each for the gateway, the scheduler, the CSI plugin and every --node, keeping
    /// those still valid for 30 days. Safe to repeat; run it again to renew.
    Certs(CertsArgs),
    /// Seal every stored secret with the current key (after a key rotation: give the new key as
    /// --secret-key-file and the old one as --previous-secret-key-file). Safe to repeat.
    ResealSecrets(ResealArgs),
    /// Check a storage host before it goes into service: run the backend conformance suite
    /// against its backend, or export a volume to a host and check the bytes it wrote.
    #[command(subcommand)]
    StorageCheck(StorageCheck),
    /// Operators' calls that no Cinder API has: recovering from a volume node that is gone.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
}

#[derive(Subcommand)]
enum StorageCheck {
    /// Run the backend conformance suite (creates and deletes small volumes in the pool).
    Backend(CheckBackendArgs),
    /// Export a new 64 MiB volume to one initiator, wait until the host is done, then check the
    /// volume holds the expected bytes and that removing the export leaves no target behind.
    Export(CheckExportArgs),
    /// Drive this host's CSI plugin as an orchestrator would: create, publish, stage and publish
    /// a volume, write or check bytes through it, and take it down again.
    Csi(csi_check::CsiCheckArgs),
}

#[derive(Args)]
struct CheckBackendArgs {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    pool: PoolArgs,
    /// Only the cases whose name contains this.
    #[arg(long)]
    case: Option<String>,
    /// Record every storage command and its output in this file (JSON lines).
    #[arg(long)]
    record: Option<PathBuf>,
    /// After the suite, check that a deleted volume's bytes are gone from this device (the disk
    /// or filesystem device under the pool): it is read whole.
    #[arg(long)]
    remanence_device: Option<PathBuf>,
}

#[derive(Args)]
struct CheckExportArgs {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    pool: PoolArgs,
    #[command(flatten)]
    export: ExportArgs,
    /// The initiator allowed to log in.
    #[arg(long)]
    initiator: String,
    /// Where to write the export (target, portal, LUN, CHAP credentials) as JSON.
    #[arg(long)]
    connection_file: PathBuf,
    /// Wait until this file exists (the host is done).
    #[arg(long)]
    until: PathBuf,
    /// The bytes the volume must start with afterwards.
    #[arg(long)]
    expect: PathBuf,
    #[arg(long, default_value_t = 600)]
    wait_secs: u64,
    #[arg(long)]
    record: Option<PathBuf>,
}

#[derive(Args)]
struct UpArgs {
    /// Directory for the SQLite database and the volume files.
    #[arg(long, env = "BASALT_DATA_DIR", default_value = "basalt-data")]
    data_dir: PathBuf,
    /// REST (Cinder v3) listen address.
    #[arg(long, env = "BASALT_REST_LISTEN", default_value = "127.0.0.1:8776")]
    rest_listen: SocketAddr,
    /// gRPC (VolumeService) listen address.
    #[arg(long, env = "BASALT_GRPC_LISTEN", default_value = "127.0.0.1:8780")]
    grpc_listen: SocketAddr,
    /// The mesh's CA and certificates (default: <data-dir>/tls), made on first start and renewed
    /// when they near their end. gRPC clients present `csi.pem` with `csi.key`.
    #[arg(long, env = "BASALT_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    #[command(flatten)]
    pool: PoolArgs,
    /// The embedded node's backend: `file` (the default, in <data-dir>/volumes), `lvm` or `nfs`.
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    export: ExportArgs,
    #[command(flatten)]
    backup: BackupArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    secrets: SecretArgs,
    #[command(flatten)]
    listeners: ListenerArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// Bounds on every listener of the process (REST and gRPC).
#[derive(Args)]
struct ListenerArgs {
    /// Open connections per listener at most; further clients wait until one closes. Cut to the
    /// listener's share of the process's descriptor limit, after a reserve for everything else.
    #[arg(long, env = "BASALT_MAX_CONNECTIONS", default_value_t = ListenerLimits::default().max_connections as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Milliseconds for a REST request's head to arrive in full once its first byte has.
    #[arg(long, env = "BASALT_HEADER_TIMEOUT_MS", default_value_t = millis(ListenerLimits::default().header_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_ms: u64,
    /// Milliseconds for a REST request's body to arrive in full.
    #[arg(long, env = "BASALT_BODY_TIMEOUT_MS", default_value_t = millis(ListenerLimits::default().body_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_ms: u64,
    /// Milliseconds a connection may stay open with nothing to do (no request, nothing received).
    #[arg(long, env = "BASALT_IDLE_TIMEOUT_MS", default_value_t = millis(ListenerLimits::default().idle_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_ms: u64,
}

#[derive(Args)]
struct MetricsArgs {
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP: keep it on a private
    /// network); none when unset.
    #[arg(long, env = "BASALT_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Starts the endpoint when one is asked for, and prints where it is.
    async fn start(&self) -> Result<Option<basalt::metrics::RunningMetrics>> {
        let Some(listen) = self.metrics_listen else { return Ok(None) };
        // A scraper or two, never a crowd.
        let limits = ListenerLimits { max_connections: 16, ..ListenerLimits::default() };
        let metrics = basalt::metrics::serve(listen, limits).await?;
        println!("  metrics: http://{}/metrics", metrics.addr);
        Ok(Some(metrics))
    }
}

async fn stop_metrics(metrics: Option<basalt::metrics::RunningMetrics>) {
    if let Some(metrics) = metrics {
        metrics.shutdown().await;
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

impl ListenerArgs {
    /// The limits of each of the process's `listeners`, within its descriptor budget.
    fn limits(&self, listeners: usize) -> ListenerLimits {
        let limits = ListenerLimits {
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
        };
        let descriptors = basalt::listener::raise_descriptor_limit();
        let limits = limits.within_descriptor_budget(descriptors, listeners);
        tracing::info!(descriptors, max_connections = limits.max_connections, "listener limits");
        limits
    }
}

#[derive(Args)]
struct AuthArgs {
    /// How REST callers are authenticated: `noauth` (development only: tokens name their user and
    /// project and are believed) or `keystone` (tokens validated with Keystone). The service
    /// user's password comes from BASALT_KEYSTONE_PASSWORD only, never the command line.
    #[arg(long = "auth", env = "BASALT_AUTH", default_value = "noauth", value_parser = ["noauth", "keystone"])]
    mode: String,
    /// Keystone's URL, e.g. `http://keystone:5000`.
    #[arg(long, env = "BASALT_KEYSTONE_URL", required_if_eq("mode", "keystone"))]
    keystone_url: Option<String>,
    /// The gateway's service user in Keystone.
    #[arg(long, env = "BASALT_KEYSTONE_USER", default_value = "basalt")]
    keystone_user: String,
    /// The service user's project.
    #[arg(long, env = "BASALT_KEYSTONE_PROJECT", default_value = "service")]
    keystone_project: String,
    /// The domain of the service user and its project.
    #[arg(long, env = "BASALT_KEYSTONE_DOMAIN", default_value = "Default")]
    keystone_domain: String,
    /// Seconds a validated token is believed before Keystone is asked again (never past the
    /// token's expiry); 0 asks every time, so a revoked token fails at once.
    #[arg(long, env = "BASALT_TOKEN_CACHE_SECS", default_value_t = 300)]
    token_cache_secs: u64,
    /// Roles one of which an `X-Service-Token` must carry.
    #[arg(
        long = "service-token-role",
        env = "BASALT_SERVICE_TOKEN_ROLES",
        value_delimiter = ',',
        default_value = "service"
    )]
    service_token_roles: Vec<String>,
    /// noauth: users (the `user` of a `user:project` token) who are admins.
    #[arg(long = "admin-user", env = "BASALT_ADMIN_USERS", value_delimiter = ',', default_value = "admin")]
    admin_users: Vec<String>,
    /// noauth: the project of REST calls whose token and URL name none.
    #[arg(long, env = "BASALT_DEFAULT_PROJECT")]
    default_project: Option<String>,
}

impl AuthArgs {
    fn config(&self) -> Result<basalt_api_gateway::AuthConfig> {
        let keystone = match self.keystone_url.as_ref().filter(|_| self.mode == "keystone") {
            None => None,
            Some(url) => Some(basalt_api_gateway::KeystoneConfig {
                url: url.clone(),
                service_user: self.keystone_user.clone(),
                service_password: std::env::var("BASALT_KEYSTONE_PASSWORD")
                    .context("--auth keystone needs the service user's password in BASALT_KEYSTONE_PASSWORD")?,
                service_project: self.keystone_project.clone(),
                service_domain: self.keystone_domain.clone(),
                token_cache_time: Duration::from_secs(self.token_cache_secs),
                service_token_roles: self.service_token_roles.clone(),
            }),
        };
        Ok(basalt_api_gateway::AuthConfig {
            admin_users: self.admin_users.clone(),
            default_project: self.default_project.clone(),
            keystone,
        })
    }

    /// Says loudly that noauth believes every token, and more loudly off loopback.
    fn announce(&self, rest: SocketAddr) {
        if self.mode == "keystone" {
            println!("  auth: keystone ({})", self.keystone_url.as_deref().unwrap_or_default());
            return;
        }
        println!("  auth: NONE (noauth, for development: any caller can act as any project; use --auth keystone)");
        if !rest.ip().is_loopback() {
            println!("  WARNING: unauthenticated REST on {rest}, beyond this host");
            tracing::warn!(%rest, "noauth gateway listening beyond loopback");
        }
    }
}

/// A scheduler's key file when `--secret-key-file` names none (`basalt up` keeps its own in its
/// data directory).
const SCHEDULER_SECRET_KEY: &str = "basalt-secret.key";

/// The key CHAP passwords are sealed with in the database.
#[derive(Args)]
struct SecretArgs {
    /// The key file (base64 of 32 random bytes, owner-only), made when missing. Every scheduler of
    /// a deployment needs the same one; it never goes into the database. Default: basalt up's
    /// `<data-dir>/secret.key`, the scheduler's `basalt-secret.key`.
    #[arg(long, env = "BASALT_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    /// During a rotation: the old key, still accepted for opening what it sealed.
    #[arg(long, env = "BASALT_PREVIOUS_SECRET_KEY_FILE")]
    previous_secret_key_file: Option<PathBuf>,
}

impl SecretArgs {
    fn load(&self, default: &Path) -> Result<std::sync::Arc<basalt_scheduler::secrets::SecretKeys>> {
        let path = self.secret_key_file.as_deref().unwrap_or(default);
        let mut keys = basalt_scheduler::secrets::SecretKeys::from_file(path, true)?;
        if let Some(previous) = &self.previous_secret_key_file {
            keys = keys.with_previous(previous)?;
        }
        Ok(std::sync::Arc::new(keys))
    }
}

/// Who may do what (the scheduler's policy).
#[derive(Args)]
struct PolicyArgs {
    /// A Cinder `policy.yaml` (or JSON) whose rules replace the defaults of the same name.
    #[arg(long, env = "BASALT_POLICY_FILE")]
    policy_file: Option<PathBuf>,
}

impl PolicyArgs {
    fn load(&self) -> Result<std::sync::Arc<basalt::policy::Policy>> {
        let Some(path) = &self.policy_file else { return Ok(basalt::policy::Policy::defaults()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let policy = basalt::policy::Policy::from_file_text(&text).with_context(|| format!("{}", path.display()))?;
        Ok(std::sync::Arc::new(policy))
    }
}

#[derive(Args)]
struct BusArgs {
    /// NATS server for capacity reports and events.
    #[arg(long, env = "BASALT_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Prefix for every subject, so several deployments can share one NATS server (e.g. `site-a`).
    #[arg(long, env = "BASALT_BUS_NAMESPACE", default_value = "")]
    bus_namespace: String,
    /// The NATS user; its password only from BASALT_NATS_PASSWORD (a token only from
    /// BASALT_NATS_TOKEN), never the command line.
    #[arg(long, env = "BASALT_NATS_USER")]
    nats_user: Option<String>,
    /// The CA of the NATS server's certificate: TLS is required when given.
    #[arg(long, env = "BASALT_NATS_TLS_CA")]
    nats_tls_ca: Option<PathBuf>,
    /// A client certificate for NATS servers that verify clients (with --nats-tls-key).
    #[arg(long, env = "BASALT_NATS_TLS_CERT", requires = "nats_tls_key")]
    nats_tls_cert: Option<PathBuf>,
    #[arg(long, env = "BASALT_NATS_TLS_KEY", requires = "nats_tls_cert")]
    nats_tls_key: Option<PathBuf>,
}

impl BusArgs {
    async fn connect(&self) -> Result<Bus> {
        let password = std::env::var("BASALT_NATS_PASSWORD").ok();
        let user = match (&self.nats_user, password) {
            (Some(user), Some(password)) => Some((user.clone(), password)),
            (Some(_), None) => bail!("--nats-user needs the password in BASALT_NATS_PASSWORD"),
            (None, Some(_)) => bail!("BASALT_NATS_PASSWORD is set but --nats-user (BASALT_NATS_USER) is not"),
            (None, None) => None,
        };
        let security = basalt::bus::NatsSecurity {
            user,
            token: std::env::var("BASALT_NATS_TOKEN").ok(),
            tls_ca: self.nats_tls_ca.clone(),
            tls_client: self.nats_tls_cert.clone().zip(self.nats_tls_key.clone()),
        };
        Ok(Bus::connect_nats(&self.nats_url, &self.bus_namespace, &security).await?)
    }
}

#[derive(Args)]
struct ControlArgs {
    /// Seconds an operation's owner holds it without renewing; then another scheduler takes over.
    #[arg(long, env = "BASALT_OPERATION_LEASE_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    operation_lease_secs: u64,
    /// Weighers with multipliers, Cinder's order: e.g. `capacity=1` or `allocated-capacity=-1`.
    #[arg(long = "weigher", env = "BASALT_WEIGHERS", value_delimiter = ',', default_value = "capacity=1")]
    weighers: Vec<String>,
    /// Seconds a user message (why an operation failed) is kept, Cinder's `message_ttl`.
    #[arg(long, env = "BASALT_MESSAGE_TTL_SECS", default_value_t = 30 * 24 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    message_ttl_secs: u64,
}

impl ControlArgs {
    fn into_config(self) -> Result<basalt_scheduler::ControlPlaneConfig> {
        let mut config = basalt_scheduler::ControlPlaneConfig {
            operation_lease: Duration::from_secs(self.operation_lease_secs),
            reconcile_interval: Duration::from_secs(self.operation_lease_secs.div_ceil(5).max(1)),
            message_ttl: Duration::from_secs(self.message_ttl_secs),
            ..Default::default()
        };
        config.weighers = self
            .weighers
            .iter()
            .map(|entry| {
                let (name, multiplier) = entry.split_once('=').unwrap_or((entry.as_str(), "1"));
                let weigher = name.trim().parse().map_err(anyhow::Error::msg)?;
                let multiplier: f64 = multiplier
                    .trim()
                    .parse()
                    .with_context(|| format!("weigher {name}: {multiplier:?} is not a number"))?;
                Ok((weigher, multiplier))
            })
            .collect::<Result<_>>()?;
        Ok(config)
    }
}

/// The mesh's mutual TLS for one service: its certificate and key, and the CA every peer's
/// certificate must come from (`basalt certs` makes them).
#[derive(Args)]
pub struct MeshTlsArgs {
    /// The mesh CA's certificate (PEM).
    #[arg(long, env = "BASALT_TLS_CA")]
    tls_ca: PathBuf,
    /// This service's certificate (PEM), issued by the mesh CA for its role.
    #[arg(long, env = "BASALT_TLS_CERT")]
    tls_cert: PathBuf,
    /// This service's private key (PEM); keep it owner-only.
    #[arg(long, env = "BASALT_TLS_KEY")]
    tls_key: PathBuf,
}

impl MeshTlsArgs {
    pub fn load(&self, role: Role) -> Result<MeshTls> {
        let files = TlsFiles { ca: self.tls_ca.clone(), cert: self.tls_cert.clone(), key: self.tls_key.clone() };
        Ok(MeshTls::load(&files, role)?)
    }
}

#[derive(Args)]
struct CertsArgs {
    /// Where the CA and the certificates are (made when missing).
    #[arg(long, env = "BASALT_TLS_DIR")]
    dir: PathBuf,
    /// A volume node's id to issue a certificate for; repeat or separate with commas.
    #[arg(long = "node", value_delimiter = ',')]
    nodes: Vec<String>,
}

fn certs(args: CertsArgs) -> Result<()> {
    let authority = CertificateAuthority::open_or_create(&args.dir)?;
    let nodes = args.nodes.iter().map(|node| Ok(Role::Node(NodeId::parse(node)?))).collect::<Result<Vec<_>>>()?;
    println!("ca: {}", args.dir.join("ca.pem").display());
    for role in [Role::Gateway, Role::Scheduler, Role::Csi].into_iter().chain(nodes) {
        let files = authority.ensure(&args.dir, &role)?;
        println!("{}: {} {}", role.file_stem(), files.cert.display(), files.key.display());
    }
    Ok(())
}

#[derive(Args)]
struct ResealArgs {
    /// The scheduler's database.
    #[arg(long, env = "BASALT_DATABASE_URL")]
    database_url: String,
    #[command(flatten)]
    secrets: SecretArgs,
}

async fn reseal_secrets(args: ResealArgs) -> Result<()> {
    let keys = args.secrets.load(Path::new(SCHEDULER_SECRET_KEY))?;
    let db = basalt_scheduler::db::connect(&args.database_url, 1).await?;
    let changed = basalt_scheduler::secrets::reseal(&db, &keys).await?;
    println!("resealed: {changed}");
    Ok(())
}

#[derive(Args)]
struct SchedulerArgs {
    /// `sqlite://path?mode=rwc` or `postgres://user@host/db`.
    #[arg(long, env = "BASALT_DATABASE_URL", default_value = "sqlite://basalt.db?mode=rwc")]
    database_url: String,
    /// The most connections kept to the database (PostgreSQL: size it with the server's
    /// `max_connections` shared among the replicas).
    #[arg(long, env = "BASALT_DATABASE_POOL_SIZE", default_value_t = basalt_scheduler::db::DEFAULT_POOL_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    database_pool_size: u32,
    #[arg(long, env = "BASALT_GRPC_LISTEN", default_value = "127.0.0.1:8780")]
    listen: SocketAddr,
    /// This replica's name in the service list (default: the host name).
    #[arg(long, env = "BASALT_INSTANCE")]
    instance: Option<String>,
    #[command(flatten)]
    control: ControlArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    secrets: SecretArgs,
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    tls: MeshTlsArgs,
    #[command(flatten)]
    listeners: ListenerArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Args)]
struct PoolArgs {
    /// The file pool's over-subscription ratio (Cinder's max_over_subscription_ratio).
    #[arg(long, env = "BASALT_MAX_OVER_SUBSCRIPTION_RATIO", default_value_t = 1.0)]
    max_over_subscription_ratio: f64,
    /// Percent of the pool never handed out (Cinder's reserved_percentage).
    #[arg(long, env = "BASALT_RESERVED_PERCENTAGE", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    reserved_percentage: u32,
    /// Caps the file pool below its filesystem's size, in GiB.
    #[arg(long, env = "BASALT_MAX_CAPACITY_GIB")]
    max_capacity_gib: Option<u64>,
    /// Milliseconds between capacity reports (the node's heartbeat).
    #[arg(long, env = "BASALT_REPORT_INTERVAL_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    report_interval_ms: u64,
}

#[derive(Args)]
struct BackupArgs {
    /// The backup store: a directory shared by every node that takes backups (an NFS mount in
    /// production). `basalt up` defaults to <data-dir>/backups; a node without a store takes none.
    #[arg(long, env = "BASALT_BACKUP_STORE_DIR", conflicts_with = "backup_s3_bucket")]
    backup_store_dir: Option<PathBuf>,
    /// Keep backups in this bucket of an S3-compatible store instead (credentials from
    /// BASALT_BACKUP_S3_ACCESS_KEY_ID and BASALT_BACKUP_S3_SECRET_ACCESS_KEY).
    #[arg(long, env = "BASALT_BACKUP_S3_BUCKET")]
    backup_s3_bucket: Option<String>,
    /// The S3 endpoint, e.g. https://s3.example.net or http://127.0.0.1:9000.
    #[arg(long, env = "BASALT_BACKUP_S3_ENDPOINT", requires = "backup_s3_bucket")]
    backup_s3_endpoint: Option<String>,
    #[arg(long, env = "BASALT_BACKUP_S3_REGION", default_value = "us-east-1")]
    backup_s3_region: String,
}

impl BackupArgs {
    /// The store settings; `default_dir` when neither a directory nor a bucket is given.
    fn settings(&self, default_dir: Option<PathBuf>) -> Result<Option<basalt_volume_node::BackupStoreSettings>> {
        use basalt_volume_node::BackupStoreSettings;
        if let Some(bucket) = &self.backup_s3_bucket {
            let secret = |name: &str| {
                std::env::var(name).with_context(|| format!("--backup-s3-bucket needs {name} in the environment"))
            };
            return Ok(Some(BackupStoreSettings::S3(basalt_volume_node::backup::s3::S3Settings {
                endpoint: self.backup_s3_endpoint.clone().context("--backup-s3-bucket needs --backup-s3-endpoint")?,
                bucket: bucket.clone(),
                region: self.backup_s3_region.clone(),
                access_key_id: secret("BASALT_BACKUP_S3_ACCESS_KEY_ID")?,
                secret_access_key: secret("BASALT_BACKUP_S3_SECRET_ACCESS_KEY")?,
            })));
        }
        Ok(self.backup_store_dir.clone().or(default_dir).map(BackupStoreSettings::Posix))
    }
}

#[derive(Args)]
struct BackendArgs {
    /// Where volumes live: `file` (sparse files in --data-dir), `lvm` (a volume group, thick, or
    /// thin with --lvm-thin-pool) or `nfs` (sparse files on NFS shares the node mounts).
    #[arg(long, env = "BASALT_BACKEND", default_value = "file", value_parser = ["file", "lvm", "nfs"])]
    backend: String,
    /// The LVM volume group holding volumes (the pool's name too).
    #[arg(long, env = "BASALT_LVM_VOLUME_GROUP")]
    lvm_volume_group: Option<String>,
    /// A thin pool LV in the volume group: volumes are thin LVs in it.
    #[arg(long, env = "BASALT_LVM_THIN_POOL")]
    lvm_thin_pool: Option<String>,
    /// An NFS share `host:/export`, one pool each; repeat or separate with commas.
    #[arg(long = "nfs-share", env = "BASALT_NFS_SHARES", value_delimiter = ',')]
    nfs_shares: Vec<String>,
    /// Mount options for the shares, e.g. `vers=4.2`.
    #[arg(long, env = "BASALT_NFS_MOUNT_OPTIONS", default_value = "")]
    nfs_mount_options: String,
    /// Where the node mounts its shares.
    #[arg(long, env = "BASALT_NFS_MOUNT_BASE", default_value = "/var/lib/basalt/mnt")]
    nfs_mount_base: PathBuf,
    /// What a delete does to a volume's bytes first (Cinder's volume_clear): `zero` overwrites
    /// them (files: every data extent; thick LVM: the whole LV); `none` only frees the space, for
    /// media that guarantee no old byte is readable (self-encrypting drives, zeroing discard).
    #[arg(long, env = "BASALT_VOLUME_CLEAR", default_value = "zero")]
    volume_clear: basalt_volume_node::VolumeClear,
}

impl BackendArgs {
    /// The backend's settings; `file_root` is the file backend's directory.
    fn settings(&self, file_root: &std::path::Path, pool: &PoolArgs) -> Result<basalt_volume_node::BackendSettings> {
        use basalt_volume_node::BackendSettings;
        Ok(match self.backend.as_str() {
            "lvm" => {
                let volume_group =
                    self.lvm_volume_group.clone().context("--backend lvm needs --lvm-volume-group <name>")?;
                BackendSettings::Lvm { pool: volume_group.clone(), volume_group, thin_pool: self.lvm_thin_pool.clone() }
            }
            "nfs" => BackendSettings::Nfs {
                shares: self
                    .nfs_shares
                    .iter()
                    .map(|share| basalt_volume_node::NfsShare::parse(share, &self.nfs_mount_options))
                    .collect::<Result<_, _>>()?,
                mount_base: self.nfs_mount_base.clone(),
            },
            _ => BackendSettings::File {
                root: file_root.to_path_buf(),
                pool: "default".into(),
                max_capacity_bytes: pool.max_capacity_gib.map(|gib| gib << 30),
            },
        })
    }
}

#[derive(Args)]
struct VolumeNodeArgs {
    /// This node's id (default: the host name); letters, digits, '.', '_' and '-'.
    #[arg(long, env = "BASALT_NODE_ID")]
    node_id: Option<String>,
    /// Directory of the file backend's pool.
    #[arg(long, env = "BASALT_DATA_DIR", default_value = "basalt-data/volumes")]
    data_dir: PathBuf,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    backup: BackupArgs,
    #[arg(long, env = "BASALT_NODE_LISTEN", default_value = "127.0.0.1:8781")]
    listen: SocketAddr,
    /// The endpoint the scheduler calls, when it differs from the listen address (e.g. behind NAT).
    #[arg(long, env = "BASALT_NODE_ADVERTISE")]
    advertise: Option<String>,
    #[arg(long, env = "BASALT_AVAILABILITY_ZONE", default_value = "nova")]
    availability_zone: String,
    #[command(flatten)]
    pool: PoolArgs,
    #[command(flatten)]
    export: ExportArgs,
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    tls: MeshTlsArgs,
    #[command(flatten)]
    listeners: ListenerArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Args)]
struct ExportArgs {
    /// How volumes are exported to hosts: `tgt` (iSCSI through tgtd), `lio` (the kernel's iSCSI
    /// target through targetcli) or `none` (local attach only).
    #[arg(long, env = "BASALT_EXPORT_TARGET", default_value = "none", value_parser = ["tgt", "lio", "none"])]
    export_target: String,
    /// tgtd's control port (`tgtd -C N`); omit for the default daemon.
    #[arg(long, env = "BASALT_TGT_CONTROL_PORT")]
    tgt_control_port: Option<u16>,
    /// The iSCSI portal hosts connect to, `ip:port` (required with --export-target tgt or lio).
    #[arg(long = "iscsi-portal", alias = "tgt-portal", env = "BASALT_ISCSI_PORTAL")]
    iscsi_portal: Option<String>,
    /// Prefix of target names, Cinder's `target_prefix`.
    #[arg(long, env = "BASALT_IQN_PREFIX", default_value = "iqn.2010-10.org.basalt:")]
    iqn_prefix: String,
    /// Where the node keeps its own state (export records); default beside the data directory.
    #[arg(long, env = "BASALT_NODE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The longest every write through the target may be held still while a group snapshot (or a
    /// group clone) of in-use volumes is cut; a set that takes longer fails and is discarded.
    #[arg(long, env = "BASALT_FREEZE_LIMIT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    freeze_limit_secs: u64,
}

impl ExportArgs {
    fn apply(&self, config: &mut basalt_volume_node::NodeConfig) -> Result<()> {
        if let Some(state_dir) = &self.state_dir {
            config.state_dir = state_dir.clone();
        }
        config.freeze_limit = Duration::from_secs(self.freeze_limit_secs);
        config.export = self.settings()?;
        Ok(())
    }

    fn settings(&self) -> Result<basalt_volume_node::ExportSettings> {
        use basalt_volume_node::{ExportSettings, LioSettings, TgtSettings};
        if self.export_target == "none" {
            return Ok(ExportSettings::None);
        }
        let portal = self.iscsi_portal.clone().with_context(|| {
            format!(
                "--export-target {} needs --iscsi-portal <ip:port>, the address hosts log in to",
                self.export_target
            )
        })?;
        let iqn_prefix = self.iqn_prefix.clone();
        Ok(match self.export_target.as_str() {
            "lio" => {
                ExportSettings::Lio(LioSettings { portal, iqn_prefix, configfs: "/sys/kernel/config/target".into() })
            }
            _ => ExportSettings::Tgt(TgtSettings { control_port: self.tgt_control_port, portal, iqn_prefix }),
        })
    }
}

#[derive(Args)]
struct GatewayArgs {
    #[arg(long, env = "BASALT_REST_LISTEN", default_value = "127.0.0.1:8776")]
    listen: SocketAddr,
    /// The scheduler's VolumeService endpoint.
    #[arg(long, env = "BASALT_SCHEDULER_ENDPOINT", default_value = "https://127.0.0.1:8780")]
    scheduler_endpoint: String,
    #[command(flatten)]
    tls: MeshTlsArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    listeners: ListenerArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Args)]
struct CsiArgs {
    /// `controller` (one per cluster), `node` (one per host that mounts volumes) or `all`.
    #[arg(long, env = "BASALT_CSI_MODE", default_value = "all")]
    mode: basalt_csi_plugin::Mode,
    /// The socket the orchestrator calls, as CSI deployments pass it.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// The scheduler's VolumeService endpoint.
    #[arg(long, env = "BASALT_SCHEDULER_ENDPOINT", default_value = "https://127.0.0.1:8780")]
    scheduler_endpoint: String,
    #[command(flatten)]
    tls: MeshTlsArgs,
    /// The Basalt project volumes are provisioned in (32 hex digits or a UUID).
    #[arg(long, env = "BASALT_CSI_PROJECT_ID")]
    project_id: String,
    /// This host's name (node mode): the Kubernetes node name, which is also the volume node's
    /// id on a host that stores volumes, so its own volumes attach locally.
    #[arg(long, env = "BASALT_CSI_NODE_ID")]
    node_id: Option<String>,
    /// The host's availability zone (node mode).
    #[arg(long, env = "BASALT_AVAILABILITY_ZONE", default_value = "nova")]
    availability_zone: String,
    /// The host's iSCSI initiator name; default: the one in /etc/iscsi/initiatorname.iscsi.
    #[arg(long, env = "BASALT_ISCSI_INITIATOR")]
    iscsi_initiator: Option<String>,
    /// Where the node keeps its staging records.
    #[arg(long, env = "BASALT_CSI_STATE_DIR", default_value = "/var/lib/basalt/csi")]
    state_dir: PathBuf,
    /// Volumes this host may hold at once (0: no limit).
    #[arg(long, env = "BASALT_CSI_MAX_VOLUMES", default_value_t = 0)]
    max_volumes: i64,
    /// Seconds CreateVolume and expansions wait for the volume before answering ABORTED.
    #[arg(long, env = "BASALT_CSI_READY_WAIT_SECS", default_value_t = 60)]
    ready_wait_secs: u64,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// The initiator name open-iscsi generated for this host, if it has one.
fn host_initiator() -> Option<String> {
    let text = std::fs::read_to_string("/etc/iscsi/initiatorname.iscsi").ok()?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("InitiatorName="))
        .map(|name| name.trim().to_owned())
        .find(|name| basalt_csi_plugin::node_ref::is_initiator_name(name))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let service = match &cli.command {
        Command::Up(_) => "basalt",
        Command::Scheduler(_) => "basalt-scheduler",
        Command::VolumeNode(_) => "basalt-volume-node",
        Command::Gateway(_) => "basalt-gateway",
        Command::Csi(_) => "basalt-csi",
        _ => "basalt-cli",
    };
    let telemetry = basalt::telemetry::init(cli.log_json, service, cli.otlp_endpoint.as_deref());
    let outcome = run(cli.command).await;
    telemetry.shutdown();
    outcome
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Up(args) => up(args).await,
        Command::Scheduler(args) => scheduler(args).await,
        Command::VolumeNode(args) => volume_node(args).await,
        Command::Gateway(args) => gateway(args).await,
        Command::Csi(args) => csi(args).await,
        Command::Certs(args) => certs(args),
        Command::ResealSecrets(args) => reseal_secrets(args).await,
        Command::StorageCheck(StorageCheck::Backend(args)) => storage_check::backend(args).await,
        Command::StorageCheck(StorageCheck::Export(args)) => storage_check::export(args).await,
        Command::StorageCheck(StorageCheck::Csi(args)) => csi_check::run(args).await,
        Command::Admin(command) => admin::run(command).await,
    }
}

async fn up(args: UpArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let bus = Bus::local();
    let database_url = format!("sqlite://{}?mode=rwc", data_dir.join("basalt.db").display());
    let node_id = pinned_node_id(&data_dir)?;
    let tls_dir = args.tls_dir.clone().unwrap_or_else(|| data_dir.join("tls"));
    let authority = CertificateAuthority::open_or_create(&tls_dir)?;
    let mesh_tls = |role: Role| authority.ensure_loaded(&tls_dir, role);
    // The certificate gRPC clients of this process present; issued here so they find it.
    authority.ensure(&tls_dir, &Role::Csi)?;
    // Three listeners share the process: REST, VolumeService and NodeAgent.
    let limits = args.listeners.limits(3);
    let scheduler = basalt_scheduler::start(
        basalt_scheduler::SchedulerConfig {
            database_url,
            database_pool_size: basalt_scheduler::db::DEFAULT_POOL_SIZE,
            listen: args.grpc_listen,
            instance: host_name(),
            initial_report_wait: Duration::from_millis(500),
            control: basalt_scheduler::ControlPlaneConfig {
                policy: args.policy.load()?,
                secrets: args.secrets.load(&data_dir.join("secret.key"))?,
                ..Default::default()
            },
            limits,
            tls: mesh_tls(Role::Scheduler)?,
        },
        bus.clone(),
    )
    .await?;
    let node_tls = mesh_tls(Role::Node(node_id.clone()))?;
    let reporting_node = node_id.to_string();
    let mut node_config = node_config(node_id, node_tls, &args.pool, None, None, "nova".into());
    node_config.backend = args.backend.settings(&data_dir.join("volumes"), &args.pool)?;
    node_config.volume_clear = args.backend.volume_clear;
    node_config.state_dir = data_dir.join("node-state");
    node_config.backup_store = args.backup.settings(Some(data_dir.join("backups")))?;
    node_config.limits = limits;
    args.export.apply(&mut node_config)?;
    let node = basalt_volume_node::start(node_config, bus).await?;
    // "Up" means a volume can be made: the node's first capacity report has been heard.
    if !scheduler.wait_for_node(&reporting_node, Duration::from_secs(10)).await {
        tracing::warn!(node = %reporting_node, "the volume node has not reported its capacity yet; volumes wait for it");
    }
    let gateway = basalt_api_gateway::start(basalt_api_gateway::GatewayConfig {
        listen: args.rest_listen,
        scheduler_endpoint: format!("https://{}", scheduler.grpc_addr),
        tls: mesh_tls(Role::Gateway)?,
        auth: args.auth.config()?,
        limits,
    })
    .await?;

    println!("Basalt is up: gateway, scheduler and one volume node in this process.");
    println!("  rest: http://{}/v3", gateway.rest_addr);
    println!("  grpc: https://{}", scheduler.grpc_addr);
    println!(
        "  tls: {} (mutual TLS on gRPC: clients trust ca.pem, present csi.pem with csi.key, and expect the name {})",
        tls_dir.display(),
        Role::Scheduler.dns_name()
    );
    args.auth.announce(gateway.rest_addr);
    println!("  data: {}", data_dir.display());
    let metrics = args.metrics.start().await?;
    println!("Press Ctrl-C to stop.");

    wait_for_shutdown_signal().await;
    stop_metrics(metrics).await;
    gateway.shutdown().await;
    node.shutdown().await;
    scheduler.shutdown().await;
    println!("Basalt stopped.");
    Ok(())
}

async fn scheduler(args: SchedulerArgs) -> Result<()> {
    // Local files first: a wrong certificate is reported before any peer is contacted.
    let tls = args.tls.load(Role::Scheduler)?;
    let bus = args.bus.connect().await?;
    let scheduler = basalt_scheduler::start(
        basalt_scheduler::SchedulerConfig {
            database_url: args.database_url,
            database_pool_size: args.database_pool_size,
            listen: args.listen,
            instance: args.instance.unwrap_or_else(host_name),
            initial_report_wait: Duration::from_secs(2),
            control: basalt_scheduler::ControlPlaneConfig {
                policy: args.policy.load()?,
                // Every scheduler of a deployment opens what any of them sealed, across restarts.
                secrets: args.secrets.load(Path::new(SCHEDULER_SECRET_KEY))?,
                ..args.control.into_config()?
            },
            limits: args.listeners.limits(1),
            tls,
        },
        bus,
    )
    .await?;
    println!("basalt scheduler");
    println!("  grpc: https://{}", scheduler.grpc_addr);
    let metrics = args.metrics.start().await?;
    wait_for_shutdown_signal().await;
    stop_metrics(metrics).await;
    scheduler.shutdown().await;
    Ok(())
}

async fn volume_node(args: VolumeNodeArgs) -> Result<()> {
    let node_id = NodeId::parse(&args.node_id.unwrap_or_else(host_name))?;
    // Local files first: a wrong certificate is reported before any peer is contacted.
    let tls = args.tls.load(Role::Node(node_id.clone()))?;
    let bus = args.bus.connect().await?;
    let mut config = node_config(node_id, tls, &args.pool, Some(args.listen), args.advertise, args.availability_zone);
    config.backend = args.backend.settings(&args.data_dir, &args.pool)?;
    config.volume_clear = args.backend.volume_clear;
    if let basalt_volume_node::BackendSettings::File { root, .. } = &config.backend
        && let Some(parent) = root.parent()
    {
        config.state_dir = parent.join("node-state");
    }
    config.backup_store = args.backup.settings(None)?;
    config.limits = args.listeners.limits(1);
    args.export.apply(&mut config)?;
    let node = basalt_volume_node::start(config, bus).await?;
    println!("basalt volume-node");
    println!("  grpc: https://{}", node.grpc_addr);
    let metrics = args.metrics.start().await?;
    wait_for_shutdown_signal().await;
    stop_metrics(metrics).await;
    node.shutdown().await;
    Ok(())
}

async fn gateway(args: GatewayArgs) -> Result<()> {
    let gateway = basalt_api_gateway::start(basalt_api_gateway::GatewayConfig {
        listen: args.listen,
        scheduler_endpoint: args.scheduler_endpoint,
        tls: args.tls.load(Role::Gateway)?,
        auth: args.auth.config()?,
        limits: args.listeners.limits(1),
    })
    .await?;
    println!("basalt gateway");
    println!("  rest: http://{}/v3", gateway.rest_addr);
    args.auth.announce(gateway.rest_addr);
    let metrics = args.metrics.start().await?;
    wait_for_shutdown_signal().await;
    stop_metrics(metrics).await;
    gateway.shutdown().await;
    Ok(())
}

async fn csi(args: CsiArgs) -> Result<()> {
    let node = match args.mode {
        basalt_csi_plugin::Mode::Controller => None,
        _ => Some(basalt_csi_plugin::NodeSettings {
            node_id: args.node_id.clone().unwrap_or_else(host_name),
            availability_zone: args.availability_zone.clone(),
            initiator: args.iscsi_initiator.clone().or_else(host_initiator),
            state_dir: args.state_dir.clone(),
            max_volumes: args.max_volumes,
        }),
    };
    let csi = basalt_csi_plugin::start(basalt_csi_plugin::CsiConfig {
        mode: args.mode,
        endpoint: args.endpoint,
        scheduler_endpoint: args.scheduler_endpoint,
        tls: args.tls.load(Role::Csi)?,
        project_id: basalt::ids::ProjectId::parse(&args.project_id)?,
        ready_wait: Duration::from_secs(args.ready_wait_secs),
        node,
    })
    .await?;
    println!("basalt csi");
    println!("  socket: {}", csi.socket.display());
    let metrics = args.metrics.start().await?;
    wait_for_shutdown_signal().await;
    stop_metrics(metrics).await;
    csi.shutdown().await;
    Ok(())
}

fn node_config(
    node_id: NodeId,
    tls: MeshTls,
    pool: &PoolArgs,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    availability_zone: String,
) -> basalt_volume_node::NodeConfig {
    let mut config = basalt_volume_node::NodeConfig::new(node_id, PathBuf::from("basalt-data/volumes"), tls);
    if let Some(listen) = listen {
        config.listen = listen;
    }
    config.advertise = advertise;
    config.availability_zone = availability_zone;
    config.max_over_subscription_ratio = pool.max_over_subscription_ratio;
    config.reserved_percentage = pool.reserved_percentage;
    config.report_interval = Duration::from_millis(pool.report_interval_ms);
    config
}

/// The embedded node's id, chosen once (the host name) and kept in the data directory: volumes are
/// placed by node id, so renaming the host must not orphan them.
fn pinned_node_id(data_dir: &std::path::Path) -> Result<NodeId> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(NodeId::parse(text.trim())?),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let node_id = NodeId::parse(&host_name())?;
            std::fs::write(&path, format!("{node_id}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(node_id)
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String =
        name.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).take(64).collect();
    if name.is_empty() { "localhost".into() } else { name }
}

/// Ctrl-C or SIGTERM.
async fn wait_for_shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
