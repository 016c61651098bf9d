//! User messages over REST, as Cinder's clients read them: an operation that fails on its node
//! leaves a message in Cinder's shape and codes, naming the request that started it, for its own
//! project only; it can be filtered, sorted, paged and deleted, and it expires.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::http::{Method, StatusCode};
use basalt_integration::*;
use serde_json::Value;

const OWNER: &str = "0123456789abcdef0123456789abcdef";
const OTHER: &str = "fedcba9876543210fedcba9876543210";

/// The messages a listing at `version` with `query` shows, and the whole body.
async fn messages(api: &RestApi, caller: &RestCaller, version: &str, query: &str) -> Result<(Vec<Value>, Value)> {
    let reply = caller.call(api, Method::GET, &format!("/messages{query}"), version, None).await?;
    ensure!(reply.status == StatusCode::OK, "/messages{query}: {} {:?}", reply.status, reply.body);
    let listed = reply.body["messages"].as_array().cloned().context("a messages array")?;
    Ok((listed, reply.body))
}

/// A volume whose backing file is gone, so the node fails every snapshot of it.
async fn volume_without_its_file(api: &RestApi, mesh: &InProcessMesh, owner: &RestCaller) -> Result<String> {
    let created =
        owner.call(api, Method::POST, "/volumes", "3.0", Some(r#"{"volume": {"size": 1, "name": "lost"}}"#)).await?;
    let volume_id = created.body["volume"]["id"].as_str().context("a volume id")?.to_owned();
    owner.wait_for(api, &format!("/volumes/{volume_id}"), "volume", "available").await?;
    std::fs::remove_file(mesh.node_dir("node-0").join(format!("volume-{volume_id}")))?;
    Ok(volume_id)
}

/// Asks for a snapshot the node cannot take; returns its id and the request's id.
async fn failed_snapshot(api: &RestApi, owner: &RestCaller, volume_id: &str) -> Result<(String, String)> {
    let body = format!(r#"{{"snapshot": {{"volume_id": "{volume_id}"}}}}"#);
    let created = owner.call(api, Method::POST, "/snapshots", "3.0", Some(&body)).await?;
    ensure!(created.status == StatusCode::ACCEPTED, "{:?}", created.body);
    let request_id = created
        .headers
        .get("x-openstack-request-id")
        .and_then(|value| value.to_str().ok())
        .context("a request id")?
        .to_owned();
    let snapshot_id = created.body["snapshot"]["id"].as_str().context("a snapshot id")?.to_owned();
    owner.wait_for(api, &format!("/snapshots/{snapshot_id}"), "snapshot", "error").await?;
    Ok((snapshot_id, request_id))
}

#[tokio::test]
async fn a_failed_operation_leaves_its_project_a_message_in_cinder_s_shape() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let owner = RestCaller::new(OWNER, "alice");
    let other = RestCaller::new(OTHER, "bob");
    let operator = RestCaller::new(OTHER, "admin");

    let volume_id = volume_without_its_file(&api, &mesh, &owner).await?;
    let (first_snapshot, first_request) = failed_snapshot(&api, &owner, &volume_id).await?;

    // Below 3.3 there are no messages; at 3.3 the view is Cinder's, exactly.
    let early = owner.call(&api, Method::GET, "/messages", "3.2", None).await?;
    ensure!(early.status == StatusCode::NOT_FOUND, "/messages answered at 3.2: {:?}", early.body);
    let (listed, _) = messages(&api, &owner, "3.3", "").await?;
    ensure!(listed.len() == 1, "{listed:?}");
    let message = &listed[0];
    ensure!(
        sorted_keys(message)
            == [
                "created_at",
                "event_id",
                "guaranteed_until",
                "id",
                "links",
                "message_level",
                "request_id",
                "resource_type",
                "resource_uuid",
                "user_message"
            ],
        "{message:?}"
    );
    ensure!(message["event_id"] == "VOLUME_VOLUME_SNAPSHOT_009_013", "{message:?}");
    ensure!(message["user_message"] == "create snapshot:Snapshot failed to create.", "{message:?}");
    ensure!(message["resource_type"] == "VOLUME_SNAPSHOT" && message["resource_uuid"] == first_snapshot.as_str());
    ensure!(message["request_id"] == first_request.as_str(), "the message names the request that asked: {message:?}");
    ensure!(message["message_level"] == "ERROR");
    ensure!(message["guaranteed_until"].as_str() > message["created_at"].as_str(), "{message:?}");
    let message_id = message["id"].as_str().context("a message id")?.to_owned();
    let shown = owner.call(&api, Method::GET, &format!("/messages/{message_id}"), "3.3", None).await?;
    ensure!(shown.status == StatusCode::OK && &shown.body["message"] == message, "{:?}", shown.body);

    // Another project neither sees nor deletes it; an admin sees every project's.
    ensure!(messages(&api, &other, "3.3", "").await?.0.is_empty(), "another project sees the message");
    for method in [Method::GET, Method::DELETE] {
        let reply = other.call(&api, method.clone(), &format!("/messages/{message_id}"), "3.3", None).await?;
        ensure!(reply.status == StatusCode::NOT_FOUND, "{method} by another project: {:?}", reply.body);
    }
    let seen_by_admin = messages(&api, &operator, "3.3", "").await?.0;
    ensure!(seen_by_admin.iter().any(|listed| listed["id"] == message_id.as_str()), "{seen_by_admin:?}");

    // From 3.5: filters, sorting and keyset paging over two messages.
    let (second_snapshot, _) = failed_snapshot(&api, &owner, &volume_id).await?;
    let (all, _) = messages(&api, &owner, "3.5", "?sort=resource_uuid:asc").await?;
    let mut expected = vec![first_snapshot.clone(), second_snapshot.clone()];
    expected.sort();
    let uuids: Vec<&str> = all.iter().filter_map(|message| message["resource_uuid"].as_str()).collect();
    ensure!(uuids == expected, "sorted by resource_uuid: {uuids:?}");
    let (page, body) = messages(&api, &owner, "3.5", "?sort=resource_uuid:asc&limit=1").await?;
    ensure!(page.len() == 1 && page[0]["resource_uuid"] == expected[0].as_str(), "{page:?}");
    let next = body["messages_links"][0]["href"].as_str().context("a next link")?;
    let query = &next[next.find('?').context("a query")?..];
    let (rest, body) = messages(&api, &owner, "3.5", query).await?;
    ensure!(rest.len() == 1 && rest[0]["resource_uuid"] == expected[1].as_str(), "{rest:?}");
    ensure!(body.get("messages_links").is_none(), "the last page links nowhere: {body:?}");
    let filtered = messages(&api, &owner, "3.5", &format!("?resource_uuid={second_snapshot}")).await?.0;
    ensure!(filtered.len() == 1 && filtered[0]["resource_uuid"] == second_snapshot.as_str(), "{filtered:?}");
    ensure!(messages(&api, &owner, "3.5", "?resource_type=VOLUME_BACKUP").await?.0.is_empty());
    ensure!(messages(&api, &owner, "3.5", "?event_id=VOLUME_VOLUME_SNAPSHOT_009_013").await?.0.len() == 2);
    let unknown = owner.call(&api, Method::GET, "/messages?volume_id=x", "3.31", None).await?;
    unknown.assert_fault(400, "badRequest", "invalid filters");
    let bad_sort = owner.call(&api, Method::GET, "/messages?sort_key=user_message", "3.5", None).await?;
    bad_sort.assert_fault(400, "badRequest", "cannot sort messages");

    // Deleted by its project: 204, and gone.
    let deleted = owner.call(&api, Method::DELETE, &format!("/messages/{message_id}"), "3.3", None).await?;
    ensure!(deleted.status == StatusCode::NO_CONTENT, "{:?}", deleted.body);
    let gone = owner.call(&api, Method::GET, &format!("/messages/{message_id}"), "3.3", None).await?;
    ensure!(gone.status == StatusCode::NOT_FOUND, "{:?}", gone.body);
    ensure!(messages(&api, &owner, "3.3", "").await?.0.len() == 1);
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn messages_expire_after_the_deployment_s_lifetime() -> Result<()> {
    let control = basalt_scheduler::ControlPlaneConfig {
        message_ttl: Duration::from_secs(2),
        message_reap_interval: Duration::from_millis(200),
        ..fast_control_plane()
    };
    let mesh = InProcessMesh::start_with(1, None, control).await?;
    let api = RestApi::start(&mesh).await?;
    let owner = RestCaller::new(OWNER, "alice");
    let volume_id = volume_without_its_file(&api, &mesh, &owner).await?;
    failed_snapshot(&api, &owner, &volume_id).await?;
    let (listed, _) = messages(&api, &owner, "3.3", "").await?;
    ensure!(listed.len() == 1, "the message is there before it expires: {listed:?}");
    let message_id = listed[0]["id"].as_str().context("a message id")?.to_owned();
    eventually("the message expires", || {
        let (api, owner) = (&api, &owner);
        async move { Ok(messages(api, owner, "3.3", "").await?.0.is_empty()) }
    })
    .await?;
    let gone = owner.call(&api, Method::GET, &format!("/messages/{message_id}"), "3.3", None).await?;
    ensure!(gone.status == StatusCode::NOT_FOUND, "an expired message is shown: {:?}", gone.body);
    mesh.shutdown().await;
    Ok(())
}
