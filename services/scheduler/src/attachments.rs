//! Attachments (Cinder 3.27+). Creating one without a connector reserves the volume for a host;
//! deleting the last one frees it. Connecting a host (a connector, an export) is the export
//! target's job on the volume node.

use std::{collections::HashMap, sync::Arc};

use basalt::{
    ServiceError,
    context::CallContext,
    ids::AttachmentId,
    proto::{
        self, AttachMode, AttachStatus, AttachVolumeRequest, ConnectionInfo, Connector, CreateAttachmentRequest,
        DetachVolumeRequest, ExportProtocol, ListAttachmentsRequest, NodeExport, NodeExportRequest,
        NodeInitiatorRequest, UpdateAttachmentRequest, VolumeAttachment, VolumeStatus,
    },
};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
    sea_query::Expr,
};

use crate::{
    Core,
    core::WriteTxn,
    db::{attachment, db_error, volume},
    events, fields,
    lifecycle::VolumeAction,
    listing,
    volumes::{self, timestamp},
};

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
        fields::check_name("instance id", &request.instance_id)?;
        let volume = volumes::load(&self.core.db, context, &request.volume_id).await?;
        let mode = match AttachMode::try_from(request.mode).unwrap_or_default() {
            AttachMode::ReadOnly => "ro",
            _ if volume.readonly => "ro",
            _ => "rw",
        };
        let txn = self.core.begin_write().await?;
        let (before, reserved) = step(&*txn, &volume, VolumeAction::Reserve, AttachStatus::Reserved).await?;
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
            connection_info: Set(String::new()),
            attached_at: Set(None),
            created_at: Set(Utc::now()),
        }
        .insert(&*txn)
        .await
        .map_err(db_error)?;
        txn.commit().await?;
        self.core.publish_status(events::VOLUME, &volume.id, &volume.project_id, &before, &reserved.status, "").await;
        // A connector given at creation connects the host at once, as Cinder does.
        let Some(connector) = request.connector else {
            return Ok(model);
        };
        let connected = self
            .update(context, UpdateAttachmentRequest { attachment_id: model.id.clone(), connector: Some(connector) })
            .await;
        if connected.is_err() {
            // The create fails whole: the reservation it made is taken back.
            if let Err(error) = self.delete(context, &model.id).await {
                tracing::warn!(attachment_id = %model.id, %error, "cannot take back the reservation of a failed attachment");
            }
        }
        connected
    }

    /// Exports the volume to the connector's initiator and records the connection info.
    pub async fn update(
        &self,
        context: &CallContext,
        request: UpdateAttachmentRequest,
    ) -> Result<attachment::Model, ServiceError> {
        let model = self.get(context, &request.attachment_id).await?;
        let connector = request.connector.unwrap_or_default();
        let status = AttachStatus::from_cinder_name(&model.status).unwrap_or_default();
        if !matches!(status, AttachStatus::Reserved | AttachStatus::Attaching) {
            return Err(ServiceError::conflict(format!(
                "attachment {} is {}; a host can connect only while it is reserved",
                model.id, model.status
            )));
        }
        let volume = volumes::load(&self.core.db, context, &model.volume_id).await?;
        let export = self.export_to(&volume, &connector).await?;
        let info = connection_info(&export, &model.mode, volume.readonly);
        let txn = self.core.begin_write().await?;
        let (before, after) = step(&*txn, &volume, VolumeAction::Connect, AttachStatus::Attaching).await?;
        attachment::Entity::update_many()
            .col_expr(attachment::Column::Status, Expr::value(AttachStatus::Attaching.cinder_name()))
            .col_expr(attachment::Column::HostName, Expr::value(connector.host.clone()))
            .col_expr(attachment::Column::Connector, Expr::value(connector_json(&connector)))
            .col_expr(attachment::Column::ConnectionInfo, Expr::value(info.to_string()))
            .filter(attachment::Column::Id.eq(model.id.as_str()))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        txn.commit().await?;
        tracing::info!(attachment_id = %model.id, volume_id = %volume.id, initiator = %connector.initiator, "host connected");
        self.core.publish_status(events::VOLUME, &after.id, &after.project_id, &before, &after.status, "").await;
        self.get(context, &model.id).await
    }

    /// The host attached the volume: the attachment is attached and the volume in-use.
    pub async fn complete(
        &self,
        context: &CallContext,
        attachment_id: &str,
    ) -> Result<attachment::Model, ServiceError> {
        let model = self.get(context, attachment_id).await?;
        if model.status == AttachStatus::Attached.cinder_name() {
            return Ok(model);
        }
        if model.status != AttachStatus::Attaching.cinder_name() {
            return Err(ServiceError::conflict(format!(
                "attachment {} is {}; it can be completed only after a host connected (attaching)",
                model.id, model.status
            )));
        }
        let txn = self.core.begin_write().await?;
        let volume = volumes::load(&*txn, context, &model.volume_id).await?;
        let (before, after) = step(&*txn, &volume, VolumeAction::CompleteAttach, AttachStatus::Attached).await?;
        attachment::Entity::update_many()
            .col_expr(attachment::Column::Status, Expr::value(AttachStatus::Attached.cinder_name()))
            .col_expr(attachment::Column::AttachedAt, Expr::value(Utc::now()))
            .filter(attachment::Column::Id.eq(model.id.as_str()))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        txn.commit().await?;
        self.core.publish_status(events::VOLUME, &after.id, &after.project_id, &before, &after.status, "").await;
        self.get(context, &model.id).await
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
        let mut condition =
            listing::project_scope(context, request.all_projects, attachment::Column::ProjectId, "attachments")?;
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
        self.disconnect(&model).await?;
        let txn = self.core.begin_write().await?;
        attachment::Entity::delete_by_id(model.id.clone()).exec(&*txn).await.map_err(db_error)?;
        self.free_if_last(txn, &model.volume_id, VolumeAction::Unreserve).await?;
        self.list(context, &ListAttachmentsRequest { volume_id: model.volume_id, ..Default::default() }).await
    }
}

