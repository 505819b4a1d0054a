//! The HTTP API of contract section 2 on the chat listener, with `/ws` beside it.

pub mod attachments;
pub mod auth_routes;
pub mod conversations;
pub mod error;
pub mod extract;
pub mod users;
pub mod web;
pub mod write_limit;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use crate::server::App;

/// Largest JSON body of an API request. Larger ones get 413 `too_large`.
pub const MAX_JSON_BODY: usize = 256 * 1024;

/// The chat listener's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(web::index))
        .route("/app.js", get(web::app_js))
        .route("/rookery-client.js", get(web::client_js))
        .route("/style.css", get(web::style))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/auth/signup", post(auth_routes::signup))
        .route("/api/auth/login", post(auth_routes::login))
        .route("/api/auth/refresh", post(auth_routes::refresh))
        .route("/api/auth/logout", post(auth_routes::logout))
        .route("/api/users", get(users::search))
        .route("/api/users/me", get(users::me).patch(users::patch_me).delete(users::delete_me))
        .route("/api/users/{id}", get(users::by_id))
        .route("/api/conversations", post(conversations::create).get(conversations::list))
        .route("/api/conversations/{id}", get(conversations::get).patch(conversations::patch))
        .route("/api/conversations/{id}/members", post(conversations::add_members))
        .route("/api/conversations/{id}/members/{user_id}", delete(conversations::remove_member))
        .route("/api/conversations/{id}/messages", get(conversations::messages).post(conversations::send))
        .route(
            "/api/conversations/{id}/messages/{msg_id}",
            axum::routing::patch(conversations::edit_message).delete(conversations::delete_message),
        )
        .route("/api/attachments", post(attachments::upload).layer(DefaultBodyLimit::disable()))
        .route("/api/attachments/{id}", get(attachments::download))
        .route("/ws", get(crate::gateway::upgrade))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn_with_state(app.clone(), count_requests))
        .with_state(app)
}

async fn healthz(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "node_id": &*app.hub.node_id}))
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if let Some(c) = app.hub.cluster() {
        if !c.view().redis_up {
            return error::ApiError::new(rookery_protocol::ErrorCode::Unavailable, "Redis is not answering")
                .into_response();
        }
    }
    match app.store.ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
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
