//! Manage and unmanage over REST, as an operator drives them: an object a pool already holds is
//! adopted as a volume with its bytes (and counted against the project's quota), a volume is
//! released without touching its bytes and adopted again; links, names outside the pool and
//! volumes still in use are refused, and only admins may do any of it.

use anyhow::{Context, Result, ensure};
use axum::http::{Method, StatusCode};
use basalt_integration::*;
use serde_json::Value;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const HOST: &str = "node-0@file#default";

/// `POST /os-volume-manage` of `source` on the test host, named `name`.
async fn manage(api: &RestApi, caller: &RestCaller, source: &str, name: &str) -> Result<RestReply> {
    let body = format!(r#"{{"volume": {{"host": "{HOST}", "ref": {{"source-name": "{source}"}}, "name": "{name}"}}}}"#);
    caller.call(api, Method::POST, "/os-volume-manage", "3.0", Some(&body)).await
}

async fn manageable(api: &RestApi, caller: &RestCaller, path: &str) -> Result<Vec<Value>> {
    let reply = caller.call(api, Method::GET, &format!("{path}?host={HOST}"), "3.8", None).await?;
    ensure!(reply.status == StatusCode::OK, "{path}: {} {:?}", reply.status, reply.body);
    reply.body["manageable-volumes"].as_array().cloned().context("a manageable-volumes array")
}

fn entry<'a>(listed: &'a [Value], name: &str) -> Option<&'a Value> {
    listed.iter().find(|entry| entry["reference"]["source-name"] == name)
}

async fn in_use(api: &RestApi, admin: &RestCaller) -> Result<Vec<i64>> {
    let reply = admin.call(api, Method::GET, &format!("/os-quota-sets/{PROJECT}?usage=true"), "3.0", None).await?;
    ["volumes", "gigabytes"]
        .iter()
        .map(|key| reply.body["quota_set"][key]["in_use"].as_i64().with_context(|| format!("{key}: {:?}", reply.body)))
        .collect()
}

