//! Attachments (Cinder 3.27+). Creating one without a connector reserves the volume for a host;
//! deleting the last one frees it. Connecting a host (a connector, an export) is the export
//! target's job on the volume node.

use std::{collections::HashMap, sync::Arc};

use basalt::{
    ServiceError,
    context::CallContext,
    ids::AttachmentId,
    proto::{self, AttachMode, AttachStatus, CreateAttachmentRequest, ListAttachmentsRequest, VolumeAttachment},
};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    Set, sea_query::Expr,
};

use crate::{
    Core,
    db::{attachment, db_error, volume},
    events,
    lifecycle::VolumeAction,
    volumes::{self, timestamp},
};

const MAX_FIELD_LEN: usize = 255;

pub struct Attachments {
    core: Arc<Core>,
}

impl Attachments {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    pub async fn create(
        &self,
        context: &CallContext,
        request: CreateAttachmentRequest,
    ) -> Result<attachment::Model, ServiceError> {
        if request.instance_id.chars().count() > MAX_FIELD_LEN {
            return Err(ServiceError::invalid(format!("instance id is too long: at most {MAX_FIELD_LEN} characters")));
        }
        let connects = request.connector.as_ref().is_some_and(|connector| {
            !connector.initiator.is_empty() || !connector.host.is_empty() || !connector.ip.is_empty()
        });
        if connects {
            return Err(ServiceError::invalid(
                "connecting a host needs an export target on the volume node, and this deployment's nodes export nothing; \
                 create the attachment without a connector to reserve the volume",
            ));
        }
        let volume = volumes::load(&self.core.db, context, &request.volume_id).await?;
        let mode = match AttachMode::try_from(request.mode).unwrap_or_default() {
            AttachMode::ReadOnly => "ro",
            _ if volume.readonly => "ro",
            _ => "rw",
        };
        let txn = self.core.begin_write().await?;
        let (before, reserved) = volumes::transition(&*txn, &volume.id, VolumeAction::Reserve, "").await?;
        volume::Entity::update_many()
            .col_expr(volume::Column::AttachStatus, Expr::value(AttachStatus::Reserved.cinder_name()))
            .filter(volume::Column::Id.eq(volume.id.as_str()))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        let model = attachment::ActiveModel {
            id: Set(AttachmentId::new_random().to_string()),
            volume_id: Set(volume.id.clone()),
            project_id: Set(volume.project_id.clone()),
            instance_id: Set(request.instance_id),
            host_name: Set(String::new()),
            status: Set(AttachStatus::Reserved.cinder_name().into()),
            mode: Set(mode.into()),
            connector: Set(String::new()),
            mountpoint: Set(String::new()),
            attached_at: Set(None),
            created_at: Set(Utc::now()),
        }
        .insert(&*txn)
        .await
        .map_err(db_error)?;
        txn.commit().await?;
        self.core.publish_status(events::VOLUME, &volume.id, &volume.project_id, &before, &reserved.status, "").await;
        Ok(model)
    }

    pub async fn get(&self, context: &CallContext, attachment_id: &str) -> Result<attachment::Model, ServiceError> {
        let id = AttachmentId::parse(attachment_id)?;
        match attachment::Entity::find_by_id(id.to_string()).one(&self.core.db).await.map_err(db_error)? {
            Some(model) if context.is_admin || model.project_id == context.project_id.as_str() => Ok(model),
            _ => Err(ServiceError::not_found(format!("attachment {id} not found"))),
        }
    }

