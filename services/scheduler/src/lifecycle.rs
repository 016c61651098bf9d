//! Cinder's status machines (`cinder-api.md` §1.6) as one table per resource. Every status change
//! in the scheduler goes through [`Transition`]s from here, applied by compare-and-set, so a
//! request that finds the resource in the wrong status fails with a message naming the statuses
//! that would have been accepted.

use basalt::proto::{AttachStatus, BackupStatus, GroupSnapshotStatus, GroupStatus, SnapshotStatus, VolumeStatus};

/// One action's passage through the machine: accepted from `from`, shown as `during` while its
/// operation runs, then `success` or `failure`. `None` for `during` means the action does not
/// change the status; `None` for `success` means the row is removed. Actions without a node
/// operation (reserve, unreserve) leave the resource in `during`.
#[derive(Debug)]
pub struct Transition<S: 'static> {
    pub from: &'static [S],
    pub during: Option<S>,
    pub success: Option<S>,
    pub failure: S,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeAction {
    Create,
    Delete,
    /// Admin only: skips the status rules, but never races an operation in flight.
    ForceDelete,
    Extend,
    /// Extend of an in-use volume (Cinder 3.42): the host keeps it while it grows.
    ExtendAttached,
    Revert,
    /// The volume is the source of a snapshot; its status does not change.
    Snapshot,
    /// A snapshot of an in-use volume (`force`).
    SnapshotForce,
    /// The volume is the source of a clone; its status does not change.
    CloneSource,
    /// Name, description, metadata.
    Update,
    /// An attachment reserves the volume (no node operation).
    Reserve,
    /// The last attachment went: the volume is free again (no node operation).
    Unreserve,
    /// Legacy `os-reserve`: available -> attaching.
    LegacyReserve,
    /// Legacy `os-unreserve`: attaching -> available.
    LegacyUnreserve,
    /// `os-begin_detaching`: in-use -> detaching.
    BeginDetaching,
    /// `os-roll_detaching`: detaching -> in-use.
    RollDetaching,
    /// A new volume type on the same pool; the status does not change.
    Retype,
    /// A new volume type on another node: available -> retyping while the bytes move -> available.
    RetypeMigrate,
    /// The same type on another node (admin): available -> maintenance while the bytes move.
    Migrate,
    /// A host's connector arrived for a reserved volume: reserved -> attaching.
    Connect,
    /// The host attached the volume: attaching -> in-use.
    CompleteAttach,
    /// Legacy `os-detach` of the last attachment: detaching (or in-use) -> available.
    LegacyDetach,
    /// A backup reads the volume: available -> backing-up -> available.
    Backup,
    /// A backup of an in-use volume (`force`): in-use -> backing-up -> in-use.
    BackupAttached,
    /// A backup is written onto the volume: available -> restoring-backup -> available.
    RestoreBackup,
    /// Offered to another project: available -> awaiting-transfer (no node operation).
    OfferTransfer,
    /// The transfer was accepted or withdrawn: awaiting-transfer -> available.
    EndTransfer,
    /// Admin only: the row is forgotten, the bytes stay (no node operation).
    Unmanage,
}

use VolumeStatus as V;

/// Statuses that belong to an operation in flight; only its outcome may move the volume on.
pub const VOLUME_BUSY: &[VolumeStatus] =
    &[V::Creating, V::Deleting, V::Extending, V::Reverting, V::BackingUp, V::RestoringBackup];

const VOLUME_DELETABLE: &[VolumeStatus] =
    &[V::Available, V::Error, V::ErrorRestoring, V::ErrorExtending, V::ErrorDeleting];
const VOLUME_FORCE_DELETABLE: &[VolumeStatus] = &[
    V::Available,
    V::Error,
    V::ErrorRestoring,
    V::ErrorExtending,
    V::ErrorDeleting,
    V::ErrorBackingUp,
    V::Reserved,
    V::Attaching,
    V::Detaching,
    V::InUse,
    V::Maintenance,
    V::AwaitingTransfer,
    V::Downloading,
    V::Uploading,
    V::Retyping,
];
const VOLUME_UPDATABLE: &[VolumeStatus] = &[
    V::Creating,
    V::Available,
    V::Reserved,
    V::Attaching,
    V::Detaching,
    V::InUse,
    V::Maintenance,
    V::AwaitingTransfer,
    V::Error,
    V::ErrorDeleting,
    V::BackingUp,
    V::RestoringBackup,
    V::ErrorBackingUp,
    V::ErrorRestoring,
    V::ErrorExtending,
    V::Downloading,
    V::Uploading,
    V::Retyping,
    V::Extending,
    V::Reverting,
];

