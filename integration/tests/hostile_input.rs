//! Input a hostile client sends, at the REST and gRPC edges of a real mesh: ids that would name
//! another project's files, bodies and headers that Cinder's schemas refuse, filters that would
//! match more than they say. Every refusal is a Cinder fault that quotes little of the input, and
//! changes nothing.

use anyhow::{Context, Result};
use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use basalt::{
    context::PROJECT_HEADER,
    proto::{CreateVolumeRequest, ListVolumesRequest},
};
use basalt_integration::*;
use serde_json::Value;

const HOSTILE_PROJECTS: [&str; 6] = [".", "..", "a/b", "%2e%2e", "a\0b", ""];

fn long_project() -> String {
    "a".repeat(300)
}

/// Percent-encodes every byte that is not unreserved, so any id fits in a URL path segment.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_project_ids_are_refused_at_the_rest_and_grpc_edges() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let long = long_project();
    let mut ids: Vec<&str> = HOSTILE_PROJECTS.to_vec();
    ids.push(&long);
    for id in ids.iter().filter(|id| !id.is_empty()) {
        // In the URL (percent-encoded, as a client must send it), with an opaque token.
        let path = format!("/v3/{}/volumes", path_segment(id));
        let reply = api.call(Method::GET, &path, Some("notused"), None, None).await?;
        reply.assert_fault(400, "badRequest", "invalid project id");
        // In a `user:project` token on a project-less URL.
        if !id.contains('\0') {
            let reply = api.call(Method::GET, "/v3/volumes", Some(&format!("admin:{id}")), None, None).await?;
            reply.assert_fault(400, "badRequest", "invalid project id");
        }
    }
    // A client that sends `%2e%2e` literally in a token gets no further than one that decodes it.
    let reply = api.call(Method::GET, "/v3/volumes", Some("admin:%2e%2e"), None, None).await?;
    reply.assert_fault(400, "badRequest", "invalid project id");

    let mut client = volume_client(&mesh.grpc_addr).await?;
    for id in ids {
        let mut request = tonic::Request::new(CreateVolumeRequest { size_gib: 1, ..Default::default() });
        match tonic::metadata::MetadataValue::try_from(id) {
            Ok(value) => {
                request.metadata_mut().insert(PROJECT_HEADER, value);
            }
            // HTTP/2 cannot carry a NUL in a header: the refusal happens before the wire.
            Err(_) => {
                assert!(id.contains('\0'), "{id:?} should fit in metadata");
                continue;
            }
        }
        let refused = client.create_volume(request).await;
        if id.is_empty() {
            expect_refusal(refused, tonic::Code::Unauthenticated, "missing x-basalt-project-id");
        } else {
            let message = expect_refusal(refused, tonic::Code::InvalidArgument, "invalid project id");
            assert!(message.len() < 400, "{message}");
        }
    }
    let everything =
        client.list_volumes(admin("ops").request(ListVolumesRequest { all_projects: true, ..Default::default() }));
    assert!(everything.await?.into_inner().volumes.is_empty(), "no refused call made a volume");
    mesh.shutdown().await;
    Ok(())
}

/// The mesh, the REST API and an admin token of one project.
struct Rest {
    mesh: InProcessMesh,
    api: RestApi,
    token: String,
    base: String,
}

impl Rest {
    async fn start() -> Result<Self> {
        let mesh = InProcessMesh::start(1).await?;
        let api = RestApi::start(&mesh).await?;
        let project = project_id("hostile");
        Ok(Self { mesh, api, token: format!("admin:{project}"), base: format!("/v3/{project}") })
    }

    async fn call(&self, method: Method, path: &str, version: Option<&str>, body: Option<&str>) -> Result<RestReply> {
        self.api.call(method, &format!("{}{path}", self.base), Some(&self.token), version, body).await
    }

    async fn create_volume(&self, body: &str) -> Result<String> {
        let created = self.call(Method::POST, "/volumes", Some("3.71"), Some(body)).await?;
        assert_eq!(created.status, StatusCode::ACCEPTED, "{:?}", created.body);
        let id = created.body["volume"]["id"].as_str().context("a volume id")?.to_owned();
        self.wait_for(&id, "available").await?;
        Ok(id)
    }

