//! Group snapshots (Cinder 3.14): a snapshot of every volume of a group, all cut at one point in
//! time. The group's volumes are all on one pool, so one node cuts the whole set at once, holding
//! the writers of in-use members still meanwhile (`volume-node/src/copy_set.rs`). Each member is an
//! ordinary snapshot row (quota, claim, views) that names its group snapshot, and is deleted with
//! it, never alone.

pub mod operations;

use std::sync::Arc;

use basalt::{
    ErrorCode, ServiceError,
    context::CallContext,
    ids::GroupSnapshotId,
    proto::{
        CreateGroupSnapshotRequest, DeleteGroupSnapshotRequest, GroupSnapshot, GroupSnapshotStatus,
        ListGroupSnapshotsRequest, PageInfo, ResetGroupSnapshotStatusRequest, VolumeStatus,
    },
};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use self::operations::{GroupSnapshotOperation, SetMember};
use crate::{
    Core, claims,
    db::{db_error, group, group_snapshot, snapshot, volume},
    fields, journal,
    lifecycle::{self, GroupAction, GroupSnapshotAction, SnapshotAction, VolumeAction},
    listing,
    new_rows::NewSnapshot,
    quotas, status, volume_types,
};

pub struct GroupSnapshots {
    core: Arc<Core>,
}

