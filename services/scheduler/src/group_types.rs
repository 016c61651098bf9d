//! Group types (Cinder 3.11): named sets of group specs a group is made with. Public types are
//! visible to every project, private ones to admins only; the default one cannot be deleted, nor
//! a type some group has.

use std::collections::HashMap;

use basalt::{
    ServiceError,
    context::CallContext,
    ids::GroupTypeId,
    proto::{CreateGroupTypeRequest, GroupType, ListGroupTypesRequest, UpdateGroupTypeRequest},
};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};

use crate::{
    Core,
    db::{db_error, group, group_type, json::StringMap},
    fields,
};

/// `default` names the deployment's default group type, as Cinder's `GET /group_types/default`.
const DEFAULT: &str = "default";

/// Finds a type by id, name, or `default`, that the caller may see.
pub async fn resolve(
    db: &impl ConnectionTrait,
    context: &CallContext,
    id_or_name: &str,
) -> Result<group_type::Model, ServiceError> {
    let query = group_type::Entity::find();
    let found = match (GroupTypeId::parse(id_or_name), id_or_name) {
        (Ok(id), _) => query.filter(group_type::Column::Id.eq(id)).one(db).await,
        (Err(_), DEFAULT) => query.filter(group_type::Column::IsDefault.eq(true)).one(db).await,
        (Err(_), name) => query.filter(group_type::Column::Name.eq(name)).one(db).await,
    }
    .map_err(db_error)?;
    found
        .filter(|model| model.is_public || context.is_admin)
        .ok_or_else(|| ServiceError::not_found(format!("group type {} not found", basalt::error::excerpt(id_or_name))))
}

/// The type as `context` may see it: its specs only for those Cinder's
/// `group:access_group_types_specs` admits.
pub fn to_proto(model: &group_type::Model, context: &CallContext) -> GroupType {
    let specs_shown = context.authorize("group:access_group_types_specs").is_ok();
    GroupType {
        id: model.id.to_string(),
        name: model.name.clone(),
        description: model.description.clone(),
        is_public: model.is_public,
        group_specs: if specs_shown { model.group_specs.to_hash_map() } else { HashMap::new() },
        is_default: model.is_default,
    }
}

/// Refuses a name another type has (`except` is the type being renamed).
async fn check_name_free(
    db: &impl ConnectionTrait,
    name: &str,
    except: Option<GroupTypeId>,
) -> Result<(), ServiceError> {
    fields::check_required_name("a group type's name", name)?;
    let except = except.map(|id| (group_type::Column::Id, id.into()));
    fields::check_unique_name::<group_type::Entity>(db, group_type::Column::Name, except, name, "a group type").await
}

pub async fn create(core: &Core, request: CreateGroupTypeRequest) -> Result<group_type::Model, ServiceError> {
    let name = request.name.trim();
    fields::check_text("description", &request.description)?;
    fields::check_map(&request.group_specs, "group spec")?;
    let txn = core.begin_write().await?;
    check_name_free(&*txn, name, None).await?;
    let now = Utc::now();
    let model = group_type::ActiveModel {
        id: Set(GroupTypeId::new_random()),
        name: Set(name.to_owned()),
        description: Set(request.description),
        is_public: Set(request.is_public.unwrap_or(true)),
        group_specs: Set(StringMap::from(request.group_specs)),
        is_default: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&*txn)
    .await
    .map_err(db_error)?;
    txn.commit().await?;
    Ok(model)
}

pub async fn list(
    db: &impl ConnectionTrait,
    context: &CallContext,
    request: &ListGroupTypesRequest,
) -> Result<Vec<group_type::Model>, ServiceError> {
    let mut query = group_type::Entity::find().order_by_asc(group_type::Column::Name);
    if !context.is_admin {
        query = query.filter(group_type::Column::IsPublic.eq(true));
    } else if let Some(is_public) = request.is_public {
        query = query.filter(group_type::Column::IsPublic.eq(is_public));
    }
    query.all(db).await.map_err(db_error)
}

async fn load_for_change(db: &impl ConnectionTrait, id: &str) -> Result<group_type::Model, ServiceError> {
    group_type::Entity::find_by_id(GroupTypeId::parse(id)?)
        .one(db)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ServiceError::not_found(format!("group type {id} not found")))
}

pub async fn update(core: &Core, request: UpdateGroupTypeRequest) -> Result<group_type::Model, ServiceError> {
    let txn = core.begin_write().await?;
    let model = load_for_change(&*txn, &request.group_type_id).await?;
    let model_id = model.id;
    let mut active: group_type::ActiveModel = model.into();
    if let Some(name) = request.name {
        let name = name.trim().to_owned();
        check_name_free(&*txn, &name, Some(model_id)).await?;
        active.name = Set(name);
    }
    if let Some(description) = request.description {
        fields::check_text("description", &description)?;
        active.description = Set(description);
    }
    if let Some(is_public) = request.is_public {
        active.is_public = Set(is_public);
    }
    active.updated_at = Set(Utc::now());
    let model = active.update(&*txn).await.map_err(db_error)?;
    txn.commit().await?;
    Ok(model)
}

pub async fn delete(core: &Core, id: &str) -> Result<(), ServiceError> {
    let txn = core.begin_write().await?;
    let model = load_for_change(&*txn, id).await?;
    if model.is_default {
        return Err(ServiceError::invalid(format!("group type {} is the default and cannot be deleted", model.name)));
    }
    let groups =
        group::Entity::find().filter(group::Column::GroupTypeId.eq(model.id)).count(&*txn).await.map_err(db_error)?;
    if groups > 0 {
        return Err(ServiceError::invalid(format!(
            "group type {} is used by {groups} groups; delete them first",
            model.name
        )));
    }
    group_type::Entity::delete_by_id(model.id).exec(&*txn).await.map_err(db_error)?;
    txn.commit().await
}

/// Merges `specs` into the type's group specs (`None`), or removes the spec `key` (`Some`).
pub async fn edit_specs(
    core: &Core,
    id: &str,
    specs: HashMap<String, String>,
    unset: Option<&str>,
) -> Result<group_type::Model, ServiceError> {
    fields::check_map(&specs, "group spec")?;
    let txn = core.begin_write().await?;
    let model = load_for_change(&*txn, id).await?;
    let mut current = model.group_specs.to_hash_map();
    current.extend(specs);
    if let Some(key) = unset
        && current.remove(key).is_none()
    {
        return Err(ServiceError::not_found(format!(
            "group type {} has no group spec {}",
            model.name,
            basalt::error::excerpt(key)
        )));
    }
    let mut active: group_type::ActiveModel = model.into();
    active.group_specs = Set(StringMap::from(current));
    active.updated_at = Set(Utc::now());
    let model = active.update(&*txn).await.map_err(db_error)?;
    txn.commit().await?;
    Ok(model)
}
