//! The VolumeService gRPC surface: reads the call context and hands over to the domain modules.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Instant,
};

use basalt::{
    ServiceError,
    context::CallContext,
    ids::{ProjectId, VolumeTypeId},
    proto::{
        AcceptTransferRequest, AssociateQosSpecsRequest, AttachStateChange, AttachVolumeRequest, Attachment,
        AvailabilityZone, Backup, BackupRecord, ChangeAttachStateRequest, CompleteAttachmentRequest, ConnectionInfo,
        CreateAttachmentRequest, CreateBackupRequest, CreateGroupFromSourceRequest, CreateGroupRequest,
        CreateGroupSnapshotRequest, CreateGroupTypeRequest, CreateQosSpecsRequest, CreateSnapshotRequest,
        CreateTransferRequest, CreateVolumeRequest, CreateVolumeTypeRequest, DeclareNodeLostRequest,
        DeleteAttachmentRequest, DeleteBackupRequest, DeleteGroupRequest, DeleteGroupSnapshotRequest,
        DeleteGroupTypeRequest, DeleteGroupTypeResponse, DeleteMessageRequest, DeleteMessageResponse,
        DeleteQosSpecsRequest, DeleteQosSpecsResponse, DeleteSnapshotRequest, DeleteTransferRequest,
        DeleteTransferResponse, DeleteVolumeRequest, DeleteVolumeTypeRequest, DeleteVolumeTypeResponse,
        DetachVolumeRequest, ExtendVolumeRequest, GetAttachmentRequest, GetBackupRequest, GetDefaultVolumeTypeRequest,
        GetGroupRequest, GetGroupSnapshotRequest, GetGroupTypeRequest, GetMessageRequest, GetProjectDefaultTypeRequest,
        GetQosSpecsRequest, GetQuotasRequest, GetSnapshotRequest, GetTransferRequest, GetVolumeRequest,
        GetVolumeTypeRequest, Group, GroupSnapshot, GroupType, InitializeConnectionRequest, ListAttachmentsRequest,
        ListAttachmentsResponse, ListAvailabilityZonesRequest, ListAvailabilityZonesResponse, ListBackupsRequest,
        ListBackupsResponse, ListGroupSnapshotsRequest, ListGroupSnapshotsResponse, ListGroupTypesRequest,
        ListGroupTypesResponse, ListGroupsRequest, ListGroupsResponse, ListManageableSnapshotsResponse,
        ListManageableVolumesRequest, ListManageableVolumesResponse, ListMessagesRequest, ListMessagesResponse,
        ListOperationsRequest, ListOperationsResponse, ListPoolsRequest, ListPoolsResponse,
        ListProjectDefaultTypesRequest, ListProjectDefaultTypesResponse, ListQosSpecsAssociationsResponse,
        ListQosSpecsRequest, ListQosSpecsResponse, ListServicesRequest, ListServicesResponse, ListSnapshotsRequest,
        ListSnapshotsResponse, ListTransfersRequest, ListTransfersResponse, ListVolumeTypesRequest,
        ListVolumeTypesResponse, ListVolumesRequest, ListVolumesResponse, ManageSnapshotRequest, ManageVolumeRequest,
        MigrateVolumeRequest, MoveNodeResourcesRequest, NodeRecoveryResponse, Pool, PoolRef, ProjectDefaultType,
        QosSpecs, QuotaSet, ResetBackupStatusRequest, ResetGroupSnapshotStatusRequest, ResetGroupStatusRequest,
        ResetSnapshotStatusRequest, ResetVolumeStatusRequest, RestoreBackupRequest, RestoreBackupResponse,
        RetypeVolumeRequest, RevertVolumeRequest, Service, SetGroupSpecsRequest, SetProjectDefaultTypeRequest,
        SetVolumeTypeExtraSpecsRequest, Snapshot, TerminateConnectionRequest, Transfer, UnmanageSnapshotRequest,
        UnmanageVolumeRequest, UnmanageVolumeResponse, UnsetGroupSpecRequest, UnsetProjectDefaultTypeRequest,
        UnsetProjectDefaultTypeResponse, UnsetVolumeTypeExtraSpecRequest, UpdateAttachmentRequest, UpdateBackupRequest,
        UpdateGroupRequest, UpdateGroupTypeRequest, UpdateQosSpecsRequest, UpdateQuotasRequest, UpdateServiceRequest,
        UpdateSnapshotRequest, UpdateVolumeRequest, UpdateVolumeTypeRequest, UserMessage, Volume, VolumeType,
        VolumeTypeAccessRequest, volume_service_server::VolumeService,
    },
};
use tonic::{Request, Response, Status};

use crate::{
    Core,
    attachments::{self, Attachments},
    backups::{self, Backups},
    claims,
    db::{self, volume},
    group_snapshots::GroupSnapshots,
    group_types,
    groups::Groups,
    journal, messages, node_recovery, placement,
    qos::{self, Qos},
    quotas, service_states,
    snapshots::{self, Snapshots},
    transfers::{self, Transfers},
    volume_types,
    volumes::{self, Volumes},
};

const GIB: u64 = 1 << 30;

pub struct VolumeApi {
    core: Arc<Core>,
    volumes: Volumes,
    snapshots: Snapshots,
    attachments: Attachments,
    backups: Backups,
    groups: Groups,
    group_snapshots: GroupSnapshots,
}

impl VolumeApi {
    pub fn new(core: Arc<Core>) -> Self {
        Self {
            volumes: Volumes::new(core.clone()),
            snapshots: Snapshots::new(core.clone()),
            attachments: Attachments::new(core.clone()),
            backups: Backups::new(core.clone()),
            groups: Groups::new(core.clone()),
            group_snapshots: GroupSnapshots::new(core.clone()),
            core,
        }
    }

    async fn group_reply(&self, model: &db::group::Model) -> Result<Response<Group>, Status> {
        Ok(Response::new(self.groups.to_proto(model).await?))
    }

    async fn group_snapshot_reply(&self, model: &db::group_snapshot::Model) -> Result<Response<GroupSnapshot>, Status> {
        Ok(Response::new(self.group_snapshots.to_proto(model).await?))
    }

