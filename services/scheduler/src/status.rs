//! The one way a row moves through its status machine (the tables in `lifecycle.rs`): load it for a
//! caller, check that an action may start, start it by compare-and-set inside the caller's
//! transaction, finish it, remove the row, or reset it as an admin. Volumes, snapshots, backups
//! and attachments implement [`Stateful`]; every domain uses these functions for its own rows and
//! for the rows of others it touches (a volume delete cascading to its snapshots), so no domain
//! imports another.

use std::{fmt::Display, str::FromStr};

use basalt::{ServiceError, context::CallContext, ids::ProjectId};
use chrono::Utc;
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, UpdateMany, Value, sea_query::Expr};

use crate::{db::db_error, events::PendingEvent, lifecycle::Transition};

/// A row with a status machine.
pub trait Stateful: Clone + Send + Sync + Sized + 'static {
    type Entity: EntityTrait<Model = Self>;
    type Id: Copy + Display + FromStr<Err = ServiceError> + Into<Value> + Send + Sync;
    type Status: Copy + PartialEq + std::fmt::Debug + Into<Value> + Send + Sync + 'static;
    type Action: Copy + std::fmt::Debug;
    /// How messages and events name the resource: `volume`, `snapshot`, ...
    const KIND: &'static str;

    fn rule(action: Self::Action) -> &'static Transition<Self::Status>;
    fn status_name(status: Self::Status) -> &'static str;
    fn id(&self) -> Self::Id;
    fn project_id(&self) -> &ProjectId;
    fn status(&self) -> Self::Status;
    fn id_column() -> <Self::Entity as EntityTrait>::Column;
    fn status_column() -> <Self::Entity as EntityTrait>::Column;
    /// The column that says why the row is in an error status, if the row has one.
    fn reason_column() -> Option<<Self::Entity as EntityTrait>::Column>;
    fn updated_at_column() -> Option<<Self::Entity as EntityTrait>::Column>;

    /// Other columns that change with the status (a snapshot's progress is 100 once available).
    fn with_status(update: UpdateMany<Self::Entity>, _to: Self::Status) -> UpdateMany<Self::Entity> {
        update
    }

    /// What goes with the row when it is removed: the quota and capacity it held.
    fn release(&self, txn: &impl ConnectionTrait) -> impl Future<Output = Result<(), ServiceError>> + Send;
}

/// Implements [`Stateful`] for the rows of table module `db::$table`, which have `id`,
/// `project_id` and `status` fields and columns; the items after the header complete the impl
/// (`release`, and `with_status` where the row needs it).
macro_rules! stateful {
    (
        $table:ident: kind $kind:expr, id $id:ty, status $status:ty, action $action:ty, rule $rule:path,
        reason $reason:expr, updated_at $updated:expr;
        $($items:tt)*
    ) => {
        impl $crate::status::Stateful for $crate::db::$table::Model {
            type Entity = $crate::db::$table::Entity;
            type Id = $id;
            type Status = $status;
            type Action = $action;
            const KIND: &'static str = $kind;

            fn rule(action: $action) -> &'static $crate::lifecycle::Transition<$status> {
                $rule(action)
            }

            fn status_name(status: $status) -> &'static str {
                status.cinder_name()
            }

            fn id(&self) -> $id {
                self.id
            }

            fn project_id(&self) -> &basalt::ids::ProjectId {
                &self.project_id
            }

            fn status(&self) -> $status {
                self.status
            }

            fn id_column() -> $crate::db::$table::Column {
                $crate::db::$table::Column::Id
            }

            fn status_column() -> $crate::db::$table::Column {
                $crate::db::$table::Column::Status
            }

            fn reason_column() -> Option<$crate::db::$table::Column> {
                $reason
            }

            fn updated_at_column() -> Option<$crate::db::$table::Column> {
                $updated
            }

            $($items)*
        }
    };
}
pub(crate) use stateful;

/// `available, error` for messages.
pub fn names<R: Stateful>(statuses: &[R::Status]) -> String {
    statuses.iter().map(|status| R::status_name(*status)).collect::<Vec<_>>().join(", ")
}

pub fn not_found<R: Stateful>(id: impl Display) -> ServiceError {
    ServiceError::not_found(format!("{} {id} not found", R::KIND))
}

pub async fn find<R: Stateful>(db: &impl ConnectionTrait, id: R::Id) -> Result<Option<R>, ServiceError> {
    R::Entity::find().filter(R::id_column().eq(id)).one(db).await.map_err(db_error)
}

async fn must_find<R: Stateful>(db: &impl ConnectionTrait, id: R::Id) -> Result<R, ServiceError> {
    find::<R>(db, id).await?.ok_or_else(|| not_found::<R>(id))
}

