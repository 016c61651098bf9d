//! The scheduler's database: the only place Basalt's durable state lives. SQLite by default,
//! PostgreSQL for several scheduler replicas. Migrations run at start, under a lock on PostgreSQL
//! so two replicas starting together do not race.

pub mod attachment;
pub mod backup;
pub mod operation;
pub mod pool_claim;
pub mod qos_specs;
pub mod quota_limit;
pub mod quota_usage;
pub mod snapshot;
pub mod volume;
pub mod volume_type;
pub mod volume_type_access;

use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait,
    sea_query::{ColumnDef, Index, Table},
};

use basalt::ServiceError;

/// Connects to `url` (`sqlite://path?mode=rwc`, `postgres://...`) and applies pending migrations.
pub async fn connect(url: &str) -> Result<DatabaseConnection, ServiceError> {
    let db = Database::connect(url)
        .await
        .map_err(|error| ServiceError::unavailable(format!("cannot open the database {}: {error}", redact(url))))?;
    if db.get_database_backend() == DbBackend::Sqlite {
        // WAL lets readers proceed while a write is committing; busy_timeout waits out short locks.
        db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;")
            .await
            .map_err(db_error)?;
    }
    migrate(&db).await?;
    Ok(db)
}

/// Hides a password in a database URL before it reaches a log or an error.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{credentials}@{host}"),
    }
}

pub fn db_error(error: DbErr) -> ServiceError {
    ServiceError::unavailable(format!("database error: {error}"))
}

/// One schema change; applied once, in order, recorded in `basalt_schema_migrations`.
struct Migration {
    version: i64,
    name: &'static str,
    statements: fn(DbBackend) -> Vec<Statement>,
}

const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "volumes", statements: volumes_table },
    Migration { version: 2, name: "lifecycle", statements: lifecycle_tables },
    Migration { version: 3, name: "attachments", statements: attachments_table },
    Migration { version: 4, name: "qos_specs", statements: qos_specs_table },
    Migration { version: 5, name: "connection_info", statements: connection_info_column },
    Migration { version: 6, name: "multiattach", statements: multiattach_column },
    Migration { version: 7, name: "backups", statements: backups_table },
    Migration { version: 8, name: "snapshot_idempotency", statements: snapshot_idempotency_index },
];

/// Whether several hosts may attach a volume at once.
fn backups_table(backend: DbBackend) -> Vec<Statement> {
    use backup::Column as C;
    let backups = Table::create()
        .table(backup::Entity)
        .col(ColumnDef::new(C::Id).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(C::ProjectId).string_len(64).not_null())
        .col(ColumnDef::new(C::UserId).string_len(255).not_null())
        .col(ColumnDef::new(C::VolumeId).string_len(36).not_null())
        .col(ColumnDef::new(C::SnapshotId).string_len(36).null())
        .col(ColumnDef::new(C::Name).string_len(255).not_null())
        .col(ColumnDef::new(C::Description).string_len(255).not_null())
        .col(ColumnDef::new(C::Status).string_len(32).not_null())
        .col(ColumnDef::new(C::SizeGib).big_integer().not_null())
        .col(ColumnDef::new(C::ObjectCount).big_integer().not_null())
        .col(ColumnDef::new(C::StoredBytes).big_integer().not_null())
        .col(ColumnDef::new(C::Container).string_len(255).not_null())
        .col(ColumnDef::new(C::AvailabilityZone).string_len(255).not_null())
        .col(ColumnDef::new(C::ParentId).string_len(36).null())
        .col(ColumnDef::new(C::Metadata).text().not_null())
        .col(ColumnDef::new(C::Progress).integer().not_null())
        .col(ColumnDef::new(C::FailReason).text().not_null())
        .col(ColumnDef::new(C::NodeId).string_len(255).not_null())
        .col(ColumnDef::new(C::CreatedAt).timestamp_with_time_zone().not_null())
        .col(ColumnDef::new(C::UpdatedAt).timestamp_with_time_zone().not_null())
        .col(ColumnDef::new(C::DataTimestamp).timestamp_with_time_zone().not_null())
        .to_owned();
    let by_volume = Index::create().name("backups_by_volume").table(backup::Entity).col(C::VolumeId).to_owned();
    let by_project = Index::create().name("backups_by_project").table(backup::Entity).col(C::ProjectId).to_owned();
    vec![backend.build(&backups), backend.build(&by_volume), backend.build(&by_project)]
}