    async fn volume_reply(&self, model: &volume::Model) -> Result<Response<Volume>, Status> {
        let names = volume_types::names(&self.core.db, [model.volume_type_id]).await?;
        self.volume_reply_named(model, &names).await
    }

    /// [`Self::volume_reply`] with the type's name already read.
    async fn volume_reply_named(
        &self,
        model: &volume::Model,
        names: &HashMap<VolumeTypeId, String>,
    ) -> Result<Response<Volume>, Status> {
        let attached = attachments::for_volumes(&self.core.db, std::slice::from_ref(&model.id)).await?;
        Ok(Response::new(volumes::to_proto(model, names, &attached)))
    }

    async fn backup_reply(&self, model: &db::backup::Model) -> Result<Response<Backup>, Status> {
        let parents = backups::dependents(&self.core.db, std::slice::from_ref(&model.id)).await?;
        Ok(Response::new(backups::to_proto(model, parents.contains(&model.id))))
    }

    async fn type_reply(&self, model: &db::volume_type::Model) -> Result<Response<VolumeType>, Status> {
        Ok(Response::new(volume_types::to_proto(&self.core.db, model).await?))
    }
}

impl VolumeApi {
    /// The caller, once the policy allows it `rule` (Cinder's name for the action) on its project.
    fn authorize<T>(&self, request: &Request<T>, rule: &str) -> Result<CallContext, Status> {
        let context = CallContext::from_metadata(request.metadata(), self.core.config.policy.clone())?;
        context.authorize(rule)?;
        Ok(context)
    }
}

/// The project a quota call is about: the caller's own, or another one for admins.
fn quota_project(context: &CallContext, requested: &str) -> Result<ProjectId, ServiceError> {
    if requested.is_empty() || requested == context.project_id.as_str() {
        return Ok(context.project_id.clone());
    }
    context.require_admin("reading or changing another project's quotas")?;
    ProjectId::parse(requested)
}

#[tonic::async_trait]
impl VolumeService for VolumeApi {
    async fn create_volume(&self, request: Request<CreateVolumeRequest>) -> Result<Response<Volume>, Status> {
        let context = self.authorize(&request, "volume:create")?;
        let model = self.volumes.create(&context, request.into_inner()).await?;
        self.volume_reply(&model).await
    }

    async fn get_volume(&self, request: Request<GetVolumeRequest>) -> Result<Response<Volume>, Status> {
        let context = self.authorize(&request, "volume:get")?;
        // Polled by every client that waits for a volume: the row and its type in one query.
        let (model, volume_type) = self.volumes.get_with_type(&context, &request.get_ref().volume_id).await?;
        let names = volume_type.into_iter().map(|volume_type| (volume_type.id, volume_type.name)).collect();
        self.volume_reply_named(&model, &names).await
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let context = self.authorize(&request, "volume:get_all")?;
        let (rows, page) = self.volumes.list(&context, request.get_ref()).await?;
        let names = volume_types::names(&self.core.db, rows.iter().map(|row| row.volume_type_id)).await?;
        let ids: Vec<_> = rows.iter().map(|row| row.id).collect();
        let attached = attachments::for_volumes(&self.core.db, &ids).await?;
        Ok(Response::new(ListVolumesResponse {
            volumes: rows.iter().map(|row| volumes::to_proto(row, &names, &attached)).collect(),
            page: Some(page),
        }))
    }

    async fn delete_volume(&self, request: Request<DeleteVolumeRequest>) -> Result<Response<Volume>, Status> {
        let context = self.authorize(&request, "volume:delete")?;
        let model = self.volumes.delete(&context, request.get_ref()).await?;
        self.volume_reply(&model).await
    }

    async fn update_volume(&self, request: Request<UpdateVolumeRequest>) -> Result<Response<Volume>, Status> {
        let context = self.authorize(&request, "volume:update")?;
        let model = self.volumes.update(&context, request.into_inner()).await?;
        self.volume_reply(&model).await
    }

    async fn extend_volume(&self, request: Request<ExtendVolumeRequest>) -> Result<Response<Volume>, Status> {
        let context = self.authorize(&request, "volume:extend")?;
        let model = self.volumes.extend(&context, request.into_inner()).await?;
        self.volume_reply(&model).await
    }

    async fn reset_volume_status(
        &self,
        request: Request<ResetVolumeStatusRequest>,
    ) -> Result<Response<Volume>, Status> {
        let context = self.authorize(&request, "volume_extension:volume_admin_actions:reset_status")?;
        let model = self.volumes.reset_status(&context, request.into_inner()).await?;
        self.volume_reply(&model).await
    }

    async fn revert_volume_to_snapshot(
        &self,
        request: Request<RevertVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        let context = self.authorize(&request, "volume:revert_to_snapshot")?;
        let model = self.volumes.revert(&context, request.into_inner()).await?;
        self.volume_reply(&model).await
    }

    async fn create_snapshot(&self, request: Request<CreateSnapshotRequest>) -> Result<Response<Snapshot>, Status> {
        let context = self.authorize(&request, "volume:create_snapshot")?;
        let model = self.snapshots.create(&context, request.into_inner()).await?;
        Ok(Response::new(snapshots::to_proto(&model)))
    }

    async fn get_snapshot(&self, request: Request<GetSnapshotRequest>) -> Result<Response<Snapshot>, Status> {
        let context = self.authorize(&request, "volume:get_snapshot")?;
        let model = self.snapshots.get(&context, &request.get_ref().snapshot_id).await?;
        Ok(Response::new(snapshots::to_proto(&model)))
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let context = self.authorize(&request, "volume:get_all_snapshots")?;
        let (rows, page) = self.snapshots.list(&context, request.get_ref()).await?;
        Ok(Response::new(ListSnapshotsResponse {
            snapshots: rows.iter().map(snapshots::to_proto).collect(),
            page: Some(page),
        }))
    }

    async fn update_snapshot(&self, request: Request<UpdateSnapshotRequest>) -> Result<Response<Snapshot>, Status> {
        let context = self.authorize(&request, "volume:update_snapshot")?;
        let model = self.snapshots.update(&context, request.into_inner()).await?;
        Ok(Response::new(snapshots::to_proto(&model)))
    }

