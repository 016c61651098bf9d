//! A standard fuzzer drives the REST API from its own OpenAPI document: schemathesis (from PyPI)
//! against `basalt up`, in its positive, negative and stateful phases, a few thousand requests.
//! It checks that no request gets a 5xx, that every response, errors included, matches its
//! documented status and schema, that requests breaking the schema are refused, and (the check in
//! `integration/clients/fuzz/hooks.py`) that no refused request changes any state.
//!
//! Real resources of every kind exist before it starts (a volume with metadata, a snapshot, a
//! backup, a reserved attachment, a volume type, QoS specs), and the fuzzer is given their ids,
//! so its requests reach the code that acts on them and not only the 404 for a random id.
//!
//! `BASALT_FUZZ_EXAMPLES` sets the examples per operation (default 8), `BASALT_FUZZ_SEED` the seed.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use basalt_integration::*;
use serde_json::{Value, json};

const SCHEMATHESIS: &str = "schemathesis==4.32.5";
const DEFAULT_SEED: &str = "20261127";
const DEFAULT_EXAMPLES: &str = "8";
/// The fuzzer must have sent at least this many requests for the run to count.
const MIN_CASES: u64 = 2000;

/// A blocking REST client for the fixtures (the fuzzer runs blocking too).
struct Rest {
    base: String,
    token: String,
}

impl Rest {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let mut command = Command::new("curl");
        command.args(["-sS", "-X", method, "-w", "\n%{http_code}"]);
        command.args(["-H", &format!("X-Auth-Token: {}", self.token), "-H", "OpenStack-API-Version: volume 3.71"]);
        if let Some(body) = &body {
            command.args(["-H", "Content-Type: application/json", "-d", &body.to_string()]);
        }
        let output = command.arg(format!("{}{path}", self.base)).output().context("curl is required")?;
        let text = String::from_utf8(output.stdout)?;
        let (body, status) = text.rsplit_once('\n').context("curl printed no status")?;
        let status: u16 = status.trim().parse()?;
        ensure!((200..300).contains(&status), "{method} {path} answered {status}: {body}");
        Ok(if body.is_empty() { Value::Null } else { serde_json::from_str(body)? })
    }

    fn wait_for(&self, path: &str, key: &str, status: &str) -> Result<Value> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let shown = self.call("GET", path, None)?;
            if shown[key]["status"] == status {
                return Ok(shown[key].clone());
            }
            ensure!(std::time::Instant::now() < deadline, "{path} is not {status}: {shown}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn id(reply: &Value, key: &str) -> Result<String> {
        Ok(reply[key]["id"].as_str().with_context(|| format!("no {key} id in {reply}"))?.to_owned())
    }
}

/// The fixtures: one resource of each kind, by the path parameter that names it.
fn make_fixtures(rest: &Rest, project: &str) -> Result<Vec<(&'static str, String)>> {
    let unlimited = json!({"quota_set": {"volumes": -1, "gigabytes": -1, "snapshots": -1, "backups": -1,
                                         "backup_gigabytes": -1}});
    rest.call("PUT", &format!("/os-quota-sets/{project}"), Some(unlimited))?;
    let volume_type =
        Rest::id(&rest.call("POST", "/types", Some(json!({"volume_type": {"name": "fuzz-type"}})))?, "volume_type")?;
    let qos = Rest::id(
        &rest.call("POST", "/qos-specs", Some(json!({"qos_specs": {"name": "fuzz-qos", "read_iops_sec": "100"}})))?,
        "qos_specs",
    )?;
    let new_volume = |name: &str| -> Result<String> {
        let body = json!({"volume": {"size": 1, "name": name, "metadata": {"purpose": "fixture"}}});
        let id = Rest::id(&rest.call("POST", "/volumes", Some(body))?, "volume")?;
        rest.wait_for(&format!("/volumes/{id}"), "volume", "available")?;
        Ok(id)
    };
    let volume = new_volume("fuzz-volume")?;
    let snapshot = Rest::id(
        &rest.call(
            "POST",
            "/snapshots",
            Some(json!({"snapshot": {"volume_id": volume, "metadata": {"purpose": "fixture"}}})),
        )?,
        "snapshot",
    )?;
    rest.wait_for(&format!("/snapshots/{snapshot}"), "snapshot", "available")?;
    let backed_up = new_volume("fuzz-backed-up")?;
    let backup =
        Rest::id(&rest.call("POST", "/backups", Some(json!({"backup": {"volume_id": backed_up}})))?, "backup")?;
    rest.wait_for(&format!("/backups/{backup}"), "backup", "available")?;
    let attached = new_volume("fuzz-attached")?;
    let attachment = Rest::id(
        &rest.call(
            "POST",
            "/attachments",
            Some(json!({"attachment": {"volume_uuid": attached, "instance_uuid": "vm-1"}})),
        )?,
        "attachment",
    )?;
    Ok(vec![
        ("volume_id", volume),
        ("snapshot_id", snapshot),
        ("backup_id", backup),
        ("attachment_id", attachment),
        ("type_id", volume_type),
        ("qos_id", qos),
        ("key", "purpose".into()),
        ("target", project.to_owned()),
    ])
}

