//! `GET /metrics` on the HTTP API of an in-process cluster (MemStorage, the mock network, virtual
//! time): served without the API token, in a format an OpenMetrics parser accepts, with reads
//! counted by mode and requests timed by route template (never by raw path).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use openmetrics_parser::openmetrics::parse_openmetrics;
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use raft_kv::http::{router, ApiState};
use raft_kv::http_auth::ApiToken;
use raft_kv::Cluster;
use tower::ServiceExt;

const TOKEN: &str = "a-token-long-enough-for-the-api-1234";

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    token: bool,
) -> (StatusCode, String, String) {
    let mut request = Request::builder().method(method.clone()).uri(uri);
    if token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    }
    let body = if method == Method::PUT {
        Body::from("red")
    } else {
        Body::empty()
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

/// The value of the first sample of `family` whose labels include `labels`.
fn value(e: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    e.families.get(family)?.iter_samples().find_map(|sample| {
        let set = sample.get_labelset().ok()?;
        if !labels
            .iter()
            .all(|(n, v)| set.get_label_value(n) == Some(*v))
        {
            return None;
        }
        match &sample.value {
            OpenMetricsValue::Gauge(n) => Some(n.as_f64()),
            OpenMetricsValue::Counter(c) => Some(c.value.as_f64()),
            OpenMetricsValue::Histogram(h) => h.count.map(|c| c as f64),
            _ => None,
        }
    })
}

#[tokio::test(start_paused = true)]
async fn metrics_are_served_without_the_token_and_label_routes_by_template() {
    let mut cluster = Cluster::start([1, 2, 3], raft_core::Config::default())
        .await
        .unwrap();
    cluster.set_timeout(Duration::from_secs(10));
    cluster.initialize().await.unwrap();
    let (leader, term) = cluster.wait_for_leader(0).await.unwrap();
    let mut state = ApiState::new(
        cluster.raft(leader).expect("running").clone(),
        cluster.reader(leader).expect("known").clone(),
        BTreeMap::new(),
    );
    state.token = Some(ApiToken::new(TOKEN).expect("a valid token"));
    let app = router(state);

    // The API wants the token; /metrics does not.
    assert_eq!(
        call(&app, Method::GET, "/status", false).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, content_type, _) = call(&app, Method::GET, "/metrics", false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );

    assert_eq!(
        call(&app, Method::PUT, "/kv/apple", true).await.0,
        StatusCode::OK
    );
    let (status, _, _) = call(&app, Method::GET, "/kv/apple?consistency=stale", true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        call(&app, Method::GET, "/kv/apple", true).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, Method::GET, "/no/such/route", true).await.0,
        StatusCode::NOT_FOUND
    );

    let (_, _, text) = call(&app, Method::GET, "/metrics", false).await;
    let e = parse_openmetrics(&text).unwrap_or_else(|err| panic!("{err:?}\n{text}"));
    assert_eq!(value(&e, "raft_role", &[("role", "leader")]), Some(1.0));
    assert_eq!(value(&e, "raft_term", &[]), Some(term as f64));
    assert_eq!(value(&e, "raft_leader_id", &[]), Some(leader as f64));
    assert_eq!(value(&e, "raft_proposals", &[("outcome", "ok")]), Some(1.0));
    assert_eq!(value(&e, "raft_commit_duration_seconds", &[]), Some(1.0));
    assert_eq!(value(&e, "raftkv_reads", &[("mode", "stale")]), Some(1.0));
    assert_eq!(
        value(&e, "raftkv_reads", &[("mode", "linearizable")]),
        Some(1.0)
    );
    assert_eq!(value(&e, "raftkv_reads", &[("mode", "lease")]), Some(0.0));
    let http = "raftkv_http_request_duration_seconds";
    let put = [("route", "/kv/{key}"), ("method", "PUT"), ("status", "200")];
    assert_eq!(value(&e, http, &put), Some(1.0));
    let get = [("route", "/kv/{key}"), ("method", "GET"), ("status", "200")];
    assert_eq!(value(&e, http, &get), Some(2.0));
    let refused = [("route", "/status"), ("status", "401")];
    assert_eq!(value(&e, http, &refused), Some(1.0));
    let scrapes = [("route", "/metrics"), ("status", "200")];
    assert_eq!(value(&e, http, &scrapes), Some(1.0), "the earlier scrape");
    assert_eq!(
        value(&e, http, &[("route", "unmatched"), ("status", "404")]),
        Some(1.0)
    );
    assert!(
        !text.contains("apple") && !text.contains("/no/such"),
        "{text}"
    );
    for id in [1, 2, 3].into_iter().filter(|&id| id != leader) {
        let peer = id.to_string();
        assert!(value(&e, "raft_follower_lag_entries", &[("peer", &peer)]).is_some());
    }
    // No Raft TCP server in this process: no refused-connection counts.
    assert!(!e.families.contains_key("raft_peer_connections_refused"));
    cluster.shutdown().await;
}
