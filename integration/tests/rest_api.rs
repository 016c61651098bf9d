//! The Cinder v3 REST contract of the gateway, over a real mesh: version documents, microversion
//! negotiation and field gating, project isolation, admin-only actions, and Cinder-shaped 400s for
//! bad input that change nothing.

use anyhow::Result;
use axum::http::{Method, StatusCode};
use basalt_integration::*;
use serde_json::{Value, json};

const PROJECT_A: &str = "0123456789abcdef0123456789abcdef";
const PROJECT_B: &str = "fedcba9876543210fedcba9876543210";

fn admin_of(project: &str) -> String {
    format!("admin:{project}")
}

fn member_of(project: &str) -> String {
    format!("alice:{project}")
}

async fn wait_available(api: &RestApi, token: &str, id: &str) -> Result<Value> {
    let path = format!("/v3/{PROJECT_A}/volumes/{id}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = api.call(Method::GET, &path, Some(token), None, None).await?;
        if reply.body["volume"]["status"] == "available" {
            return Ok(reply.body["volume"].clone());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "volume {id} never became available: {:?}", reply.body);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn version_documents_are_exact_and_unauthenticated() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let expected = json!({"versions": [{
        "id": "v3.0",
        "status": "CURRENT",
        "version": "3.71",
        "min_version": "3.0",
        "updated": "2023-08-31T00:00:00Z",
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": "http://localhost/v3/"}
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}]
    }]});
    let root = api.call(Method::GET, "/", None, None, None).await?;
    assert_eq!(root.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(root.body, expected);
    for path in ["/v3", "/v3/"] {
        let reply = api.call(Method::GET, path, None, None, None).await?;
        assert_eq!((reply.status, &reply.body), (StatusCode::OK, &expected), "{path}");
    }
    let openapi = api.call(Method::GET, "/openapi.json", None, None, None).await?;
    assert!(openapi.body["paths"]["/volumes/detail"]["get"].is_object());
    assert_eq!(openapi.body["servers"][0]["url"], "/v3/{project_id}");
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn microversions_are_negotiated_echoed_and_gate_fields() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let token = admin_of(PROJECT_A);
    let unsupported =
        api.call(Method::GET, &format!("/v3/{PROJECT_A}/volumes"), Some(&token), Some("3.72"), None).await?;
    unsupported.assert_fault(406, "notAcceptable", "minimum is 3.0 and the maximum is 3.71");
    let latest = api.call(Method::GET, &format!("/v3/{PROJECT_A}/volumes"), Some(&token), Some("latest"), None).await?;
    assert_eq!(latest.headers["openstack-api-version"], "volume 3.71");
    assert_eq!(latest.headers["vary"], "OpenStack-API-Version");
    assert!(latest.headers.contains_key("x-openstack-request-id"));
    // Errors carry the echo too.
    let missing = api
        .call(
            Method::GET,
            &format!("/v3/{PROJECT_A}/volumes/{}", uuid::Uuid::new_v4()),
            Some(&token),
            Some("3.5"),
            None,
        )
        .await?;
    missing.assert_fault(404, "itemNotFound", "not found");
    assert_eq!(missing.headers["openstack-api-version"], "volume 3.5");

    let created = api
        .call(
            Method::POST,
            &format!("/v3/{PROJECT_A}/volumes"),
            Some(&token),
            None,
            Some(r#"{"volume": {"size": 1, "name": "gated"}}"#),
        )
        .await?;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{:?}", created.body);
    let id = created.body["volume"]["id"].as_str().unwrap().to_owned();
    wait_available(&api, &token, &id).await?;
    let old = api.call(Method::GET, &format!("/v3/{PROJECT_A}/volumes/{id}"), Some(&token), Some("3.0"), None).await?;
    let new = api.call(Method::GET, &format!("/v3/{PROJECT_A}/volumes/{id}"), Some(&token), Some("3.71"), None).await?;
    for field in [
        "volume_type_id",
        "consumes_quota",
        "group_id",
        "shared_targets",
        "service_uuid",
        "cluster_name",
        "provider_id",
    ] {
        assert!(old.body["volume"].get(field).is_none(), "{field} must not appear at 3.0");
        assert!(new.body["volume"].get(field).is_some(), "{field} must appear at 3.71");
    }
    assert_eq!(old.body["volume"]["bootable"], "false");
    // Attachments exist from 3.27 only.
    let early =
        api.call(Method::GET, &format!("/v3/{PROJECT_A}/attachments"), Some(&token), Some("3.26"), None).await?;
    early.assert_fault(404, "itemNotFound", "needs microversion 3.27");
    // Project-less routes (3.67) take the project from the token.
    let projectless = api.call(Method::GET, &format!("/v3/volumes/{id}"), Some(&token), Some("3.67"), None).await?;
    assert_eq!(projectless.status, StatusCode::OK);
    assert_eq!(projectless.body["volume"]["id"], id.as_str());
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn projects_are_isolated_and_admin_actions_need_an_admin() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let owner = member_of(PROJECT_A);
    let created = api
        .call(Method::POST, &format!("/v3/{PROJECT_A}/volumes"), Some(&owner), None, Some(r#"{"volume": {"size": 1}}"#))
        .await?;
    let id = created.body["volume"]["id"].as_str().unwrap().to_owned();
    wait_available(&api, &owner, &id).await?;

    let stranger = member_of(PROJECT_B);
    let volume_path = format!("/v3/{PROJECT_B}/volumes/{id}");
    api.call(Method::GET, &volume_path, Some(&stranger), None, None).await?.assert_fault(
        404,
        "itemNotFound",
        "not found",
    );
    let rename =
        api.call(Method::PUT, &volume_path, Some(&stranger), None, Some(r#"{"volume": {"name": "mine"}}"#)).await?;
    rename.assert_fault(404, "itemNotFound", "not found");
    api.call(Method::DELETE, &volume_path, Some(&stranger), None, None).await?.assert_fault(
        404,
        "itemNotFound",
        "not found",
    );
    let listed = api
        .call(Method::GET, &format!("/v3/{PROJECT_B}/volumes/detail?all_tenants=1"), Some(&stranger), None, None)
        .await?;
    assert_eq!(listed.body["volumes"], json!([]), "all_tenants is ignored for non-admins");
    // A token for one project cannot reach another's URL.
    let crossed = api.call(Method::GET, &format!("/v3/{PROJECT_A}/volumes"), Some(&stranger), None, None).await?;
    crossed.assert_fault(400, "badRequest", "Malformed request url");
    let reset = api
        .call(
            Method::POST,
            &format!("/v3/{PROJECT_A}/volumes/{id}/action"),
            Some(&owner),
            None,
            Some(r#"{"os-reset_status": {"status": "error"}}"#),
        )
        .await?;
    reset.assert_fault(403, "forbidden", "Policy doesn't allow volume_extension:volume_admin_actions:reset_status");
    let unauthenticated = api.call(Method::GET, &format!("/v3/{PROJECT_A}/volumes"), None, None, None).await?;
    unauthenticated.assert_fault(401, "unauthorized", "X-Auth-Token");

    let kept = wait_available(&api, &owner, &id).await?;
    assert_eq!(kept["name"], "");
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_cinder_shaped_400_and_changes_nothing() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let token = admin_of(PROJECT_A);
    let volumes = format!("/v3/{PROJECT_A}/volumes");
    let cases: [(&str, Option<&str>, &str); 10] = [
        ("{not json", None, "malformed JSON"),
        (
            r#"{"volume": {"size": 1, "colour": "red"}}"#,
            Some("3.53"),
            "additional properties are not allowed (colour unexpected)",
        ),
        (r#"{"volume": {"size": -1}}"#, None, "size must be a whole number of GiB from 1 to 1048576"),
        (r#"{"volume": {"size": 0}}"#, None, "size must be a whole number"),
        (r#"{"volume": {"size": 99999999999}}"#, None, "size must be a whole number"),
        (r#"{"volume": {"size": "lots"}}"#, None, "size must be a whole number"),
        (
            r#"{"volume": {"size": 1, "snapshot_id": "not-a-uuid"}}"#,
            None,
            "snapshot_id \"not-a-uuid\" is not a valid UUID",
        ),
        (r#"{"volume": {"name": "no size"}}"#, None, "size is required"),
        (r#"{"snapshot": {}}"#, None, "the body must be {\"volume\": {...}}"),
        (
            r#"{"volume": {"size": 1}, "volume2": {}}"#,
            Some("3.53"),
            "additional properties are not allowed (volume2 unexpected)",
        ),
    ];
    for (body, version, fragment) in cases {
        let reply = api.call(Method::POST, &volumes, Some(&token), version, Some(body)).await?;
        reply.assert_fault(400, "badRequest", fragment);
    }
    // Below 3.53 unknown keys are ignored, as in Cinder.
    let lenient = api
        .call(Method::POST, &volumes, Some(&token), Some("3.52"), Some(r#"{"volume": {"size": 1, "colour": "red"}}"#))
        .await?;
    assert_eq!(lenient.status, StatusCode::ACCEPTED);
    let bad_id = api.call(Method::GET, &format!("{volumes}/not-a-uuid"), Some(&token), None, None).await?;
    bad_id.assert_fault(400, "badRequest", "expected a UUID");
    let bad_action = api
        .call(
            Method::POST,
            &format!("{volumes}/{}/action", uuid::Uuid::new_v4()),
            Some(&token),
            None,
            Some(r#"{"os-teleport": {}}"#),
        )
        .await?;
    bad_action.assert_fault(400, "badRequest", "unknown volume action");
    let huge = "x".repeat(2 << 20);
    let too_large = api
        .call(Method::POST, &volumes, Some(&token), None, Some(&format!(r#"{{"volume": {{"name": "{huge}"}}}}"#)))
        .await?;
    too_large.assert_fault(413, "overLimit", "larger than 1 MiB");
    let over_quota =
        api.call(Method::POST, &volumes, Some(&token), None, Some(r#"{"volume": {"size": 5000}}"#)).await?;
    over_quota.assert_fault(413, "overLimit", "quota exceeded for gigabytes");
    assert!(over_quota.headers.get("retry-after").is_none(), "a quota is not a reason to retry at once");

    let listed =
        api.call(Method::GET, &format!("{volumes}/detail?with_count=true"), Some(&token), Some("3.45"), None).await?;
    assert_eq!(listed.body["count"], 1, "only the lenient create made a volume: {:?}", listed.body);
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn listings_paginate_with_links_and_counts() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let token = admin_of(PROJECT_A);
    for index in 0..5 {
        let body = format!(r#"{{"volume": {{"size": 1, "name": "page-{index}"}}}}"#);
        let reply =
            api.call(Method::POST, &format!("/v3/{PROJECT_A}/volumes"), Some(&token), None, Some(&body)).await?;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    let first = api
        .call(
            Method::GET,
            &format!("/v3/{PROJECT_A}/volumes/detail?limit=2&sort=name:asc&with_count=true"),
            Some(&token),
            Some("3.45"),
            None,
        )
        .await?;
    let names: Vec<&str> =
        first.body["volumes"].as_array().unwrap().iter().map(|volume| volume["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["page-0", "page-1"]);
    assert_eq!(first.body["count"], 5);
    let next = first.body["volumes_links"][0]["href"].as_str().unwrap().to_owned();
    assert!(
        next.starts_with(&format!("http://localhost/v3/{PROJECT_A}/volumes/detail?")) && next.contains("marker="),
        "{next}"
    );
    let path = next.trim_start_matches("http://localhost");
    let second = api.call(Method::GET, path, Some(&token), Some("3.45"), None).await?;
    let names: Vec<&str> =
        second.body["volumes"].as_array().unwrap().iter().map(|volume| volume["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["page-2", "page-3"]);
    let filtered =
        api.call(Method::GET, &format!("/v3/{PROJECT_A}/volumes?name=page-4"), Some(&token), None, None).await?;
    assert_eq!(filtered.body["volumes"].as_array().unwrap().len(), 1);
    let bad_filter = api
        .call(
            Method::GET,
            &format!("/v3/{PROJECT_A}/volumes?colour=red"),
            Some(&member_of(PROJECT_A)),
            Some("3.31"),
            None,
        )
        .await?;
    bad_filter.assert_fault(400, "badRequest", "invalid filters colour");

    // Size and bootable filter before the page is cut: counts, pages and markers follow them.
    for name in ["big-0", "big-1"] {
        let body = format!(r#"{{"volume": {{"size": 2, "name": "{name}"}}}}"#);
        api.call(Method::POST, &format!("/v3/{PROJECT_A}/volumes"), Some(&token), None, Some(&body)).await?;
    }
    let query = "volumes/detail?size=2&limit=1&sort=name:asc&with_count=true";
    let big = api.call(Method::GET, &format!("/v3/{PROJECT_A}/{query}"), Some(&token), Some("3.45"), None).await?;
    let names = |reply: &RestReply| -> Vec<String> {
        reply.body["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!((names(&big), &big.body["count"]), (vec!["big-0".to_owned()], &json!(2)), "{:?}", big.body);
    let next = big.body["volumes_links"][0]["href"].as_str().unwrap_or_default().trim_start_matches("http://localhost");
    let rest_of = api.call(Method::GET, next, Some(&token), Some("3.45"), None).await?;
    assert_eq!(names(&rest_of), ["big-1"], "{:?}", rest_of.body);
    let page_4 = filtered.body["volumes"][0]["id"].as_str().unwrap_or_default().to_owned();
    let set_bootable = r#"{"os-set_bootable": {"bootable": true}}"#;
    let path = format!("/v3/{PROJECT_A}/volumes/{page_4}/action");
    assert_eq!(api.call(Method::POST, &path, Some(&token), None, Some(set_bootable)).await?.status, StatusCode::OK);
    let query = "volumes/detail?bootable=true&limit=1&with_count=true";
    let bootable = api.call(Method::GET, &format!("/v3/{PROJECT_A}/{query}"), Some(&token), Some("3.45"), None).await?;
    assert_eq!(
        (names(&bootable), &bootable.body["count"]),
        (vec!["page-4".to_owned()], &json!(1)),
        "{:?}",
        bootable.body
    );
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn qos_specs_legacy_reserve_and_retype() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let admin = admin_of(PROJECT_A);
    let base = format!("/v3/{PROJECT_A}");

    // QoS specs: create, set and delete keys, associate with a type, refuse a plain delete.
    let created = api
        .call(
            Method::POST,
            &format!("{base}/qos-specs"),
            Some(&admin),
            None,
            Some(r#"{"qos_specs": {"name": "gold", "consumer": "front-end", "total_iops_sec": "1000"}}"#),
        )
        .await?;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    let qos = created.body["qos_specs"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["qos_specs"]["specs"]["total_iops_sec"], "1000");
    let member = api.call(Method::GET, &format!("{base}/qos-specs"), Some(&member_of(PROJECT_A)), None, None).await?;
    member.assert_fault(403, "forbidden", "volume_extension:qos_specs_manage:get_all");
    api.call(
        Method::PUT,
        &format!("{base}/qos-specs/{qos}"),
        Some(&admin),
        None,
        Some(r#"{"qos_specs": {"read_bytes_sec": "5000"}}"#),
    )
    .await?;
    let removed = api
        .call(
            Method::PUT,
            &format!("{base}/qos-specs/{qos}/delete_keys"),
            Some(&admin),
            None,
            Some(r#"{"keys": ["total_iops_sec"]}"#),
        )
        .await?;
    assert_eq!(removed.status, StatusCode::ACCEPTED);
    let shown = api.call(Method::GET, &format!("{base}/qos-specs/{qos}"), Some(&admin), None, None).await?;
    assert_eq!(shown.body["qos_specs"]["specs"], json!({"read_bytes_sec": "5000"}));
    let gold_type = api
        .call(
            Method::POST,
            &format!("{base}/types"),
            Some(&admin),
            None,
            Some(r#"{"volume_type": {"name": "gold", "extra_specs": {"volume_backend_name": "file"}}}"#),
        )
        .await?;
    let gold_type = gold_type.body["volume_type"]["id"].as_str().unwrap().to_owned();
    let associated = api
        .call(
            Method::GET,
            &format!("{base}/qos-specs/{qos}/associate?vol_type_id={gold_type}"),
            Some(&admin),
            None,
            None,
        )
        .await?;
    assert_eq!(associated.status, StatusCode::ACCEPTED, "{:?}", associated.body);
    let listed =
        api.call(Method::GET, &format!("{base}/qos-specs/{qos}/associations"), Some(&admin), None, None).await?;
    assert_eq!(listed.body["qos_associations"][0]["id"], gold_type.as_str());
    let typed = api.call(Method::GET, &format!("{base}/types/{gold_type}"), Some(&admin), None, None).await?;
    assert_eq!(typed.body["volume_type"]["qos_specs_id"], qos.as_str());
    let in_use = api.call(Method::DELETE, &format!("{base}/qos-specs/{qos}"), Some(&admin), None, None).await?;
    in_use.assert_fault(400, "badRequest", "associated with 1 volume types");
    let forced =
        api.call(Method::DELETE, &format!("{base}/qos-specs/{qos}?force=true"), Some(&admin), None, None).await?;
    assert_eq!(forced.status, StatusCode::ACCEPTED);

    // Legacy reserve / unreserve through the status machine.
    let created = api
        .call(Method::POST, &format!("{base}/volumes"), Some(&admin), None, Some(r#"{"volume": {"size": 1}}"#))
        .await?;
    let volume = created.body["volume"]["id"].as_str().unwrap().to_owned();
    wait_available(&api, &admin, &volume).await?;
    let action = format!("{base}/volumes/{volume}/action");
    assert_eq!(
        api.call(Method::POST, &action, Some(&admin), None, Some(r#"{"os-reserve": null}"#)).await?.status,
        StatusCode::ACCEPTED
    );
    let reserved = api.call(Method::GET, &format!("{base}/volumes/{volume}"), Some(&admin), None, None).await?;
    assert_eq!(reserved.body["volume"]["status"], "attaching");
    let again = api.call(Method::POST, &action, Some(&admin), None, Some(r#"{"os-reserve": null}"#)).await?;
    again.assert_fault(400, "badRequest", "reserving needs it to be available");
    let detach = api.call(Method::POST, &action, Some(&admin), None, Some(r#"{"os-begin_detaching": null}"#)).await?;
    detach.assert_fault(400, "badRequest", "detaching needs it to be in-use");
    assert_eq!(
        api.call(Method::POST, &action, Some(&admin), None, Some(r#"{"os-unreserve": null}"#)).await?.status,
        StatusCode::ACCEPTED
    );
    wait_available(&api, &admin, &volume).await?;

    // Retype to a type the pool satisfies; refuse one it does not.
    let retyped = api
        .call(
            Method::POST,
            &action,
            Some(&admin),
            None,
            Some(r#"{"os-retype": {"new_type": "gold", "migration_policy": "never"}}"#),
        )
        .await?;
    assert_eq!(retyped.status, StatusCode::ACCEPTED, "{:?}", retyped.body);
    let shown = api.call(Method::GET, &format!("{base}/volumes/{volume}"), Some(&admin), None, None).await?;
    assert_eq!(shown.body["volume"]["volume_type"], "gold");
    api.call(
        Method::POST,
        &format!("{base}/types"),
        Some(&admin),
        None,
        Some(r#"{"volume_type": {"name": "lvm", "extra_specs": {"volume_backend_name": "lvm"}}}"#),
    )
    .await?;
    let refused = api
        .call(
            Method::POST,
            &action,
            Some(&admin),
            None,
            Some(r#"{"os-retype": {"new_type": "lvm", "migration_policy": "on-demand"}}"#),
        )
        .await?;
    refused.assert_fault(400, "badRequest", "does not satisfy volume type lvm");
    let quotas = api
        .call(Method::GET, &format!("{base}/os-quota-sets/{PROJECT_A}?usage=true"), Some(&admin), None, None)
        .await?;
    assert_eq!(quotas.body["quota_set"]["volumes_gold"]["in_use"], 1, "{:?}", quotas.body);
    assert_eq!(quotas.body["quota_set"]["volumes___DEFAULT__"]["in_use"], 0);
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn snapshot_metadata_and_quota_resets() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let admin = admin_of(PROJECT_A);
    let base = format!("/v3/{PROJECT_A}");
    let created = api
        .call(Method::POST, &format!("{base}/volumes"), Some(&admin), None, Some(r#"{"volume": {"size": 1}}"#))
        .await?;
    let volume = created.body["volume"]["id"].as_str().unwrap().to_owned();
    wait_available(&api, &admin, &volume).await?;
    let body = format!(r#"{{"snapshot": {{"volume_id": "{volume}", "name": "s", "metadata": {{"a": "1"}}}}}}"#);
    let snapshot = api.call(Method::POST, &format!("{base}/snapshots"), Some(&admin), None, Some(&body)).await?;
    assert_eq!(snapshot.status, StatusCode::ACCEPTED, "{:?}", snapshot.body);
    let id = snapshot.body["snapshot"]["id"].as_str().unwrap().to_owned();
    let item = format!("{base}/snapshots/{id}/metadata/b");
    let set = api.call(Method::PUT, &item, Some(&admin), None, Some(r#"{"meta": {"b": "2"}}"#)).await?;
    assert_eq!(set.body, json!({"meta": {"b": "2"}}));
    let all = api.call(Method::GET, &format!("{base}/snapshots/{id}/metadata"), Some(&admin), None, None).await?;
    assert_eq!(all.body, json!({"metadata": {"a": "1", "b": "2"}}));
    assert_eq!(api.call(Method::DELETE, &item, Some(&admin), None, None).await?.status, StatusCode::OK);
    api.call(Method::GET, &item, Some(&admin), None, None).await?.assert_fault(
        404,
        "itemNotFound",
        "metadata key \"b\" not found",
    );

    let quotas = format!("{base}/os-quota-sets/{PROJECT_A}");
    let raised = api.call(Method::PUT, &quotas, Some(&admin), None, Some(r#"{"quota_set": {"volumes": 50}}"#)).await?;
    assert_eq!(raised.body["quota_set"]["volumes"], 50);
    let reset = api.call(Method::DELETE, &quotas, Some(&admin), None, None).await?;
    assert_eq!(reset.status, StatusCode::OK);
    let shown = api.call(Method::GET, &quotas, Some(&admin), None, None).await?;
    assert_eq!(shown.body["quota_set"]["volumes"], 10, "back to the default");
    let defaults =
        api.call(Method::GET, &format!("{quotas}/defaults"), Some(&member_of(PROJECT_A)), None, None).await?;
    assert_eq!(defaults.body["quota_set"]["gigabytes"], 1000);
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn volume_type_responses_carry_exactly_cinder_s_keys_for_each_caller() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let base = format!("/v3/{PROJECT_A}");
    let (admin, member) = (admin_of(PROJECT_A), member_of(PROJECT_A));
    let common = ["description", "extra_specs", "id", "is_public", "name"];
    let with = |extra: &[&str]| {
        let mut expected: Vec<String> = common.iter().chain(extra).map(|key| (*key).to_owned()).collect();
        expected.sort();
        expected
    };
    let body = r#"{"volume_type": {"name": "shaped", "extra_specs": {"volume_backend_name": "file"}}}"#;
    let created = api.call(Method::POST, &format!("{base}/types"), Some(&admin), None, Some(body)).await?;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    // As Cinder's samples show: no QoS specs id in a create or update response, even for an admin.
    assert_eq!(sorted_keys(&created.body["volume_type"]), with(&["os-volume-type-access:is_public"]));
    let id = created.body["volume_type"]["id"].as_str().unwrap_or_default().to_owned();
    let update = r#"{"volume_type": {"description": "reshaped"}}"#;
    let updated = api.call(Method::PUT, &format!("{base}/types/{id}"), Some(&admin), None, Some(update)).await?;
    assert_eq!(sorted_keys(&updated.body["volume_type"]), with(&[]));

    for (caller, is_admin) in [(&admin, true), (&member, false)] {
        let qos: &[&str] = if is_admin { &["qos_specs_id"] } else { &[] };
        let shown_keys = with(&[qos, &["os-volume-type-access:is_public"]].concat());
        for version in ["3.0", "3.71"] {
            let shown = api.call(Method::GET, &format!("{base}/types/{id}"), Some(caller), Some(version), None).await?;
            assert_eq!(sorted_keys(&shown.body["volume_type"]), shown_keys, "show as {caller} at {version}");
            let listed = api.call(Method::GET, &format!("{base}/types"), Some(caller), Some(version), None).await?;
            let entries = listed.body["volume_types"].as_array().cloned().unwrap_or_default();
            assert!(!entries.is_empty(), "{:?}", listed.body);
            for entry in &entries {
                assert_eq!(sorted_keys(entry), shown_keys, "list as {caller} at {version}");
            }
            let default =
                api.call(Method::GET, &format!("{base}/types/default"), Some(caller), Some(version), None).await?;
            assert_eq!(sorted_keys(&default.body["volume_type"]), with(qos), "default as {caller} at {version}");
        }
    }
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn resource_filters_report_what_each_listing_accepts() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let base = format!("/v3/{PROJECT_A}");
    let member = member_of(PROJECT_A);
    let before = api.call(Method::GET, &format!("{base}/resource_filters"), Some(&member), Some("3.32"), None).await?;
    assert_eq!(before.status, StatusCode::NOT_FOUND, "resource filters appeared at 3.33: {:?}", before.body);

    let all = api.call(Method::GET, &format!("{base}/resource_filters"), Some(&member), Some("3.33"), None).await?;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    let reported = all.body["resource_filters"].as_array().cloned().unwrap_or_default();
    let resources: Vec<&str> = reported.iter().filter_map(|entry| entry["resource"].as_str()).collect();
    assert_eq!(
        resources,
        ["volume", "snapshot", "backup", "attachment", "volume_type", "pool", "message", "group", "group_snapshot"]
    );
    for entry in &reported {
        assert_eq!(sorted_keys(entry), ["filters", "resource"]);
    }

    // What is reported for volumes is what `GET /volumes/detail` lets a member filter on (from
    // 3.31 an unknown filter is a 400), and nothing else gets through.
    let volume = api
        .call(Method::GET, &format!("{base}/resource_filters?resource=volume"), Some(&member), Some("3.33"), None)
        .await?;
    let filters: Vec<String> = volume.body["resource_filters"][0]["filters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|filter| filter.as_str().map(str::to_owned))
        .collect();
    assert_eq!(volume.body["resource_filters"].as_array().map(Vec::len), Some(1), "{:?}", volume.body);
    assert!(filters.contains(&"name".to_owned()) && filters.contains(&"status".to_owned()), "{filters:?}");
    let sample = |filter: &str| match filter {
        "status" => "available",
        "bootable" => "false",
        "size" => "1",
        "metadata" => "%7B%22k%22%3A%22v%22%7D",
        "group_id" => "00000000-0000-4000-8000-000000000000",
        _ => "x",
    };
    for filter in &filters {
        let path = format!("{base}/volumes/detail?{filter}={}", sample(filter));
        let listed = api.call(Method::GET, &path, Some(&member), Some("3.33"), None).await?;
        assert_eq!(listed.status, StatusCode::OK, "{filter}: {:?}", listed.body);
    }
    let refused = api
        .call(Method::GET, &format!("{base}/volumes/detail?migration_status=x"), Some(&member), Some("3.33"), None)
        .await?;
    refused.assert_fault(400, "badRequest", "invalid filters migration_status");
    let unknown = api
        .call(Method::GET, &format!("{base}/resource_filters?resource=nothing"), Some(&member), Some("3.33"), None)
        .await?;
    assert_eq!(unknown.body, json!({"resource_filters": []}));
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn hosts_and_a_backend_s_capabilities_for_admins() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let base = format!("/v3/{PROJECT_A}");
    let (admin, member) = (admin_of(PROJECT_A), member_of(PROJECT_A));

    let hosts = api.call(Method::GET, &format!("{base}/os-hosts"), Some(&admin), None, None).await?;
    assert_eq!(hosts.status, StatusCode::OK, "{:?}", hosts.body);
    let listed = hosts.body["hosts"].as_array().cloned().unwrap_or_default();
    let volume_host = listed
        .iter()
        .find(|host| host["service"] == "cinder-volume")
        .unwrap_or_else(|| panic!("no volume service among {listed:?}"));
    assert_eq!(volume_host["host_name"], "node-0@file");
    assert_eq!(
        (&volume_host["service-status"], &volume_host["service-state"]),
        (&json!("available"), &json!("enabled"))
    );
    for host in &listed {
        assert_eq!(
            sorted_keys(host),
            ["host_name", "last-update", "service", "service-state", "service-status", "zone"]
        );
    }
    let elsewhere = api.call(Method::GET, &format!("{base}/os-hosts?zone=elsewhere"), Some(&admin), None, None).await?;
    assert_eq!(elsewhere.body, json!({"hosts": []}));

    // The host os-services and os-hosts name is the one capabilities answers for.
    let shown = api.call(Method::GET, &format!("{base}/capabilities/node-0@file"), Some(&admin), None, None).await?;
    assert_eq!(shown.status, StatusCode::OK, "{:?}", shown.body);
    assert_eq!(
        sorted_keys(&shown.body),
        [
            "description",
            "display_name",
            "driver_version",
            "namespace",
            "pool_name",
            "properties",
            "replication_targets",
            "storage_protocol",
            "vendor_name",
            "visibility",
            "volume_backend_name"
        ]
    );
    assert_eq!(shown.body["namespace"], "OS::Storage::Capabilities::node-0@file");
    assert_eq!((&shown.body["volume_backend_name"], &shown.body["pool_name"]), (&json!("file"), &json!("default")));
    for key in ["thin_provisioning_support", "multiattach", "volume_backend_name", "storage_protocol"] {
        assert!(shown.body["properties"][key]["type"].is_string(), "{key} missing from {:?}", shown.body["properties"]);
    }
    let missing = api.call(Method::GET, &format!("{base}/capabilities/nowhere@file"), Some(&admin), None, None).await?;
    missing.assert_fault(404, "itemNotFound", "Can't find service: \"nowhere@file\"");

    for path in ["os-hosts", "capabilities/node-0@file"] {
        let refused = api.call(Method::GET, &format!("{base}/{path}"), Some(&member), None, None).await?;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path} as a member: {:?}", refused.body);
    }
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_project_s_own_default_type_is_what_its_new_volumes_get() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let base = format!("/v3/{PROJECT_A}");
    let (admin, member, other) = (admin_of(PROJECT_A), member_of(PROJECT_A), member_of(PROJECT_B));
    let v = Some("3.62");
    let gold = api
        .call(Method::POST, &format!("{base}/types"), Some(&admin), None, Some(r#"{"volume_type": {"name": "gold"}}"#))
        .await?;
    let gold_id = gold.body["volume_type"]["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("{base}/default-types/{PROJECT_A}");
    let body = r#"{"default_type": {"volume_type": "gold"}}"#;

    let early = api.call(Method::PUT, &path, Some(&admin), Some("3.61"), Some(body)).await?;
    assert_eq!(early.status, StatusCode::NOT_FOUND, "default types appeared at 3.62: {:?}", early.body);
    let refused = api.call(Method::PUT, &path, Some(&member), v, Some(body)).await?;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);

    let set = api.call(Method::PUT, &path, Some(&admin), v, Some(body)).await?;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.body);
    let expected = json!({"default_type": {"project_id": PROJECT_A, "volume_type_id": gold_id}});
    assert_eq!(set.body, expected);
    assert_eq!(api.call(Method::GET, &path, Some(&admin), v, None).await?.body, expected);
    let listed = api.call(Method::GET, &format!("{base}/default-types"), Some(&admin), v, None).await?;
    assert_eq!(listed.body, json!({"default_types": [expected["default_type"]]}));

    // A type that is some project's default stays until that default is unset.
    let deleting = api.call(Method::DELETE, &format!("{base}/types/{gold_id}"), Some(&admin), None, None).await?;
    deleting.assert_fault(400, "badRequest", "the default type of 1 projects");

    // A's new volumes get gold, and A's default type says so; B's still get the deployment's.
    let create = r#"{"volume": {"size": 1}}"#;
    let in_a = api.call(Method::POST, &format!("{base}/volumes"), Some(&member), None, Some(create)).await?;
    assert_eq!(in_a.body["volume"]["volume_type"], "gold", "{:?}", in_a.body);
    let shown = api.call(Method::GET, &format!("{base}/types/default"), Some(&member), None, None).await?;
    assert_eq!(shown.body["volume_type"]["name"], "gold");
    let base_b = format!("/v3/{PROJECT_B}");
    let in_b = api.call(Method::POST, &format!("{base_b}/volumes"), Some(&other), None, Some(create)).await?;
    assert_eq!(in_b.body["volume"]["volume_type"], "__DEFAULT__", "{:?}", in_b.body);

    let private = api
        .call(
            Method::POST,
            &format!("{base}/types"),
            Some(&admin),
            None,
            Some(r#"{"volume_type": {"name": "hidden", "os-volume-type-access:is_public": false}}"#),
        )
        .await?;
    assert_eq!(private.status, StatusCode::OK, "{:?}", private.body);
    let hidden = r#"{"default_type": {"volume_type": "hidden"}}"#;
    let inaccessible = api.call(Method::PUT, &path, Some(&admin), v, Some(hidden)).await?;
    inaccessible.assert_fault(400, "badRequest", "has no access to it");

    let unset = api.call(Method::DELETE, &path, Some(&admin), v, None).await?;
    assert_eq!(unset.status, StatusCode::NO_CONTENT, "{:?}", unset.body);
    let gone = api.call(Method::GET, &path, Some(&admin), v, None).await?;
    gone.assert_fault(404, "itemNotFound", "no default volume type is set");
    let after = api.call(Method::POST, &format!("{base}/volumes"), Some(&member), None, Some(create)).await?;
    assert_eq!(after.body["volume"]["volume_type"], "__DEFAULT__", "{:?}", after.body);
    mesh.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_disabled_volume_service_takes_no_new_volumes_and_says_why() -> Result<()> {
    let mesh = InProcessMesh::start(2).await?;
    let api = RestApi::start(&mesh).await?;
    let base = format!("/v3/{PROJECT_A}");
    let (admin, member) = (admin_of(PROJECT_A), member_of(PROJECT_A));
    let put = |action: &str, body: Value| {
        let (api, base, admin) = (&api, &base, &admin);
        let path = format!("{base}/os-services/{action}");
        async move { api.call(Method::PUT, &path, Some(admin), None, Some(&body.to_string())).await }
    };

    let body = json!({"host": "node-0@file", "binary": "cinder-volume", "disabled_reason": "disk swap"});
    let refused = api
        .call(Method::PUT, &format!("{base}/os-services/disable"), Some(&member), None, Some(&body.to_string()))
        .await?;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    let disabled = put("disable-log-reason", body).await?;
    assert_eq!(disabled.status, StatusCode::OK, "{:?}", disabled.body);
    assert_eq!(
        disabled.body,
        json!({"disabled": true, "host": "node-0@file", "service": "", "binary": "cinder-volume",
               "status": "disabled", "disabled_reason": "disk swap"})
    );
    let services = format!("{base}/os-services?binary=cinder-volume");
    let listed = api.call(Method::GET, &services, Some(&admin), None, None).await?;
    let listed = listed.body["services"].as_array().cloned().unwrap_or_default();
    let shown: Vec<(String, String, Value)> = listed
        .iter()
        .map(|service| {
            (
                service["host"].as_str().unwrap_or_default().to_owned(),
                service["status"].to_string(),
                service["disabled_reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("node-0@file".to_owned(), "\"disabled\"".to_owned(), json!("disk swap")),
            ("node-1@file".to_owned(), "\"enabled\"".to_owned(), Value::Null)
        ]
    );

    // New volumes go to the enabled node only; what the disabled one holds is still served.
    for _ in 0..4 {
        let created = api
            .call(Method::POST, &format!("{base}/volumes"), Some(&admin), None, Some(r#"{"volume": {"size": 1}}"#))
            .await?;
        let id = created.body["volume"]["id"].as_str().unwrap_or_default().to_owned();
        let caller = RestCaller::new(PROJECT_A, "admin");
        let shown = caller.wait_for(&api, &format!("/volumes/{id}"), "volume", "available").await?;
        assert!(shown["os-vol-host-attr:host"].as_str().is_some_and(|host| host.starts_with("node-1@")), "{shown:?}");
    }

    // Bad requests say what is allowed.
    put("freeze", json!({"host": "node-0@file"})).await?.assert_fault(
        400,
        "badRequest",
        "Basalt's have no replication",
    );
    put("disable", json!({"host": "node-9@file", "binary": "cinder-volume"})).await?.assert_fault(
        404,
        "itemNotFound",
        "the hosts are: node-0@file, node-1@file",
    );
    put("disable-log-reason", json!({"host": "node-0@file", "binary": "cinder-volume"})).await?.assert_fault(
        400,
        "badRequest",
        "needs a disabled_reason",
    );

    let enabled = put("enable", json!({"host": "node-0@file", "service": "cinder-volume"})).await?;
    assert_eq!(
        enabled.body,
        json!({"disabled": false, "host": "node-0@file", "service": "cinder-volume", "binary": "", "status": "enabled"})
    );
    mesh.shutdown().await;
    Ok(())
}
