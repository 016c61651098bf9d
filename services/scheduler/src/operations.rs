//! Every kind of journalled operation, to decode a journal row back into its domain's type when
//! the reconciler takes the row over. A new domain with operations adds one line to the enum; a
//! new operation of an existing domain changes nothing here.

use std::sync::Arc;

use basalt::ServiceError;
use serde::Deserialize;

use crate::{
    Core,
    backups::operations::BackupOperation,
    db::operation,
    group_snapshots::operations::GroupSnapshotOperation,
    groups::operations::GroupOperation,
    journal::{self, Journalled},
    snapshots::operations::SnapshotOperation,
    volumes::{migration::MigrationOperation, operations::VolumeOperation},
};

/// A journal payload: each domain's operations are tagged by `kind`, and no two domains share a
/// kind, so the first domain that knows the kind decodes it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Operation {
    Volume(VolumeOperation),
    Snapshot(SnapshotOperation),
    Backup(BackupOperation),
    Group(GroupOperation),
    GroupSnapshot(GroupSnapshotOperation),
    Migration(MigrationOperation),
}

impl Operation {
    pub fn decode(record: &operation::Model) -> Result<Self, ServiceError> {
        serde_json::from_str(&record.payload).map_err(|error| {
            ServiceError::internal(format!(
                "operation {} of kind {:?} cannot be decoded: {error}",
                record.id, record.kind
            ))
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Volume(operation) => operation.kind(),
            Self::Snapshot(operation) => operation.kind(),
            Self::Backup(operation) => operation.kind(),
            Self::Group(operation) => operation.kind(),
            Self::GroupSnapshot(operation) => operation.kind(),
            Self::Migration(operation) => operation.kind(),
        }
    }
}

/// Decodes a row the reconciler took over and re-drives it (`journal::Relaunch`).
pub fn relaunch(core: Arc<Core>, record: operation::Model) -> Result<(), ServiceError> {
    match Operation::decode(&record)? {
        Operation::Volume(operation) => journal::launch(core, record, operation),
        Operation::Snapshot(operation) => journal::launch(core, record, operation),
        Operation::Backup(operation) => journal::launch(core, record, operation),
        Operation::Group(operation) => journal::launch(core, record, operation),
        Operation::GroupSnapshot(operation) => journal::launch(core, record, operation),
        Operation::Migration(operation) => journal::launch(core, record, operation),
    }
    Ok(())
}
