//! A group made from a group snapshot or from another group (Cinder's `create-from-src`, 3.14):
//! the source's group type and volume types, on the source's pool, with a new volume for each
//! snapshot of the group snapshot or each volume of the group. Copies of a group's volumes are cut
//! at one point in time, as a group snapshot is (the node holds the writers of in-use ones still).

use basalt::{
    ErrorCode, ServiceError,
    context::CallContext,
    ids::{GroupId, NodeId, SnapshotId, VolumeId, VolumeTypeId},
    proto::{CreateGroupFromSourceRequest, GroupStatus, VolumeStatus},
};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use super::{
    Groups,
    operations::{GroupCopy, GroupOperation},
};
use crate::{
    claims,
    db::{db_error, group, group_snapshot, json::StringMap, snapshot, volume},
    fields, journal,
    lifecycle::{self, GroupAction, GroupSnapshotAction, SnapshotAction, VolumeAction},
    new_rows::NewVolume,
    quotas, status, volume_types,
};

/// What the new group copies.
enum Source {
    GroupSnapshot(group_snapshot::Model),
    Group(group::Model),
}

/// One volume to make, before its row exists.
struct Planned {
    size_gib: i64,
    source_snapshot_id: Option<SnapshotId>,
    source_volume_id: Option<VolumeId>,
    in_use: bool,
    volume_type_id: VolumeTypeId,
    name: String,
    description: String,
    bootable: bool,
}