fn multiattach_column(backend: DbBackend) -> Vec<Statement> {
    let column = Table::alter()
        .table(volume::Entity)
        .add_column(ColumnDef::new(volume::Column::Multiattach).boolean().not_null().default(false))
        .to_owned();
    vec![backend.build(&column)]
}

/// The connection info an attachment hands to its host.
fn connection_info_column(backend: DbBackend) -> Vec<Statement> {
    let column = Table::alter()
        .table(attachment::Entity)
        .add_column(ColumnDef::new(attachment::Column::ConnectionInfo).text().not_null().default(""))
        .to_owned();
    vec![backend.build(&column)]
}

/// QoS specs, and the association of a volume type with one.
fn qos_specs_table(backend: DbBackend) -> Vec<Statement> {
    use qos_specs::Column as C;
    let qos = Table::create()
        .table(qos_specs::Entity)
        .col(ColumnDef::new(C::Id).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(C::Name).string_len(255).not_null().unique_key())
        .col(ColumnDef::new(C::Consumer).string_len(16).not_null())
        .col(ColumnDef::new(C::Specs).text().not_null())
        .col(ColumnDef::new(C::CreatedAt).timestamp_with_time_zone().not_null())
        .to_owned();
    let association = Table::alter()
        .table(volume_type::Entity)
        .add_column(ColumnDef::new(volume_type::Column::QosSpecsId).string_len(36).null())
        .to_owned();
    vec![backend.build(&qos), backend.build(&association)]
}

/// Attachments, and the read-only flag of volumes.
fn attachments_table(backend: DbBackend) -> Vec<Statement> {
    use attachment::Column as C;
    let readonly = Table::alter()
        .table(volume::Entity)
        .add_column(ColumnDef::new(volume::Column::Readonly).boolean().not_null().default(false))
        .to_owned();
    let attachments = Table::create()
        .table(attachment::Entity)
        .col(ColumnDef::new(C::Id).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(C::VolumeId).string_len(36).not_null())
        .col(ColumnDef::new(C::ProjectId).string_len(64).not_null())
        .col(ColumnDef::new(C::InstanceId).string_len(255).not_null())
        .col(ColumnDef::new(C::HostName).string_len(255).not_null())
        .col(ColumnDef::new(C::Status).string_len(32).not_null())
        .col(ColumnDef::new(C::Mode).string_len(8).not_null())
        .col(ColumnDef::new(C::Connector).text().not_null())
        .col(ColumnDef::new(C::Mountpoint).string_len(255).not_null())
        .col(ColumnDef::new(C::AttachedAt).timestamp_with_time_zone().null())
        .col(ColumnDef::new(C::CreatedAt).timestamp_with_time_zone().not_null())
        .to_owned();
    let by_volume = Index::create().name("attachments_by_volume").table(attachment::Entity).col(C::VolumeId).to_owned();
    vec![backend.build(&readonly), backend.build(&attachments), backend.build(&by_volume)]
}

/// The name of the type every deployment starts with (Cinder's `__DEFAULT__`).
pub const DEFAULT_VOLUME_TYPE: &str = "__DEFAULT__";