/// schemathesis' configuration: the fixtures' ids, and the statuses a refusal may have (Cinder's
/// 413 and 414 for bodies and URLs too large, 408 for a body that does not arrive).
fn write_config(dir: &Path, fixtures: &[(&str, String)]) -> Result<()> {
    let mut config = String::from("[parameters]\n");
    for (name, value) in fixtures {
        config.push_str(&format!("{name} = \"{value}\"\n"));
    }
    config.push_str(
        "\n[checks.negative_data_rejection]\n\
         expected-statuses = [\"400\", \"401\", \"403\", \"404\", \"405\", \"406\", \"408\", \"409\", \"413\", \"414\", \"415\"]\n",
    );
    std::fs::write(dir.join("schemathesis.toml"), config)?;
    Ok(())
}

#[test]
fn schemathesis_finds_no_server_error_schema_break_or_state_change() -> Result<()> {
    let python = python_with("schemathesis", &[SCHEMATHESIS], "schemathesis")?;
    let schemathesis = python.parent().context("the venv's bin")?.join("schemathesis");
    let tgtd = Tgtd::start()?;
    let data = tempfile::tempdir()?;
    let export = tgtd.export_flags();
    let mut flags: Vec<&str> = export.iter().map(String::as_str).collect();
    flags.extend(["--max-capacity-gib", "1000"]);
    // Thousands of requests: only what went wrong belongs in the test's log.
    let up = BasaltProcess::up(data.path(), &flags, &[("RUST_LOG", "warn")])?;
    let root = up.endpoint("rest").trim_end_matches("/v3").to_owned();
    let project = project_id("fuzz");
    let token = format!("admin:{project}");
    let base = format!("{root}/v3/{project}");
    let rest = Rest { base: base.clone(), token: token.clone() };
    let fixtures = make_fixtures(&rest, &project)?;
    let work = tempfile::tempdir()?;
    write_config(work.path(), &fixtures)?;

    let seed = std::env::var("BASALT_FUZZ_SEED").unwrap_or_else(|_| DEFAULT_SEED.into());
    let examples = std::env::var("BASALT_FUZZ_EXAMPLES").unwrap_or_else(|_| DEFAULT_EXAMPLES.into());
    let hooks = repo_root().join("integration/clients/fuzz");
    let output = Command::new(&schemathesis)
        .current_dir(work.path())
        .env("PYTHONPATH", &hooks)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("BASALT_FUZZ_BASE", &base)
        .env("BASALT_FUZZ_PROJECT", &project)
        .env("BASALT_FUZZ_TOKEN", &token)
        .args(["run", &format!("{root}/openapi.json"), "--url", &base])
        .args(["-H", &format!("X-Auth-Token: {token}"), "-H", "OpenStack-API-Version: volume 3.71"])
        .args(["--phases", "examples,coverage,fuzzing,stateful", "--mode", "all"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,\
             negative_data_rejection,use_after_free,refused_requests_change_nothing",
        ])
        .args(["--max-examples", &examples, "--seed", &seed, "--workers", "1", "--no-color"])
        .args(["--generation-with-security-parameters", "false", "--generation-database", "none"])
        .output()
        .context("cannot run schemathesis")?;
    let report = String::from_utf8_lossy(&output.stdout);
    // The phases as they ran, the stateful scenarios, the case count and the seed.
    let counted = |line: &&str| line.split_whitespace().nth(1) == Some("generated,");
    let phase =
        |line: &&str| line.contains(" (in ") || line.starts_with("Scenarios:") || line.starts_with("API Links:");
    let summary: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|line| counted(line) || phase(line) || line.starts_with("Seed:"))
        .collect();
    println!("schemathesis (seed {seed}, {examples} examples per operation): {}", summary.join(" | "));
    if !output.status.success() {
        bail!("schemathesis found problems:\n{report}\n{}", String::from_utf8_lossy(&output.stderr));
    }
    let cases: u64 = summary
        .iter()
        .find_map(|line| line.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no case count in the report:\n{report}"))?;
    ensure!(cases >= MIN_CASES, "schemathesis sent only {cases} requests:\n{report}");
    drop(up);
    drop(tgtd);
    Ok(())
}
