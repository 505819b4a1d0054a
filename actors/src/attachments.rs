//! Attachments on messages: what a client names in `attachments` is checked and expanded to the
//! stored metadata, so a message never carries a file its sender may not read.

use rookery_protocol::{is_valid_id, ErrorCode};
use rookery_store::{AttachmentRecord, Store, StoreError};

/// Most attachments one message carries.
pub const MAX_PER_MESSAGE: usize = 10;

/// Whether `user` may read the attachment: its uploader, anyone when it is public (avatars),
/// and members of a conversation where it was shared.
pub async fn may_read(store: &dyn Store, user: &str, a: &AttachmentRecord) -> Result<bool, StoreError> {
    if a.uploader == user || a.public {
        return Ok(true);
    }
    for conv in store.attachment_conversations(&a.id).await? {
        if store.members(&conv).await?.iter().any(|(u, _)| u == user) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Turns a `send`'s `attachments` (ids, or objects with an `id`) into the metadata the message
/// stores: `{id, name, content_type, size, url}`.
pub async fn resolve(
    store: &dyn Store,
    user: &str,
    raw: &[serde_json::Value],
) -> Result<Vec<serde_json::Value>, (ErrorCode, String)> {
    if raw.len() > MAX_PER_MESSAGE {
        return Err((ErrorCode::BadRequest, format!("at most {MAX_PER_MESSAGE} attachments per message")));
    }
    let mut out = Vec::with_capacity(raw.len());
    for item in raw {
        let id = item.as_str().or_else(|| item.get("id").and_then(|v| v.as_str())).unwrap_or_default();
        let unknown = || (ErrorCode::NotFound, "no such attachment".to_string());
        if !is_valid_id(id) {
            return Err(unknown());
        }
        let record =
            store.attachment(id).await.map_err(|e| (ErrorCode::Unavailable, e.to_string()))?.ok_or_else(unknown)?;
        if !may_read(store, user, &record).await.map_err(|e| (ErrorCode::Unavailable, e.to_string()))? {
            return Err(unknown());
        }
        out.push(record.to_message_json());
    }
    Ok(out)
}