    pub async fn list(
        &self,
        context: &CallContext,
        request: &ListAttachmentsRequest,
    ) -> Result<Vec<attachment::Model>, ServiceError> {
        if request.all_projects {
            context.require_admin("listing the attachments of all projects")?;
        }
        let mut condition = Condition::all();
        if !request.all_projects {
            condition = condition.add(attachment::Column::ProjectId.eq(context.project_id.as_str()));
        }
        if !request.volume_id.is_empty() {
            condition = condition.add(attachment::Column::VolumeId.eq(request.volume_id.as_str()));
        }
        if !request.instance_id.is_empty() {
            condition = condition.add(attachment::Column::InstanceId.eq(request.instance_id.as_str()));
        }
        if request.status != AttachStatus::Unspecified as i32 {
            let status = AttachStatus::try_from(request.status)
                .map_err(|_| ServiceError::invalid(format!("unknown attach status {}", request.status)))?;
            condition = condition.add(attachment::Column::Status.eq(status.cinder_name()));
        }
        attachment::Entity::find()
            .filter(condition)
            .order_by_asc(attachment::Column::CreatedAt)
            .all(&self.core.db)
            .await
            .map_err(db_error)
    }

    /// Removes the attachment; returns the volume's remaining attachments.
    pub async fn delete(
        &self,
        context: &CallContext,
        attachment_id: &str,
    ) -> Result<Vec<attachment::Model>, ServiceError> {
        let model = self.get(context, attachment_id).await?;
        let txn = self.core.begin_write().await?;
        attachment::Entity::delete_by_id(model.id.clone()).exec(&*txn).await.map_err(db_error)?;
        let remaining = attachment::Entity::find()
            .filter(attachment::Column::VolumeId.eq(model.volume_id.as_str()))
            .count(&*txn)
            .await
            .map_err(db_error)?;
        let mut freed = None;
        if remaining == 0 {
            let (before, after) = volumes::transition(&*txn, &model.volume_id, VolumeAction::Unreserve, "").await?;
            volume::Entity::update_many()
                .col_expr(volume::Column::AttachStatus, Expr::value(AttachStatus::Detached.cinder_name()))
                .filter(volume::Column::Id.eq(model.volume_id.as_str()))
                .exec(&*txn)
                .await
                .map_err(db_error)?;
            freed = Some((before, after));
        }
        txn.commit().await?;
        if let Some((before, after)) = freed {
            self.core.publish_status(events::VOLUME, &after.id, &after.project_id, &before, &after.status, "").await;
        }
        self.list(context, &ListAttachmentsRequest { volume_id: model.volume_id, ..Default::default() }).await
    }
}

/// The attachments of `volume_ids`, as shown inside a volume.
pub async fn for_volumes(
    db: &impl ConnectionTrait,
    volume_ids: &[String],
) -> Result<HashMap<String, Vec<VolumeAttachment>>, ServiceError> {
    if volume_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = attachment::Entity::find()
        .filter(attachment::Column::VolumeId.is_in(volume_ids.iter().map(String::as_str)))
        .all(db)
        .await
        .map_err(db_error)?;
    let mut by_volume: HashMap<String, Vec<VolumeAttachment>> = HashMap::new();
    for row in rows {
        by_volume.entry(row.volume_id.clone()).or_default().push(VolumeAttachment {
            id: row.id.clone(),
            volume_id: row.volume_id.clone(),
            server_id: row.instance_id.clone(),
            host_name: row.host_name.clone(),
            device: row.mountpoint.clone(),
            attached_at: row.attached_at.map(timestamp),
        });
    }
    Ok(by_volume)
}

pub fn to_proto(model: &attachment::Model) -> proto::Attachment {
    proto::Attachment {
        id: model.id.clone(),
        volume_id: model.volume_id.clone(),
        project_id: model.project_id.clone(),
        instance_id: model.instance_id.clone(),
        host_name: model.host_name.clone(),
        status: AttachStatus::from_cinder_name(&model.status).unwrap_or_default() as i32,
        mode: if model.mode == "ro" { AttachMode::ReadOnly } else { AttachMode::ReadWrite } as i32,
        connector: None,
        connection_info: None,
        mountpoint: model.mountpoint.clone(),
        attached_at: model.attached_at.map(timestamp),
        detached_at: None,
    }
}