/// Statuses an admin may reset a volume to (Cinder's os-reset_status): never one that claims an
/// operation is running, which nothing would then finish.
pub const VOLUME_RESETTABLE: &[VolumeStatus] = &[
    V::Available,
    V::Error,
    V::ErrorDeleting,
    V::ErrorExtending,
    V::ErrorRestoring,
    V::ErrorBackingUp,
    V::Maintenance,
];

pub fn volume(action: VolumeAction) -> &'static Transition<VolumeStatus> {
    const CREATE: Transition<VolumeStatus> =
        Transition { from: &[], during: Some(V::Creating), success: Some(V::Available), failure: V::Error };
    const DELETE: Transition<VolumeStatus> =
        Transition { from: VOLUME_DELETABLE, during: Some(V::Deleting), success: None, failure: V::ErrorDeleting };
    const FORCE_DELETE: Transition<VolumeStatus> = Transition {
        from: VOLUME_FORCE_DELETABLE,
        during: Some(V::Deleting),
        success: None,
        failure: V::ErrorDeleting,
    };
    const EXTEND: Transition<VolumeStatus> = Transition {
        from: &[V::Available],
        during: Some(V::Extending),
        success: Some(V::Available),
        failure: V::ErrorExtending,
    };
    const REVERT: Transition<VolumeStatus> = Transition {
        from: &[V::Available],
        during: Some(V::Reverting),
        success: Some(V::Available),
        failure: V::Error,
    };
    const SNAPSHOT: Transition<VolumeStatus> =
        Transition { from: &[V::Available], during: None, success: None, failure: V::Available };
    const SNAPSHOT_FORCE: Transition<VolumeStatus> =
        Transition { from: &[V::Available, V::InUse], during: None, success: None, failure: V::Available };
    const CLONE_SOURCE: Transition<VolumeStatus> =
        Transition { from: &[V::Available, V::InUse], during: None, success: None, failure: V::Available };
    const UPDATE: Transition<VolumeStatus> =
        Transition { from: VOLUME_UPDATABLE, during: None, success: None, failure: V::Available };
    const RESERVE: Transition<VolumeStatus> =
        Transition { from: &[V::Available], during: Some(V::Reserved), success: None, failure: V::Available };
    const UNRESERVE: Transition<VolumeStatus> = Transition {
        from: &[V::Reserved, V::Attaching, V::InUse, V::Detaching],
        during: Some(V::Available),
        success: None,
        failure: V::Available,
    };
    const LEGACY_RESERVE: Transition<VolumeStatus> =
        Transition { from: &[V::Available], during: Some(V::Attaching), success: None, failure: V::Available };
    const LEGACY_UNRESERVE: Transition<VolumeStatus> =
        Transition { from: &[V::Attaching], during: Some(V::Available), success: None, failure: V::Attaching };
    const BEGIN_DETACHING: Transition<VolumeStatus> =
        Transition { from: &[V::InUse], during: Some(V::Detaching), success: None, failure: V::InUse };
    const ROLL_DETACHING: Transition<VolumeStatus> =
        Transition { from: &[V::Detaching], during: Some(V::InUse), success: None, failure: V::Detaching };
    const RETYPE: Transition<VolumeStatus> =
        Transition { from: &[V::Available, V::InUse], during: None, success: None, failure: V::Available };
    // Detached only: nothing may write the bytes while they are copied.
    const RETYPE_MIGRATE: Transition<VolumeStatus> = Transition {
        from: &[V::Available],
        during: Some(V::Retyping),
        success: Some(V::Available),
        failure: V::Available,
    };
    const MIGRATE: Transition<VolumeStatus> = Transition {
        from: &[V::Available],
        during: Some(V::Maintenance),
        success: Some(V::Available),
        failure: V::Available,
    };
    const CONNECT: Transition<VolumeStatus> = Transition {
        from: &[V::Reserved, V::Attaching],
        during: Some(V::Attaching),
        success: None,
        failure: V::Reserved,
    };
    const COMPLETE_ATTACH: Transition<VolumeStatus> =
        Transition { from: &[V::Attaching], during: Some(V::InUse), success: None, failure: V::Attaching };
    const EXTEND_ATTACHED: Transition<VolumeStatus> = Transition {
        from: &[V::InUse],
        during: Some(V::Extending),
        success: Some(V::InUse),
        failure: V::ErrorExtending,
    };
    const LEGACY_DETACH: Transition<VolumeStatus> =
        Transition { from: &[V::Detaching, V::InUse], during: Some(V::Available), success: None, failure: V::InUse };
    const BACKUP: Transition<VolumeStatus> = Transition {
        from: &[V::Available],
        during: Some(V::BackingUp),
        success: Some(V::Available),
        failure: V::Available,
    };
    const BACKUP_ATTACHED: Transition<VolumeStatus> =
        Transition { from: &[V::InUse], during: Some(V::BackingUp), success: Some(V::InUse), failure: V::InUse };
    const RESTORE_BACKUP: Transition<VolumeStatus> = Transition {
        from: &[V::Available],
        during: Some(V::RestoringBackup),
        success: Some(V::Available),
        failure: V::ErrorRestoring,
    };
    const OFFER_TRANSFER: Transition<VolumeStatus> =
        Transition { from: &[V::Available], during: Some(V::AwaitingTransfer), success: None, failure: V::Available };
    const END_TRANSFER: Transition<VolumeStatus> = Transition {
        from: &[V::AwaitingTransfer],
        during: Some(V::Available),
        success: None,
        failure: V::AwaitingTransfer,
    };
    // Only where no export or operation can be left behind by forgetting the row.
    const UNMANAGE: Transition<VolumeStatus> = Transition {
        from: &[V::Available, V::Error, V::ErrorExtending, V::ErrorRestoring],
        during: None,
        success: None,
        failure: V::Available,
    };
    match action {
        VolumeAction::Unmanage => &UNMANAGE,
        VolumeAction::Backup => &BACKUP,
        VolumeAction::BackupAttached => &BACKUP_ATTACHED,
        VolumeAction::RestoreBackup => &RESTORE_BACKUP,
        VolumeAction::OfferTransfer => &OFFER_TRANSFER,
        VolumeAction::EndTransfer => &END_TRANSFER,
        VolumeAction::Create => &CREATE,
        VolumeAction::Delete => &DELETE,
        VolumeAction::ForceDelete => &FORCE_DELETE,
        VolumeAction::Extend => &EXTEND,
        VolumeAction::ExtendAttached => &EXTEND_ATTACHED,
        VolumeAction::Revert => &REVERT,
        VolumeAction::Snapshot => &SNAPSHOT,
        VolumeAction::SnapshotForce => &SNAPSHOT_FORCE,
        VolumeAction::CloneSource => &CLONE_SOURCE,
        VolumeAction::Update => &UPDATE,
        VolumeAction::Reserve => &RESERVE,
        VolumeAction::Unreserve => &UNRESERVE,
        VolumeAction::LegacyReserve => &LEGACY_RESERVE,
        VolumeAction::LegacyUnreserve => &LEGACY_UNRESERVE,
        VolumeAction::BeginDetaching => &BEGIN_DETACHING,
        VolumeAction::RollDetaching => &ROLL_DETACHING,
        VolumeAction::Retype => &RETYPE,
        VolumeAction::RetypeMigrate => &RETYPE_MIGRATE,
        VolumeAction::Migrate => &MIGRATE,
        VolumeAction::Connect => &CONNECT,
        VolumeAction::CompleteAttach => &COMPLETE_ATTACH,
        VolumeAction::LegacyDetach => &LEGACY_DETACH,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAction {
    Create,
    Delete,
    ForceDelete,
    /// The snapshot is the one a volume reverts to.
    Revert,
    /// The snapshot is the source of a new volume; its status does not change.
    VolumeSource,
    Update,
    /// Admin only: the row is forgotten, the bytes stay (no node operation).
    Unmanage,
}

use SnapshotStatus as S;

pub const SNAPSHOT_BUSY: &[SnapshotStatus] = &[S::Creating, S::Deleting, S::Restoring];

pub const SNAPSHOT_RESETTABLE: &[SnapshotStatus] = &[S::Available, S::Error, S::ErrorDeleting];

pub fn snapshot(action: SnapshotAction) -> &'static Transition<SnapshotStatus> {
    const CREATE: Transition<SnapshotStatus> =
        Transition { from: &[], during: Some(S::Creating), success: Some(S::Available), failure: S::Error };
    const DELETE: Transition<SnapshotStatus> = Transition {
        from: &[S::Available, S::Error, S::ErrorDeleting],
        during: Some(S::Deleting),
        success: None,
        failure: S::ErrorDeleting,
    };
    const FORCE_DELETE: Transition<SnapshotStatus> = Transition {
        from: &[S::Available, S::Error, S::ErrorDeleting, S::BackingUp],
        during: Some(S::Deleting),
        success: None,
        failure: S::ErrorDeleting,
    };
    const REVERT: Transition<SnapshotStatus> = Transition {
        from: &[S::Available],
        during: Some(S::Restoring),
        success: Some(S::Available),
        failure: S::Available,
    };
    const VOLUME_SOURCE: Transition<SnapshotStatus> =
        Transition { from: &[S::Available], during: None, success: None, failure: S::Available };
    const UPDATE: Transition<SnapshotStatus> = Transition {
        from: &[S::Creating, S::Available, S::Error, S::ErrorDeleting, S::BackingUp, S::Restoring],
        during: None,
        success: None,
        failure: S::Available,
    };
    const UNMANAGE: Transition<SnapshotStatus> =
        Transition { from: &[S::Available, S::Error], during: None, success: None, failure: S::Available };
    match action {
        SnapshotAction::Create => &CREATE,
        SnapshotAction::Delete => &DELETE,
        SnapshotAction::ForceDelete => &FORCE_DELETE,
        SnapshotAction::Revert => &REVERT,
        SnapshotAction::VolumeSource => &VOLUME_SOURCE,
        SnapshotAction::Update => &UPDATE,
        SnapshotAction::Unmanage => &UNMANAGE,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupAction {
    Create,
    Delete,
    /// Admin only: from any status but a running restore.
    ForceDelete,
    Restore,
}

use BackupStatus as B;

pub const BACKUP_BUSY: &[BackupStatus] = &[B::Creating, B::Deleting, B::Restoring];

pub const BACKUP_RESETTABLE: &[BackupStatus] = &[B::Available, B::Error];

pub fn backup(action: BackupAction) -> &'static Transition<BackupStatus> {
    const CREATE: Transition<BackupStatus> =
        Transition { from: &[], during: Some(B::Creating), success: Some(B::Available), failure: B::Error };
    const DELETE: Transition<BackupStatus> = Transition {
        from: &[B::Available, B::Error],
        during: Some(B::Deleting),
        success: None,
        failure: B::ErrorDeleting,
    };
    const FORCE_DELETE: Transition<BackupStatus> = Transition {
        from: &[B::Available, B::Error, B::ErrorDeleting, B::Creating],
        during: Some(B::Deleting),
        success: None,
        failure: B::ErrorDeleting,
    };
    const RESTORE: Transition<BackupStatus> = Transition {
        from: &[B::Available],
        during: Some(B::Restoring),
        success: Some(B::Available),
        failure: B::Available,
    };
    match action {
        BackupAction::Create => &CREATE,
        BackupAction::Delete => &DELETE,
        BackupAction::ForceDelete => &FORCE_DELETE,
        BackupAction::Restore => &RESTORE,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAction {
    /// Made from a source (`create-from-src`): its volumes are copied on the node.
    Create,
    /// Name, description, members: on an available group only (no status of its own).
    Update,
    /// Its volumes' deletes on the node, then the row.
    Delete,
    /// The group is snapshotted, or copied into a new group; its status does not change.
    Source,
}

use GroupStatus as G;

/// Statuses an admin may reset a group to.
pub const GROUP_RESETTABLE: &[GroupStatus] = &[G::Available, G::Error];

pub fn group(action: GroupAction) -> &'static Transition<GroupStatus> {
    const CREATE: Transition<GroupStatus> =
        Transition { from: &[], during: Some(G::Creating), success: Some(G::Available), failure: G::Error };
    const SOURCE: Transition<GroupStatus> =
        Transition { from: &[G::Available], during: None, success: None, failure: G::Available };
    const UPDATE: Transition<GroupStatus> =
        Transition { from: &[G::Available], during: None, success: None, failure: G::Available };
    const DELETE: Transition<GroupStatus> = Transition {
        from: &[G::Available, G::Error, G::ErrorDeleting],
        during: Some(G::Deleting),
        success: None,
        failure: G::ErrorDeleting,
    };
    match action {
        GroupAction::Create => &CREATE,
        GroupAction::Update => &UPDATE,
        GroupAction::Delete => &DELETE,
        GroupAction::Source => &SOURCE,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSnapshotAction {
    /// Every member cut on the node at one point in time.
    Create,
    /// Every member's snapshot deleted on the node, then the rows.
    Delete,
    /// A new group is made from it; its status does not change.
    Source,
}

use GroupSnapshotStatus as GS;

/// Statuses an admin may reset a group snapshot to.
pub const GROUP_SNAPSHOT_RESETTABLE: &[GroupSnapshotStatus] = &[GS::Available, GS::Error];

pub fn group_snapshot(action: GroupSnapshotAction) -> &'static Transition<GroupSnapshotStatus> {
    const CREATE: Transition<GroupSnapshotStatus> =
        Transition { from: &[], during: Some(GS::Creating), success: Some(GS::Available), failure: GS::Error };
    const DELETE: Transition<GroupSnapshotStatus> = Transition {
        from: &[GS::Available, GS::Error, GS::ErrorDeleting],
        during: Some(GS::Deleting),
        success: None,
        failure: GS::ErrorDeleting,
    };
    const SOURCE: Transition<GroupSnapshotStatus> =
        Transition { from: &[GS::Available], during: None, success: None, failure: GS::Available };
    match action {
        GroupSnapshotAction::Create => &CREATE,
        GroupSnapshotAction::Delete => &DELETE,
        GroupSnapshotAction::Source => &SOURCE,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentAction {
    /// A host's connector arrived: reserved -> attaching (again while attaching: the host retries).
    Connect,
    /// The host attached the volume: attaching -> attached.
    Complete,
}

use AttachStatus as A;

pub fn attachment(action: AttachmentAction) -> &'static Transition<AttachStatus> {
    const CONNECT: Transition<AttachStatus> = Transition {
        from: &[A::Reserved, A::Attaching],
        during: Some(A::Attaching),
        success: None,
        failure: A::Reserved,
    };
    const COMPLETE: Transition<AttachStatus> =
        Transition { from: &[A::Attaching], during: Some(A::Attached), success: None, failure: A::Attaching };
    match action {
        AttachmentAction::Connect => &CONNECT,
        AttachmentAction::Complete => &COMPLETE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The actions that run a node operation.
    const VOLUME_ACTIONS: [VolumeAction; 10] = [
        VolumeAction::ExtendAttached,
        VolumeAction::Create,
        VolumeAction::Delete,
        VolumeAction::ForceDelete,
        VolumeAction::Extend,
        VolumeAction::Revert,
        VolumeAction::Snapshot,
        VolumeAction::SnapshotForce,
        VolumeAction::CloneSource,
        VolumeAction::Update,
    ];

    #[test]
    fn only_operations_own_busy_statuses() {
        for action in VOLUME_ACTIONS {
            let transition = volume(action);
            if let Some(during) = transition.during {
                assert!(VOLUME_BUSY.contains(&during), "{action:?} shows {during:?}, which is not marked busy");
            }
            if action != VolumeAction::Update {
                for from in transition.from {
                    assert!(!VOLUME_BUSY.contains(from), "{action:?} may start from busy {from:?}");
                }
            }
        }
        for busy in VOLUME_BUSY {
            assert!(!VOLUME_RESETTABLE.contains(busy), "an admin reset must not fake an operation");
        }
    }

    #[test]
    fn cinder_rules_hold() {
        assert!(volume(VolumeAction::Delete).from.contains(&V::Available));
        assert!(!volume(VolumeAction::Delete).from.contains(&V::InUse));
        assert!(volume(VolumeAction::ForceDelete).from.contains(&V::InUse));
        assert!(!volume(VolumeAction::ForceDelete).from.contains(&V::Creating));
        assert_eq!(volume(VolumeAction::Extend).from, &[V::Available]);
        assert!(!volume(VolumeAction::Snapshot).from.contains(&V::InUse));
        assert!(volume(VolumeAction::SnapshotForce).from.contains(&V::InUse));
        assert!(!volume(VolumeAction::Update).from.contains(&V::Deleting));
        assert_eq!(volume(VolumeAction::Reserve).from, &[V::Available]);
        assert!(!volume(VolumeAction::Delete).from.contains(&V::Reserved), "a reserved volume is attached");
        assert!(!snapshot(SnapshotAction::Delete).from.contains(&S::Creating));
    }

    #[test]
    fn snapshot_resets_never_fake_an_operation() {
        for busy in SNAPSHOT_BUSY {
            assert!(!SNAPSHOT_RESETTABLE.contains(busy));
        }
    }
}
