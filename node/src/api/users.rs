//! `/api/users/*`: profiles.

use std::sync::Arc;

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::Json;
use rookery_actors::moderation::{Action, ModerationError};
use rookery_protocol::{is_valid_id, User};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth_routes::valid_display_name;
use super::error::{ApiError, ErrorBody, Forbidden, TooLarge, Unauthorized, Unavailable, WriteLimited};
use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::server::App;

/// The caller's profile.
#[utoipa::path(
    get,
    path = "/api/users/me",
    tag = "users",
    operation_id = "get_me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = User),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "`not_found`: the caller's account no longer exists", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn me(State(app): State<Arc<App>>, AuthUser(user): AuthUser) -> Result<Json<User>, ApiError> {
    get_user(&app, &user).await.map(Json)
}

/// A change of the caller's profile; absent or `null` fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMe {
    /// 1–64 characters, no control characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    display_name: Option<String>,
    /// The id of an image the caller uploaded (it becomes readable by every signed-in user), or
    /// `""` to clear the avatar.
    avatar: Option<String>,
}

/// The caller's password, asked again to delete the account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteMe {
    password: String,
}

/// Deletes the caller's account for good (see `Hub::delete_account`).
///
/// The password is asked again so that a stolen access token cannot delete the account; wrong
/// guesses count against the login throttle. From then on every token of the account is
/// refused with 401, its sessions close with 4001, its profile becomes "Deleted user" and its
/// username is free; its messages stay.
#[utoipa::path(
    delete,
    path = "/api/users/me",
    tag = "users",
    operation_id = "delete_me",
    security(("bearer" = [])),
    request_body = DeleteMe,
    responses(
        (status = 204, description = "The account is deleted"),
        (status = 400, description = "`bad_request`: a malformed body", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: wrong password, or the caller is banned", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 429, description = "`rate_limited`: too many writes, or too many wrong passwords; retry after `Retry-After` seconds", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn delete_me(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<DeleteMe>,
) -> Result<StatusCode, ApiError> {
    let record = app.store.user(&user).await?.ok_or_else(|| ApiError::unauthorized("account deleted"))?;
    let (name, addr, now) = (record.user.username.clone(), peer.ip().to_string(), Instant::now());
    if let Some(wait) = app.throttle.check(&name, &addr, now) {
        return Err(ApiError::rate_limited("too many failed logins", wait));
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

/// Changes the caller's display name or avatar.
#[utoipa::path(
    patch,
    path = "/api/users/me",
    tag = "users",
    operation_id = "patch_me",
    security(("bearer" = [])),
    request_body = PatchMe,
    responses(
        (status = 200, description = "The profile as changed", body = User),
        (status = 400, description = "`bad_request`: a malformed body, an invalid display name, or an avatar that is not an image", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "`not_found`: no such attachment among the caller's uploads, or the caller's account no longer exists", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 429, response = WriteLimited),
        (status = 503, response = Unavailable),
    ),
)]
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

/// Any user's profile, for any signed-in user.
#[utoipa::path(
    get,
    path = "/api/users/{id}",
    tag = "users",
    operation_id = "get_user",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A user id")),
    responses(
        (status = 200, description = "The user's profile", body = User),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn by_id(
    State(app): State<Arc<App>>,
    _: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<User>, ApiError> {
    get_user(&app, &id).await.map(Json)
}

pub async fn get_user(app: &App, id: &str) -> Result<User, ApiError> {
    if !is_valid_id(id) {
        return Err(ApiError::not_found("no such user"));
    }
    Ok(app.store.user(id).await?.ok_or_else(|| ApiError::not_found("no such user"))?.user)
}

/// The query of a user search. Any other parameter is a 400.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// The prefix: 1–64 characters once surrounding white space is trimmed, no control
    /// characters.
    #[param(
        pattern = r"^[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\x00-\x1f\x7f-\x9f \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\x00-\x1f\x7f-\x9f]{0,62}[^\x00-\x1f\x7f-\x9f \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$",
        example = "al"
    )]
    q: String,
    /// Users per page, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page, with the same `q`. Opaque; an unusable one is ignored.
    cursor: Option<String>,
}

/// A page of user search results.
#[derive(Serialize, ToSchema)]
pub struct UserPage {
    users: Vec<User>,
    /// Pass back as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// `q` trimmed, when it is a valid search prefix: 1–64 characters once trimmed, no control
/// characters.
pub fn valid_query(q: &str) -> Option<&str> {
    let q = q.trim();
    (!q.is_empty() && q.chars().count() <= 64 && !q.chars().any(char::is_control)).then_some(q)
}

/// `GET /api/users?q=<prefix>&limit=<n>&cursor=<c>`: users whose username or display name
/// starts with `q` (case-insensitive), `limit` per page (default 20, at most 100), and
/// `next_cursor` when there may be more.
#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    operation_id = "search_users",
    summary = "Users whose username or display name starts with `q`",
    security(("bearer" = [])),
    params(SearchParams),
    responses(
        (status = 200, description = "Users whose username or display name starts with `q`, case-insensitively", body = UserPage),
        (status = 400, description = "`bad_request`: a missing or invalid `q`, an invalid `limit`, or another parameter", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn search(
    State(app): State<Arc<App>>,
    _: AuthUser,
    ApiQuery(p): ApiQuery<SearchParams>,
) -> Result<Json<UserPage>, ApiError> {
    let Some(q) = valid_query(&p.q) else {
        return Err(ApiError::bad_request("q must be 1-64 printable characters"));
    };
    let limit = p.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1-100"));
    }
    let (users, next_cursor) = app.store.search_users(q, p.cursor.as_deref(), limit).await?;
    Ok(Json(UserPage { users, next_cursor }))
}
