//! Objects shared by the HTTP API, WebSocket events and the store.

use serde::{Deserialize, Serialize};

/// A user id: an opaque string (today a UUIDv7 in simple form).
pub type UserId = String;
/// A conversation id: an opaque string (today a UUIDv7 in simple form).
pub type ConvId = String;

/// A user's public profile.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    pub created_at: i64,
}

/// What signup, login and refresh answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user: User,
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until `access_token` expires.
    pub expires_in: u64,
}

/// Kind of conversation.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
}

/// A member's role in a conversation.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    /// Owners and admins manage members and the title.
    pub fn can_manage(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// One member of a conversation.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub user_id: UserId,
    pub role: Role,
    /// The member's read cursor, when the answer includes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_seq: Option<u64>,
}

/// A conversation as clients see it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: ConvId,
    pub kind: ConversationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub members: Vec<Member>,
    pub created_at: i64,
    pub last_seq: u64,
}

impl Conversation {
    /// The role of `user`, or `None` when they are not a member.
    pub fn role_of(&self, user: &str) -> Option<Role> {
        self.members.iter().find(|m| m.user_id == user).map(|m| m.role)
    }
}

/// A stored message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub conv: ConvId,
    pub seq: u64,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub sender: UserId,
    pub ts: i64,
    pub body: String,
    /// Attachment objects (`{id, name, content_type, size, url}`), or one call-log object
    /// (`{"kind":"call", ...}`); empty when none and once deleted.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub attachments: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<i64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Whether `s` has the shape of an id the node issues (1–64 of `A-Za-z0-9_-`). Anything else
/// is refused at the edge, before it reaches the store.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| ID_BYTES[usize::from(b)])
}

/// The bytes an id may hold, as a table: one load per byte (every frame naming a conversation
/// is checked; the chain of comparisons took 440 instructions for a 36-byte id).
static ID_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_one_to_64_letters_digits_dashes_and_underscores() {
        for b in 0..=255u8 {
            let allowed = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            let s = [b'a', b, b'z'];
            match std::str::from_utf8(&s) {
                Ok(s) => assert_eq!(is_valid_id(s), allowed, "byte {b:#04x}"),
                Err(_) => assert!(!allowed),
            }
        }
        assert!(is_valid_id("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("ab/cd") && !is_valid_id("é") && !is_valid_id("a b"));
    }
}
