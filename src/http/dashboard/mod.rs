//! `GET /dashboard` and `GET /dashboard/{file}`: the operators' dashboard, a page of plain HTML, CSS
//! and JavaScript modules embedded in the binary (no build step, nothing fetched from elsewhere).
//! The page holds no data, so it is public; every call it makes to the API sends the operator's
//! token, which the page keeps in the browser's `sessionStorage`. See docs/dashboard.md.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;

/// One embedded file: its name under `/dashboard/`, its media type and its bytes.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

#[rustfmt::skip]
const ASSETS: &[Asset] = &[
    Asset { name: "index.html", media_type: "text/html; charset=utf-8", body: include_str!("index.html") },
    Asset { name: "dashboard.css", media_type: "text/css; charset=utf-8", body: include_str!("dashboard.css") },
    Asset { name: "app.js", media_type: JS, body: include_str!("app.js") },
    Asset { name: "api.js", media_type: JS, body: include_str!("api.js") },
    Asset { name: "pool.js", media_type: JS, body: include_str!("pool.js") },
    Asset { name: "feed.js", media_type: JS, body: include_str!("feed.js") },
    Asset { name: "travel.js", media_type: JS, body: include_str!("travel.js") },
    Asset { name: "history.js", media_type: JS, body: include_str!("history.js") },
    Asset { name: "charts.js", media_type: JS, body: include_str!("charts.js") },
];

/// Only this origin's scripts, styles and API; no inline script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn serve(name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::RouteNotFound.into_response();
    };
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.media_type));
    // The assets change with the binary: always revalidate.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /dashboard` and `GET /dashboard/`: the page.
pub async fn page() -> Response {
    serve("index.html")
}

/// `GET /dashboard/{file}`: one of the page's assets (404 for any other name).
pub async fn asset(Path(file): Path<String>) -> Response {
    serve(&file)
}
