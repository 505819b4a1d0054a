//! Request extractors: JSON bodies whose rejections use the API's error shape, and the
//! authenticated user from a bearer token.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::Method;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::server::App;

/// A JSON body. Malformed JSON, a wrong type or a missing field is a 400; a body over the limit
/// is a 413; neither ever reaches a handler.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => {
                let status = rejection.status().as_u16();
                let code = if status == 413 {
                    rookery_protocol::ErrorCode::TooLarge
                } else {
                    rookery_protocol::ErrorCode::BadRequest
                };
                Err(ApiError::new(code, rejection.body_text()))
            }
        }
    }
}

/// The user of a request with a valid `Authorization: Bearer <access token>`.
pub struct AuthUser(pub String);

impl FromRequestParts<Arc<App>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let claims = app.tokens.verify(token).ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
        if let Some(ban) = app.hub.bans.of(&claims.sub) {
            return Err(ApiError::sanctioned(&ban));
        }
        if is_write(&parts.method) {
            if let Err(wait) = app.write_limit.take(&claims.sub, std::time::Instant::now()) {
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                return Err(ApiError {
                    code: rookery_protocol::ErrorCode::RateLimited,
                    message: format!("too many writes; retry in {secs} s"),
                    retry_after: Some(secs),
                });
            }
        }
        Ok(AuthUser(claims.sub))
    }
}

/// Requests that change something, counted by the per-user write limit.
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}
