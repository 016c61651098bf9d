//! Retype with `migration_policy: on-demand` (Cinder's `os-retype`): a volume whose new type its
//! pool does not satisfy moves to a node that does, its bytes identical there, the old copy wiped
//! and gone, quotas and claims moved with it; refused while attached, and when no node fits.

use anyhow::{Context, Result, ensure};
use axum::http::{Method, StatusCode};
use basalt_integration::*;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const MIB: u64 = 1 << 20;

async fn in_use(api: &RestApi, admin: &RestCaller, resource: &str) -> Result<i64> {
    let reply = admin.call(api, Method::GET, &format!("/os-quota-sets/{PROJECT}?usage=true"), "3.0", None).await?;
    Ok(reply.body["quota_set"][resource]["in_use"].as_i64().unwrap_or(0))
}

async fn retype(api: &RestApi, caller: &RestCaller, volume: &str, body: &str) -> Result<RestReply> {
    caller.call(api, Method::POST, &format!("/volumes/{volume}/action"), "3.0", Some(body)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_on_demand_retype_moves_the_bytes_to_a_fitting_node_and_wipes_the_old_copy() -> Result<()> {
    let mut mesh = InProcessMesh::start(1).await?;
    mesh.add_node_with("node-1", |config| config.availability_zone = "far".into()).await?;
    let api = RestApi::start(&mesh).await?;
    let admin = RestCaller::new(PROJECT, "admin");
    let member = RestCaller::new(PROJECT, "alice");
    let body = r#"{"volume_type": {"name": "far", "extra_specs": {"RESKEY:availability_zones": "far"}}}"#;
    ensure!(admin.call(&api, Method::POST, "/types", "3.0", Some(body)).await?.status == StatusCode::OK);
    let body = r#"{"volume_type": {"name": "nowhere", "extra_specs": {"RESKEY:availability_zones": "moon"}}}"#;
    ensure!(admin.call(&api, Method::POST, "/types", "3.0", Some(body)).await?.status == StatusCode::OK);

    let made = |name: &str| format!(r#"{{"volume": {{"size": 1, "name": "{name}", "availability_zone": "nova"}}}}"#);
    let created = member.call(&api, Method::POST, "/volumes", "3.0", Some(&made("mover"))).await?;
    let volume = created.body["volume"]["id"].as_str().context("a volume id")?.to_owned();
    member.wait_for(&api, &format!("/volumes/{volume}"), "volume", "available").await?;
    let old_file = mesh.node_dir("node-0").join(format!("volume-{volume}"));
    let new_file = mesh.node_dir("node-1").join(format!("volume-{volume}"));
    let (head, tail) = (random_bytes(7, 3 * MIB as usize), b"the last megabyte".to_vec());
    write_at(&old_file, MIB, &head)?;
    write_at(&old_file, 1023 * MIB, &tail)?;

    let never = retype(&api, &member, &volume, r#"{"os-retype": {"new_type": "far"}}"#).await?;
    never.assert_fault(400, "badRequest", "with migration_policy never");
    let nowhere = r#"{"os-retype": {"new_type": "nowhere", "migration_policy": "on-demand"}}"#;
    retype(&api, &member, &volume, nowhere).await?.assert_fault(400, "badRequest", "no other node can take it");

    let moved =
        retype(&api, &member, &volume, r#"{"os-retype": {"new_type": "far", "migration_policy": "on-demand"}}"#)
            .await?;
    ensure!(moved.status == StatusCode::ACCEPTED, "{:?}", moved.body);
    let shown = member.wait_for(&api, &format!("/volumes/{volume}"), "volume", "available").await?;
    ensure!(shown["volume_type"] == "far" && shown["availability_zone"] == "far", "{shown:?}");
    let as_admin = admin.call(&api, Method::GET, &format!("/volumes/{volume}"), "3.0", None).await?;
    let host = as_admin.body["volume"]["os-vol-host-attr:host"].as_str().unwrap_or_default();
    ensure!(host.starts_with("node-1@"), "the volume is on {host}");
    ensure!(
        as_admin.body["volume"]["migration_status"] == "success"
            && as_admin.body["volume"]["os-vol-mig-status-attr:migstat"] == "success",
        "{:?}",
        as_admin.body
    );
    ensure!(shown.get("migration_status").is_none(), "a member sees the migration status: {shown:?}");
    // An admin resets it, to one of Cinder's names; `none` clears it.
    let action = format!("/volumes/{volume}/action");
    let unknown = r#"{"os-reset_status": {"migration_status": "moved"}}"#;
    let refused = admin.call(&api, Method::POST, &action, "3.0", Some(unknown)).await?;
    refused.assert_fault(400, "badRequest", "use one of migrating, error, success, completing, starting, none");
    let empty = admin.call(&api, Method::POST, &action, "3.0", Some(r#"{"os-reset_status": {}}"#)).await?;
    empty.assert_fault(400, "badRequest", "needs status, attach_status or migration_status");
    for (reset, shown) in [("error", serde_json::json!("error")), ("none", serde_json::Value::Null)] {
        let body = format!(r#"{{"os-reset_status": {{"migration_status": "{reset}"}}}}"#);
        let done = admin.call(&api, Method::POST, &action, "3.0", Some(&body)).await?;
        ensure!(done.status == StatusCode::ACCEPTED, "{:?}", done.body);
        let after = admin.call(&api, Method::GET, &format!("/volumes/{volume}"), "3.0", None).await?;
        ensure!(after.body["volume"]["migration_status"] == shown, "reset to {reset}: {:?}", after.body);
        ensure!(after.body["volume"]["status"] == "available", "the status stayed: {:?}", after.body);
    }
    ensure!(read_at(&new_file, MIB, head.len())? == head, "the moved volume's bytes differ");
    ensure!(read_at(&new_file, 1023 * MIB, tail.len())? == tail, "the moved volume's last bytes differ");
    eventually("the old copy is wiped and removed", || {
        let gone = !old_file.exists();
        async move { Ok(gone) }
    })
    .await?;
    ensure!(in_use(&api, &admin, "volumes_far").await? == 1 && in_use(&api, &admin, "gigabytes_far").await? == 1);
    ensure!(in_use(&api, &admin, "volumes___DEFAULT__").await? == 0, "the old type's quota went back");
    let backups = member.call(&api, Method::GET, "/backups", "3.0", None).await?;
    ensure!(backups.body["backups"].as_array().is_some_and(Vec::is_empty), "a transit copy shows: {:?}", backups.body);

    // Attached, it stays where it is.
    let created = member.call(&api, Method::POST, "/volumes", "3.0", Some(&made("attached"))).await?;
    let attached = created.body["volume"]["id"].as_str().context("a volume id")?.to_owned();
    member.wait_for(&api, &format!("/volumes/{attached}"), "volume", "available").await?;
    let action = format!("/volumes/{attached}/action");
    for body in [
        r#"{"os-reserve": {}}"#,
        r#"{"os-attach": {"instance_uuid": "11111111-2222-3333-4444-555555555555", "mountpoint": "/dev/vdb"}}"#,
    ] {
        let reply = member.call(&api, Method::POST, &action, "3.0", Some(body)).await?;
        ensure!(reply.status == StatusCode::ACCEPTED, "{body}: {:?}", reply.body);
    }
    member.wait_for(&api, &format!("/volumes/{attached}"), "volume", "in-use").await?;
    let refused =
        retype(&api, &member, &attached, r#"{"os-retype": {"new_type": "far", "migration_policy": "on-demand"}}"#)
            .await?;
    refused.assert_fault(400, "badRequest", "only while detached");
    ensure!(mesh.node_dir("node-0").join(format!("volume-{attached}")).exists());

    // An admin moves a volume, its type kept, to a pool that satisfies it (os-migrate_volume).
    let created = member.call(&api, Method::POST, "/volumes", "3.0", Some(&made("migrated"))).await?;
    let migrated = created.body["volume"]["id"].as_str().context("a volume id")?.to_owned();
    member.wait_for(&api, &format!("/volumes/{migrated}"), "volume", "available").await?;
    let marker = random_bytes(11, MIB as usize);
    write_at(&mesh.node_dir("node-0").join(format!("volume-{migrated}")), 5 * MIB, &marker)?;
    let action = format!("/volumes/{migrated}/action");
    let to_far = r#"{"os-migrate_volume": {"host": "node-1@file#default", "force_host_copy": false}}"#;
    let refused = member.call(&api, Method::POST, &action, "3.0", Some(to_far)).await?;
    ensure!(refused.status == StatusCode::FORBIDDEN, "a member migrated a volume: {:?}", refused.body);
    let here = r#"{"os-migrate_volume": {"host": "node-0@file#default"}}"#;
    admin.call(&api, Method::POST, &action, "3.0", Some(here)).await?.assert_fault(400, "badRequest", "already");
    let unknown = r#"{"os-migrate_volume": {"host": "node-9@file#default"}}"#;
    admin.call(&api, Method::POST, &action, "3.0", Some(unknown)).await?.assert_fault(
        400,
        "badRequest",
        "no reporting pool",
    );
    let started = admin.call(&api, Method::POST, &action, "3.0", Some(to_far)).await?;
    ensure!(started.status == StatusCode::ACCEPTED, "{:?}", started.body);
    let shown = member.wait_for(&api, &format!("/volumes/{migrated}"), "volume", "available").await?;
    ensure!(shown["volume_type"] == "__DEFAULT__" && shown["availability_zone"] == "far", "{shown:?}");
    let moved_file = mesh.node_dir("node-1").join(format!("volume-{migrated}"));
    ensure!(read_at(&moved_file, 5 * MIB, marker.len())? == marker, "the migrated volume's bytes differ");
    let stale = mesh.node_dir("node-0").join(format!("volume-{migrated}"));
    eventually("the migrated volume's old copy is removed", || {
        let gone = !stale.exists();
        async move { Ok(gone) }
    })
    .await?;
    ensure!(in_use(&api, &admin, "volumes___DEFAULT__").await? == 2, "an admin's migration keeps the type's quota");

    // The moved volume is an ordinary volume of its new node: it goes like any other.
    ensure!(member.call(&api, Method::DELETE, &format!("/volumes/{volume}"), "3.0", None).await?.status == 202);
    eventually("the moved volume is deleted", || {
        let gone = !new_file.exists();
        async move { Ok(gone) }
    })
    .await?;
    mesh.shutdown().await;
    Ok(())
}
