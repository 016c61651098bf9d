//! The Kubernetes manifests (`deploy/kubernetes/`) and the README's examples are valid for the
//! Kubernetes releases Basalt supports, checked offline against their OpenAPI schemas
//! (kubernetes-validate from PyPI, strict: no unknown field), and they run `basalt csi` with
//! flags and environment variables the binary has. The Grafana dashboard (`deploy/grafana/`)
//! charts only metrics the services register.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use basalt_integration::*;

/// The oldest and the newest releases the manifests are for.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.34.0"];

#[test]
fn the_manifests_are_valid_kubernetes_and_run_the_plugin_as_it_is() -> Result<()> {
    let python = python_with("kubernetes-validate", &["kubernetes-validate==1.37.0"], "kubernetes_validate")?;
    let root = repo_root();
    let mut files: Vec<String> = Vec::new();
    for dir in ["deploy/kubernetes", "deploy/kubernetes/examples"] {
        for entry in std::fs::read_dir(root.join(dir))? {
            let path = entry?.path();
            if path.extension().is_some_and(|extension| extension == "yaml") {
                files.push(path.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    ensure!(files.len() >= 12, "the manifests and examples are missing: {files:?}");
    let script = root.join("integration/clients/validate_manifests.py");
    let mut report = serde_json::Value::Null;
    for version in KUBERNETES_VERSIONS {
        let output = Command::new(&python).arg(&script).arg(version).args(&files).output()?;
        ensure!(
            output.status.success(),
            "invalid for Kubernetes {version}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        report = serde_json::from_slice(&output.stdout)?;
    }

    let help = Command::new(basalt_binary()?).args(["csi", "--help"]).output()?;
    let help = String::from_utf8(help.stdout)?;
    let containers = report["containers"].as_array().context("the containers")?;
    ensure!(containers.len() == 3, "a config map, the controller and the node: {containers:?}");
    for container in containers {
        let args: Vec<&str> =
            container["args"].as_array().into_iter().flatten().filter_map(|arg| arg.as_str()).collect();
        for flag in args.iter().filter(|arg| arg.starts_with("--")) {
            ensure!(
                help.contains(&format!("{flag} ")),
                "{} passes {flag}, which `basalt csi` lacks",
                container["where"]
            );
        }
        for variable in container["env"].as_array().into_iter().flatten().filter_map(|name| name.as_str()) {
            ensure!(
                help.contains(&format!("[env: {variable}=")),
                "{} sets {variable}, which `basalt csi` does not read",
                container["where"]
            );
        }
    }
    Ok(())
}

#[test]
fn the_dashboard_charts_only_metrics_the_services_register() -> Result<()> {
    let root = repo_root();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/grafana/basalt-dashboard.json"))?)?;
    let mut sources = String::new();
    for file in [
        "src/metrics.rs",
        "services/api-gateway/src/metrics.rs",
        "services/scheduler/src/metrics.rs",
        "services/volume-node/src/metrics.rs",
    ] {
        sources.push_str(&std::fs::read_to_string(root.join(file))?);
    }
    let mut charted = 0;
    for panel in dashboard["panels"].as_array().context("panels")? {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().context("a target's expression")?;
            let names = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("basalt_"));
            for name in names {
                // A histogram's series are its family's name with a suffix.
                let family = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|family| sources.contains(&format!("\"{family}\"")))
                    .unwrap_or(name);
                ensure!(
                    sources.contains(&format!("\"{family}\"")),
                    "the dashboard charts {name}, which no service registers"
                );
                charted += 1;
            }
        }
    }
    ensure!(charted >= 20, "the dashboard charts too little: {charted} series");
    Ok(())
}
