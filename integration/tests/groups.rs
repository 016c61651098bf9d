//! Generic groups over REST, as Cinder's clients drive them: group types with their specs, groups
//! placed on a pool that satisfies every volume type they allow, volumes made in a group or added
//! and removed, and a group deleted with its volumes; each response in Cinder's shape at the
//! microversions that change it.

use anyhow::{Context, Result, ensure};
use axum::http::{Method, StatusCode};
use basalt_integration::*;
use serde_json::Value;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const OTHER: &str = "fedcba9876543210fedcba9876543210";

async fn usage(api: &RestApi, admin: &RestCaller, resource: &str) -> Result<i64> {
    let reply = admin.call(api, Method::GET, &format!("/os-quota-sets/{PROJECT}?usage=true"), "3.0", None).await?;
    reply.body["quota_set"][resource]["in_use"].as_i64().with_context(|| format!("{resource}: {:?}", reply.body))
}

async fn volume(api: &RestApi, caller: &RestCaller, version: &str, body: &str) -> Result<String> {
    let created = caller.call(api, Method::POST, "/volumes", version, Some(body)).await?;
    ensure!(created.status == StatusCode::ACCEPTED, "{:?}", created.body);
    let id = created.body["volume"]["id"].as_str().context("a volume id")?.to_owned();
    caller.wait_for(api, &format!("/volumes/{id}"), "volume", "available").await?;
    Ok(id)
}

