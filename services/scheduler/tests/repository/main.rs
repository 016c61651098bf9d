//! The scheduler's rules on the database alone, each run on SQLite and on PostgreSQL: status
//! changes by compare-and-set, removal giving back quota and space, quota limits, capacity claims,
//! the backup sweep's exclusion, and the journal's take-over of abandoned operations. No node and
//! no gRPC: these run in milliseconds, beside the end-to-end tests that exercise the same rules
//! through the whole mesh.

mod common;
mod listing;
mod upgrade;

use std::sync::{Arc, Mutex};

use basalt::{
    ErrorCode,
    bus::Bus,
    ids::{BackupId, NodeId, OperationId, ProjectId, VolumeId},
    proto::{AttachStatus, BackupStatus, VolumeStatus},
    tls::{CertificateAuthority, Role},
};
use basalt_scheduler::{
    Core, claims,
    db::{backup, json::StringMap, operation, volume},
    journal,
    lifecycle::VolumeAction,
    nodes::NodeClients,
    quotas::{self, QuotaDefaults},
    status, sweeps,
};
use chrono::Utc;
use common::TestDatabase;
use sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, Set};

const HOST: &str = "node-1@file#default";

fn project() -> ProjectId {
    ProjectId::parse(&uuid::Uuid::new_v4().simple().to_string()).unwrap()
}

