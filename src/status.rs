//! Cinder's status strings for Basalt's status enums. The database stores these strings and the
//! REST gateway shows them, so the mapping lives here, once.

use crate::proto::{
    AttachMode, AttachStatus, BackupStatus, GroupSnapshotStatus, GroupStatus, SnapshotStatus, VolumeStatus,
};

const VOLUME_STATUS_NAMES: &[(VolumeStatus, &str)] = &[
    (VolumeStatus::Creating, "creating"),
    (VolumeStatus::Available, "available"),
    (VolumeStatus::Reserved, "reserved"),
    (VolumeStatus::Attaching, "attaching"),
    (VolumeStatus::Detaching, "detaching"),
    (VolumeStatus::InUse, "in-use"),
    (VolumeStatus::Maintenance, "maintenance"),
    (VolumeStatus::Deleting, "deleting"),
    (VolumeStatus::AwaitingTransfer, "awaiting-transfer"),
    (VolumeStatus::Error, "error"),
    (VolumeStatus::ErrorDeleting, "error_deleting"),
    (VolumeStatus::BackingUp, "backing-up"),
    (VolumeStatus::RestoringBackup, "restoring-backup"),
    (VolumeStatus::ErrorBackingUp, "error_backing-up"),
    (VolumeStatus::ErrorRestoring, "error_restoring"),
    (VolumeStatus::ErrorExtending, "error_extending"),
    (VolumeStatus::Downloading, "downloading"),
    (VolumeStatus::Uploading, "uploading"),
    (VolumeStatus::Retyping, "retyping"),
    (VolumeStatus::Extending, "extending"),
    (VolumeStatus::Reverting, "reverting"),
];

const ATTACH_STATUS_NAMES: &[(AttachStatus, &str)] = &[
    (AttachStatus::Detached, "detached"),
    (AttachStatus::Reserved, "reserved"),
    (AttachStatus::Attaching, "attaching"),
    (AttachStatus::Attached, "attached"),
    (AttachStatus::Detaching, "detaching"),
    (AttachStatus::ErrorAttaching, "error_attaching"),
    (AttachStatus::ErrorDetaching, "error_detaching"),
];

const SNAPSHOT_STATUS_NAMES: &[(SnapshotStatus, &str)] = &[
    (SnapshotStatus::Creating, "creating"),
    (SnapshotStatus::Available, "available"),
    (SnapshotStatus::Error, "error"),
    (SnapshotStatus::Deleting, "deleting"),
    (SnapshotStatus::ErrorDeleting, "error_deleting"),
    (SnapshotStatus::BackingUp, "backing-up"),
    (SnapshotStatus::Restoring, "restoring"),
];

const ATTACH_MODE_NAMES: &[(AttachMode, &str)] = &[(AttachMode::ReadWrite, "rw"), (AttachMode::ReadOnly, "ro")];

const BACKUP_STATUS_NAMES: &[(BackupStatus, &str)] = &[
    (BackupStatus::Creating, "creating"),
    (BackupStatus::Available, "available"),
    (BackupStatus::Deleting, "deleting"),
    (BackupStatus::Error, "error"),
    (BackupStatus::ErrorDeleting, "error_deleting"),
    (BackupStatus::Restoring, "restoring"),
];

const GROUP_STATUS_NAMES: &[(GroupStatus, &str)] = &[
    (GroupStatus::Creating, "creating"),
    (GroupStatus::Available, "available"),
    (GroupStatus::Updating, "updating"),
    (GroupStatus::Deleting, "deleting"),
    (GroupStatus::Error, "error"),
    (GroupStatus::ErrorDeleting, "error_deleting"),
    (GroupStatus::InUse, "in-use"),
];

const GROUP_SNAPSHOT_STATUS_NAMES: &[(GroupSnapshotStatus, &str)] = &[
    (GroupSnapshotStatus::Creating, "creating"),
    (GroupSnapshotStatus::Available, "available"),
    (GroupSnapshotStatus::Deleting, "deleting"),
    (GroupSnapshotStatus::Error, "error"),
    (GroupSnapshotStatus::ErrorDeleting, "error_deleting"),
];

