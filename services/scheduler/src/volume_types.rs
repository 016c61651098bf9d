//! Volume types: named sets of extra specs that placement matches against pool capabilities.
//! Public types are visible to every project, private ones to admins and the projects given
//! access. One type is the default; it cannot be deleted.

use std::collections::HashMap;

use basalt::{
    ServiceError,
    context::CallContext,
    ids::{ProjectId, VolumeTypeId},
    proto::{
        CreateVolumeTypeRequest, ListVolumeTypesRequest, ProjectDefaultType, SetVolumeTypeExtraSpecsRequest,
        UpdateVolumeTypeRequest, VolumeType,
    },
};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
    sea_query::{OnConflict, Query},
};

use crate::{
    Core,
    db::{db_error, default_type, json::StringMap, snapshot, volume, volume_type, volume_type_access},
    fields,
    placement::PlacementRequest,
};

/// `provisioning:type=thick` in a type forces thick capacity math.
pub fn wants_thick(specs: &HashMap<String, String>) -> bool {
    specs.get("provisioning:type").is_some_and(|value| value.trim().eq_ignore_ascii_case("thick"))
}

/// Cinder's `multiattach="<is> True"`: volumes of the type may be attached to several hosts.
pub fn allows_multiattach(specs: &HashMap<String, String>) -> bool {
    specs.get("multiattach").is_some_and(|value| crate::placement::extra_specs::matches("True", value))
}

/// Where `size_gib` of a volume of `volume_type` may be placed: the type's zones, extra specs and
/// provisioning.
pub fn placement_request(volume_type: &volume_type::Model, size_gib: i64) -> PlacementRequest {
    let specs = volume_type.extra_specs.to_hash_map();
    PlacementRequest {
        size_gib: size_gib as f64,
        availability_zones: zones(&specs),
        thick: wants_thick(&specs),
        extra_specs: specs,
    }
}

/// The zones a type restricts volumes to (`RESKEY:availability_zones`, comma-separated).
pub fn zones(specs: &HashMap<String, String>) -> Vec<String> {
    specs
        .get("RESKEY:availability_zones")
        .map(|zones| zones.split(',').map(|zone| zone.trim().to_owned()).filter(|zone| !zone.is_empty()).collect())
        .unwrap_or_default()
}

/// The name of the type `type_id`; empty for none, or for a type deleted since.
pub async fn name_of(db: &impl ConnectionTrait, type_id: Option<VolumeTypeId>) -> Result<String, ServiceError> {
    let Some(type_id) = type_id else {
        return Ok(String::new());
    };
    let found = volume_type::Entity::find_by_id(type_id).one(db).await.map_err(db_error)?;
    Ok(found.map(|model| model.name).unwrap_or_default())
}

/// The names of the types `ids` name (each once, whatever the number of volumes).
pub async fn names(
    db: &impl ConnectionTrait,
    ids: impl IntoIterator<Item = Option<VolumeTypeId>>,
) -> Result<HashMap<VolumeTypeId, String>, ServiceError> {
    let ids: std::collections::BTreeSet<VolumeTypeId> = ids.into_iter().flatten().collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let types =
        volume_type::Entity::find().filter(volume_type::Column::Id.is_in(ids)).all(db).await.map_err(db_error)?;
    Ok(types.into_iter().map(|model| (model.id, model.name)).collect())
}

async fn may_use(
    db: &impl ConnectionTrait,
    context: &CallContext,
    model: &volume_type::Model,
) -> Result<bool, ServiceError> {
    if model.is_public || context.is_admin {
        return Ok(true);
    }
    let access = volume_type_access::Entity::find_by_id((model.id, context.project_id.clone()))
        .one(db)
        .await
        .map_err(db_error)?;
    Ok(access.is_some())
}

