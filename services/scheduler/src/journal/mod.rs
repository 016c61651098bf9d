//! The operation journal, free of any domain. Every side effect on a node is preceded by a
//! committed intent (a row in `operations`, written in the same transaction as the status that
//! announces it) and followed by a completion that removes the row in the same transaction as the
//! outcome. The owner renews a lease while it works; an operation whose lease ran out (its
//! scheduler died) is taken over by the reconciler and re-driven. Node calls are idempotent by
//! UUID, so re-driving is always safe, and the completion is applied exactly once: only the
//! current owner can delete the row.
//!
//! What an operation does is its domain's business: each domain has an operation type that
//! implements [`Journalled`] beside the code that records it (`volumes/operations.rs`, ...), and
//! `operations.rs` decodes a row back into the right one.

mod node;

use std::sync::Arc;

use basalt::{ErrorCode, ServiceError, context::CallContext, ids::OperationId, proto::JournalOperation};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::{Expr, ExprTrait},
};
use serde::Serialize;
use tracing::Instrument;

pub use self::node::{delete_snapshot_on, delete_volume_on, with_node};
use crate::{
    Core,
    db::{db_error, is_connection_lost, operation},
    events::PendingEvent,
    messages::{self, Failure},
    metrics,
};

/// An operation a domain records in the journal: everything needed to re-drive it is in its
/// serialized form (`kind` names the variant), its node work is idempotent, and its completion
/// applies the outcome to the domain's rows.
pub trait Journalled: Serialize + Send + Sync + Sized + 'static {
    /// What the node's work yields to the completion.
    type Output: Send;

    fn kind(&self) -> &'static str;
    /// The resource whose status this operation owns.
    fn resource_id(&self) -> String;
    fn node_id(&self) -> &str;
    /// The node's side: idempotent calls, retried while the node is unreachable.
    fn execute(&self, core: &Core) -> impl Future<Output = Result<Self::Output, ServiceError>> + Send;
    /// What a failure of the node's work tells the resource's project (a user message), if
    /// Cinder has words for it.
    fn failure(&self, error: &ServiceError) -> Option<Failure>;
    /// Applies the outcome inside the completion's transaction; returns the changes to announce.
    fn complete(
        &self,
        txn: &DatabaseTransaction,
        outcome: &Result<Self::Output, ServiceError>,
    ) -> impl Future<Output = Result<Vec<PendingEvent>, ServiceError>> + Send;
    /// An operation that must follow this outcome: recorded in the completion's transaction, so
    /// it runs even if this scheduler dies right after the commit, and never before it.
    fn follow_up(&self, _outcome: &Result<Self::Output, ServiceError>) -> Option<Self> {
        None
    }
}

/// Re-launches a journal row taken over by the reconciler: decodes it into its domain's type.
pub type Relaunch = fn(Arc<Core>, operation::Model) -> Result<(), ServiceError>;

/// Writes the intent of the caller's operation inside `txn`, owned by this scheduler. Launch it
/// after the commit.
pub async fn record(
    txn: &impl ConnectionTrait,
    core: &Core,
    context: &CallContext,
    operation: &impl Journalled,
) -> Result<operation::Model, ServiceError> {
    record_for(txn, core, &context.request_id, operation).await
}

/// [`record`] on behalf of the request `request_id` (a follow-up names its predecessor's).
async fn record_for(
    txn: &impl ConnectionTrait,
    core: &Core,
    request_id: &str,
    operation: &impl Journalled,
) -> Result<operation::Model, ServiceError> {
    let now = Utc::now();
    let payload = serde_json::to_string(operation)
        .map_err(|error| ServiceError::internal(format!("cannot encode an operation: {error}")))?;
    operation::ActiveModel {
        id: Set(OperationId::new_random()),
        kind: Set(operation.kind().into()),
        resource_id: Set(operation.resource_id()),
        payload: Set(payload),
        owner: Set(core.owner.clone()),
        lease_expires_at: Set(now + lease(core)),
        attempt: Set(1),
        created_at: Set(now),
        request_id: Set(request_id.to_owned()),
    }
    .insert(txn)
    .await
    .map_err(db_error)
}

/// Whether an operation on `resource_id` is in flight.
pub async fn in_flight(db: &impl ConnectionTrait, resource_id: &str) -> Result<bool, ServiceError> {
    let count = operation::Entity::find()
        .filter(operation::Column::ResourceId.eq(resource_id))
        .count(db)
        .await
        .map_err(db_error)?;
    Ok(count > 0)
}

/// The most operations one listing returns.
const MAX_LISTED: u64 = 1000;

