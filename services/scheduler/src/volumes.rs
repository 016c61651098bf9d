//! Volume operations: validation, placement with its database record, status changes by
//! compare-and-set, and the node calls that make the bytes real.
//!
//! A create or delete is recorded (status `creating`/`deleting`, node and pool chosen) before the
//! node is called; the node call is idempotent, so a scheduler that restarts re-drives every
//! volume it finds in a transitional status (see [`Volumes::resume_in_flight`]).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use basalt::{
    ErrorCode, ServiceError,
    context::CallContext,
    ids::VolumeId,
    proto::{
        self, CreateVolumeRequest, DeleteVolumeRequest, ListVolumesRequest,
        NodeCreateVolumeRequest, NodeDeleteVolumeRequest, PageInfo, PoolRef, VolumeStatus,
    },
};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, sea_query::Expr,
};

use crate::{
    Core,
    db::{db_error, volume},
    placement::{self, PlacementRequest, PoolCandidate},
};

const GIB: u64 = 1 << 30;
/// 1 PiB: far above any real pool, low enough that byte sizes never overflow.
pub const MAX_VOLUME_GIB: u64 = 1 << 20;
const MAX_NAME_LEN: usize = 255;
const MAX_METADATA_ITEMS: usize = 128;
const DEFAULT_PAGE_SIZE: u64 = 1000;
/// How long a node operation is retried while the node is unreachable before the volume goes to
/// an error status.
const NODE_RETRY_WINDOW: Duration = Duration::from_secs(120);
const NODE_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Statuses from which a volume may be deleted without `force` (Cinder's rule).
const DELETABLE: &[VolumeStatus] = &[
    VolumeStatus::Available,
    VolumeStatus::Error,
    VolumeStatus::ErrorRestoring,
    VolumeStatus::ErrorExtending,
    VolumeStatus::ErrorDeleting,
];

pub struct Volumes {
    core: Arc<Core>,
}

impl Volumes {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    fn db(&self) -> &DatabaseConnection {
        &self.core.db
    }

    pub async fn create(
        &self,
        context: &CallContext,
        request: CreateVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        validate_create(&request)?;
        if !request.idempotency_key.is_empty()
            && let Some(existing) = self
                .find_by_idempotency_key(context, &request.idempotency_key)
                .await?
        {
            return same_request_or_conflict(existing, &request);
        }

        let pool = self.place(&request).await?;
        let now = Utc::now();
        let row = volume::ActiveModel {
            id: Set(VolumeId::new_random().to_string()),
            project_id: Set(context.project_id.to_string()),
            user_id: Set(context.user_id.clone()),
            name: Set(request.name.clone()),
            description: Set(request.description.clone()),
            size_gib: Set(request.size_gib as i64),
            status: Set(VolumeStatus::Creating.cinder_name().into()),
            attach_status: Set(proto::AttachStatus::Detached.cinder_name().into()),
            availability_zone: Set(pool.availability_zone.clone()),
            volume_type_id: Set(None),
            node_id: Set(Some(pool.node_id.clone())),
            backend: Set(Some(pool.backend.clone())),
            pool: Set(Some(pool.pool.clone())),
            snapshot_id: Set(None),
            source_volume_id: Set(None),
            metadata: Set(metadata_to_json(&request.metadata)),
            bootable: Set(false),
            error_reason: Set(String::new()),
            idempotency_key: Set(
                (!request.idempotency_key.is_empty()).then(|| request.idempotency_key.clone())
            ),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let model = row.insert(self.db()).await.map_err(|error| {
            if error.to_string().to_lowercase().contains("unique") {
                ServiceError::new(
                    ErrorCode::AlreadyExists,
                    "a volume with this idempotency key was created concurrently; retry to get it",
                )
            } else {
                db_error(error)
            }
        })?;
        tracing::info!(volume_id = %model.id, host = %pool.host(), size_gib = request.size_gib, "volume placed");
        self.spawn_create(model.clone());
        Ok(model)
    }

    async fn find_by_idempotency_key(
        &self,
        context: &CallContext,
        key: &str,
    ) -> Result<Option<volume::Model>, ServiceError> {
        volume::Entity::find()
            .filter(volume::Column::ProjectId.eq(context.project_id.as_str()))
            .filter(volume::Column::IdempotencyKey.eq(key))
            .one(self.db())
            .await
            .map_err(db_error)
    }

    /// Chooses a pool among the fresh reports, debiting what the database has booked there.
    async fn place(&self, request: &CreateVolumeRequest) -> Result<PoolCandidate, ServiceError> {
        let now = std::time::Instant::now();
        let mut candidates = Vec::new();
        for node in self
            .core
            .capacity
            .nodes()
            .into_iter()
            .filter(|node| node.is_fresh(now))
        {
            for pool in &node.report.pools {
                let booked_gib = self.booked_gib(&node.report.node_id, &pool.name).await?;
                candidates.push(
                    PoolCandidate::from_report(
                        &node.report.node_id,
                        &node.report.availability_zone,
                        pool,
                    )
                    .with_booked(booked_gib),
                );
            }
        }
        let placement_request = PlacementRequest {
            size_gib: request.size_gib as f64,
            availability_zone: request.availability_zone.clone(),
            thick: false,
        };
        placement::place(&candidates, &placement_request)
    }

    async fn booked_gib(&self, node_id: &str, pool: &str) -> Result<f64, ServiceError> {
        let sizes: Vec<i64> = volume::Entity::find()
            .select_only()
            .column(volume::Column::SizeGib)
            .filter(volume::Column::NodeId.eq(node_id))
            .filter(volume::Column::Pool.eq(pool))
            .into_tuple()
            .all(self.db())
            .await
            .map_err(db_error)?;
        Ok(sizes.iter().sum::<i64>() as f64)
    }

    pub async fn get(
        &self,
        context: &CallContext,
        volume_id: &str,
    ) -> Result<volume::Model, ServiceError> {
        let id = VolumeId::parse(volume_id)?;
        let found = volume::Entity::find_by_id(id.to_string())
            .one(self.db())
            .await
            .map_err(db_error)?;
        match found {
            Some(model) if context.is_admin || model.project_id == context.project_id.as_str() => {
                Ok(model)
            }
            // Another project's volume is reported exactly like a missing one.
            _ => Err(ServiceError::not_found(format!("volume {id} not found"))),
        }
    }

    pub async fn list(
        &self,
        context: &CallContext,
        request: &ListVolumesRequest,
    ) -> Result<(Vec<volume::Model>, PageInfo), ServiceError> {
        if request.all_projects {
            context.require_admin("listing the volumes of all projects")?;
        }
        let mut condition = Condition::all();
        if !request.all_projects {
            condition = condition.add(volume::Column::ProjectId.eq(context.project_id.as_str()));
        }
        if !request.name.is_empty() {
            condition = condition.add(volume::Column::Name.eq(request.name.as_str()));
        }
        if !request.name_contains.is_empty() {
            condition =
                condition.add(volume::Column::Name.contains(request.name_contains.as_str()));
        }
        if request.status != VolumeStatus::Unspecified as i32 {
            let status = VolumeStatus::try_from(request.status).map_err(|_| {
                ServiceError::invalid(format!("unknown volume status {}", request.status))
            })?;
            condition = condition.add(volume::Column::Status.eq(status.cinder_name()));
        }
        if !request.availability_zone.is_empty() {
            condition = condition
                .add(volume::Column::AvailabilityZone.eq(request.availability_zone.as_str()));
        }
        if !request.idempotency_key.is_empty() {
            condition =
                condition.add(volume::Column::IdempotencyKey.eq(request.idempotency_key.as_str()));
        }

        let (sort_column, descending) = sort_order(&request.sort)?;
        let page = request.page.clone().unwrap_or_default();
        let limit = if page.limit == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            u64::from(page.limit).min(DEFAULT_PAGE_SIZE)
        };
        let total_count = if request.with_count {
            Some(
                volume::Entity::find()
                    .filter(condition.clone())
                    .count(self.db())
                    .await
                    .map_err(db_error)?,
            )
        } else {
            None
        };

        let mut page_condition = condition;
        if !page.marker.is_empty() {
            let marker = self.get(context, &page.marker).await.map_err(|_| {
                ServiceError::invalid(format!(
                    "marker {} is not a volume of this listing; start again without a marker",
                    page.marker
                ))
            })?;
            page_condition = page_condition.add(after_marker(sort_column, descending, &marker));
        }
        let mut query = volume::Entity::find().filter(page_condition);
        query = if descending {
            query
                .order_by_desc(sort_column)
                .order_by_desc(volume::Column::Id)
        } else {
            query
                .order_by_asc(sort_column)
                .order_by_asc(volume::Column::Id)
        };
        let mut rows = query
            .offset(u64::from(page.offset))
            .limit(limit + 1)
            .all(self.db())
            .await
            .map_err(db_error)?;
        let has_more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next_marker = if has_more {
            rows.last().map(|row| row.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((
            rows,
            PageInfo {
                next_marker,
                total_count,
            },
        ))
    }

    pub async fn delete(
        &self,
        context: &CallContext,
        request: &DeleteVolumeRequest,
    ) -> Result<volume::Model, ServiceError> {
        if request.force {
            context.require_admin("force delete")?;
        }
        if request.cascade {
            return Err(ServiceError::invalid(
                "cascade delete needs snapshots, which this deployment does not have; delete without cascade",
            ));
        }
        let model = self.get(context, &request.volume_id).await?;
        let current =
            VolumeStatus::from_cinder_name(&model.status).unwrap_or(VolumeStatus::Unspecified);
        if current == VolumeStatus::Deleting {
            // A repeated delete of a volume already on its way out is not an error.
            return Ok(model);
        }
        let allowed: Vec<VolumeStatus> = if request.force {
            // Force skips the status rules, except that a create in flight must finish first: its
            // node call could otherwise land after the delete and leave an orphaned volume.
            all_statuses()
                .into_iter()
                .filter(|status| *status != VolumeStatus::Creating)
                .collect()
        } else {
            DELETABLE.to_vec()
        };
        if !allowed.contains(&current) {
            return Err(ServiceError::conflict(format!(
                "volume {} is {}; it can be deleted only when {}",
                model.id,
                model.status,
                names(DELETABLE)
            )));
        }
        let model = self
            .transition(&model.id, &allowed, VolumeStatus::Deleting, "")
            .await?;
        self.spawn_delete(model.clone());
        Ok(model)
    }

    /// Compare-and-set: moves the volume to `to` only if it is still in one of `from`.
    async fn transition(
        &self,
        volume_id: &str,
        from: &[VolumeStatus],
        to: VolumeStatus,
        reason: &str,
    ) -> Result<volume::Model, ServiceError> {
        let updated = volume::Entity::update_many()
            .col_expr(volume::Column::Status, Expr::value(to.cinder_name()))
            .col_expr(volume::Column::ErrorReason, Expr::value(reason))
            .col_expr(volume::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(volume::Column::Id.eq(volume_id))
            .filter(volume::Column::Status.is_in(from.iter().map(|status| status.cinder_name())))
            .exec(self.db())
            .await
            .map_err(db_error)?;
        let current = volume::Entity::find_by_id(volume_id.to_owned())
            .one(self.db())
            .await
            .map_err(db_error)?;
        match (updated.rows_affected, current) {
            (1, Some(model)) => Ok(model),
            (_, Some(model)) => Err(ServiceError::conflict(format!(
                "volume {volume_id} is {} now; it can become {} only from {}",
                model.status,
                to.cinder_name(),
                names(from)
            ))),
            (_, None) => Err(ServiceError::not_found(format!(
                "volume {volume_id} not found"
            ))),
        }
    }

    /// Re-drives every create and delete a previous run of the scheduler left unfinished.
    pub async fn resume_in_flight(&self) -> Result<usize, ServiceError> {
        let in_flight = volume::Entity::find()
            .filter(volume::Column::Status.is_in([
                VolumeStatus::Creating.cinder_name(),
                VolumeStatus::Deleting.cinder_name(),
            ]))
            .all(self.db())
            .await
            .map_err(db_error)?;
        let count = in_flight.len();
        for model in in_flight {
            tracing::info!(volume_id = %model.id, status = %model.status, "resuming an interrupted operation");
            if model.status == VolumeStatus::Creating.cinder_name() {
                self.spawn_create(model);
            } else {
                self.spawn_delete(model);
            }
        }
        Ok(count)
    }

    fn spawn_create(&self, model: volume::Model) {
        let volumes = Volumes {
            core: self.core.clone(),
        };
        tokio::spawn(async move { volumes.finish_create(model).await });
    }

    fn spawn_delete(&self, model: volume::Model) {
        let volumes = Volumes {
            core: self.core.clone(),
        };
        tokio::spawn(async move { volumes.finish_delete(model).await });
    }

    async fn finish_create(&self, model: volume::Model) {
        let (node_id, pool) = placement_of(&model);
        let request = NodeCreateVolumeRequest {
            volume_id: model.id.clone(),
            pool: pool.clone(),
            size_bytes: model.size_gib as u64 * GIB,
            source_snapshot_id: String::new(),
            source_volume_id: String::new(),
        };
        let result = self
            .with_node_retries(&node_id, |mut client| {
                let request = request.clone();
                async move { client.create_volume(request).await.map(|_| ()) }
            })
            .await;
        let (to, reason) = match result {
            Ok(()) => (VolumeStatus::Available, String::new()),
            Err(error) => {
                tracing::warn!(volume_id = %model.id, %error, "volume creation failed");
                (
                    VolumeStatus::Error,
                    format!("creation on {node_id} failed: {error}"),
                )
            }
        };
        if let Err(error) = self
            .transition(&model.id, &[VolumeStatus::Creating], to, &reason)
            .await
        {
            // Someone else (a force delete, an admin reset) moved it meanwhile; their word stands.
            tracing::info!(volume_id = %model.id, %error, "volume changed while it was being created");
        }
    }

    async fn finish_delete(&self, model: volume::Model) {
        let (node_id, pool) = placement_of(&model);
        let result = if node_id.is_empty() {
            Ok(())
        } else {
            let request = NodeDeleteVolumeRequest {
                volume_id: model.id.clone(),
                pool,
            };
            self.with_node_retries(&node_id, |mut client| {
                let request = request.clone();
                async move { client.delete_volume(request).await.map(|_| ()) }
            })
            .await
        };
        match result {
            Ok(()) => {
                let deleted = volume::Entity::delete_many()
                    .filter(volume::Column::Id.eq(model.id.as_str()))
                    .filter(volume::Column::Status.eq(VolumeStatus::Deleting.cinder_name()))
                    .exec(self.db())
                    .await;
                match deleted {
                    Ok(_) => tracing::info!(volume_id = %model.id, "volume deleted"),
                    Err(error) => {
                        tracing::error!(volume_id = %model.id, %error, "volume storage removed but its row remains")
                    }
                }
            }
            Err(error) => {
                tracing::warn!(volume_id = %model.id, %error, "volume deletion failed");
                let reason = format!("deletion on {node_id} failed: {error}");
                let _ = self
                    .transition(
                        &model.id,
                        &[VolumeStatus::Deleting],
                        VolumeStatus::ErrorDeleting,
                        &reason,
                    )
                    .await;
            }
        }
    }

    /// Calls the node, retrying while it is unreachable; other errors are final.
    async fn with_node_retries<F, Fut>(&self, node_id: &str, call: F) -> Result<(), ServiceError>
    where
        F: Fn(basalt::proto::node_agent_client::NodeAgentClient<tonic::transport::Channel>) -> Fut,
        Fut: Future<Output = Result<(), tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + NODE_RETRY_WINDOW;
        loop {
            let attempt = match self.core.nodes.client(&self.core.capacity, node_id) {
                Ok(client) => call(client).await.map_err(ServiceError::from),
                Err(error) => Err(error),
            };
            match attempt {
                Err(error)
                    if error.code == ErrorCode::Unavailable || error.code == ErrorCode::Timeout =>
                {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(error);
                    }
                    tokio::time::sleep(NODE_RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }
}

fn placement_of(model: &volume::Model) -> (String, String) {
    (
        model.node_id.clone().unwrap_or_default(),
        model.pool.clone().unwrap_or_default(),
    )
}

fn validate_create(request: &CreateVolumeRequest) -> Result<(), ServiceError> {
    for (field, value) in [
        ("snapshot_id", &request.snapshot_id),
        ("source_volume_id", &request.source_volume_id),
        ("backup_id", &request.backup_id),
    ] {
        if !value.is_empty() {
            return Err(ServiceError::invalid(format!(
                "{field} is set, but this deployment creates empty volumes only; create an empty volume without {field}"
            )));
        }
    }
    if !request.volume_type.is_empty() {
        return Err(ServiceError::invalid(
            "volume types are not defined in this deployment; leave volume_type empty",
        ));
    }
    if request.size_gib == 0 || request.size_gib > MAX_VOLUME_GIB {
        return Err(ServiceError::invalid(format!(
            "invalid size {} GiB: a volume must be between 1 and {MAX_VOLUME_GIB} GiB",
            request.size_gib
        )));
    }
    for (field, value) in [
        ("name", &request.name),
        ("description", &request.description),
        ("idempotency_key", &request.idempotency_key),
    ] {
        if value.chars().count() > MAX_NAME_LEN {
            return Err(ServiceError::invalid(format!(
                "{field} is too long: at most {MAX_NAME_LEN} characters"
            )));
        }
    }
    if request.metadata.len() > MAX_METADATA_ITEMS {
        return Err(ServiceError::invalid(format!(
            "too many metadata items: at most {MAX_METADATA_ITEMS}"
        )));
    }
    for (key, value) in &request.metadata {
        if key.is_empty()
            || key.chars().count() > MAX_NAME_LEN
            || value.chars().count() > MAX_NAME_LEN
        {
            return Err(ServiceError::invalid(format!(
                "invalid metadata item {key:?}: keys need 1 to {MAX_NAME_LEN} characters, values at most {MAX_NAME_LEN}"
            )));
        }
    }
    Ok(())
}

fn same_request_or_conflict(
    existing: volume::Model,
    request: &CreateVolumeRequest,
) -> Result<volume::Model, ServiceError> {
    if existing.size_gib as u64 == request.size_gib && existing.name == request.name {
        return Ok(existing);
    }
    Err(ServiceError::new(
        ErrorCode::AlreadyExists,
        format!(
            "idempotency key {:?} already names volume {} ({} GiB, name {:?}); repeat the original arguments or use a new key",
            request.idempotency_key, existing.id, existing.size_gib, existing.name
        ),
    ))
}

fn sort_order(sort: &[proto::SortKey]) -> Result<(volume::Column, bool), ServiceError> {
    let Some(first) = sort.first() else {
        return Ok((volume::Column::CreatedAt, true));
    };
    if sort.len() > 1 {
        return Err(ServiceError::invalid(
            "sort by one key at a time: created_at, updated_at, name, size, status or id",
        ));
    }
    let column = match first.key.as_str() {
        "created_at" => volume::Column::CreatedAt,
        "updated_at" => volume::Column::UpdatedAt,
        "name" => volume::Column::Name,
        "size" => volume::Column::SizeGib,
        "status" => volume::Column::Status,
        "id" => volume::Column::Id,
        other => {
            return Err(ServiceError::invalid(format!(
                "cannot sort by {other:?}: use created_at, updated_at, name, size, status or id"
            )));
        }
    };
    Ok((column, first.descending))
}

/// Keyset pagination: rows strictly after the marker in (sort column, id) order.
fn after_marker(column: volume::Column, descending: bool, marker: &volume::Model) -> Condition {
    let value: sea_orm::Value = match column {
        volume::Column::CreatedAt => marker.created_at.into(),
        volume::Column::UpdatedAt => marker.updated_at.into(),
        volume::Column::Name => marker.name.clone().into(),
        volume::Column::SizeGib => marker.size_gib.into(),
        volume::Column::Status => marker.status.clone().into(),
        _ => marker.id.clone().into(),
    };
    let id = marker.id.clone();
    if descending {
        Condition::any().add(column.lt(value.clone())).add(
            Condition::all()
                .add(column.eq(value))
                .add(volume::Column::Id.lt(id)),
        )
    } else {
        Condition::any().add(column.gt(value.clone())).add(
            Condition::all()
                .add(column.eq(value))
                .add(volume::Column::Id.gt(id)),
        )
    }
}

fn all_statuses() -> Vec<VolumeStatus> {
    (1..=21)
        .filter_map(|value| VolumeStatus::try_from(value).ok())
        .collect()
}

fn names(statuses: &[VolumeStatus]) -> String {
    statuses
        .iter()
        .map(|status| status.cinder_name())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn metadata_to_json(metadata: &std::collections::HashMap<String, String>) -> String {
    let sorted: BTreeMap<&String, &String> = metadata.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_else(|_| "{}".into())
}

pub fn metadata_from_json(text: &str) -> std::collections::HashMap<String, String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn timestamp(time: chrono::DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

pub fn to_proto(model: &volume::Model) -> proto::Volume {
    let status = VolumeStatus::from_cinder_name(&model.status).unwrap_or(VolumeStatus::Unspecified);
    let attach_status = proto::AttachStatus::from_cinder_name(&model.attach_status)
        .unwrap_or(proto::AttachStatus::Unspecified);
    let pool = model.node_id.as_ref().map(|node_id| PoolRef {
        node_id: node_id.clone(),
        backend: model.backend.clone().unwrap_or_default(),
        pool: model.pool.clone().unwrap_or_default(),
    });
    proto::Volume {
        id: model.id.clone(),
        project_id: model.project_id.clone(),
        user_id: model.user_id.clone(),
        name: model.name.clone(),
        description: model.description.clone(),
        size_gib: model.size_gib as u64,
        status: status as i32,
        attach_status: attach_status as i32,
        availability_zone: model.availability_zone.clone(),
        volume_type_id: model.volume_type_id.clone().unwrap_or_default(),
        pool,
        snapshot_id: model.snapshot_id.clone().unwrap_or_default(),
        source_volume_id: model.source_volume_id.clone().unwrap_or_default(),
        metadata: metadata_from_json(&model.metadata),
        bootable: model.bootable,
        error_reason: model.error_reason.clone(),
        consumes_quota: true,
        created_at: Some(timestamp(model.created_at)),
        updated_at: Some(timestamp(model.updated_at)),
        idempotency_key: model.idempotency_key.clone().unwrap_or_default(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(size: u64) -> CreateVolumeRequest {
        CreateVolumeRequest {
            size_gib: size,
            ..Default::default()
        }
    }

    #[test]
    fn sizes_outside_the_range_are_refused_with_the_range() {
        for size in [0, MAX_VOLUME_GIB + 1, u64::MAX] {
            let error = validate_create(&request(size)).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidArgument);
            assert!(error.message.contains("between 1 and"), "{}", error.message);
        }
        assert!(validate_create(&request(1)).is_ok());
    }

    #[test]
    fn long_names_and_bad_metadata_are_refused() {
        let mut long_name = request(1);
        long_name.name = "n".repeat(256);
        assert!(validate_create(&long_name).is_err());
        let mut empty_key = request(1);
        empty_key.metadata.insert(String::new(), "v".into());
        assert!(validate_create(&empty_key).is_err());
    }

    #[test]
    fn only_known_sort_keys_are_accepted() {
        assert!(
            sort_order(&[proto::SortKey {
                key: "size".into(),
                descending: false
            }])
            .is_ok()
        );
        let error = sort_order(&[proto::SortKey {
            key: "password".into(),
            descending: false,
        }])
        .unwrap_err();
        assert!(error.message.contains("created_at"), "{}", error.message);
    }
}