impl Attachments {
    /// Takes the host's access away on the node, and the export with the last connected host.
    /// Runs before the row goes: a node that cannot be reached fails the delete, so no ACL or
    /// target is ever forgotten.
    async fn disconnect(&self, model: &attachment::Model) -> Result<(), ServiceError> {
        let Some(connector) = stored_connector(&model.connector) else { return Ok(()) };
        let Some(volume) =
            volume::Entity::find_by_id(model.volume_id.clone()).one(&self.core.db).await.map_err(db_error)?
        else {
            return Ok(());
        };
        self.revoke_from(&volume, &connector, Some(&model.id)).await?;
        tracing::info!(attachment_id = %model.id, volume_id = %volume.id, initiator = %connector.initiator, host = %connector.host, "host disconnected");
        Ok(())
    }

    /// Inside `txn`, after attachments went: with none left, `action` frees the volume (detached).
    /// Commits `txn` and announces the change.
    async fn free_if_last(&self, txn: WriteTxn, volume_id: &str, action: VolumeAction) -> Result<(), ServiceError> {
        let remaining = attachment::Entity::find()
            .filter(attachment::Column::VolumeId.eq(volume_id))
            .count(&*txn)
            .await
            .map_err(db_error)?;
        let mut freed = None;
        if remaining == 0 {
            let (before, after) = volumes::transition(&*txn, volume_id, action, "").await?;
            volume::Entity::update_many()
                .col_expr(volume::Column::AttachStatus, Expr::value(AttachStatus::Detached.cinder_name()))
                .filter(volume::Column::Id.eq(volume_id))
                .exec(&*txn)
                .await
                .map_err(db_error)?;
            freed = Some((before, after));
        }
        txn.commit().await?;
        if let Some((before, after)) = freed {
            self.core.publish_status(events::VOLUME, &after.id, &after.project_id, &before, &after.status, "").await;
        }
        Ok(())
    }

    /// Exports the volume on its node (idempotent) as the connector's host reaches it: locally
    /// when the host is the volume's node and asks for a local attach, over NFS when it names no
    /// iSCSI initiator, else over iSCSI with an ACL for its initiator.
    async fn export_to(&self, volume: &volume::Model, connector: &Connector) -> Result<NodeExport, ServiceError> {
        let (node_id, pool) = volumes::placement_of(volume);
        let mut node = self.core.nodes.client(&self.core.capacity, &node_id)?;
        let protocol = attach_protocol(volume, connector);
        let request = NodeExportRequest { volume_id: volume.id.clone(), pool: pool.clone(), protocol: protocol as i32 };
        let export = node.export_volume(request).await.map_err(ServiceError::from)?.into_inner();
        if protocol != ExportProtocol::Iscsi {
            return Ok(export);
        }
        let allow = NodeInitiatorRequest { volume_id: volume.id.clone(), pool, initiator: connector.initiator.clone() };
        node.allow_initiator(allow).await.map_err(ServiceError::from)?;
        Ok(export)
    }

