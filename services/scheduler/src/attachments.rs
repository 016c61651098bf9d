//! Attachments (Cinder 3.27+). Creating one without a connector reserves the volume for a host;
//! deleting the last one frees it. Connecting a host (a connector, an export) is the export
//! target's job on the volume node.

use std::{collections::HashMap, sync::Arc};

use basalt::{
    ServiceError,
    context::CallContext,
    ids::{AttachmentId, VolumeId},
    proto::{
        self, AttachMode, AttachStatus, AttachVolumeRequest, CreateAttachmentRequest, DetachVolumeRequest,
        ExportProtocol, ListAttachmentsRequest, NodeExport, NodeExportRequest, NodeInitiatorRequest,
        UpdateAttachmentRequest, VolumeAttachment, VolumeStatus,
    },
};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
    Unchanged, sea_query::Expr,
};

use crate::{
    Core,
    core::WriteTxn,
    db::{
        attachment, db_error,
        json::{ConnectionInfo, Connector, IscsiConnection, LocalConnection, NfsConnection},
        volume,
    },
    events::PendingEvent,
    fields,
    lifecycle::{self, AttachmentAction, VolumeAction},
    listing,
    secrets::SecretKeys,
    status,
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
        let volume = status::load::<volume::Model>(&self.core.db, context, &request.volume_id).await?;
        let mode = mode_for(&volume, request.mode);
        let txn = self.core.begin_write().await?;
        let reserved = step(&*txn, &volume, VolumeAction::Reserve, AttachStatus::Reserved).await?;
        let model = attachment::ActiveModel {
            id: Set(AttachmentId::new_random()),
            volume_id: Set(volume.id),
            project_id: Set(volume.project_id.clone()),
            instance_id: Set(request.instance_id),
            host_name: Set(String::new()),
            status: Set(AttachStatus::Reserved),
            mode: Set(mode),
            connector: Set(None),
            mountpoint: Set(String::new()),
            connection_info: Set(None),
            attached_at: Set(None),
            created_at: Set(Utc::now()),
        }
        .insert(&*txn)
        .await
        .map_err(db_error)?;
        txn.commit().await?;
        self.core.publish(reserved).await;
        // A connector given at creation connects the host at once, as Cinder does.
        let Some(connector) = request.connector else {
            return Ok(model);
        };
        let attachment_id = model.id.to_string();
        let connected = self
            .update(
                context,
                UpdateAttachmentRequest { attachment_id: attachment_id.clone(), connector: Some(connector) },
            )
            .await;
        // The create fails whole: the reservation it made is taken back at once or, when the node
        // that may have granted access cannot be reached to revoke it, marked `error_attaching`
        // for `take_back_failed`, which every scheduler runs until the node answers.
        if connected.is_err()
            && let Err(error) = self.delete(context, &attachment_id).await
        {
            tracing::warn!(%attachment_id, %error, "cannot take back the reservation of a failed attachment yet; marking it for a retry");
            let failed = attachment::ActiveModel {
                id: Unchanged(model.id),
                status: Set(AttachStatus::ErrorAttaching),
                ..Default::default()
            };
            if let Err(error) = failed.update(&self.core.db).await {
                tracing::warn!(%attachment_id, %error, "cannot mark a failed attachment; its project deletes it");
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
        let connector = Connector::from(&request.connector.unwrap_or_default());
        status::check(&model, AttachmentAction::Connect, "connecting a host")?;
        let volume = status::load::<volume::Model>(&self.core.db, context, &model.volume_id.to_string()).await?;
        // The host is recorded before the node is asked: whatever happens from here on (the node
        // fails half-way, this scheduler dies), the attachment's delete takes back what the node
        // granted, so no export outlives the attachments that asked for it.
        let txn = self.core.begin_write().await?;
        attachment::Entity::update_many()
            .col_expr(attachment::Column::HostName, Expr::value(connector.host.clone()))
            .col_expr(attachment::Column::Connector, Expr::value(connector.clone()))
            .filter(attachment::Column::Id.eq(model.id))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        txn.commit().await?;
        let export = self.export_to(&volume, &connector).await?;
        let info = sealed(connection_info(&export, model.mode, volume.readonly), &self.core.config.secrets);
        let txn = self.core.begin_write().await?;
        let connected = step(&*txn, &volume, VolumeAction::Connect, AttachStatus::Attaching).await?;
        status::transition::<attachment::Model>(&*txn, model.id, AttachmentAction::Connect, "").await?;
        attachment::Entity::update_many()
            .col_expr(attachment::Column::ConnectionInfo, Expr::value(info))
            .filter(attachment::Column::Id.eq(model.id))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        txn.commit().await?;
        tracing::info!(attachment_id = %model.id, volume_id = %volume.id, initiator = %connector.initiator, "host connected");
        self.core.publish(connected).await;
        self.get(context, &model.id.to_string()).await
    }

    /// The host attached the volume: the attachment is attached and the volume in-use.
    pub async fn complete(
        &self,
        context: &CallContext,
        attachment_id: &str,
    ) -> Result<attachment::Model, ServiceError> {
        let model = self.get(context, attachment_id).await?;
        if model.status == AttachStatus::Attached {
            return Ok(model);
        }
        status::check(&model, AttachmentAction::Complete, "completing it (after a host connected)")?;
        let txn = self.core.begin_write().await?;
        let volume = status::load::<volume::Model>(&*txn, context, &model.volume_id.to_string()).await?;
        let attached = step(&*txn, &volume, VolumeAction::CompleteAttach, AttachStatus::Attached).await?;
        status::transition::<attachment::Model>(&*txn, model.id, AttachmentAction::Complete, "").await?;
        attachment::Entity::update_many()
            .col_expr(attachment::Column::AttachedAt, Expr::value(Utc::now()))
            .filter(attachment::Column::Id.eq(model.id))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        txn.commit().await?;
        self.core.publish(attached).await;
        self.get(context, &model.id.to_string()).await
    }

    pub async fn get(&self, context: &CallContext, attachment_id: &str) -> Result<attachment::Model, ServiceError> {
        status::load(&self.core.db, context, attachment_id).await
    }

    pub async fn list(
        &self,
        context: &CallContext,
        request: &ListAttachmentsRequest,
    ) -> Result<Vec<attachment::Model>, ServiceError> {
        let mut condition =
            listing::project_scope(context, request.all_projects, attachment::Column::ProjectId, "attachments")?;
        if !request.volume_id.is_empty() {
            condition = condition.add(attachment::Column::VolumeId.eq(VolumeId::parse(&request.volume_id)?));
        }
        if !request.instance_id.is_empty() {
            condition = condition.add(attachment::Column::InstanceId.eq(request.instance_id.as_str()));
        }
        if request.status != AttachStatus::Unspecified as i32 {
            let status = AttachStatus::try_from(request.status)
                .map_err(|_| ServiceError::invalid(format!("unknown attach status {}", request.status)))?;
            condition = condition.add(attachment::Column::Status.eq(status));
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
        self.remove(&model).await?;
        let remaining = ListAttachmentsRequest { volume_id: model.volume_id.to_string(), ..Default::default() };
        self.list(context, &remaining).await
    }
}

impl Attachments {
    /// Revokes what the attachment's host was granted, then removes the row (the last one frees
    /// the volume).
    async fn remove(&self, model: &attachment::Model) -> Result<(), ServiceError> {
        self.disconnect(model).await?;
        let txn = self.core.begin_write().await?;
        attachment::Entity::delete_by_id(model.id).exec(&*txn).await.map_err(db_error)?;
        self.free_if_last(txn, model.volume_id, VolumeAction::Unreserve).await
    }

    /// One pass over the attachments whose create failed (`error_attaching`): each is taken back
    /// once its node can revoke what it may have granted. Passes of several schedulers at once
    /// only repeat idempotent revokes.
    async fn take_back_failed_once(&self) -> Result<(), ServiceError> {
        let failed = attachment::Entity::find()
            .filter(attachment::Column::Status.eq(AttachStatus::ErrorAttaching))
            .all(&self.core.db)
            .await
            .map_err(db_error)?;
        for model in failed {
            match self.remove(&model).await {
                Ok(()) => {
                    tracing::info!(attachment_id = %model.id, "the reservation of a failed attachment was taken back")
                }
                Err(error) => {
                    tracing::debug!(attachment_id = %model.id, %error, "a failed attachment waits for its node")
                }
            }
        }
        Ok(())
    }

    /// Takes the host's access away on the node, and the export with the last connected host.
    /// Runs before the row goes: a node that cannot be reached fails the delete, so no ACL or
    /// target is ever forgotten.
    async fn disconnect(&self, model: &attachment::Model) -> Result<(), ServiceError> {
        let Some(connector) = &model.connector else { return Ok(()) };
        let Some(volume) = status::find::<volume::Model>(&self.core.db, model.volume_id).await? else {
            return Ok(());
        };
        self.revoke_from(&volume, connector, Some(model.id)).await?;
        tracing::info!(attachment_id = %model.id, volume_id = %volume.id, initiator = %connector.initiator, host = %connector.host, "host disconnected");
        Ok(())
    }

    /// Inside `txn`, after attachments went: with none left, `action` frees the volume (detached).
    /// Commits `txn` and announces the change.
    async fn free_if_last(&self, txn: WriteTxn, volume_id: VolumeId, action: VolumeAction) -> Result<(), ServiceError> {
        let remaining = attachment::Entity::find()
            .filter(attachment::Column::VolumeId.eq(volume_id))
            .count(&*txn)
            .await
            .map_err(db_error)?;
        let mut freed = None;
        if remaining == 0 {
            let (before, after) = status::transition::<volume::Model>(&*txn, volume_id, action, "").await?;
            volume::set_attach_status(&*txn, volume_id, AttachStatus::Detached).await?;
            freed = Some(status::changed(before, &after));
        }
        txn.commit().await?;
        self.core.publish(freed).await;
        Ok(())
    }

    /// Exports the volume on its node (idempotent) as the connector's host reaches it: locally
    /// when the host is the volume's node and asks for a local attach, over NFS when it names no
    /// iSCSI initiator, else over iSCSI with an ACL for its initiator.
    async fn export_to(&self, volume: &volume::Model, connector: &Connector) -> Result<NodeExport, ServiceError> {
        let (node_id, pool) = volume.placement()?;
        let mut node = self.core.nodes.client(&self.core.capacity, node_id.as_str())?;
        let protocol = attach_protocol(volume, connector);
        let volume_id = volume.id.to_string();
        let request = NodeExportRequest { volume_id: volume_id.clone(), pool: pool.clone(), protocol: protocol as i32 };
        let export = node.export_volume(request).await.map_err(ServiceError::from)?.into_inner();
        if protocol != ExportProtocol::Iscsi {
            return Ok(export);
        }
        let allow = NodeInitiatorRequest { volume_id, pool, initiator: connector.initiator.clone() };
        node.allow_initiator(allow).await.map_err(ServiceError::from)?;
        Ok(export)
    }

    /// Revokes what the export to `connector` granted; removes the export when no other connected
    /// attachment (than `leaving`) remains.
    async fn revoke_from(
        &self,
        volume: &volume::Model,
        connector: &Connector,
        leaving: Option<AttachmentId>,
    ) -> Result<(), ServiceError> {
        if attach_protocol(volume, connector) != ExportProtocol::Iscsi {
            // An NFS or local host: the node granted nothing of its own, so there is nothing to
            // take back.
            return Ok(());
        }
        let (node_id, pool) = volume.placement()?;
        let mut node = self.core.nodes.client(&self.core.capacity, node_id.as_str())?;
        let volume_id = volume.id.to_string();
        let request = NodeInitiatorRequest {
            volume_id: volume_id.clone(),
            pool: pool.clone(),
            initiator: connector.initiator.clone(),
        };
        node.revoke_initiator(request).await.map_err(ServiceError::from)?;
        let mut others = attachment::Entity::find()
            .filter(attachment::Column::VolumeId.eq(volume.id))
            .filter(attachment::Column::Connector.is_not_null());
        if let Some(leaving) = leaving {
            others = others.filter(attachment::Column::Id.ne(leaving));
        }
        if others.count(&self.core.db).await.map_err(db_error)? == 0 {
            node.unexport_volume(NodeExportRequest { volume_id, pool, ..Default::default() })
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
        connector: Option<proto::Connector>,
    ) -> Result<proto::ConnectionInfo, ServiceError> {
        let connector = connector.ok_or_else(|| {
            ServiceError::invalid(
                "initialize_connection needs a connector: the host's iSCSI initiator name, or none to mount an NFS volume's share",
            )
        })?;
        let volume = status::load::<volume::Model>(&self.core.db, context, volume_id).await?;
        let connectable =
            [VolumeStatus::Attaching, VolumeStatus::InUse, VolumeStatus::Reserved, VolumeStatus::Available];
        if !connectable.contains(&volume.status) {
            return Err(ServiceError::conflict(format!(
                "volume {} is {}; a host can connect while it is available, reserved, attaching or in-use",
                volume.id,
                volume.status.cinder_name()
            )));
        }
        let export = self.export_to(&volume, &Connector::from(&connector)).await?;
        Ok(proto::ConnectionInfo::from(&connection_info(&export, AttachMode::ReadWrite, volume.readonly)))
    }

    /// Legacy `os-terminate_connection`: the host's access goes, and the export with the last one.
    pub async fn terminate_connection(
        &self,
        context: &CallContext,
        volume_id: &str,
        connector: Option<proto::Connector>,
    ) -> Result<volume::Model, ServiceError> {
        let connector = connector.ok_or_else(|| {
            ServiceError::invalid("terminate_connection needs the connector that initialized the connection")
        })?;
        let volume = status::load::<volume::Model>(&self.core.db, context, volume_id).await?;
        self.revoke_from(&volume, &Connector::from(&connector), None).await?;
        Ok(volume)
    }

    /// Legacy `os-attach`: the host attached it (attaching -> in-use), recorded as an attachment.
    pub async fn attach(
        &self,
        context: &CallContext,
        request: AttachVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        let volume = status::load::<volume::Model>(&self.core.db, context, &request.volume_id).await?;
        let mode = mode_for(&volume, request.mode);
        let txn = self.core.begin_write().await?;
        let (before, after) =
            status::transition::<volume::Model>(&*txn, volume.id, VolumeAction::CompleteAttach, "").await?;
        volume::set_attach_status(&*txn, volume.id, AttachStatus::Attached).await?;
        attachment::ActiveModel {
            id: Set(AttachmentId::new_random()),
            volume_id: Set(volume.id),
            project_id: Set(volume.project_id.clone()),
            instance_id: Set(request.instance_id),
            host_name: Set(request.host_name),
            status: Set(AttachStatus::Attached),
            mode: Set(mode),
            connector: Set(None),
            mountpoint: Set(request.mountpoint),
            connection_info: Set(None),
            attached_at: Set(Some(Utc::now())),
            created_at: Set(Utc::now()),
        }
        .insert(&*txn)
        .await
        .map_err(db_error)?;
        txn.commit().await?;
        self.core.publish([status::changed(before, &after)]).await;
        Ok(after)
    }

    /// Legacy `os-detach`: the attachment (or all of them) goes; the volume is available again
    /// with the last one.
    pub async fn detach(
        &self,
        context: &CallContext,
        request: DetachVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        let volume = status::load::<volume::Model>(&self.core.db, context, &request.volume_id).await?;
        let txn = self.core.begin_write().await?;
        let mut removal = attachment::Entity::delete_many().filter(attachment::Column::VolumeId.eq(volume.id));
        if !request.attachment_id.is_empty() {
            removal = removal.filter(attachment::Column::Id.eq(AttachmentId::parse(&request.attachment_id)?));
        }
        let removed = removal.exec(&*txn).await.map_err(db_error)?;
        if removed.rows_affected == 0 && !request.attachment_id.is_empty() {
            return Err(ServiceError::not_found(format!(
                "attachment {} of volume {} not found",
                request.attachment_id, volume.id
            )));
        }
        self.free_if_last(txn, volume.id, VolumeAction::LegacyDetach).await?;
        status::load(&self.core.db, context, &volume.id.to_string()).await
    }
}

/// Read-only when asked, or when the volume is.
fn mode_for(volume: &volume::Model, asked: i32) -> AttachMode {
    match AttachMode::try_from(asked).unwrap_or_default() {
        AttachMode::ReadOnly => AttachMode::ReadOnly,
        _ if volume.readonly => AttachMode::ReadOnly,
        _ => AttachMode::ReadWrite,
    }
}

/// Moves the volume by `action` and sets its attach status, inside `txn`; except that a
/// multiattach volume another host already uses keeps its status (it is only locked, so a
/// concurrent change waits for this transaction). Returns the change to announce, if any.
async fn step(
    txn: &impl ConnectionTrait,
    volume: &volume::Model,
    action: VolumeAction,
    attach_status: AttachStatus,
) -> Result<Option<PendingEvent>, ServiceError> {
    let current = volume.status;
    let joining =
        matches!(action, VolumeAction::Reserve) && matches!(current, VolumeStatus::Reserved | VolumeStatus::Attaching);
    let shared = volume.multiattach && (current == VolumeStatus::InUse || joining);
    if shared {
        status::lock::<volume::Model>(txn, volume.id, &[current], "attaching it").await?;
        return Ok(None);
    }
    let (before, after) = status::transition::<volume::Model>(txn, volume.id, action, "").await?;
    volume::set_attach_status(txn, volume.id, attach_status).await?;
    Ok(Some(status::changed(before, &after)))
}

/// How `connector`'s host reaches `volume`: locally when it is the volume's node and asks for a
/// local attach (os-brick's `do_local_attach`, which the CSI node plugin sets), over NFS when it
/// names no iSCSI initiator, else over iSCSI.
fn attach_protocol(volume: &volume::Model, connector: &Connector) -> ExportProtocol {
    let on_its_node =
        !connector.host.is_empty() && volume.node_id.as_ref().is_some_and(|node_id| node_id.as_str() == connector.host);
    if connector.do_local_attach && on_its_node {
        ExportProtocol::Local
    } else if connector.initiator.is_empty() {
        ExportProtocol::Nfs
    } else {
        ExportProtocol::Iscsi
    }
}

/// Cinder's `connection_info` for an export: iSCSI as `_get_iscsi_properties` builds it, NFS as
/// the remotefs driver does, and a local attach as os-brick's local connector takes it.
fn connection_info(export: &NodeExport, mode: AttachMode, readonly: bool) -> ConnectionInfo {
    let access_mode = if readonly { AttachMode::ReadOnly } else { mode }.cinder_name().to_owned();
    let volume_id = export.volume_id.clone();
    if !export.local_path.is_empty() {
        return ConnectionInfo::Local(LocalConnection {
            device_path: export.local_path.clone(),
            volume_id,
            access_mode,
        });
    }
    if !export.nfs_export.is_empty() {
        return ConnectionInfo::Nfs(NfsConnection {
            export: export.nfs_export.clone(),
            name: export.nfs_name.clone(),
            format: "raw".into(),
            volume_id,
            access_mode,
            options: (!export.nfs_options.is_empty()).then(|| export.nfs_options.clone()),
        });
    }
    ConnectionInfo::Iscsi(IscsiConnection {
        target_discovered: false,
        target_iqn: export.target_iqn.clone(),
        target_portal: export.target_portal.clone(),
        target_lun: export.target_lun,
        volume_id,
        auth_method: "CHAP".into(),
        auth_username: export.auth_username.clone(),
        auth_password: export.auth_password.clone(),
        encrypted: false,
        access_mode,
        discard: false,
        cacheable: false,
    })
}

/// The attachments of `volume_ids`, as shown inside a volume.
pub async fn for_volumes(
    db: &impl ConnectionTrait,
    volume_ids: &[VolumeId],
) -> Result<HashMap<VolumeId, Vec<VolumeAttachment>>, ServiceError> {
    if volume_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = attachment::Entity::find()
        .filter(attachment::Column::VolumeId.is_in(volume_ids.iter().copied()))
        .all(db)
        .await
        .map_err(db_error)?;
    let mut by_volume: HashMap<VolumeId, Vec<VolumeAttachment>> = HashMap::new();
    for row in rows {
        by_volume.entry(row.volume_id).or_default().push(VolumeAttachment {
            id: row.id.to_string(),
            volume_id: row.volume_id.to_string(),
            server_id: row.instance_id.clone(),
            host_name: row.host_name.clone(),
            device: row.mountpoint.clone(),
            attached_at: row.attached_at.map(|at| std::time::SystemTime::from(at).into()),
        });
    }
    Ok(by_volume)
}

status::stateful! {
    attachment: kind "attachment", id AttachmentId, status AttachStatus, action AttachmentAction, rule lifecycle::attachment,
    reason None, updated_at None;
    /// An attachment holds no quota or space of its own.
    async fn release(&self, _txn: &impl ConnectionTrait) -> Result<(), ServiceError> {
        Ok(())
    }
}

/// Connection info as it is stored: the CHAP password sealed (`secrets.rs`).
fn sealed(info: ConnectionInfo, keys: &SecretKeys) -> ConnectionInfo {
    match info {
        ConnectionInfo::Iscsi(mut iscsi) => {
            iscsi.auth_password = keys.seal(&iscsi.auth_password);
            ConnectionInfo::Iscsi(iscsi)
        }
        other => other,
    }
}

/// Stored connection info as `viewer` may see it: the CHAP password opened for the attachment's
/// own project only (an admin listing every project's attachments sees none).
fn shown(info: &ConnectionInfo, own: bool, keys: &SecretKeys) -> proto::ConnectionInfo {
    let mut shown = proto::ConnectionInfo::from(info);
    if let Some(proto::connection_info::Target::Iscsi(iscsi)) = shown.target.as_mut() {
        iscsi.auth_password = if own {
            keys.open(&iscsi.auth_password).unwrap_or_else(|error| {
                tracing::warn!(%error, "an attachment's CHAP password cannot be opened; the host must connect again");
                String::new()
            })
        } else {
            String::new()
        };
    }
    shown
}

pub fn to_proto(model: &attachment::Model, viewer: &CallContext, keys: &SecretKeys) -> proto::Attachment {
    let own = viewer.project_id == model.project_id;
    proto::Attachment {
        id: model.id.to_string(),
        volume_id: model.volume_id.to_string(),
        project_id: model.project_id.to_string(),
        instance_id: model.instance_id.clone(),
        host_name: model.host_name.clone(),
        status: model.status as i32,
        mode: model.mode as i32,
        connector: model.connector.as_ref().map(proto::Connector::from),
        connection_info: model.connection_info.as_ref().map(|info| shown(info, own, keys)),
        mountpoint: model.mountpoint.clone(),
        attached_at: model.attached_at.map(|at| std::time::SystemTime::from(at).into()),
        detached_at: None,
    }
}

/// Takes back failed attachments (`error_attaching`) every reconcile interval until `stopped`.
pub async fn take_back_failed(core: Arc<Core>, stopped: impl Future<Output = ()>) {
    let attachments = Attachments::new(core.clone());
    basalt::server::every(core.config.reconcile_interval, stopped, || async {
        if let Err(error) = attachments.take_back_failed_once().await {
            tracing::warn!(%error, "cannot look for failed attachments; retrying");
        }
    })
    .await
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
        let info = serde_json::to_value(connection_info(&export, AttachMode::ReadWrite, true)).unwrap();
        assert_eq!(info["driver_volume_type"], "nfs");
        assert_eq!(info["data"]["export"], "192.0.2.10:/srv/basalt");
        assert_eq!(info["data"]["name"], "volume-v1");
        assert_eq!(info["data"]["options"], "-o vers=4.2");
        assert_eq!(info["data"]["format"], "raw");
        assert_eq!(info["data"]["access_mode"], "ro");
        assert!(info["data"].get("auth_password").is_none());
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
        let info = connection_info(&export, AttachMode::ReadWrite, false);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["driver_volume_type"], "iscsi");
        assert_eq!(json["data"]["target_lun"], 1);
        assert_eq!(json["data"]["auth_method"], "CHAP");
        assert_eq!(json["data"]["access_mode"], "rw");
        let shown = proto::ConnectionInfo::from(&info);
        assert!(
            matches!(shown.target, Some(proto::connection_info::Target::Iscsi(ref iscsi)) if iscsi.target_lun == 1)
        );
    }
}