    async fn delete_snapshot(&self, request: Request<DeleteSnapshotRequest>) -> Result<Response<Snapshot>, Status> {
        let context = self.authorize(&request, "volume:delete_snapshot")?;
        let model = self.snapshots.delete(&context, request.get_ref()).await?;
        Ok(Response::new(snapshots::to_proto(&model)))
    }

    async fn reset_snapshot_status(
        &self,
        request: Request<ResetSnapshotStatusRequest>,
    ) -> Result<Response<Snapshot>, Status> {
        let context = self.authorize(&request, "volume_extension:snapshot_admin_actions:reset_status")?;
        let model = self.snapshots.reset_status(&context, request.into_inner()).await?;
        Ok(Response::new(snapshots::to_proto(&model)))
    }

    async fn create_group_type(&self, request: Request<CreateGroupTypeRequest>) -> Result<Response<GroupType>, Status> {
        let context = self.authorize(&request, "group:group_types_manage")?;
        let model = group_types::create(&self.core, request.into_inner()).await?;
        Ok(Response::new(group_types::to_proto(&model, &context)))
    }

    async fn get_group_type(&self, request: Request<GetGroupTypeRequest>) -> Result<Response<GroupType>, Status> {
        let context = self.authorize(&request, "group:group_types:get")?;
        let model = group_types::resolve(&self.core.db, &context, &request.get_ref().group_type).await?;
        Ok(Response::new(group_types::to_proto(&model, &context)))
    }

    async fn list_group_types(
        &self,
        request: Request<ListGroupTypesRequest>,
    ) -> Result<Response<ListGroupTypesResponse>, Status> {
        let context = self.authorize(&request, "group:group_types:get_all")?;
        let models = group_types::list(&self.core.db, &context, request.get_ref()).await?;
        let group_types = models.iter().map(|model| group_types::to_proto(model, &context)).collect();
        Ok(Response::new(ListGroupTypesResponse { group_types }))
    }

    async fn update_group_type(&self, request: Request<UpdateGroupTypeRequest>) -> Result<Response<GroupType>, Status> {
        let context = self.authorize(&request, "group:group_types_manage")?;
        let model = group_types::update(&self.core, request.into_inner()).await?;
        Ok(Response::new(group_types::to_proto(&model, &context)))
    }

    async fn delete_group_type(
        &self,
        request: Request<DeleteGroupTypeRequest>,
    ) -> Result<Response<DeleteGroupTypeResponse>, Status> {
        self.authorize(&request, "group:group_types_manage")?;
        group_types::delete(&self.core, &request.get_ref().group_type_id).await?;
        Ok(Response::new(DeleteGroupTypeResponse {}))
    }

    async fn set_group_specs(&self, request: Request<SetGroupSpecsRequest>) -> Result<Response<GroupType>, Status> {
        let context = self.authorize(&request, "group:group_types_specs")?;
        let request = request.into_inner();
        let model = group_types::edit_specs(&self.core, &request.group_type_id, request.group_specs, None).await?;
        Ok(Response::new(group_types::to_proto(&model, &context)))
    }

    async fn unset_group_spec(&self, request: Request<UnsetGroupSpecRequest>) -> Result<Response<GroupType>, Status> {
        let context = self.authorize(&request, "group:group_types_specs")?;
        let request = request.get_ref();
        let specs = Default::default();
        let model = group_types::edit_specs(&self.core, &request.group_type_id, specs, Some(&request.key)).await?;
        Ok(Response::new(group_types::to_proto(&model, &context)))
    }

    async fn create_group(&self, request: Request<CreateGroupRequest>) -> Result<Response<Group>, Status> {
        let context = self.authorize(&request, "group:create")?;
        let model = self.groups.create(&context, request.into_inner()).await?;
        self.group_reply(&model).await
    }

    async fn get_group(&self, request: Request<GetGroupRequest>) -> Result<Response<Group>, Status> {
        let context = self.authorize(&request, "group:get")?;
        let model = self.groups.get(&context, &request.get_ref().group_id).await?;
        self.group_reply(&model).await
    }

    async fn list_groups(&self, request: Request<ListGroupsRequest>) -> Result<Response<ListGroupsResponse>, Status> {
        let context = self.authorize(&request, "group:get_all")?;
        let (models, page) = self.groups.list(&context, request.get_ref()).await?;
        let mut groups = Vec::with_capacity(models.len());
        for model in &models {
            groups.push(self.groups.to_proto(model).await?);
        }
        Ok(Response::new(ListGroupsResponse { groups, page: Some(page) }))
    }

    async fn update_group(&self, request: Request<UpdateGroupRequest>) -> Result<Response<Group>, Status> {
        let context = self.authorize(&request, "group:update")?;
        let model = self.groups.update(&context, request.into_inner()).await?;
        self.group_reply(&model).await
    }

    async fn delete_group(&self, request: Request<DeleteGroupRequest>) -> Result<Response<Group>, Status> {
        let context = self.authorize(&request, "group:delete")?;
        let model = self.groups.delete(&context, request.into_inner()).await?;
        self.group_reply(&model).await
    }

    async fn reset_group_status(&self, request: Request<ResetGroupStatusRequest>) -> Result<Response<Group>, Status> {
        let context = self.authorize(&request, "group:reset_status")?;
        let model = self.groups.reset_status(&context, request.into_inner()).await?;
        self.group_reply(&model).await
    }

    async fn create_group_from_source(
        &self,
        request: Request<CreateGroupFromSourceRequest>,
    ) -> Result<Response<Group>, Status> {
        let context = self.authorize(&request, "group:create")?;
        let model = self.groups.create_from_source(&context, request.into_inner()).await?;
        self.group_reply(&model).await
    }

    async fn create_group_snapshot(
        &self,
        request: Request<CreateGroupSnapshotRequest>,
    ) -> Result<Response<GroupSnapshot>, Status> {
        let context = self.authorize(&request, "group:create_group_snapshot")?;
        let model = self.group_snapshots.create(&context, request.into_inner()).await?;
        self.group_snapshot_reply(&model).await
    }