    /// Revokes what the export to `connector` granted; removes the export when no other connected
    /// attachment (than `leaving`) remains.
    async fn revoke_from(
        &self,
        volume: &volume::Model,
        connector: &Connector,
        leaving: Option<&str>,
    ) -> Result<(), ServiceError> {
        if attach_protocol(volume, connector) != ExportProtocol::Iscsi {
            // An NFS or local host: the node granted nothing of its own, so there is nothing to
            // take back.
            return Ok(());
        }
        let initiator = connector.initiator.as_str();
        let (node_id, pool) = volumes::placement_of(volume);
        let mut node = self.core.nodes.client(&self.core.capacity, &node_id)?;
        let request =
            NodeInitiatorRequest { volume_id: volume.id.clone(), pool: pool.clone(), initiator: initiator.to_owned() };
        node.revoke_initiator(request).await.map_err(ServiceError::from)?;
        let mut others = attachment::Entity::find()
            .filter(attachment::Column::VolumeId.eq(volume.id.as_str()))
            .filter(attachment::Column::Connector.ne(""));
        if let Some(leaving) = leaving {
            others = others.filter(attachment::Column::Id.ne(leaving));
        }
        if others.count(&self.core.db).await.map_err(db_error)? == 0 {
            node.unexport_volume(NodeExportRequest { volume_id: volume.id.clone(), pool, ..Default::default() })
                .await
                .map_err(ServiceError::from)?;
        }
        Ok(())
    }

    /// Legacy `os-initialize_connection`: the connection info for a connector, no status change.
    pub async fn initialize_connection(
        &self,
        context: &CallContext,
        volume_id: &str,
        connector: Option<Connector>,
    ) -> Result<ConnectionInfo, ServiceError> {
        let connector = connector.ok_or_else(|| {
            ServiceError::invalid(
                "initialize_connection needs a connector: the host's iSCSI initiator name, or none to mount an NFS volume's share",
            )
        })?;
        let volume = volumes::load(&self.core.db, context, volume_id).await?;
        let connectable =
            [VolumeStatus::Attaching, VolumeStatus::InUse, VolumeStatus::Reserved, VolumeStatus::Available];
        if !connectable.iter().any(|status| status.cinder_name() == volume.status) {
            return Err(ServiceError::conflict(format!(
                "volume {} is {}; a host can connect while it is available, reserved, attaching or in-use",
                volume.id, volume.status
            )));
        }
        let export = self.export_to(&volume, &connector).await?;
        let info = connection_info(&export, "rw", volume.readonly);
        connection_info_proto(&info.to_string())
            .ok_or_else(|| ServiceError::internal("connection info could not be encoded"))
    }

    /// Legacy `os-terminate_connection`: the host's access goes, and the export with the last one.
    pub async fn terminate_connection(
        &self,
        context: &CallContext,
        volume_id: &str,
        connector: Option<Connector>,
    ) -> Result<volume::Model, ServiceError> {
        let connector = connector.ok_or_else(|| {
            ServiceError::invalid("terminate_connection needs the connector that initialized the connection")
        })?;
        let volume = volumes::load(&self.core.db, context, volume_id).await?;
        self.revoke_from(&volume, &connector, None).await?;
        Ok(volume)
    }

    /// Legacy `os-attach`: the host attached it (attaching -> in-use), recorded as an attachment.
    pub async fn attach(
        &self,
        context: &CallContext,
        request: AttachVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        let volume = volumes::load(&self.core.db, context, &request.volume_id).await?;
        let mode = if AttachMode::try_from(request.mode).unwrap_or_default() == AttachMode::ReadOnly || volume.readonly
        {
            "ro"
        } else {
            "rw"
        };
        let txn = self.core.begin_write().await?;
        let (before, after) = volumes::transition(&*txn, &volume.id, VolumeAction::CompleteAttach, "").await?;
        volume::Entity::update_many()
            .col_expr(volume::Column::AttachStatus, Expr::value(AttachStatus::Attached.cinder_name()))
            .filter(volume::Column::Id.eq(volume.id.as_str()))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        attachment::ActiveModel {
            id: Set(AttachmentId::new_random().to_string()),
            volume_id: Set(volume.id.clone()),
            project_id: Set(volume.project_id.clone()),
            instance_id: Set(request.instance_id),
            host_name: Set(request.host_name),
            status: Set(AttachStatus::Attached.cinder_name().into()),
            mode: Set(mode.into()),
            connector: Set(String::new()),
            mountpoint: Set(request.mountpoint),
            connection_info: Set(String::new()),
            attached_at: Set(Some(Utc::now())),
            created_at: Set(Utc::now()),
        }
        .insert(&*txn)
        .await
        .map_err(db_error)?;
        txn.commit().await?;
        self.core.publish_status(events::VOLUME, &after.id, &after.project_id, &before, &after.status, "").await;
        Ok(after)
    }

