//! The schema's history: every change as it shipped, in order. A shipped migration is never
//! edited: it names tables and columns as text, not through the entities, so changing an entity
//! cannot change what an old migration does (a test pins their SQL). A new change is a new
//! migration at the end.

use sea_orm::{
    DbBackend, Statement,
    sea_query::{ColumnDef, Index, Table},
};

/// One schema change; applied once, in order, recorded in `basalt_schema_migrations`.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub statements: fn(DbBackend) -> Vec<Statement>,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "volumes", statements: volumes_table },
    Migration { version: 2, name: "lifecycle", statements: lifecycle_tables },
    Migration { version: 3, name: "attachments", statements: attachments_table },
    Migration { version: 4, name: "qos_specs", statements: qos_specs_table },
    Migration { version: 5, name: "connection_info", statements: connection_info_column },
    Migration { version: 6, name: "multiattach", statements: multiattach_column },
    Migration { version: 7, name: "backups", statements: backups_table },
    Migration { version: 8, name: "snapshot_idempotency", statements: snapshot_idempotency_index },
    Migration { version: 9, name: "json_columns", statements: json_columns },
    Migration { version: 10, name: "default_types", statements: default_types_table },
    Migration { version: 11, name: "transfers", statements: transfers_table },
    Migration { version: 12, name: "messages", statements: messages_table },
    Migration { version: 13, name: "listing_in_sql", statements: listing_indexes },
    Migration { version: 14, name: "groups", statements: groups_tables },
    Migration { version: 15, name: "lost_nodes", statements: lost_nodes_table },
    Migration { version: 16, name: "group_snapshots", statements: group_snapshots_tables },
    Migration { version: 17, name: "migration_status", statements: migration_status_column },
    Migration { version: 18, name: "service_states", statements: service_states_table },
    Migration { version: 19, name: "listing_across_projects", statements: listing_across_projects_indexes },
];

/// Admins list every project's rows (`all_tenants`): the default order (newest first, then id),
/// and the volume filters they use most, indexed without the project, so a page of a million rows
/// reads a page's worth of index instead of sorting the table.
fn listing_across_projects_indexes(backend: DbBackend) -> Vec<Statement> {
    let indexes = [
        ("volumes_by_created", "volumes", ["created_at", "id"]),
        ("volumes_by_name", "volumes", ["name", "created_at"]),
        ("volumes_by_status", "volumes", ["status", "created_at"]),
        ("snapshots_by_created", "snapshots", ["created_at", "id"]),
        ("backups_by_created", "backups", ["created_at", "id"]),
    ];
    indexes
        .into_iter()
        .map(|(name, table, [first, second])| {
            backend.build(&Index::create().name(name).table(table).col(first).col(second).to_owned())
        })
        .collect()
}

/// Services an admin disabled, and why.
fn service_states_table(backend: DbBackend) -> Vec<Statement> {
    let states = Table::create()
        .table("service_states")
        .col(ColumnDef::new("binary").string_len(64).not_null())
        .col(ColumnDef::new("host").string_len(400).not_null())
        .col(ColumnDef::new("disabled_reason").text().not_null())
        .col(ColumnDef::new("updated_at").timestamp_with_time_zone().not_null())
        .primary_key(Index::create().col("binary").col("host"))
        .to_owned();
    vec![backend.build(&states)]
}

/// How a volume's latest move to another node went.
fn migration_status_column(backend: DbBackend) -> Vec<Statement> {
    let column =
        Table::alter().table("volumes").add_column(ColumnDef::new("migration_status").string_len(32).null()).to_owned();
    vec![backend.build(&column)]
}