impl Groups {
    pub async fn create_from_source(
        &self,
        context: &CallContext,
        request: CreateGroupFromSourceRequest,
    ) -> Result<group::Model, ServiceError> {
        fields::check_name("name", &request.name)?;
        fields::check_text("description", &request.description)?;
        let db = &self.core.db;
        let source = match (request.group_snapshot_id.as_str(), request.source_group_id.as_str()) {
            ("", "") => {
                return Err(ServiceError::invalid("create-from-src needs a group_snapshot_id or a source_group_id"));
            }
            (snapshot_id, "") => Source::GroupSnapshot(status::load(db, context, snapshot_id).await?),
            ("", group_id) => Source::Group(status::load(db, context, group_id).await?),
            _ => return Err(ServiceError::invalid("give a group_snapshot_id or a source_group_id, not both")),
        };
        // The group the copies come from: the source itself, or the group of the group snapshot.
        let origin = match &source {
            Source::GroupSnapshot(group_snapshot) => {
                status::check(group_snapshot, GroupSnapshotAction::Source, "making a group from it")?;
                status::find::<group::Model>(db, group_snapshot.group_id).await?.ok_or_else(|| {
                    ServiceError::not_found(format!("the group of group snapshot {} is gone", group_snapshot.id))
                })?
            }
            Source::Group(group) => {
                status::check(group, GroupAction::Source, "making a group from it")?;
                group.clone()
            }
        };
        let pool = self.core.capacity.pool(origin.node_id.as_str(), &origin.pool).ok_or_else(|| {
            ServiceError::unavailable(format!(
                "node {} holding group {} is not reporting; retry shortly",
                origin.node_id, origin.id
            ))
        })?;

        let txn = self.core.begin_write().await?;
        let mut planned = Vec::new();
        match &source {
            Source::GroupSnapshot(group_snapshot) => {
                let from = lifecycle::group_snapshot(GroupSnapshotAction::Source).from;
                status::lock::<group_snapshot::Model>(&*txn, group_snapshot.id, from, "making a group from it").await?;
                let members = snapshot::Entity::find()
                    .filter(snapshot::Column::GroupSnapshotId.eq(group_snapshot.id))
                    .order_by_asc(snapshot::Column::Id)
                    .all(&*txn)
                    .await
                    .map_err(db_error)?;
                for member in members {
                    status::check(&member, SnapshotAction::VolumeSource, "making a group from its group snapshot")?;
                    let volume_type_id = member.volume_type_id.ok_or_else(|| {
                        ServiceError::invalid(format!("snapshot {} has no volume type to copy", member.id))
                    })?;
                    planned.push(Planned {
                        size_gib: member.size_gib,
                        source_snapshot_id: Some(member.id),
                        source_volume_id: None,
                        in_use: false,
                        volume_type_id,
                        name: member.name,
                        description: member.description,
                        bootable: false,
                    });
                }
            }
            Source::Group(group) => {
                let from = lifecycle::group(GroupAction::Source).from;
                status::lock::<group::Model>(&*txn, group.id, from, "making a group from it").await?;
                let members = volume::Entity::find()
                    .filter(volume::Column::GroupId.eq(group.id))
                    .order_by_asc(volume::Column::Id)
                    .all(&*txn)
                    .await
                    .map_err(db_error)?;
                let clone_from = lifecycle::volume(VolumeAction::CloneSource).from;
                for member in members {
                    status::check(&member, VolumeAction::CloneSource, "making a group from its group")?;
                    status::lock::<volume::Model>(&*txn, member.id, clone_from, "making a group from its group")
                        .await?;
                    let volume_type_id = member.volume_type_id.ok_or_else(|| {
                        ServiceError::invalid(format!("volume {} has no volume type to copy", member.id))
                    })?;
                    planned.push(Planned {
                        size_gib: member.size_gib,
                        source_snapshot_id: None,
                        source_volume_id: Some(member.id),
                        in_use: member.status == VolumeStatus::InUse,
                        volume_type_id,
                        name: member.name,
                        description: member.description,
                        bootable: member.bootable,
                    });
                }
            }
        }
        if planned.is_empty() {
            return Err(ServiceError::invalid("the source has no volumes to copy into a group"));
        }
        let project = &context.project_id;
        let defaults = &self.core.config.quota_defaults;
        quotas::reserve(&*txn, defaults, project, &[(quotas::GROUPS.to_owned(), 1)]).await?;
        let mut thick = false;
        let mut total_gib = 0;
        for plan in &planned {
            let volume_type = volume_types::resolve(&*txn, context, &plan.volume_type_id.to_string()).await?;
            thick |= volume_types::wants_thick(&volume_type.extra_specs.to_hash_map());
            quotas::reserve(&*txn, defaults, project, &quotas::volume_usage(&volume_type.name, plan.size_gib)).await?;
            total_gib += plan.size_gib;
        }
        if !claims::claim(&*txn, &origin.host(), claims::capacity_gib(&pool, thick), total_gib).await? {
            return Err(ServiceError::new(
                ErrorCode::NoCapacity,
                format!("pool {} cannot hold the {total_gib} GiB of the new group's volumes", origin.host()),
            ));
        }
        let now = Utc::now();
        let model = group::ActiveModel {
            id: Set(GroupId::new_random()),
            project_id: Set(project.clone()),
            user_id: Set(context.user_id.clone()),
            name: Set(request.name),
            description: Set(request.description),
            group_type_id: Set(origin.group_type_id),
            volume_type_ids: Set(origin.volume_type_ids.clone()),
            status: Set(GroupStatus::Creating),
            availability_zone: Set(origin.availability_zone.clone()),
            node_id: Set(origin.node_id.clone()),
            backend: Set(origin.backend.clone()),
            pool: Set(origin.pool.clone()),
            created_at: Set(now),
            updated_at: Set(now),
            group_snapshot_id: Set(match &source {
                Source::GroupSnapshot(group_snapshot) => Some(group_snapshot.id),
                Source::Group(_) => None,
            }),
            source_group_id: Set(match &source {
                Source::Group(group) => Some(group.id),
                Source::GroupSnapshot(_) => None,
            }),
        }
        .insert(&*txn)
        .await
        .map_err(db_error)?;
        let mut events = vec![status::created(&model)];
        let mut copies = Vec::with_capacity(planned.len());
        for plan in planned {
            let row = NewVolume {
                context,
                pool: &pool,
                node_id: origin.node_id.clone(),
                volume_type_id: plan.volume_type_id,
                size_gib: plan.size_gib,
                name: plan.name,
                description: plan.description,
                metadata: StringMap::default(),
                bootable: plan.bootable,
                multiattach: false,
                snapshot_id: plan.source_snapshot_id,
                source_volume_id: plan.source_volume_id,
                idempotency_key: None,
                group_id: Some(model.id),
            }
            .insert(&*txn)
            .await?;
            events.push(status::created(&row));
            copies.push(GroupCopy {
                volume_id: row.id,
                size_gib: plan.size_gib,
                source_snapshot_id: plan.source_snapshot_id,
                source_volume_id: plan.source_volume_id,
                in_use: plan.in_use,
            });
        }
        let node_id: NodeId = origin.node_id.clone();
        let operation =
            GroupOperation::CreateFromSource { group_id: model.id, node_id, pool: origin.pool.clone(), copies };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        tracing::info!(group_id = %model.id, host = %model.host(), "group made from a source");
        self.core.publish(events).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(model)
    }
}
