//! The state every part of the scheduler shares, and the one way to open a write transaction.

use std::{sync::Arc, time::Duration};

use basalt::{ServiceError, bus::Bus, policy::Policy};
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbBackend, TransactionTrait};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{
    capacity::CapacityView, db::db_error, nodes::NodeClients, placement::Weigher, quotas::QuotaDefaults,
    secrets::SecretKeys,
};

/// Tunables of the control plane; the defaults suit production, tests shorten the timers.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    pub quota_defaults: QuotaDefaults,
    /// Weighers and their multipliers, Cinder's `scheduler_default_weighers`.
    pub weighers: Vec<(Weigher, f64)>,
    /// How long an operation's owner holds it without renewing; after that another scheduler (or
    /// this one, restarted) takes it over.
    pub operation_lease: Duration,
    /// How often expired operations are looked for.
    pub reconcile_interval: Duration,
    /// How long a node operation is retried while the node is unreachable before it fails.
    pub node_retry_window: Duration,
    /// Who may do what: Cinder's new defaults, with the operator's `policy.yaml` on top.
    pub policy: Arc<Policy>,
    /// The key CHAP passwords are sealed with in the database.
    pub secrets: Arc<SecretKeys>,
    /// How long a user message is kept (Cinder's `message_ttl`).
    pub message_ttl: Duration,
    /// How often expired user messages are removed; listings hide them meanwhile.
    pub message_reap_interval: Duration,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            quota_defaults: QuotaDefaults::default(),
            weighers: vec![(Weigher::Capacity, 1.0)],
            operation_lease: Duration::from_secs(15),
            reconcile_interval: Duration::from_secs(3),
            node_retry_window: Duration::from_secs(600),
            policy: Policy::defaults(),
            secrets: SecretKeys::ephemeral(),
            message_ttl: Duration::from_secs(30 * 24 * 3600),
            message_reap_interval: Duration::from_secs(600),
        }
    }
}

pub struct Core {
    pub db: DatabaseConnection,
    pub capacity: Arc<CapacityView>,
    pub nodes: NodeClients,
    pub bus: Bus,
    /// This replica's name in the service list.
    pub instance: String,
    /// This process: `<instance>/<boot id>`, the owner of the operations it runs.
    pub owner: String,
    pub config: ControlPlaneConfig,
    /// SQLite allows one writer; taking this first keeps writers from failing with "busy".
    sqlite_writer: Option<Arc<Mutex<()>>>,
}

/// A write transaction; commit it, or drop it to roll back.
pub struct WriteTxn {
    pub txn: DatabaseTransaction,
    _writer: Option<OwnedMutexGuard<()>>,
}

impl WriteTxn {
    pub async fn commit(self) -> Result<(), ServiceError> {
        self.txn.commit().await.map_err(db_error)
    }
}

impl std::ops::Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &Self::Target {
        &self.txn
    }
}

impl Core {
    pub fn new(
        db: DatabaseConnection,
        capacity: Arc<CapacityView>,
        nodes: NodeClients,
        bus: Bus,
        instance: String,
        config: ControlPlaneConfig,
    ) -> Self {
        let sqlite_writer = (db.get_database_backend() == DbBackend::Sqlite).then(|| Arc::new(Mutex::new(())));
        Self {
            db,
            capacity,
            nodes,
            bus,
            owner: format!("{instance}/{}", uuid::Uuid::new_v4().simple()),
            instance,
            config,
            sqlite_writer,
        }
    }

    pub async fn begin_write(&self) -> Result<WriteTxn, ServiceError> {
        let writer = match &self.sqlite_writer {
            Some(lock) => Some(lock.clone().lock_owned().await),
            None => None,
        };
        let txn = self.db.begin().await.map_err(db_error)?;
        Ok(WriteTxn { txn, _writer: writer })
    }
}
