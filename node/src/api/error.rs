//! The one error type of the HTTP edge: `{"error":{"code","message"}}` with the status that
//! fits. Internal details are logged here, once, and never sent to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rookery_protocol::ErrorCode;
use rookery_store::StoreError;
use serde::Serialize;
use utoipa::{ToResponse, ToSchema};

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds, for `Retry-After` on 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    /// 429 `rate_limited`: `what` happened too often; retry after `wait` (sent as `Retry-After`).
    pub fn rate_limited(what: &str, wait: std::time::Duration) -> Self {
        let secs = retry_after_secs(wait);
        Self { code: ErrorCode::RateLimited, message: format!("{what}; retry in {secs} s"), retry_after: Some(secs) }
    }
    /// Why a banned user, or the holder of a deleted account's token, is refused.
    pub fn sanctioned(ban: &rookery_store::Sanction) -> Self {
        if ban.account_deleted {
            Self::unauthorized("account deleted")
        } else {
            Self::forbidden(format!("banned: {}", ban.reason))
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::new(ErrorCode::Conflict, format!("already exists: {what}")),
            StoreError::NotFound(what) => ApiError::not_found(format!("not found: {what}")),
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "store unavailable");
                ApiError {
                    code: ErrorCode::Unavailable,
                    message: "storage unavailable, retry later".into(),
                    retry_after: Some(1),
                }
            }
            StoreError::Fenced(_) => ApiError {
                code: ErrorCode::Unavailable,
                message: "the conversation moved to another node, retry".into(),
                retry_after: Some(1),
            },
            StoreError::Corrupt { keyspace, detail } => {
                tracing::error!(keyspace, %detail, "corrupt record");
                ApiError::internal()
            }
        }
    }
}

/// `wait` as the whole seconds of a `Retry-After` header: rounded up (retrying earlier would be
/// refused again), at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_millis().div_ceil(1000) as u64).max(1)
}

/// The body of every error answer: `{"error":{"code","message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong. Match on `code`; `message` is human-readable text that may change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message } };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

// The error answers that come from the extractors and the store, the same on every route that
// uses them; each is a reusable response of the OpenAPI document (`api/openapi.rs`). Answers
// particular to a route are described on its handler.

/// 401 `unauthorized` from the bearer token check.
#[derive(ToResponse)]
#[response(description = "`unauthorized`: missing, invalid or expired access token")]
pub struct Unauthorized(pub ErrorBody);

/// 403 `forbidden` for a banned user, from the bearer token check.
#[derive(ToResponse)]
#[response(description = "`forbidden`: the user is banned")]
pub struct Forbidden(pub ErrorBody);

/// 413 `too_large` for a JSON body over [`super::MAX_JSON_BODY`].
#[derive(ToResponse)]
#[response(description = "`too_large`: the JSON body is over 256 KiB")]
pub struct TooLarge(pub ErrorBody);

/// 429 `rate_limited` from the per-user write limit (`--api-write-rate-limit`).
#[derive(ToResponse)]
#[response(
    description = "`rate_limited`: the caller's writes are over the per-user write limit; nothing changed",
    headers(("Retry-After" = u64, description = "Seconds to wait before writing again"))
)]
pub struct WriteLimited(pub ErrorBody);

/// 503 `unavailable` when the store does not answer.
#[derive(ToResponse)]
#[response(
    description = "`unavailable`: the store (or blob store) is not answering; retry later",
    headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))
)]
pub struct Unavailable(pub ErrorBody);
