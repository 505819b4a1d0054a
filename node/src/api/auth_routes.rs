//! `/api/auth/*`: signup, login, refresh, logout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use rookery_actors::{new_id, now_ms};
use rookery_protocol::{ErrorCode, Session, User};
use rookery_store::{RefreshRecord, RefreshUse, StoreError, UserRecord};
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody, Forbidden, TooLarge, Unauthorized, Unavailable, WriteLimited};
use super::extract::{parse_object, trim_json_whitespace, ApiBytes, ApiJson, AuthUser};
use crate::auth::tokens::{hash_refresh_token, new_refresh_token};
use crate::server::App;

/// The body of a sign-up.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    /// 3–32 of `a-z0-9_.-`; unique, never changes.
    #[schema(pattern = r"^[a-z0-9_.-]{3,32}$", example = "alice")]
    username: String,
    /// 8–256 characters.
    #[schema(min_length = 8, max_length = 256, example = "password123")]
    password: String,
    /// 1–64 characters, no control characters, not blank. Defaults to `username`.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$",
        example = "Alice"
    )]
    display_name: Option<String>,
}

/// The body of a login. Any strings: a malformed username is refused like a wrong password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[schema(example = "alice")]
    username: String,
    #[schema(example = "password123")]
    password: String,
}

/// The body of a refresh.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// A refresh token from a Session; each works once.
    refresh_token: String,
}

/// The optional body of a logout.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutBody {
    /// This refresh token stops working (an unknown one is ignored). Without it, or `null`,
    /// every refresh token of the caller does.
    refresh_token: Option<String>,
}

