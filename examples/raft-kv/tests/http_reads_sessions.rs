//! The read modes and client sessions of the HTTP API against an in-process 3-node cluster
//! (MemStorage and the mock network, virtual time): reads served by followers without a log entry,
//! the `consistency` parameter, `ReadError` answers, and writes applied once per `Client-Seq`.

mod in_process;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use raft_kv::http::{router, ApiState};
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

/// An answer: status, `Log-Index`, whether `Session-Duplicate: true`, JSON body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    log_index: Option<u64>,
    duplicate: bool,
    body: Value,
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if uri.ends_with("/cas") {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let log_index = response
        .headers()
        .get("log-index")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let duplicate = response.headers().get("session-duplicate").is_some();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("{uri}: body is not JSON: {bytes:?}"));
    Answer {
        status,
        log_index,
        duplicate,
        body,
    }
}

async fn three_nodes_and_a_follower() -> (Cluster, u64, u64) {
    let (cluster, leader) = in_process::three_nodes().await;
    let follower = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
    cluster
        .wait_until("the follower to know the leader", |all| {
            (all[&follower].current_leader == Some(leader)).then_some(())
        })
        .await
        .unwrap();
    (cluster, leader, follower)
}

#[tokio::test(start_paused = true)]
async fn a_follower_serves_linearizable_reads_itself_without_a_log_entry() {
    let (mut cluster, leader, follower) = three_nodes_and_a_follower().await;
    let leader_app = router(api(&cluster, leader));
    let app = router(api(&cluster, follower));
    let put = call(&leader_app, Method::PUT, "/kv/apple", "red", &[]).await;
    assert_eq!(put.status, StatusCode::OK);
    let written = put.log_index.expect("a write carries Log-Index");
    let log_before = cluster.metrics(leader).unwrap().last_log_id.index;

    for uri in [
        "/kv/apple",
        "/kv/apple?consistency=linearizable",
        "/kv/apple?consistency=lease",
        "/kv/apple?local=false",
    ] {
        // Read at once after the write: the follower may not have applied it yet, and must wait.
        let a = call(&app, Method::GET, uri, "", &[]).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}: {a:?}");
        assert_eq!(a.body, json!({"key": "apple", "value": "red"}), "{uri}");
        assert!(a.log_index.unwrap() >= written, "{uri}: {a:?}");
    }
    let a = call(&app, Method::GET, "/kv/pear", "", &[]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.body["error"], "not_found");
    assert!(a.log_index.is_some());
    assert_eq!(
        cluster.metrics(leader).unwrap().last_log_id.index,
        log_before,
        "reads wrote nothing to the log"
    );
    // `consistency=log` still goes through the log, at the leader.
    let a = call(
        &leader_app,
        Method::GET,
        "/kv/apple?consistency=log",
        "",
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.log_index, Some(log_before + 1));
    // Stale reads, both spellings.
    for uri in ["/kv/apple?consistency=stale", "/kv/apple?local=true"] {
        let a = call(&app, Method::GET, uri, "", &[]).await;
        assert!(
            matches!(a.status, StatusCode::OK | StatusCode::NOT_FOUND),
            "{a:?}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn bad_read_queries_are_400() {
    let (mut cluster, leader, _) = three_nodes_and_a_follower().await;
    let app = router(api(&cluster, leader));
    for uri in [
        "/kv/k?consistency=strong",
        "/kv/k?consistency=",
        "/kv/k?local=true&consistency=linearizable",
        "/kv/k?local=true&consistency=log",
        "/kv/k?local=maybe",
    ] {
        let a = call(&app, Method::GET, uri, "", &[]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(a.body["error"], "bad_request", "{uri}");
    }
    let a = call(
        &app,
        Method::GET,
        "/kv/k?local=true&consistency=stale",
        "",
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_read_that_cannot_be_confirmed_is_503_or_504_and_reads_nothing() {
    let (mut cluster, leader, follower) = three_nodes_and_a_follower().await;
    let mut state = api(&cluster, leader);
    state.write_timeout = Duration::from_secs(30);
    let app = router(state);
    // The leader cut off: it cannot confirm, and steps down (check-quorum) or times out.
    cluster.router().isolate(leader);
    let a = call(&app, Method::GET, "/kv/k", "", &[]).await;
    assert!(
        matches!(
            (a.status, a.body["error"].as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("leadership_lost" | "no_leader")
            ) | (StatusCode::GATEWAY_TIMEOUT, Some("timeout"))
        ),
        "{a:?}"
    );
    assert!(a.body.get("leader").is_some(), "{a:?}");
    // A follower cut off from the leader cannot ask it.
    cluster.router().heal();
    let (new_leader, _) = cluster.wait_for_leader(0).await.unwrap();
    let other = [1, 2, 3]
        .into_iter()
        .find(|&id| id != new_leader && id != follower)
        .unwrap_or(follower);
    let mut state = api(&cluster, other);
    state.write_timeout = Duration::from_millis(200);
    let app = router(state);
    cluster.router().isolate(other);
    let a = call(&app, Method::GET, "/kv/k", "", &[]).await;
    assert!(
        matches!(
            a.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ),
        "{a:?}"
    );
    cluster.router().heal();
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_uninitialized_node_answers_no_leader_to_reads() {
    let mut cluster = Cluster::start([1], raft_core::Config::default())
        .await
        .unwrap();
    let app = router(api(&cluster, 1));
    for mode in ["linearizable", "lease"] {
        let a = call(
            &app,
            Method::GET,
            &format!("/kv/k?consistency={mode}"),
            "",
            &[],
        )
        .await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(a.body["error"], "no_leader");
        assert_eq!(a.body["leader"], Value::Null);
    }
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_retried_write_is_answered_from_its_session_and_applied_once() {
    let (mut cluster, leader, _) = three_nodes_and_a_follower().await;
    let app = router(api(&cluster, leader));
    let s = |seq: &'static str| [("Client-Id", "42"), ("Client-Seq", seq)];
    let cas = r#"{"expected":null,"new":"a"}"#;

    let first = call(&app, Method::POST, "/kv/k/cas", cas, &s("1")).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert!(!first.duplicate);
    // The same CAS again: applied again it would be a 409 (the key exists now).
    let retry = call(&app, Method::POST, "/kv/k/cas", cas, &s("1")).await;
    assert_eq!(retry.status, StatusCode::OK, "{retry:?}");
    assert_eq!(retry.body, first.body);
    assert!(retry.duplicate);
    assert_eq!(
        retry.log_index, first.log_index,
        "where it was first applied"
    );

    let del = call(&app, Method::DELETE, "/kv/k", "", &s("2")).await;
    assert_eq!(del.status, StatusCode::OK);
    // Applied again it would be a 404.
    let del_retry = call(&app, Method::DELETE, "/kv/k", "", &s("2")).await;
    assert_eq!(del_retry.status, StatusCode::OK, "{del_retry:?}");
    assert_eq!(del_retry.body, json!({"key": "k", "previous": "a"}));
    assert!(del_retry.duplicate);

    let put = call(&app, Method::PUT, "/kv/k", "b", &s("3")).await;
    assert_eq!(put.status, StatusCode::OK);
    // An older number: not applied.
    let stale = call(&app, Method::PUT, "/kv/k", "old", &s("1")).await;
    assert_eq!(stale.status, StatusCode::BAD_REQUEST);
    assert_eq!(stale.body["error"], "session_stale");
    assert_eq!(stale.body["latest"], 3);
    // An unknown session past its first command.
    let expired = call(
        &app,
        Method::PUT,
        "/kv/k",
        "x",
        &[("Client-Id", "43"), ("Client-Seq", "7")],
    )
    .await;
    assert_eq!(expired.status, StatusCode::GONE);
    assert_eq!(expired.body["error"], "session_expired");
    assert_eq!(cluster.read("k").await.unwrap().as_deref(), Some("b"));
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn bad_session_headers_are_400_and_propose_nothing() {
    let (mut cluster, leader, _) = three_nodes_and_a_follower().await;
    let app = router(api(&cluster, leader));
    let before = cluster.metrics(leader).unwrap().last_log_id.index;
    let bad: &[&[(&str, &str)]] = &[
        &[("Client-Id", "1")],
        &[("Client-Seq", "1")],
        &[("Client-Id", "x"), ("Client-Seq", "1")],
        &[("Client-Id", "1"), ("Client-Seq", "0")],
        &[("Client-Id", "-1"), ("Client-Seq", "1")],
        &[("Client-Id", "1"), ("Client-Seq", "18446744073709551616")],
        &[("Client-Id", "1"), ("Client-Id", "2"), ("Client-Seq", "1")],
    ];
    for headers in bad {
        for (method, uri, body) in [
            (Method::PUT, "/kv/k", "v"),
            (Method::DELETE, "/kv/k", ""),
            (Method::POST, "/kv/k/cas", r#"{"expected":null,"new":"v"}"#),
        ] {
            let a = call(&app, method.clone(), uri, body, headers).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{method} {headers:?}");
            assert_eq!(a.body["error"], "bad_request");
        }
    }
    assert_eq!(cluster.metrics(leader).unwrap().last_log_id.index, before);
    // Reads ignore them.
    let a = call(&app, Method::GET, "/kv/k", "", &[("Client-Id", "x")]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    cluster.shutdown().await;
}