    async fn wait_for(&self, id: &str, status: &str) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let shown = self.call(Method::GET, &format!("/volumes/{id}"), None, None).await?;
            if shown.body["volume"]["status"] == status {
                return Ok(shown.body["volume"].clone());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "volume {id} is not {status}: {:?}", shown.body);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn volume_names(&self, query: &str) -> Result<Vec<String>> {
        let listed = self.call(Method::GET, &format!("/volumes/detail?{query}"), Some("3.71"), None).await?;
        assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
        let mut names: Vec<String> = listed.body["volumes"]
            .as_array()
            .context("volumes")?
            .iter()
            .map(|volume| volume["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn volume_count(&self) -> Result<usize> {
        Ok(self.volume_names("").await?.len())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_bodies_and_headers_are_cinder_faults_that_change_nothing() -> Result<()> {
    let rest = Rest::start().await?;
    let volume = rest.create_volume(r#"{"volume": {"size": 1, "name": "kept"}}"#).await?;

    // Two actions in one body: Cinder's schemas allow one; neither runs.
    let both = r#"{"os-extend": {"new_size": 2}, "os-reset_status": {"status": "error"}}"#;
    let reply = rest.call(Method::POST, &format!("/volumes/{volume}/action"), None, Some(both)).await?;
    reply.assert_fault(400, "badRequest", "exactly one");
    let shown = rest.wait_for(&volume, "available").await?;
    assert_eq!(shown["size"], 1);

    // Sizes as Cinder's pattern ^[0-9]+$ has them: no spaces, no sign.
    for size in [r#""  2 ""#, r#""+3""#, "2.5", r#""0x2""#] {
        let body = format!(r#"{{"volume": {{"size": {size}}}}}"#);
        let reply = rest.call(Method::POST, "/volumes", None, Some(&body)).await?;
        reply.assert_fault(400, "badRequest", "whole number of GiB");
    }

    // Names and descriptions: no control characters, no NUL, at most 255 characters; the error
    // quotes only a prefix of a 10,000-character name.
    for (field, value) in [("name", "a\\u0000b"), ("name", "bell\\u0007"), ("description", "nul\\u0000")] {
        let body = format!(r#"{{"volume": {{"size": 1, "{field}": "{value}"}}}}"#);
        let reply = rest.call(Method::POST, "/volumes", None, Some(&body)).await?;
        reply.assert_fault(400, "badRequest", "control character");
    }
    let long = "n".repeat(10_000);
    let reply = rest
        .call(Method::POST, "/volumes", None, Some(&format!(r#"{{"volume": {{"size": 1, "name": "{long}"}}}}"#)))
        .await?;
    reply.assert_fault(400, "badRequest", "too long (10000 characters)");
    let reply =
        rest.call(Method::PUT, &format!("/volumes/{volume}"), None, Some(r#"{"volume": {"name": "x\u0000"}}"#)).await?;
    reply.assert_fault(400, "badRequest", "control character");

    // The version header is exactly `volume 3.N`.
    let request = Request::get(format!("{}/volumes", rest.base))
        .header("x-auth-token", &rest.token)
        .header("openstack-api-version", "volume 3.71 junk")
        .body(Body::empty())?;
    rest.api.send(request).await?.assert_fault(400, "badRequest", "invalid version header");

    // Bodies are JSON, or the request is refused with 415 before anything runs.
    let request = Request::post(format!("{}/volumes", rest.base))
        .header("x-auth-token", &rest.token)
        .header("content-type", "text/plain")
        .body(Body::from(r#"{"volume": {"size": 1}}"#))?;
    rest.api.send(request).await?.assert_fault(415, "badMediaType", "send application/json");
    let request = Request::post(format!("{}/volumes", rest.base))
        .header("x-auth-token", &rest.token)
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(r#"{"volume": {"size": 1, "name": "json-with-charset"}}"#))?;
    assert_eq!(rest.api.send(request).await?.status, StatusCode::ACCEPTED);

    // The router's own errors are faults too: 405 keeps its Allow header.
    let reply = rest.call(Method::PATCH, &format!("/volumes/{volume}"), None, None).await?;
    reply.assert_fault(405, "badMethod", "not allowed");
    assert!(reply.headers.contains_key("allow"), "{:?}", reply.headers);
    let request = Request::get(format!("{}/volumes?{}", rest.base, "q=".repeat(9000))).body(Body::empty())?;
    rest.api.send(request).await?.assert_fault(414, "computeFault", "longer than 16 KiB");

    // Quotas only for volume types that exist.
    let reply = rest
        .call(
            Method::PUT,
            &format!("/os-quota-sets/{}", project_id("hostile")),
            None,
            Some(r#"{"quota_set": {"volumes_no-such-type": 5}}"#),
        )
        .await?;
    reply.assert_fault(400, "badRequest", "no volume type named");
    let quotas = rest.call(Method::GET, &format!("/os-quota-sets/{}", project_id("hostile")), None, None).await?;
    assert!(quotas.body["quota_set"].get("volumes_no-such-type").is_none(), "{:?}", quotas.body);

    assert_eq!(rest.volume_count().await?, 2, "only the two accepted creates made volumes");
    rest.mesh.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_match_what_they_say() -> Result<()> {
    let rest = Rest::start().await?;
    rest.create_volume(r#"{"volume": {"size": 1, "name": "plain", "metadata": {"owner": "it's mine"}}}"#).await?;
    rest.create_volume(r#"{"volume": {"size": 1, "name": "100%_sure", "metadata": {"owner": "ops"}}}"#).await?;

    // `name~` is a substring: LIKE's wildcards match only themselves.
    assert_eq!(rest.volume_names("name~=%25").await?, ["100%_sure"]);
    assert_eq!(rest.volume_names("name~=_").await?, ["100%_sure"]);
    assert_eq!(rest.volume_names("name~=lai").await?, ["plain"]);
    assert!(rest.volume_names("name~=%25%25").await?.is_empty());

    // Metadata filters as JSON and as Python's dict repr (what python-cinderclient sends), with a
    // value that holds a quote.
    let json = "metadata=%7B%22owner%22%3A%20%22it%27s%20mine%22%7D";
    assert_eq!(rest.volume_names(json).await?, ["plain"]);
    let python = "metadata=%7B%27owner%27%3A%20%22it%27s%20mine%22%7D";
    assert_eq!(rest.volume_names(python).await?, ["plain"]);
    let reply = rest.call(Method::GET, "/volumes/detail?metadata=%7Bnot%20a%20dict", None, None).await?;
    reply.assert_fault(400, "badRequest", "not an object of strings");
    rest.mesh.shutdown().await;
    Ok(())
}