/// Snapshots, volume types, quotas, pool claims and the operation journal.
fn lifecycle_tables(backend: DbBackend) -> Vec<Statement> {
    let snapshots = {
        use snapshot::Column as C;
        Table::create()
            .table(snapshot::Entity)
            .col(ColumnDef::new(C::Id).string_len(36).not_null().primary_key())
            .col(ColumnDef::new(C::ProjectId).string_len(64).not_null())
            .col(ColumnDef::new(C::UserId).string_len(255).not_null())
            .col(ColumnDef::new(C::VolumeId).string_len(36).not_null())
            .col(ColumnDef::new(C::Name).string_len(255).not_null())
            .col(ColumnDef::new(C::Description).string_len(255).not_null())
            .col(ColumnDef::new(C::SizeGib).big_integer().not_null())
            .col(ColumnDef::new(C::Status).string_len(32).not_null())
            .col(ColumnDef::new(C::Metadata).text().not_null())
            .col(ColumnDef::new(C::Progress).integer().not_null())
            .col(ColumnDef::new(C::ErrorReason).text().not_null())
            .col(ColumnDef::new(C::NodeId).string_len(64).not_null())
            .col(ColumnDef::new(C::Backend).string_len(32).not_null())
            .col(ColumnDef::new(C::Pool).string_len(255).not_null())
            .col(ColumnDef::new(C::VolumeTypeId).string_len(36).null())
            .col(ColumnDef::new(C::IdempotencyKey).string_len(255).null())
            .col(ColumnDef::new(C::CreatedAt).timestamp_with_time_zone().not_null())
            .col(ColumnDef::new(C::UpdatedAt).timestamp_with_time_zone().not_null())
            .to_owned()
    };
    let snapshots_by_volume =
        Index::create().name("snapshots_by_volume").table(snapshot::Entity).col(snapshot::Column::VolumeId).to_owned();
    let snapshots_by_project = Index::create()
        .name("snapshots_by_project")
        .table(snapshot::Entity)
        .col(snapshot::Column::ProjectId)
        .col(snapshot::Column::CreatedAt)
        .to_owned();
    let volume_types = {
        use volume_type::Column as C;
        Table::create()
            .table(volume_type::Entity)
            .col(ColumnDef::new(C::Id).string_len(36).not_null().primary_key())
            .col(ColumnDef::new(C::Name).string_len(255).not_null().unique_key())
            .col(ColumnDef::new(C::Description).string_len(255).not_null())
            .col(ColumnDef::new(C::IsPublic).boolean().not_null())
            .col(ColumnDef::new(C::ExtraSpecs).text().not_null())
            .col(ColumnDef::new(C::IsDefault).boolean().not_null())
            .col(ColumnDef::new(C::CreatedAt).timestamp_with_time_zone().not_null())
            .col(ColumnDef::new(C::UpdatedAt).timestamp_with_time_zone().not_null())
            .to_owned()
    };
    let type_access = {
        use volume_type_access::Column as C;
        Table::create()
            .table(volume_type_access::Entity)
            .col(ColumnDef::new(C::VolumeTypeId).string_len(36).not_null())
            .col(ColumnDef::new(C::ProjectId).string_len(64).not_null())
            .primary_key(Index::create().col(C::VolumeTypeId).col(C::ProjectId))
            .to_owned()
    };
    let quota_limits = {
        use quota_limit::Column as C;
        Table::create()
            .table(quota_limit::Entity)
            .col(ColumnDef::new(C::ProjectId).string_len(64).not_null())
            .col(ColumnDef::new(C::Resource).string_len(300).not_null())
            .col(ColumnDef::new(C::HardLimit).big_integer().not_null())
            .primary_key(Index::create().col(C::ProjectId).col(C::Resource))
            .to_owned()
    };
    let quota_usages = {
        use quota_usage::Column as C;
        Table::create()
            .table(quota_usage::Entity)
            .col(ColumnDef::new(C::ProjectId).string_len(64).not_null())
            .col(ColumnDef::new(C::Resource).string_len(300).not_null())
            .col(ColumnDef::new(C::InUse).big_integer().not_null())
            .primary_key(Index::create().col(C::ProjectId).col(C::Resource))
            .to_owned()
    };
    let pool_claims = {
        use pool_claim::Column as C;
        Table::create()
            .table(pool_claim::Entity)
            .col(ColumnDef::new(C::Host).string_len(400).not_null().primary_key())
            .col(ColumnDef::new(C::ClaimedGib).big_integer().not_null())
            .col(ColumnDef::new(C::CapacityGib).big_integer().not_null())
            .col(ColumnDef::new(C::UpdatedAt).timestamp_with_time_zone().not_null())
            .to_owned()
    };
    let operations = {
        use operation::Column as C;
        Table::create()
            .table(operation::Entity)
            .col(ColumnDef::new(C::Id).string_len(36).not_null().primary_key())
            .col(ColumnDef::new(C::Kind).string_len(64).not_null())
            .col(ColumnDef::new(C::ResourceId).string_len(36).not_null())
            .col(ColumnDef::new(C::Payload).text().not_null())
            .col(ColumnDef::new(C::Owner).string_len(255).not_null())
            .col(ColumnDef::new(C::LeaseExpiresAt).timestamp_with_time_zone().not_null())
            .col(ColumnDef::new(C::Attempt).integer().not_null())
            .col(ColumnDef::new(C::CreatedAt).timestamp_with_time_zone().not_null())
            .to_owned()
    };
    let operations_by_resource = Index::create()
        .name("operations_by_resource")
        .table(operation::Entity)
        .col(operation::Column::ResourceId)
        .to_owned();
    let now = chrono::Utc::now();
    let default_type = sea_orm::sea_query::Query::insert()
        .into_table(volume_type::Entity)
        .columns([
            volume_type::Column::Id,
            volume_type::Column::Name,
            volume_type::Column::Description,
            volume_type::Column::IsPublic,
            volume_type::Column::ExtraSpecs,
            volume_type::Column::IsDefault,
            volume_type::Column::CreatedAt,
            volume_type::Column::UpdatedAt,
        ])
        .values_panic([
            uuid::Uuid::new_v4().to_string().into(),
            DEFAULT_VOLUME_TYPE.into(),
            "Default Volume Type".into(),
            true.into(),
            "{}".into(),
            true.into(),
            now.into(),
            now.into(),
        ])
        .to_owned();
    vec![
        backend.build(&snapshots),
        backend.build(&snapshots_by_volume),
        backend.build(&snapshots_by_project),
        backend.build(&volume_types),
        backend.build(&type_access),
        backend.build(&quota_limits),
        backend.build(&quota_usages),
        backend.build(&pool_claims),
        backend.build(&operations),
        backend.build(&operations_by_resource),
        backend.build(&default_type),
    ]
}