    async fn get_group_snapshot(
        &self,
        request: Request<GetGroupSnapshotRequest>,
    ) -> Result<Response<GroupSnapshot>, Status> {
        let context = self.authorize(&request, "group:get_group_snapshot")?;
        let model = self.group_snapshots.get(&context, &request.get_ref().group_snapshot_id).await?;
        self.group_snapshot_reply(&model).await
    }

    async fn list_group_snapshots(
        &self,
        request: Request<ListGroupSnapshotsRequest>,
    ) -> Result<Response<ListGroupSnapshotsResponse>, Status> {
        let context = self.authorize(&request, "group:get_all_group_snapshots")?;
        let (models, page) = self.group_snapshots.list(&context, request.get_ref()).await?;
        let mut group_snapshots = Vec::with_capacity(models.len());
        for model in &models {
            group_snapshots.push(self.group_snapshots.to_proto(model).await?);
        }
        Ok(Response::new(ListGroupSnapshotsResponse { group_snapshots, page: Some(page) }))
    }

    async fn delete_group_snapshot(
        &self,
        request: Request<DeleteGroupSnapshotRequest>,
    ) -> Result<Response<GroupSnapshot>, Status> {
        let context = self.authorize(&request, "group:delete_group_snapshot")?;
        let model = self.group_snapshots.delete(&context, request.into_inner()).await?;
        self.group_snapshot_reply(&model).await
    }

    async fn reset_group_snapshot_status(
        &self,
        request: Request<ResetGroupSnapshotStatusRequest>,
    ) -> Result<Response<GroupSnapshot>, Status> {
        let context = self.authorize(&request, "group:reset_group_snapshot_status")?;
        let model = self.group_snapshots.reset_status(&context, request.into_inner()).await?;
        self.group_snapshot_reply(&model).await
    }

    async fn create_volume_type(
        &self,
        request: Request<CreateVolumeTypeRequest>,
    ) -> Result<Response<VolumeType>, Status> {
        self.authorize(&request, "volume_extension:types_manage")?;
        let model = volume_types::create(&self.core, request.into_inner()).await?;
        self.type_reply(&model).await
    }

    async fn get_volume_type(&self, request: Request<GetVolumeTypeRequest>) -> Result<Response<VolumeType>, Status> {
        let context = self.authorize(&request, "volume_extension:type_get")?;
        let model = volume_types::resolve(&self.core.db, &context, &request.get_ref().volume_type).await?;
        self.type_reply(&model).await
    }

    async fn get_default_volume_type(
        &self,
        request: Request<GetDefaultVolumeTypeRequest>,
    ) -> Result<Response<VolumeType>, Status> {
        let context = self.authorize(&request, "volume_extension:type_get")?;
        let model = volume_types::default_type(&self.core.db, &context.project_id).await?;
        self.type_reply(&model).await
    }

    async fn create_transfer(&self, request: Request<CreateTransferRequest>) -> Result<Response<Transfer>, Status> {
        let context = self.authorize(&request, "volume:create_transfer")?;
        let (model, key) = Transfers::new(&self.core).create(&context, request.into_inner()).await?;
        Ok(Response::new(transfers::to_proto(&model, Some(&key))))
    }

    async fn get_transfer(&self, request: Request<GetTransferRequest>) -> Result<Response<Transfer>, Status> {
        let context = self.authorize(&request, "volume:get_transfer")?;
        let model = Transfers::new(&self.core).get(&context, &request.get_ref().transfer_id).await?;
        Ok(Response::new(transfers::to_proto(&model, None)))
    }

    async fn list_transfers(
        &self,
        request: Request<ListTransfersRequest>,
    ) -> Result<Response<ListTransfersResponse>, Status> {
        let context = self.authorize(&request, "volume:get_all_transfers")?;
        let models = Transfers::new(&self.core).list(&context, request.get_ref().all_projects).await?;
        let transfers = models.iter().map(|model| transfers::to_proto(model, None)).collect();
        Ok(Response::new(ListTransfersResponse { transfers }))
    }

    async fn accept_transfer(&self, request: Request<AcceptTransferRequest>) -> Result<Response<Transfer>, Status> {
        let context = self.authorize(&request, "volume:accept_transfer")?;
        let request = request.into_inner();
        let model = Transfers::new(&self.core).accept(&context, &request.transfer_id, &request.auth_key).await?;
        let mut accepted = transfers::to_proto(&model, None);
        accepted.destination_project_id = context.project_id.to_string();
        accepted.accepted = true;
        Ok(Response::new(accepted))
    }

    async fn delete_transfer(
        &self,
        request: Request<DeleteTransferRequest>,
    ) -> Result<Response<DeleteTransferResponse>, Status> {
        let context = self.authorize(&request, "volume:delete_transfer")?;
        Transfers::new(&self.core).delete(&context, &request.get_ref().transfer_id).await?;
        Ok(Response::new(DeleteTransferResponse {}))
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let context = self.authorize(&request, "message:get_all")?;
        let (models, page_info) = messages::list(&self.core, &context, request.get_ref()).await?;
        let messages = models.iter().map(messages::to_proto).collect();
        Ok(Response::new(ListMessagesResponse { messages, page_info: Some(page_info) }))
    }

    async fn get_message(&self, request: Request<GetMessageRequest>) -> Result<Response<UserMessage>, Status> {
        let context = self.authorize(&request, "message:get")?;
        let model = messages::get(&self.core, &context, &request.get_ref().message_id).await?;
        Ok(Response::new(messages::to_proto(&model)))
    }

    async fn delete_message(
        &self,
        request: Request<DeleteMessageRequest>,
    ) -> Result<Response<DeleteMessageResponse>, Status> {
        let context = self.authorize(&request, "message:delete")?;
        messages::delete(&self.core, &context, &request.get_ref().message_id).await?;
        Ok(Response::new(DeleteMessageResponse {}))
    }

