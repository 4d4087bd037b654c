//! Refuses requests that change something when a browser says they come from another site.
//!
//! Without an API token (a node on loopback, the default of `raft-kv cluster`), a web page the
//! operator visits could otherwise make the browser send `POST /admin/transfer-leader` with no
//! body to `127.0.0.1`: a "simple" cross-site request needs no CORS preflight, and a plain form
//! can send it. Browsers mark such requests: `Sec-Fetch-Site` (`cross-site` or `same-site`), and
//! an `Origin` that names the other site. So every request other than `GET`, `HEAD` and `OPTIONS`
//! is answered `403 cross_site_request` when
//! * `Sec-Fetch-Site` is `cross-site` or `same-site`, or
//! * it has an `Origin` whose host and port are not the request's `Host` (an `Origin` of `null`,
//!   sent by sandboxed pages and some redirects, included).
//!
//! Clients that are not browsers (curl, the `raft-kv` client, another node) send neither header and
//! are not affected, nor is the dashboard, whose requests are same-origin. With a token configured,
//! this is a second line: a cross-site page does not have the token.
//!
//! Not covered: DNS rebinding (a hostile name that resolves to the node makes the request
//! same-origin, `Host` included). Give the node a token when browsers that visit untrusted pages
//! can reach it.

use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::http_error::error;

/// Middleware: see the [module docs](self).
pub(crate) async fn refuse_cross_site(request: Request, next: Next) -> Response {
    if changes_state(request.method()) {
        let authority = request.uri().authority().map(|a| a.as_str().as_bytes());
        if let Some(reason) = cross_site(request.headers(), authority) {
            return error(StatusCode::FORBIDDEN, "cross_site_request", reason);
        }
    }
    next.run(request).await
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why the browser's headers show a request from another site, if they do. `authority` is the
/// request URI's (HTTP/2 carries the host there rather than in a `Host` header).
fn cross_site(headers: &HeaderMap, authority: Option<&[u8]>) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.as_bytes();
        if site.eq_ignore_ascii_case(b"cross-site") || site.eq_ignore_ascii_case(b"same-site") {
            return Some(
                "a browser sent this request from another site (Sec-Fetch-Site); this node takes \
                 changes from its own pages and from clients that are not browsers"
                    .into(),
            );
        }
    }
    let origin = headers.get(header::ORIGIN)?;
    let host = headers
        .get(header::HOST)
        .map(|h| h.as_bytes())
        .or(authority)
        .map(trim_ascii);
    match origin_authority(origin.as_bytes()) {
        Some(origin) if host.is_some_and(|host| host.eq_ignore_ascii_case(origin)) => None,
        _ => Some(
            "a browser sent this request from another origin (its Origin is not this node's Host)"
                .into(),
        ),
    }
}

/// The `host[:port]` of an `Origin` value (`scheme://host[:port]`), if it has that form.
fn origin_authority(origin: &[u8]) -> Option<&[u8]> {
    let origin = trim_ascii(origin);
    let at = origin.windows(3).position(|w| w == b"://")?;
    let authority = &origin[at + 3..];
    (!authority.is_empty() && !authority.contains(&b'/')).then_some(authority)
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn clients_that_are_not_browsers_pass() {
        assert_eq!(
            cross_site(&headers(&[("host", "127.0.0.1:8001")]), None),
            None
        );
        assert_eq!(cross_site(&HeaderMap::new(), None), None);
    }

    #[test]
    fn a_same_origin_page_passes() {
        let h = headers(&[
            ("host", "127.0.0.1:8001"),
            ("origin", "http://127.0.0.1:8001"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(cross_site(&h, None), None);
        let h = headers(&[("host", "node1:8001"), ("origin", "https://node1:8001")]);
        assert_eq!(cross_site(&h, None), None);
    }

    #[test]
    fn another_origin_or_site_is_refused() {
        for h in [
            headers(&[
                ("host", "127.0.0.1:8001"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[
                ("host", "127.0.0.1:8001"),
                ("origin", "http://127.0.0.1:9999"),
            ]),
            headers(&[("host", "127.0.0.1:8001"), ("origin", "null")]),
            headers(&[("origin", "http://127.0.0.1:8001")]),
            headers(&[("host", "127.0.0.1:8001"), ("sec-fetch-site", "cross-site")]),
            headers(&[("host", "127.0.0.1:8001"), ("sec-fetch-site", "same-site")]),
            headers(&[
                ("host", "127.0.0.1:8001"),
                ("origin", "http://127.0.0.1:8001/path"),
            ]),
        ] {
            assert!(cross_site(&h, None).is_some(), "{h:?}");
        }
    }

    #[test]
    fn an_http2_request_is_compared_with_its_uri_authority() {
        let h = headers(&[("origin", "https://node1:8001")]);
        assert_eq!(cross_site(&h, Some(b"node1:8001")), None);
        assert!(cross_site(&h, Some(b"node2:8001")).is_some());
    }

    #[test]
    fn reads_are_not_checked() {
        assert!(!changes_state(&Method::GET));
        assert!(!changes_state(&Method::HEAD));
        assert!(changes_state(&Method::POST));
        assert!(changes_state(&Method::PUT));
        assert!(changes_state(&Method::DELETE));
    }
}