#[tokio::test]
async fn an_object_in_the_pool_becomes_a_volume_and_goes_back_with_its_bytes() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let admin = RestCaller::new(PROJECT, "admin");
    let member = RestCaller::new(PROJECT, "alice");
    let pool_dir = mesh.node_dir("node-0");
    let bytes = pattern(61, 3 << 20);
    std::fs::write(pool_dir.join("legacy-disk"), &bytes)?;
    std::os::unix::fs::symlink("/etc/hostname", pool_dir.join("evil"))?;
    let created =
        admin.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1, "name": "ours"}}"#)).await?;
    let ours = created.body["volume"]["id"].as_str().context("a volume id")?.to_owned();
    admin.wait_for(&api, &format!("/volumes/{ours}"), "volume", "available").await?;

    // The listing: admin only, from 3.8, in Cinder's two shapes.
    let early = admin.call(&api, Method::GET, &format!("/manageable_volumes?host={HOST}"), "3.7", None).await?;
    ensure!(early.status == StatusCode::NOT_FOUND, "manageable_volumes below 3.8: {:?}", early.body);
    let refused = member.call(&api, Method::GET, &format!("/manageable_volumes?host={HOST}"), "3.8", None).await?;
    ensure!(refused.status == StatusCode::FORBIDDEN, "a member lists manageable volumes: {:?}", refused.body);
    let listed = manageable(&api, &admin, "/manageable_volumes").await?;
    let legacy = entry(&listed, "legacy-disk").context("legacy-disk is listed")?;
    ensure!(sorted_keys(legacy) == ["reference", "safe_to_manage", "size"], "{legacy:?}");
    ensure!(legacy["size"] == 1 && legacy["safe_to_manage"] == true, "{legacy:?}");
    let detailed = manageable(&api, &admin, "/manageable_volumes/detail").await?;
    let mine = entry(&detailed, &format!("volume-{ours}")).context("our own volume is listed")?;
    ensure!(
        sorted_keys(mine) == ["cinder_id", "extra_info", "reason_not_safe", "reference", "safe_to_manage", "size"],
        "{mine:?}"
    );
    ensure!(mine["safe_to_manage"] == false && mine["cinder_id"] == ours.as_str(), "{mine:?}");
    ensure!(mine["reason_not_safe"] == "already managed", "{mine:?}");
    let evil = entry(&detailed, "evil").context("the link is listed, as unsafe")?;
    ensure!(evil["safe_to_manage"] == false, "{evil:?}");
    let legacy_path = manageable(&api, &admin, "/os-volume-manage").await?;
    ensure!(entry(&legacy_path, "legacy-disk").is_some(), "the legacy path lists the same: {legacy_path:?}");

    // Refusals: a member, a link, a name outside the pool, a volume already managed.
    ensure!(manage(&api, &member, "legacy-disk", "x").await?.status == StatusCode::FORBIDDEN);
    manage(&api, &admin, "evil", "x").await?.assert_fault(400, "badRequest", "symbolic link");
    manage(&api, &admin, "../../etc/passwd", "x").await?.assert_fault(404, "itemNotFound", "is not in pool");
    let ours_name = format!("volume-{ours}");
    manage(&api, &admin, &ours_name, "x").await?.assert_fault(400, "badRequest", "already managed");
    ensure!(std::fs::read_to_string("/etc/hostname").is_ok(), "nothing of the host was touched");

    // Adopted: the bytes under the volume's name, the size rounded up to a GiB, quota counted.
    let before = in_use(&api, &admin).await?;
    let managed = manage(&api, &admin, "legacy-disk", "adopted").await?;
    ensure!(managed.status == StatusCode::ACCEPTED, "{:?}", managed.body);
    let adopted = managed.body["volume"]["id"].as_str().context("the adopted volume's id")?.to_owned();
    let shown = admin.wait_for(&api, &format!("/volumes/{adopted}"), "volume", "available").await?;
    ensure!(shown["size"] == 1 && shown["name"] == "adopted", "{shown:?}");
    let file = pool_dir.join(format!("volume-{adopted}"));
    ensure!(read_at(&file, 0, bytes.len())? == bytes, "the adopted volume holds the object's bytes");
    ensure!(std::fs::metadata(&file)?.len() == 1 << 30, "the file grew to the volume's size");
    ensure!(!pool_dir.join("legacy-disk").exists(), "the object lives under the volume's name only");
    ensure!(in_use(&api, &admin).await? == [before[0] + 1, before[1] + 1], "the quota counts the adopted volume");

    // Released: a member may not; with a snapshot it may not; then the row goes and the bytes stay.
    let unmanage = r#"{"os-unmanage": null}"#;
    let action = format!("/volumes/{adopted}/action");
    ensure!(member.call(&api, Method::POST, &action, "3.0", Some(unmanage)).await?.status == StatusCode::FORBIDDEN);
    let snapshot = admin
        .call(
            &api,
            Method::POST,
            "/snapshots",
            "3.0",
            Some(&format!(r#"{{"snapshot": {{"volume_id": "{adopted}"}}}}"#)),
        )
        .await?;
    let snapshot_id = snapshot.body["snapshot"]["id"].as_str().context("a snapshot id")?.to_owned();
    admin.wait_for(&api, &format!("/snapshots/{snapshot_id}"), "snapshot", "available").await?;
    admin.call(&api, Method::POST, &action, "3.0", Some(unmanage)).await?.assert_fault(400, "badRequest", "snapshots");
    admin.call(&api, Method::DELETE, &format!("/snapshots/{snapshot_id}"), "3.0", None).await?;
    eventually("the snapshot is deleted", || async {
        Ok(admin.call(&api, Method::GET, &format!("/snapshots/{snapshot_id}"), "3.0", None).await?.status == 404)
    })
    .await?;
    let released = admin.call(&api, Method::POST, &action, "3.0", Some(unmanage)).await?;
    ensure!(released.status == StatusCode::ACCEPTED, "{:?}", released.body);
    let gone = admin.call(&api, Method::GET, &format!("/volumes/{adopted}"), "3.0", None).await?;
    ensure!(gone.status == StatusCode::NOT_FOUND, "an unmanaged volume is still shown: {:?}", gone.body);
    ensure!(read_at(&file, 0, bytes.len())? == bytes, "unmanaging left the bytes alone");
    ensure!(in_use(&api, &admin).await? == before, "the quota is given back");

    // And adopted again, by the name it was left under.
    let listed = manageable(&api, &admin, "/manageable_volumes").await?;
    let left = entry(&listed, &format!("volume-{adopted}")).context("the released volume is manageable")?;
    ensure!(left["safe_to_manage"] == true, "{left:?}");
    let again = manage(&api, &admin, &format!("volume-{adopted}"), "again").await?;
    let readopted = again.body["volume"]["id"].as_str().context("the readopted volume's id")?.to_owned();
    admin.wait_for(&api, &format!("/volumes/{readopted}"), "volume", "available").await?;
    ensure!(read_at(&pool_dir.join(format!("volume-{readopted}")), 0, bytes.len())? == bytes);
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_snapshot_is_released_and_adopted_again_as_its_volume_s() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let admin = RestCaller::new(PROJECT, "admin");
    let member = RestCaller::new(PROJECT, "alice");
    let pool_dir = mesh.node_dir("node-0");
    let volume = admin.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1}}"#)).await?;
    let volume = volume.body["volume"]["id"].as_str().context("a volume id")?.to_owned();
    admin.wait_for(&api, &format!("/volumes/{volume}"), "volume", "available").await?;
    let bytes = pattern(62, 1 << 20);
    write_at(&pool_dir.join(format!("volume-{volume}")), 0, &bytes)?;
    let body = format!(r#"{{"snapshot": {{"volume_id": "{volume}"}}}}"#);
    let snapshot = admin.call(&api, Method::POST, "/snapshots", "3.0", Some(&body)).await?;
    let snapshot = snapshot.body["snapshot"]["id"].as_str().context("a snapshot id")?.to_owned();
    admin.wait_for(&api, &format!("/snapshots/{snapshot}"), "snapshot", "available").await?;

    // Listed as already managed, then released: the row goes, the bytes stay.
    let list = |path: &'static str| {
        let (api, admin) = (&api, &admin);
        async move {
            let reply = admin.call(api, Method::GET, &format!("{path}?host={HOST}"), "3.8", None).await?;
            ensure!(reply.status == StatusCode::OK, "{path}: {:?}", reply.body);
            reply.body["manageable-snapshots"].as_array().cloned().context("manageable-snapshots")
        }
    };
    let name = format!("snapshot-{snapshot}");
    let listed = list("/manageable_snapshots/detail").await?;
    let detailed = entry(&listed, &name).context("the snapshot is listed")?;
    ensure!(
        sorted_keys(detailed)
            == [
                "cinder_id",
                "extra_info",
                "reason_not_safe",
                "reference",
                "safe_to_manage",
                "size",
                "source_reference"
            ],
        "{detailed:?}"
    );
    ensure!(detailed["cinder_id"] == snapshot.as_str() && detailed["safe_to_manage"] == false, "{detailed:?}");
    let summary = list("/manageable_snapshots").await?;
    let brief = entry(&summary, &name).context("the summary lists it")?;
    ensure!(sorted_keys(brief) == ["reference", "safe_to_manage", "size", "source_reference"], "{brief:?}");
    let action = format!("/snapshots/{snapshot}/action");
    let unmanage = r#"{"os-unmanage": null}"#;
    ensure!(member.call(&api, Method::POST, &action, "3.0", Some(unmanage)).await?.status == StatusCode::FORBIDDEN);
    let released = admin.call(&api, Method::POST, &action, "3.0", Some(unmanage)).await?;
    ensure!(released.status == StatusCode::ACCEPTED, "{:?}", released.body);
    ensure!(admin.call(&api, Method::GET, &format!("/snapshots/{snapshot}"), "3.0", None).await?.status == 404);
    ensure!(pool_dir.join(&name).exists(), "unmanaging left the snapshot's bytes");

    // Adopted again as the volume's snapshot; reverting to it gives its bytes.
    let adopt =
        format!(r#"{{"snapshot": {{"volume_id": "{volume}", "ref": {{"source-name": "{name}"}}, "name": "again"}}}}"#);
    ensure!(member.call(&api, Method::POST, "/os-snapshot-manage", "3.0", Some(&adopt)).await?.status == 403);
    let adopted = admin.call(&api, Method::POST, "/os-snapshot-manage", "3.0", Some(&adopt)).await?;
    ensure!(adopted.status == StatusCode::ACCEPTED, "{:?}", adopted.body);
    let adopted = adopted.body["snapshot"]["id"].as_str().context("the adopted snapshot's id")?.to_owned();
    admin.wait_for(&api, &format!("/snapshots/{adopted}"), "snapshot", "available").await?;
    write_at(&pool_dir.join(format!("volume-{volume}")), 0, &pattern(63, 1 << 20))?;
    let revert = format!(r#"{{"revert": {{"snapshot_id": "{adopted}"}}}}"#);
    let reverted = admin.call(&api, Method::POST, &format!("/volumes/{volume}/action"), "3.40", Some(&revert)).await?;
    ensure!(reverted.status == StatusCode::ACCEPTED, "{:?}", reverted.body);
    admin.wait_for(&api, &format!("/volumes/{volume}"), "volume", "available").await?;
    ensure!(read_at(&pool_dir.join(format!("volume-{volume}")), 0, bytes.len())? == bytes, "reverted to its bytes");
    let missing = format!(r#"{{"snapshot": {{"volume_id": "{volume}", "ref": {{"source-name": "snapshot-nope"}}}}}}"#);
    let refused = admin.call(&api, Method::POST, "/manageable_snapshots", "3.8", Some(&missing)).await?;
    refused.assert_fault(404, "itemNotFound", "is not in pool");
    mesh.shutdown().await;
    Ok(())
}