/// Group snapshots, the group snapshot each snapshot was cut in, and what a group was made from.
fn group_snapshots_tables(backend: DbBackend) -> Vec<Statement> {
    let group_snapshots = Table::create()
        .table("group_snapshots")
        .col(ColumnDef::new("id").string_len(36).not_null().primary_key())
        .col(ColumnDef::new("project_id").string_len(64).not_null())
        .col(ColumnDef::new("user_id").string_len(255).not_null())
        .col(ColumnDef::new("group_id").string_len(36).not_null())
        .col(ColumnDef::new("group_type_id").string_len(36).not_null())
        .col(ColumnDef::new("name").string_len(255).not_null())
        .col(ColumnDef::new("description").string_len(255).not_null())
        .col(ColumnDef::new("status").string_len(32).not_null())
        .col(ColumnDef::new("node_id").string_len(64).not_null())
        .col(ColumnDef::new("backend").string_len(64).not_null())
        .col(ColumnDef::new("pool").string_len(255).not_null())
        .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
        .col(ColumnDef::new("updated_at").timestamp_with_time_zone().not_null())
        .to_owned();
    let by_project = Index::create()
        .name("group_snapshots_by_project")
        .table("group_snapshots")
        .col("project_id")
        .col("created_at")
        .to_owned();
    let by_group = Index::create().name("group_snapshots_by_group").table("group_snapshots").col("group_id").to_owned();
    let snapshot_column = Table::alter()
        .table("snapshots")
        .add_column(ColumnDef::new("group_snapshot_id").string_len(36).null())
        .to_owned();
    let snapshots_by_group_snapshot =
        Index::create().name("snapshots_by_group_snapshot").table("snapshots").col("group_snapshot_id").to_owned();
    // SQLite adds one column per ALTER TABLE.
    let from_group_snapshot =
        Table::alter().table("groups").add_column(ColumnDef::new("group_snapshot_id").string_len(36).null()).to_owned();
    let from_group =
        Table::alter().table("groups").add_column(ColumnDef::new("source_group_id").string_len(36).null()).to_owned();
    vec![
        backend.build(&group_snapshots),
        backend.build(&by_project),
        backend.build(&by_group),
        backend.build(&snapshot_column),
        backend.build(&snapshots_by_group_snapshot),
        backend.build(&from_group_snapshot),
        backend.build(&from_group),
    ]
}

/// Volume nodes an admin declared gone for good.
fn lost_nodes_table(backend: DbBackend) -> Vec<Statement> {
    let lost = Table::create()
        .table("lost_nodes")
        .col(ColumnDef::new("node_id").string_len(64).not_null().primary_key())
        .col(ColumnDef::new("reason").text().not_null())
        .col(ColumnDef::new("declared_at").timestamp_with_time_zone().not_null())
        .to_owned();
    vec![backend.build(&lost)]
}

/// The name of the group type every deployment starts with (Cinder's).
pub const DEFAULT_GROUP_TYPE: &str = "default_group_type";

/// Group types with their specs (and the default one), groups, and each volume's group.
fn groups_tables(backend: DbBackend) -> Vec<Statement> {
    let json = |name: &'static str| {
        let mut column = ColumnDef::new(name);
        match backend {
            DbBackend::Postgres => column.json_binary().not_null().to_owned(),
            _ => column.text().not_null().to_owned(),
        }
    };
    let group_types = Table::create()
        .table("group_types")
        .col(ColumnDef::new("id").string_len(36).not_null().primary_key())
        .col(ColumnDef::new("name").string_len(255).not_null().unique_key())
        .col(ColumnDef::new("description").string_len(255).not_null())
        .col(ColumnDef::new("is_public").boolean().not_null())
        .col(json("group_specs"))
        .col(ColumnDef::new("is_default").boolean().not_null())
        .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
        .col(ColumnDef::new("updated_at").timestamp_with_time_zone().not_null())
        .to_owned();
    let groups = Table::create()
        .table("groups")
        .col(ColumnDef::new("id").string_len(36).not_null().primary_key())
        .col(ColumnDef::new("project_id").string_len(64).not_null())
        .col(ColumnDef::new("user_id").string_len(255).not_null())
        .col(ColumnDef::new("name").string_len(255).not_null())
        .col(ColumnDef::new("description").string_len(255).not_null())
        .col(ColumnDef::new("group_type_id").string_len(36).not_null())
        .col(json("volume_type_ids"))
        .col(ColumnDef::new("status").string_len(32).not_null())
        .col(ColumnDef::new("availability_zone").string_len(255).not_null())
        .col(ColumnDef::new("node_id").string_len(64).not_null())
        .col(ColumnDef::new("backend").string_len(64).not_null())
        .col(ColumnDef::new("pool").string_len(255).not_null())
        .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
        .col(ColumnDef::new("updated_at").timestamp_with_time_zone().not_null())
        .to_owned();
    let groups_by_project =
        Index::create().name("groups_by_project").table("groups").col("project_id").col("created_at").to_owned();
    let groups_by_type = Index::create().name("groups_by_type").table("groups").col("group_type_id").to_owned();
    let group_column =
        Table::alter().table("volumes").add_column(ColumnDef::new("group_id").string_len(36).null()).to_owned();
    let volumes_by_group = Index::create().name("volumes_by_group").table("volumes").col("group_id").to_owned();
    let now = chrono::Utc::now();
    let default_type = sea_orm::sea_query::Query::insert()
        .into_table("group_types")
        .columns(["id", "name", "description", "is_public", "group_specs", "is_default", "created_at", "updated_at"])
        .values_panic([
            uuid::Uuid::new_v4().to_string().into(),
            DEFAULT_GROUP_TYPE.into(),
            "Default group type".into(),
            true.into(),
            serde_json::json!({}).into(),
            true.into(),
            now.into(),
            now.into(),
        ])
        .to_owned();
    vec![
        backend.build(&group_types),
        backend.build(&groups),
        backend.build(&groups_by_project),
        backend.build(&groups_by_type),
        backend.build(&group_column),
        backend.build(&volumes_by_group),
        backend.build(&default_type),
    ]
}

