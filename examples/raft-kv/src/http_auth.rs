//! The HTTP API's bearer token: with a token configured, every request must carry
//! `Authorization: Bearer <token>`; anything else is answered `401 unauthorized`. The comparison takes
//! the same time whatever the token's content, so an attacker cannot find it byte by byte by timing.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::http_error::error;

/// The shortest token `serve` accepts: a token is the only credential of the API.
pub const MIN_TOKEN_LEN: usize = 16;

/// The token clients must present.
#[derive(Clone)]
pub struct ApiToken(Arc<str>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

impl ApiToken {
    /// A token; surrounding whitespace (a trailing newline in a file) is not part of it.
    ///
    /// # Errors
    /// If it is shorter than [`MIN_TOKEN_LEN`] or holds characters a header value cannot carry.
    pub fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the API token must be at least {MIN_TOKEN_LEN} characters"
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the API token must be printable ASCII without spaces".into());
        }
        Ok(ApiToken(token.into()))
    }

    /// The token in the file at `path`.
    ///
    /// # Errors
    /// If the file cannot be read or its content is not a valid token.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the API token file {}: {e}", path.display()))?;
        Self::new(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The `Authorization` header value that carries it.
    pub fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!("Bearer {}", self.0)).ok()
    }

    fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }
}

/// Whether `a == b`, in a time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Middleware: lets a request through only with the right bearer token (when one is configured).
pub(crate) async fn require_token(
    State(token): State<Option<ApiToken>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    if presented.is_some_and(|p| token.matches(p)) {
        return next.run(request).await;
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this API needs `Authorization: Bearer <token>` with the node's API token",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Checks that an API reachable from other machines is not left open: a non-loopback `http_addr`
/// needs a token, unless `insecure` says otherwise.
///
/// # Errors
/// The refusal, in words.
pub fn check_exposure(
    http_addr: SocketAddr,
    token: Option<&ApiToken>,
    insecure: bool,
) -> Result<(), String> {
    if http_addr.ip().is_loopback() || token.is_some() || insecure {
        return Ok(());
    }
    Err(format!(
        "--http-addr {http_addr} is reachable from other machines: give --api-token-file, bind to \
         loopback, or pass --insecure"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_and_length() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abcdef", b"abcde"));
    }

    #[test]
    fn a_token_is_long_printable_and_trimmed() {
        assert!(ApiToken::new("short").is_err());
        assert!(ApiToken::new("with a space in it, long enough").is_err());
        let t = ApiToken::new("  0123456789abcdef\n").unwrap();
        assert!(t.matches(b"0123456789abcdef"));
    }

    #[test]
    fn an_api_open_to_other_machines_needs_a_token_or_insecure() {
        let public: SocketAddr = "0.0.0.0:8001".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        let token = ApiToken::new("0123456789abcdef").unwrap();
        assert!(check_exposure(local, None, false).is_ok());
        assert!(check_exposure(public, None, false).is_err());
        assert!(check_exposure(public, Some(&token), false).is_ok());
        assert!(check_exposure(public, None, true).is_ok());
    }
}
