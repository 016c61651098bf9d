//! Version discovery, which every Cinder client performs before its first call: `GET /` answers
//! 300 (python-cinderclient reads it), `GET /v3` and `/v3/` answer 200 (keystoneauth and the
//! openstack CLI read those). No authentication: discovery requests carry no token.

use axum::{
    Json,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

/// The microversion range this gateway implements.
pub const MIN_MICROVERSION: &str = "3.0";
pub const MAX_MICROVERSION: &str = "3.71";

fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}")
}

pub fn versions_document(base: &str) -> Value {
    json!({
        "versions": [{
            "id": "v3.0",
            "status": "CURRENT",
            "version": MAX_MICROVERSION,
            "min_version": MIN_MICROVERSION,
            "updated": "2023-08-31T00:00:00Z",
            "links": [
                {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
                {"rel": "self", "href": format!("{base}/v3/")}
            ],
            "media-types": [
                {"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}
            ]
        }]
    })
}

pub async fn all_versions(headers: HeaderMap) -> Response {
    (StatusCode::MULTIPLE_CHOICES, Json(versions_document(&base_url(&headers)))).into_response()
}

pub async fn v3_versions(headers: HeaderMap) -> Response {
    (StatusCode::OK, Json(versions_document(&base_url(&headers)))).into_response()
}

/// Cinder's fault body for an unknown path.
pub async fn not_found() -> Response {
    let body = json!({"itemNotFound": {"code": 404, "message": "the resource could not be found"}});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
