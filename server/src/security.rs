//! Web security: response headers for every answer, and the `Origin` check
//! on WebSocket upgrades.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The app's content security policy: no inline script, no framing, and
/// connections only to this server. Inline styles stay allowed because
/// CodeMirror and its collaboration extension inject their styles at run
/// time.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers to every response.
pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Share links carry a token in the URL: never leak it to other sites.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Whether a WebSocket upgrade's `Origin` is acceptable.
///
/// Browsers always send `Origin` on WebSocket upgrades; other clients (the
/// CLI, bots, yrs clients) usually do not, and are let through: their
/// token is what protects them. A browser origin must be this server's own
/// (the `Host` the request was sent to, over http or https) or one of
/// `allowed` (`--allowed-origin`), so that a page on another site cannot
/// open a socket with a victim's `?token=`.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok())
        && (origin == format!("http://{host}") || origin == format!("https://{host}"))
    {
        return Ok(());
    }
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    Err(format!(
        "WebSocket origin `{origin}` is not allowed; add it with --allowed-origin (COMMANDPOST_ALLOWED_ORIGINS)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        h
    }

    #[test]
    fn same_origin_and_allowlisted_origins_pass_others_do_not() {
        let allowed = vec!["https://status.example.com".to_owned()];
        assert!(origin_allowed(&headers(None, "cp:8080"), &allowed).is_ok());
        assert!(origin_allowed(&headers(Some("http://cp:8080"), "cp:8080"), &allowed).is_ok());
        assert!(origin_allowed(&headers(Some("https://cp:8080"), "cp:8080"), &allowed).is_ok());
        assert!(
            origin_allowed(
                &headers(Some("https://status.example.com"), "cp:8080"),
                &allowed
            )
            .is_ok()
        );
        let refused = origin_allowed(&headers(Some("http://evil.example"), "cp:8080"), &allowed);
        assert!(refused.unwrap_err().contains("--allowed-origin"));
        // A different port is a different origin.
        assert!(origin_allowed(&headers(Some("http://cp:9090"), "cp:8080"), &allowed).is_err());
        assert!(origin_allowed(&headers(Some("null"), "cp:8080"), &[]).is_err());
    }
}
