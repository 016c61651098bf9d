//! The state every part of the scheduler shares, and the one way to open a write transaction.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use basalt::{ServiceError, bus::Bus, policy::Policy};
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbBackend, TransactionTrait};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, oneshot};

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
    /// SQLite's one writer, shared by transactions that commit together; none on PostgreSQL.
    sqlite_writer: Option<Arc<GroupCommit>>,
}

/// Group commit for SQLite, whose one writer would otherwise make every transaction wait for the
/// disk sync of the one before it. Transactions still run one at a time, each inside a savepoint
/// of a batch transaction; a finished one asks the committer task to commit the batch and waits
/// for it. The batch lock is fair (first come, first served), so writers already waiting when
/// that request comes run before the committer gets the lock: their work joins the batch and one
/// sync makes all of it durable. No writer hears "committed" before that sync (SQLite's own
/// `synchronous=FULL` durability); a transaction that fails rolls back to its savepoint and
/// leaves the others' work in the batch.
struct GroupCommit {
    db: DatabaseConnection,
    batch: Arc<Mutex<Batch>>,
    /// Wakes the committer task.
    commit_wanted: Arc<Notify>,
}

#[derive(Default)]
struct Batch {
    open: Option<DatabaseTransaction>,
    /// The writers whose savepoints this batch holds, told the outcome of its commit.
    committed: Vec<oneshot::Sender<Result<(), String>>>,
}

impl GroupCommit {
    fn start(db: DatabaseConnection) -> Arc<Self> {
        let writer = Arc::new(Self { db, batch: Arc::default(), commit_wanted: Arc::new(Notify::new()) });
        tokio::spawn(committer(Arc::downgrade(&writer), writer.commit_wanted.clone()));
        writer
    }

    async fn begin(self: &Arc<Self>) -> Result<WriteTxn, ServiceError> {
        let mut batch = self.batch.clone().lock_owned().await;
        let savepoint = match batch.open.as_ref() {
            Some(outer) => outer.begin().await,
            None => match self.db.begin().await {
                Ok(outer) => outer.begin().await.inspect(|_| batch.open = Some(outer)),
                Err(error) => Err(error),
            },
        };
        match savepoint {
            Ok(savepoint) => Ok(WriteTxn { txn: Some(savepoint), batch: Some((batch, self.clone())) }),
            Err(error) => {
                self.pass_on(batch);
                Err(db_error(error))
            }
        }
    }

    /// Lets the next writer in, and has the batch committed after whoever is already waiting.
    fn pass_on(&self, batch: OwnedMutexGuard<Batch>) {
        drop(batch);
        self.commit_wanted.notify_one();
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        // Lets the committer task see that the writer is gone, and end.
        self.commit_wanted.notify_one();
    }
}

/// Commits the batch whenever a writer asks, once the writers queued before it are done. Runs in
/// a task of its own, so that a caller that goes away cannot abandon the others' commit half-way.
async fn committer(writer: Weak<GroupCommit>, commit_wanted: Arc<Notify>) {
    loop {
        commit_wanted.notified().await;
        let Some(writer) = writer.upgrade() else { return };
        let mut batch = writer.batch.clone().lock_owned().await;
        let outcome = match batch.open.take() {
            Some(outer) => outer.commit().await.map_err(|error| format!("database error: {error}")),
            None => Ok(()),
        };
        for waiting in batch.committed.drain(..) {
            let _ = waiting.send(outcome.clone());
        }
    }
}

/// A write transaction; commit it, or drop it to roll back.
pub struct WriteTxn {
    txn: Option<DatabaseTransaction>,
    batch: Option<(OwnedMutexGuard<Batch>, Arc<GroupCommit>)>,
}