/// Usernames: 3–32 of `a-z0-9_.-`.
pub fn valid_username(u: &str) -> bool {
    (3..=32).contains(&u.len())
        && u.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// Display names: 1–64 characters, no control characters.
pub fn valid_display_name(d: &str) -> bool {
    let n = d.chars().count();
    (1..=64).contains(&n) && !d.chars().any(char::is_control) && !d.trim().is_empty()
}

fn valid_password(p: &str) -> bool {
    (8..=256).contains(&p.chars().count())
}

/// Issues an access token and a fresh refresh token for `user`.
pub async fn issue_session(app: &App, user: User) -> Result<Session, ApiError> {
    let now = now_ms();
    let ttl = app.config.access_ttl.as_secs();
    let access_token = app.tokens.access(&user.id, now / 1000, ttl as i64);
    let (refresh_token, hash) = new_refresh_token();
    let expires_at_ms = now + app.config.refresh_ttl.as_millis() as i64;
    app.store.put_refresh(&hash, RefreshRecord { user_id: user.id.clone(), expires_at_ms, used: false }).await?;
    Ok(Session { user, access_token, refresh_token, expires_in: ttl })
}

/// Creates an account and signs it in. Not throttled.
#[utoipa::path(
    post,
    path = "/api/auth/signup",
    tag = "auth",
    operation_id = "signup",
    request_body = SignupBody,
    responses(
        (status = 201, description = "The account was created; its first session", body = Session),
        (status = 400, description = "`bad_request`: a malformed body or an invalid field", body = ErrorBody),
        (status = 409, description = "`conflict`: the username is taken", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn signup(
    State(app): State<Arc<App>>,
    ApiJson(body): ApiJson<SignupBody>,
) -> Result<impl IntoResponse, ApiError> {
    if !valid_username(&body.username) {
        return Err(ApiError::bad_request("username must be 3-32 characters of a-z, 0-9, _ . -"));
    }
    if !valid_password(&body.password) {
        return Err(ApiError::bad_request("password must be 8-256 characters"));
    }
    let display_name = body.display_name.unwrap_or_else(|| body.username.clone());
    if !valid_display_name(&display_name) {
        return Err(ApiError::bad_request("display_name must be 1-64 printable characters"));
    }
    // Cheap check first so a taken name costs no hash; the store re-checks atomically.
    if app.store.user_by_name(&body.username).await?.is_some() {
        return Err(ApiError::new(ErrorCode::Conflict, "username is taken"));
    }
    let password_hash = app.passwords.hash(body.password).await.map_err(|e| {
        tracing::error!(error = %e, "hashing failed");
        ApiError::internal()
    })?;
    let user = User { id: new_id(), username: body.username, display_name, avatar: None, created_at: now_ms() };
    match app.store.create_user(UserRecord { user: user.clone(), password_hash, deleted: false }).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(ApiError::new(ErrorCode::Conflict, "username is taken")),
        Err(e) => return Err(e.into()),
    }
    Ok((StatusCode::CREATED, Json(issue_session(&app, user).await?)))
}

/// Signs in with a username and password: a new session each time.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    operation_id = "login",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in", body = Session),
        (status = 400, description = "`bad_request`: a malformed body", body = ErrorBody),
        (status = 401, description = "`unauthorized`: wrong username or password (the same answer for both)", body = ErrorBody),
        (status = 403, description = "`forbidden`: the user is banned", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 429, description = "`rate_limited`: too many failed logins for this username or from this address",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until logins are accepted again"))),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Json<Session>, ApiError> {
    let addr = peer.ip().to_string();
    let now = Instant::now();
    if let Some(wait) = app.throttle.check(&body.username, &addr, now) {
        return Err(ApiError::rate_limited("too many failed logins", wait));
    }
    let record = if valid_username(&body.username) { app.store.user_by_name(&body.username).await? } else { None };
    let phc = record.as_ref().map(|r| r.password_hash.clone());
    if !app.passwords.verify(body.password, phc).await {
        app.throttle.failed(&body.username, &addr, now);
        return Err(ApiError::unauthorized("wrong username or password"));
    }
    app.throttle.succeeded(&body.username);
    let user = record.expect("verify succeeds only for a known user").user;
    if let Some(ban) = app.hub.bans.of(&user.id) {
        return Err(ApiError::sanctioned(&ban));
    }
    Ok(Json(issue_session(&app, user).await?))
}

/// Exchanges a refresh token for a new session. Refresh tokens rotate: each works once, and
/// presenting a used one revokes every refresh token of its user.
#[utoipa::path(
    post,
    path = "/api/auth/refresh",
    tag = "auth",
    operation_id = "refresh",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "A new access token and a new refresh token", body = Session),
        (status = 400, description = "`bad_request`: a malformed body", body = ErrorBody),
        (status = 401, description = "`unauthorized`: the refresh token is unknown, expired, revoked or already used", body = ErrorBody),
        (status = 403, description = "`forbidden`: the user is banned", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn refresh(
    State(app): State<Arc<App>>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Json<Session>, ApiError> {
    let hash = hash_refresh_token(&body.refresh_token);
    match app.store.use_refresh(&hash, now_ms()).await? {
        RefreshUse::Valid(record) => {
            if let Some(ban) = app.hub.bans.of(&record.user_id) {
                return Err(ApiError::sanctioned(&ban));
            }

            let user = app.store.user(&record.user_id).await?.ok_or_else(|| ApiError::unauthorized("unknown user"))?;
            Ok(Json(issue_session(&app, user.user).await?))
        }
        RefreshUse::Reused => {
            tracing::warn!("a used refresh token was presented again; the user's refresh tokens were revoked");
            Err(ApiError::unauthorized("refresh token already used"))
        }
        RefreshUse::Invalid => Err(ApiError::unauthorized("invalid or expired refresh token")),
    }
}

/// Logout: with `{refresh_token}` that token stops working; without a body every refresh token
/// of the user does. Access tokens already issued run out on their own (`access-ttl`).
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    operation_id = "logout",
    summary = "Revokes one refresh token, or all of the caller's",
    security(("bearer" = [])),
    request_body(
        content = Option<LogoutBody>,
        description = "Optional, and needs no `Content-Type`: an empty body (or `null`) revokes every refresh token \
of the caller",
    ),
    responses(
        (status = 204, description = "The refresh token (or all of the caller's) stopped working"),
        (status = 400, description = "`bad_request`: the body is not valid JSON of this shape", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = TooLarge),
        (status = 429, response = WriteLimited),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn logout(
    State(app): State<Arc<App>>,
    AuthUser(user): AuthUser,
    ApiBytes(body): ApiBytes,
) -> Result<StatusCode, ApiError> {
    // No body at all, or `null`: every refresh token. White space alone is not a JSON document.
    let token = if body.is_empty() || trim_json_whitespace(&body) == b"null" {
        None
    } else {
        parse_object::<LogoutBody>(&body)?.refresh_token
    };
    match token {
        Some(t) => app.store.revoke_refresh(&hash_refresh_token(&t)).await?,
        None => app.store.revoke_user_refresh(&user).await?,
    }
    Ok(StatusCode::NO_CONTENT)
}
