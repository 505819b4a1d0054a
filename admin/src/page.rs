//! The console web page: one self-contained HTML file, embedded in the binary (no CDN, works
//! offline). It signs in with the admin token and talks to `/admin/api/`. User content is only
//! ever inserted as text, never as HTML.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("console.html");

pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
}
