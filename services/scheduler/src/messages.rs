//! User messages (Cinder 3.3): when an asynchronous operation fails, the resource's project
//! finds out why from `/messages` instead of an operator's logs. A message names the resource,
//! Cinder's action and detail codes (so clients and tools that know Cinder's codes read ours the
//! same way), and the request that started the operation. It is written in the transaction that
//! records the failure, and expires after the deployment's message lifetime.

use basalt::{
    ErrorCode, ServiceError,
    context::CallContext,
    ids::{BackupId, MessageId, ProjectId, SnapshotId, VolumeId},
    proto::{ListMessagesRequest, PageInfo, UserMessage},
};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, Set};

use crate::{
    Core,
    db::{backup, db_error, message, snapshot, volume},
    listing,
};

/// Cinder's only level; the column keeps room for others.
const LEVEL_ERROR: &str = "ERROR";

/// The kinds of resource a message is about, by Cinder's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Volume(VolumeId),
    Snapshot(SnapshotId),
    Backup(BackupId),
}

impl Resource {
    fn type_name(&self) -> &'static str {
        match self {
            Self::Volume(_) => "VOLUME",
            Self::Snapshot(_) => "VOLUME_SNAPSHOT",
            Self::Backup(_) => "VOLUME_BACKUP",
        }
    }

    fn uuid(&self) -> String {
        match self {
            Self::Volume(id) => id.to_string(),
            Self::Snapshot(id) => id.to_string(),
            Self::Backup(id) => id.to_string(),
        }
    }

    /// The project that owns the resource now; `None` when it is gone.
    async fn project(&self, db: &impl ConnectionTrait) -> Result<Option<ProjectId>, ServiceError> {
        let found = match *self {
            Self::Volume(id) => volume::Entity::find_by_id(id).one(db).await.map(|row| row.map(|row| row.project_id)),
            Self::Snapshot(id) => {
                snapshot::Entity::find_by_id(id).one(db).await.map(|row| row.map(|row| row.project_id))
            }
            Self::Backup(id) => backup::Entity::find_by_id(id).one(db).await.map(|row| row.map(|row| row.project_id)),
        };
        found.map_err(db_error)
    }
}

/// A code and its wording, as Cinder's `message_field` has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub id: &'static str,
    pub text: &'static str,
}

const fn code(id: &'static str, text: &'static str) -> Code {
    Code { id, text }
}

/// What was being done (Cinder's `message_field.Action`).
pub struct Action;

impl Action {
    pub const SCHEDULE_ALLOCATE_VOLUME: Code = code("001", "schedule allocate volume");
    pub const ATTACH_VOLUME: Code = code("002", "attach volume");
    pub const COPY_VOLUME_TO_IMAGE: Code = code("003", "copy volume to image");
    pub const UPDATE_ATTACHMENT: Code = code("004", "update attachment");
    pub const COPY_IMAGE_TO_VOLUME: Code = code("005", "copy image to volume");
    pub const UNMANAGE_VOLUME: Code = code("006", "unmanage volume");
    pub const EXTEND_VOLUME: Code = code("007", "extend volume");
    pub const CREATE_VOLUME_FROM_BACKEND: Code = code("008", "create volume from backend storage");
    pub const SNAPSHOT_CREATE: Code = code("009", "create snapshot");
    pub const SNAPSHOT_DELETE: Code = code("010", "delete snapshot");
    pub const SNAPSHOT_UPDATE: Code = code("011", "update snapshot");
    pub const SNAPSHOT_METADATA_UPDATE: Code = code("012", "update snapshot metadata");
    pub const BACKUP_CREATE: Code = code("013", "create backup");
    pub const BACKUP_DELETE: Code = code("014", "delete backup");
    pub const BACKUP_RESTORE: Code = code("015", "restore backup");

    /// Basalt's own, in a range Cinder does not use (900+): the node holding the resource was
    /// declared lost by an admin.
    pub const NODE_LOST: Code = code("901", "lose the volume node");

    const BASALT: [Code; 1] = [Self::NODE_LOST];

