//! Volume transfers: a project offers an available volume, with its snapshots, and whichever
//! project presents the key takes it over. The key is shown once, at creation, and kept only as a
//! salted HMAC. Accepting moves the volume and its snapshots and both projects' quota usage in
//! one transaction, so neither project ever holds more or less than it owns.

use basalt::{
    ErrorCode, ServiceError,
    context::CallContext,
    hex,
    ids::{ProjectId, TransferId, VolumeId},
    proto::{CreateTransferRequest, SnapshotStatus, Transfer, VolumeStatus},
};
use chrono::Utc;
use ring::{hmac, rand::SecureRandom};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use crate::{
    Core,
    db::{db_error, snapshot, transfer, volume},
    fields,
    lifecycle::VolumeAction,
    quotas, status, volume_types,
};

/// Hex digits in a key and in a salt: 64 random bits each, typed by hand by the receiver.
const KEY_DIGITS: usize = 16;
const SALT_DIGITS: usize = 16;

pub struct Transfers<'a> {
    core: &'a Core,
}

impl<'a> Transfers<'a> {
    pub fn new(core: &'a Core) -> Self {
        Self { core }
    }

    /// Offers `volume_id` (the caller's, available, its snapshots available) to another project;
    /// returns the transfer and its key.
    pub async fn create(
        &self,
        context: &CallContext,
        request: CreateTransferRequest,
    ) -> Result<(transfer::Model, String), ServiceError> {
        let name = request.name.trim().to_owned();
        fields::check_name("a transfer's name", &name)?;
        let volume = status::load::<volume::Model>(&self.core.db, context, &request.volume_id).await?;
        if let Some(group_id) = volume.group_id {
            // The group stays with the project; its volume cannot leave it for another.
            return Err(ServiceError::invalid(format!(
                "volume {} is in group {group_id}; remove it from the group before transferring it",
                volume.id
            )));
        }
        let txn = self.core.begin_write().await?;
        let snapshots = snapshots_of(&*txn, &volume).await?;
        if request.no_snapshots && !snapshots.is_empty() {
            // A snapshot left behind would belong to one project and its volume to another.
            return Err(ServiceError::invalid(format!(
                "volume {} has {} snapshots: transfer them with it, or delete them first",
                volume.id,
                snapshots.len()
            )));
        }
        if let Some(busy) = snapshots.iter().find(|snapshot| snapshot.status != SnapshotStatus::Available) {
            return Err(ServiceError::invalid(format!(
                "snapshot {} of volume {} is {}; a volume is transferred only with available snapshots",
                busy.id,
                volume.id,
                busy.status.cinder_name()
            )));
        }
        let offered = transfer::Entity::find()
            .filter(transfer::Column::VolumeId.eq(volume.id))
            .one(&*txn)
            .await
            .map_err(db_error)?;
        if let Some(offered) = offered {
            return Err(ServiceError::invalid(format!(
                "volume {} is already offered by transfer {}",
                volume.id, offered.id
            )));
        }
        let (before, after) =
            status::transition::<volume::Model>(&*txn, volume.id, VolumeAction::OfferTransfer, "").await?;
        let key = random_hex(KEY_DIGITS)?;
        let salt = random_hex(SALT_DIGITS)?;
        let model = transfer::ActiveModel {
            id: Set(TransferId::new_random()),
            volume_id: Set(volume.id),
            project_id: Set(volume.project_id.clone()),
            name: Set(name),
            crypt_hash: Set(crypt_hash(&salt, &key)),
            salt: Set(salt),
            no_snapshots: Set(request.no_snapshots),
            created_at: Set(Utc::now()),
        }
        .insert(&*txn)
        .await
        .map_err(db_error)?;
        txn.commit().await?;
        self.core.publish([status::changed(before, &after)]).await;
        Ok((model, key))
    }

    /// A transfer the caller's project offered (any, for an admin).
    pub async fn get(&self, context: &CallContext, id: &str) -> Result<transfer::Model, ServiceError> {
        let found = transfer::Entity::find_by_id(TransferId::parse(id)?).one(&self.core.db).await.map_err(db_error)?;
        found
            .filter(|model| context.is_admin || model.project_id == context.project_id)
            .ok_or_else(|| ServiceError::not_found(format!("transfer {id} not found")))
    }

    pub async fn list(&self, context: &CallContext, all_projects: bool) -> Result<Vec<transfer::Model>, ServiceError> {
        let mut query = transfer::Entity::find().order_by_desc(transfer::Column::CreatedAt);
        if !(all_projects && context.is_admin) {
            query = query.filter(transfer::Column::ProjectId.eq(context.project_id.clone()));
        }
        query.all(&self.core.db).await.map_err(db_error)
    }

