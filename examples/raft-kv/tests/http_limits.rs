//! What one HTTP client may take of a node (`raft_kv::http_limits`, `raft_kv::http_server`): wrong
//! methods, slow bodies and too many requests get JSON errors; slow headers and connections over the
//! cap are cut, while other clients are still served. And the bearer token (`raft_kv::http_auth`):
//! a request without it, or with another, is a JSON `401` and proposes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use raft_kv::http::{router, ApiState, MAX_BODY_BYTES};
use raft_kv::http_auth::ApiToken;
use raft_kv::http_limits::HttpLimits;
use raft_kv::Cluster;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// The API of a one-node cluster's leader, with `configure` applied to its state.
async fn one_node_api(configure: impl FnOnce(&mut ApiState)) -> (Cluster, Router) {
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
    configure(&mut api);
    (cluster, router(api))
}

async fn leader_api(limits: HttpLimits) -> (Cluster, Router) {
    one_node_api(|api| api.limits = limits).await
}

async fn json_of(response: axum::response::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"));
    (status, json)
}

/// A body that never finishes arriving.
fn stalled_body() -> Body {
    Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>())
}

#[tokio::test(start_paused = true)]
async fn a_method_a_route_does_not_take_is_a_json_405() {
    let (_cluster, app) = leader_api(HttpLimits::default()).await;
    let request = Request::builder()
        .method(Method::PATCH)
        .uri("/kv/apple")
        .body(Body::empty())
        .unwrap();
    let (status, body) = json_of(app.oneshot(request).await.unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"], "method_not_allowed");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_does_not_arrive_in_time_is_a_json_408() {
    let limits = HttpLimits {
        body_read_timeout: Duration::from_secs(2),
        ..HttpLimits::default()
    };
    let (_cluster, app) = leader_api(limits).await;
    let request = Request::builder()
        .method(Method::PUT)
        .uri("/kv/apple")
        .body(stalled_body())
        .unwrap();
    let started = tokio::time::Instant::now();
    let (status, body) = json_of(app.oneshot(request).await.unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(body["error"], "request_timeout");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

/// A body that announces `length` bytes (as a `Content-Length` does) and never sends them.
struct Announced {
    length: u64,
}

impl axum::body::HttpBody for Announced {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.length)
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_announcing_more_than_the_limit_is_a_json_413_before_any_of_it_is_read() {
    let (_cluster, app) = leader_api(HttpLimits::default()).await;
    let put = |length: u64| {
        Request::builder()
            .method(Method::PUT)
            .uri("/kv/apple")
            .body(Body::new(Announced { length }))
            .unwrap()
    };
    let started = tokio::time::Instant::now();
    let (status, body) = json_of(app.clone().oneshot(put(100 * 1024 * 1024)).await.unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "payload_too_large");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "answered without waiting for the body"
    );
    // A body announcing the limit exactly is read (and here never arrives).
    let (status, _) = json_of(app.oneshot(put(MAX_BODY_BYTES as u64)).await.unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn requests_over_the_concurrency_cap_are_a_json_503_and_the_cap_frees_up() {
    let limits = HttpLimits {
        max_concurrent_requests: 1,
        body_read_timeout: Duration::from_secs(5),
        ..HttpLimits::default()
    };
    let (_cluster, app) = leader_api(limits).await;
    // One request holds the only slot while its body trickles in.
    let slow = tokio::spawn(
        app.clone().oneshot(
            Request::builder()
                .method(Method::PUT)
                .uri("/kv/slow")
                .body(stalled_body())
                .unwrap(),
        ),
    );
    tokio::task::yield_now().await;
    let get = || {
        Request::builder()
            .uri("/kv/apple")
            .body(Body::empty())
            .unwrap()
    };
    let (status, body) = json_of(app.clone().oneshot(get()).await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "overloaded");
    // Once it times out, the slot is free again.
    let (status, _) = json_of(slow.await.unwrap().unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    let (status, _) = json_of(app.oneshot(get()).await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "served: the key is absent");
}

/// A server with `limits` and a one-route app on an ephemeral loopback port; returns its address and
/// the sender that stops it.
async fn serve(limits: HttpLimits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/", get(|| async { "ok" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(raft_kv::http_server::serve(listener, app, limits, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Sends a GET / on `stream` and returns the status line.
async fn get_root(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Whether the server closes `stream` within `within` without answering anything.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_others_still_served() {
    let limits = HttpLimits {
        max_connections: 2,
        ..HttpLimits::default()
    };
    let (addr, _stop) = serve(limits).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_root(&mut first).await, "HTTP/1.1 200 OK");
    let _idle = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut over, Duration::from_secs(2)).await);
    // The connections within the cap keep working.
    assert_eq!(get_root(&mut first).await, "HTTP/1.1 200 OK");
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut next = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_root(&mut next).await, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn a_client_slow_to_send_its_headers_is_disconnected() {
    let limits = HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let (addr, _stop) = serve(limits).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(3)).await);
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    let mut prompt = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_root(&mut prompt).await, "HTTP/1.1 200 OK");
}

const TOKEN: &str = "s3cret-token-0123456789";

async fn put_with(app: &Router, authorization: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(Method::PUT).uri("/kv/apple");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    json_of(
        app.clone()
            .oneshot(request.body(Body::from("red")).unwrap())
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn with_a_token_only_requests_carrying_it_are_served() {
    let (cluster, app) = one_node_api(|api| api.token = Some(ApiToken::new(TOKEN).unwrap())).await;
    let before = cluster.raft(1).unwrap().metrics().borrow().last_log_id;
    for wrong in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some("Basic czNjcmV0"),
        Some(TOKEN),
    ] {
        let (status, body) = put_with(&app, wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}");
        assert_eq!(body["error"], "unauthorized");
    }
    assert_eq!(
        cluster.raft(1).unwrap().metrics().borrow().last_log_id,
        before,
        "nothing was proposed"
    );
    let (status, body) = put_with(&app, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["value"], "red");
}
