//! Manage and unmanage (Cinder's `os-volume-manage`, `manageable_volumes`, `os-unmanage`): an
//! admin adopts an object a pool already holds (a file, an LV) as a volume with its bytes, or
//! releases a volume so the database forgets it while its bytes stay where they are.

use basalt::{
    ServiceError,
    context::CallContext,
    ids::{NodeId, VolumeId},
    proto::{ListManageableVolumesRequest, ManageVolumeRequest, ManageableVolume, NodeListManageableRequest, PageInfo},
};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use super::{MAX_VOLUME_GIB, Volumes, operations::VolumeOperation};
use crate::{
    adoption, claims,
    db::{attachment, db_error, json::StringMap, snapshot, volume},
    fields, journal,
    lifecycle::{self, VolumeAction},
    listing,
    new_rows::NewVolume,
    placement::{self, PoolCandidate},
    quotas, status, volume_types,
};

/// Names of volumes the backends give (`volume-<uuid>`): such an object may be a volume already.
const VOLUME_PREFIX: &str = "volume-";

impl Volumes {
    /// Adopts `request.source_name` on `request.host` as a new volume of the caller's project.
    pub async fn manage(
        &self,
        context: &CallContext,
        request: ManageVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        fields::check_common(&request.name, &request.description, &request.metadata)?;
        fields::check_name("availability_zone", &request.availability_zone)?;
        let pool = self.core.capacity.pool_of_host(&request.host)?;
        if !request.availability_zone.is_empty() && request.availability_zone != pool.availability_zone() {
            return Err(ServiceError::invalid(format!(
                "host {} is in availability zone {}, not {}",
                pool.host(),
                pool.availability_zone(),
                basalt::error::excerpt(&request.availability_zone)
            )));
        }
        let listed = self.manageable_on(&pool).await?;
        let object = adoption::pick(&listed, &request.source_name, pool.host(), "manageable_volumes", |object| {
            (&object.source_name, object.safe_to_manage, &object.reason_not_safe)
        })?;
        let size_gib = object.size_gib as i64;
        if object.size_gib > MAX_VOLUME_GIB {
            return Err(ServiceError::invalid(format!(
                "{:?} is {size_gib} GiB; a volume is at most {MAX_VOLUME_GIB} GiB",
                request.source_name
            )));
        }

        let db = &self.core.db;
        let volume_type = match request.volume_type.as_str() {
            "" => volume_types::default_type(db, &context.project_id).await?,
            wanted => volume_types::resolve(db, context, wanted).await?,
        };
        let placement = volume_types::placement_request(&volume_type, size_gib);
        if !placement::filters::satisfies(&pool, &placement) {
            return Err(ServiceError::invalid(format!(
                "pool {} does not satisfy volume type {}; manage it with a type the pool satisfies",
                pool.host(),
                volume_type.name
            )));
        }
        let project = &context.project_id;
        quotas::check_volume_size(db, &self.core.config.quota_defaults, project, size_gib).await?;
        let usage = quotas::volume_usage(&volume_type.name, size_gib);

        let txn = self.core.begin_write().await?;
        quotas::reserve(&*txn, &self.core.config.quota_defaults, project, &usage).await?;
        // The bytes are in the pool already: booked whatever the pool's claims say.
        claims::book(&*txn, pool.host(), claims::capacity_gib(&pool, placement.thick), size_gib).await?;
        let node_id = NodeId::parse(pool.node_id())?;
        let model = NewVolume {
            context,
            pool: &pool,
            node_id: node_id.clone(),
            volume_type_id: volume_type.id,
            size_gib,
            name: request.name.clone(),
            description: request.description.clone(),
            metadata: StringMap::from(&request.metadata),
            bootable: request.bootable,
            multiattach: volume_types::allows_multiattach(&placement.extra_specs),
            snapshot_id: None,
            source_volume_id: None,
            idempotency_key: None,
            group_id: None,
        }
        .insert(&*txn)
        .await?;
        let operation = VolumeOperation::ManageVolume {
            volume_id: model.id,
            node_id,
            pool: pool.identity.pool.clone(),
            source_name: request.source_name.clone(),
            size_gib,
        };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        tracing::info!(volume_id = %model.id, host = %pool.host(), source = %request.source_name, size_gib, "volume being adopted");
        self.core.publish([status::created(&model)]).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(model)
    }