    async fn set_project_default_type(
        &self,
        request: Request<SetProjectDefaultTypeRequest>,
    ) -> Result<Response<ProjectDefaultType>, Status> {
        let context = self.authorize(&request, "volume_extension:default_set_or_update")?;
        let request = request.into_inner();
        let row =
            volume_types::set_project_default(&self.core, &context, &request.project_id, &request.volume_type).await?;
        Ok(Response::new(volume_types::default_to_proto(&row)))
    }

    async fn get_project_default_type(
        &self,
        request: Request<GetProjectDefaultTypeRequest>,
    ) -> Result<Response<ProjectDefaultType>, Status> {
        self.authorize(&request, "volume_extension:default_get")?;
        let row = volume_types::project_default(&self.core.db, &request.get_ref().project_id).await?;
        Ok(Response::new(volume_types::default_to_proto(&row)))
    }

    async fn list_project_default_types(
        &self,
        request: Request<ListProjectDefaultTypesRequest>,
    ) -> Result<Response<ListProjectDefaultTypesResponse>, Status> {
        self.authorize(&request, "volume_extension:default_get_all")?;
        let rows = volume_types::project_defaults(&self.core.db).await?;
        Ok(Response::new(ListProjectDefaultTypesResponse {
            default_types: rows.iter().map(volume_types::default_to_proto).collect(),
        }))
    }

    async fn unset_project_default_type(
        &self,
        request: Request<UnsetProjectDefaultTypeRequest>,
    ) -> Result<Response<UnsetProjectDefaultTypeResponse>, Status> {
        self.authorize(&request, "volume_extension:default_unset")?;
        volume_types::unset_project_default(&self.core, &request.get_ref().project_id).await?;
        Ok(Response::new(UnsetProjectDefaultTypeResponse {}))
    }

    async fn list_volume_types(
        &self,
        request: Request<ListVolumeTypesRequest>,
    ) -> Result<Response<ListVolumeTypesResponse>, Status> {
        let context = self.authorize(&request, "volume_extension:type_get_all")?;
        let models = volume_types::list(&self.core.db, &context, request.get_ref()).await?;
        let mut volume_types = Vec::with_capacity(models.len());
        for model in &models {
            volume_types.push(volume_types::to_proto(&self.core.db, model).await?);
        }
        Ok(Response::new(ListVolumeTypesResponse { volume_types }))
    }

    async fn update_volume_type(
        &self,
        request: Request<UpdateVolumeTypeRequest>,
    ) -> Result<Response<VolumeType>, Status> {
        self.authorize(&request, "volume_extension:types_manage")?;
        let model = volume_types::update(&self.core, request.into_inner()).await?;
        self.type_reply(&model).await
    }

    async fn delete_volume_type(
        &self,
        request: Request<DeleteVolumeTypeRequest>,
    ) -> Result<Response<DeleteVolumeTypeResponse>, Status> {
        self.authorize(&request, "volume_extension:types_manage")?;
        volume_types::delete(&self.core, &request.get_ref().volume_type_id).await?;
        Ok(Response::new(DeleteVolumeTypeResponse {}))
    }

    async fn set_volume_type_extra_specs(
        &self,
        request: Request<SetVolumeTypeExtraSpecsRequest>,
    ) -> Result<Response<VolumeType>, Status> {
        self.authorize(&request, "volume_extension:types_extra_specs:create")?;
        let model = volume_types::set_extra_specs(&self.core, request.into_inner()).await?;
        self.type_reply(&model).await
    }

    async fn unset_volume_type_extra_spec(
        &self,
        request: Request<UnsetVolumeTypeExtraSpecRequest>,
    ) -> Result<Response<VolumeType>, Status> {
        self.authorize(&request, "volume_extension:types_extra_specs:delete")?;
        let request = request.get_ref();
        let model = volume_types::unset_extra_spec(&self.core, &request.volume_type_id, &request.key).await?;
        self.type_reply(&model).await
    }

    async fn add_volume_type_access(
        &self,
        request: Request<VolumeTypeAccessRequest>,
    ) -> Result<Response<VolumeType>, Status> {
        self.authorize(&request, "volume_extension:volume_type_access:addProjectAccess")?;
        let request = request.get_ref();
        let model = volume_types::set_access(&self.core, &request.volume_type_id, &request.project_id, true).await?;
        self.type_reply(&model).await
    }

    async fn remove_volume_type_access(
        &self,
        request: Request<VolumeTypeAccessRequest>,
    ) -> Result<Response<VolumeType>, Status> {
        self.authorize(&request, "volume_extension:volume_type_access:removeProjectAccess")?;
        let request = request.get_ref();
        let model = volume_types::set_access(&self.core, &request.volume_type_id, &request.project_id, false).await?;
        self.type_reply(&model).await
    }

    async fn get_quotas(&self, request: Request<GetQuotasRequest>) -> Result<Response<QuotaSet>, Status> {
        let context = self.authorize(&request, "volume_extension:quotas:show")?;
        // Defaults too are another project's business only for admins, as in Cinder.
        let project = quota_project(&context, &request.get_ref().project_id)?;
        if request.get_ref().defaults_only {
            return Ok(Response::new(
                quotas::default_set(&self.core.db, &self.core.config.quota_defaults, &project).await?,
            ));
        }
        Ok(Response::new(quotas::quota_set(&self.core.db, &self.core.config.quota_defaults, &project).await?))
    }

    async fn update_quotas(&self, request: Request<UpdateQuotasRequest>) -> Result<Response<QuotaSet>, Status> {
        let context = self.authorize(&request, "volume_extension:quotas:update")?;
        let request = request.into_inner();
        let project = quota_project(&context, &request.project_id)?;
        let txn = self.core.begin_write().await?;
        if request.reset {
            quotas::reset_limits(&*txn, &project).await?;
        }
        quotas::update_limits(&*txn, &project, &request.limits).await?;
        txn.commit().await?;
        Ok(Response::new(quotas::quota_set(&self.core.db, &self.core.config.quota_defaults, &project).await?))
    }