/// How long an operation waits before it runs again after the database went away under it.
const DATABASE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The operations in flight, oldest first (at most `limit`, 0 for the most), and how many there
/// are in all.
pub async fn list(db: &impl ConnectionTrait, limit: u32) -> Result<(Vec<JournalOperation>, u64), ServiceError> {
    let limit = match u64::from(limit) {
        0 => MAX_LISTED,
        limit => std::cmp::min(limit, MAX_LISTED),
    };
    let total = operation::Entity::find().count(db).await.map_err(db_error)?;
    let rows = operation::Entity::find()
        .order_by_asc(operation::Column::CreatedAt)
        .order_by_asc(operation::Column::Id)
        .limit(limit)
        .all(db)
        .await
        .map_err(db_error)?;
    let operations = rows
        .into_iter()
        .map(|row| JournalOperation {
            id: row.id.to_string(),
            kind: row.kind,
            resource_id: row.resource_id,
            owner: row.owner,
            attempt: u32::try_from(row.attempt).unwrap_or_default(),
            created_at: Some(std::time::SystemTime::from(row.created_at).into()),
            lease_expires_at: Some(std::time::SystemTime::from(row.lease_expires_at).into()),
            request_id: row.request_id,
        })
        .collect();
    Ok((operations, total))
}

fn lease(core: &Core) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(core.config.operation_lease).unwrap_or(chrono::TimeDelta::seconds(15))
}

/// Runs a recorded operation in the background.
pub fn launch<O: Journalled>(core: Arc<Core>, record: operation::Model, operation: O) {
    // A child of the request's span when a request launched it, so its node calls join that trace.
    let span = tracing::info_span!(
        "operation",
        otel.name = operation.kind(),
        operation_id = %record.id,
        resource_id = %operation.resource_id(),
    );
    tokio::spawn(async move { run(core, record, operation).await }.instrument(span));
}

async fn run<O: Journalled>(core: Arc<Core>, record: operation::Model, operation: O) {
    tracing::info!(operation_id = %record.id, kind = operation.kind(), resource_id = %operation.resource_id(), attempt = record.attempt, "operation started");
    let outcome = {
        let renewing = renew_lease(&core, record.id);
        tokio::pin!(renewing);
        // The database going away mid-operation says nothing about the operation: it is run
        // again (every operation can be, as a take-over does) rather than failed for the user.
        let executing = async {
            loop {
                match operation.execute(&core).await {
                    Err(error) if is_connection_lost(&error) => {
                        tracing::warn!(operation_id = %record.id, %error, "the database went away during the operation; running it again");
                        tokio::time::sleep(DATABASE_RETRY_PAUSE).await;
                    }
                    outcome => return outcome,
                }
            }
        };
        tokio::select! {
            outcome = executing => outcome,
            lost = &mut renewing => {
                tracing::warn!(operation_id = %record.id, ?lost, "lost the operation's lease; leaving it to its new owner");
                return;
            }
        }
    };
    if let Err(error) = &outcome {
        tracing::warn!(operation_id = %record.id, kind = operation.kind(), %error, "operation failed");
    }
    if let Err(error) = complete(&core, &record, &operation, outcome).await {
        // The row stays; once its lease runs out the reconciler re-drives it.
        tracing::error!(operation_id = %record.id, %error, "cannot record the operation's outcome; it will be re-driven");
    }
}

/// Renews the lease until it cannot: returns when the row is gone or owned by someone else.
async fn renew_lease(core: &Core, operation_id: OperationId) -> Result<(), ServiceError> {
    let period = core.config.operation_lease / 3;
    loop {
        tokio::time::sleep(period).await;
        let renewed = operation::Entity::update_many()
            .col_expr(operation::Column::LeaseExpiresAt, Expr::value(Utc::now() + lease(core)))
            .filter(operation::Column::Id.eq(operation_id))
            .filter(operation::Column::Owner.eq(core.owner.as_str()))
            .exec(&core.db)
            .await;
        match renewed {
            Ok(result) if result.rows_affected == 1 => {}
            Ok(_) => return Ok(()),
            // A database hiccup: keep working, the next renewal may succeed within the lease.
            Err(error) => tracing::warn!(%operation_id, %error, "cannot renew an operation's lease"),
        }
    }
}

