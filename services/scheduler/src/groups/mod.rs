//! Generic groups (Cinder 3.13): volumes kept together on one pool, so that a group snapshot can
//! cut them at one point. A group is placed, when made, on a pool that satisfies every volume
//! type it allows; its volumes are made there (`group_id` on a new volume) or added when they are
//! already there. Deleting a group with its volumes is one journalled operation.

mod from_source;
pub mod operations;

use std::{collections::HashSet, sync::Arc};

use basalt::{
    ServiceError,
    context::CallContext,
    ids::{GroupId, NodeId, VolumeId},
    proto::{
        CreateGroupRequest, DeleteGroupRequest, Group, GroupStatus, ListGroupsRequest, PageInfo, PoolRef,
        ResetGroupStatusRequest, UpdateGroupRequest, VolumeStatus,
    },
};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set, sea_query::Expr,
};

use self::operations::{GroupOperation, Member};
use crate::{
    Core, claims,
    db::{db_error, group, group_snapshot, json::IdList, snapshot, volume},
    fields, group_types, journal,
    lifecycle::{self, GroupAction, VolumeAction},
    listing,
    placement::{self, PoolCandidate},
    quotas, status, volume_types,
};

/// What a volume of the group may be doing when it joins or leaves.
const MEMBER_STATUSES: &[VolumeStatus] = &[VolumeStatus::Available, VolumeStatus::InUse];

pub struct Groups {
    core: Arc<Core>,
}

impl Groups {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Makes the group on the best pool that satisfies every one of its volume types.
    pub async fn create(
        &self,
        context: &CallContext,
        request: CreateGroupRequest,
    ) -> Result<group::Model, ServiceError> {
        fields::check_name("name", &request.name)?;
        fields::check_text("description", &request.description)?;
        fields::check_name("availability_zone", &request.availability_zone)?;
        let db = &self.core.db;
        if request.group_type.is_empty() {
            return Err(ServiceError::invalid("a group needs its group_type: a group type's name or id"));
        }
        let group_type = group_types::resolve(db, context, &request.group_type).await?;
        if request.volume_types.is_empty() {
            return Err(ServiceError::invalid("a group needs volume_types: the volume types its volumes may have"));
        }
        let mut types = Vec::new();
        for wanted in &request.volume_types {
            let found = volume_types::resolve(db, context, wanted).await?;
            if !types.iter().any(|known: &crate::db::volume_type::Model| known.id == found.id) {
                types.push(found);
            }
        }
        let fitting: Vec<PoolCandidate> = claims::candidates(&self.core)
            .await?
            .into_iter()
            .filter(|pool| {
                request.availability_zone.is_empty() || pool.availability_zone() == request.availability_zone
            })
            .filter(|pool| {
                types.iter().all(|volume_type| {
                    placement::filters::satisfies(pool, &volume_types::placement_request(volume_type, 0))
                })
            })
            .collect();
        let pool = fitting
            .into_iter()
            .max_by(|a, b| a.free_gib.total_cmp(&b.free_gib).then_with(|| b.host().cmp(a.host())))
            .ok_or_else(|| {
                let names: Vec<&str> = types.iter().map(|volume_type| volume_type.name.as_str()).collect();
                ServiceError::invalid(format!(
                    "no valid pool: none reporting satisfies every volume type of the group ({})",
                    names.join(", ")
                ))
            })?;

        let txn = self.core.begin_write().await?;
        let groups = vec![(quotas::GROUPS.to_owned(), 1)];
        quotas::reserve(&*txn, &self.core.config.quota_defaults, &context.project_id, &groups).await?;
        let now = Utc::now();
        let model = group::ActiveModel {
            id: Set(GroupId::new_random()),
            project_id: Set(context.project_id.clone()),
            user_id: Set(context.user_id.clone()),
            name: Set(request.name),
            description: Set(request.description),
            group_type_id: Set(group_type.id),
            volume_type_ids: Set(IdList(types.iter().map(|volume_type| volume_type.id.to_string()).collect())),
            // A generic group needs nothing of its node until it has volumes.
            status: Set(GroupStatus::Available),
            availability_zone: Set(pool.identity.availability_zone.clone()),
            node_id: Set(NodeId::parse(pool.node_id())?),
            backend: Set(pool.identity.backend.clone()),
            pool: Set(pool.identity.pool.clone()),
            created_at: Set(now),
            updated_at: Set(now),
            group_snapshot_id: Set(None),
            source_group_id: Set(None),
        }
        .insert(&*txn)
        .await
        .map_err(db_error)?;
        txn.commit().await?;
        tracing::info!(group_id = %model.id, host = %model.host(), "group made");
        self.core.publish([status::created(&model)]).await;
        Ok(model)
    }

    pub async fn get(&self, context: &CallContext, group_id: &str) -> Result<group::Model, ServiceError> {
        status::load(&self.core.db, context, group_id).await
    }

