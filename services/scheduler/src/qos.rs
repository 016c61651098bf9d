//! QoS specs (admin only): named sets of limits associated with volume types. Specs with consumer
//! `front-end` or `both` travel to the host in the connection info; `back-end` ones to the node.

use basalt::{
    ErrorCode, ServiceError,
    ids::{QosSpecsId, VolumeTypeId},
    proto::{AssociateQosSpecsRequest, CreateQosSpecsRequest, QosSpecs, QosSpecsAssociation, UpdateQosSpecsRequest},
};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set, sea_query::Expr,
};

use crate::{
    Core,
    db::{db_error, json::StringMap, qos_specs, volume_type},
    fields,
};

const CONSUMERS: [&str; 3] = ["back-end", "front-end", "both"];

fn check_consumer(consumer: &str) -> Result<(), ServiceError> {
    if CONSUMERS.contains(&consumer) {
        return Ok(());
    }
    Err(ServiceError::invalid(format!(
        "consumer {} is invalid: use back-end, front-end or both",
        basalt::error::excerpt(consumer)
    )))
}

pub fn to_proto(model: &qos_specs::Model) -> QosSpecs {
    QosSpecs {
        id: model.id.to_string(),
        name: model.name.clone(),
        consumer: model.consumer.clone(),
        specs: model.specs.to_hash_map(),
    }
}

pub struct Qos<'a> {
    core: &'a Core,
}

impl<'a> Qos<'a> {
    pub fn new(core: &'a Core) -> Self {
        Self { core }
    }

    async fn load(&self, id: &str) -> Result<qos_specs::Model, ServiceError> {
        qos_specs::Entity::find_by_id(QosSpecsId::parse(id)?)
            .one(&self.core.db)
            .await
            .map_err(db_error)?
            .ok_or_else(|| ServiceError::not_found(format!("qos specs {id} not found")))
    }

    pub async fn create(&self, request: CreateQosSpecsRequest) -> Result<qos_specs::Model, ServiceError> {
        let name = request.name.trim().to_owned();
        fields::check_required_name("the qos specs' name", &name)?;
        let consumer = if request.consumer.is_empty() { "back-end".to_owned() } else { request.consumer };
        check_consumer(&consumer)?;
        fields::check_map(&request.specs, "qos spec")?;
        let txn = self.core.begin_write().await?;
        let taken = qos_specs::Entity::find()
            .filter(qos_specs::Column::Name.eq(name.as_str()))
            .count(&*txn)
            .await
            .map_err(db_error)?;
        if taken > 0 {
            return Err(ServiceError::new(
                ErrorCode::AlreadyExists,
                format!("qos specs named {} already exist", basalt::error::excerpt(&name)),
            ));
        }
        let model = qos_specs::ActiveModel {
            id: Set(QosSpecsId::new_random()),
            name: Set(name),
            consumer: Set(consumer),
            specs: Set(StringMap::from(request.specs)),
            created_at: Set(Utc::now()),
        }
        .insert(&*txn)
        .await
        .map_err(db_error)?;
        txn.commit().await?;
        Ok(model)
    }

    pub async fn get(&self, id: &str) -> Result<qos_specs::Model, ServiceError> {
        self.load(id).await
    }

    pub async fn list(&self) -> Result<Vec<qos_specs::Model>, ServiceError> {
        qos_specs::Entity::find().order_by_asc(qos_specs::Column::Name).all(&self.core.db).await.map_err(db_error)
    }

    pub async fn update(&self, request: UpdateQosSpecsRequest) -> Result<qos_specs::Model, ServiceError> {
        fields::check_map(&request.specs, "qos spec")?;
        let model = self.load(&request.qos_specs_id).await?;
        let mut merged = model.specs.to_hash_map();
        for key in &request.delete_keys {
            if merged.remove(key).is_none() {
                return Err(ServiceError::not_found(format!(
                    "qos specs {} have no key {}",
                    model.name,
                    basalt::error::excerpt(key)
                )));
            }
        }
        merged.extend(request.specs);
        let mut active: qos_specs::ActiveModel = model.into();
        active.specs = Set(StringMap::from(merged));
        if !request.consumer.is_empty() {
            check_consumer(&request.consumer)?;
            active.consumer = Set(request.consumer);
        }
        active.update(&self.core.db).await.map_err(db_error)
    }

    pub async fn delete(&self, id: &str, force: bool) -> Result<(), ServiceError> {
        let model = self.load(id).await?;
        let txn = self.core.begin_write().await?;
        let associated = volume_type::Entity::find()
            .filter(volume_type::Column::QosSpecsId.eq(model.id))
            .count(&*txn)
            .await
            .map_err(db_error)?;
        if associated > 0 && !force {
            return Err(ServiceError::new(
                ErrorCode::Conflict,
                format!(
                    "qos specs {} are associated with {associated} volume types; disassociate them or delete with force",
                    model.name
                ),
            ));
        }
        volume_type::Entity::update_many()
            .col_expr(volume_type::Column::QosSpecsId, Expr::value(Option::<QosSpecsId>::None))
            .filter(volume_type::Column::QosSpecsId.eq(model.id))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        qos_specs::Entity::delete_by_id(model.id).exec(&*txn).await.map_err(db_error)?;
        txn.commit().await
    }

    pub async fn associate(&self, request: AssociateQosSpecsRequest) -> Result<qos_specs::Model, ServiceError> {
        let model = self.load(&request.qos_specs_id).await?;
        let txn = self.core.begin_write().await?;
        if request.disassociate && request.volume_type_id.is_empty() {
            volume_type::Entity::update_many()
                .col_expr(volume_type::Column::QosSpecsId, Expr::value(Option::<QosSpecsId>::None))
                .filter(volume_type::Column::QosSpecsId.eq(model.id))
                .exec(&*txn)
                .await
                .map_err(db_error)?;
            txn.commit().await?;
            return Ok(model);
        }
        let volume_type = volume_type::Entity::find_by_id(VolumeTypeId::parse(&request.volume_type_id)?)
            .one(&*txn)
            .await
            .map_err(db_error)?
            .ok_or_else(|| ServiceError::not_found(format!("volume type {} not found", request.volume_type_id)))?;
        let value = if request.disassociate {
            if volume_type.qos_specs_id != Some(model.id) {
                return Err(ServiceError::invalid(format!(
                    "volume type {} is not associated with qos specs {}",
                    volume_type.name, model.name
                )));
            }
            None
        } else {
            if let Some(other) = volume_type.qos_specs_id.filter(|other| *other != model.id) {
                return Err(ServiceError::invalid(format!(
                    "volume type {} is already associated with qos specs {other}; disassociate it first",
                    volume_type.name
                )));
            }
            Some(model.id)
        };
        volume_type::Entity::update_many()
            .col_expr(volume_type::Column::QosSpecsId, Expr::value(value))
            .filter(volume_type::Column::Id.eq(volume_type.id))
            .exec(&*txn)
            .await
            .map_err(db_error)?;
        txn.commit().await?;
        Ok(model)
    }

    pub async fn associations(&self, id: &str) -> Result<Vec<QosSpecsAssociation>, ServiceError> {
        let model = self.load(id).await?;
        let types = volume_type::Entity::find()
            .filter(volume_type::Column::QosSpecsId.eq(model.id))
            .all(&self.core.db)
            .await
            .map_err(db_error)?;
        Ok(types
            .into_iter()
            .map(|model| QosSpecsAssociation { volume_type_id: model.id.to_string(), volume_type_name: model.name })
            .collect())
    }
}