async fn insert_volume(db: &DatabaseConnection, project: &ProjectId, status: VolumeStatus) -> volume::Model {
    let now = Utc::now();
    volume::ActiveModel {
        id: Set(VolumeId::new_random()),
        project_id: Set(project.clone()),
        user_id: Set("tester".into()),
        name: Set("v".into()),
        description: Set(String::new()),
        size_gib: Set(2),
        status: Set(status),
        attach_status: Set(AttachStatus::Detached),
        availability_zone: Set("nova".into()),
        volume_type_id: Set(None),
        node_id: Set(Some(NodeId::parse("node-1").unwrap())),
        backend: Set(Some("file".into())),
        pool: Set(Some("default".into())),
        snapshot_id: Set(None),
        source_volume_id: Set(None),
        metadata: Set(StringMap::default()),
        bootable: Set(false),
        readonly: Set(false),
        multiattach: Set(false),
        error_reason: Set(String::new()),
        idempotency_key: Set(None),
        group_id: Set(None),
        migration_status: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap()
}

async fn insert_backup(db: &DatabaseConnection, project: &ProjectId, status: BackupStatus) -> backup::Model {
    let now = Utc::now();
    backup::ActiveModel {
        id: Set(BackupId::new_random()),
        project_id: Set(project.clone()),
        user_id: Set("tester".into()),
        volume_id: Set(VolumeId::new_random()),
        snapshot_id: Set(None),
        name: Set(String::new()),
        description: Set(String::new()),
        status: Set(status),
        size_gib: Set(1),
        object_count: Set(0),
        stored_bytes: Set(0),
        container: Set("backups".into()),
        availability_zone: Set("nova".into()),
        parent_id: Set(None),
        metadata: Set(StringMap::default()),
        progress: Set(0),
        fail_reason: Set(String::new()),
        node_id: Set(NodeId::parse("node-1").unwrap()),
        created_at: Set(now),
        updated_at: Set(now),
        data_timestamp: Set(now),
    }
    .insert(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn status_changes_are_compare_and_set() {
    for database in TestDatabase::both().await {
        let db = database.open().await;
        let model = insert_volume(&db, &project(), VolumeStatus::Available).await;
        let (before, deleting) =
            status::transition::<volume::Model>(&db, model.id, VolumeAction::Delete, "").await.unwrap();
        assert_eq!((before, deleting.status), (VolumeStatus::Available, VolumeStatus::Deleting), "{}", database.label);
        // A second delete finds the row moved on: nothing changes, and the refusal says why.
        let refused = status::transition::<volume::Model>(&db, model.id, VolumeAction::Delete, "").await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::Conflict);
        assert!(
            refused.message.contains("is deleting now; it can become deleting only from available"),
            "{}",
            refused.message
        );
        let failed = status::finish::<volume::Model>(&db, model.id, VolumeAction::Delete, false, "the node said no")
            .await
            .unwrap();
        assert_eq!(failed.map(|event| event.to), Some("error_deleting".to_owned()));
        let now = status::find::<volume::Model>(&db, model.id).await.unwrap().unwrap();
        assert_eq!((now.status, now.error_reason.as_str()), (VolumeStatus::ErrorDeleting, "the node said no"));
        database.drop_database().await;
    }
}

#[tokio::test]
async fn removing_a_row_gives_back_its_quota_and_space() {
    for database in TestDatabase::both().await {
        let db = database.open().await;
        let owner = project();
        let defaults = QuotaDefaults::default();
        let usage = quotas::volume_usage("", 2);
        quotas::reserve(&db, &defaults, &owner, &usage).await.unwrap();
        assert!(claims::claim(&db, HOST, 10, 2).await.unwrap());
        let model = insert_volume(&db, &owner, VolumeStatus::Deleting).await;
        let removed = status::remove::<volume::Model>(&db, model.id).await.unwrap().unwrap();
        assert_eq!(removed.to, "deleted");
        assert!(status::find::<volume::Model>(&db, model.id).await.unwrap().is_none());
        let set = quotas::quota_set(&db, &defaults, &owner).await.unwrap();
        let volumes = set.quotas.iter().find(|(name, _)| name.as_str() == quotas::VOLUMES).unwrap();
        assert_eq!(volumes.1.in_use, 0, "{}", database.label);
        assert_eq!(claims::claimed(&db).await.unwrap().get(HOST), Some(&0));
        database.drop_database().await;
    }
}

#[tokio::test]
async fn quotas_refuse_what_would_go_over_the_limit() {
    for database in TestDatabase::both().await {
        let db = database.open().await;
        let owner = project();
        let defaults = QuotaDefaults::default();
        quotas::update_limits(&db, &owner, &[(quotas::VOLUMES.to_owned(), 1)].into()).await.unwrap();
        let one = [(quotas::VOLUMES.to_owned(), 1)];
        quotas::reserve(&db, &defaults, &owner, &one).await.unwrap();
        let refused = quotas::reserve(&db, &defaults, &owner, &one).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::QuotaExceeded, "{}", database.label);
        assert!(refused.message.contains("the project uses 1 of 1"), "{}", refused.message);
        let lowered = quotas::update_limits(&db, &owner, &[(quotas::VOLUMES.to_owned(), 0)].into()).await.unwrap_err();
        assert!(lowered.message.contains("already uses 1"), "{}", lowered.message);
        quotas::release(&db, &owner, &one).await.unwrap();
        quotas::reserve(&db, &defaults, &owner, &one).await.unwrap();
        // Another project is not held to this one's limit.
        quotas::reserve(&db, &defaults, &project(), &one).await.unwrap();
        database.drop_database().await;
    }
}

#[tokio::test]
async fn claims_never_book_more_than_a_pool_holds() {
    for database in TestDatabase::both().await {
        let db = database.open().await;
        assert!(claims::claim(&db, HOST, 10, 6).await.unwrap());
        assert!(!claims::claim(&db, HOST, 10, 6).await.unwrap(), "{}: 12 GiB in a 10 GiB pool", database.label);
        assert!(claims::claim(&db, HOST, 10, 4).await.unwrap());
        claims::release(&db, HOST, 6).await.unwrap();
        assert!(claims::claim(&db, HOST, 10, 6).await.unwrap());
        assert_eq!(claims::claimed(&db).await.unwrap().get(HOST), Some(&10));
        database.drop_database().await;
    }
}

#[tokio::test]
async fn a_sweep_never_runs_beside_a_backup_or_restore_of_its_project() {
    for database in TestDatabase::both().await {
        let db = database.open().await;
        let (making, deleting, idle) = (project(), project(), project());
        let creating = insert_backup(&db, &making, BackupStatus::Creating).await;
        let sweeping = insert_backup(&db, &deleting, BackupStatus::Deleting).await;

        let refused =
            sweeps::exclude(&db, &making, sweeps::READING_OR_WRITING, "delete once it is done").await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::Conflict);
        assert_eq!(
            refused.message,
            format!("backup {} of this project is creating; delete once it is done", creating.id)
        );
        let refused =
            sweeps::exclude(&db, &deleting, sweeps::SWEEPING, "back up once it is deleted").await.unwrap_err();
        assert!(
            refused.message.contains(&format!("{} of this project is deleting", sweeping.id)),
            "{}",
            refused.message
        );
        // Other projects are not held up.
        sweeps::exclude(&db, &deleting, sweeps::READING_OR_WRITING, "").await.unwrap();
        sweeps::exclude(&db, &making, sweeps::SWEEPING, "").await.unwrap();
        sweeps::exclude(&db, &idle, sweeps::READING_OR_WRITING, "").await.unwrap();
        database.drop_database().await;
    }
}

/// What the take-over tests' relaunch saw (a `journal::Relaunch` is a plain function).
static RELAUNCHED: Mutex<Vec<OperationId>> = Mutex::new(Vec::new());

fn note_relaunch(_core: Arc<Core>, record: operation::Model) -> Result<(), basalt::ServiceError> {
    RELAUNCHED.lock().unwrap().push(record.id);
    Ok(())
}

async fn journal_row(db: &DatabaseConnection, owner: &str, lease_from_now: chrono::TimeDelta) -> OperationId {
    let now = Utc::now();
    operation::ActiveModel {
        id: Set(OperationId::new_random()),
        kind: Set("extend_volume".into()),
        resource_id: Set(VolumeId::new_random().to_string()),
        payload: Set("{}".into()),
        owner: Set(owner.into()),
        lease_expires_at: Set(now + lease_from_now),
        attempt: Set(1),
        created_at: Set(now),
        request_id: Set(basalt::context::new_request_id()),
    }
    .insert(db)
    .await
    .unwrap()
    .id
}

