//! Volume transfers over REST, as Cinder's clients drive them: a project offers a volume with its
//! snapshots, another takes it with the key; the volume, its snapshots and both projects' quota
//! usage move together, and every refusal leaves everything where it was.

use anyhow::{Context, Result, ensure};
use axum::http::{Method, StatusCode};
use basalt_integration::*;
use serde_json::json;

const DONOR: &str = "0123456789abcdef0123456789abcdef";
const RECEIVER: &str = "fedcba9876543210fedcba9876543210";

/// `in_use` of each of `resources` in `project`'s quota set, as `caller` sees it.
async fn usage(api: &RestApi, caller: &RestCaller, project: &str, resources: &[&str]) -> Result<Vec<i64>> {
    let reply = caller.call(api, Method::GET, &format!("/os-quota-sets/{project}?usage=true"), "3.0", None).await?;
    resources
        .iter()
        .map(|resource| {
            reply.body["quota_set"][resource]["in_use"]
                .as_i64()
                .with_context(|| format!("{resource} in {:?}", reply.body))
        })
        .collect()
}

#[tokio::test]
async fn a_volume_and_its_snapshots_change_project_with_the_key_and_quotas_follow() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let donor = RestCaller::new(DONOR, "alice");
    let receiver = RestCaller::new(RECEIVER, "bob");
    let admin = RestCaller::new(DONOR, "admin");

    let created =
        donor.call(&api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1, "name": "moving"}}"#)).await?;
    let volume_id = created.body["volume"]["id"].as_str().context("a volume id")?.to_owned();
    donor.wait_for(&api, &format!("/volumes/{volume_id}"), "volume", "available").await?;
    let snapshot_body = format!(r#"{{"snapshot": {{"volume_id": "{volume_id}", "name": "with-it"}}}}"#);
    let snapshot = donor.call(&api, Method::POST, "/snapshots", "3.0", Some(&snapshot_body)).await?;
    let snapshot_id = snapshot.body["snapshot"]["id"].as_str().context("a snapshot id")?.to_owned();
    donor.wait_for(&api, &format!("/snapshots/{snapshot_id}"), "snapshot", "available").await?;
    let counted = ["volumes", "snapshots", "gigabytes"];
    ensure!(usage(&api, &admin, DONOR, &counted).await? == [1, 1, 2]);

    // Offering: not without its snapshots, not below 3.55 on the new path.
    let offer = format!(r#"{{"transfer": {{"volume_id": "{volume_id}", "name": "to bob"}}}}"#);
    let early = donor.call(&api, Method::POST, "/volume-transfers", "3.54", Some(&offer)).await?;
    ensure!(early.status == StatusCode::NOT_FOUND, "volume-transfers answered below 3.55: {:?}", early.body);
    let alone = format!(r#"{{"transfer": {{"volume_id": "{volume_id}", "no_snapshots": true}}}}"#);
    donor.call(&api, Method::POST, "/volume-transfers", "3.55", Some(&alone)).await?.assert_fault(
        400,
        "badRequest",
        "has 1 snapshots",
    );

    // An offer made and withdrawn on the legacy path leaves the volume available again.
    let withdrawn = donor.call(&api, Method::POST, "/os-volume-transfer", "3.0", Some(&offer)).await?;
    ensure!(withdrawn.status == StatusCode::ACCEPTED, "{:?}", withdrawn.body);
    ensure!(sorted_keys(&withdrawn.body["transfer"]) == ["auth_key", "created_at", "id", "links", "name", "volume_id"]);
    let withdrawn_id = withdrawn.body["transfer"]["id"].as_str().context("a transfer id")?;
    let shown = donor.call(&api, Method::GET, &format!("/volumes/{volume_id}"), "3.0", None).await?;
    ensure!(shown.body["volume"]["status"] == "awaiting-transfer", "{:?}", shown.body);
    let deleted = donor.call(&api, Method::DELETE, &format!("/os-volume-transfer/{withdrawn_id}"), "3.0", None).await?;
    ensure!(deleted.status == StatusCode::ACCEPTED, "{:?}", deleted.body);
    donor.wait_for(&api, &format!("/volumes/{volume_id}"), "volume", "available").await?;

    // The offer at 3.57 shows the history fields; only the donor sees it.
    let unnamed = format!(r#"{{"transfer": {{"volume_id": "{volume_id}"}}}}"#);
    let made = donor.call(&api, Method::POST, "/volume-transfers", "3.57", Some(&unnamed)).await?;
    ensure!(made.status == StatusCode::ACCEPTED, "{:?}", made.body);
    let transfer = &made.body["transfer"];
    ensure!(
        sorted_keys(transfer)
            == [
                "accepted",
                "auth_key",
                "created_at",
                "destination_project_id",
                "id",
                "links",
                "name",
                "no_snapshots",
                "source_project_id",
                "volume_id"
            ],
        "{transfer:?}"
    );
    ensure!(transfer["source_project_id"] == DONOR && transfer["destination_project_id"].is_null());
    ensure!(transfer["name"].is_null(), "a transfer without a name shows null, as Cinder's: {transfer:?}");
    let transfer_id = transfer["id"].as_str().context("a transfer id")?.to_owned();
    let auth_key = transfer["auth_key"].as_str().context("an auth key")?.to_owned();
    let detail = donor.call(&api, Method::GET, "/volume-transfers/detail", "3.55", None).await?;
    let listed = detail.body["transfers"].as_array().cloned().unwrap_or_default();
    ensure!(
        listed.len() == 1
            && sorted_keys(&listed[0]) == ["created_at", "id", "links", "name", "no_snapshots", "volume_id"]
    );
    ensure!(listed[0].get("auth_key").is_none(), "the key is shown once, at creation");
    let summaries = donor.call(&api, Method::GET, "/os-volume-transfer", "3.0", None).await?;
    ensure!(sorted_keys(&summaries.body["transfers"][0]) == ["id", "links", "name", "volume_id"]);
    let hidden = receiver.call(&api, Method::GET, &format!("/volume-transfers/{transfer_id}"), "3.55", None).await?;
    ensure!(hidden.status == StatusCode::NOT_FOUND, "another project sees the offer: {:?}", hidden.body);
    let theirs = receiver.call(&api, Method::GET, "/volume-transfers", "3.55", None).await?;
    ensure!(theirs.body == json!({"transfers": []}), "{:?}", theirs.body);

    // A wrong key, or a receiver without the quota, takes nothing.
    let accept_path = format!("/volume-transfers/{transfer_id}/accept");
    let wrong = receiver
        .call(&api, Method::POST, &accept_path, "3.55", Some(r#"{"accept": {"auth_key": "0000000000000000"}}"#))
        .await?;
    wrong.assert_fault(400, "badRequest", "invalid auth key");
    let limit = r#"{"quota_set": {"volumes": 0}}"#;
    let limited = admin.call(&api, Method::PUT, &format!("/os-quota-sets/{RECEIVER}"), "3.0", Some(limit)).await?;
    ensure!(limited.status == StatusCode::OK, "{:?}", limited.body);
    let accept = format!(r#"{{"accept": {{"auth_key": "{auth_key}"}}}}"#);
    let over = receiver.call(&api, Method::POST, &accept_path, "3.55", Some(&accept)).await?;
    ensure!(over.status == StatusCode::PAYLOAD_TOO_LARGE, "accept over quota: {:?}", over.body);
    let still = donor.call(&api, Method::GET, &format!("/volumes/{volume_id}"), "3.0", None).await?;
    ensure!(still.body["volume"]["status"] == "awaiting-transfer", "{:?}", still.body);
    ensure!(usage(&api, &admin, DONOR, &counted).await? == [1, 1, 2]);
    ensure!(usage(&api, &admin, RECEIVER, &counted).await? == [0, 0, 0]);
    let lifted = r#"{"quota_set": {"volumes": 10}}"#;
    admin.call(&api, Method::PUT, &format!("/os-quota-sets/{RECEIVER}"), "3.0", Some(lifted)).await?;

    // Accepted: the volume and its snapshot are the receiver's, and so is their quota usage.
    let accepted = receiver.call(&api, Method::POST, &accept_path, "3.55", Some(&accept)).await?;
    ensure!(accepted.status == StatusCode::ACCEPTED, "{:?}", accepted.body);
    ensure!(sorted_keys(&accepted.body["transfer"]) == ["id", "links", "name", "volume_id"], "{:?}", accepted.body);
    let moved = receiver.call(&api, Method::GET, &format!("/volumes/{volume_id}"), "3.0", None).await?;
    ensure!(moved.body["volume"]["status"] == "available", "{:?}", moved.body);
    let moved_snapshot = receiver.call(&api, Method::GET, &format!("/snapshots/{snapshot_id}"), "3.0", None).await?;
    ensure!(moved_snapshot.status == StatusCode::OK, "the snapshot stayed behind: {:?}", moved_snapshot.body);
    for path in [format!("/volumes/{volume_id}"), format!("/snapshots/{snapshot_id}")] {
        let gone = donor.call(&api, Method::GET, &path, "3.0", None).await?;
        ensure!(gone.status == StatusCode::NOT_FOUND, "the donor still sees {path}: {:?}", gone.body);
    }
    ensure!(usage(&api, &admin, DONOR, &counted).await? == [0, 0, 0]);
    ensure!(usage(&api, &admin, RECEIVER, &counted).await? == [1, 1, 2]);
    let done = donor.call(&api, Method::GET, "/volume-transfers", "3.55", None).await?;
    ensure!(done.body == json!({"transfers": []}), "an accepted transfer is still listed: {:?}", done.body);
    let again = receiver.call(&api, Method::POST, &accept_path, "3.55", Some(&accept)).await?;
    ensure!(again.status == StatusCode::NOT_FOUND, "a transfer was accepted twice: {:?}", again.body);
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_offer_never_outlives_its_volume_nor_blocks_it() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let admin = RestCaller::new(DONOR, "admin");
    let mut offers = Vec::new();
    for name in ["forced", "reset"] {
        let body = format!(r#"{{"volume": {{"size": 1, "name": "{name}"}}}}"#);
        let created = admin.call(&api, Method::POST, "/volumes", "3.0", Some(&body)).await?;
        let volume_id = created.body["volume"]["id"].as_str().context("a volume id")?.to_owned();
        admin.wait_for(&api, &format!("/volumes/{volume_id}"), "volume", "available").await?;
        let offer = format!(r#"{{"transfer": {{"volume_id": "{volume_id}"}}}}"#);
        let made = admin.call(&api, Method::POST, "/os-volume-transfer", "3.0", Some(&offer)).await?;
        offers.push((volume_id, made.body["transfer"]["id"].as_str().context("a transfer id")?.to_owned()));
    }
    let listed = |reply: &RestReply| reply.body["transfers"].as_array().map(Vec::len).unwrap_or_default();

    // An offered volume cannot be deleted, but an admin's force delete takes its offer with it.
    let (forced, _) = &offers[0];
    let delete = admin.call(&api, Method::DELETE, &format!("/volumes/{forced}"), "3.0", None).await?;
    ensure!(delete.status == StatusCode::BAD_REQUEST || delete.status == StatusCode::CONFLICT, "{:?}", delete.body);
    let force = admin
        .call(&api, Method::POST, &format!("/volumes/{forced}/action"), "3.0", Some(r#"{"os-force_delete": null}"#))
        .await?;
    ensure!(force.status == StatusCode::ACCEPTED, "{:?}", force.body);
    let remaining = admin.call(&api, Method::GET, "/os-volume-transfer", "3.0", None).await?;
    ensure!(listed(&remaining) == 1, "the force-deleted volume's offer is still listed: {:?}", remaining.body);

    // A volume an admin reset out of awaiting-transfer: its offer can still be withdrawn.
    let (reset, offer) = &offers[1];
    let body = r#"{"os-reset_status": {"status": "available"}}"#;
    let reply = admin.call(&api, Method::POST, &format!("/volumes/{reset}/action"), "3.0", Some(body)).await?;
    ensure!(reply.status == StatusCode::ACCEPTED, "{:?}", reply.body);
    let withdrawn = admin.call(&api, Method::DELETE, &format!("/os-volume-transfer/{offer}"), "3.0", None).await?;
    ensure!(withdrawn.status == StatusCode::ACCEPTED, "{:?}", withdrawn.body);
    let remaining = admin.call(&api, Method::GET, "/os-volume-transfer", "3.0", None).await?;
    ensure!(listed(&remaining) == 0, "{:?}", remaining.body);
    mesh.shutdown().await;
    Ok(())
}
