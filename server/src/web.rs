//! The browser app, embedded in the binary.
//!
//! `build.rs` builds `web/` (Vite) into `web/dist`, and this module serves it:
//! hashed files under `/assets/` with a long cache lifetime, and `index.html`
//! for every other path that is not part of the API, so the app's own routes
//! (`/incidents/INC-1`) load it. A binary built without the app (the
//! `COMMANDPOST_SKIP_WEB` escape hatch) serves a page that says so.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};

use crate::http::ApiError;

#[derive(rust_embed::RustEmbed)]
#[folder = "../web/dist"]
#[allow_missing = true]
struct App;

/// Whether this binary carries the browser app.
pub fn is_embedded() -> bool {
    App::get("index.html").is_some()
}

/// `GET /assets/{*path}`.
pub async fn asset(Path(path): Path<String>) -> Response {
    match App::get(&format!("assets/{path}")) {
        Some(file) => {
            let mut response = file.data.into_owned().into_response();
            let headers = response.headers_mut();
            if let Ok(mime) = HeaderValue::from_str(file.metadata.mimetype()) {
                headers.insert(header::CONTENT_TYPE, mime);
            }
            // Vite puts a content hash in every asset name.
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            response
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Every other GET: the app's `index.html`; JSON 404 under `/api/`.
pub async fn app(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") || uri.path() == "/api" {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
            .into_response();
    }
    match App::get("index.html") {
        Some(file) => {
            let mut response = Html(file.data.into_owned()).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        None => Html(include_str!("index.html")).into_response(),
    }
}