/// On PostgreSQL, shared by several schedulers, an operation is taken over once its lease ran
/// out; on SQLite, which one scheduler process serves, any operation another process owns was
/// left by an earlier boot and is taken over at once.
#[tokio::test]
async fn the_journal_takes_over_operations_their_owner_abandoned() {
    for database in TestDatabase::both().await {
        let db = database.open().await;
        let abandoned = journal_row(&db, "gone/1", chrono::TimeDelta::seconds(-1)).await;
        let running = journal_row(&db, "alive/2", chrono::TimeDelta::minutes(5)).await;
        let capacity = Arc::new(basalt_scheduler::capacity::CapacityView::default());
        // A journal take-over calls no node; the node clients only need a certificate to exist.
        let authority = CertificateAuthority::create().unwrap();
        let nodes = NodeClients::new(authority.mesh_tls(Role::Scheduler).unwrap());
        let core = Arc::new(Core::new(db.clone(), capacity, nodes, Bus::local(), "test".into(), Default::default()));
        RELAUNCHED.lock().unwrap().clear();
        let sole_scheduler = db.get_database_backend() == sea_orm::DbBackend::Sqlite;
        let mut expected = vec![abandoned];
        if sole_scheduler {
            expected.push(running);
        }

        assert_eq!(journal::reconcile_once(&core, note_relaunch).await.unwrap(), expected.len(), "{}", database.label);
        let mut relaunched = RELAUNCHED.lock().unwrap().clone();
        relaunched.sort();
        expected.sort();
        assert_eq!(relaunched, expected, "{}", database.label);
        let taken = operation::Entity::find_by_id(abandoned).one(&db).await.unwrap().unwrap();
        assert_eq!((taken.owner.as_str(), taken.attempt), (core.owner.as_str(), 2));
        assert!(taken.lease_expires_at > Utc::now());
        let other = operation::Entity::find_by_id(running).one(&db).await.unwrap().unwrap();
        let expected_owner = if sole_scheduler { core.owner.as_str() } else { "alive/2" };
        assert_eq!(other.owner, expected_owner, "{}", database.label);
        // Taken over, its lease is this scheduler's now: the next pass leaves it alone.
        assert_eq!(journal::reconcile_once(&core, note_relaunch).await.unwrap(), 0);
        database.drop_database().await;
    }
}

/// A node's report with one thin pool of 10 GiB, nothing on it yet.
fn ten_gib_report(node_id: &str) -> basalt::proto::CapacityReport {
    basalt::proto::CapacityReport {
        node_id: node_id.into(),
        boot_id: "test".into(),
        sequence: 1,
        report_interval_ms: 60_000,
        pools: vec![basalt::proto::PoolCapacity {
            name: "default".into(),
            backend: "file".into(),
            total_bytes: 10 << 30,
            free_bytes: 10 << 30,
            thin_provisioning_support: true,
            max_over_subscription_ratio: 1.0,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Placement reads the claims from memory: a decision counts at once (so volumes asked for
/// together spread), and a refusal the figures in memory lead to is made again from the
/// database's, so space the database holds free is never refused.
#[tokio::test]
async fn placement_counts_each_decision_at_once_and_rechecks_a_refusal_with_the_database() {
    for database in TestDatabase::both().await {
        let db = database.open().await;
        let capacity = Arc::new(basalt_scheduler::capacity::CapacityView::default());
        capacity.record(ten_gib_report("node-1"));
        capacity.record(ten_gib_report("node-2"));
        let authority = CertificateAuthority::create().unwrap();
        let nodes = NodeClients::new(authority.mesh_tls(Role::Scheduler).unwrap());
        let core = Core::new(db.clone(), capacity, nodes, Bus::local(), "test".into(), Default::default());
        let five = basalt_scheduler::placement::PlacementRequest { size_gib: 5.0, ..Default::default() };
        let best = async || claims::place(&core, &five, |_| true).await.map(|ranked| ranked[0].host().to_owned());
        let other = "node-2@file#default";

        // Equal pools: the first host name wins; the decision counts, so the next goes elsewhere.
        assert_eq!(best().await.unwrap(), HOST, "{}", database.label);
        assert_eq!(best().await.unwrap(), other, "{}", database.label);
        assert_eq!(best().await.unwrap(), HOST, "{}", database.label);
        assert_eq!(best().await.unwrap(), other, "{}", database.label);
        // Both are full in memory, but nothing was claimed: the database's figures place it.
        assert_eq!(best().await.unwrap(), HOST, "{}", database.label);
        // Claimed for real, both full: the refusal stands.
        assert!(claims::claim(&db, HOST, 10, 10).await.unwrap());
        assert!(claims::claim(&db, other, 10, 8).await.unwrap());
        core.capacity.update_pools(|table| table.forget_bookings());
        let refused = best().await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::NoCapacity, "{}: {}", database.label, refused.message);
        database.drop_database().await;
    }
}
