//! Error codes (shared by HTTP bodies and WebSocket `error` frames) and WebSocket close codes.

use serde::{Deserialize, Serialize};

/// The `code` of an error, as it appears in `{"error":{"code":...}}` HTTP bodies and in
/// WebSocket `error` frames.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    RateLimited,
    Unavailable,
    Internal,
    /// The sender is muted in this conversation (WebSocket only).
    Muted,
    /// The sender is banned (WebSocket only).
    Banned,
    /// Slow mode is on and the sender must wait `retry_after_ms`.
    SlowMode,
    /// The sender is not a member of the conversation named in the frame.
    NotMember,
}

impl ErrorCode {
    /// The wire name, e.g. `"bad_request"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Muted => "muted",
            ErrorCode::Banned => "banned",
            ErrorCode::SlowMode => "slow_mode",
            ErrorCode::NotMember => "not_member",
        }
    }

    /// The HTTP status that goes with this code when it is answered over HTTP.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::Muted | ErrorCode::Banned => 403,
            ErrorCode::NotFound | ErrorCode::NotMember => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::SlowMode => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// WebSocket close codes used by the node.
pub mod close {
    /// Normal closure (the client asked to close).
    pub const NORMAL: u16 = 1000;
    /// The node is shutting down; reconnect to another node or later.
    pub const GOING_AWAY: u16 = 1001;
    /// A text frame did not contain valid UTF-8 (RFC 6455 section 8.1).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame or message exceeded the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// WebSocket protocol violation (bad framing, unmasked client frame, ...).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Authentication failed or the access token expired.
    pub const AUTH_FAILED: u16 = 4001;
    /// The user was banned or kicked.
    pub const BANNED: u16 = 4003;
    /// Policy: sustained abuse of rate limits.
    pub const POLICY: u16 = 4008;
    /// Slow consumer: the outbound queue went over its bound.
    pub const SLOW_CONSUMER: u16 = 4009;
    /// The node failed while handling this session (a bug); reconnect.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The connection sent nothing (no frame, no pong) for two heartbeat intervals.
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    /// Cluster mode: events for this connection may have been lost between nodes (Redis was
    /// unreachable); reconnect (to any node) and `sync`.
    pub const SERVICE_RESTART: u16 = 1012;
}