    /// The caller's project takes the volume over with the transfer's key.
    pub async fn accept(&self, context: &CallContext, id: &str, key: &str) -> Result<transfer::Model, ServiceError> {
        let transfer_id = TransferId::parse(id)?;
        let txn = self.core.begin_write().await?;
        // Another project's transfer: found by id alone, and then only with the right key.
        let not_found = || ServiceError::not_found(format!("transfer {id} not found"));
        let offer =
            transfer::Entity::find_by_id(transfer_id).one(&*txn).await.map_err(db_error)?.ok_or_else(not_found)?;
        let tag =
            hex::decode(&offer.crypt_hash).ok_or_else(|| ServiceError::internal("a transfer's hash is unreadable"))?;
        let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, offer.salt.as_bytes());
        if hmac::verify(&hmac_key, key.as_bytes(), &tag).is_err() {
            return Err(ServiceError::invalid(format!("invalid auth key for transfer {id}")));
        }
        let volume = status::find::<volume::Model>(&*txn, offer.volume_id).await?.ok_or_else(not_found)?;
        let snapshots = snapshots_of(&*txn, &volume).await?;
        let donor = volume.project_id.clone();
        let receiver = context.project_id.clone();
        let type_name = volume_types::name_of(&*txn, volume.volume_type_id).await?;
        let mut usage = quotas::volume_usage(&type_name, volume.size_gib);
        for snapshot in &snapshots {
            let snapshot_type = volume_types::name_of(&*txn, snapshot.volume_type_id).await?;
            usage.extend(quotas::snapshot_usage(&snapshot_type, snapshot.size_gib));
        }
        let defaults = &self.core.config.quota_defaults;
        quotas::check_volume_size(&*txn, defaults, &receiver, volume.size_gib).await?;
        quotas::reserve(&*txn, defaults, &receiver, &usage).await?;
        quotas::release(&*txn, &donor, &usage).await?;
        let (before, after) =
            status::transition::<volume::Model>(&*txn, volume.id, VolumeAction::EndTransfer, "").await?;
        move_to(&*txn, &after, &receiver, &context.user_id).await?;
        for snapshot in snapshots {
            let mut moved: snapshot::ActiveModel = snapshot.into();
            moved.project_id = Set(receiver.clone());
            moved.user_id = Set(context.user_id.clone());
            moved.update(&*txn).await.map_err(db_error)?;
        }
        transfer::Entity::delete_by_id(offer.id).exec(&*txn).await.map_err(db_error)?;
        txn.commit().await?;
        self.core.publish([status::changed(before, &after)]).await;
        tracing::info!(transfer_id = %offer.id, volume_id = %offer.volume_id, from = %donor, to = %receiver, "volume transferred");
        Ok(offer)
    }

    /// Withdraws the caller's offer: the volume is available to its project again.
    pub async fn delete(&self, context: &CallContext, id: &str) -> Result<(), ServiceError> {
        let offer = self.get(context, id).await?;
        let txn = self.core.begin_write().await?;
        let volume = status::find::<volume::Model>(&*txn, offer.volume_id).await?;
        // An admin may have reset the volume meanwhile: then only the offer is left to remove.
        let mut events = Vec::new();
        if volume.is_some_and(|volume| volume.status == VolumeStatus::AwaitingTransfer) {
            let (before, after) =
                status::transition::<volume::Model>(&*txn, offer.volume_id, VolumeAction::EndTransfer, "").await?;
            events.push(status::changed(before, &after));
        }
        let removed = transfer::Entity::delete_by_id(offer.id).exec(&*txn).await.map_err(db_error)?;
        if removed.rows_affected == 0 {
            return Err(ServiceError::new(ErrorCode::NotFound, format!("transfer {id} not found")));
        }
        txn.commit().await?;
        self.core.publish(events).await;
        Ok(())
    }
}

/// Withdraws any offer of `volume_id` inside `txn` (the volume is being deleted).
pub async fn withdraw_offers_of(txn: &impl ConnectionTrait, volume_id: VolumeId) -> Result<(), ServiceError> {
    transfer::Entity::delete_many()
        .filter(transfer::Column::VolumeId.eq(volume_id))
        .exec(txn)
        .await
        .map_err(db_error)?;
    Ok(())
}

async fn snapshots_of(db: &impl ConnectionTrait, volume: &volume::Model) -> Result<Vec<snapshot::Model>, ServiceError> {
    snapshot::Entity::find().filter(snapshot::Column::VolumeId.eq(volume.id)).all(db).await.map_err(db_error)
}

async fn move_to(
    txn: &impl ConnectionTrait,
    volume: &volume::Model,
    project: &ProjectId,
    user_id: &str,
) -> Result<(), ServiceError> {
    let mut moved: volume::ActiveModel = volume.clone().into();
    moved.project_id = Set(project.clone());
    moved.user_id = Set(user_id.to_owned());
    moved.update(txn).await.map_err(db_error)?;
    Ok(())
}

pub fn to_proto(model: &transfer::Model, auth_key: Option<&str>) -> Transfer {
    Transfer {
        id: model.id.to_string(),
        name: model.name.clone(),
        volume_id: model.volume_id.to_string(),
        created_at: Some(std::time::SystemTime::from(model.created_at).into()),
        auth_key: auth_key.unwrap_or_default().to_owned(),
        no_snapshots: model.no_snapshots,
        source_project_id: model.project_id.to_string(),
        destination_project_id: String::new(),
        accepted: false,
    }
}

fn crypt_hash(salt: &str, key: &str) -> String {
    let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, salt.as_bytes());
    hex::encode(hmac::sign(&hmac_key, key.as_bytes()))
}

fn random_hex(digits: usize) -> Result<String, ServiceError> {
    let mut bytes = vec![0u8; digits.div_ceil(2)];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ServiceError::internal("the system's random source failed"))?;
    let mut text = hex::encode(&bytes);
    text.truncate(digits);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_verifies_only_under_its_own_salt() {
        let hash = crypt_hash("salt-a", "key");
        let tag = hex::decode(&hash).expect("hex");
        let verify = |salt: &str, key: &str| {
            hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, salt.as_bytes()), key.as_bytes(), &tag).is_ok()
        };
        assert!(verify("salt-a", "key"));
        assert!(!verify("salt-b", "key"));
        assert!(!verify("salt-a", "kez"));
        assert_eq!(random_hex(KEY_DIGITS).expect("random").len(), KEY_DIGITS);
        assert_ne!(random_hex(KEY_DIGITS).expect("random"), random_hex(KEY_DIGITS).expect("random"));
    }
}
