//! The membership API (`GET`/`POST /admin/members`) against an in-process cluster (MemStorage and
//! the mock network, virtual time): node 4 starts empty, is added as a learner, promoted, takes
//! the lead, and node 1 is removed; every refusal has its status and error code.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use raft_kv::http::{router, ApiState};
use raft_kv::http_members::MAX_MEMBERS_BODY_BYTES;
use raft_kv::Cluster;
use serde_json::{json, Value};
use tower::ServiceExt;

/// The HTTP addresses given at start: nodes 1 to 3 only; node 4's comes from the membership.
fn addrs() -> BTreeMap<u64, String> {
    (1..=3)
        .map(|id| (id, format!("node{id}:800{id}")))
        .collect()
}

fn app(cluster: &Cluster, id: u64) -> Router {
    router(ApiState::new(
        cluster.raft(id).expect("running").clone(),
        cluster.reader(id).expect("known").clone(),
        addrs(),
    ))
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: impl Into<Body>,
) -> (StatusCode, Option<String>, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
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

async fn post(app: &Router, body: Value) -> (StatusCode, Option<String>, Value) {
    call(app, Method::POST, "/admin/members", body.to_string()).await
}

#[tokio::test(start_paused = true)]
async fn a_node_is_added_promoted_and_another_removed_through_the_api() {
    let mut cluster = Cluster::start([1, 2, 3, 4], raft_core::Config::default())
        .await
        .unwrap();
    cluster.set_timeout(Duration::from_secs(10));
    cluster.initialize_voters(&[1, 2, 3]).await.unwrap();
    let (leader, _) = cluster.wait_for_leader(0).await.unwrap();
    let follower = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
    let at_leader = app(&cluster, leader);
    let at_follower = app(&cluster, follower);
    // A write of the leader's term, so membership changes are accepted at once.
    cluster
        .write(raft_kv::KvCommand::put("a", "1"))
        .await
        .unwrap();

    let (s, _, view) = call(&at_leader, Method::GET, "/admin/members", Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(view["voters"], json!([1, 2, 3]));
    assert_eq!(view["learners"], json!([]));
    assert_eq!(view["joint"], false);
    assert_eq!(view["committed"], true);
    assert_eq!(
        view["nodes"],
        json!({}),
        "initialize() records no addresses"
    );
    assert!(view["lag"].is_object(), "the leader reports lag: {view}");
    let (_, _, view) = call(&at_follower, Method::GET, "/admin/members", Body::empty()).await;
    assert_eq!(view["lag"], Value::Null, "a follower does not");
    let (s, location, _) = call(
        &at_follower,
        Method::GET,
        "/admin/members?leader=true",
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        location.as_deref(),
        Some(format!("http://node{leader}:800{leader}/admin/members?leader=true").as_str())
    );

    // Refusals: malformed, invalid, or not possible in this membership.
    for (body, status, code) in [
        (json!({}), 400, "bad_request"),
        (json!({"promote": 4, "remove": 3}), 400, "bad_request"),
        (json!({"promote": "4"}), 400, "bad_request"),
        (json!({"promote": 0}), 400, "bad_request"),
        (json!({"voters": []}), 400, "bad_request"),
        (json!({"voters": [1, 1, 2]}), 400, "bad_request"),
        (
            json!({"add_learner": {"id": 4, "raft_addr": "nowhere", "http_addr": "node4:8004"}}),
            400,
            "bad_request",
        ),
        (
            json!({"add_learner": {"id": 4, "raft_addr": "127.0.0.1:7004", "http_addr": "x\r\ny:1"}}),
            400,
            "bad_request",
        ),
        (json!({"promote": 4}), 409, "not_a_learner"),
        (json!({"voters": [1, 2, 3, 4]}), 409, "not_a_learner"),
        (json!({"demote": 9}), 404, "not_a_member"),
        (
            json!({"add_learner": {"id": 2, "raft_addr": "127.0.0.1:7002", "http_addr": "node2:8002"}}),
            409,
            "already_a_voter",
        ),
    ] {
        let (s, _, b) = post(&at_leader, body.clone()).await;
        assert_eq!(
            (s.as_u16(), b["error"].as_str()),
            (status, Some(code)),
            "{body}: {b}"
        );
    }
    // Removing a node that is not a member is a change in force: done, nothing changes.
    let (s, _, b) = post(&at_leader, json!({"remove": 9})).await;
    assert_eq!((s, &b["voters"]), (StatusCode::OK, &json!([1, 2, 3])));
    let huge = format!(r#"{{"voters": [{}1]}}"#, " ".repeat(MAX_MEMBERS_BODY_BYTES));
    let (s, _, b) = call(&at_leader, Method::POST, "/admin/members", huge).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    let (s, _, b) = call(&at_leader, Method::POST, "/admin/members", "\u{0}\u{1}").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    // A change at a follower is redirected to the leader, nothing done.
    let add =
        json!({"add_learner": {"id": 4, "raft_addr": "127.0.0.1:7004", "http_addr": "node4:8004"}});
    let (s, location, _) = post(&at_follower, add.clone()).await;
    assert_eq!(s, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        location.as_deref(),
        Some(format!("http://node{leader}:800{leader}/admin/members").as_str())
    );

    // Node 4: learner, caught up, voter.
    let (s, _, view) = post(&at_leader, add.clone()).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["learners"], json!([4]));
    assert_eq!(
        view["nodes"]["4"],
        json!({"raft_addr": "127.0.0.1:7004", "http_addr": "node4:8004"})
    );
    let (s, _, again) = post(&at_leader, add).await;
    assert_eq!(
        (s, &again["learners"]),
        (StatusCode::OK, &json!([4])),
        "a change in force is done"
    );
    cluster
        .wait_until("node 4 to catch up", |all| {
            all.get(&leader)
                .and_then(|m| m.lag(4))
                .is_some_and(|lag| lag == 0)
                .then_some(())
        })
        .await
        .unwrap();
    let status: Value = {
        let (_, _, b) = call(&at_leader, Method::GET, "/status", Body::empty()).await;
        b
    };
    assert_eq!(status["learners"], json!([4]));
    assert_eq!(status["lag"]["4"], 0, "{status}");
    let (s, _, view) = post(&at_leader, json!({"promote": 4})).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["voters"], json!([1, 2, 3, 4]));
    assert_eq!(view["learners"], json!([]));
    assert_eq!(view["joint"], false);
    assert_eq!(view["committed"], true);

    // Node 4 leads: a follower redirects to the HTTP address the membership records for it,
    // which was never given at start.
    cluster
        .raft(leader)
        .unwrap()
        .transfer_leadership(Some(4))
        .await
        .unwrap();
    let (s, location, _) = post(&at_follower, json!({"remove": 1})).await;
    assert_eq!(s, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(location.as_deref(), Some("http://node4:8004/admin/members"));
    let (_, _, status) = call(&at_follower, Method::GET, "/status", Body::empty()).await;
    assert_eq!(status["leader_http"], "node4:8004");

    // Remove node 1, then set the voters to {2, 3, 4} again (in force: done at once).
    let at_4 = app(&cluster, 4);
    let (s, _, view) = post(&at_4, json!({"remove": 1})).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["voters"], json!([2, 3, 4]));
    let (s, _, view) = post(&at_4, json!({"voters": [4, 3, 2]})).await;
    assert_eq!((s, &view["voters"]), (StatusCode::OK, &json!([2, 3, 4])));
    // Demote and remove a learner.
    let (s, _, view) = post(&at_4, json!({"demote": 2})).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(
        (&view["voters"], &view["learners"]),
        (&json!([3, 4]), &json!([2]))
    );
    let (s, _, view) = post(&at_4, json!({"remove": 2})).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(
        (&view["voters"], &view["learners"]),
        (&json!([3, 4]), &json!([]))
    );
    // Writes still commit with the new voters.
    cluster.kill(1).await.unwrap();
    cluster.kill(2).await.unwrap();
    cluster
        .write(raft_kv::KvCommand::put("b", "2"))
        .await
        .unwrap();
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn with_a_token_membership_requests_need_it() {
    const TOKEN: &str = "s3cret-token-0123456789";
    let cluster = Cluster::start([1, 2], raft_core::Config::default())
        .await
        .unwrap();
    cluster.initialize_voters(&[1]).await.unwrap();
    cluster.wait_for_leader(0).await.unwrap();
    cluster
        .write(raft_kv::KvCommand::put("a", "1"))
        .await
        .unwrap();
    let mut api = ApiState::new(
        cluster.raft(1).unwrap().clone(),
        cluster.reader(1).unwrap().clone(),
        addrs(),
    );
    api.token = Some(raft_kv::http_auth::ApiToken::new(TOKEN).unwrap());
    let app = router(api);
    let add =
        json!({"add_learner": {"id": 2, "raft_addr": "127.0.0.1:7002", "http_addr": "node2:8002"}});
    let send = |method: Method, body: String, token: Option<&str>| {
        let mut request = Request::builder().method(method).uri("/admin/members");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        app.clone().oneshot(request.body(Body::from(body)).unwrap())
    };
    for token in [None, Some("wrong-token-0123456789")] {
        let response = send(Method::POST, add.to_string(), token).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = send(Method::GET, String::new(), token).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let membership = cluster.metrics(1).unwrap().membership;
    assert!(
        !membership.is_member(2),
        "nothing was changed: {membership}"
    );
    let response = send(Method::POST, add.to_string(), Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(cluster.metrics(1).unwrap().membership.is_learner(2));
}