/// Loads a row the caller may see, from a client's id; another project's row is reported like a
/// missing one.
pub async fn load<R: Stateful>(db: &impl ConnectionTrait, context: &CallContext, id: &str) -> Result<R, ServiceError> {
    let id: R::Id = id.parse()?;
    match find::<R>(db, id).await? {
        Some(model) if visible(context, &model) => Ok(model),
        _ => Err(not_found::<R>(id)),
    }
}

/// Whether the caller may see the row: its own project's, or any for an admin.
pub fn visible<R: Stateful>(context: &CallContext, model: &R) -> bool {
    context.is_admin || model.project_id() == &context.project_id
}

/// Fails with the statuses `action` accepts when the row is in another.
pub fn check<R: Stateful>(model: &R, action: R::Action, doing: &str) -> Result<(), ServiceError> {
    let allowed = R::rule(action).from;
    if allowed.contains(&model.status()) {
        return Ok(());
    }
    Err(ServiceError::conflict(format!(
        "{} {} is {}; {doing} needs it to be {}",
        R::KIND,
        model.id(),
        R::status_name(model.status()),
        names::<R>(allowed)
    )))
}

pub fn condition<R: Stateful>(statuses: &[R::Status]) -> Condition {
    Condition::all().add(R::status_column().is_in(statuses.iter().copied()))
}

/// Applies `action`'s start by compare-and-set inside `txn`; returns the status before and the row
/// after. An action that does not change the status leaves the row as it is.
pub async fn transition<R: Stateful>(
    txn: &impl ConnectionTrait,
    id: R::Id,
    action: R::Action,
    reason: &str,
) -> Result<(R::Status, R), ServiceError> {
    let rule = R::rule(action);
    let before = must_find::<R>(txn, id).await?;
    let Some(during) = rule.during else {
        return Ok((before.status(), before));
    };
    let after = set::<R>(txn, id, rule.from, during, reason).await?;
    Ok((before.status(), after))
}

/// `UPDATE ... SET status = to WHERE id = ? AND status IN (from) RETURNING *`, failing when
/// nothing matched; the row as it is now.
pub async fn set<R: Stateful>(
    txn: &impl ConnectionTrait,
    id: R::Id,
    from: &[R::Status],
    to: R::Status,
    reason: &str,
) -> Result<R, ServiceError> {
    let mut update = R::Entity::update_many().col_expr(R::status_column(), Expr::value(to));
    if let Some(column) = R::reason_column() {
        update = update.col_expr(column, Expr::value(reason));
    }
    if let Some(column) = R::updated_at_column() {
        update = update.col_expr(column, Expr::value(Utc::now()));
    }
    let updated = R::with_status(update, to)
        .filter(R::id_column().eq(id))
        .filter(condition::<R>(from))
        .exec_with_returning(txn)
        .await
        .map_err(db_error)?;
    if let Some(row) = updated.into_iter().next() {
        return Ok(row);
    }
    let current = must_find::<R>(txn, id).await?;
    Err(ServiceError::conflict(format!(
        "{} {id} is {} now; it can become {} only from {}",
        R::KIND,
        R::status_name(current.status()),
        R::status_name(to),
        names::<R>(from)
    )))
}

/// Sets `changes` on the row (and its update time) while it is in a status `action` accepts, by
/// compare-and-set on the status; nothing to change changes nothing.
pub async fn update<R: Stateful>(
    db: &impl ConnectionTrait,
    model: &R,
    action: R::Action,
    changes: Vec<(<R::Entity as EntityTrait>::Column, Value)>,
) -> Result<(), ServiceError> {
    let mut update = R::Entity::update_many();
    if let Some(column) = R::updated_at_column() {
        update = update.col_expr(column, Expr::value(Utc::now()));
    }
    for (column, value) in changes {
        update = update.col_expr(column, Expr::value(value));
    }
    let updated = update
        .filter(R::id_column().eq(model.id()))
        .filter(condition::<R>(R::rule(action).from))
        .exec(db)
        .await
        .map_err(db_error)?;
    if updated.rows_affected == 0 {
        return Err(ServiceError::conflict(format!(
            "{} {} changed status meanwhile; it can no longer be updated",
            R::KIND,
            model.id()
        )));
    }
    Ok(())
}