/// Listings sort and page in the database: names compare byte by byte on both databases
/// (SQLite's default; PostgreSQL's `C` collation, whatever the database's own), so a listing's
/// order does not depend on where it runs; and the filters and keys listings use most are indexed.
fn listing_indexes(backend: DbBackend) -> Vec<Statement> {
    let mut statements = Vec::new();
    if backend == DbBackend::Postgres {
        for table in ["volumes", "snapshots", "backups"] {
            let sql = format!("ALTER TABLE {table} ALTER COLUMN name TYPE varchar(255) COLLATE \"C\"");
            statements.push(Statement::from_string(backend, sql));
        }
    }
    let indexes = [
        ("volumes_by_project_status", "volumes", ["project_id", "status"]),
        ("volumes_by_project_name", "volumes", ["project_id", "name"]),
        ("snapshots_by_project_status", "snapshots", ["project_id", "status"]),
        ("backups_by_project_created", "backups", ["project_id", "created_at"]),
    ];
    for (name, table, [first, second]) in indexes {
        statements.push(backend.build(&Index::create().name(name).table(table).col(first).col(second).to_owned()));
    }
    statements
}

/// User messages (why an asynchronous operation failed), and the request each journalled
/// operation came from, which its message names.
fn messages_table(backend: DbBackend) -> Vec<Statement> {
    let messages = Table::create()
        .table("messages")
        .col(ColumnDef::new("id").string_len(36).not_null().primary_key())
        .col(ColumnDef::new("project_id").string_len(64).not_null())
        .col(ColumnDef::new("request_id").string_len(64).not_null())
        .col(ColumnDef::new("resource_type").string_len(32).not_null())
        .col(ColumnDef::new("resource_uuid").string_len(36).not_null())
        .col(ColumnDef::new("event_id").string_len(64).not_null())
        .col(ColumnDef::new("action_id").string_len(8).not_null())
        .col(ColumnDef::new("detail_id").string_len(8).not_null())
        .col(ColumnDef::new("message_level").string_len(16).not_null())
        .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
        .col(ColumnDef::new("expires_at").timestamp_with_time_zone().not_null())
        .to_owned();
    let by_project =
        Index::create().name("messages_by_project").table("messages").col("project_id").col("created_at").to_owned();
    let by_expiry = Index::create().name("messages_by_expiry").table("messages").col("expires_at").to_owned();
    let request_id = Table::alter()
        .table("operations")
        .add_column(ColumnDef::new("request_id").string_len(64).not_null().default(""))
        .to_owned();
    vec![backend.build(&messages), backend.build(&by_project), backend.build(&by_expiry), backend.build(&request_id)]
}

