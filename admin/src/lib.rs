//! The ops console on the admin listener: Prometheus `/metrics` (no auth: bind it privately)
//! and the admin API under `/admin/api/`, which needs `Authorization: Bearer <admin token>`.
//!
//! Architecture Invariant: the console reads the node through the hub and the metrics; it never
//! reaches into sockets.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rookery_actors::{Hub, Metrics};
use subtle::ConstantTimeEq;

/// What the console needs.
#[derive(Clone)]
pub struct Console {
    pub metrics: Arc<Metrics>,
    pub hub: Arc<Hub>,
    pub admin_token: String,
}

/// The admin listener's routes.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/api/overview", get(overview))
        .with_state(Arc::new(console))
}

async fn metrics(State(c): State<Arc<Console>>) -> Response {
    c.metrics.sessions_active.set(c.hub.sessions.len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        c.metrics.render(),
    )
        .into_response()
}

/// Checks the bearer token in constant time.
fn authorised(c: &Console, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    presented.as_bytes().ct_eq(c.admin_token.as_bytes()).into()
}

async fn overview(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if !authorised(&c, &headers) {
        let body = serde_json::json!({"error": {"code": "unauthorized", "message": "admin token required"}});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    Json(serde_json::json!({
        "node_id": &*c.hub.node_id,
        "connections": c.metrics.ws_connections.get(),
        "sessions": c.hub.sessions.len(),
        "groups": c.hub.router.running(),
        "messages_received": c.metrics.messages_received.get(),
        "messages_delivered": c.metrics.messages_delivered.get(),
    }))
    .into_response()
}