    pub async fn list(
        &self,
        context: &CallContext,
        request: &ListGroupsRequest,
    ) -> Result<(Vec<group::Model>, PageInfo), ServiceError> {
        let mut condition = listing::project_scope(context, request.all_projects, group::Column::ProjectId, "groups")?;
        if !request.name.is_empty() {
            condition = condition.add(group::Column::Name.eq(request.name.as_str()));
        }
        if request.status != GroupStatus::Unspecified as i32 {
            let status = GroupStatus::try_from(request.status)
                .map_err(|_| ServiceError::invalid(format!("unknown group status {}", request.status)))?;
            condition = condition.add(group::Column::Status.eq(status));
        }
        let columns = listing::SortColumns {
            created_at: group::Column::CreatedAt,
            updated_at: None,
            name: group::Column::Name,
            size: None,
            status: group::Column::Status,
            id: group::Column::Id,
        };
        let order = columns.order(&request.sort, "groups")?;
        let keyset = listing::Keyset::<group::Entity> { order, id: group::Column::Id, id_of: |row| row.id.to_string() };
        keyset.page(&self.core.db, condition, request.page.as_ref(), false, "group").await
    }

    /// Renames the group, and moves volumes in or out of it; all of it or none.
    pub async fn update(
        &self,
        context: &CallContext,
        request: UpdateGroupRequest,
    ) -> Result<group::Model, ServiceError> {
        if let Some(name) = &request.name {
            fields::check_name("name", name)?;
        }
        if let Some(description) = &request.description {
            fields::check_text("description", description)?;
        }
        let model = self.get(context, &request.group_id).await?;
        status::check(&model, GroupAction::Update, "updating the group")?;
        let adding = parse_ids(&request.add_volume_ids)?;
        let removing = parse_ids(&request.remove_volume_ids)?;
        if let Some(both) = adding.iter().find(|id| removing.contains(id)) {
            return Err(ServiceError::invalid(format!("volume {both} is both added to and removed from the group")));
        }
        let txn = self.core.begin_write().await?;
        status::lock::<group::Model>(&*txn, model.id, lifecycle::group(GroupAction::Update).from, "updating").await?;
        let group_types: Vec<&str> = model.volume_type_ids.0.iter().map(String::as_str).collect();
        for volume_id in &adding {
            let member = status::load::<volume::Model>(&*txn, context, &volume_id.to_string()).await?;
            let refusal = if member.group_id.is_some() {
                Some("is in a group already".to_owned())
            } else if !MEMBER_STATUSES.contains(&member.status) {
                Some(format!("is {}; it must be available or in-use", member.status.cinder_name()))
            } else if member.host() != model.host() {
                Some(format!("is on {}, not on the group's pool {}", member.host(), model.host()))
            } else if !member.volume_type_id.is_some_and(|id| group_types.contains(&id.to_string().as_str())) {
                Some("has a volume type the group does not allow".to_owned())
            } else {
                None
            };
            if let Some(refusal) = refusal {
                return Err(ServiceError::invalid(format!("volume {volume_id} {refusal}")));
            }
            set_group(&*txn, *volume_id, None, Some(model.id)).await?;
        }
        for volume_id in &removing {
            let member = status::load::<volume::Model>(&*txn, context, &volume_id.to_string()).await?;
            if member.group_id != Some(model.id) {
                return Err(ServiceError::invalid(format!("volume {volume_id} is not in group {}", model.id)));
            }
            if !MEMBER_STATUSES.contains(&member.status) {
                return Err(ServiceError::invalid(format!(
                    "volume {volume_id} is {}; it leaves a group when available or in-use",
                    member.status.cinder_name()
                )));
            }
            set_group(&*txn, *volume_id, Some(model.id), None).await?;
        }
        let mut active: group::ActiveModel = model.clone().into();
        if let Some(name) = request.name {
            active.name = Set(name);
        }
        if let Some(description) = request.description {
            active.description = Set(description);
        }
        active.updated_at = Set(Utc::now());
        let model = active.update(&*txn).await.map_err(db_error)?;
        txn.commit().await?;
        Ok(model)
    }