    const ALL: [Code; 15] = [
        Self::SCHEDULE_ALLOCATE_VOLUME,
        Self::ATTACH_VOLUME,
        Self::COPY_VOLUME_TO_IMAGE,
        Self::UPDATE_ATTACHMENT,
        Self::COPY_IMAGE_TO_VOLUME,
        Self::UNMANAGE_VOLUME,
        Self::EXTEND_VOLUME,
        Self::CREATE_VOLUME_FROM_BACKEND,
        Self::SNAPSHOT_CREATE,
        Self::SNAPSHOT_DELETE,
        Self::SNAPSHOT_UPDATE,
        Self::SNAPSHOT_METADATA_UPDATE,
        Self::BACKUP_CREATE,
        Self::BACKUP_DELETE,
        Self::BACKUP_RESTORE,
    ];
}

/// Why it failed (Cinder's `message_field.Detail`).
pub struct Detail;

impl Detail {
    pub const UNKNOWN_ERROR: Code = code("001", "An unknown error occurred.");
    pub const DRIVER_NOT_INITIALIZED: Code = code("002", "Driver is not initialized at present.");
    pub const NO_BACKEND_AVAILABLE: Code = code("003", "Could not find any available weighted backend.");
    pub const FAILED_TO_UPLOAD_VOLUME: Code = code("004", "Failed to upload volume to image at backend.");
    pub const VOLUME_ATTACH_MODE_INVALID: Code = code("005", "Volume's attach mode is invalid.");
    pub const QUOTA_EXCEED: Code = code("006", "Not enough quota resource for operation.");
    pub const NOT_ENOUGH_SPACE_FOR_IMAGE: Code = code("007", "Image used for creating volume exceeds available space.");
    pub const UNMANAGE_ENC_NOT_SUPPORTED: Code = code("008", "Unmanaging encrypted volumes is not supported.");
    pub const NOTIFY_COMPUTE_SERVICE_FAILED: Code = code("009", "Compute service failed to extend volume.");
    pub const DRIVER_FAILED_EXTEND: Code = code("010", "Volume Driver failed to extend volume.");
    pub const SIGNATURE_VERIFICATION_FAILED: Code = code("011", "Image signature verification failed.");
    pub const DRIVER_FAILED_CREATE: Code = code("012", "Driver failed to create the volume.");
    pub const SNAPSHOT_CREATE_ERROR: Code = code("013", "Snapshot failed to create.");
    pub const SNAPSHOT_UPDATE_METADATA_FAILED: Code = code("014", "Volume snapshot update metadata failed.");
    pub const SNAPSHOT_IS_BUSY: Code = code("015", "Snapshot is busy.");
    pub const SNAPSHOT_DELETE_ERROR: Code = code("016", "Snapshot failed to delete.");
    pub const BACKUP_INVALID_STATE: Code = code("017", "Backup status is invalid.");
    pub const BACKUP_SERVICE_DOWN: Code = code("018", "Backup service is down.");
    pub const BACKUP_CREATE_DEVICE_ERROR: Code = code("019", "Failed to get backup device from the volume service.");
    pub const BACKUP_CREATE_DRIVER_ERROR: Code = code("020", "Backup driver failed to create backup.");
    pub const ATTACH_ERROR: Code = code("021", "Failed to attach volume.");
    pub const DETACH_ERROR: Code = code("022", "Failed to detach volume.");
    pub const BACKUP_CREATE_CLEANUP_ERROR: Code = code("023", "Cleanup of temporary volume/snapshot failed.");
    pub const BACKUP_SCHEDULE_ERROR: Code =
        code("024", "Backup failed to schedule. Service not found for creating backup.");
    pub const BACKUP_DELETE_DRIVER_ERROR: Code = code("025", "Backup driver failed to delete backup.");
    pub const BACKUP_RESTORE_ERROR: Code = code("026", "Backup driver failed to restore backup.");
    pub const VOLUME_INVALID_STATE: Code = code("027", "Volume status is invalid.");

    /// Basalt's own (900+): the node holding the resource is gone with its storage.
    pub const NODE_LOST: Code = code("901", "The volume node holding it was declared lost by an administrator.");

    const BASALT: [Code; 1] = [Self::NODE_LOST];