#[tokio::test]
async fn group_types_carry_specs_and_only_admins_change_them() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let admin = RestCaller::new(PROJECT, "admin");
    let member = RestCaller::new(PROJECT, "alice");

    let early = member.call(&api, Method::GET, "/group_types", "3.10", None).await?;
    ensure!(early.status == StatusCode::NOT_FOUND, "group types below 3.11: {:?}", early.body);
    let default = member.call(&api, Method::GET, "/group_types/default", "3.11", None).await?;
    ensure!(default.body["group_type"]["name"] == "default_group_type", "{:?}", default.body);
    ensure!(
        sorted_keys(&default.body["group_type"]) == ["description", "id", "is_public", "name"],
        "{:?}",
        default.body
    );

    let body =
        r#"{"group_type": {"name": "consistent", "group_specs": {"consistent_group_snapshot_enabled": "<is> True"}}}"#;
    let refused = member.call(&api, Method::POST, "/group_types", "3.11", Some(body)).await?;
    ensure!(refused.status == StatusCode::FORBIDDEN, "a member made a group type: {:?}", refused.body);
    let created = admin.call(&api, Method::POST, "/group_types", "3.11", Some(body)).await?;
    ensure!(created.status == StatusCode::ACCEPTED, "{:?}", created.body);
    let group_type = &created.body["group_type"];
    ensure!(sorted_keys(group_type) == ["description", "group_specs", "id", "is_public", "name"], "{group_type:?}");
    let id = group_type["id"].as_str().context("a group type id")?.to_owned();
    let specs = format!("/group_types/{id}/group_specs");

    let set = admin.call(&api, Method::POST, &specs, "3.11", Some(r#"{"group_specs": {"tier": "gold"}}"#)).await?;
    ensure!(set.status == StatusCode::ACCEPTED && set.body == serde_json::json!({"group_specs": {"tier": "gold"}}));
    let shown = admin.call(&api, Method::GET, &specs, "3.11", None).await?;
    ensure!(
        shown.body["group_specs"]["tier"] == "gold"
            && shown.body["group_specs"]["consistent_group_snapshot_enabled"] == "<is> True"
    );
    let one = admin.call(&api, Method::PUT, &format!("{specs}/tier"), "3.11", Some(r#"{"tier": "silver"}"#)).await?;
    ensure!(one.status == StatusCode::ACCEPTED && one.body["tier"] == "silver", "{:?}", one.body);
    let gone = admin.call(&api, Method::DELETE, &format!("{specs}/tier"), "3.11", None).await?;
    ensure!(gone.status == StatusCode::ACCEPTED);
    let missing = admin.call(&api, Method::GET, &format!("{specs}/tier"), "3.11", None).await?;
    ensure!(missing.status == StatusCode::NOT_FOUND, "{:?}", missing.body);
    ensure!(
        member.call(&api, Method::POST, &specs, "3.11", Some(r#"{"group_specs": {"a": "b"}}"#)).await?.status == 403
    );

    // A member sees public types without their specs; a private type not at all.
    let as_member = member.call(&api, Method::GET, &format!("/group_types/{id}"), "3.11", None).await?;
    ensure!(as_member.body["group_type"].get("group_specs").is_none(), "{:?}", as_member.body);
    let private = admin
        .call(&api, Method::PUT, &format!("/group_types/{id}"), "3.11", Some(r#"{"group_type": {"is_public": false}}"#))
        .await?;
    ensure!(private.status == StatusCode::OK && private.body["group_type"]["is_public"] == false, "{:?}", private.body);
    let hidden = member.call(&api, Method::GET, &format!("/group_types/{id}"), "3.11", None).await?;
    ensure!(hidden.status == StatusCode::NOT_FOUND, "a member sees a private group type: {:?}", hidden.body);
    let listed = member.call(&api, Method::GET, "/group_types", "3.11", None).await?;
    ensure!(!listed.body.to_string().contains(&id), "a member lists a private group type");
    let deleted = admin.call(&api, Method::DELETE, &format!("/group_types/{id}"), "3.11", None).await?;
    ensure!(deleted.status == StatusCode::ACCEPTED, "{:?}", deleted.body);
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_group_keeps_its_volumes_on_one_pool_and_goes_with_them() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let admin = RestCaller::new(PROJECT, "admin");
    let member = RestCaller::new(PROJECT, "alice");
    let stranger = RestCaller::new(OTHER, "bob");
    admin.call(&api, Method::POST, "/types", "3.0", Some(r#"{"volume_type": {"name": "outside"}}"#)).await?;

    let body = r#"{"group": {"name": "g1", "group_type": "default_group_type", "volume_types": ["__DEFAULT__"]}}"#;
    let early = member.call(&api, Method::POST, "/groups", "3.12", Some(body)).await?;
    ensure!(early.status == StatusCode::NOT_FOUND, "groups below 3.13: {:?}", early.body);
    let created = member.call(&api, Method::POST, "/groups", "3.13", Some(body)).await?;
    ensure!(created.status == StatusCode::ACCEPTED, "{:?}", created.body);
    ensure!(sorted_keys(&created.body["group"]) == ["id", "name"], "{:?}", created.body);
    let group = created.body["group"]["id"].as_str().context("a group id")?.to_owned();
    ensure!(usage(&api, &admin, "groups").await? == 1, "the group counts against the quota");

    // The detail view, key by key, at the microversions that change it.
    let path = format!("/groups/{group}");
    let base = ["availability_zone", "created_at", "description", "group_type", "id", "name", "status", "volume_types"];
    for (version, query, added) in [
        ("3.13", "", &[][..]),
        ("3.14", "", &["group_snapshot_id", "source_group_id"][..]),
        ("3.25", "?list_volume=true", &["group_snapshot_id", "source_group_id", "volumes"][..]),
        ("3.38", "", &["group_snapshot_id", "replication_status", "source_group_id"][..]),
        (
            "3.71",
            "?list_volume=True",
            &["group_snapshot_id", "project_id", "replication_status", "source_group_id", "volumes"][..],
        ),
    ] {
        let shown = member.call(&api, Method::GET, &format!("{path}{query}"), version, None).await?;
        let mut expected: Vec<&str> = base.iter().chain(added).copied().collect();
        expected.sort();
        ensure!(sorted_keys(&shown.body["group"]) == expected, "at {version}: {:?}", shown.body);
    }
    let shown = member.call(&api, Method::GET, &path, "3.13", None).await?;
    ensure!(shown.body["group"]["status"] == "available", "{:?}", shown.body);
    let hidden = stranger.call(&api, Method::GET, &path, "3.13", None).await?;
    ensure!(hidden.status == StatusCode::NOT_FOUND, "another project sees the group: {:?}", hidden.body);

    // Volumes made in the group, added to it, refused by it.
    let body = format!(r#"{{"volume": {{"size": 1, "name": "in", "group_id": "{group}"}}}}"#);
    let inside = volume(&api, &member, "3.13", &body).await?;
    let shown = member.call(&api, Method::GET, &format!("/volumes/{inside}"), "3.13", None).await?;
    ensure!(shown.body["volume"]["group_id"] == group.as_str(), "{:?}", shown.body);
    let older = member.call(&api, Method::GET, &format!("/volumes/{inside}"), "3.12", None).await?;
    ensure!(older.body["volume"].get("group_id").is_none(), "group_id before 3.13: {:?}", older.body);
    let offer = format!(r#"{{"transfer": {{"volume_id": "{inside}"}}}}"#);
    let transfer = member.call(&api, Method::POST, "/os-volume-transfer", "3.0", Some(&offer)).await?;
    transfer.assert_fault(400, "badRequest", "remove it from the group");
    let retype = r#"{"os-retype": {"new_type": "outside"}}"#;
    let retyped = member.call(&api, Method::POST, &format!("/volumes/{inside}/action"), "3.13", Some(retype)).await?;
    retyped.assert_fault(400, "badRequest", "remove it from the group");
    let wrong = format!(r#"{{"volume": {{"size": 1, "volume_type": "outside", "group_id": "{group}"}}}}"#);
    let refused = member.call(&api, Method::POST, "/volumes", "3.13", Some(&wrong)).await?;
    refused.assert_fault(400, "badRequest", "does not allow the volume's type");
    let loose = volume(&api, &member, "3.13", r#"{"volume": {"size": 1, "name": "loose"}}"#).await?;
    let add = format!(r#"{{"group": {{"add_volumes": "{loose}", "name": "g1-renamed"}}}}"#);
    let updated = member.call(&api, Method::PUT, &path, "3.13", Some(&add)).await?;
    ensure!(updated.status == StatusCode::ACCEPTED, "{:?}", updated.body);
    let listed = member.call(&api, Method::GET, &format!("{path}?list_volume=true"), "3.25", None).await?;
    let mut members: Vec<&str> =
        listed.body["group"]["volumes"].as_array().context("volumes")?.iter().filter_map(Value::as_str).collect();
    members.sort();
    let mut expected = vec![inside.as_str(), loose.as_str()];
    expected.sort();
    ensure!(members == expected && listed.body["group"]["name"] == "g1-renamed", "{:?}", listed.body);
    let filtered = member.call(&api, Method::GET, &format!("/volumes?group_id={group}"), "3.13", None).await?;
    let mut by_filter: Vec<&str> = filtered.body["volumes"]
        .as_array()
        .context("volumes")?
        .iter()
        .filter_map(|volume| volume["id"].as_str())
        .collect();
    by_filter.sort();
    ensure!(by_filter == expected, "the group_id filter: {:?}", filtered.body);
    let remove = format!(r#"{{"group": {{"remove_volumes": "{loose}"}}}}"#);
    ensure!(member.call(&api, Method::PUT, &path, "3.13", Some(&remove)).await?.status == StatusCode::ACCEPTED);
    let again = member.call(&api, Method::PUT, &path, "3.13", Some(&remove)).await?;
    again.assert_fault(400, "badRequest", "is not in group");

    // Deleted: not while it has volumes unless they go with it; then all of it, quota too.
    let action = format!("{path}/action");
    let keep =
        member.call(&api, Method::POST, &action, "3.13", Some(r#"{"delete": {"delete-volumes": false}}"#)).await?;
    keep.assert_fault(400, "badRequest", "has 1 volumes");
    let file = mesh.node_dir("node-0").join(format!("volume-{inside}"));
    ensure!(file.exists());
    let deleted =
        member.call(&api, Method::POST, &action, "3.13", Some(r#"{"delete": {"delete-volumes": true}}"#)).await?;
    ensure!(deleted.status == StatusCode::ACCEPTED, "{:?}", deleted.body);
    eventually("the group and its volume are gone", || async {
        let group_gone = member.call(&api, Method::GET, &path, "3.13", None).await?.status == 404;
        let volume_gone =
            member.call(&api, Method::GET, &format!("/volumes/{inside}"), "3.13", None).await?.status == 404;
        Ok(group_gone && volume_gone)
    })
    .await?;
    ensure!(!file.exists(), "the group's volume was deleted on its node");
    let kept = member.call(&api, Method::GET, &format!("/volumes/{loose}"), "3.13", None).await?;
    ensure!(kept.status == StatusCode::OK && kept.body["volume"]["group_id"].is_null(), "{:?}", kept.body);
    ensure!(usage(&api, &admin, "groups").await? == 0, "the group's quota is given back");
    mesh.shutdown().await;
    Ok(())
}