/// Holds the row in one of `statuses` until `txn` ends (a compare-and-set that changes nothing
/// but the update time): a concurrent change of its status waits, then finds what this
/// transaction did.
pub async fn lock<R: Stateful>(
    txn: &impl ConnectionTrait,
    id: R::Id,
    statuses: &[R::Status],
    doing: &str,
) -> Result<(), ServiceError> {
    let mut update = R::Entity::update_many().col_expr(R::status_column(), Expr::col(R::status_column()));
    if let Some(column) = R::updated_at_column() {
        update = update.col_expr(column, Expr::value(Utc::now()));
    }
    let locked =
        update.filter(R::id_column().eq(id)).filter(condition::<R>(statuses)).exec(txn).await.map_err(db_error)?;
    if locked.rows_affected == 0 {
        return Err(ServiceError::conflict(format!("{} {id} changed status meanwhile; retry {doing}", R::KIND)));
    }
    Ok(())
}

/// Ends `action` on the row, from the status it showed while running to its success or failure.
/// `None` when the row is gone, or when the action has no running status.
pub async fn finish<R: Stateful>(
    txn: &impl ConnectionTrait,
    id: R::Id,
    action: R::Action,
    succeeded: bool,
    reason: &str,
) -> Result<Option<PendingEvent>, ServiceError> {
    let rule = R::rule(action);
    let Some(during) = rule.during else { return Ok(None) };
    let Some(model) = find::<R>(txn, id).await? else { return Ok(None) };
    let to = match (succeeded, rule.success) {
        (true, Some(success)) => success,
        (true, None) => return Ok(None),
        (false, _) => rule.failure,
    };
    let reason = if succeeded { "" } else { reason };
    set::<R>(txn, id, &[during], to, reason).await?;
    Ok(Some(event(&model, R::status_name(to), reason)))
}

/// Removes the row and gives back what it held (`Stateful::release`); `None` when it is gone.
pub async fn remove<R: Stateful>(txn: &impl ConnectionTrait, id: R::Id) -> Result<Option<PendingEvent>, ServiceError> {
    let Some(model) = find::<R>(txn, id).await? else { return Ok(None) };
    model.release(txn).await?;
    R::Entity::delete_many().filter(R::id_column().eq(id)).exec(txn).await.map_err(db_error)?;
    Ok(Some(event(&model, crate::events::DELETED, "")))
}

/// Whether an admin may reset a row to `to`: only to the statuses in `allowed`, never to one that
/// claims an operation is running, which nothing would then finish.
pub fn resettable<R: Stateful>(to: R::Status, allowed: &[R::Status]) -> Result<(), ServiceError> {
    if allowed.contains(&to) {
        return Ok(());
    }
    Err(ServiceError::invalid(format!("a {} can be reset to {} only", R::KIND, names::<R>(allowed))))
}

/// An admin's reset: from the status the caller saw to `to`, which must be one of `allowed`.
pub async fn reset<R: Stateful>(
    txn: &impl ConnectionTrait,
    model: &R,
    to: R::Status,
    allowed: &[R::Status],
) -> Result<(), ServiceError> {
    resettable::<R>(to, allowed)?;
    if crate::journal::in_flight(txn, &model.id().to_string()).await? {
        return Err(ServiceError::conflict(format!(
            "{} {} is {} with an operation in flight; wait for it to finish rather than reset it",
            R::KIND,
            model.id(),
            R::status_name(model.status())
        )));
    }
    let mut update = R::Entity::update_many().col_expr(R::status_column(), Expr::value(to));
    if let Some(column) = R::updated_at_column() {
        update = update.col_expr(column, Expr::value(Utc::now()));
    }
    let updated = update
        .filter(R::id_column().eq(model.id()))
        .filter(R::status_column().eq(model.status()))
        .exec(txn)
        .await
        .map_err(db_error)?;
    if updated.rows_affected == 0 {
        return Err(ServiceError::conflict(format!(
            "{} {} changed status meanwhile; look again and retry",
            R::KIND,
            model.id()
        )));
    }
    Ok(())
}

/// The announcement of `model` (as it was) moving to `to`.
pub fn event<R: Stateful>(model: &R, to: &str, reason: &str) -> PendingEvent {
    PendingEvent {
        kind: R::KIND,
        id: model.id().to_string(),
        project: model.project_id().to_string(),
        from: R::status_name(model.status()).to_owned(),
        to: to.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The announcement of a new row.
pub fn created<R: Stateful>(model: &R) -> PendingEvent {
    PendingEvent { from: String::new(), ..event(model, R::status_name(model.status()), "") }
}

/// The announcement of a change from `before` to the row as it is now.
pub fn changed<R: Stateful>(before: R::Status, after: &R) -> PendingEvent {
    PendingEvent {
        kind: R::KIND,
        id: after.id().to_string(),
        project: after.project_id().to_string(),
        from: R::status_name(before).to_owned(),
        to: R::status_name(after.status()).to_owned(),
        reason: String::new(),
    }
}