impl GroupSnapshotStatus {
    pub fn cinder_name(self) -> &'static str {
        lookup_name(GROUP_SNAPSHOT_STATUS_NAMES, self)
    }

    pub fn from_cinder_name(name: &str) -> Option<Self> {
        lookup_value(GROUP_SNAPSHOT_STATUS_NAMES, name)
    }
}

impl GroupStatus {
    pub fn cinder_name(self) -> &'static str {
        lookup_name(GROUP_STATUS_NAMES, self)
    }

    pub fn from_cinder_name(name: &str) -> Option<Self> {
        lookup_value(GROUP_STATUS_NAMES, name)
    }
}

impl BackupStatus {
    pub fn cinder_name(self) -> &'static str {
        lookup_name(BACKUP_STATUS_NAMES, self)
    }

    pub fn from_cinder_name(name: &str) -> Option<Self> {
        lookup_value(BACKUP_STATUS_NAMES, name)
    }
}

impl SnapshotStatus {
    pub fn cinder_name(self) -> &'static str {
        lookup_name(SNAPSHOT_STATUS_NAMES, self)
    }

    pub fn from_cinder_name(name: &str) -> Option<Self> {
        lookup_value(SNAPSHOT_STATUS_NAMES, name)
    }
}

impl VolumeStatus {
    /// Cinder's name, e.g. `in-use`; `unspecified` for the zero value.
    pub fn cinder_name(self) -> &'static str {
        lookup_name(VOLUME_STATUS_NAMES, self)
    }

    pub fn from_cinder_name(name: &str) -> Option<Self> {
        lookup_value(VOLUME_STATUS_NAMES, name)
    }
}

impl AttachStatus {
    pub fn cinder_name(self) -> &'static str {
        lookup_name(ATTACH_STATUS_NAMES, self)
    }

    pub fn from_cinder_name(name: &str) -> Option<Self> {
        lookup_value(ATTACH_STATUS_NAMES, name)
    }
}

impl AttachMode {
    /// Cinder's `rw` or `ro`.
    pub fn cinder_name(self) -> &'static str {
        lookup_name(ATTACH_MODE_NAMES, self)
    }

    pub fn from_cinder_name(name: &str) -> Option<Self> {
        lookup_value(ATTACH_MODE_NAMES, name)
    }
}

fn lookup_name<T: PartialEq + Copy>(table: &[(T, &'static str)], value: T) -> &'static str {
    table.iter().find(|(candidate, _)| *candidate == value).map_or("unspecified", |(_, name)| name)
}

fn lookup_value<T: Copy>(table: &[(T, &'static str)], name: &str) -> Option<T> {
    table.iter().find(|(_, candidate)| *candidate == name).map(|(value, _)| *value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_volume_status_has_one_cinder_name() {
        for value in 1..=21 {
            let status = VolumeStatus::try_from(value).unwrap();
            let name = status.cinder_name();
            assert_ne!(name, "unspecified", "{status:?}");
            assert_eq!(VolumeStatus::from_cinder_name(name), Some(status));
        }
        assert_eq!(VolumeStatus::InUse.cinder_name(), "in-use");
        assert_eq!(VolumeStatus::ErrorBackingUp.cinder_name(), "error_backing-up");
        assert_eq!(VolumeStatus::from_cinder_name("bogus"), None);
    }

    #[test]
    fn every_snapshot_status_has_one_cinder_name() {
        for value in 1..=7 {
            let status = SnapshotStatus::try_from(value).unwrap();
            assert_eq!(SnapshotStatus::from_cinder_name(status.cinder_name()), Some(status));
        }
    }

    #[test]
    fn every_attach_status_has_one_cinder_name() {
        for value in 1..=7 {
            let status = AttachStatus::try_from(value).unwrap();
            assert_eq!(AttachStatus::from_cinder_name(status.cinder_name()), Some(status));
        }
    }
}