/// Finds a type by id or name that the caller may use; an invisible private type is not found.
pub async fn resolve(
    db: &impl ConnectionTrait,
    context: &CallContext,
    id_or_name: &str,
) -> Result<volume_type::Model, ServiceError> {
    let by_id = match VolumeTypeId::parse(id_or_name) {
        Ok(id) => volume_type::Entity::find_by_id(id).one(db).await.map_err(db_error)?,
        Err(_) => None,
    };
    let found = match by_id {
        Some(model) => Some(model),
        None => volume_type::Entity::find()
            .filter(volume_type::Column::Name.eq(id_or_name))
            .one(db)
            .await
            .map_err(db_error)?,
    };
    match found {
        Some(model) if may_use(db, context, &model).await? => Ok(model),
        _ => Err(ServiceError::not_found(format!("volume type {} not found", basalt::error::excerpt(id_or_name)))),
    }
}

/// The type a volume created without one gets in `project`: the project's own default (Cinder
/// 3.62) when an admin set one, else the deployment's.
pub async fn default_type(db: &impl ConnectionTrait, project: &ProjectId) -> Result<volume_type::Model, ServiceError> {
    let own = default_type::Entity::find_by_id(project.clone()).one(db).await.map_err(db_error)?;
    if let Some(own) = own
        && let Some(model) = volume_type::Entity::find_by_id(own.volume_type_id).one(db).await.map_err(db_error)?
    {
        return Ok(model);
    }
    deployment_default(db).await
}

async fn deployment_default(db: &impl ConnectionTrait) -> Result<volume_type::Model, ServiceError> {
    volume_type::Entity::find()
        .filter(volume_type::Column::IsDefault.eq(true))
        .one(db)
        .await
        .map_err(db_error)?
        .ok_or_else(|| {
            ServiceError::internal("no default volume type is defined; the database is missing its first migration")
        })
}

/// Makes `volume_type` (name or id) the default of `project`, replacing any it had. A private type
/// must be one the project has access to, or its volumes could not use it.
pub async fn set_project_default(
    core: &Core,
    context: &CallContext,
    project: &str,
    volume_type: &str,
) -> Result<default_type::Model, ServiceError> {
    let project = ProjectId::parse(project)?;
    let txn = core.begin_write().await?;
    let model = resolve(&*txn, context, volume_type).await?;
    if !model.is_public {
        let access =
            volume_type_access::Entity::find_by_id((model.id, project.clone())).one(&*txn).await.map_err(db_error)?;
        if access.is_none() {
            return Err(ServiceError::invalid(format!(
                "volume type {} is private and project {project} has no access to it; add its access first",
                model.name
            )));
        }
    }
    let now = Utc::now();
    let row = default_type::ActiveModel {
        project_id: Set(project.clone()),
        volume_type_id: Set(model.id),
        created_at: Set(now),
        updated_at: Set(now),
    };
    default_type::Entity::insert(row)
        .on_conflict(
            OnConflict::column(default_type::Column::ProjectId)
                .update_columns([default_type::Column::VolumeTypeId, default_type::Column::UpdatedAt])
                .to_owned(),
        )
        .exec(&*txn)
        .await
        .map_err(db_error)?;
    txn.commit().await?;
    project_default(&core.db, project.as_str()).await
}

/// `project`'s own default type; not found when it has none.
pub async fn project_default(db: &impl ConnectionTrait, project: &str) -> Result<default_type::Model, ServiceError> {
    let project = ProjectId::parse(project)?;
    default_type::Entity::find_by_id(project.clone())
        .one(db)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ServiceError::not_found(format!("no default volume type is set for project {project}")))
}

pub async fn project_defaults(db: &impl ConnectionTrait) -> Result<Vec<default_type::Model>, ServiceError> {
    default_type::Entity::find().order_by_asc(default_type::Column::ProjectId).all(db).await.map_err(db_error)
}

