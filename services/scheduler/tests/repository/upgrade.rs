//! A database written by the previous release (0.1: migrations 1 to 8, every kind of row, journal
//! rows of every operation kind) opens in place on this release: the new migrations apply, and
//! every row reads back through the typed entities with what it held. The fixtures are that
//! release's own output (`sqlite3 .dump`, `pg_dump --inserts`), see `fixtures/README.md`.

use crate::common::TestDatabase;
use basalt::proto::{AttachMode, AttachStatus, BackupStatus, SnapshotStatus, VolumeStatus};
use basalt_scheduler::{
    db::{
        attachment, backup,
        json::{ConnectionInfo, StringMap},
        operation, pool_claim, qos_specs, quota_limit, quota_usage, snapshot, volume, volume_type, volume_type_access,
    },
    operations::Operation,
};
use sea_orm::{ConnectionTrait, Database, EntityTrait, PaginatorTrait};

fn map(items: &[(&str, &str)]) -> StringMap {
    StringMap(items.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect())
}

async fn load_fixture(database: &TestDatabase, dump: &str) {
    let raw = Database::connect(&database.url).await.unwrap();
    raw.execute_unprepared(dump)
        .await
        .unwrap_or_else(|error| panic!("{}: the fixture does not load: {error}", database.label));
    raw.close().await.unwrap();
}

async fn finds_every_row(database: &TestDatabase) {
    let db = database.open().await;
    let label = database.label;
    let versions = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT version FROM basalt_schema_migrations",
        ))
        .await
        .unwrap();
    assert!(versions.len() > 8, "{label}: the new migrations were applied");

    let volumes = volume::Entity::find().all(&db).await.unwrap();
    assert_eq!(volumes.len(), 6, "{label}");
    let named = |name: &str| {
        volumes.iter().find(|volume| volume.name == name).unwrap_or_else(|| panic!("{label}: no volume {name}"))
    };
    let first = named("first");
    assert_eq!(
        (first.status, first.metadata.clone()),
        (VolumeStatus::Available, map(&[("purpose", "fixture")])),
        "{label}"
    );
    assert_eq!(first.idempotency_key.as_deref(), Some("key-1"));
    assert_eq!(named("broken").status, VolumeStatus::Error);
    assert_eq!(
        (named("reserved").status, named("reserved").attach_status),
        (VolumeStatus::Reserved, AttachStatus::Reserved)
    );
    assert_eq!(named("attached").status, VolumeStatus::InUse);
    assert!(named("from-snap").snapshot_id.is_some());

    let attachments = attachment::Entity::find().all(&db).await.unwrap();
    assert_eq!(attachments.len(), 3, "{label}");
    let of = |volume: &volume::Model| attachments.iter().find(|row| row.volume_id == volume.id).unwrap();
    let reserved = of(named("reserved"));
    assert_eq!((reserved.status, reserved.mode), (AttachStatus::Reserved, AttachMode::ReadWrite));
    assert!(reserved.connector.is_none() && reserved.connection_info.is_none(), "{label}: '' became NULL");
    let local = of(named("attached"));
    assert!(
        matches!(&local.connection_info, Some(ConnectionInfo::Local(local)) if local.device_path.ends_with(&format!("volume-{}", named("attached").id)))
    );
    assert!(local.connector.as_ref().is_some_and(|connector| connector.do_local_attach && connector.host == "node-0"));
    let remote = of(named("over-iscsi"));
    match &remote.connection_info {
        Some(ConnectionInfo::Iscsi(iscsi)) => {
            assert_eq!((iscsi.target_lun, iscsi.auth_method.as_str()), (1, "CHAP"), "{label}");
            assert!(!iscsi.auth_password.is_empty());
        }
        other => panic!("{label}: {other:?}"),
    }
    assert_eq!(
        remote.connector.as_ref().map(|connector| connector.initiator.as_str()),
        Some("iqn.2026-11.dev.basalt:host-2")
    );

    let snapshots = snapshot::Entity::find().all(&db).await.unwrap();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(
        (snapshots[0].status, snapshots[0].metadata.clone()),
        (SnapshotStatus::Available, map(&[("kind", "daily")]))
    );
    assert_eq!(snapshots[0].volume_id, first.id);

    let backups = backup::Entity::find().all(&db).await.unwrap();
    assert_eq!(backups.len(), 1);
    assert_eq!((backups[0].status, backups[0].metadata.clone()), (BackupStatus::Available, map(&[("tier", "cold")])));

    let types = volume_type::Entity::find().all(&db).await.unwrap();
    assert_eq!(types.len(), 3, "{label}");
    let gold = types.iter().find(|row| row.name == "gold").unwrap();
    assert_eq!(gold.extra_specs, map(&[("volume_backend_name", "file")]));
    let qos = qos_specs::Entity::find().all(&db).await.unwrap();
    assert_eq!((qos.len(), gold.qos_specs_id), (1, Some(qos[0].id)));
    assert_eq!((qos[0].consumer.as_str(), qos[0].specs.clone()), ("front-end", map(&[("total_iops_sec", "1000")])));
    let access = volume_type_access::Entity::find().all(&db).await.unwrap();
    assert_eq!(access.len(), 1);
    assert_eq!(access[0].project_id, first.project_id);

    let limits = quota_limit::Entity::find().all(&db).await.unwrap();
    assert!(limits.iter().any(|row| row.resource == "volumes" && row.hard_limit == 50), "{label}");
    assert!(quota_usage::Entity::find().count(&db).await.unwrap() > 0);
    assert!(pool_claim::Entity::find().count(&db).await.unwrap() > 0);

    let journal = operation::Entity::find().all(&db).await.unwrap();
    assert_eq!(journal.len(), 9, "{label}");
    for row in &journal {
        let decoded = Operation::decode(row).unwrap_or_else(|error| panic!("{label}: {error}"));
        assert_eq!(decoded.kind(), row.kind, "{label}");
    }
}

#[tokio::test]
async fn a_release_0_1_database_opens_in_place_on_sqlite() {
    let database = TestDatabase::sqlite().await;
    load_fixture(&database, include_str!("../fixtures/release-0.1.sqlite.sql")).await;
    finds_every_row(&database).await;
    // A second start finds everything applied and changes nothing.
    finds_every_row(&database).await;
}

#[tokio::test]
async fn a_release_0_1_database_opens_in_place_on_postgres() {
    let database = TestDatabase::postgres().await;
    load_fixture(&database, include_str!("../fixtures/release-0.1.postgres.sql")).await;
    finds_every_row(&database).await;
    finds_every_row(&database).await;
    database.drop_database().await;
}
