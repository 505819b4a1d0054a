//! Request extractors whose rejections use the API's error shape (JSON bodies, path
//! parameters, query strings, raw bodies), and the authenticated user from a bearer token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use rookery_protocol::ErrorCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::server::App;

/// A JSON object body (`Content-Type: application/json` or `application/*+json`). A missing
/// content type, malformed JSON, anything but an object, a wrong type, or a missing or unknown
/// field is a 400; a body over the limit is a 413; neither ever reaches a handler.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::bad_request("expected a request with `Content-Type: application/json`"));
        }
        let ApiBytes(body) = ApiBytes::from_request(req, state).await?;
        parse_object(&body).map(ApiJson)
    }
}

/// Whether the content type is JSON: `application/json` or `application/<anything>+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// `body` as `T`, when it is a JSON object. serde would also read a struct from a JSON array of
/// its fields' values (`[null, null]`), which no client means; that is a 400 like any other
/// shape but an object.
pub fn parse_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if trim_json_whitespace(body).first() != Some(&b'{') {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    match axum::Json::<T>::from_bytes(body) {
        Ok(axum::Json(v)) => Ok(v),
        Err(rejection) => Err(body_rejection(rejection.status(), rejection.body_text())),
    }
}

/// A whole request body up to the JSON body limit, for routes that parse it themselves. A body
/// over the limit is a 413 and a body that cannot be read a 400, in the API's error shape.
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(ApiBytes(bytes)),
            Err(rejection) => Err(body_rejection(rejection.status(), rejection.body_text())),
        }
    }
}

/// `body` without leading and trailing JSON white space (space, tab, line feed, carriage
/// return; not the form feed and vertical tab that `u8::is_ascii_whitespace` would also take).
pub fn trim_json_whitespace(body: &[u8]) -> &[u8] {
    let json_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = body.iter().position(|b| !json_space(b)).unwrap_or(body.len());
    let end = body.iter().rposition(|b| !json_space(b)).map_or(start, |i| i + 1);
    &body[start..end]
}

/// A body that could not be read or parsed: 413 `too_large` over the limit, else 400.
fn body_rejection(status: StatusCode, text: String) -> ApiError {
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE { ErrorCode::TooLarge } else { ErrorCode::BadRequest };
    ApiError::new(code, text)
}

/// Path parameters. Every parameter of the API is an id; one that cannot be decoded (invalid
/// UTF-8 after percent-decoding) names nothing, so it is a 404 like any id of the wrong shape.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rejection) if rejection.status().is_server_error() => {
                // A route whose pattern does not fit its handler: a bug, not the client's fault.
                tracing::error!(error = %rejection.body_text(), "path parameters do not fit the handler");
                Err(ApiError::internal())
            }
            Err(rejection) => Err(ApiError::not_found(rejection.body_text())),
        }
    }
}

/// A query string. A malformed one, a wrong type, a missing or an unknown parameter is a 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
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
                return Err(ApiError::rate_limited("too many writes", wait));
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