fn volumes_table(backend: DbBackend) -> Vec<Statement> {
    use volume::Column as C;
    let table = Table::create()
        .table(volume::Entity)
        .col(ColumnDef::new(C::Id).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(C::ProjectId).string_len(64).not_null())
        .col(ColumnDef::new(C::UserId).string_len(255).not_null())
        .col(ColumnDef::new(C::Name).string_len(255).not_null())
        .col(ColumnDef::new(C::Description).string_len(255).not_null())
        .col(ColumnDef::new(C::SizeGib).big_integer().not_null())
        .col(ColumnDef::new(C::Status).string_len(32).not_null())
        .col(ColumnDef::new(C::AttachStatus).string_len(32).not_null())
        .col(ColumnDef::new(C::AvailabilityZone).string_len(255).not_null())
        .col(ColumnDef::new(C::VolumeTypeId).string_len(36).null())
        .col(ColumnDef::new(C::NodeId).string_len(64).null())
        .col(ColumnDef::new(C::Backend).string_len(32).null())
        .col(ColumnDef::new(C::Pool).string_len(255).null())
        .col(ColumnDef::new(C::SnapshotId).string_len(36).null())
        .col(ColumnDef::new(C::SourceVolumeId).string_len(36).null())
        .col(ColumnDef::new(C::Metadata).text().not_null())
        .col(ColumnDef::new(C::Bootable).boolean().not_null())
        .col(ColumnDef::new(C::ErrorReason).text().not_null())
        .col(ColumnDef::new(C::IdempotencyKey).string_len(255).null())
        .col(ColumnDef::new(C::CreatedAt).timestamp_with_time_zone().not_null())
        .col(ColumnDef::new(C::UpdatedAt).timestamp_with_time_zone().not_null())
        .to_owned();
    let by_project =
        Index::create().name("volumes_by_project").table(volume::Entity).col(C::ProjectId).col(C::CreatedAt).to_owned();
    let by_pool = Index::create().name("volumes_by_pool").table(volume::Entity).col(C::NodeId).col(C::Pool).to_owned();
    let idempotency = Index::create()
        .name("volumes_by_idempotency_key")
        .table(volume::Entity)
        .col(C::ProjectId)
        .col(C::IdempotencyKey)
        .unique()
        .to_owned();
    vec![backend.build(&table), backend.build(&by_project), backend.build(&by_pool), backend.build(&idempotency)]
}

