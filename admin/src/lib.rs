//! The ops console on the admin listener: Prometheus `/metrics` (no auth: bind it privately)
//! and the admin API under `/admin/api/`, which needs `Authorization: Bearer <admin token>`.
//!
//! Architecture Invariant: the console reads the node through the hub and the metrics; it never
//! reaches into sockets.

use std::sync::Arc;
use std::time::Instant;

mod api;
mod page;
mod samples;

pub use samples::Samples;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use rookery_actors::{new_id, now_ms, Hub, Metrics};
use rookery_protocol::User;
use rookery_store::{StoreError, UserRecord};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Mints an access token for a user id (provided by the node, which owns the signing key).
pub type TokenMinter = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// What the console needs.
#[derive(Clone)]
pub struct Console {
    pub metrics: Arc<Metrics>,
    pub hub: Arc<Hub>,
    pub admin_token: String,
    pub mint_token: TokenMinter,
    /// The chat listener's address (shown in the node list).
    pub chat_addr: String,
    pub started: Instant,
    pub samples: Arc<Samples>,
}

/// Most users one load-test setup request creates.
pub const MAX_BULK_USERS: usize = 50_000;

/// The admin listener's routes.
pub fn router(console: Console) -> Router {
    let console = Arc::new(console);
    let api = Router::new()
        .route("/overview", get(overview))
        .route("/nodes", get(api::nodes))
        .route("/users", get(api::users))
        .route("/users/{id}", get(api::user).delete(api::delete_account))
        .route("/users/{id}/ban", post(api::ban).delete(api::unban))
        .route("/users/{id}/kick", post(api::kick))
        .route("/conversations", get(api::conversations))
        .route("/conversations/{id}/messages", get(api::messages))
        .route("/conversations/{id}/mute", post(api::mute))
        .route("/conversations/{id}/mute/{user_id}", delete(api::unmute))
        .route("/conversations/{id}/slow_mode", put(api::slow_mode))
        .route("/messages/{conv}/{id}", delete(api::delete_message))
        .route("/audit", get(api::audit))
        .route("/loadtest/users", post(bulk_users))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .route_layer(axum::middleware::from_fn_with_state(console.clone(), require_token));
    Router::new()
        .route("/", get(page::index))
        .route("/metrics", get(metrics))
        .nest("/admin/api", api)
        .with_state(console)
}

async fn require_token(
    State(c): State<Arc<Console>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !authorised(&c, req.headers()) {
        return unauthorised();
    }
    next.run(req).await
}

async fn metrics(State(c): State<Arc<Console>>) -> Response {
    c.metrics.sessions_active.set(c.hub.sessions.len() as i64);
    let queued: usize = c.hub.sessions.all().iter().map(|s| s.queued()).sum();
    c.metrics.outbound_queued_frames.set(queued as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], c.metrics.render()).into_response()
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

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(serde_json::json!({"error": {"code": code, "message": message}}))).into_response()
}

fn unauthorised() -> Response {
    error(StatusCode::UNAUTHORIZED, "unauthorized", "admin token required")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkUsers {
    prefix: String,
    count: usize,
}

/// `POST /admin/api/loadtest/users {prefix, count}`: creates `count` users named
/// `<prefix><i>` that cannot log in (no password) and answers their ids and access tokens, so a
/// load test needs no password hashing. Existing names are reused, so setup can be repeated.
async fn bulk_users(State(c): State<Arc<Console>>, body: axum::body::Bytes) -> Response {
    let req: BulkUsers = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
    };
    let valid_prefix = !req.prefix.is_empty()
        && req.prefix.len() <= 24
        && req.prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if !valid_prefix || req.count == 0 || req.count > MAX_BULK_USERS {
        let msg = format!("prefix must be 1-24 of a-z0-9_.- and count 1-{MAX_BULK_USERS}");
        return error(StatusCode::BAD_REQUEST, "bad_request", &msg);
    }
    let mut tasks = Vec::with_capacity(req.count);
    for i in 0..req.count {
        let store = c.hub.store.clone();
        let username = format!("{}{i}", req.prefix);
        tasks.push(tokio::spawn(async move {
            if let Some(existing) = store.user_by_name(&username).await? {
                return Ok(existing.user);
            }
            let user =
                User { id: new_id(), display_name: username.clone(), username, avatar: None, created_at: now_ms() };
            // "!" is not a PHC string: no password ever verifies against it.
            store.create_user(UserRecord { user: user.clone(), password_hash: "!".into(), deleted: false }).await?;
            Ok::<User, StoreError>(user)
        }));
    }
    let mut users = Vec::with_capacity(req.count);
    for t in tasks {
        match t.await {
            Ok(Ok(u)) => users.push(serde_json::json!({
                "id": u.id, "username": u.username, "access_token": (c.mint_token)(&u.id),
            })),
            Ok(Err(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &e.to_string()),
            Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "setup task failed"),
        }
    }
    Json(serde_json::json!({ "users": users })).into_response()
}

async fn overview(State(c): State<Arc<Console>>) -> Response {
    let series = c.samples.series();
    let last = series.last().cloned().unwrap_or_default();
    Json(serde_json::json!({
        "node_id": &*c.hub.node_id,
        "uptime_s": c.started.elapsed().as_secs(),
        "connections": c.metrics.ws_connections.get(),
        "sessions": c.hub.sessions.len(),
        "groups": c.hub.router.running(),
        "messages_received": c.metrics.messages_received.get(),
        "messages_delivered": c.metrics.messages_delivered.get(),
        "slow_consumer_disconnects": c.metrics.slow_consumer_disconnects.get(),
        "actor_restarts": {
            "conversation": c.metrics.actor_restarts.with_label_values(&["conversation"]).get(),
            "session": c.metrics.actor_restarts.with_label_values(&["session"]).get(),
        },
        "rates": {"received_per_s": last.received_per_s, "delivered_per_s": last.delivered_per_s},
                "ack_latency_ms": {"p50": last.ack_p50_ms, "p99": last.ack_p99_ms},
        "busiest_conversations": busiest(&c.hub, 10),
        "recent_events": c.metrics.recent_events(),

        "series": series,
    }))
    .into_response()
}

/// The `n` running conversations with the most messages in the last tick (about a second).
fn busiest(hub: &Hub, n: usize) -> Vec<serde_json::Value> {
    let mut all: Vec<(String, u64)> = hub.activity.iter().map(|e| (e.key().to_string(), *e.value())).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.into_iter().take(n).map(|(id, per_s)| serde_json::json!({"id": id, "messages_per_s": per_s})).collect()
}
