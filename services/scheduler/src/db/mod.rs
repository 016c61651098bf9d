//! The scheduler's database: the only place Basalt's durable state lives. SQLite by default,
//! PostgreSQL for several scheduler replicas. Migrations run at start, under a lock on PostgreSQL
//! so two replicas starting together do not race.

pub mod attachment;
pub mod backup;
pub mod default_type;
pub mod group;
pub mod group_snapshot;
pub mod group_type;
pub mod json;
pub mod lost_node;
pub mod message;
mod migrations;
pub mod operation;
pub mod pool_claim;
pub mod qos_specs;
pub mod quota_limit;
pub mod quota_usage;
pub mod service_state;
pub mod snapshot;
pub mod transfer;
pub mod volume;
pub mod volume_type;
pub mod volume_type_access;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait,
};

use basalt::ServiceError;

/// Connections a scheduler keeps to the database unless told otherwise (`--database-pool-size`).
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// Connects to `url` (`sqlite://path?mode=rwc`, `postgres://...`) with at most `pool_size`
/// connections, and applies pending migrations. Statements are prepared once per connection and
/// cached (sqlx's statement cache); each is logged at debug level, and at warn when it takes a
/// second or more.
pub async fn connect(url: &str, pool_size: u32) -> Result<DatabaseConnection, ServiceError> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(pool_size.max(1))
        .sqlx_logging_level(log::LevelFilter::Debug)
        .sqlx_slow_statements_logging_settings(log::LevelFilter::Warn, std::time::Duration::from_secs(1));
    let db = Database::connect(options)
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
    if lost_connection(&error) {
        ServiceError::unavailable(format!("{CONNECTION_LOST}: {error}"))
    } else {
        ServiceError::unavailable(format!("database error: {error}"))
    }
}

/// How an error that says nothing about the request begins: the database went away under it (a
/// restart, a failover, a network cut), so whatever it was doing may be done again.
const CONNECTION_LOST: &str = "the connection to the database was lost";

fn lost_connection(error: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx::Error};
    match error {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error)) => {
            matches!(
                **error,
                Error::Io(_) | Error::Tls(_) | Error::PoolTimedOut | Error::PoolClosed | Error::WorkerCrashed
            )
        }
        _ => false,
    }
}

/// Whether `error` is the database going away ([`db_error`] of a lost connection), not anything
/// the request or the data did.
pub fn is_connection_lost(error: &ServiceError) -> bool {
    error.code == basalt::ErrorCode::Unavailable && error.message.starts_with(CONNECTION_LOST)
}

/// The error of inserting a `what` keyed by an idempotency key: a concurrent repeat that took the
/// key first is ALREADY_EXISTS (a retry gets its row), anything else a database error.
pub fn keyed_insert_error(what: &'static str) -> impl FnOnce(DbErr) -> ServiceError {
    move |error| {
        if matches!(error.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) {
            ServiceError::new(
                basalt::ErrorCode::AlreadyExists,
                format!("a {what} with this idempotency key was created concurrently; retry to get it"),
            )
        } else {
            db_error(error)
        }
    }
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
    for migration in migrations::MIGRATIONS.iter().filter(|migration| !applied.contains(&migration.version)) {
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

    #[test]
    fn only_a_lost_connection_counts_as_one() {
        use sea_orm::{RuntimeErr, sqlx::Error};
        let sqlx = |error: Error| RuntimeErr::SqlxError(std::sync::Arc::new(error));
        let reset = || Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        for lost in [DbErr::Query(sqlx(reset())), DbErr::Exec(sqlx(reset())), DbErr::Query(sqlx(Error::PoolTimedOut))] {
            assert!(is_connection_lost(&db_error(lost)));
        }
        for other in [
            DbErr::Query(sqlx(Error::RowNotFound)),
            DbErr::Exec(sqlx(Error::ColumnNotFound("size_gib".into()))),
            DbErr::RecordNotFound("volume".into()),
            DbErr::Custom("a constraint".into()),
        ] {
            assert!(!is_connection_lost(&db_error(other)));
        }
        assert!(!is_connection_lost(&ServiceError::unavailable("volume node node-0 stopped reporting")));
    }

    #[tokio::test]
    async fn migrations_apply_once_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
        let db = connect(&url, DEFAULT_POOL_SIZE).await.unwrap();
        drop(db);
        // A second start finds everything applied and changes nothing.
        let db = connect(&url, DEFAULT_POOL_SIZE).await.unwrap();
        let rows = db
            .query_all_raw(Statement::from_string(DbBackend::Sqlite, "SELECT version FROM basalt_schema_migrations"))
            .await
            .unwrap();
        assert_eq!(rows.len(), migrations::MIGRATIONS.len());
    }
}