/// Volumes offered to another project: the key is kept only as a salted HMAC.
fn transfers_table(backend: DbBackend) -> Vec<Statement> {
    let transfers = Table::create()
        .table("transfers")
        .col(ColumnDef::new("id").string_len(36).not_null().primary_key())
        .col(ColumnDef::new("volume_id").string_len(36).not_null().unique_key())
        .col(ColumnDef::new("project_id").string_len(64).not_null())
        .col(ColumnDef::new("name").string_len(255).not_null())
        .col(ColumnDef::new("salt").string_len(64).not_null())
        .col(ColumnDef::new("crypt_hash").string_len(128).not_null())
        .col(ColumnDef::new("no_snapshots").boolean().not_null())
        .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
        .to_owned();
    let by_project = Index::create().name("transfers_by_project").table("transfers").col("project_id").to_owned();
    vec![backend.build(&transfers), backend.build(&by_project)]
}

/// A project's own default volume type (Cinder 3.62), one per project.
fn default_types_table(backend: DbBackend) -> Vec<Statement> {
    let default_types = Table::create()
        .table("default_types")
        .col(ColumnDef::new("project_id").string_len(64).not_null().primary_key())
        .col(ColumnDef::new("volume_type_id").string_len(36).not_null())
        .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
        .col(ColumnDef::new("updated_at").timestamp_with_time_zone().not_null())
        .to_owned();
    let by_type = Index::create().name("default_types_by_type").table("default_types").col("volume_type_id").to_owned();
    vec![backend.build(&default_types), backend.build(&by_type)]
}

/// Metadata, specs, connectors and connection info become JSON columns (jsonb on PostgreSQL; on
/// SQLite, where JSON is text, only the attachments change), and an attachment without a
/// connector or connection info holds NULL instead of an empty string.
fn json_columns(backend: DbBackend) -> Vec<Statement> {
    let statements: &[&str] = match backend {
        DbBackend::Postgres => &[
            "ALTER TABLE volumes ALTER COLUMN metadata TYPE jsonb USING metadata::jsonb",
            "ALTER TABLE snapshots ALTER COLUMN metadata TYPE jsonb USING metadata::jsonb",
            "ALTER TABLE backups ALTER COLUMN metadata TYPE jsonb USING metadata::jsonb",
            "ALTER TABLE volume_types ALTER COLUMN extra_specs TYPE jsonb USING extra_specs::jsonb",
            "ALTER TABLE qos_specs ALTER COLUMN specs TYPE jsonb USING specs::jsonb",
            "ALTER TABLE attachments ALTER COLUMN connector DROP NOT NULL, \
             ALTER COLUMN connector TYPE jsonb USING NULLIF(connector, '')::jsonb",
            "ALTER TABLE attachments ALTER COLUMN connection_info DROP DEFAULT, \
             ALTER COLUMN connection_info DROP NOT NULL, \
             ALTER COLUMN connection_info TYPE jsonb USING NULLIF(connection_info, '')::jsonb",
        ],
        // SQLite cannot relax NOT NULL in place: the table is rebuilt, as its manual prescribes.
        _ => &[
            "CREATE TABLE attachments_json ( \
                id varchar(36) NOT NULL PRIMARY KEY, volume_id varchar(36) NOT NULL, \
                project_id varchar(64) NOT NULL, instance_id varchar(255) NOT NULL, \
                host_name varchar(255) NOT NULL, status varchar(32) NOT NULL, mode varchar(8) NOT NULL, \
                connector text NULL, mountpoint varchar(255) NOT NULL, \
                attached_at timestamp_with_timezone_text NULL, \
                created_at timestamp_with_timezone_text NOT NULL, connection_info text NULL)",
            "INSERT INTO attachments_json SELECT id, volume_id, project_id, instance_id, host_name, status, mode, \
                NULLIF(connector, ''), mountpoint, attached_at, created_at, NULLIF(connection_info, '') \
                FROM attachments",
            "DROP TABLE attachments",
            "ALTER TABLE attachments_json RENAME TO attachments",
            "CREATE INDEX attachments_by_volume ON attachments (volume_id)",
        ],
    };
    statements.iter().map(|sql| Statement::from_string(backend, *sql)).collect()
}