    /// What `request.host` holds that could be adopted, a page of it in the order asked.
    pub async fn manageable(
        &self,
        request: &ListManageableVolumesRequest,
    ) -> Result<(Vec<ManageableVolume>, PageInfo), ServiceError> {
        let pool = self.core.capacity.pool_of_host(&request.host)?;
        let mut listed = self.manageable_on(&pool).await?;
        listing::page_by_name(&mut listed, &request.sort, request.page.as_ref(), |object| {
            (object.source_name.as_str(), object.size_gib)
        })
    }

    /// Forgets the volume: its row goes with its quota and capacity claim, its bytes stay in the
    /// pool under the volume's name (manageable again).
    pub async fn unmanage(&self, context: &CallContext, volume_id: &str) -> Result<volume::Model, ServiceError> {
        let model = self.get(context, volume_id).await?;
        status::check(&model, VolumeAction::Unmanage, "unmanaging")?;
        if let Some(group_id) = model.group_id {
            return Err(ServiceError::invalid(format!(
                "volume {} is in group {group_id}; remove it from the group before unmanaging it",
                model.id
            )));
        }
        let txn = self.core.begin_write().await?;
        status::lock::<volume::Model>(&*txn, model.id, lifecycle::volume(VolumeAction::Unmanage).from, "unmanaging")
            .await?;
        if journal::in_flight(&*txn, &model.id.to_string()).await? {
            return Err(ServiceError::conflict(format!("volume {} has an operation in flight", model.id)));
        }
        let snapshots = snapshot::Entity::find()
            .filter(snapshot::Column::VolumeId.eq(model.id))
            .count(&*txn)
            .await
            .map_err(db_error)?;
        if snapshots > 0 {
            return Err(ServiceError::invalid(format!(
                "volume {} has {snapshots} snapshots; delete them before unmanaging it",
                model.id
            )));
        }
        // An attachment may mean an export a forgotten volume would keep serving.
        let attachments = attachment::Entity::find()
            .filter(attachment::Column::VolumeId.eq(model.id))
            .count(&*txn)
            .await
            .map_err(db_error)?;
        if attachments > 0 {
            return Err(ServiceError::invalid(format!(
                "volume {} has {attachments} attachments; detach it before unmanaging it",
                model.id
            )));
        }
        let removed = status::remove::<volume::Model>(&*txn, model.id).await?;
        txn.commit().await?;
        tracing::info!(volume_id = %model.id, host = %model.host(), "volume unmanaged; its bytes stay in the pool");
        self.core.publish(removed).await;
        Ok(model)
    }

    /// Every object of `pool` by name, with whether it may be adopted: the node's word, then
    /// whether it is a volume this deployment already manages.
    async fn manageable_on(&self, pool: &PoolCandidate) -> Result<Vec<ManageableVolume>, ServiceError> {
        let mut client = self.core.nodes.client(&self.core.capacity, pool.node_id())?;
        let objects = client
            .list_manageable(NodeListManageableRequest { pool: pool.identity.pool.clone() })
            .await
            .map_err(ServiceError::from)?
            .into_inner()
            .objects;
        let named: Vec<VolumeId> = objects
            .iter()
            .filter_map(|object| object.name.strip_prefix(VOLUME_PREFIX).and_then(|id| VolumeId::parse(id).ok()))
            .collect();
        let managed: Vec<VolumeId> = volume::Entity::find()
            .filter(volume::Column::Id.is_in(named))
            .all(&self.core.db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|row| row.id)
            .collect();
        Ok(objects
            .into_iter()
            .map(|object| {
                let volume_id = object
                    .name
                    .strip_prefix(VOLUME_PREFIX)
                    .and_then(|id| VolumeId::parse(id).ok())
                    .filter(|id| managed.contains(id));
                let (size_gib, reason) =
                    adoption::verdict(object.size_bytes, &object.reason_not_safe, volume_id.is_some());
                ManageableVolume {
                    source_name: object.name,
                    size_gib,
                    safe_to_manage: reason.is_empty(),
                    reason_not_safe: reason,
                    volume_id: volume_id.map(|id| id.to_string()).unwrap_or_default(),
                }
            })
            .collect())
    }
}
