//! The HTTP API of contract section 2 on the chat listener, with `/ws` beside it.

pub mod attachments;
pub mod auth_routes;
pub mod conversations;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod users;
pub mod web;
pub mod write_limit;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::server::App;
use error::ErrorBody;

/// Largest JSON body of an API request. Larger ones get 413 `too_large`.
pub const MAX_JSON_BODY: usize = 256 * 1024;

/// The chat listener's routes: the API (each route documented, see [`openapi`]) and the web
/// client's files.
pub fn router(app: Arc<App>) -> Router {
    let api: Router<Arc<App>> = openapi::api_routes().into();
    api.route("/", get(web::index))
        .route("/app.js", get(web::app_js))
        .route("/rookery-client.js", get(web::client_js))
        .route("/style.css", get(web::style))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn_with_state(app.clone(), count_requests))
        .with_state(app)
}

/// What `/healthz` answers.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
    /// The node's id (`--node-id`).
    node_id: String,
}

/// What `/readyz` answers when the node is ready.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// Always `ready`.
    #[schema(example = "ready")]
    status: &'static str,
}

/// Liveness: answers while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    responses((status = 200, description = "The process runs", body = Health)),
)]
async fn healthz(State(app): State<Arc<App>>) -> Json<Health> {
    Json(Health { status: "ok", node_id: app.hub.node_id.to_string() })
}

/// Readiness: the store (and Redis, in cluster mode) answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    responses(
        (status = 200, description = "The store (and Redis, in cluster mode) answers", body = Ready),
        (status = 503, description = "`unavailable`: the store or Redis is not answering", body = ErrorBody),
    ),
)]
async fn readyz(State(app): State<Arc<App>>) -> Response {
    if let Some(c) = app.hub.cluster() {
        if !c.view().redis_up {
            return error::ApiError::new(rookery_protocol::ErrorCode::Unavailable, "Redis is not answering")
                .into_response();
        }
    }
    match app.store.ping().await {
        Ok(()) => Json(Ready { status: "ready" }).into_response(),
        // The reason is for operators (a full disk, a store recovering from a failed write):
        // it names no user data.
        Err(e) => error::ApiError::new(rookery_protocol::ErrorCode::Unavailable, e.to_string()).into_response(),
    }
}

/// 405, with the API's error body (code `bad_request`).
async fn method_not_allowed() -> Response {
    let mut r = error::ApiError::bad_request("method not allowed on this route").into_response();
    *r.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    r
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("no such route")
}

/// Counts requests by matched route (never the raw path) and status.
async fn count_requests(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    app.metrics.http_requests.with_label_values(&[&route, &status]).inc();
    app.metrics.http_request_seconds.with_label_values(&[&route]).observe(started.elapsed().as_secs_f64());
    response
}