/// Whether several hosts may attach a volume at once.
fn backups_table(backend: DbBackend) -> Vec<Statement> {
    let backups = Table::create()
        .table("backups")
        .col(ColumnDef::new("id").string_len(36).not_null().primary_key())
        .col(ColumnDef::new("project_id").string_len(64).not_null())
        .col(ColumnDef::new("user_id").string_len(255).not_null())
        .col(ColumnDef::new("volume_id").string_len(36).not_null())
        .col(ColumnDef::new("snapshot_id").string_len(36).null())
        .col(ColumnDef::new("name").string_len(255).not_null())
        .col(ColumnDef::new("description").string_len(255).not_null())
        .col(ColumnDef::new("status").string_len(32).not_null())
        .col(ColumnDef::new("size_gib").big_integer().not_null())
        .col(ColumnDef::new("object_count").big_integer().not_null())
        .col(ColumnDef::new("stored_bytes").big_integer().not_null())
        .col(ColumnDef::new("container").string_len(255).not_null())
        .col(ColumnDef::new("availability_zone").string_len(255).not_null())
        .col(ColumnDef::new("parent_id").string_len(36).null())
        .col(ColumnDef::new("metadata").text().not_null())
        .col(ColumnDef::new("progress").integer().not_null())
        .col(ColumnDef::new("fail_reason").text().not_null())
        .col(ColumnDef::new("node_id").string_len(255).not_null())
        .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
        .col(ColumnDef::new("updated_at").timestamp_with_time_zone().not_null())
        .col(ColumnDef::new("data_timestamp").timestamp_with_time_zone().not_null())
        .to_owned();
    let by_volume = Index::create().name("backups_by_volume").table("backups").col("volume_id").to_owned();
    let by_project = Index::create().name("backups_by_project").table("backups").col("project_id").to_owned();
    vec![backend.build(&backups), backend.build(&by_volume), backend.build(&by_project)]
}

fn multiattach_column(backend: DbBackend) -> Vec<Statement> {
    let column = Table::alter()
        .table("volumes")
        .add_column(ColumnDef::new("multiattach").boolean().not_null().default(false))
        .to_owned();
    vec![backend.build(&column)]
}

/// The connection info an attachment hands to its host.
fn connection_info_column(backend: DbBackend) -> Vec<Statement> {
    let column = Table::alter()
        .table("attachments")
        .add_column(ColumnDef::new("connection_info").text().not_null().default(""))
        .to_owned();
    vec![backend.build(&column)]
}

/// QoS specs, and the association of a volume type with one.
fn qos_specs_table(backend: DbBackend) -> Vec<Statement> {
    let qos = Table::create()
        .table("qos_specs")
        .col(ColumnDef::new("id").string_len(36).not_null().primary_key())
        .col(ColumnDef::new("name").string_len(255).not_null().unique_key())
        .col(ColumnDef::new("consumer").string_len(16).not_null())
        .col(ColumnDef::new("specs").text().not_null())
        .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
        .to_owned();
    let association = Table::alter()
        .table("volume_types")
        .add_column(ColumnDef::new("qos_specs_id").string_len(36).null())
        .to_owned();
    vec![backend.build(&qos), backend.build(&association)]
}

/// Attachments, and the read-only flag of volumes.
fn attachments_table(backend: DbBackend) -> Vec<Statement> {
    let readonly = Table::alter()
        .table("volumes")
        .add_column(ColumnDef::new("readonly").boolean().not_null().default(false))
        .to_owned();
    let attachments = Table::create()
        .table("attachments")
        .col(ColumnDef::new("id").string_len(36).not_null().primary_key())
        .col(ColumnDef::new("volume_id").string_len(36).not_null())
        .col(ColumnDef::new("project_id").string_len(64).not_null())
        .col(ColumnDef::new("instance_id").string_len(255).not_null())
        .col(ColumnDef::new("host_name").string_len(255).not_null())
        .col(ColumnDef::new("status").string_len(32).not_null())
        .col(ColumnDef::new("mode").string_len(8).not_null())
        .col(ColumnDef::new("connector").text().not_null())
        .col(ColumnDef::new("mountpoint").string_len(255).not_null())
        .col(ColumnDef::new("attached_at").timestamp_with_time_zone().null())
        .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
        .to_owned();
    let by_volume = Index::create().name("attachments_by_volume").table("attachments").col("volume_id").to_owned();
    vec![backend.build(&readonly), backend.build(&attachments), backend.build(&by_volume)]
}