    const ALL: [Code; 27] = [
        Self::UNKNOWN_ERROR,
        Self::DRIVER_NOT_INITIALIZED,
        Self::NO_BACKEND_AVAILABLE,
        Self::FAILED_TO_UPLOAD_VOLUME,
        Self::VOLUME_ATTACH_MODE_INVALID,
        Self::QUOTA_EXCEED,
        Self::NOT_ENOUGH_SPACE_FOR_IMAGE,
        Self::UNMANAGE_ENC_NOT_SUPPORTED,
        Self::NOTIFY_COMPUTE_SERVICE_FAILED,
        Self::DRIVER_FAILED_EXTEND,
        Self::SIGNATURE_VERIFICATION_FAILED,
        Self::DRIVER_FAILED_CREATE,
        Self::SNAPSHOT_CREATE_ERROR,
        Self::SNAPSHOT_UPDATE_METADATA_FAILED,
        Self::SNAPSHOT_IS_BUSY,
        Self::SNAPSHOT_DELETE_ERROR,
        Self::BACKUP_INVALID_STATE,
        Self::BACKUP_SERVICE_DOWN,
        Self::BACKUP_CREATE_DEVICE_ERROR,
        Self::BACKUP_CREATE_DRIVER_ERROR,
        Self::ATTACH_ERROR,
        Self::DETACH_ERROR,
        Self::BACKUP_CREATE_CLEANUP_ERROR,
        Self::BACKUP_SCHEDULE_ERROR,
        Self::BACKUP_DELETE_DRIVER_ERROR,
        Self::BACKUP_RESTORE_ERROR,
        Self::VOLUME_INVALID_STATE,
    ];

    /// The detail of a node's failure: `unreachable` when the node never answered (the
    /// operation gave up retrying), `failed` when it answered with an error.
    pub fn of(error: &ServiceError, failed: Code, unreachable: Code) -> Code {
        match error.code {
            ErrorCode::Unavailable => unreachable,
            _ => failed,
        }
    }
}

/// What a failed operation tells its resource's project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub resource: Resource,
    pub action: Code,
    pub detail: Code,
}

/// `<action>:<detail>` in Cinder's words; codes this release does not know read as Cinder's
/// unknown ones.
fn user_message(action_id: &str, detail_id: &str) -> String {
    let action = Action::ALL.iter().chain(&Action::BASALT).find(|action| action.id == action_id);
    let action = action.map_or("unknown action", |action| action.text);
    let detail = Detail::ALL.iter().chain(&Detail::BASALT).find(|detail| detail.id == detail_id);
    let detail = detail.unwrap_or(&Detail::UNKNOWN_ERROR).text;
    format!("{action}:{detail}")
}

