//! The built-in web client, served from the binary on the chat listener: `/` (the app),
//! `/app.js` (its UI), `/rookery-client.js` (the reusable protocol module) and `/style.css`.
//! Nothing is loaded from elsewhere, so it works offline.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("../client/index.html");
const APP: &str = include_str!("../client/app.js");
const CLIENT: &str = include_str!("../client/rookery-client.js");
const STYLE: &str = include_str!("../client/style.css");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self' ws: wss:; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP)
}

pub async fn client_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", CLIENT)
}

pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}
