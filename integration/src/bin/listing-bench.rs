//! Benchmark (not a test): `GET /volumes/detail?limit=100` over a million volume rows on
//! PostgreSQL, spread over 1,000 projects, as issue 17 asks: the first page, a page from a marker
//! in the middle, a name filter and a status filter, for a member of one project and for an admin
//! listing every project (`all_tenants=1`). A real scheduler (`basalt scheduler`) and gateway
//! (`basalt gateway`) serve it; one kept-alive client asks one request at a time, as
//! python-cinderclient does. The rows are written straight into the database (the listing reads
//! them as it reads any row). The reference is the same queries, measured in the same run, on a
//! database of 1,000 rows in one project: the ratio p99 ÷ reference p99 says what the table's size
//! costs (**lower is better**, 1 is none). It also prints the scheduler's resident memory before
//! and after the listings, which should not grow with the rows.
//!
//!     cargo build --release --bin basalt
//!     cargo run --release -p basalt-integration --bin listing-bench -- [rows] [requests per query]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use basalt_integration::{PostgresDatabase, ProcessMesh, percentiles, rest_call};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

const PROJECTS: u64 = 1_000;
const TARGET: Duration = Duration::from_millis(50);

/// One listing asked of both databases: its name, whose token, and the query after `?`.
struct Query {
    name: &'static str,
    admin: bool,
    query: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args.next().map(|text| text.parse()).transpose()?.unwrap_or(1_000_000);
    let requests: usize = args.next().map(|text| text.parse()).transpose()?.unwrap_or(200);
    ensure!(rows >= PROJECTS * 10, "at least {} rows, ten per project", PROJECTS * 10);

    let reference = measure(1_000, 1, requests).await?;
    let large = measure(rows, PROJECTS, requests).await?;
    println!(
        "| listing (limit 100) | {rows} rows p50 | p99 | 1,000 rows p99 | p99 ÷ 1,000 rows | p99 ÷ 50 ms target |"
    );
    println!("|---|---|---|---|---|---|");
    for ((name, p50, p99), (_, _, reference_p99)) in large.times.iter().zip(&reference.times) {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2}× | {:.2}× |",
            millis(*p50),
            millis(*p99),
            millis(*reference_p99),
            p99.as_secs_f64() / reference_p99.as_secs_f64(),
            p99.as_secs_f64() / TARGET.as_secs_f64()
        );
    }
    println!();
    println!(
        "scheduler resident memory with {rows} rows: {} MiB before the listings, {} MiB after (lower is better)",
        large.memory_before_kib / 1024,
        large.memory_after_kib / 1024
    );
    Ok(())
}

