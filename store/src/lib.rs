//! Rookery's storage: the [`Store`] trait every backend implements, the records it keeps, the
//! embedded backend ([`embedded::EmbeddedStore`], on fjall) and the [`conformance`] suite that
//! every backend must pass.
//!
//! Architecture Invariant: this crate knows nothing of actors, sockets or HTTP, and the trait
//! carries no engine types (no fjall, no scylla), so a backend can be swapped without touching
//! its callers.

pub mod conformance;
pub mod embedded;
pub mod message_id;
mod records;
#[cfg(feature = "scylla")]
pub mod scylla;

pub use records::{
    AttachmentRecord, AuditEntry, ConvMeta, Cursor, CursorUpdate, HistoryQuery, RefreshRecord, RefreshUse, Sanction,
    UserRecord,
};

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rookery_protocol::{Message, Role, User};

/// What can go wrong in a store call.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// A uniqueness rule was broken (username taken, seq already written, ...).
    #[error("record already exists: {0}")]
    Conflict(String),
    /// The record the write depends on does not exist.
    #[error("record not found: {0}")]
    NotFound(String),
    /// The engine refused or failed the operation (disk full, I/O error, shutting down). The
    /// write did not happen; the caller may retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A fenced write carried a token older than the conversation's current one: another node
    /// (or a newer actor on this node) owns the conversation now. Nothing was written; the caller
    /// must stop writing for this conversation and route the request to the new owner.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A stored record could not be decoded. This is a bug or disk corruption.
    #[error("corrupt record in {keyspace}: {detail}")]
    Corrupt { keyspace: &'static str, detail: String },
}

/// Result of every store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Called once with the outcome of [`Store::append_fenced_then`]; it must not block.
pub type AppendDone = Box<dyn FnOnce(StoreResult<()>) + Send>;