impl WriteTxn {
    /// Returns once the transaction is durable (on SQLite, with the batch it joined).
    pub async fn commit(mut self) -> Result<(), ServiceError> {
        let txn = self.txn.take().ok_or_else(|| ServiceError::unavailable("transaction already finished"))?;
        let released = txn.commit().await.map_err(db_error);
        let Some((mut batch, writer)) = self.batch.take() else {
            return released;
        };
        if let Err(error) = released {
            // The savepoint could not be released: the batch transaction is in doubt, so it is
            // rolled back and nothing in it is reported committed.
            batch.open = None;
            for waiting in batch.committed.drain(..) {
                let _ = waiting.send(Err("the batch transaction was rolled back".into()));
            }
            writer.pass_on(batch);
            return Err(error);
        }
        let (sender, receiver) = oneshot::channel();
        batch.committed.push(sender);
        writer.pass_on(batch);
        match receiver.await {
            Ok(outcome) => outcome.map_err(ServiceError::unavailable),
            Err(_) => Err(ServiceError::unavailable("the batch transaction was abandoned")),
        }
    }
}

impl Drop for WriteTxn {
    fn drop(&mut self) {
        // Roll back first: the rollback to the savepoint is queued on the connection before
        // anything a later writer or the batch commit sends.
        drop(self.txn.take());
        if let Some((batch, writer)) = self.batch.take() {
            writer.pass_on(batch);
        }
    }
}

impl std::ops::Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &Self::Target {
        self.txn.as_ref().expect("a write transaction is used only until it is committed")
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
        let sqlite_writer = (db.get_database_backend() == DbBackend::Sqlite).then(|| GroupCommit::start(db.clone()));
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
        match &self.sqlite_writer {
            Some(writer) => writer.begin().await,
            None => Ok(WriteTxn { txn: Some(self.db.begin().await.map_err(db_error)?), batch: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

    use super::*;

    async fn database(dir: &tempfile::TempDir) -> (String, DatabaseConnection) {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("batch.db").display());
        let db = crate::db::connect(&url, 4).await.unwrap();
        db.execute_unprepared("CREATE TABLE written (name TEXT NOT NULL)").await.unwrap();
        (url, db)
    }

    async fn write(txn: &WriteTxn, name: &str) {
        let insert = Statement::from_sql_and_values(DbBackend::Sqlite, "INSERT INTO written VALUES (?)", [name.into()]);
        txn.execute_raw(insert).await.unwrap();
    }

    /// The names in the table as a new connection (another pool) reads them: what is durable.
    async fn durable(url: &str) -> Vec<String> {
        let reader = Database::connect(url).await.unwrap();
        let rows = reader
            .query_all_raw(Statement::from_string(DbBackend::Sqlite, "SELECT name FROM written ORDER BY name"))
            .await
            .unwrap();
        rows.iter().map(|row| row.try_get_by_index::<String>(0).unwrap()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_are_all_committed_before_they_hear_so() {
        let dir = tempfile::tempdir().unwrap();
        let (url, db) = database(&dir).await;
        let writer = GroupCommit::start(db);
        let mut tasks = Vec::new();
        for index in 0..32 {
            let writer = writer.clone();
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let txn = writer.begin().await.unwrap();
                let name = format!("writer-{index:02}");
                write(&txn, &name).await;
                txn.commit().await.unwrap();
                // Committed means readable from any connection, at once.
                assert!(durable(&url).await.contains(&name), "{name} was reported committed before it was");
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(durable(&url).await.len(), 32);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_fails_takes_only_its_own_work_out_of_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (url, db) = database(&dir).await;
        let writer = GroupCommit::start(db);

        // The first writer holds the batch while two more queue behind it.
        let first = writer.begin().await.unwrap();
        write(&first, "first").await;
        let failing = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let txn = writer.begin().await.unwrap();
                write(&txn, "failed").await;
                // Dropped without a commit: rolled back.
            })
        };
        let last = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let txn = writer.begin().await.unwrap();
                write(&txn, "last").await;
                txn.commit().await.unwrap();
            })
        };
        first.commit().await.unwrap();
        failing.await.unwrap();
        last.await.unwrap();
        assert_eq!(durable(&url).await, ["first", "last"]);

        // A batch whose only writer failed ends, and the next writer is not held up by it.
        let alone = writer.begin().await.unwrap();
        write(&alone, "rolled back").await;
        drop(alone);
        let after = writer.begin().await.unwrap();
        write(&after, "after").await;
        after.commit().await.unwrap();
        assert_eq!(durable(&url).await, ["after", "first", "last"]);
    }
}