/// Removes the journal row and applies the outcome in one transaction; a no-op when another
/// scheduler took the operation over meanwhile.
async fn complete<O: Journalled>(
    core: &Arc<Core>,
    record: &operation::Model,
    operation: &O,
    outcome: Result<O::Output, ServiceError>,
) -> Result<(), ServiceError> {
    let txn = core.begin_write().await?;
    if !remove_if_owned(&*txn, core, record).await? {
        tracing::info!(operation_id = %record.id, "the operation changed hands before it completed here");
        return Ok(());
    }
    let events = match operation.complete(&txn, &outcome).await {
        Ok(events) => events,
        Err(error) if error.code == ErrorCode::Conflict => {
            // The resource is no longer in the status this operation owns; re-driving would find
            // the same. Close the operation and leave the resource as it is, for an operator.
            drop(txn);
            tracing::error!(operation_id = %record.id, kind = operation.kind(), %error, "the operation's resource moved on; closing the operation without applying its outcome");
            let txn = core.begin_write().await?;
            remove_if_owned(&*txn, core, record).await?;
            txn.commit().await?;
            metrics::operation_completed(operation.kind(), "closed");
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    if let Err(error) = &outcome
        && let Some(failure) = operation.failure(error)
    {
        messages::record(&*txn, core, &record.request_id, failure).await?;
    }
    let follow_up = match operation.follow_up(&outcome) {
        Some(next) => Some((record_for(&*txn, core, &record.request_id, &next).await?, next)),
        None => None,
    };
    txn.commit().await?;
    tracing::info!(operation_id = %record.id, kind = operation.kind(), succeeded = outcome.is_ok(), "operation completed");
    metrics::operation_completed(operation.kind(), if outcome.is_ok() { "succeeded" } else { "failed" });
    core.publish(events).await;
    if let Some((next_record, next)) = follow_up {
        launch(core.clone(), next_record, next);
    }
    Ok(())
}

/// Deletes the journal row if this scheduler still owns it; `false` when it changed hands.
async fn remove_if_owned(
    txn: &impl ConnectionTrait,
    core: &Core,
    record: &operation::Model,
) -> Result<bool, ServiceError> {
    let removed = operation::Entity::delete_many()
        .filter(operation::Column::Id.eq(record.id))
        .filter(operation::Column::Owner.eq(core.owner.as_str()))
        .exec(txn)
        .await
        .map_err(db_error)?;
    Ok(removed.rows_affected == 1)
}

/// Takes over every operation whose lease ran out and re-drives it; returns how many. On SQLite,
/// whose database one scheduler process serves, every operation another process owns was left
/// by an earlier boot (a crash, a restart): it is taken over at once, without waiting for a lease
/// nobody renews.
pub async fn reconcile_once(core: &Arc<Core>, relaunch: Relaunch) -> Result<usize, ServiceError> {
    let now = Utc::now();
    let sole_scheduler = core.db.get_database_backend() == DbBackend::Sqlite;
    let is_abandoned = if sole_scheduler {
        operation::Column::Owner.ne(core.owner.as_str())
    } else {
        operation::Column::LeaseExpiresAt.lt(now)
    };
    let abandoned = operation::Entity::find().filter(is_abandoned.clone()).all(&core.db).await.map_err(db_error)?;
    let mut taken = 0;
    for record in abandoned {
        let claim = operation::Entity::update_many()
            .col_expr(operation::Column::Owner, Expr::value(core.owner.as_str()))
            .col_expr(operation::Column::LeaseExpiresAt, Expr::value(Utc::now() + lease(core)))
            .col_expr(operation::Column::Attempt, Expr::col(operation::Column::Attempt).add(1))
            .filter(operation::Column::Id.eq(record.id))
            .filter(operation::Column::Owner.eq(record.owner.as_str()))
            .filter(is_abandoned.clone());
        let claimed = claim.exec(&core.db).await.map_err(db_error)?;
        if claimed.rows_affected != 1 {
            continue;
        }
        let Some(record) = operation::Entity::find_by_id(record.id).one(&core.db).await.map_err(db_error)? else {
            continue;
        };
        tracing::info!(operation_id = %record.id, kind = %record.kind, previous_owner = %record.owner, attempt = record.attempt, "taking over an interrupted operation");
        metrics::operation_taken_over(&record.kind);
        let operation_id = record.id;
        if let Err(error) = relaunch(core.clone(), record) {
            // Kept for an operator: re-driving what cannot be read would only fail again.
            tracing::error!(%operation_id, %error, "an operation in the journal cannot be decoded; leaving it for an operator");
            continue;
        }
        taken += 1;
    }
    Ok(taken)
}

/// The reconciler loop: re-drives abandoned operations until `stopped` resolves.
pub async fn reconcile(core: Arc<Core>, relaunch: Relaunch, stopped: impl Future<Output = ()>) {
    basalt::server::every(core.config.reconcile_interval, stopped, || async {
        if let Err(error) = reconcile_once(&core, relaunch).await {
            tracing::warn!(%error, "reconciliation pass failed; retrying");
        }
    })
    .await
}
