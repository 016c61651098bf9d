//! Tracing set-up shared by every binary: human-readable by default, JSON lines on request,
//! filtered by `RUST_LOG` (default `info`, with sqlx's per-query lines
//! kept to warnings).

use tracing_subscriber::{EnvFilter, fmt};

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second initialisation (tests running several services in one process) is harmless.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