/// One snapshot per idempotency key and project, so two concurrent repeats cannot make two.
fn snapshot_idempotency_index(backend: DbBackend) -> Vec<Statement> {
    let index = Index::create()
        .name("snapshots_by_idempotency_key")
        .table(snapshot::Entity)
        .col(snapshot::Column::ProjectId)
        .col(snapshot::Column::IdempotencyKey)
        .unique()
        .to_owned();
    vec![backend.build(&index)]
}

async fn migrate(db: &DatabaseConnection) -> Result<(), ServiceError> {
    let backend = db.get_database_backend();
    db.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS basalt_schema_migrations (version BIGINT PRIMARY KEY, name VARCHAR(255) NOT NULL)",
    )
    .await
    .map_err(db_error)?;
    let transaction = db.begin().await.map_err(db_error)?;
    if backend == DbBackend::Postgres {
        // Serialises concurrent starts of several schedulers; released at commit.
        transaction.execute_unprepared("SELECT pg_advisory_xact_lock(7350221)").await.map_err(db_error)?;
    }
    let applied: Vec<i64> = transaction
        .query_all_raw(Statement::from_string(backend, "SELECT version FROM basalt_schema_migrations"))
        .await
        .map_err(db_error)?
        .iter()
        .map(|row| row.try_get_by_index::<i64>(0))
        .collect::<Result<_, _>>()
        .map_err(db_error)?;
    for migration in MIGRATIONS.iter().filter(|migration| !applied.contains(&migration.version)) {
        for statement in (migration.statements)(backend) {
            transaction.execute_raw(statement).await.map_err(db_error)?;
        }
        transaction
            .execute_raw(Statement::from_sql_and_values(
                backend,
                match backend {
                    DbBackend::Postgres => "INSERT INTO basalt_schema_migrations (version, name) VALUES ($1, $2)",
                    _ => "INSERT INTO basalt_schema_migrations (version, name) VALUES (?, ?)",
                },
                [migration.version.into(), migration.name.into()],
            ))
            .await
            .map_err(db_error)?;
        tracing::info!(version = migration.version, name = migration.name, "database migration applied");
    }
    transaction.commit().await.map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://basalt:s3cret@db:5432/basalt"), "postgres://basalt:***@db:5432/basalt");
        assert_eq!(redact("postgres://basalt@db/basalt"), "postgres://basalt@db/basalt");
        assert_eq!(redact("sqlite://x.db?mode=rwc"), "sqlite://x.db?mode=rwc");
    }

    #[tokio::test]
    async fn migrations_apply_once_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
        let db = connect(&url).await.unwrap();
        drop(db);
        // A second start finds everything applied and changes nothing.
        let db = connect(&url).await.unwrap();
        let rows = db
            .query_all_raw(Statement::from_string(DbBackend::Sqlite, "SELECT version FROM basalt_schema_migrations"))
            .await
            .unwrap();
        assert_eq!(rows.len(), MIGRATIONS.len());
    }
}