    async fn list_availability_zones(
        &self,
        request: Request<ListAvailabilityZonesRequest>,
    ) -> Result<Response<ListAvailabilityZonesResponse>, Status> {
        self.authorize(&request, "volume_extension:availability_zone_list")?;
        let now = Instant::now();
        let mut zones: BTreeMap<String, bool> = BTreeMap::new();
        for node in self.core.capacity.nodes() {
            let available = zones.entry(node.report.availability_zone.clone()).or_insert(false);
            *available |= node.is_fresh(now);
        }
        Ok(Response::new(ListAvailabilityZonesResponse {
            availability_zones: zones
                .into_iter()
                .map(|(name, available)| AvailabilityZone { name, available })
                .collect(),
        }))
    }

    async fn change_attach_state(
        &self,
        request: Request<ChangeAttachStateRequest>,
    ) -> Result<Response<Volume>, Status> {
        let rule = match request.get_ref().change() {
            AttachStateChange::Reserve => "volume:reserve_volume",
            AttachStateChange::Unreserve => "volume:unreserve_volume",
            AttachStateChange::BeginDetaching => "volume:begin_detaching",
            // An unspecified change is refused by the domain with what is allowed.
            AttachStateChange::RollDetaching | AttachStateChange::Unspecified => "volume:roll_detaching",
        };
        let context = self.authorize(&request, rule)?;
        let model = self.volumes.change_attach_state(&context, request.into_inner()).await?;
        self.volume_reply(&model).await
    }

    async fn retype_volume(&self, request: Request<RetypeVolumeRequest>) -> Result<Response<Volume>, Status> {
        let context = self.authorize(&request, "volume:retype")?;
        let model = self.volumes.retype(&context, request.into_inner()).await?;
        self.volume_reply(&model).await
    }

    async fn migrate_volume(&self, request: Request<MigrateVolumeRequest>) -> Result<Response<Volume>, Status> {
        let context = self.authorize(&request, "volume_extension:volume_admin_actions:migrate_volume")?;
        let model = self.volumes.migrate_to_host(&context, request.into_inner()).await?;
        self.volume_reply(&model).await
    }

    async fn manage_volume(&self, request: Request<ManageVolumeRequest>) -> Result<Response<Volume>, Status> {
        let context = self.authorize(&request, "volume_extension:volume_manage")?;
        let model = self.volumes.manage(&context, request.into_inner()).await?;
        self.volume_reply(&model).await
    }

    async fn list_manageable_volumes(
        &self,
        request: Request<ListManageableVolumesRequest>,
    ) -> Result<Response<ListManageableVolumesResponse>, Status> {
        self.authorize(&request, "volume_extension:list_manageable")?;
        let (volumes, page_info) = self.volumes.manageable(request.get_ref()).await?;
        Ok(Response::new(ListManageableVolumesResponse { volumes, page_info: Some(page_info) }))
    }

    async fn unmanage_volume(
        &self,
        request: Request<UnmanageVolumeRequest>,
    ) -> Result<Response<UnmanageVolumeResponse>, Status> {
        let context = self.authorize(&request, "volume_extension:volume_unmanage")?;
        self.volumes.unmanage(&context, &request.get_ref().volume_id).await?;
        Ok(Response::new(UnmanageVolumeResponse {}))
    }

    async fn manage_snapshot(&self, request: Request<ManageSnapshotRequest>) -> Result<Response<Snapshot>, Status> {
        let context = self.authorize(&request, "snapshot_extension:snapshot_manage")?;
        let model = self.snapshots.manage(&context, request.into_inner()).await?;
        Ok(Response::new(snapshots::to_proto(&model)))
    }

    async fn list_manageable_snapshots(
        &self,
        request: Request<ListManageableVolumesRequest>,
    ) -> Result<Response<ListManageableSnapshotsResponse>, Status> {
        self.authorize(&request, "snapshot_extension:list_manageable")?;
        let (snapshots, page_info) = self.snapshots.manageable(request.get_ref()).await?;
        Ok(Response::new(ListManageableSnapshotsResponse { snapshots, page_info: Some(page_info) }))
    }

    async fn unmanage_snapshot(
        &self,
        request: Request<UnmanageSnapshotRequest>,
    ) -> Result<Response<UnmanageVolumeResponse>, Status> {
        let context = self.authorize(&request, "snapshot_extension:snapshot_unmanage")?;
        self.snapshots.unmanage(&context, &request.get_ref().snapshot_id).await?;
        Ok(Response::new(UnmanageVolumeResponse {}))
    }

    async fn list_operations(
        &self,
        request: Request<ListOperationsRequest>,
    ) -> Result<Response<ListOperationsResponse>, Status> {
        self.authorize(&request, "basalt:journal:index")?;
        let (operations, total) = journal::list(&self.core.db, request.get_ref().limit).await?;
        Ok(Response::new(ListOperationsResponse { operations, total }))
    }

    async fn declare_node_lost(
        &self,
        request: Request<DeclareNodeLostRequest>,
    ) -> Result<Response<NodeRecoveryResponse>, Status> {
        let context = self.authorize(&request, "basalt:node_recovery")?;
        let request = request.get_ref();
        let done = node_recovery::declare_lost(&self.core, &context, &request.node_id, &request.reason).await?;
        Ok(Response::new(done))
    }

    async fn move_node_resources(
        &self,
        request: Request<MoveNodeResourcesRequest>,
    ) -> Result<Response<NodeRecoveryResponse>, Status> {
        self.authorize(&request, "basalt:node_recovery")?;
        let request = request.get_ref();
        let done = node_recovery::move_node(&self.core, &request.from_node_id, &request.to_node_id).await?;
        Ok(Response::new(done))
    }

    async fn create_qos_specs(&self, request: Request<CreateQosSpecsRequest>) -> Result<Response<QosSpecs>, Status> {
        self.authorize(&request, "volume_extension:qos_specs_manage:create")?;
        let model = Qos::new(&self.core).create(request.into_inner()).await?;
        Ok(Response::new(qos::to_proto(&model)))
    }

    async fn get_qos_specs(&self, request: Request<GetQosSpecsRequest>) -> Result<Response<QosSpecs>, Status> {
        self.authorize(&request, "volume_extension:qos_specs_manage:get")?;
        let model = Qos::new(&self.core).get(&request.get_ref().qos_specs_id).await?;
        Ok(Response::new(qos::to_proto(&model)))
    }

