//! Records the store keeps besides the protocol objects.

use rookery_protocol::{close, ConversationKind, User};
use serde::{Deserialize, Serialize};

/// A user with their password hash (PHC string, argon2id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub user: User,
    pub password_hash: String,
    /// Set when the account was deleted: the record stays as a tombstone (so old messages still
    /// name a sender) with the profile blanked, no password and no username index entry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl UserRecord {
    /// The tombstone `delete_user` leaves: profile blanked, password gone, `deleted` set.
    pub fn tombstone(&self) -> UserRecord {
        UserRecord {
            user: User {
                id: self.user.id.clone(),
                username: format!("deleted-{}", self.user.id).to_lowercase(),
                display_name: "Deleted user".into(),
                avatar: None,
                created_at: self.user.created_at,
            },
            password_hash: String::new(),
            deleted: true,
        }
    }
}

/// A refresh token, stored under the SHA-256 of its secret (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub user_id: String,
    pub expires_at_ms: i64,
    /// Set on first use; a used token is refused and its reuse revokes the user's tokens.
    #[serde(default)]
    pub used: bool,
}

/// Outcome of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// First use of a live token: it is now used up.
    Valid(RefreshRecord),
    /// The token was already used: every refresh token of that user was revoked.
    Reused,
    /// Unknown, revoked or expired.
    Invalid,
}

/// A conversation's own fields; members are kept beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvMeta {
    pub id: String,
    pub kind: ConversationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub created_at: i64,
    /// Slow mode: seconds a member must wait between messages (0: off).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slow_mode_s: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A user's position in a conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Highest `seq` delivered to any of the user's sessions.
    pub delivered_seq: u64,
    /// Highest `seq` the user has read.
    pub read_seq: u64,
}

/// A request to raise a user's cursors in a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorUpdate {
    pub user: String,
    pub conv: String,
    pub delivered_seq: Option<u64>,
    pub read_seq: Option<u64>,
}

/// Which page of history to read. Pages are always returned ascending by `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only messages with `seq > after_seq`; the page starts right after it (reading forwards).
    pub after_seq: Option<u64>,
    /// Only messages with `seq < before_seq`; the page ends right before it (reading backwards).
    pub before_seq: Option<u64>,
    /// At most this many messages.
    pub limit: usize,
}

impl HistoryQuery {
    /// The newest `limit` messages.
    pub fn latest(limit: usize) -> Self {
        HistoryQuery { after_seq: None, before_seq: None, limit }
    }

    /// The oldest `limit` messages after `seq`.
    pub fn after(seq: u64, limit: usize) -> Self {
        HistoryQuery { after_seq: Some(seq), before_seq: None, limit }
    }

    /// The newest `limit` messages before `seq`.
    pub fn before(seq: u64, limit: usize) -> Self {
        HistoryQuery { after_seq: None, before_seq: Some(seq), limit }
    }
}

/// An uploaded file's metadata; the bytes live in the blob store under `attachments/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub id: String,
    pub uploader: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub created_at: i64,
    /// Readable by every signed-in user (set when the file becomes an avatar).
    #[serde(default)]
    pub public: bool,
}

impl AttachmentRecord {
    /// The metadata a message carries: `{id, name, content_type, size, url}`.
    pub fn to_message_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "name": self.name, "content_type": self.content_type,
            "size": self.size, "url": format!("/api/attachments/{}", self.id),
        })
    }
}

/// A ban or a mute: why, by whom, since when, until when (`None`: until lifted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sanction {
    pub reason: String,
    pub by: String,
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<i64>,
    /// This ban is the mark of a deleted account: permanent and never lifted. Its tokens are
    /// refused as unauthorized rather than banned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub account_deleted: bool,
}

impl Sanction {
    /// How the sessions of a user under this ban are closed: 4001 for a deleted account (its
    /// tokens are no longer valid anywhere), 4003 for a ban.
    pub fn close_code(&self) -> u16 {
        if self.account_deleted {
            close::AUTH_FAILED
        } else {
            close::BANNED
        }
    }

    /// Whether the sanction is in force at `now_ms`.
    pub fn active(&self, now_ms: i64) -> bool {
        self.until_ms.is_none_or(|u| now_ms < u)
    }
}

/// One line of the audit log: an operator's action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    pub ts: i64,
    /// Who acted (the admin token's holder is `admin`).
    pub admin: String,
    /// `ban`, `unban`, `kick`, `mute`, `unmute`, `slow_mode`, `delete_message`.
    pub action: String,
    /// The user, conversation or message acted on.
    pub target: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}
