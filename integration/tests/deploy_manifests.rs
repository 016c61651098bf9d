//! The Kubernetes manifests (`deploy/kubernetes/`) and the README's examples are valid for the
//! Kubernetes releases Basalt supports, checked offline against their OpenAPI schemas
//! (kubernetes-validate from PyPI, strict: no unknown field), and they run `basalt csi` with
//! flags and environment variables the binary has.

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
