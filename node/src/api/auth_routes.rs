//! `/api/auth/*`: signup, login, refresh, logout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use rookery_actors::{new_id, now_ms};
use rookery_protocol::{ErrorCode, Session, User};
use rookery_store::{RefreshRecord, RefreshUse, StoreError, UserRecord};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{ApiJson, AuthUser};
use crate::auth::tokens::{hash_refresh_token, new_refresh_token};
use crate::server::App;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    username: String,
    password: String,
    display_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    refresh_token: String,
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

pub async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Json<Session>, ApiError> {
    let addr = peer.ip().to_string();
    let now = Instant::now();
    if let Some(wait) = app.throttle.check(&body.username, &addr, now) {
        return Err(ApiError::throttled(wait));
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
pub async fn logout(
    State(app): State<Arc<App>>,
    AuthUser(user): AuthUser,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        app.store.revoke_user_refresh(&user).await?;
    } else {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct LogoutBody {
            refresh_token: Option<String>,
        }
        let parsed: LogoutBody = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        match parsed.refresh_token {
            Some(t) => app.store.revoke_refresh(&hash_refresh_token(&t)).await?,
            None => app.store.revoke_user_refresh(&user).await?,
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
