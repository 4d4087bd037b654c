//! The HTTP API (`raft_kv::http::router`) against an in-process 3-node cluster (MemStorage and the
//! mock network, virtual time): every status code of the API.

mod in_process;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use in_process::three_nodes;
use raft_kv::http::{router, ApiState, StatusBody, MAX_BODY_BYTES};
use raft_kv::Cluster;
use serde_json::{json, Value};
use tower::ServiceExt;

fn addrs() -> BTreeMap<u64, String> {
    (1..=3)
        .map(|id| (id, format!("node{id}:800{id}")))
        .collect()
}

fn api(cluster: &Cluster, id: u64) -> ApiState {
    ApiState::new(
        cluster.raft(id).expect("running").clone(),
        cluster.reader(id).expect("known").clone(),
        addrs(),
    )
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: impl Into<Body>,
    content_type: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let response = app
        .clone()
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("{uri}: body is not JSON: {bytes:?}"));
    (status, location, json)
}

#[tokio::test(start_paused = true)]
async fn reads_writes_deletes_and_cas_at_the_leader() {
    let (mut cluster, leader) = three_nodes().await;
    let app = router(api(&cluster, leader));

    let (s, _, b) = call(&app, Method::GET, "/kv/apple", Body::empty(), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"], "not_found");

    let (s, _, b) = call(&app, Method::PUT, "/kv/apple", "red", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, json!({"key": "apple", "value": "red", "previous": null}));
    let (s, _, b) = call(&app, Method::PUT, "/kv/apple", "green", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["previous"], "red");

    let (s, _, b) = call(&app, Method::GET, "/kv/apple", Body::empty(), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, json!({"key": "apple", "value": "green"}));

    // A key with a slash and a space, percent-encoded in the path.
    let (s, _, _) = call(&app, Method::PUT, "/kv/a%2Fb%20c", "v", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        cluster.read("a/b c").await.unwrap().as_deref(),
        Some("v"),
        "the key is decoded"
    );

    // Compare-and-swap: match -> 200, mismatch -> 409 with the current value, create-if-absent.
    let cas = |expected: Value, new: &str| json!({"expected": expected, "new": new}).to_string();
    let ct = Some("application/json");
    let (s, _, b) = call(
        &app,
        Method::POST,
        "/kv/apple/cas",
        cas(json!("green"), "blue"),
        ct,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b,
        json!({"key": "apple", "swapped": true, "current": "blue"})
    );
    let (s, _, b) = call(
        &app,
        Method::POST,
        "/kv/apple/cas",
        cas(json!("green"), "x"),
        ct,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        b,
        json!({"key": "apple", "swapped": false, "current": "blue"})
    );
    let (s, _, b) = call(&app, Method::POST, "/kv/pear/cas", cas(json!("x"), "y"), ct).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["current"], Value::Null);
    let (s, _, _) = call(
        &app,
        Method::POST,
        "/kv/pear/cas",
        cas(Value::Null, "y"),
        ct,
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let (s, _, b) = call(&app, Method::DELETE, "/kv/apple", Body::empty(), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, json!({"key": "apple", "previous": "blue"}));
    let (s, _, b) = call(&app, Method::DELETE, "/kv/apple", Body::empty(), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"], "not_found");

    // Status.
    let (s, _, b) = call(&app, Method::GET, "/status", Body::empty(), None).await;
    assert_eq!(s, StatusCode::OK);
    let status: StatusBody = serde_json::from_value(b).unwrap();
    assert_eq!(status.id, leader);
    assert_eq!(status.role, "leader");
    assert_eq!(status.leader, Some(leader));
    assert_eq!(status.leader_http, Some(addrs()[&leader].clone()));
    assert_eq!(status.members, vec![1, 2, 3]);
    assert!(status.last_applied >= 8 && status.commit_index >= status.last_applied);

    // A stale local read on a follower, once it has caught up.
    let follower = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
    cluster
        .wait_for_applied(&[follower], status.last_applied)
        .await
        .unwrap();
    let follower_app = router(api(&cluster, follower));
    let (s, _, b) = call(
        &follower_app,
        Method::GET,
        "/kv/pear?local=true",
        Body::empty(),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["value"], "y");
    let (s, _, _) = call(
        &follower_app,
        Method::GET,
        "/kv/apple?local=true",
        Body::empty(),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_follower_redirects_to_the_leader_with_307() {
    let (mut cluster, leader) = three_nodes().await;
    let follower = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
    // The follower learns the leader from its first heartbeat.
    cluster
        .wait_until("the follower to know the leader", |all| {
            (all[&follower].current_leader == Some(leader)).then_some(())
        })
        .await
        .unwrap();
    let app = router(api(&cluster, follower));
    let expected = format!("http://{}/kv/apple", addrs()[&leader]);
    for (method, uri, body) in [
        (Method::GET, "/kv/apple?consistency=log", ""),
        (Method::PUT, "/kv/apple", "red"),
        (Method::DELETE, "/kv/apple", ""),
    ] {
        let (s, location, b) = call(&app, method.clone(), uri, body, None).await;
        assert_eq!(s, StatusCode::TEMPORARY_REDIRECT, "{method} {uri}");
        let expected = format!("{expected}{}", uri.strip_prefix("/kv/apple").unwrap());
        assert_eq!(location.as_deref(), Some(expected.as_str()));
        assert_eq!(b["error"], "not_leader");
        assert_eq!(b["leader"], leader);
    }
    let (s, location, _) = call(
        &app,
        Method::POST,
        "/kv/apple/cas",
        r#"{"expected":null,"new":"x"}"#,
        Some("application/json"),
    )
    .await;
    assert_eq!(s, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(location, Some(format!("{expected}/cas")));
    // Nothing was proposed.
    assert_eq!(cluster.read("apple").await.unwrap(), None);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn no_known_leader_is_503() {
    // One node, never initialized: not the leader, knows no leader.
    let mut cluster = Cluster::start([1], raft_core::Config::default())
        .await
        .unwrap();
    let app = router(api(&cluster, 1));
    let (s, location, b) = call(&app, Method::PUT, "/kv/apple", "red", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(location, None);
    assert_eq!(b["error"], "no_leader");
    let (s, _, b) = call(&app, Method::GET, "/kv/apple", Body::empty(), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(b["error"], "no_leader");
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn bad_requests_get_4xx_json_errors() {
    let (mut cluster, leader) = three_nodes().await;
    let app = router(api(&cluster, leader));
    let ct = Some("application/json");

    let (s, _, b) = call(&app, Method::POST, "/kv/k/cas", "{not json", ct).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], "bad_request");
    let (s, _, b) = call(&app, Method::POST, "/kv/k/cas", r#"{"expected":null}"#, ct).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "missing field");
    assert_eq!(b["error"], "bad_request");
    let (s, _, b) = call(
        &app,
        Method::POST,
        "/kv/k/cas",
        r#"{"expected":1,"new":"x"}"#,
        ct,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "wrong type");
    assert_eq!(b["error"], "bad_request");
    let (s, _, b) = call(
        &app,
        Method::POST,
        "/kv/k/cas",
        r#"{"expected":null,"new":"x"}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "no content type");
    assert_eq!(b["error"], "bad_request");

    let (s, _, b) = call(&app, Method::PUT, "/kv/k", vec![0xff, 0xfe, 0x00], None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "non-UTF-8 value");
    assert_eq!(b["error"], "bad_request");
    let (s, _, b) = call(&app, Method::PUT, "/kv/%FF", "v", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "non-UTF-8 key");
    assert_eq!(b["error"], "bad_request");

    let big = vec![b'x'; MAX_BODY_BYTES + 1];
    let (s, _, b) = call(&app, Method::PUT, "/kv/k", big, None).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(b["error"], "payload_too_large");
    let (s, _, b) = call(
        &app,
        Method::POST,
        "/kv/k/cas",
        vec![b' '; MAX_BODY_BYTES + 1],
        ct,
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(b["error"], "payload_too_large");

    let (s, _, b) = call(&app, Method::GET, "/kv/k?local=maybe", Body::empty(), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], "bad_request");
    let (s, _, b) = call(&app, Method::GET, "/nope", Body::empty(), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"], "not_found");

    // None of it was proposed, and the node still serves.
    let (s, _, _) = call(&app, Method::PUT, "/kv/k", "fine", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cluster.read("k").await.unwrap().as_deref(), Some("fine"));
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_deposed_leader_answers_outcome_unknown_not_a_redirect() {
    let (mut cluster, leader) = three_nodes().await;
    let term = cluster.metrics(leader).unwrap().current_term;
    let mut state = api(&cluster, leader);
    state.write_timeout = Duration::from_secs(30);
    let app = router(state);

    // Cut the leader off, then propose at it: the entry cannot commit.
    cluster.router().isolate(leader);
    let pending = tokio::spawn({
        let app = app.clone();
        async move { call(&app, Method::PUT, "/kv/apple", "red", None).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The others elect a new leader; when the old one hears of it, it steps down.
    let (new_leader, _) = cluster
        .wait_until("a new leader", |all| {
            all.iter()
                .find(|(id, m)| {
                    **id != leader && m.role == raft_core::Role::Leader && m.current_term > term
                })
                .map(|(&id, m)| (id, m.current_term))
        })
        .await
        .unwrap();
    cluster.router().heal();
    let (s, location, b) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the pending request is answered")
        .unwrap();
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{b}");
    assert_eq!(location, None);
    assert_eq!(b["error"], "outcome_unknown");
    assert_ne!(new_leader, leader);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn no_answer_within_the_write_timeout_is_504() {
    let (mut cluster, leader) = three_nodes().await;
    let mut state = api(&cluster, leader);
    state.write_timeout = Duration::from_millis(100);
    let app = router(state);
    // A leader cut off from everyone cannot commit; its pending write times out first.
    cluster.router().isolate(leader);
    let (s, _, b) = call(&app, Method::PUT, "/kv/apple", "red", None).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(b["error"], "timeout");
    cluster.shutdown().await;
}

/// Sends `method uri` with browser headers and returns the status and the JSON body.
async fn call_from_browser(
    app: &Router,
    method: Method,
    uri: &str,
    browser_headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in browser_headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

/// Without a token, a page of another site must not move leadership (a body-less POST needs no
/// CORS preflight) nor write; the same requests from a client that is not a browser, or from the
/// node's own pages, go through.
#[tokio::test(start_paused = true)]
async fn a_browser_request_from_another_site_changes_nothing() {
    let (cluster, leader) = three_nodes().await;
    let app = router(api(&cluster, leader));
    let host = format!("node{leader}:800{leader}");

    for browser in [
        vec![("host", host.as_str()), ("origin", "http://evil.example")],
        vec![("host", host.as_str()), ("sec-fetch-site", "cross-site")],
        vec![("host", host.as_str()), ("origin", "null")],
    ] {
        for (method, uri) in [
            (Method::POST, "/admin/transfer-leader"),
            (Method::PUT, "/kv/k"),
            (Method::DELETE, "/kv/k"),
        ] {
            let (status, body) = call_from_browser(&app, method.clone(), uri, &browser).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {uri} {browser:?}: {body}"
            );
            assert_eq!(body["error"], "cross_site_request", "{body}");
        }
        // Reads are not changes.
        let (status, _) = call_from_browser(&app, Method::GET, "/status", &browser).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (new_leader, _) = cluster.wait_for_leader(0).await.unwrap();
    assert_eq!(new_leader, leader, "a refused request moved leadership");

    // Same origin (the dashboard) and no browser headers at all (curl) are served.
    let same_origin = format!("http://{host}");
    let (status, body) = call_from_browser(
        &app,
        Method::PUT,
        "/kv/k",
        &[
            ("host", host.as_str()),
            ("origin", same_origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_ne!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = call_from_browser(&app, Method::POST, "/admin/transfer-leader", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