    /// Legacy `os-detach`: the attachment (or all of them) goes; the volume is available again
    /// with the last one.
    pub async fn detach(
        &self,
        context: &CallContext,
        request: DetachVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        let volume = volumes::load(&self.core.db, context, &request.volume_id).await?;
        let txn = self.core.begin_write().await?;
        let mut removal = attachment::Entity::delete_many().filter(attachment::Column::VolumeId.eq(volume.id.as_str()));
        if !request.attachment_id.is_empty() {
            removal = removal.filter(attachment::Column::Id.eq(request.attachment_id.as_str()));
        }
        let removed = removal.exec(&*txn).await.map_err(db_error)?;
        if removed.rows_affected == 0 && !request.attachment_id.is_empty() {
            return Err(ServiceError::not_found(format!(
                "attachment {} of volume {} not found",
                request.attachment_id, volume.id
            )));
        }
        self.free_if_last(txn, &volume.id, VolumeAction::LegacyDetach).await?;
        volumes::load(&self.core.db, context, &volume.id).await
    }
}

/// Moves the volume by `action` and sets its attach status, inside `txn`; except that a
/// multiattach volume another host already uses keeps its status (it is only locked, so a
/// concurrent change waits for this transaction).
async fn step(
    txn: &impl sea_orm::ConnectionTrait,
    volume: &volume::Model,
    action: VolumeAction,
    attach_status: AttachStatus,
) -> Result<(String, volume::Model), ServiceError> {
    let current = VolumeStatus::from_cinder_name(&volume.status).unwrap_or_default();
    let joining =
        matches!(action, VolumeAction::Reserve) && matches!(current, VolumeStatus::Reserved | VolumeStatus::Attaching);
    let shared = volume.multiattach && (current == VolumeStatus::InUse || joining);
    if shared {
        let locked = volume::Entity::update_many()
            .col_expr(volume::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(volume::Column::Id.eq(volume.id.as_str()))
            .filter(volume::Column::Status.eq(volume.status.as_str()))
            .exec(txn)
            .await
            .map_err(db_error)?;
        if locked.rows_affected == 0 {
            return Err(ServiceError::conflict(format!("volume {} changed status meanwhile; retry", volume.id)));
        }
        return Ok((volume.status.clone(), volume.clone()));
    }
    let (before, after) = volumes::transition(txn, &volume.id, action, "").await?;
    volume::Entity::update_many()
        .col_expr(volume::Column::AttachStatus, Expr::value(attach_status.cinder_name()))
        .filter(volume::Column::Id.eq(volume.id.as_str()))
        .exec(txn)
        .await
        .map_err(db_error)?;
    Ok((before, after))
}

/// How `connector`'s host reaches `volume`: locally when it is the volume's node and asks for a
/// local attach (os-brick's `do_local_attach`, which the CSI node plugin sets), over NFS when it
/// names no iSCSI initiator, else over iSCSI.
fn attach_protocol(volume: &volume::Model, connector: &Connector) -> ExportProtocol {
    let on_its_node = !connector.host.is_empty() && volume.node_id.as_deref() == Some(connector.host.as_str());
    if connector.do_local_attach && on_its_node {
        ExportProtocol::Local
    } else if connector.initiator.is_empty() {
        ExportProtocol::Nfs
    } else {
        ExportProtocol::Iscsi
    }
}

/// Cinder's `connection_info`: iSCSI as `cinder/volume/targets/iscsi.py::_get_iscsi_properties`
/// builds it, NFS as `cinder/volume/drivers/remotefs.py::initialize_connection` does, and a local
/// attach as os-brick's local connector takes it (`device_path`).
fn connection_info(export: &NodeExport, mode: &str, readonly: bool) -> serde_json::Value {
    let access_mode = if readonly || mode == "ro" { "ro" } else { "rw" };
    if !export.local_path.is_empty() {
        return serde_json::json!({
            "driver_volume_type": "local",
            "data": {"device_path": export.local_path, "volume_id": export.volume_id, "access_mode": access_mode},
        });
    }
    if !export.nfs_export.is_empty() {
        let mut data = serde_json::json!({
            "export": export.nfs_export,
            "name": export.nfs_name,
            "format": "raw",
            "volume_id": export.volume_id,
            "access_mode": access_mode,
        });
        if !export.nfs_options.is_empty() {
            data["options"] = serde_json::Value::from(export.nfs_options.clone());
        }
        return serde_json::json!({ "driver_volume_type": "nfs", "data": data });
    }
    serde_json::json!({
        "driver_volume_type": "iscsi",
        "data": {
            "target_discovered": false,
            "target_iqn": export.target_iqn,
            "target_portal": export.target_portal,
            "target_lun": export.target_lun,
            "volume_id": export.volume_id,
            "auth_method": "CHAP",
            "auth_username": export.auth_username,
            "auth_password": export.auth_password,
            "encrypted": false,
            "access_mode": access_mode,
            "discard": false,
            "cacheable": false,
        }
    })
}

fn connector_json(connector: &Connector) -> String {
    serde_json::json!({
        "initiator": connector.initiator,
        "ip": connector.ip,
        "host": connector.host,
        "platform": connector.platform,
        "os_type": connector.os_type,
        "multipath": connector.multipath,
        "do_local_attach": connector.do_local_attach,
    })
    .to_string()
}

/// The connector an attachment recorded (`connector_json`), if it has one.
fn stored_connector(text: &str) -> Option<Connector> {
    let connector: serde_json::Value = serde_json::from_str(text).ok()?;
    let text = |key: &str| connector[key].as_str().unwrap_or_default().to_owned();
    Some(Connector {
        initiator: text("initiator"),
        ip: text("ip"),
        host: text("host"),
        platform: text("platform"),
        os_type: text("os_type"),
        multipath: connector["multipath"].as_bool().unwrap_or(false),
        do_local_attach: connector["do_local_attach"].as_bool().unwrap_or(false),
        extra: Default::default(),
    })
}

/// The connection info as the proto carries it: typed values become their text.
fn connection_info_proto(text: &str) -> Option<ConnectionInfo> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let data = value.get("data")?.as_object()?;
    Some(ConnectionInfo {
        driver_volume_type: value.get("driver_volume_type")?.as_str()?.to_owned(),
        data: data
            .iter()
            .map(|(key, value)| (key.clone(), value.as_str().map_or_else(|| value.to_string(), str::to_owned)))
            .collect(),
        ..Default::default()
    })
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
        connector: stored_connector(&model.connector),
        connection_info: connection_info_proto(&model.connection_info),
        mountpoint: model.mountpoint.clone(),
        attached_at: model.attached_at.map(timestamp),
        detached_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfs_exports_give_cinder_s_nfs_connection_info() {
        let export = NodeExport {
            volume_id: "v1".into(),
            nfs_export: "192.0.2.10:/srv/basalt".into(),
            nfs_name: "volume-v1".into(),
            nfs_options: "-o vers=4.2".into(),
            ..Default::default()
        };
        let info = connection_info(&export, "rw", true);
        assert_eq!(info["driver_volume_type"], "nfs");
        assert_eq!(info["data"]["export"], "192.0.2.10:/srv/basalt");
        assert_eq!(info["data"]["name"], "volume-v1");
        assert_eq!(info["data"]["options"], "-o vers=4.2");
        assert_eq!(info["data"]["format"], "raw");
        assert_eq!(info["data"]["access_mode"], "ro");
        assert!(info["data"].get("auth_password").is_none());
        let proto = connection_info_proto(&info.to_string()).unwrap();
        assert_eq!(proto.driver_volume_type, "nfs");
        assert_eq!(proto.data["export"], "192.0.2.10:/srv/basalt");
    }

    #[test]
    fn iscsi_exports_give_cinder_s_iscsi_connection_info() {
        let export = NodeExport {
            volume_id: "v1".into(),
            target_iqn: "iqn.2010-10.org.basalt:volume-v1".into(),
            target_portal: "192.0.2.10:3260".into(),
            target_lun: 1,
            auth_username: "u".into(),
            auth_password: "p".into(),
            ..Default::default()
        };
        let info = connection_info(&export, "rw", false);
        assert_eq!(info["driver_volume_type"], "iscsi");
        assert_eq!(info["data"]["target_lun"], 1);
        assert_eq!(info["data"]["auth_method"], "CHAP");
        assert_eq!(info["data"]["access_mode"], "rw");
    }
}
