//! The HTTP API's bearer token (`raft_kv::http_auth`): with a token, a request without it, or with
//! another, is a JSON `401` and proposes nothing; with it, the API answers as usual, and the bundled
//! client sends it.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use raft_kv::http::{router, ApiState};
use raft_kv::http_auth::ApiToken;
use raft_kv::Cluster;
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "s3cret-token-0123456789";

async fn guarded_api() -> (Cluster, Router) {
    let mut cluster = Cluster::start([1], raft_core::Config::default())
        .await
        .unwrap();
    cluster.set_timeout(Duration::from_secs(10));
    cluster.initialize().await.unwrap();
    let (leader, _) = cluster.wait_for_leader(0).await.unwrap();
    let mut api = ApiState::new(
        cluster.raft(leader).expect("running").clone(),
        cluster.reader(leader).expect("known").clone(),
        BTreeMap::from([(1, "node1:8001".to_string())]),
    );
    api.token = Some(ApiToken::new(TOKEN).unwrap());
    (cluster, router(api))
}

async fn put(app: &Router, authorization: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(Method::PUT).uri("/kv/apple");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from("red")).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}

#[tokio::test(start_paused = true)]
async fn only_requests_with_the_token_are_served() {
    let (cluster, app) = guarded_api().await;
    let before = cluster.raft(1).unwrap().metrics().borrow().last_log_id;
    for wrong in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some("Basic czNjcmV0"),
        Some(TOKEN),
    ] {
        let (status, body) = put(&app, wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}");
        assert_eq!(body["error"], "unauthorized");
    }
    assert_eq!(
        cluster.raft(1).unwrap().metrics().borrow().last_log_id,
        before,
        "nothing was proposed"
    );
    let (status, body) = put(&app, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["value"], "red");
}
