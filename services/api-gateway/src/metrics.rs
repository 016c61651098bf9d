//! The gateway's REST metrics: requests by method, route template and status, and their latency.
//! Routes are labelled by template (`/v3/{project_id}/volumes/{volume_id}`), never by the path a
//! client sent, and a request no route matched counts as `unmatched`.

use std::{sync::LazyLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};
use basalt::metrics::{LATENCY_BUCKETS, counter_vec, histogram_vec};
use prometheus::{HistogramVec, IntCounterVec};

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "basalt_rest_requests_total",
        "REST requests answered, by method, route template and status",
        &["method", "route", "status"],
    )
});
static SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "basalt_rest_request_duration_seconds",
        "Time from a REST request's arrival to its response's head, by method and route template",
        &["method", "route"],
        LATENCY_BUCKETS,
    )
});

/// The route template a request matched, handed out of the router to [`metered`].
#[derive(Clone)]
struct MatchedRoute(MatchedPath);

/// A route layer: records which template matched on the response.
pub async fn matched_route(route: MatchedPath, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.extensions_mut().insert(MatchedRoute(route));
    response
}

/// The outermost layer: counts and times every request, refused ones included.
pub async fn metered(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let route = route_of(&response);
    REQUESTS.with_label_values(&[method, route, response.status().as_str()]).inc();
    SECONDS.with_label_values(&[method, route]).observe(started.elapsed().as_secs_f64());
    response
}

/// The route template that answered `response`, or `unmatched`.
pub fn route_of(response: &Response) -> &str {
    response.extensions().get::<MatchedRoute>().map_or("unmatched", |route| route.0.as_str())
}

/// The standard methods by name; any other a client invents counts as `other`.
pub fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}