/// The name of the type every deployment starts with (Cinder's `__DEFAULT__`).
pub const DEFAULT_VOLUME_TYPE: &str = "__DEFAULT__";

/// Snapshots, volume types, quotas, pool claims and the operation journal.
fn lifecycle_tables(backend: DbBackend) -> Vec<Statement> {
    let snapshots = {
        Table::create()
            .table("snapshots")
            .col(ColumnDef::new("id").string_len(36).not_null().primary_key())
            .col(ColumnDef::new("project_id").string_len(64).not_null())
            .col(ColumnDef::new("user_id").string_len(255).not_null())
            .col(ColumnDef::new("volume_id").string_len(36).not_null())
            .col(ColumnDef::new("name").string_len(255).not_null())
            .col(ColumnDef::new("description").string_len(255).not_null())
            .col(ColumnDef::new("size_gib").big_integer().not_null())
            .col(ColumnDef::new("status").string_len(32).not_null())
            .col(ColumnDef::new("metadata").text().not_null())
            .col(ColumnDef::new("progress").integer().not_null())
            .col(ColumnDef::new("error_reason").text().not_null())
            .col(ColumnDef::new("node_id").string_len(64).not_null())
            .col(ColumnDef::new("backend").string_len(32).not_null())
            .col(ColumnDef::new("pool").string_len(255).not_null())
            .col(ColumnDef::new("volume_type_id").string_len(36).null())
            .col(ColumnDef::new("idempotency_key").string_len(255).null())
            .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
            .col(ColumnDef::new("updated_at").timestamp_with_time_zone().not_null())
            .to_owned()
    };
    let snapshots_by_volume =
        Index::create().name("snapshots_by_volume").table("snapshots").col("volume_id").to_owned();
    let snapshots_by_project =
        Index::create().name("snapshots_by_project").table("snapshots").col("project_id").col("created_at").to_owned();
    let volume_types = {
        Table::create()
            .table("volume_types")
            .col(ColumnDef::new("id").string_len(36).not_null().primary_key())
            .col(ColumnDef::new("name").string_len(255).not_null().unique_key())
            .col(ColumnDef::new("description").string_len(255).not_null())
            .col(ColumnDef::new("is_public").boolean().not_null())
            .col(ColumnDef::new("extra_specs").text().not_null())
            .col(ColumnDef::new("is_default").boolean().not_null())
            .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
            .col(ColumnDef::new("updated_at").timestamp_with_time_zone().not_null())
            .to_owned()
    };
    let type_access = {
        Table::create()
            .table("volume_type_access")
            .col(ColumnDef::new("volume_type_id").string_len(36).not_null())
            .col(ColumnDef::new("project_id").string_len(64).not_null())
            .primary_key(Index::create().col("volume_type_id").col("project_id"))
            .to_owned()
    };
    let quota_limits = {
        Table::create()
            .table("quota_limits")
            .col(ColumnDef::new("project_id").string_len(64).not_null())
            .col(ColumnDef::new("resource").string_len(300).not_null())
            .col(ColumnDef::new("hard_limit").big_integer().not_null())
            .primary_key(Index::create().col("project_id").col("resource"))
            .to_owned()
    };
    let quota_usages = {
        Table::create()
            .table("quota_usages")
            .col(ColumnDef::new("project_id").string_len(64).not_null())
            .col(ColumnDef::new("resource").string_len(300).not_null())
            .col(ColumnDef::new("in_use").big_integer().not_null())
            .primary_key(Index::create().col("project_id").col("resource"))
            .to_owned()
    };
    let pool_claims = {
        Table::create()
            .table("pool_claims")
            .col(ColumnDef::new("host").string_len(400).not_null().primary_key())
            .col(ColumnDef::new("claimed_gib").big_integer().not_null())
            .col(ColumnDef::new("capacity_gib").big_integer().not_null())
            .col(ColumnDef::new("updated_at").timestamp_with_time_zone().not_null())
            .to_owned()
    };
    let operations = {
        Table::create()
            .table("operations")
            .col(ColumnDef::new("id").string_len(36).not_null().primary_key())
            .col(ColumnDef::new("kind").string_len(64).not_null())
            .col(ColumnDef::new("resource_id").string_len(36).not_null())
            .col(ColumnDef::new("payload").text().not_null())
            .col(ColumnDef::new("owner").string_len(255).not_null())
            .col(ColumnDef::new("lease_expires_at").timestamp_with_time_zone().not_null())
            .col(ColumnDef::new("attempt").integer().not_null())
            .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
            .to_owned()
    };
    let operations_by_resource =
        Index::create().name("operations_by_resource").table("operations").col("resource_id").to_owned();
    let now = chrono::Utc::now();
    let default_type = sea_orm::sea_query::Query::insert()
        .into_table("volume_types")
        .columns(["id", "name", "description", "is_public", "extra_specs", "is_default", "created_at", "updated_at"])
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
    let table = Table::create()
        .table("volumes")
        .col(ColumnDef::new("id").string_len(36).not_null().primary_key())
        .col(ColumnDef::new("project_id").string_len(64).not_null())
        .col(ColumnDef::new("user_id").string_len(255).not_null())
        .col(ColumnDef::new("name").string_len(255).not_null())
        .col(ColumnDef::new("description").string_len(255).not_null())
        .col(ColumnDef::new("size_gib").big_integer().not_null())
        .col(ColumnDef::new("status").string_len(32).not_null())
        .col(ColumnDef::new("attach_status").string_len(32).not_null())
        .col(ColumnDef::new("availability_zone").string_len(255).not_null())
        .col(ColumnDef::new("volume_type_id").string_len(36).null())
        .col(ColumnDef::new("node_id").string_len(64).null())
        .col(ColumnDef::new("backend").string_len(32).null())
        .col(ColumnDef::new("pool").string_len(255).null())
        .col(ColumnDef::new("snapshot_id").string_len(36).null())
        .col(ColumnDef::new("source_volume_id").string_len(36).null())
        .col(ColumnDef::new("metadata").text().not_null())
        .col(ColumnDef::new("bootable").boolean().not_null())
        .col(ColumnDef::new("error_reason").text().not_null())
        .col(ColumnDef::new("idempotency_key").string_len(255).null())
        .col(ColumnDef::new("created_at").timestamp_with_time_zone().not_null())
        .col(ColumnDef::new("updated_at").timestamp_with_time_zone().not_null())
        .to_owned();
    let by_project =
        Index::create().name("volumes_by_project").table("volumes").col("project_id").col("created_at").to_owned();
    let by_pool = Index::create().name("volumes_by_pool").table("volumes").col("node_id").col("pool").to_owned();
    let idempotency = Index::create()
        .name("volumes_by_idempotency_key")
        .table("volumes")
        .col("project_id")
        .col("idempotency_key")
        .unique()
        .to_owned();
    vec![backend.build(&table), backend.build(&by_project), backend.build(&by_pool), backend.build(&idempotency)]
}

/// One snapshot per idempotency key and project, so two concurrent repeats cannot make two.
fn snapshot_idempotency_index(backend: DbBackend) -> Vec<Statement> {
    let index = Index::create()
        .name("snapshots_by_idempotency_key")
        .table("snapshots")
        .col("project_id")
        .col("idempotency_key")
        .unique()
        .to_owned();
    vec![backend.build(&index)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQL of the migrations that shipped, both backends. Changing a shipped migration would
    /// leave existing databases on a schema no new database has; add a migration instead.
    #[test]
    fn shipped_migrations_are_frozen() {
        let mut rendered = String::new();
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            for migration in MIGRATIONS.iter().filter(|migration| migration.version <= 8) {
                for statement in (migration.statements)(backend) {
                    rendered.push_str(&format!("{backend:?} {} {}\n", migration.version, statement.sql));
                }
            }
        }
        assert_eq!(rendered, include_str!("shipped-migrations.sql"));
    }
}
