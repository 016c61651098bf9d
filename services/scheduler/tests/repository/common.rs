//! The databases the repository tests run against: a fresh SQLite file and a fresh database on the
//! machine's PostgreSQL (`BASALT_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432`),
//! dropped afterwards.

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

pub struct TestDatabase {
    pub url: String,
    pub label: &'static str,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("basalt.db").display());
        Self { url, label: "sqlite", _dir: Some(dir), postgres: None }
    }

    pub async fn postgres() -> Self {
        let server =
            std::env::var("BASALT_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let admin_url = format!("{server}/postgres");
        let name = format!("basalt_repo_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url)
            .await
            .unwrap_or_else(|error| panic!("PostgreSQL is required at {server} (BASALT_TEST_POSTGRES): {error}"));
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
        Self { url: format!("{server}/{name}"), label: "postgres", _dir: None, postgres: Some((admin_url, name)) }
    }

    /// Both kinds, for a test to run against each.
    pub async fn both() -> [Self; 2] {
        [Self::sqlite().await, Self::postgres().await]
    }

    /// Opens the database as the scheduler does: migrations applied.
    pub async fn open(&self) -> DatabaseConnection {
        basalt_scheduler::db::connect(&self.url, basalt_scheduler::db::DEFAULT_POOL_SIZE)
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", self.label))
    }

    pub async fn drop_database(self) {
        if let Some((admin_url, name)) = &self.postgres {
            let admin = Database::connect(admin_url).await.unwrap();
            admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
        }
    }
}