    async fn list_qos_specs(
        &self,
        request: Request<ListQosSpecsRequest>,
    ) -> Result<Response<ListQosSpecsResponse>, Status> {
        self.authorize(&request, "volume_extension:qos_specs_manage:get_all")?;
        let models = Qos::new(&self.core).list().await?;
        Ok(Response::new(ListQosSpecsResponse { qos_specs: models.iter().map(qos::to_proto).collect() }))
    }

    async fn update_qos_specs(&self, request: Request<UpdateQosSpecsRequest>) -> Result<Response<QosSpecs>, Status> {
        self.authorize(&request, "volume_extension:qos_specs_manage:update")?;
        let model = Qos::new(&self.core).update(request.into_inner()).await?;
        Ok(Response::new(qos::to_proto(&model)))
    }

    async fn delete_qos_specs(
        &self,
        request: Request<DeleteQosSpecsRequest>,
    ) -> Result<Response<DeleteQosSpecsResponse>, Status> {
        self.authorize(&request, "volume_extension:qos_specs_manage:delete")?;
        let request = request.get_ref();
        Qos::new(&self.core).delete(&request.qos_specs_id, request.force).await?;
        Ok(Response::new(DeleteQosSpecsResponse {}))
    }

    async fn associate_qos_specs(
        &self,
        request: Request<AssociateQosSpecsRequest>,
    ) -> Result<Response<QosSpecs>, Status> {
        self.authorize(&request, "volume_extension:qos_specs_manage:update")?;
        let model = Qos::new(&self.core).associate(request.into_inner()).await?;
        Ok(Response::new(qos::to_proto(&model)))
    }

    async fn list_qos_specs_associations(
        &self,
        request: Request<GetQosSpecsRequest>,
    ) -> Result<Response<ListQosSpecsAssociationsResponse>, Status> {
        self.authorize(&request, "volume_extension:qos_specs_manage:get")?;
        let associations = Qos::new(&self.core).associations(&request.get_ref().qos_specs_id).await?;
        Ok(Response::new(ListQosSpecsAssociationsResponse { associations }))
    }

    async fn create_attachment(
        &self,
        request: Request<CreateAttachmentRequest>,
    ) -> Result<Response<Attachment>, Status> {
        let context = self.authorize(&request, "volume:attachment_create")?;
        let model = self.attachments.create(&context, request.into_inner()).await?;
        Ok(Response::new(attachments::to_proto(&model, &context, &self.core.config.secrets)))
    }

    async fn update_attachment(
        &self,
        request: Request<UpdateAttachmentRequest>,
    ) -> Result<Response<Attachment>, Status> {
        let context = self.authorize(&request, "volume:attachment_update")?;
        let model = self.attachments.update(&context, request.into_inner()).await?;
        Ok(Response::new(attachments::to_proto(&model, &context, &self.core.config.secrets)))
    }

    async fn complete_attachment(
        &self,
        request: Request<CompleteAttachmentRequest>,
    ) -> Result<Response<Attachment>, Status> {
        let context = self.authorize(&request, "volume:attachment_complete")?;
        let model = self.attachments.complete(&context, &request.get_ref().attachment_id).await?;
        Ok(Response::new(attachments::to_proto(&model, &context, &self.core.config.secrets)))
    }

    async fn initialize_connection(
        &self,
        request: Request<InitializeConnectionRequest>,
    ) -> Result<Response<ConnectionInfo>, Status> {
        let context = self.authorize(&request, "volume:initialize_connection")?;
        let request = request.into_inner();
        let info = self.attachments.initialize_connection(&context, &request.volume_id, request.connector).await?;
        Ok(Response::new(info))
    }

    async fn terminate_connection(
        &self,
        request: Request<TerminateConnectionRequest>,
    ) -> Result<Response<Volume>, Status> {
        let context = self.authorize(&request, "volume:terminate_connection")?;
        let request = request.into_inner();
        let model = self.attachments.terminate_connection(&context, &request.volume_id, request.connector).await?;
        self.volume_reply(&model).await
    }

    async fn attach_volume(&self, request: Request<AttachVolumeRequest>) -> Result<Response<Volume>, Status> {
        let context = self.authorize(&request, "volume:attach")?;
        let model = self.attachments.attach(&context, request.into_inner()).await?;
        self.volume_reply(&model).await
    }

    async fn detach_volume(&self, request: Request<DetachVolumeRequest>) -> Result<Response<Volume>, Status> {
        let context = self.authorize(&request, "volume:detach")?;
        let model = self.attachments.detach(&context, request.into_inner()).await?;
        self.volume_reply(&model).await
    }

    async fn get_attachment(&self, request: Request<GetAttachmentRequest>) -> Result<Response<Attachment>, Status> {
        let context = self.authorize(&request, "volume:attachment_get")?;
        let model = self.attachments.get(&context, &request.get_ref().attachment_id).await?;
        Ok(Response::new(attachments::to_proto(&model, &context, &self.core.config.secrets)))
    }

    async fn list_attachments(
        &self,
        request: Request<ListAttachmentsRequest>,
    ) -> Result<Response<ListAttachmentsResponse>, Status> {
        let context = self.authorize(&request, "volume:attachment_get_all")?;
        let models = self.attachments.list(&context, request.get_ref()).await?;
        Ok(Response::new(ListAttachmentsResponse {
            attachments: models
                .iter()
                .map(|model| attachments::to_proto(model, &context, &self.core.config.secrets))
                .collect(),
        }))
    }

    async fn delete_attachment(
        &self,
        request: Request<DeleteAttachmentRequest>,
    ) -> Result<Response<ListAttachmentsResponse>, Status> {
        let context = self.authorize(&request, "volume:attachment_delete")?;
        let remaining = self.attachments.delete(&context, &request.get_ref().attachment_id).await?;
        Ok(Response::new(ListAttachmentsResponse {
            attachments: remaining
                .iter()
                .map(|model| attachments::to_proto(model, &context, &self.core.config.secrets))
                .collect(),
        }))
    }

