//! The dashboard's routes (`raft_kv::http_ui`) against an in-process 3-node cluster (MemStorage and
//! the mock network, virtual time): the page is served to anyone, its data and admin requests only
//! with the API token, and `/ui/cluster` reports every member.

mod in_process;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use in_process::three_nodes;
use raft_kv::cluster_view::ClusterView;
use raft_kv::http::{router, ApiState};
use raft_kv::http_auth::ApiToken;
use raft_kv::http_ui::ACTION_HEADER;
use raft_kv::Cluster;
use tower::ServiceExt;

const TOKEN: &str = "s3cret-token-0123456789";

/// Node `id`'s API with the token required. The in-process nodes record no HTTP addresses, and
/// none is given: the view can only report the other members as not reachable by HTTP.
fn app(cluster: &Cluster, id: u64) -> Router {
    let mut api = ApiState::new(
        cluster.raft(id).expect("running").clone(),
        cluster.reader(id).expect("known").clone(),
        BTreeMap::new(),
    );
    api.token = Some(ApiToken::new(TOKEN).unwrap());
    router(api)
}

/// Sends a request; returns the status, the content type and the body.
async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    token: bool,
    body: &str,
) -> (StatusCode, String, Vec<u8>) {
    let mut request = Request::builder().method(method.clone()).uri(uri);
    if token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    }
    if method == Method::POST {
        request = request.header(ACTION_HEADER, "1");
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, bytes.to_vec())
}

#[tokio::test(start_paused = true)]
async fn the_page_needs_no_token_its_data_and_actions_do() {
    let (mut cluster, leader) = three_nodes().await;
    let app = app(&cluster, leader);

    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let (status, content_type, body) = call(&app, Method::GET, path, false, "").await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(!body.is_empty(), "{path}");
    }
    let (_, _, page) = call(&app, Method::GET, "/ui", false, "").await;
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains(r#"id="leader""#) && page.contains(r#"src="/ui/app.js""#));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external resource"
    );

    for (method, path) in [
        (Method::GET, "/ui/cluster"),
        (Method::POST, "/ui/admin/transfer-leader"),
        (Method::POST, "/ui/admin/members"),
    ] {
        let (status, _, _) = call(&app, method, path, false, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // Other routes are unchanged: still behind the token.
    let (status, _, _) = call(&app, Method::GET, "/status", false, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_cluster_view_lists_every_member_and_says_why_one_is_missing() {
    let (mut cluster, leader) = three_nodes().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    for (id, role) in [(leader, "leader"), (follower, "follower")] {
        let (status, content_type, body) =
            call(&app(&cluster, id), Method::GET, "/ui/cluster", true, "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("application/json"));
        let view: ClusterView = serde_json::from_slice(&body).unwrap();
        assert_eq!(view.via, id);
        assert_eq!(view.voters, vec![1, 2, 3]);
        assert!(view.learners.is_empty() && !view.joint);
        let ids: Vec<u64> = view.members.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        for m in &view.members {
            assert!(m.voter && !m.learner);
            if m.id == id {
                // Its own status is taken as is.
                let s = m.status.as_ref().expect("own status");
                assert_eq!(s.role, role);
                assert_eq!(m.display_role(), role);
            } else {
                assert!(m.status.is_none());
                assert_eq!(m.display_role(), "unreachable");
                let error = m.error.as_deref().unwrap_or_default();
                assert!(error.contains("no HTTP address"), "{error}");
            }
        }
    }
    // An admin request is sent on to the leader's HTTP address: none is known here.
    let (status, _, body) = call(
        &app(&cluster, follower),
        Method::POST,
        "/ui/admin/transfer-leader",
        true,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "no_leader");
    // Without the dashboard's header (as another site's page would send it), nothing is done.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/ui/admin/members")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"remove": 3}"#))
        .unwrap();
    let response = app(&cluster, follower).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Bodies are bounded as the admin API's are.
    let (status, _, _) = call(
        &app(&cluster, follower),
        Method::POST,
        "/ui/admin/members",
        true,
        &" ".repeat(64 * 1024),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    cluster.shutdown().await;
}