    /// Deletes the group: empty, at once; with its volumes (`delete_volumes`), through one
    /// operation that deletes them on their node, then the rows.
    pub async fn delete(
        &self,
        context: &CallContext,
        request: DeleteGroupRequest,
    ) -> Result<group::Model, ServiceError> {
        let model = self.get(context, &request.group_id).await?;
        if model.status == GroupStatus::Deleting {
            return Ok(model);
        }
        status::check(&model, GroupAction::Delete, "deleting the group")?;
        let txn = self.core.begin_write().await?;
        let (before, deleting) = status::transition::<group::Model>(&*txn, model.id, GroupAction::Delete, "").await?;
        let group_snapshots = group_snapshot::Entity::find()
            .filter(group_snapshot::Column::GroupId.eq(model.id))
            .count(&*txn)
            .await
            .map_err(db_error)?;
        if group_snapshots > 0 {
            return Err(ServiceError::invalid(format!(
                "group {} has {group_snapshots} group snapshots; delete them first",
                model.id
            )));
        }
        let members =
            volume::Entity::find().filter(volume::Column::GroupId.eq(model.id)).all(&*txn).await.map_err(db_error)?;
        if members.is_empty() {
            let removed = status::remove::<group::Model>(&*txn, model.id).await?;
            txn.commit().await?;
            self.core.publish(removed).await;
            return Ok(deleting);
        }
        if !request.delete_volumes {
            return Err(ServiceError::invalid(format!(
                "group {} has {} volumes; delete it with delete-volumes, or remove them first",
                model.id,
                members.len()
            )));
        }
        let member_ids: Vec<VolumeId> = members.iter().map(|member| member.id).collect();
        let snapshots = snapshot::Entity::find()
            .filter(snapshot::Column::VolumeId.is_in(member_ids.clone()))
            .count(&*txn)
            .await
            .map_err(db_error)?;
        if snapshots > 0 {
            return Err(ServiceError::invalid(format!(
                "the volumes of group {} have {snapshots} snapshots; delete them first",
                model.id
            )));
        }
        let mut events = vec![status::changed(before, &deleting)];
        let mut operation_members = Vec::new();
        for member in &members {
            status::check(member, VolumeAction::Delete, "deleting its group")?;
            let (volume_before, volume_deleting) =
                status::transition::<volume::Model>(&*txn, member.id, VolumeAction::Delete, "").await?;
            events.push(status::changed(volume_before, &volume_deleting));
            let (node_id, pool) = member.placement()?;
            operation_members.push(Member { volume_id: member.id, node_id, pool });
        }
        let operation = GroupOperation::DeleteGroup { group_id: model.id, members: operation_members };
        let record = journal::record(&*txn, &self.core, context, &operation).await?;
        txn.commit().await?;
        self.core.publish(events).await;
        journal::launch(self.core.clone(), record, operation);
        Ok(deleting)
    }

    pub async fn reset_status(
        &self,
        context: &CallContext,
        request: ResetGroupStatusRequest,
    ) -> Result<group::Model, ServiceError> {
        let target = GroupStatus::try_from(request.status).unwrap_or_default();
        let model = self.get(context, &request.group_id).await?;
        let txn = self.core.begin_write().await?;
        status::reset(&*txn, &model, target, lifecycle::GROUP_RESETTABLE).await?;
        txn.commit().await?;
        self.get(context, &request.group_id).await
    }

    /// The group as the API shows it, with its volumes.
    pub async fn to_proto(&self, model: &group::Model) -> Result<Group, ServiceError> {
        let volume_ids = volume::Entity::find()
            .filter(volume::Column::GroupId.eq(model.id))
            .all(&self.core.db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|member| member.id.to_string())
            .collect();
        Ok(Group {
            id: model.id.to_string(),
            project_id: model.project_id.to_string(),
            name: model.name.clone(),
            description: model.description.clone(),
            status: model.status as i32,
            availability_zone: model.availability_zone.clone(),
            group_type_id: model.group_type_id.to_string(),
            volume_type_ids: model.volume_type_ids.0.clone(),
            volume_ids,
            created_at: Some(std::time::SystemTime::from(model.created_at).into()),
            pool: Some(PoolRef {
                node_id: model.node_id.to_string(),
                backend: model.backend.clone(),
                pool: model.pool.clone(),
            }),
            group_snapshot_id: model.group_snapshot_id.map(|id| id.to_string()).unwrap_or_default(),
            source_group_id: model.source_group_id.map(|id| id.to_string()).unwrap_or_default(),
        })
    }
}

fn parse_ids(ids: &[String]) -> Result<Vec<VolumeId>, ServiceError> {
    let mut seen = HashSet::new();
    let mut parsed = Vec::new();
    for id in ids {
        let id = VolumeId::parse(id.trim())?;
        if seen.insert(id) {
            parsed.push(id);
        }
    }
    Ok(parsed)
}

/// Moves a volume from group `from` to group `to` by compare-and-set on its current group.
async fn set_group(
    txn: &impl ConnectionTrait,
    volume_id: VolumeId,
    from: Option<GroupId>,
    to: Option<GroupId>,
) -> Result<(), ServiceError> {
    let mut update = volume::Entity::update_many()
        .col_expr(volume::Column::GroupId, Expr::value(to))
        .col_expr(volume::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(volume::Column::Id.eq(volume_id))
        .filter(volume::Column::Status.is_in(MEMBER_STATUSES.iter().copied()));
    update = match from {
        Some(group_id) => update.filter(volume::Column::GroupId.eq(group_id)),
        None => update.filter(volume::Column::GroupId.is_null()),
    };
    let updated = update.exec(txn).await.map_err(db_error)?;
    if updated.rows_affected == 0 {
        return Err(ServiceError::conflict(format!("volume {volume_id} changed meanwhile; retry the update")));
    }
    Ok(())
}

status::stateful! {
    group: kind crate::events::GROUP, id GroupId, status GroupStatus, action GroupAction, rule lifecycle::group,
    reason None, updated_at Some(group::Column::UpdatedAt);
    /// The project's `groups` quota.
    async fn release(&self, txn: &impl ConnectionTrait) -> Result<(), ServiceError> {
        quotas::release(txn, &self.project_id, &[(quotas::GROUPS.to_owned(), 1)]).await
    }
}