/// Records `failure` for the resource's project inside the transaction that records the failure
/// itself; a resource that is gone gets none (nobody could read it).
pub async fn record(
    txn: &impl ConnectionTrait,
    core: &Core,
    request_id: &str,
    failure: Failure,
) -> Result<(), ServiceError> {
    let Some(project_id) = failure.resource.project(txn).await? else { return Ok(()) };
    let now = Utc::now();
    let ttl = chrono::TimeDelta::from_std(core.config.message_ttl).unwrap_or(chrono::TimeDelta::days(30));
    let resource_type = failure.resource.type_name();
    message::ActiveModel {
        id: Set(MessageId::new_random()),
        project_id: Set(project_id),
        request_id: Set(request_id.to_owned()),
        resource_type: Set(resource_type.to_owned()),
        resource_uuid: Set(failure.resource.uuid()),
        event_id: Set(format!("VOLUME_{resource_type}_{}_{}", failure.action.id, failure.detail.id)),
        action_id: Set(failure.action.id.to_owned()),
        detail_id: Set(failure.detail.id.to_owned()),
        message_level: Set(LEVEL_ERROR.to_owned()),
        created_at: Set(now),
        expires_at: Set(now + ttl),
    }
    .insert(txn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Messages not yet expired that the caller may see: its project's, or every project's for an
/// admin (as Cinder's).
fn visible(context: &CallContext) -> Condition {
    let mut condition = Condition::all().add(message::Column::ExpiresAt.gt(Utc::now()));
    if !context.is_admin {
        condition = condition.add(message::Column::ProjectId.eq(context.project_id.as_str()));
    }
    condition
}

pub async fn get(core: &Core, context: &CallContext, id: &str) -> Result<message::Model, ServiceError> {
    let id = MessageId::parse(id)?;
    message::Entity::find()
        .filter(visible(context))
        .filter(message::Column::Id.eq(id))
        .one(&core.db)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ServiceError::not_found(format!("message {id} not found")))
}

pub async fn delete(core: &Core, context: &CallContext, id: &str) -> Result<(), ServiceError> {
    let model = get(core, context, id).await?;
    message::Entity::delete_by_id(model.id).exec(&core.db).await.map_err(db_error)?;
    Ok(())
}

/// The sort keys a message listing accepts, by Cinder's names.
const SORT_COLUMNS: [(&str, message::Column); 8] = [
    ("created_at", message::Column::CreatedAt),
    ("expires_at", message::Column::ExpiresAt),
    ("id", message::Column::Id),
    ("event_id", message::Column::EventId),
    ("resource_type", message::Column::ResourceType),
    ("resource_uuid", message::Column::ResourceUuid),
    ("message_level", message::Column::MessageLevel),
    ("request_id", message::Column::RequestId),
];

pub async fn list(
    core: &Core,
    context: &CallContext,
    request: &ListMessagesRequest,
) -> Result<(Vec<message::Model>, PageInfo), ServiceError> {
    let mut filter = visible(context);
    for (column, wanted) in [
        (message::Column::ResourceType, &request.resource_type),
        (message::Column::ResourceUuid, &request.resource_uuid),
        (message::Column::EventId, &request.event_id),
        (message::Column::RequestId, &request.request_id),
        (message::Column::MessageLevel, &request.message_level),
    ] {
        if !wanted.is_empty() {
            filter = filter.add(column.eq(wanted.as_str()));
        }
    }
    let order = if request.sort.is_empty() {
        vec![(message::Column::CreatedAt, true)]
    } else {
        request
            .sort
            .iter()
            .map(|key| {
                let column = SORT_COLUMNS.iter().find(|(name, _)| *name == key.key).map(|(_, column)| *column);
                column.map(|column| (column, key.descending)).ok_or_else(|| {
                    let names: Vec<&str> = SORT_COLUMNS.iter().map(|(name, _)| *name).collect();
                    ServiceError::invalid(format!(
                        "cannot sort messages by {:?}: use {}",
                        basalt::error::excerpt(&key.key),
                        names.join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let listing = listing::Keyset::<message::Entity> {
        order,
        id: message::Column::Id,
        id_of: |row: &message::Model| row.id.to_string(),
    };
    listing.page(&core.db, filter, request.page.as_ref(), request.with_count, "message").await
}

/// Removes expired messages every `interval` until `stopped` resolves; listings already hide them.
pub async fn reap(core: std::sync::Arc<Core>, interval: std::time::Duration, stopped: impl Future<Output = ()>) {
    basalt::server::every(interval, stopped, || async {
        let removed =
            message::Entity::delete_many().filter(message::Column::ExpiresAt.lte(Utc::now())).exec(&core.db).await;
        match removed {
            Ok(result) if result.rows_affected > 0 => {
                tracing::info!(removed = result.rows_affected, "expired user messages removed")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot remove expired user messages; retrying later"),
        }
    })
    .await
}

pub fn to_proto(model: &message::Model) -> UserMessage {
    UserMessage {
        id: model.id.to_string(),
        project_id: model.project_id.to_string(),
        request_id: model.request_id.clone(),
        resource_type: model.resource_type.clone(),
        resource_uuid: model.resource_uuid.clone(),
        event_id: model.event_id.clone(),
        action_id: model.action_id.clone(),
        detail_id: model.detail_id.clone(),
        user_message: user_message(&model.action_id, &model.detail_id),
        message_level: model.message_level.clone(),
        created_at: Some(std::time::SystemTime::from(model.created_at).into()),
        expires_at: Some(std::time::SystemTime::from(model.expires_at).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_messages_read_as_cinder_words_them() {
        assert_eq!(
            user_message("008", "012"),
            "create volume from backend storage:Driver failed to create the volume."
        );
        assert_eq!(user_message("015", "026"), "restore backup:Backup driver failed to restore backup.");
        assert_eq!(user_message("999", "999"), "unknown action:An unknown error occurred.");
        assert_eq!(
            user_message("901", "901"),
            "lose the volume node:The volume node holding it was declared lost by an administrator."
        );
    }

    #[test]
    fn codes_are_unique_and_numbered_in_order() {
        for (index, action) in Action::ALL.iter().enumerate() {
            assert_eq!(action.id, format!("{:03}", index + 1));
        }
        for (index, detail) in Detail::ALL.iter().enumerate() {
            assert_eq!(detail.id, format!("{:03}", index + 1));
        }
    }
}