/// Removes `project`'s own default type, if it has one: its volumes get the deployment's again.
pub async fn unset_project_default(core: &Core, project: &str) -> Result<(), ServiceError> {
    let project = ProjectId::parse(project)?;
    let txn = core.begin_write().await?;
    default_type::Entity::delete_by_id(project).exec(&*txn).await.map_err(db_error)?;
    txn.commit().await
}

pub fn default_to_proto(row: &default_type::Model) -> ProjectDefaultType {
    ProjectDefaultType { project_id: row.project_id.to_string(), volume_type_id: row.volume_type_id.to_string() }
}

pub async fn to_proto(db: &impl ConnectionTrait, model: &volume_type::Model) -> Result<VolumeType, ServiceError> {
    let project_ids = if model.is_public {
        Vec::new()
    } else {
        volume_type_access::Entity::find()
            .filter(volume_type_access::Column::VolumeTypeId.eq(model.id))
            .all(db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|row| row.project_id.to_string())
            .collect()
    };
    Ok(VolumeType {
        id: model.id.to_string(),
        name: model.name.clone(),
        description: model.description.clone(),
        is_public: model.is_public,
        extra_specs: model.extra_specs.to_hash_map(),
        qos_specs_id: model.qos_specs_id.map(|id| id.to_string()).unwrap_or_default(),
        project_ids,
        is_default: model.is_default,
    })
}

pub async fn create(core: &Core, request: CreateVolumeTypeRequest) -> Result<volume_type::Model, ServiceError> {
    let name = request.name.trim();
    fields::check_required_name("a volume type's name", name)?;
    fields::check_text("description", &request.description)?;
    fields::check_map(&request.extra_specs, "extra spec")?;
    let txn = core.begin_write().await?;
    fields::check_unique_name::<volume_type::Entity>(&*txn, volume_type::Column::Name, None, name, "a volume type")
        .await?;
    let now = Utc::now();
    let model = volume_type::ActiveModel {
        id: Set(VolumeTypeId::new_random()),
        name: Set(name.to_owned()),
        description: Set(request.description),
        is_public: Set(request.is_public.unwrap_or(true)),
        extra_specs: Set(StringMap::from(request.extra_specs)),
        is_default: Set(false),
        qos_specs_id: Set(None),
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
    request: &ListVolumeTypesRequest,
) -> Result<Vec<volume_type::Model>, ServiceError> {
    let all = volume_type::Entity::find().order_by_asc(volume_type::Column::Name).all(db).await.map_err(db_error)?;
    let mut visible = Vec::new();
    for model in all {
        if request.is_public.is_some_and(|public| public != model.is_public) {
            continue;
        }
        if !request.name.is_empty() && model.name != request.name {
            continue;
        }
        if may_use(db, context, &model).await? {
            visible.push(model);
        }
    }
    Ok(visible)
}

async fn load_for_change(db: &impl ConnectionTrait, id: &str) -> Result<volume_type::Model, ServiceError> {
    volume_type::Entity::find_by_id(VolumeTypeId::parse(id)?)
        .one(db)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ServiceError::not_found(format!("volume type {id} not found")))
}

