//! Backups: the engine that cuts a volume into deduplicated, compressed chunks and restores them,
//! and the store that keeps them apart from the volume's own storage.

pub mod engine;
pub mod s3;
pub mod service;
pub mod store;

pub use service::{BackupOrder, BackupStoreSettings, Backups};