    async fn list_pools(&self, request: Request<ListPoolsRequest>) -> Result<Response<ListPoolsResponse>, Status> {
        self.authorize(&request, "scheduler_extension:scheduler_stats:get_pools")?;
        let claimed = claims::claimed(&self.core.db).await?;
        let now = Instant::now();
        let mut pools = Vec::new();
        for node in self.core.capacity.nodes() {
            let report = &node.report;
            for (capacity, candidate) in report.pools.iter().zip(&node.pools) {
                let name = candidate.host().to_owned();
                if !request.get_ref().name.is_empty() && request.get_ref().name != name {
                    continue;
                }
                let booked_gib = claimed.get(&name).copied().unwrap_or(0).max(0) as u64;
                let candidate = candidate.clone().with_booked(booked_gib as f64);
                let largest_volume_gib = placement::filters::largest_fit_gib(&candidate, false).floor() as u64;
                pools.push(Pool {
                    r#ref: Some(PoolRef {
                        node_id: report.node_id.clone(),
                        backend: capacity.backend.clone(),
                        pool: capacity.name.clone(),
                    }),
                    availability_zone: report.availability_zone.clone(),
                    total_capacity_gib: capacity.total_bytes / GIB,
                    free_capacity_gib: capacity.free_bytes / GIB,
                    provisioned_capacity_gib: (capacity.provisioned_bytes / GIB).max(booked_gib),
                    allocated_capacity_gib: (capacity.allocated_bytes / GIB).max(booked_gib),
                    thin_provisioning_support: capacity.thin_provisioning_support,
                    thick_provisioning_support: capacity.thick_provisioning_support,
                    max_over_subscription_ratio: capacity.max_over_subscription_ratio,
                    reserved_percentage: capacity.reserved_percentage,
                    total_volumes: capacity.total_volumes,
                    capabilities: capacity.capabilities.clone(),
                    schedulable: node.is_fresh(now),
                    reported_at: report.reported_at,
                    largest_volume_gib,
                    name,
                });
            }
        }
        Ok(Response::new(ListPoolsResponse { pools }))
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        self.authorize(&request, "volume_extension:services:index")?;
        let services = service_states::list(&self.core, request.get_ref()).await?;
        Ok(Response::new(ListServicesResponse { services }))
    }

    async fn update_service(&self, request: Request<UpdateServiceRequest>) -> Result<Response<Service>, Status> {
        self.authorize(&request, "volume_extension:services:update")?;
        Ok(Response::new(service_states::update(&self.core, request.into_inner()).await?))
    }

    async fn create_backup(&self, request: Request<CreateBackupRequest>) -> Result<Response<Backup>, Status> {
        let context = self.authorize(&request, "backup:create")?;
        let model = self.backups.create(&context, request.into_inner()).await?;
        self.backup_reply(&model).await
    }

    async fn get_backup(&self, request: Request<GetBackupRequest>) -> Result<Response<Backup>, Status> {
        let context = self.authorize(&request, "backup:get")?;
        let model = self.backups.get(&context, &request.get_ref().backup_id).await?;
        self.backup_reply(&model).await
    }

    async fn list_backups(
        &self,
        request: Request<ListBackupsRequest>,
    ) -> Result<Response<ListBackupsResponse>, Status> {
        let context = self.authorize(&request, "backup:get_all")?;
        let (rows, page) = self.backups.list(&context, request.get_ref()).await?;
        let ids: Vec<_> = rows.iter().map(|row| row.id).collect();
        let parents = backups::dependents(&self.core.db, &ids).await?;
        Ok(Response::new(ListBackupsResponse {
            backups: rows.iter().map(|row| backups::to_proto(row, parents.contains(&row.id))).collect(),
            page: Some(page),
        }))
    }

    async fn update_backup(&self, request: Request<UpdateBackupRequest>) -> Result<Response<Backup>, Status> {
        let context = self.authorize(&request, "backup:update")?;
        let model = self.backups.update(&context, request.into_inner()).await?;
        self.backup_reply(&model).await
    }

    async fn delete_backup(&self, request: Request<DeleteBackupRequest>) -> Result<Response<Backup>, Status> {
        let context = self.authorize(&request, "backup:delete")?;
        let model = self.backups.delete(&context, request.into_inner()).await?;
        self.backup_reply(&model).await
    }

    async fn restore_backup(
        &self,
        request: Request<RestoreBackupRequest>,
    ) -> Result<Response<RestoreBackupResponse>, Status> {
        let context = self.authorize(&request, "backup:restore")?;
        let request = request.into_inner();
        if !request.volume_id.is_empty() {
            return Ok(Response::new(self.backups.restore(&context, request).await?));
        }
        // No volume named: a new one is created from the backup, which restores onto it as part
        // of the create (the volume shows `creating` until the backup is on it).
        let backup = self.backups.get(&context, &request.backup_id).await?;
        let name = if request.name.is_empty() { format!("restore_backup_{}", backup.id) } else { request.name };
        let create = CreateVolumeRequest {
            name,
            backup_id: backup.id.to_string(),
            availability_zone: backup.availability_zone.clone(),
            ..Default::default()
        };
        let volume = self.volumes.create(&context, create).await?;
        Ok(Response::new(RestoreBackupResponse {
            backup_id: backup.id.to_string(),
            volume_id: volume.id.to_string(),
            volume_name: volume.name,
        }))
    }

    async fn reset_backup_status(
        &self,
        request: Request<ResetBackupStatusRequest>,
    ) -> Result<Response<Backup>, Status> {
        let context = self.authorize(&request, "volume_extension:backup_admin_actions:reset_status")?;
        let model = self.backups.reset_status(&context, request.into_inner()).await?;
        self.backup_reply(&model).await
    }

    async fn export_backup_record(&self, request: Request<GetBackupRequest>) -> Result<Response<BackupRecord>, Status> {
        let context = self.authorize(&request, "backup:backup-export")?;
        Ok(Response::new(self.backups.export_record(&context, &request.get_ref().backup_id).await?))
    }

    async fn import_backup_record(&self, request: Request<BackupRecord>) -> Result<Response<Backup>, Status> {
        let context = self.authorize(&request, "backup:backup-import")?;
        let model = self.backups.import_record(&context, request.into_inner()).await?;
        self.backup_reply(&model).await
    }
}
