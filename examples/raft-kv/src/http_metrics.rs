//! `GET /metrics` (the node's [`KvMetrics`] in the OpenMetrics text format, for Prometheus) and the
//! layer that times every HTTP request by route template.
//!
//! `/metrics` does not take the API token (a Prometheus scrape usually carries none; the metrics hold
//! no keys or values) and is not counted against the request limits: a scrape reads one copy of the
//! node's metrics and encodes a body whose size is bounded by the cluster's size.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http_error::error;
use crate::metrics::{HttpLabels, KvMetrics, OPENMETRICS_CONTENT_TYPE};

/// `api` with `GET /metrics` added (outside `api`'s own layers, so without its token check) and
/// every request, `/metrics` included, timed into `raftkv_http_request_duration_seconds`.
pub(crate) fn with_metrics(api: Router, metrics: KvMetrics) -> Router {
    let scrape = Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics.clone());
    api.merge(scrape)
        .layer(middleware::from_fn_with_state(metrics, time_request))
}

/// `GET /metrics`.
async fn scrape(State(metrics): State<KvMetrics>) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("encoding the metrics failed: {e}"),
        ),
    }
}

/// Times one request, labelled with its route template (never the raw path: a label value per key
/// would grow without bound), method and status.
async fn time_request(State(metrics): State<KvMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let labels = HttpLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    metrics.http_request(&labels, started.elapsed());
    response
}

/// The `method` label: the methods the API has, or `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}
