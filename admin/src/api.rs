//! The admin API under `/admin/api/`: read the node, moderate, read the audit log. Every route
//! needs the admin token (checked in constant time by the router's middleware).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rookery_actors::moderation::{Action, ModerationError};
use rookery_store::{HistoryQuery, StoreError};
use serde::Deserialize;

use crate::{error, Console};

/// The identity recorded in the audit log for actions taken with the admin token.
const ADMIN: &str = "admin";

fn store_error(e: StoreError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &e.to_string())
}

fn moderation_error(e: ModerationError) -> Response {
    match e {
        ModerationError::NotFound(what) => error(StatusCode::NOT_FOUND, "not_found", &format!("no such {what}")),
        ModerationError::Invalid(m) => error(StatusCode::BAD_REQUEST, "bad_request", &m),
        ModerationError::Store(e) => store_error(e),
        ModerationError::Refused(code, m) => {
            error(StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST), code.as_str(), &m)
        }
    }
}

/// A refused admin request (400) and why.
pub struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, "bad_request", &self.0)
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, BadRequest> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| BadRequest(e.to_string()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Search {
    #[serde(default)]
    q: String,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /admin/api/users?q=`: users by username or display-name prefix (all users when empty).
pub async fn users(State(c): State<Arc<Console>>, Query(s): Query<Search>) -> Response {
    let limit = s.limit.unwrap_or(50).clamp(1, 200);
    match c.hub.store.search_users(s.q.trim(), s.cursor.as_deref(), limit).await {
        Ok((users, next)) => {
            let users: Vec<_> = users
                .into_iter()
                .map(|u| {
                    let online = c.hub.sessions.is_online(&u.id);
                    let banned = c.hub.bans.of(&u.id).is_some();
                    serde_json::json!({"user": u, "online": online, "banned": banned})
                })
                .collect();
            Json(serde_json::json!({"users": users, "next_cursor": next})).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// `GET /admin/api/users/{id}`: the user, their sessions, ban and mutes.
pub async fn user(State(c): State<Arc<Console>>, Path(id): Path<String>) -> Response {
    let store = &c.hub.store;
    let user = match store.user(&id).await {
        Ok(Some(u)) => u.user,
        Ok(None) => return error(StatusCode::NOT_FOUND, "not_found", "no such user"),
        Err(e) => return store_error(e),
    };
    let sessions: Vec<_> = c
        .hub
        .sessions
        .of_user(&id)
        .iter()
        .map(|s| serde_json::json!({"session_id": &*s.addr.session_id, "node_id": &*s.addr.node_id}))
        .collect();
    let mut mutes = Vec::new();
    for conv in store.user_conversations(&id).await.unwrap_or_default() {
        for (u, m) in store.mutes(&conv).await.unwrap_or_default() {
            if u == id && m.active(rookery_actors::now_ms()) {
                mutes.push(serde_json::json!({"conv": conv, "mute": m}));
            }
        }
    }
    Json(serde_json::json!({"user": user, "sessions": sessions, "ban": c.hub.bans.of(&id), "mutes": mutes}))
        .into_response()
}

/// `GET /admin/api/conversations?q=`: conversations whose id or title starts with `q`
/// (case-insensitive), from the first `limit` after `cursor`.
pub async fn conversations(State(c): State<Arc<Console>>, Query(s): Query<Search>) -> Response {
    let limit = s.limit.unwrap_or(50).clamp(1, 200);
    let q = s.q.trim().to_lowercase();
    match c.hub.store.list_conversations(s.cursor.as_deref(), 2000).await {
        Ok(all) => {
            let next = all.last().map(|m| m.id.clone());
            let mut out = Vec::new();
            for m in all {
                let title = m.title.clone().unwrap_or_default().to_lowercase();
                if q.is_empty() || m.id.starts_with(&q) || title.starts_with(&q) {
                    let members = c.hub.store.members(&m.id).await.map(|v| v.len()).unwrap_or(0);
                    let active = c.hub.router.is_running(&m.id);
                    let owner = match c.hub.cluster() {
                        Some(cl) => cl.owner(&m.id).to_string(),
                        None => c.hub.node_id.to_string(),
                    };
                    out.push(
                        serde_json::json!({"conversation": m, "members": members, "active": active, "node": owner}),
                    );
                    if out.len() == limit {
                        break;
                    }
                }
            }
            Json(serde_json::json!({"conversations": out, "next_cursor": next})).into_response()
        }
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Page {
    before_seq: Option<u64>,
    limit: Option<usize>,
}

/// `GET /admin/api/conversations/{id}/messages`: a page of history (deleted ones without body).
pub async fn messages(State(c): State<Arc<Console>>, Path(id): Path<String>, Query(p): Query<Page>) -> Response {
    let q = HistoryQuery { after_seq: None, before_seq: p.before_seq, limit: p.limit.unwrap_or(50).clamp(1, 500) };
    match c.hub.store.messages(&id, q).await {
        Ok((messages, has_more)) => {
            Json(serde_json::json!({"messages": messages, "has_more": has_more})).into_response()
        }
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sanction {
    reason: String,
    duration_s: Option<u64>,
    user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    #[serde(default)]
    reason: String,
}

/// A JSON body whose `reason` must not be blank (every moderation action says why).
fn reasoned_body<T: serde::de::DeserializeOwned>(body: &[u8], reason: impl Fn(&T) -> &str) -> Result<T, BadRequest> {
    let t: T = json_body(body)?;
    need_reason(reason(&t))?;
    Ok(t)
}

fn need_reason(reason: &str) -> Result<(), BadRequest> {
    if reason.trim().is_empty() || reason.chars().count() > 500 {
        return Err(BadRequest("a reason of 1-500 characters is required".into()));
    }
    Ok(())
}

/// `POST /admin/api/users/{id}/ban {reason, duration_s?}`.
pub async fn ban(State(c): State<Arc<Console>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let s: Sanction = match reasoned_body(&body, |b: &Sanction| &b.reason) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    match c.hub.ban(&Action { admin: ADMIN, reason: &s.reason }, &id, s.duration_s).await {
        Ok(ban) => Json(serde_json::json!({"ban": ban})).into_response(),
        Err(e) => moderation_error(e),
    }
}

/// `DELETE /admin/api/users/{id}/ban`.
pub async fn unban(State(c): State<Arc<Console>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let r: Reason = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    match c.hub.unban(&Action { admin: ADMIN, reason: &r.reason }, &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => moderation_error(e),
    }
}

/// `DELETE /admin/api/users/{id} {reason}`: deletes the account (see `Hub::delete_account`).
pub async fn delete_account(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let r: Reason = match reasoned_body(&body, |b: &Reason| &b.reason) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    match c.hub.delete_account(&Action { admin: ADMIN, reason: &r.reason }, &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => moderation_error(e),
    }
}

/// `POST /admin/api/users/{id}/kick {reason}`.
pub async fn kick(State(c): State<Arc<Console>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let r: Reason = match reasoned_body(&body, |b: &Reason| &b.reason) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    match c.hub.kick(&Action { admin: ADMIN, reason: &r.reason }, &id).await {
        Ok(n) => Json(serde_json::json!({"sessions_closed": n})).into_response(),
        Err(e) => moderation_error(e),
    }
}

/// `POST /admin/api/conversations/{id}/mute {user_id, duration_s?, reason}`.
pub async fn mute(State(c): State<Arc<Console>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let s: Sanction = match reasoned_body(&body, |b: &Sanction| &b.reason) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Some(user) = s.user_id else { return error(StatusCode::BAD_REQUEST, "bad_request", "user_id is required") };
    match c.hub.mute(&Action { admin: ADMIN, reason: &s.reason }, &id, &user, s.duration_s).await {
        Ok(m) => Json(serde_json::json!({"mute": m})).into_response(),
        Err(e) => moderation_error(e),
    }
}

/// `DELETE /admin/api/conversations/{id}/mute/{user_id}`.
pub async fn unmute(State(c): State<Arc<Console>>, Path((id, user)): Path<(String, String)>) -> Response {
    match c.hub.unmute(&Action { admin: ADMIN, reason: "" }, &id, &user).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => moderation_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowMode {
    seconds: u32,
}

/// `PUT /admin/api/conversations/{id}/slow_mode {seconds}` (0 turns it off).
pub async fn slow_mode(State(c): State<Arc<Console>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let s: SlowMode = match json_body(&body) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match c.hub.slow_mode(&Action { admin: ADMIN, reason: "" }, &id, s.seconds).await {
        Ok(()) => Json(serde_json::json!({"slow_mode_s": s.seconds})).into_response(),
        Err(e) => moderation_error(e),
    }
}

/// `DELETE /admin/api/messages/{conv}/{id} {reason}`.
pub async fn delete_message(
    State(c): State<Arc<Console>>,
    Path((conv, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let r: Reason = match reasoned_body(&body, |b: &Reason| &b.reason) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    match c.hub.delete_message(&Action { admin: ADMIN, reason: &r.reason }, &conv, &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => moderation_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    limit: Option<usize>,
    before: Option<i64>,
}

/// `GET /admin/api/audit?limit=&before=`: newest first.
pub async fn audit(State(c): State<Arc<Console>>, Query(p): Query<AuditPage>) -> Response {
    match c.hub.store.audit(p.before, p.limit.unwrap_or(50).clamp(1, 500)).await {
        Ok(entries) => Json(serde_json::json!({"entries": entries})).into_response(),
        Err(e) => store_error(e),
    }
}

/// `GET /admin/api/nodes`: the members of the cluster as this node sees them (this node alone
/// when not in cluster mode), with their load and heartbeat age, and this node's cross-node
/// traffic counters.
pub async fn nodes(State(c): State<Arc<Console>>) -> Response {
    let now = rookery_actors::now_ms();
    let m = &c.metrics;
    let traffic = serde_json::json!({
        "envelopes_in": m.cluster_envelopes.with_label_values(&["in"]).get(),
        "envelopes_out": m.cluster_envelopes.with_label_values(&["out"]).get(),
        "batches_in": m.cluster_batches.with_label_values(&["in"]).get(),
        "batches_out": m.cluster_batches.with_label_values(&["out"]).get(),
        "dropped": m.cluster_dropped.get(),
        "resyncs": m.cluster_resyncs.get(),
    });
    let Some(cluster) = c.hub.cluster() else {
        return Json(serde_json::json!({
            "mode": "standalone",
            "self": &*c.hub.node_id,
            "redis_up": null,
            "traffic": traffic,
            "nodes": [{
                "node_id": &*c.hub.node_id,
                "address": c.chat_addr,
                "last_heartbeat_ms": now,
                "heartbeat_age_ms": 0,
                "load": {"connections": m.ws_connections.get(), "conversations": c.hub.router.running()},
            }],
        }))
        .into_response();
    };
    let view = cluster.view();
    let nodes: Vec<serde_json::Value> = view
        .nodes
        .iter()
        .map(|n| {
            let own = n.id == c.hub.node_id;
            let (sessions, conversations) = if own {
                (c.hub.sessions.len() as u64, c.hub.router.running() as u64)
            } else {
                (n.sessions, n.conversations)
            };
            serde_json::json!({
                "node_id": &*n.id,
                "address": n.chat_addr,
                "admin_address": n.admin_addr,
                "started_ms": n.started_ms,
                "last_heartbeat_ms": n.heartbeat_ms,
                "heartbeat_age_ms": if own { 0 } else { (now - n.heartbeat_ms).max(0) },
                "load": {"connections": sessions, "conversations": conversations},
            })
        })
        .collect();
    Json(serde_json::json!({
        "mode": "cluster",
        "self": &*c.hub.node_id,
        "redis_up": view.redis_up,
        "traffic": traffic,
        "nodes": nodes,
    }))
    .into_response()
}