impl GroupSnapshots {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Records a snapshot of every volume of the group and has the node cut them together.
    pub async fn create(
        &self,
        context: &CallContext,
        request: CreateGroupSnapshotRequest,
    ) -> Result<group_snapshot::Model, ServiceError> {
        fields::check_name("name", &request.name)?;
        fields::check_text("description", &request.description)?;
        let db = &self.core.db;
        let group = status::load::<group::Model>(db, context, &request.group_id).await?;
        status::check(&group, GroupAction::Source, "a group snapshot")?;
        let capacity = claims::pool_capacity(&self.core, group.node_id.as_str(), &group.pool);

        let txn = self.core.begin_write().await?;
        // Held in its status until the commit: a concurrent delete or change of members waits.
        let from = lifecycle::group(GroupAction::Source).from;
        status::lock::<group::Model>(&*txn, group.id, from, "the group snapshot").await?;
        let members = volume::Entity::find()
            .filter(volume::Column::GroupId.eq(group.id))
            .order_by_asc(volume::Column::Id)
            .all(&*txn)
            .await
            .map_err(db_error)?;
        if members.is_empty() {
            return Err(ServiceError::invalid(format!("group {} has no volumes to snapshot", group.id)));
        }
        let now = Utc::now();
        let model = group_snapshot::ActiveModel {
            id: Set(GroupSnapshotId::new_random()),
            project_id: Set(group.project_id.clone()),
            user_id: Set(context.user_id.clone()),
            group_id: Set(group.id),
            group_type_id: Set(group.group_type_id),
            name: Set(request.name.clone()),
            description: Set(request.description.clone()),
            status: Set(GroupSnapshotStatus::Creating),
            node_id: Set(group.node_id.clone()),
            backend: Set(group.backend.clone()),
            pool: Set(group.pool.clone()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&*txn)
        .await
        .map_err(db_error)?;
        let mut events = vec![status::created(&model)];
        let mut set = Vec::with_capacity(members.len());
        let mut total_gib = 0;
        for member in &members {
            // In use or not, a member may be snapshotted: the node holds its writers still.
            let action =
                if member.status == VolumeStatus::InUse { VolumeAction::SnapshotForce } else { VolumeAction::Snapshot };
            status::check(member, action, "a group snapshot")?;
            status::lock::<volume::Model>(&*txn, member.id, lifecycle::volume(action).from, "the group snapshot")
                .await?;
            let type_name = volume_types::name_of(&*txn, member.volume_type_id).await?;
            let usage = quotas::snapshot_usage(&type_name, member.size_gib);
            quotas::reserve(&*txn, &self.core.config.quota_defaults, &group.project_id, &usage).await?;
            let placed = member.placement()?;
            let snapshot = NewSnapshot::of(context, member, placed, request.name.clone(), request.description.clone())
                .group_snapshot(model.id)
                .insert(&*txn)
                .await
                .map_err(db_error)?;
            events.push(status::created(&snapshot));
            total_gib += member.size_gib;
            set.push(SetMember {
                snapshot_id: snapshot.id,
                volume_id: member.id,
                in_use: member.status == VolumeStatus::InUse,
            });
        }
        if !claims::claim(&*txn, &group.host(), capacity, total_gib).await? {
            return Err(ServiceError::new(
                ErrorCode::NoCapacity,
                format!("pool {} cannot hold the {total_gib} GiB of a snapshot of group {}", group.host(), group.id),
            ));
        }
        let operation = GroupSnapshotOperation::CreateGroupSnapshot {
            group_snapshot_id: model.id,
            node_id: group.node_id.clone(),
            pool: group.pool.clone(),
            members: set,
        };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        tracing::info!(group_snapshot_id = %model.id, group_id = %group.id, members = members.len(), "group snapshot recorded");
        self.core.publish(events).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(model)
    }

    pub async fn get(&self, context: &CallContext, id: &str) -> Result<group_snapshot::Model, ServiceError> {
        status::load(&self.core.db, context, id).await
    }

    pub async fn list(
        &self,
        context: &CallContext,
        request: &ListGroupSnapshotsRequest,
    ) -> Result<(Vec<group_snapshot::Model>, PageInfo), ServiceError> {
        let mut condition = listing::project_scope(
            context,
            request.all_projects,
            group_snapshot::Column::ProjectId,
            "group snapshots",
        )?;
        if !request.name.is_empty() {
            condition = condition.add(group_snapshot::Column::Name.eq(request.name.as_str()));
        }
        if !request.group_id.is_empty() {
            condition = condition.add(group_snapshot::Column::GroupId.eq(request.group_id.as_str()));
        }
        if request.status != GroupSnapshotStatus::Unspecified as i32 {
            let status = GroupSnapshotStatus::try_from(request.status)
                .map_err(|_| ServiceError::invalid(format!("unknown group snapshot status {}", request.status)))?;
            condition = condition.add(group_snapshot::Column::Status.eq(status));
        }
        let columns = listing::SortColumns {
            created_at: group_snapshot::Column::CreatedAt,
            updated_at: None,
            name: group_snapshot::Column::Name,
            size: None,
            status: group_snapshot::Column::Status,
            id: group_snapshot::Column::Id,
        };
        let order = columns.order(&request.sort, "group snapshots")?;
        let keyset = listing::Keyset::<group_snapshot::Entity> {
            order,
            id: group_snapshot::Column::Id,
            id_of: |row| row.id.to_string(),
        };
        keyset.page(&self.core.db, condition, request.page.as_ref(), false, "group snapshot").await
    }

    /// Deletes every member snapshot on the node, then the rows, as one operation.
    pub async fn delete(
        &self,
        context: &CallContext,
        request: DeleteGroupSnapshotRequest,
    ) -> Result<group_snapshot::Model, ServiceError> {
        let model = self.get(context, &request.group_snapshot_id).await?;
        if model.status == GroupSnapshotStatus::Deleting {
            return Ok(model);
        }
        status::check(&model, GroupSnapshotAction::Delete, "deleting the group snapshot")?;
        let txn = self.core.begin_write().await?;
        let copying = group::Entity::find()
            .filter(group::Column::GroupSnapshotId.eq(model.id))
            .filter(group::Column::Status.eq(basalt::proto::GroupStatus::Creating))
            .one(&*txn)
            .await
            .map_err(db_error)?;
        if let Some(copying) = copying {
            return Err(ServiceError::conflict(format!(
                "group {} is being made from group snapshot {}; delete it once that is done",
                copying.id, model.id
            )));
        }
        let (before, deleting) =
            status::transition::<group_snapshot::Model>(&*txn, model.id, GroupSnapshotAction::Delete, "").await?;
        let mut events = vec![status::changed(before, &deleting)];
        let members = members(&*txn, model.id).await?;
        for member in &members {
            let (snapshot_before, snapshot_deleting) =
                status::transition::<snapshot::Model>(&*txn, member.id, SnapshotAction::Delete, "").await?;
            events.push(status::changed(snapshot_before, &snapshot_deleting));
        }
        let operation = GroupSnapshotOperation::DeleteGroupSnapshot {
            group_snapshot_id: model.id,
            node_id: model.node_id.clone(),
            pool: model.pool.clone(),
            snapshot_ids: members.iter().map(|member| member.id).collect(),
        };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        self.core.publish(events).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(deleting)
    }

    pub async fn reset_status(
        &self,
        context: &CallContext,
        request: ResetGroupSnapshotStatusRequest,
    ) -> Result<group_snapshot::Model, ServiceError> {
        let target = GroupSnapshotStatus::try_from(request.status).unwrap_or_default();
        status::resettable::<group_snapshot::Model>(target, lifecycle::GROUP_SNAPSHOT_RESETTABLE)?;
        let model = self.get(context, &request.group_snapshot_id).await?;
        let txn = self.core.begin_write().await?;
        status::reset(&*txn, &model, target, lifecycle::GROUP_SNAPSHOT_RESETTABLE).await?;
        txn.commit().await?;
        self.get(context, &request.group_snapshot_id).await
    }

    /// The group snapshot as the API shows it, with its snapshots.
    pub async fn to_proto(&self, model: &group_snapshot::Model) -> Result<GroupSnapshot, ServiceError> {
        let snapshot_ids = members(&self.core.db, model.id).await?.into_iter().map(|member| member.id.to_string());
        Ok(GroupSnapshot {
            id: model.id.to_string(),
            project_id: model.project_id.to_string(),
            group_id: model.group_id.to_string(),
            group_type_id: model.group_type_id.to_string(),
            name: model.name.clone(),
            description: model.description.clone(),
            status: model.status as i32,
            created_at: Some(std::time::SystemTime::from(model.created_at).into()),
            snapshot_ids: snapshot_ids.collect(),
        })
    }
}

/// The snapshots cut in the group snapshot, in id order.
pub async fn members(
    db: &impl ConnectionTrait,
    group_snapshot_id: GroupSnapshotId,
) -> Result<Vec<snapshot::Model>, ServiceError> {
    snapshot::Entity::find()
        .filter(snapshot::Column::GroupSnapshotId.eq(group_snapshot_id))
        .order_by_asc(snapshot::Column::Id)
        .all(db)
        .await
        .map_err(db_error)
}

status::stateful! {
    group_snapshot: kind crate::events::GROUP_SNAPSHOT, id GroupSnapshotId, status GroupSnapshotStatus,
    action GroupSnapshotAction, rule lifecycle::group_snapshot, reason None,
    updated_at Some(group_snapshot::Column::UpdatedAt);
    /// Its members hold the quota and the pool's space; the group snapshot itself holds nothing.
    async fn release(&self, _txn: &impl ConnectionTrait) -> Result<(), ServiceError> {
        Ok(())
    }
}