pub async fn update(core: &Core, request: UpdateVolumeTypeRequest) -> Result<volume_type::Model, ServiceError> {
    let txn = core.begin_write().await?;
    let model = load_for_change(&*txn, &request.volume_type_id).await?;
    let model_id = model.id;
    let mut active: volume_type::ActiveModel = model.into();
    if let Some(name) = request.name {
        let name = name.trim().to_owned();
        fields::check_required_name("a volume type's name", &name)?;
        let except = Some((volume_type::Column::Id, model_id.into()));
        fields::check_unique_name::<volume_type::Entity>(
            &*txn,
            volume_type::Column::Name,
            except,
            &name,
            "a volume type",
        )
        .await?;
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
        return Err(ServiceError::invalid(format!(
            "volume type {} is the default type and cannot be deleted",
            model.name
        )));
    }
    let id = model.id;
    let volumes =
        volume::Entity::find().filter(volume::Column::VolumeTypeId.eq(id)).count(&*txn).await.map_err(db_error)?;
    let snapshots =
        snapshot::Entity::find().filter(snapshot::Column::VolumeTypeId.eq(id)).count(&*txn).await.map_err(db_error)?;
    if volumes + snapshots > 0 {
        return Err(ServiceError::invalid(format!(
            "volume type {} is used by {volumes} volumes and {snapshots} snapshots; delete or retype them first",
            model.name
        )));
    }
    let defaults = default_type::Entity::find()
        .filter(default_type::Column::VolumeTypeId.eq(id))
        .count(&*txn)
        .await
        .map_err(db_error)?;
    if defaults > 0 {
        return Err(ServiceError::invalid(format!(
            "volume type {} is the default type of {defaults} projects; unset those defaults first",
            model.name
        )));
    }
    volume_type_access::Entity::delete_many()
        .filter(volume_type_access::Column::VolumeTypeId.eq(id))
        .exec(&*txn)
        .await
        .map_err(db_error)?;
    volume_type::Entity::delete_by_id(id).exec(&*txn).await.map_err(db_error)?;
    txn.commit().await
}

pub async fn set_extra_specs(
    core: &Core,
    request: SetVolumeTypeExtraSpecsRequest,
) -> Result<volume_type::Model, ServiceError> {
    fields::check_map(&request.extra_specs, "extra spec")?;
    edit_extra_specs(core, &request.volume_type_id, |_, specs| {
        specs.extend(request.extra_specs);
        Ok(())
    })
    .await
}

pub async fn unset_extra_spec(core: &Core, id: &str, key: &str) -> Result<volume_type::Model, ServiceError> {
    edit_extra_specs(core, id, |model, specs| match specs.remove(key) {
        Some(_) => Ok(()),
        None => Err(ServiceError::not_found(format!(
            "volume type {} has no extra spec {}",
            model.name,
            basalt::error::excerpt(key)
        ))),
    })
    .await
}

/// Loads the type for an admin, lets `edit` change its extra specs, and writes them back.
async fn edit_extra_specs(
    core: &Core,
    id: &str,
    edit: impl FnOnce(&volume_type::Model, &mut HashMap<String, String>) -> Result<(), ServiceError>,
) -> Result<volume_type::Model, ServiceError> {
    let txn = core.begin_write().await?;
    let model = load_for_change(&*txn, id).await?;
    let mut specs = model.extra_specs.to_hash_map();
    edit(&model, &mut specs)?;
    let mut active: volume_type::ActiveModel = model.into();
    active.extra_specs = Set(StringMap::from(specs));
    active.updated_at = Set(Utc::now());
    let model = active.update(&*txn).await.map_err(db_error)?;
    txn.commit().await?;
    Ok(model)
}

pub async fn set_access(core: &Core, id: &str, project: &str, grant: bool) -> Result<volume_type::Model, ServiceError> {
    let project = ProjectId::parse(project)?;
    let txn = core.begin_write().await?;
    let model = load_for_change(&*txn, id).await?;
    if model.is_public {
        return Err(ServiceError::invalid(format!(
            "volume type {} is public; access lists apply to private types only",
            model.name
        )));
    }
    if grant {
        let insert = Query::insert()
            .into_table(volume_type_access::Entity)
            .columns([volume_type_access::Column::VolumeTypeId, volume_type_access::Column::ProjectId])
            .values_panic([model.id.into(), project.clone().into()])
            .on_conflict(
                OnConflict::columns([volume_type_access::Column::VolumeTypeId, volume_type_access::Column::ProjectId])
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        txn.execute(&insert).await.map_err(db_error)?;
    } else {
        let removed = volume_type_access::Entity::delete_by_id((model.id, project.clone()))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        if removed.rows_affected == 0 {
            return Err(ServiceError::not_found(format!(
                "project {project} has no access to volume type {}",
                model.name
            )));
        }
    }
    txn.commit().await?;
    Ok(model)
}
