//! Copies of several volumes cut at one point in time: a group snapshot, or a group cloned from
//! another. Each copy alone is the backend's (`Backend::create_snapshot`, a clone through
//! `create_volume`); what makes them one set is that nothing changes any source while they are
//! cut. The node's exports are held (no volume is exported or unexported meanwhile) and, when any
//! source is in use, every write through the target is held too (`target/freeze.rs`).
//!
//! The order, for every set: the per-resource locks of all sources and copies, in id order (two
//! sets never wait for each other in a circle); then the exports; then the writers; then the copies
//! in the order given; then the writers and exports are released in reverse.
//!
//! A set is all or nothing: a repeat finds every copy made and returns, or finds some and discards
//! them before cutting the whole set again (copies cut at two moments are not a set), and a set
//! that fails, or was held longer than the freeze limit, is discarded.

use std::time::Duration;

use basalt::{
    ServiceError,
    ids::{SnapshotId, VolumeId},
    locks::KeyedLocks,
    proto::NodeCopySetRequest,
};
use uuid::Uuid;

use crate::{
    backend::{Backend, ConfiguredBackend, VolumeSource},
    target::Target,
};

/// What each copy of a set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    Snapshot,
    Clone,
}

#[derive(Debug, Clone)]
struct Copy {
    source: VolumeId,
    /// The snapshot's or new volume's id.
    copy: Uuid,
    size_bytes: u64,
    in_use: bool,
}

/// Where a set is cut, and with what.
pub struct CopySet<'a> {
    pub backend: &'a ConfiguredBackend,
    pub target: &'a Target,
    pub locks: &'a KeyedLocks<Uuid>,
    pub freeze_limit: Duration,
}

impl CopySet<'_> {
    /// Cuts the set; `Ok(true)` when the writers were held still for it.
    pub async fn cut(&self, kind: CopyKind, request: &NodeCopySetRequest) -> Result<bool, ServiceError> {
        let copies = parse(kind, request)?;
        let pool = request.pool.as_str();
        let mut ids: Vec<Uuid> = copies.iter().flat_map(|copy| [*copy.source.as_uuid(), copy.copy]).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut guards = Vec::with_capacity(ids.len());
        for id in ids {
            guards.push(self.locks.lock(id).await);
        }

        let mut made = Vec::new();
        for copy in &copies {
            if self.exists(kind, pool, copy).await? {
                made.push(copy);
            }
        }
        if made.len() == copies.len() {
            return Ok(false);
        }
        for copy in made {
            tracing::warn!(copy = %copy.copy, "a set cut part-way before: discarding its copy to cut the set again");
            self.discard(kind, pool, copy).await?;
        }

        let writers = copies.iter().any(|copy| copy.in_use);
        let held = self.target.hold_still(writers, self.freeze_limit).await?;
        let mut outcome = Ok(());
        for copy in &copies {
            outcome = self.make(kind, pool, copy).await;
            if outcome.is_err() {
                break;
            }
        }
        if let Err(error) = outcome.and(held.release()) {
            for copy in &copies {
                if let Err(discard) = self.discard(kind, pool, copy).await {
                    tracing::error!(copy = %copy.copy, error = %discard, "cannot discard a copy of a failed set");
                }
            }
            return Err(error);
        }
        Ok(writers)
    }

    async fn exists(&self, kind: CopyKind, pool: &str, copy: &Copy) -> Result<bool, ServiceError> {
        Ok(match kind {
            CopyKind::Snapshot => self.backend.get_snapshot(pool, SnapshotId::from(copy.copy)).await?.is_some(),
            CopyKind::Clone => self.backend.get_volume(pool, VolumeId::from(copy.copy)).await?.is_some(),
        })
    }

    async fn make(&self, kind: CopyKind, pool: &str, copy: &Copy) -> Result<(), ServiceError> {
        match kind {
            CopyKind::Snapshot => {
                self.backend.create_snapshot(pool, SnapshotId::from(copy.copy), copy.source).await.map(drop)
            }
            CopyKind::Clone => {
                let source = VolumeSource::Volume(copy.source);
                self.backend.create_volume(pool, VolumeId::from(copy.copy), copy.size_bytes, source).await.map(drop)
            }
        }
    }

    /// Removes a copy (wiped as any delete is); a copy that was never made is no error.
    async fn discard(&self, kind: CopyKind, pool: &str, copy: &Copy) -> Result<(), ServiceError> {
        match kind {
            CopyKind::Snapshot => self.backend.delete_snapshot(pool, SnapshotId::from(copy.copy)).await.map(drop),
            CopyKind::Clone => self.backend.delete_volume(pool, VolumeId::from(copy.copy)).await.map(drop),
        }
    }
}

fn parse(kind: CopyKind, request: &NodeCopySetRequest) -> Result<Vec<Copy>, ServiceError> {
    if request.copies.is_empty() {
        return Err(ServiceError::invalid("a copy set needs at least one copy"));
    }
    let mut copies = Vec::with_capacity(request.copies.len());
    for copy in &request.copies {
        let parsed = Copy {
            source: VolumeId::parse(&copy.source_volume_id)?,
            copy: Uuid::try_parse(&copy.copy_id).map_err(|_| {
                ServiceError::invalid(format!(
                    "invalid copy id {}: expected a UUID",
                    basalt::error::excerpt(&copy.copy_id)
                ))
            })?,
            size_bytes: copy.size_bytes,
            in_use: copy.in_use,
        };
        if kind == CopyKind::Clone && parsed.size_bytes == 0 {
            return Err(ServiceError::invalid(format!("the clone {} needs its size", parsed.copy)));
        }
        if copies.iter().any(|known: &Copy| known.copy == parsed.copy || known.source == parsed.source) {
            return Err(ServiceError::invalid(format!(
                "volume {} or copy {} appears twice in the set",
                parsed.source, parsed.copy
            )));
        }
        copies.push(parsed);
    }
    Ok(copies)
}