struct Measured {
    times: Vec<(&'static str, Duration, Duration)>,
    memory_before_kib: u64,
    memory_after_kib: u64,
}

/// A fresh database with `rows` volumes over `projects` projects, a scheduler and a gateway on
/// it, and every query asked `requests` times.
async fn measure(rows: u64, projects: u64, requests: usize) -> Result<Measured> {
    let database = PostgresDatabase::create().await?;
    let outcome = measure_on(&database.url, rows, projects, requests).await;
    database.drop_database().await?;
    outcome
}

async fn measure_on(url: &str, rows: u64, projects: u64, requests: usize) -> Result<Measured> {
    let mesh = ProcessMesh::start(Some(url.to_owned()), 1, 0, &[])?;
    let db = Database::connect(url).await?;
    let started = Instant::now();
    insert_volumes(&db, rows, projects).await?;
    eprintln!("{rows} rows written in {:.1} s", started.elapsed().as_secs_f64());

    let gateway = mesh.spawn_gateway(0)?;
    let project = project_id(projects / 2);
    let base = format!("{}/{project}", gateway.endpoint("rest").trim_end_matches('/'));
    let client = reqwest::Client::new();

    // Markers from the middle of each order: the project's, and every project's.
    let per_project = rows / projects;
    let project_middle = middle_id(&db, &format!("WHERE project_id = '{project}'"), per_project / 2).await?;
    let everyone_middle = middle_id(&db, "", rows / 2).await?;
    let some_name = format!("vol-{}", projects / 2 + projects * (per_project / 3));
    let queries = [
        Query { name: "member: first page", admin: false, query: "limit=100".into() },
        Query {
            name: "member: from a marker mid-way",
            admin: false,
            query: format!("limit=100&marker={project_middle}"),
        },
        Query { name: "member: name filter", admin: false, query: format!("limit=100&name={some_name}") },
        Query { name: "member: status filter", admin: false, query: "limit=100&status=error".into() },
        Query { name: "admin, all projects: first page", admin: true, query: "limit=100&all_tenants=1".into() },
        Query {
            name: "admin, all projects: from a marker mid-way",
            admin: true,
            query: format!("limit=100&all_tenants=1&marker={everyone_middle}"),
        },
        Query {
            name: "admin, all projects: name filter",
            admin: true,
            query: format!("limit=100&all_tenants=1&name={some_name}"),
        },
        Query {
            name: "admin, all projects: status filter",
            admin: true,
            query: "limit=100&all_tenants=1&status=error".into(),
        },
    ];

    let scheduler_pid = mesh.schedulers[0].as_ref().context("the scheduler")?.pid();
    let memory_before_kib = resident_kib(scheduler_pid)?;
    let mut times = Vec::new();
    for query in &queries {
        let token = if query.admin { format!("admin:{project}") } else { format!("member:{project}") };
        let url = format!("{base}/volumes/detail?{}", query.query);
        // The first answer is checked and not timed: it pays for the connection.
        let (status, body) = rest_call(&client, Method::GET, &url, &token, None).await?;
        ensure!(status == StatusCode::OK, "{}: {status} {body}", query.name);
        let shown = body["volumes"].as_array().context("a volume list")?.len();
        ensure!(shown > 0, "{}: an empty page", query.name);
        let mut samples = Vec::with_capacity(requests);
        for _ in 0..requests {
            let started = Instant::now();
            let (status, _) = rest_call(&client, Method::GET, &url, &token, None).await?;
            samples.push(started.elapsed());
            ensure!(status == StatusCode::OK, "{}: {status}", query.name);
        }
        let (p50, p99) = percentiles(&mut samples);
        times.push((query.name, p50, p99));
    }
    let memory_after_kib = resident_kib(scheduler_pid)?;
    Ok(Measured { times, memory_before_kib, memory_after_kib })
}

/// Project `index`'s id: 32 hex digits.
fn project_id(index: u64) -> String {
    format!("{index:032x}")
}

/// `rows` volumes, `vol-<n>`, round-robin over `projects` projects, one in ten in `error`, each a
/// second older than the one before.
async fn insert_volumes(db: &DatabaseConnection, rows: u64, projects: u64) -> Result<()> {
    let sql = format!(
        "INSERT INTO volumes (id, project_id, user_id, name, description, size_gib, status, attach_status, \
         availability_zone, metadata, bootable, readonly, multiattach, error_reason, created_at, updated_at) \
         SELECT gen_random_uuid()::text, lpad(to_hex(n % {projects}), 32, '0'), 'bench', 'vol-' || n, '', 1, \
         CASE WHEN n % 10 = 0 THEN 'error' ELSE 'available' END, 'detached', 'nova', '{{}}'::jsonb, false, false, \
         false, '', now() - make_interval(secs => n), now() FROM generate_series(1, {rows}) AS n"
    );
    db.execute_unprepared(&sql).await?;
    db.execute_unprepared("ANALYZE volumes").await?;
    Ok(())
}

/// The id of the row `offset` rows into the listing's own order (newest first) among `filter`.
async fn middle_id(db: &DatabaseConnection, filter: &str, offset: u64) -> Result<String> {
    let sql = format!("SELECT id FROM volumes {filter} ORDER BY created_at DESC, id DESC OFFSET {offset} LIMIT 1");
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await?.context("a row")?;
    Ok(row.try_get::<String>("", "id")?)
}

/// The resident memory of process `pid`, in KiB.
fn resident_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).context("VmRSS in /proc")?;
    Ok(line.split_whitespace().nth(1).context("a VmRSS figure")?.parse()?)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
