//! The backend conformance suite on the `file` backend. `lvm` (thick and thin) and `nfs` run the
//! same suite on a real kernel in the VM lane (`scripts/vm-lane/run conformance`).

use basalt::command::SystemRunner;
use basalt_volume_node::{BackendSettings, VolumeClear, backend::conformance, open_backend};

#[tokio::test]
async fn the_file_backend_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let settings =
        BackendSettings::File { root: dir.path().join("pool"), pool: "default".into(), max_capacity_bytes: None };
    let backend = open_backend(&settings, 1.0, 0, VolumeClear::Zero, SystemRunner::default()).await.unwrap();
    let mut report = Vec::new();
    let failed = conformance::run(&backend, "default", None, |name, result| {
        report.push(format!(
            "case {name} ... {}",
            result.as_ref().map_or_else(|error| format!("FAILED: {error}"), |()| "ok".into())
        ));
    })
    .await;
    println!("{}", report.join("\n"));
    assert_eq!(report.len(), conformance::CASES.len(), "every case ran");
    assert!(failed.is_empty(), "failed cases:\n{}", report.join("\n"));
}