/// The storage contract of a Rookery node.
///
/// Every write is durable when its future resolves `Ok` (as durable as the backend's durability
/// setting makes it). Writes submitted by one caller complete in submission order. Reads see every
/// write whose future has resolved.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- users -------------------------------------------------------------------------------

    /// Creates a user. `Conflict` when the username is taken.
    async fn create_user(&self, record: UserRecord) -> StoreResult<()>;
    /// A user by id.
    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>>;
    /// A user by username (exact, lower case).
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    /// Replaces the public profile of an existing user (the username never changes).
    async fn update_user(&self, user: User) -> StoreResult<()>;
    /// Deletes an account: the record becomes its [`UserRecord::tombstone`], the username is
    /// freed and the user leaves the search index. `NotFound` when there is no such user;
    /// deleting a deleted user again changes nothing.
    async fn delete_user(&self, id: &str) -> StoreResult<()>;
    /// Users whose username or display name (case-insensitively) starts with `prefix`, in key
    /// order, at most `limit`, resuming after `cursor`; returns the cursor of the next page when
    /// there may be more. Served from an index: the cost grows with the page, not the user count.
    async fn search_users(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<(Vec<User>, Option<String>)>;

    // ---- refresh tokens ----------------------------------------------------------------------

    /// Stores a refresh token under the hash of its secret.
    async fn put_refresh(&self, token_hash: &str, record: RefreshRecord) -> StoreResult<()>;
    /// Consumes a refresh token: the first use returns `Valid` and marks it used; any later use
    /// returns `Reused` and revokes every refresh token of that user (a stolen token was replayed).
    async fn use_refresh(&self, token_hash: &str, now_ms: i64) -> StoreResult<RefreshUse>;
    /// Revokes one refresh token. Unknown tokens are ignored.
    async fn revoke_refresh(&self, token_hash: &str) -> StoreResult<()>;
    /// Revokes every refresh token of a user.
    async fn revoke_user_refresh(&self, user_id: &str) -> StoreResult<()>;

    // ---- conversations -----------------------------------------------------------------------

    /// Creates a conversation with its first members.
    async fn create_conversation(&self, meta: ConvMeta, members: Vec<(String, Role)>) -> StoreResult<()>;
    /// The one direct conversation of the pair `a`, `b`: returns the existing one with `false`,
    /// or creates `proposed` (members `a` and `b`, both `Member`) and returns it with `true`.
    async fn direct_conversation(&self, a: &str, b: &str, proposed: ConvMeta) -> StoreResult<(ConvMeta, bool)>;
    /// A conversation's metadata.
    async fn conversation(&self, id: &str) -> StoreResult<Option<ConvMeta>>;
    /// Changes a conversation's title.
    async fn set_title(&self, id: &str, title: Option<String>) -> StoreResult<()>;
    /// The members of a conversation with their roles, ordered by user id.
    async fn members(&self, conv: &str) -> StoreResult<Vec<(String, Role)>>;
    /// Adds a member or changes their role.
    async fn put_member(&self, conv: &str, user: &str, role: Role) -> StoreResult<()>;
    /// Removes a member. Removing a non-member is not an error.
    async fn remove_member(&self, conv: &str, user: &str) -> StoreResult<()>;
    /// The conversations a user is a member of.
    async fn user_conversations(&self, user: &str) -> StoreResult<Vec<String>>;

    // ---- messages ----------------------------------------------------------------------------

    /// Appends messages, each with its `seq` already assigned, atomically per message and
    /// durably. Also indexes `(conv, sender, client_id)` for dedupe. `Conflict` when a `seq`
    /// is already taken in its conversation (then nothing of that message is written).
    async fn append_messages(&self, messages: Vec<Message>) -> StoreResult<()>;
    /// Takes ownership of a conversation's writes for `owner`: raises the conversation's fence
    /// token by one and returns it. Every write made with an older token fails with `Fenced`
    /// from then on, so at most one writer (the latest claimant) can assign `seq`. The claim is
    /// ordered after every write submitted before it, so a claimant that reads the last `seq`
    /// after claiming sees every message an earlier owner managed to store.
    async fn claim_conversation(&self, conv: &str, owner: &str) -> StoreResult<u64>;
    /// Like [`append_messages`](Store::append_messages), but only while `fence` is still the
    /// current fence token of every conversation in the batch; otherwise nothing is written and
    /// the result is `Fenced`.
    async fn append_fenced(&self, fence: u64, messages: Vec<Message>) -> StoreResult<()>;
    /// [`append_fenced`](Store::append_fenced) without a task waiting for it: `done` is called
    /// once with the outcome, possibly on a thread of the store's own, so it must not block. A
    /// caller that needs its appends in order makes the next one after `done` ran.
    ///
    /// `json[i]` is `messages[i]` as [`rookery_protocol::encode_message`] wrote it (or `json`
    /// is empty): a backend that keeps messages as that JSON stores the bytes instead of
    /// encoding again. The default ignores them and runs `append_fenced` in a task; the
    /// embedded store stores the bytes and answers from its writer thread (one task spawn, one
    /// channel and two wake-ups less per append: docs/benchmarks.md, 2026-12-02).
    fn append_fenced_then(self: Arc<Self>, fence: u64, messages: Vec<Message>, json: Vec<Bytes>, done: AppendDone) {
        let _ = json;
        tokio::spawn(async move { done(self.append_fenced(fence, messages).await) });
    }
    /// The current fence token of a conversation and the node that claimed it (`None` before
    /// the first claim).
    async fn fence(&self, conv: &str) -> StoreResult<Option<(u64, String)>>;
    /// Replaces a stored message (edit, delete). `NotFound` when it does not exist.
    async fn update_message(&self, message: Message) -> StoreResult<()>;
    /// A page of history, ascending by `seq`, and whether more exists in the direction read.
    async fn messages(&self, conv: &str, query: HistoryQuery) -> StoreResult<(Vec<Message>, bool)>;
    /// [`messages`](Store::messages) as each message's JSON (its fields as in the `msg` event,
    /// [`rookery_protocol::encode_message`]), for a reader that only passes them on. A backend
    /// that keeps that JSON as its record (the embedded store) returns it without decoding it
    /// and encoding it again.
    async fn messages_json(&self, conv: &str, query: HistoryQuery) -> StoreResult<(Vec<Bytes>, bool)> {
        let (messages, more) = self.messages(conv, query).await?;
        Ok((messages.iter().map(rookery_protocol::encode_message).collect(), more))
    }
    /// A message by id.
    async fn message(&self, conv: &str, id: &str) -> StoreResult<Option<Message>>;
    /// The newest message of a conversation.
    async fn last_message(&self, conv: &str) -> StoreResult<Option<Message>>;
    /// The message a sender stored earlier with this `client_id`, for dedupe.
    async fn message_by_client_id(&self, conv: &str, sender: &str, client_id: &str) -> StoreResult<Option<Message>>;
    /// How many messages after `after_seq` were sent by someone other than `user`, up to `cap`.
    async fn count_unread(&self, conv: &str, user: &str, after_seq: u64, cap: usize) -> StoreResult<usize>;

    // ---- attachments -------------------------------------------------------------------------

    /// Stores an attachment's metadata (after its bytes are in the blob store).
    async fn put_attachment(&self, record: AttachmentRecord) -> StoreResult<()>;
    /// An attachment's metadata.
    async fn attachment(&self, id: &str) -> StoreResult<Option<AttachmentRecord>>;
    /// Makes an attachment readable by every signed-in user (avatars). `NotFound` if absent.
    async fn set_attachment_public(&self, id: &str) -> StoreResult<()>;
    /// The conversations where an attachment was shared (appending a message whose
    /// `attachments` hold `{"id": ...}` objects records it).
    async fn attachment_conversations(&self, id: &str) -> StoreResult<Vec<String>>;

    // ---- moderation --------------------------------------------------------------------------

    /// Sets (`Some`) or lifts (`None`) a user's ban.
    async fn set_ban(&self, user: &str, ban: Option<Sanction>) -> StoreResult<()>;
    /// Every ban on record (active or expired), by user.
    async fn bans(&self) -> StoreResult<Vec<(String, Sanction)>>;
    /// Sets (`Some`) or lifts (`None`) a member's mute in a conversation.
    async fn set_mute(&self, conv: &str, user: &str, mute: Option<Sanction>) -> StoreResult<()>;
    /// The mutes of a conversation, by user.
    async fn mutes(&self, conv: &str) -> StoreResult<Vec<(String, Sanction)>>;
    /// Sets a conversation's slow mode (0: off). `NotFound` if the conversation does not exist.
    async fn set_slow_mode(&self, conv: &str, seconds: u32) -> StoreResult<()>;
    /// Appends to the audit log.
    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<()>;
    /// The audit log, newest first, entries older than `before_ts` (exclusive) when given.
    async fn audit(&self, before_ts: Option<i64>, limit: usize) -> StoreResult<Vec<AuditEntry>>;
    /// Conversations in id order after `after` (for the console's browsing), at most `limit`.
    async fn list_conversations(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<ConvMeta>>;

    // ---- cursors -----------------------------------------------------------------------------

    /// A user's cursors in a conversation (zero when never set).
    async fn cursor(&self, user: &str, conv: &str) -> StoreResult<Cursor>;
    /// Raises cursors; a cursor never moves backwards.
    async fn advance_cursors(&self, updates: Vec<CursorUpdate>) -> StoreResult<()>;

    // ---- lifecycle ---------------------------------------------------------------------------

    /// Resolves once every write submitted before this call is durable.
    async fn flush(&self) -> StoreResult<()>;
    /// Answers whether the store can serve requests, writes included (for `/readyz`):
    /// `Unavailable`, with the reason, while it refuses writes (the embedded store below its
    /// free-space reserve or recovering from a failed write).
    async fn ping(&self) -> StoreResult<()>;
}

/// The terms a user is found by (every backend indexes the same): the username and the lower-cased display name.
pub(crate) fn search_terms(user: &User) -> Vec<String> {
    let display = user.display_name.to_lowercase();
    if display == user.username {
        vec![user.username.clone()]
    } else {
        vec![user.username.clone(), display]
    }
}
