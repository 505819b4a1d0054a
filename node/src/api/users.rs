//! `/api/users/*`: profiles.

use std::sync::Arc;

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::Json;
use rookery_actors::moderation::{Action, ModerationError};
use rookery_protocol::{is_valid_id, User};
use serde::Deserialize;

use super::auth_routes::valid_display_name;
use super::error::ApiError;
use super::extract::{ApiJson, AuthUser};
use crate::server::App;

pub async fn me(State(app): State<Arc<App>>, AuthUser(user): AuthUser) -> Result<Json<User>, ApiError> {
    get_user(&app, &user).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteMe {
    password: String,
}

/// `DELETE /api/users/me {password}`: the user deletes their own account (see
/// `Hub::delete_account`). The password is asked again so that a stolen access token cannot
/// delete the account; wrong guesses count against the login throttle.
pub async fn delete_me(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<DeleteMe>,
) -> Result<StatusCode, ApiError> {
    let record = app.store.user(&user).await?.ok_or_else(|| ApiError::unauthorized("account deleted"))?;
    let (name, addr, now) = (record.user.username.clone(), peer.ip().to_string(), Instant::now());
    if let Some(wait) = app.throttle.check(&name, &addr, now) {
        return Err(ApiError::throttled(wait));
    }
    if !app.passwords.verify(body.password, Some(record.password_hash)).await {
        app.throttle.failed(&name, &addr, now);
        return Err(ApiError::forbidden("wrong password"));
    }
    app.throttle.succeeded(&name);
    let action = Action { admin: "self", reason: "deleted by the user" };
    app.hub.delete_account(&action, &user).await.map_err(|e| match e {
        ModerationError::Store(e) => ApiError::from(e),
        other => ApiError::bad_request(other.to_string()),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchMe {
    display_name: Option<String>,
    avatar: Option<String>,
}

pub async fn patch_me(
    State(app): State<Arc<App>>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<PatchMe>,
) -> Result<Json<User>, ApiError> {
    let mut u = get_user(&app, &user).await?;
    if let Some(d) = body.display_name {
        if !valid_display_name(&d) {
            return Err(ApiError::bad_request("display_name must be 1-64 printable characters"));
        }
        u.display_name = d;
    }
    match body.avatar.as_deref() {
        None => {}
        Some("") => u.avatar = None,
        Some(id) => {
            // An avatar is an image the user uploaded; it becomes readable by every signed-in user.
            let a = match rookery_protocol::is_valid_id(id) {
                true => app.store.attachment(id).await?,
                false => None,
            };
            let Some(a) = a.filter(|a| a.uploader == user) else {
                return Err(ApiError::not_found("no such attachment"));
            };
            if !a.content_type.starts_with("image/") {
                return Err(ApiError::bad_request("an avatar must be an image"));
            }
            app.store.set_attachment_public(id).await?;
            u.avatar = Some(id.to_string());
        }
    }

    app.store.update_user(u.clone()).await?;
    Ok(Json(u))
}

pub async fn by_id(State(app): State<Arc<App>>, _: AuthUser, Path(id): Path<String>) -> Result<Json<User>, ApiError> {
    get_user(&app, &id).await.map(Json)
}

pub async fn get_user(app: &App, id: &str) -> Result<User, ApiError> {
    if !is_valid_id(id) {
        return Err(ApiError::not_found("no such user"));
    }
    Ok(app.store.user(id).await?.ok_or_else(|| ApiError::not_found("no such user"))?.user)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    q: String,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /api/users?q=<prefix>&limit=<n>&cursor=<c>`: users whose username or display name
/// starts with `q` (case-insensitive), `limit` per page (default 20, at most 100), and
/// `next_cursor` when there may be more.
pub async fn search(
    State(app): State<Arc<App>>,
    _: AuthUser,
    params: Result<axum::extract::Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let axum::extract::Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let q = p.q.trim();
    if q.is_empty() || q.chars().count() > 64 || q.chars().any(char::is_control) {
        return Err(ApiError::bad_request("q must be 1-64 printable characters"));
    }
    let limit = p.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1-100"));
    }
    let (users, next) = app.store.search_users(q, p.cursor.as_deref(), limit).await?;
    Ok(Json(serde_json::json!({ "users": users, "next_cursor": next })))
}
